package rca

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/panorama-obs/panorama/topology"
)

// builder makes small cases by hand: 40 minutes of 15-second samples,
// detected at minute 25.
type builder struct {
	c   *Case
	rng *rand.Rand
}

const (
	bSamples = 160
	bDetect  = 100
	bStart   = 1763700000.0
)

func newBuilder() *builder {
	return &builder{
		c: &Case{Version: 1, Topology: &topology.Graph{}, Metrics: &Metrics{Start: bStart, Step: 15},
			DetectedAt: bStart + bDetect*15},
		rng: rand.New(rand.NewPCG(1, 2)),
	}
}

func (b *builder) node(id, kind string, labels ...string) *builder {
	n := topology.Node{ID: id, Kind: topology.NodeKind(kind), Labels: map[string]string{}}
	for i := 0; i+1 < len(labels); i += 2 {
		n.Labels[labels[i]] = labels[i+1]
	}
	b.c.Topology.Nodes = append(b.c.Topology.Nodes, n)
	return b
}

func (b *builder) edge(from, to string, kind topology.EdgeKind) *builder {
	b.c.Topology.Edges = append(b.c.Topology.Edges, topology.Edge{From: from, To: to, Kind: kind})
	return b
}

// series adds a series at level base with relative noise, moving to level
// to from sample at on (at < 0: never). A NaN to makes it stop reporting.
func (b *builder) series(node, name string, base, noise float64, at int, to float64) *builder {
	v := make([]float64, bSamples)
	for i := range v {
		level := base
		if at >= 0 && i >= at {
			level = to
		}
		v[i] = level * (1 + noise*b.rng.NormFloat64())
	}
	b.c.Metrics.Series = append(b.c.Metrics.Series, Series{Node: node, Name: name, Values: v})
	return b
}

func (b *builder) alert(start int, labels ...string) *builder {
	l := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	b.c.Alerts = append(b.c.Alerts, Alert{Labels: l, StartsAt: time.Unix(int64(bStart)+int64(start)*15, 0).UTC()})
	return b
}

// shop is frontend → cart → cartdb, two cart pods on two nodes, a frontend
// pod, all healthy.
func shop() *builder {
	b := newBuilder()
	b.node("service/e/shop/frontend", "service").node("service/e/shop/cart", "service").
		node("database/e/data/cartdb", "database").
		node("pod/e/shop/cart-1", "pod").node("pod/e/shop/cart-2", "pod").node("pod/e/shop/frontend-1", "pod").
		node("node/e/n1", "node").node("node/e/n2", "node")
	b.edge("service/e/shop/frontend", "service/e/shop/cart", topology.EdgeCalls).
		edge("service/e/shop/cart", "database/e/data/cartdb", topology.EdgeDependsOn).
		edge("service/e/shop/cart", "pod/e/shop/cart-1", topology.EdgeSelects).
		edge("service/e/shop/cart", "pod/e/shop/cart-2", topology.EdgeSelects).
		edge("service/e/shop/frontend", "pod/e/shop/frontend-1", topology.EdgeSelects).
		edge("pod/e/shop/cart-1", "node/e/n1", topology.EdgeRunsOn).
		edge("pod/e/shop/cart-2", "node/e/n2", topology.EdgeRunsOn).
		edge("pod/e/shop/frontend-1", "node/e/n2", topology.EdgeRunsOn)
	return b
}

// healthy adds normal series for every node of shop not listed in skip.
func (b *builder) healthy(skip ...string) *builder {
	has := func(id, name string) bool {
		for _, s := range skip {
			if s == id+" "+name || s == id {
				return true
			}
		}
		return false
	}
	for _, n := range b.c.Topology.Nodes {
		var names map[string]float64
		switch n.Kind {
		case "service", "database":
			names = map[string]float64{"request_rate": 100, "error_ratio": 0.001, "latency_p50_seconds": 0.05, "latency_p99_seconds": 0.2}
		case "pod":
			names = map[string]float64{"cpu_usage_cores": 0.3, "cpu_throttled_ratio": 0.01, "memory_working_set_bytes": 3e8}
		case "node":
			names = map[string]float64{"cpu_utilization": 0.3, "memory_utilization": 0.5, "disk_io_utilization": 0.2, "ready": 1}
		}
		for _, name := range sortedKeys(names) {
			if !has(n.ID, name) {
				noise := 0.03
				if name == "ready" {
					noise = 0
				}
				b.series(n.ID, name, names[name], noise, -1, 0)
			}
		}
	}
	return b
}

func sortedKeys(m map[string]float64) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

func TestRankScenarios(t *testing.T) {
	for _, tc := range []struct {
		name     string
		build    func() *Case
		want     string
		evidence []string // substrings of the first candidate's evidence
	}{
		{
			name: "pod cpu hog",
			build: func() *Case {
				b := shop()
				b.series("pod/e/shop/cart-1", "cpu_usage_cores", 0.3, 0.03, 90, 1.2).
					series("pod/e/shop/cart-1", "cpu_throttled_ratio", 0.01, 0.03, 90, 0.6).
					series("service/e/shop/cart", "latency_p99_seconds", 0.2, 0.03, 91, 0.9).
					series("service/e/shop/frontend", "latency_p99_seconds", 0.2, 0.03, 92, 0.8)
				return b.healthy("pod/e/shop/cart-1 cpu_usage_cores", "pod/e/shop/cart-1 cpu_throttled_ratio",
					"service/e/shop/cart latency_p99_seconds", "service/e/shop/frontend latency_p99_seconds").c
			},
			want:     "pod/e/shop/cart-1",
			evidence: []string{"cpu_usage_cores rose 3.97x at 05:02:30", "explains the trouble of 1 services it serves (cart)"},
		},
		{
			name: "service latency",
			build: func() *Case {
				b := shop()
				b.series("service/e/shop/cart", "latency_p50_seconds", 0.05, 0.03, 90, 0.5).
					series("service/e/shop/frontend", "latency_p50_seconds", 0.05, 0.03, 91, 0.45)
				return b.healthy("service/e/shop/cart latency_p50_seconds", "service/e/shop/frontend latency_p50_seconds").c
			},
			want:     "service/e/shop/cart",
			evidence: []string{"latency_p50_seconds rose 9.93x", "explains the trouble of 1 callers (frontend), which started no earlier"},
		},
		{
			name: "database errors behind a missing call edge",
			build: func() *Case {
				b := shop()
				// frontend calls cartdb too, but traces never saw it.
				b.series("database/e/data/cartdb", "error_ratio", 0.001, 0.03, 90, 0.4).
					series("service/e/shop/cart", "error_ratio", 0.001, 0.03, 91, 0.3).
					series("service/e/shop/frontend", "error_ratio", 0.001, 0.03, 91, 0.3)
				return b.healthy("database/e/data/cartdb error_ratio", "service/e/shop/cart error_ratio", "service/e/shop/frontend error_ratio").c
			},
			want: "database/e/data/cartdb",
		},
		{
			name: "node failure",
			build: func() *Case {
				b := shop()
				nan := math.NaN()
				for _, name := range []string{"cpu_utilization", "memory_utilization", "disk_io_utilization"} {
					b.series("node/e/n1", name, 0.3, 0.03, 90, nan)
				}
				b.series("node/e/n1", "ready", 1, 0, 93, 0)
				for _, name := range []string{"cpu_usage_cores", "cpu_throttled_ratio", "memory_working_set_bytes"} {
					b.series("pod/e/shop/cart-1", name, 0.3, 0.03, 90, nan)
				}
				b.series("service/e/shop/cart", "error_ratio", 0.001, 0.03, 90, 0.5).
					series("service/e/shop/frontend", "error_ratio", 0.001, 0.03, 91, 0.4)
				return b.healthy("node/e/n1", "pod/e/shop/cart-1", "service/e/shop/cart error_ratio", "service/e/shop/frontend error_ratio").c
			},
			want:     "node/e/n1",
			evidence: []string{"stopped reporting", "ready fell from 1 to 0"},
		},
		{
			name: "noisy neighbour",
			build: func() *Case {
				b := shop()
				// cart-2 has no CPU limit and takes n2: frontend-1, its
				// neighbour, is throttled and frontend slows; cart is fine.
				b.series("pod/e/shop/cart-2", "cpu_usage_cores", 0.3, 0.03, 90, 3.5).
					series("node/e/n2", "cpu_utilization", 0.3, 0.03, 90, 0.99).
					series("pod/e/shop/frontend-1", "cpu_throttled_ratio", 0.01, 0.03, 91, 0.5).
					series("service/e/shop/frontend", "latency_p99_seconds", 0.2, 0.03, 91, 0.8)
				return b.healthy("pod/e/shop/cart-2 cpu_usage_cores", "node/e/n2 cpu_utilization",
					"pod/e/shop/frontend-1 cpu_throttled_ratio", "service/e/shop/frontend latency_p99_seconds").c
			},
			want:     "pod/e/shop/cart-2",
			evidence: []string{"cpu_usage_cores rose", "explains its node's saturation (n2)"},
		},
		{
			name: "disk saturation",
			build: func() *Case {
				b := shop()
				b.series("node/e/n1", "disk_io_utilization", 0.2, 0.03, 90, 1).
					series("service/e/shop/cart", "latency_p99_seconds", 0.2, 0.03, 91, 0.9).
					series("service/e/shop/frontend", "latency_p99_seconds", 0.2, 0.03, 92, 0.8)
				return b.healthy("node/e/n1 disk_io_utilization", "service/e/shop/cart latency_p99_seconds", "service/e/shop/frontend latency_p99_seconds").c
			},
			want:     "node/e/n1",
			evidence: []string{"disk_io_utilization rose 4.97x at 05:02:30 (0.201 → 0.997)", "explains the trouble of 1 services behind it (cart)"},
		},
		{
			name: "shared database without metrics",
			build: func() *Case {
				b := newBuilder()
				b.node("database/e/orders", "database")
				for _, s := range []string{"a", "b", "c"} {
					id := "service/e/shop/" + s
					b.node(id, "service").edge(id, "database/e/orders", topology.EdgeDependsOn)
					b.series(id, "latency_p99_seconds", 0.2, 0.03, 90, 0.9).series(id, "error_ratio", 0.001, 0.03, -1, 0)
				}
				return b.c
			},
			want:     "database/e/orders",
			evidence: []string{"no metrics of its own; 3 of its 3 callers degraded (a, b, c)"},
		},
		{
			name: "a red herring that began after detection",
			build: func() *Case {
				b := shop()
				b.series("service/e/shop/cart", "error_ratio", 0.001, 0.03, 90, 0.2).
					series("pod/e/shop/frontend-1", "memory_working_set_bytes", 3e8, 0.005, 130, 9e8)
				return b.healthy("service/e/shop/cart error_ratio", "pod/e/shop/frontend-1 memory_working_set_bytes").c
			},
			want: "service/e/shop/cart",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.build()
			if err := c.Topology.Validate(); err != nil {
				t.Fatal(err)
			}
			r := Rank(c, Options{})
			if len(r.Ranking) == 0 {
				t.Fatal("empty ranking")
			}
			if got := r.Ranking[0].Node; got != tc.want {
				t.Errorf("first = %s, want %s; ranking:\n%s", got, tc.want, text(r))
			}
			ev := strings.Join(r.Ranking[0].Evidence, "\n")
			for _, w := range tc.evidence {
				if !strings.Contains(ev, w) {
					t.Errorf("evidence of %s lacks %q:\n%s", r.Ranking[0].Node, w, ev)
				}
			}
			var sum float64
			for i, x := range r.Ranking {
				sum += x.Score
				if i > 0 && x.Score > r.Ranking[i-1].Score {
					t.Errorf("ranking not sorted at %d", i)
				}
				if len(x.Evidence) == 0 {
					t.Errorf("%s has no evidence", x.Node)
				}
			}
			if math.Abs(sum-1) > 0.01 && len(r.Ranking) < 20 {
				t.Errorf("scores sum to %v, want 1", sum)
			}
		})
	}
}

func text(r Ranking) string {
	var b bytes.Buffer
	r.WriteText(&b)
	return b.String()
}

// The README's example case has no series before detection and an alert on
// a service only its edges name: it still ranks, on the alert.
func TestRankReadmeAndNoMetrics(t *testing.T) {
	data, err := os.ReadFile("testdata/readme.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCase(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	r := Rank(c, Options{})
	if len(r.Ranking) == 0 || r.Ranking[0].Node != "service/east/shop/frontend" {
		t.Fatalf("ranking = %+v", r.Ranking)
	}
	if !strings.Contains(strings.Join(r.Ranking[0].Evidence, " "), "alert HighLatency (warning) firing since 04:40:15") {
		t.Errorf("evidence = %q", r.Ranking[0].Evidence)
	}

	c.Metrics = nil
	c.Warnings = nil
	c2, err := ParseCase(strings.NewReader(`{"version": 1, "topology": {"nodes": [{"id": "node/e/n1", "kind": "node"}, {"id": "pod/e/ns/p", "kind": "pod"}],
		"edges": [{"from": "pod/e/ns/p", "to": "node/e/n1", "kind": "runs_on"}]},
		"alerts": [{"labels": {"alertname": "KubeNodeNotReady", "node": "n1", "severity": "critical"}, "startsAt": "2025-11-21T04:40:15Z"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r = Rank(c2, Options{})
	if len(r.Ranking) != 1 || r.Ranking[0].Node != "node/e/n1" || r.Ranking[0].Score != 1 {
		t.Fatalf("ranking = %+v", r.Ranking)
	}
	if !hasWarning(c2, "no metrics") || len(r.Warnings) == 0 {
		t.Errorf("warnings = %q", r.Warnings)
	}
}

func TestRankDegenerate(t *testing.T) {
	nan := math.NaN()
	for _, c := range []*Case{
		{Topology: &topology.Graph{}},
		{Topology: &topology.Graph{Nodes: []topology.Node{{ID: "a/b", Kind: "a"}}}},
		{Topology: &topology.Graph{Nodes: []topology.Node{{ID: "a/b", Kind: "a"}}}, Metrics: &Metrics{Start: 0, Step: 15, Series: []Series{
			{Node: "a/b", Name: "x", Values: []float64{nan, nan, nan}},
			{Node: "a/b", Name: "y"},
			{Node: "a/b", Name: "restarts_total", Values: []float64{1, 1, 0, 5, 5, nan, 2}},
			{Node: "nowhere", Name: "z", Values: []float64{1}},
		}}, DetectedAt: -1e9},
		{Topology: &topology.Graph{Nodes: []topology.Node{{ID: "a/b", Kind: "a"}}}, Metrics: &Metrics{Start: 0, Step: 15, Series: []Series{
			{Node: "a/b", Name: "x", Values: make([]float64, 50)},
		}}, DetectedAt: 1e12},
	} {
		r := Rank(c, Options{})
		if r.Ranking == nil {
			t.Errorf("nil ranking for %+v", c)
		}
	}
}

func TestRankLimit(t *testing.T) {
	c, _ := Simulate(3, 0)
	if n := len(Rank(c, Options{Limit: 2}).Ranking); n > 2 {
		t.Errorf("Limit 2 gave %d", n)
	}
	if all, def := len(Rank(c, Options{Limit: -1}).Ranking), len(Rank(c, Options{}).Ranking); all < def || def > 20 {
		t.Errorf("all = %d, default = %d", all, def)
	}
}

// A regression guard on simulated incidents; the measured figures are in
// docs/rca.md.
func TestRankSimulated(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 40 incidents")
	}
	var hits, hits3 int
	const n = 40
	for i := range n {
		c, truth := Simulate(20, i)
		h := Score(Rank(c, Options{}).Nodes(), truth)
		if h.Pos == 1 {
			hits++
		}
		if h.Pos >= 1 && h.Pos <= 3 {
			hits3++
		}
	}
	if hits < n*85/100 || hits3 < n*95/100 {
		t.Errorf("AC@1 %d/%d, AC@3 %d/%d on simulated incidents", hits, n, hits3, n)
	}
}

func TestWriteText(t *testing.T) {
	r := Ranking{Ranking: []Ranked{{Node: "pod/e/ns/p", Score: 0.8, Evidence: []string{"cpu_usage_cores rose 4x at 04:39:45"}}}}
	want := " 1. pod/e/ns/p  (score 0.800)\n      - cpu_usage_cores rose 4x at 04:39:45\n"
	if got := text(r); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := text(Ranking{}); !strings.Contains(got, "no candidate") {
		t.Errorf("empty ranking text = %q", got)
	}
}
