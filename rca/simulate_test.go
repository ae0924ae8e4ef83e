package rca

import (
	"bytes"
	"math"
	"slices"
	"testing"
	"time"
)

// readmeNames are the metric names the formats README gives a meaning to.
var readmeNames = []string{
	"request_rate", "error_ratio", "latency_p50_seconds", "latency_p99_seconds",
	"cpu_usage_cores", "cpu_throttled_ratio", "memory_working_set_bytes", "restarts_total", "network_transmit_errors_rate",
	"cpu_utilization", "memory_utilization", "disk_io_utilization", "network_errors_rate", "ready",
}

func TestSimulateDeterministic(t *testing.T) {
	write := func() []byte {
		c, truth := Simulate(42, 7)
		var b bytes.Buffer
		if err := WriteCase(&b, c, truth); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if !bytes.Equal(write(), write()) {
		t.Fatal("the same seed and index gave different cases")
	}
}

func TestSimulateCases(t *testing.T) {
	const n = 60
	situations := map[string]int{}
	faults := map[string]int{}
	sizes := []int{}
	for i := range n {
		c, truth := Simulate(11, i)
		for _, s := range truth.Situations {
			situations[s]++
		}
		for _, f := range truth.FaultTypes() {
			faults[f]++
		}
		sizes = append(sizes, len(c.Topology.Nodes))

		// The case is valid and survives a round trip through the format.
		if err := c.Topology.Validate(); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var b bytes.Buffer
		if err := WriteCase(&b, c, truth); err != nil {
			t.Fatal(err)
		}
		c2, truth2, err := ParseEvalCase(&b)
		if err != nil {
			t.Fatalf("case %d does not parse: %v", i, err)
		}
		if len(c2.Warnings) > 0 {
			t.Errorf("case %d: warnings %q", i, c2.Warnings)
		}

		// The truth names nodes of the topology; each strict answer is an
		// accepted one.
		ids := map[string]bool{}
		for _, nd := range c2.Topology.Nodes {
			ids[nd.ID] = true
		}
		for _, r := range truth2.Root {
			if !ids[r] {
				t.Errorf("case %d: root %s not in the topology", i, r)
			}
		}
		for _, s := range truth2.Strict {
			if !slices.Contains(truth2.Root, s) {
				t.Errorf("case %d: strict %s not accepted", i, s)
			}
		}
		if len(truth2.Faults) > 0 && (truth2.Faults[0] != truth2.Fault || len(truth2.Faults) != len(truth2.Strict)) {
			t.Errorf("case %d: faults %v strict %v", i, truth2.Faults, truth2.Strict)
		}

		// Series carry README names (or a datastore's own), and detection
		// falls inside the window, after some history.
		m := c2.Metrics
		for _, s := range m.Series {
			if !slices.Contains(readmeNames, s.Name) && !(s.Node[:5] == "datab" || s.Node[:5] == "queue") {
				t.Errorf("case %d: unexpected series %s", i, s.Name)
			}
		}
		det := (c2.DetectedAt - m.Start) / m.Step
		if det*m.Step < 20*60 || int(det) >= m.Len() {
			t.Errorf("case %d: detected at sample %v of %d", i, det, m.Len())
		}
		// The first alert at or after detection is at detection.
		first := math.Inf(1)
		for _, a := range c2.Alerts {
			if s := float64(a.StartsAt.Unix()); s >= c2.DetectedAt {
				first = min(first, s)
			}
			if a.StartsAt.IsZero() || a.Labels["alertname"] == "" {
				t.Errorf("case %d: alert %+v", i, a)
			}
		}
		if first != c2.DetectedAt {
			t.Errorf("case %d: first alert at %v, detected at %v", i, time.Unix(int64(first), 0), time.Unix(int64(c2.DetectedAt), 0))
		}
	}
	for _, s := range []string{SituationPlain, SituationNoisyNeighbour, SituationSharedDep, SituationMultiFault, SituationRescheduled, SituationMissingEdges, SituationLateDetection} {
		if situations[s] == 0 {
			t.Errorf("no %s case in %d: %v", s, n, situations)
		}
	}
	for _, f := range FaultTypes {
		if faults[f] == 0 {
			t.Errorf("no %s case in %d: %v", f, n, faults)
		}
	}
	if slices.Min(sizes) > 40 || slices.Max(sizes) < 300 {
		t.Errorf("topology sizes from %d to %d nodes", slices.Min(sizes), slices.Max(sizes))
	}
}

// TestSimulateUniqueNodes replays a case whose cluster once drew the same
// node address twice, which wrote a topology with a duplicate node.
func TestSimulateUniqueNodes(t *testing.T) {
	c, _ := Simulate(5006, 44)
	if err := c.Topology.Validate(); err != nil {
		t.Fatal(err)
	}
}
