package collector

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var (
	quotedRe  = regexp.MustCompile(`"((?:[^"\\]|\\.)+)"`)
	hasLineRe = regexp.MustCompile(`line \d+`)
)

// withLine adds the line of the offending value to a loader error that has
// none (Prometheus' validators report the value, not where it stands): the
// one line of the file that holds a value the error quotes.
func withLine(content []byte, err error) error {
	if err == nil || hasLineRe.MatchString(err.Error()) {
		return err
	}
	lines := bytes.Split(content, []byte("\n"))
	for _, m := range quotedRe.FindAllStringSubmatch(err.Error(), -1) {
		v, uerr := strconv.Unquote(`"` + m[1] + `"`)
		if uerr != nil || v == "" {
			continue
		}
		found := 0
		for i, l := range lines {
			code := string(l)
			if j := strings.Index(code, " #"); j >= 0 {
				code = code[:j]
			}
			if strings.Contains(code, v) {
				if found != 0 {
					found = -1
					break
				}
				found = i + 1
			}
		}
		if found > 0 {
			return fmt.Errorf("line %d: %w", found, err)
		}
	}
	return err
}
