package rca

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseReadmeCase(t *testing.T) {
	data, err := os.ReadFile("testdata/readme.json")
	if err != nil {
		t.Fatal(err)
	}
	c, truth, err := ParseEvalCase(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("ParseEvalCase: %v", err)
	}
	if c.Version != 1 || c.Name != "cart cpu hog" || c.DetectedAt != 1763700900 {
		t.Errorf("case = %+v", c)
	}
	// The README's frontend is only named by an edge: it becomes a node.
	if len(c.Topology.Nodes) != 5 || c.Topology.Nodes[4].ID != "service/east/shop/frontend" || c.Topology.Nodes[4].Kind != "service" {
		t.Errorf("nodes = %+v", c.Topology.Nodes)
	}
	m := c.Metrics
	if m == nil || m.Start != 1763700000 || m.Step != 15 || len(m.Series) != 2 {
		t.Fatalf("metrics = %+v", m)
	}
	if s := m.Series[1]; s.Node != "pod/east/shop/cart-7d9f-x2" || s.Name != "cpu_usage_cores" || len(s.Values) != 3 || s.Values[2] != 0.95 {
		t.Errorf("series 1 = %+v", s)
	}
	if len(c.Alerts) != 1 || c.Alerts[0].Labels["service"] != "frontend" || !c.Alerts[0].StartsAt.Equal(time.Date(2025, 11, 21, 4, 40, 15, 0, time.UTC)) || !c.Alerts[0].EndsAt.IsZero() {
		t.Errorf("alerts = %+v", c.Alerts)
	}
	if truth == nil || truth.Fault != "cpu_hog" || len(truth.Root) != 2 || truth.StrictAnswers()[0] != "pod/east/shop/cart-7d9f-x2" {
		t.Errorf("truth = %+v", truth)
	}

	// Ranking never sees the truth.
	c2, err := ParseCase(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.Topology.Nodes) != 5 {
		t.Fatal("ParseCase and ParseEvalCase disagree")
	}
}

func TestParseCaseErrors(t *testing.T) {
	const top = `"topology": {"nodes": [{"id": "service/e/ns/a", "kind": "service"}]}`
	for _, tc := range []struct {
		name, in string
		want     string
	}{
		{"empty", "", "case: empty input"},
		{"not an object", "[1]", "line 1: case: want an object, got an array"},
		{"truncated", "{\"version\": 1,\n\"name\": \"x", "line 2: name: unexpected end of input"},
		{"syntax", "{\"version\": 1,\n\"name\" \"x\"}", "line 2: name: invalid character"},
		{"trailing", "{" + top + "}\n{}", "line 2: case: unexpected data after the object"},
		{"version", "{\"version\": 2, " + top + "}", "line 1: version: unsupported version 2"},
		{"version type", "{\"version\": \"1\", " + top + "}", "line 1: version: want a number, got a string"},
		{"no topology", `{"version": 1}`, "topology: missing"},
		{"null topology", `{"version": 1, "topology": null}`, "line 1: topology: null"},
		{"topology line", "{\n\n\"topology\": {\"nodes\": [\n{\"id\": \"\", \"kind\": \"pod\"}]}}", "line 4: topology.nodes[0].id: empty"},
		{"topology type", "{\n\"topology\": {\"nodes\": [\n{\"id\": 3}]}}", "line 3: topology.nodes[0].id: want a string, got JSON number"},
		{"value", "{" + top + ",\n\"metrics\": {\"start\": 0, \"step\": 15, \"series\": [\n{\"node\": \"service/e/ns/a\", \"name\": \"x\", \"values\": [1]},\n{\"node\": \"service/e/ns/a\", \"name\": \"y\",\n \"values\": [1, null,\n true]}]}}", "line 6: metrics.series[1].values[2]: not a number"},
		{"value string", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [{\"node\": \"a/b\", \"name\": \"x\", \"values\": [\"high\"]}]}}", "line 2: metrics.series[0].values[0]: not a number"},
		{"value object", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [{\"node\": \"a/b\", \"name\": \"x\", \"values\": [1, {}]}]}}", "metrics.series[0].values[1]: not a number"},
		{"value range", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [{\"node\": \"a/b\", \"name\": \"x\", \"values\": [1e999]}]}}", "metrics.series[0].values[0]: number out of range"},
		{"values not array", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [{\"node\": \"a/b\", \"name\": \"x\", \"values\": 3}]}}", "metrics.series[0].values: want an array of numbers"},
		{"series node", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [\n{\"name\": \"x\", \"values\": []}]}}", "line 3: metrics.series[0].node: missing or empty"},
		{"series name type", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [\n{\"node\": \"a/b\", \"name\": [\"x\"]}]}}", "line 3: metrics.series[0].name: want a string, got an array"},
		{"series not object", "{" + top + ",\n\"metrics\": {\"step\": 15, \"series\": [7]}}", "line 2: metrics.series[0]: want an object, got a number"},
		{"step", "{" + top + ",\n\"metrics\": {\"start\": 0, \"step\": -15, \"series\": []}}", "line 2: metrics.step: must be a positive number of seconds, got -15"},
		{"no step", "{" + top + ",\n\"metrics\": {\"series\": [{\"node\": \"a/b\", \"name\": \"x\", \"values\": [1]}]}}", "metrics.step: must be a positive number of seconds, got 0"},
		{"start", "{" + top + ",\n\"metrics\": {\"start\": \"yesterday\", \"step\": 15}}", "line 2: metrics.start: want unix seconds or an RFC 3339 time"},
		{"alert time", "{" + top + ",\n\"alerts\": [{},\n{\"labels\": {}, \"startsAt\": \"soon\"}]}", "line 3: alerts[1].startsAt: want an RFC 3339 time, got \"soon\""},
		{"alert labels", "{" + top + ",\n\"alerts\": [\n{\"labels\": {\"a\": 1}}]}", "line 3: alerts[0].labels: want a string, got JSON number"},
		{"alerts not array", "{" + top + ",\n\"alerts\": {}}", "line 2: alerts: want an array, got an object"},
		{"detectedAt", "{" + top + ",\n\"detectedAt\": true}", "line 2: detectedAt: want unix seconds, got a boolean"},
		{"unknown field syntax", "{" + top + ",\n\"extra\": [1,}", "line 2: extra: invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := ParseEvalCase(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", c)
			}
			if c != nil {
				t.Fatalf("returned a case and an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseReadError(t *testing.T) {
	if _, err := ParseCase(iotest.ErrReader(os.ErrClosed)); err == nil || !strings.Contains(err.Error(), "read case") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseTolerates(t *testing.T) {
	in := `{
  "topology": {"nodes": [{"id": "service/e/ns/a", "kind": "service"}], "extra": 1},
  "metrics": {"start": "2025-11-21T04:00:00Z", "step": 15, "unit": "s", "series": [
    {"node": "service/e/ns/a", "name": "x", "values": [1, null, "2.5", "NaN"], "labels": {}},
    {"node": "service/e/ns/a", "name": "x", "values": [9]},
    {"node": "pod/e/ns/ghost", "name": "cpu_usage_cores", "values": null}
  ]},
  "alerts": [{"labels": {"alertname": "A"}, "startsAt": "2025-11-21T04:05:00Z", "endsAt": "0001-01-01T00:00:00Z", "status": {"state": "active"}}],
  "Truth": {"root": ["x"]},
  "comment": {"deep": [[{}]]}
}`
	c, truth, err := ParseEvalCase(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if truth == nil || truth.Root[0] != "x" {
		t.Errorf("truth = %+v", truth)
	}
	v := c.Metrics.Series[0].Values
	if len(v) != 4 || v[0] != 1 || !math.IsNaN(v[1]) || v[2] != 2.5 || !math.IsNaN(v[3]) {
		t.Errorf("values = %v", v)
	}
	if len(c.Metrics.Series) != 2 || c.Metrics.Start != 1763697600 {
		t.Errorf("metrics = %+v", c.Metrics)
	}
	if c.DetectedAt != 1763697900 || !c.Alerts[0].EndsAt.IsZero() {
		t.Errorf("detectedAt = %v, alert = %+v", c.DetectedAt, c.Alerts[0])
	}
	if n := c.Topology.Nodes[len(c.Topology.Nodes)-1]; n.ID != "pod/e/ns/ghost" || n.Kind != "pod" {
		t.Errorf("series node not added: %+v", c.Topology.Nodes)
	}
	for _, w := range []string{"version missing", "1 series nodes are not in the topology", "1 duplicate series", "detectedAt missing; using the first alert's start"} {
		if !hasWarning(c, w) {
			t.Errorf("no warning %q in %q", w, c.Warnings)
		}
	}
}

func TestParseNoMetrics(t *testing.T) {
	c, err := ParseCase(strings.NewReader(`{"version": 1, "topology": {"nodes": [{"id": "a/b", "kind": "a"}]}, "metrics": null, "detectedAt": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics != nil || !hasWarning(c, "no metrics") {
		t.Fatalf("metrics = %+v, warnings = %q", c.Metrics, c.Warnings)
	}
}

func hasWarning(c *Case, substr string) bool {
	for _, w := range c.Warnings {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

func TestWriteCaseRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/readme.json")
	if err != nil {
		t.Fatal(err)
	}
	c, truth, err := ParseEvalCase(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c.Metrics.Series[0].Values[1] = math.NaN()
	c.DetectedAt = 1763700900.25
	var b bytes.Buffer
	if err := WriteCase(&b, c, truth); err != nil {
		t.Fatal(err)
	}
	c2, truth2, err := ParseEvalCase(&b)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, b.String())
	}
	if len(c2.Topology.Nodes) != len(c.Topology.Nodes) || len(c2.Topology.Edges) != len(c.Topology.Edges) ||
		len(c2.Metrics.Series) != 2 || !math.IsNaN(c2.Metrics.Series[0].Values[1]) || c2.DetectedAt != c.DetectedAt ||
		c2.Alerts[0].StartsAt != c.Alerts[0].StartsAt || truth2.Fault != truth.Fault {
		t.Fatalf("round trip changed the case:\n%s", b.String())
	}
}

func FuzzParseCase(f *testing.F) {
	readme, err := os.ReadFile("testdata/readme.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(readme),
		"",
		"null",
		"{}",
		`{"topology": {"nodes": [], "edges": [{"from": "a/b", "to": "c", "kind": "calls"}]}}`,
		`{"topology": {}, "metrics": {"step": 1, "series": [{"node": "x", "name": "y", "values": [1, null, "3", -0.5e3]}]}, "detectedAt": 1}`,
		`{"topology": {}, "metrics": {"step": 0}, "alerts": [{"labels": null, "startsAt": ""}]}`,
		`{"topology": {}, "metrics": {"step": 1, "series": [{"node": "x", "name": "y", "values": ["\u0031\"", 1e400]}]}}`,
		`{"version": 1.5, "truth": {"root": 1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, truth, err := ParseEvalCase(bytes.NewReader(data))
		if err != nil {
			if c != nil || truth != nil {
				t.Fatalf("returned a case and an error: %v", err)
			}
			return
		}
		if err := c.Topology.Validate(); err != nil {
			t.Fatalf("accepted a topology that does not validate: %v", err)
		}
		var b bytes.Buffer
		if err := WriteCase(&b, c, truth); err != nil {
			t.Fatal(err)
		}
		c2, _, err := ParseEvalCase(&b)
		if err != nil {
			t.Fatalf("re-parsing what was accepted: %v\n%s", err, b.String())
		}
		if len(c2.Topology.Nodes) != len(c.Topology.Nodes) || len(c2.Alerts) != len(c.Alerts) {
			t.Fatalf("round trip changed sizes:\n%s", b.String())
		}
		// Whatever parses must rank without panicking.
		Rank(c, Options{})
	})
}
