package federation

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// ParseLabels parses --label values, name="value" as in Thanos (the quotes
// may be left out when the value has no spaces or quotes).
func ParseLabels(flags []string) (labels.Labels, error) {
	b := labels.NewScratchBuilder(len(flags))
	seen := map[string]struct{}{}
	for _, f := range flags {
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return labels.EmptyLabels(), fmt.Errorf("--label=%s: want name=\"value\"", f)
		}
		name = strings.TrimSpace(name)
		if !model.LabelName(name).IsValid() || name == labels.MetricName {
			return labels.EmptyLabels(), fmt.Errorf("--label=%s: %q is not a valid label name", f, name)
		}
		if strings.HasPrefix(value, `"`) || strings.HasPrefix(value, "`") {
			v, err := strconv.Unquote(value)
			if err != nil {
				return labels.EmptyLabels(), fmt.Errorf("--label=%s: the value is not a well-quoted string: %w", f, err)
			}
			value = v
		}
		if value == "" {
			return labels.EmptyLabels(), fmt.Errorf("--label=%s: the value is empty", f)
		}
		if _, dup := seen[name]; dup {
			return labels.EmptyLabels(), fmt.Errorf("--label=%s: %s is given twice", f, name)
		}
		seen[name] = struct{}{}
		b.Add(name, value)
	}
	b.Sort()
	return b.Labels(), nil
}
