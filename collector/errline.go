package collector

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	quotedRe  = regexp.MustCompile("\"((?:[^\"\\\\]|\\\\.)+)\"|`([^`]+)`")
	hasLineRe = regexp.MustCompile(`line \d+`)
)

// withLine adds the line of the offending value to a loader error that has
// none (Prometheus' validators name the value, not where it stands): the
// line of the one YAML scalar equal to a value the error quotes; for an
// error about a duplicate, the last of them.
func withLine(content []byte, err error) error {
	if err == nil || hasLineRe.MatchString(err.Error()) {
		return err
	}
	var doc yaml.Node
	if yaml.Unmarshal(content, &doc) != nil {
		return err
	}
	scalars := map[string][]int{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			scalars[n.Value] = append(scalars[n.Value], n.Line)
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	msg := err.Error()
	duplicate := strings.Contains(msg, "multiple") || strings.Contains(msg, "duplicate")
	for _, m := range quotedRe.FindAllStringSubmatch(msg, -1) {
		v := m[2]
		if m[1] != "" {
			u, uerr := strconv.Unquote(`"` + m[1] + `"`)
			if uerr != nil {
				continue
			}
			v = u
		}
		// Relabel regexps are reported anchored, as compiled.
		if inner, ok := strings.CutPrefix(v, "^(?s:"); ok {
			v = strings.TrimSuffix(inner, ")$")
		}
		lines := scalars[v]
		switch {
		case len(lines) == 1:
			return fmt.Errorf("line %d: %w", lines[0], err)
		case len(lines) > 1 && duplicate:
			return fmt.Errorf("line %d: %w", lines[len(lines)-1], err)
		}
	}
	return err
}
