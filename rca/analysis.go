package rca

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// item is the evidence of one kind (role) on one node: how strong it is, on
// a log scale of robust deviations, and when it started.
type item struct {
	node  int
	role  role
	a     float64
	onset float64 // unix seconds
	// best is the evidence index of the strongest series, -1 for none.
	best int
	// usage marks CPU or memory consumption, which a host cannot cause.
	usage bool
	// alerts are the indexes of the case's alerts behind the item.
	alerts []int
	// why explains an inferred item, which has no series of its own.
	why   string
	parts []part
}

// cause is one way an item can be explained.
type cause struct {
	item     int
	strength float64
}

type analysis struct {
	c  *Case
	gr *graph
	w  window
	t0 float64 // time of sample 0

	ev     []seriesEvidence
	byNode [][]int // evidence indexes per node
	// blind marks nodes with no series that have history, readiness aside:
	// nothing says they are fine.
	blind []bool

	items  []item
	itemAt map[[2]int]int // (node, role) → item
	causes [][]cause
	// explained is the share of each item's evidence its causes take.
	explained []float64
	// known is explained as the topology alone has it, before latent
	// adds the call edges guessed from correlation.
	known []float64

	absorbed []float64          // per node
	flows    map[[2]int]float64 // (from node, to node) → evidence moved
}

// strength turns a robust deviation into evidence: zero below three
// deviations, growing with its logarithm above.
func strength(z float64) float64 {
	if !(z > 3) {
		return 0
	}
	return math.Log(min(z, 1000) / 3)
}

// roleWeight is how much evidence of each role counts towards a node's mass.
// Traffic weighs nothing: more requests explain more CPU, but a change of
// traffic is not a fault to fix.
var roleWeight = [numRoles]float64{rolePerf: 1, roleLoad: 0, roleRes: 1, roleSat: 0.8, roleAvail: 1, roleGen: 0.7, roleStop: 1}

func newAnalysis(c *Case) *analysis {
	gr := newGraph(c.Topology)
	a := &analysis{c: c, gr: gr, itemAt: map[[2]int]int{}, flows: map[[2]int]float64{}}
	n := len(gr.ids)
	a.byNode = make([][]int, n)
	a.blind = make([]bool, n)
	if m := c.Metrics; m != nil {
		a.t0 = m.Start
		a.w = newWindow(m.Len(), m.Step, m.Start, c.DetectedAt)
		for _, s := range m.Series {
			i, ok := gr.index[s.Node]
			if !ok {
				continue
			}
			e := analyze(s.Values, classify(gr.kind[i], s.Name), a.w)
			e.node, e.name = i, s.Name
			a.byNode[i] = append(a.byNode[i], len(a.ev))
			a.ev = append(a.ev, e)
		}
	} else {
		a.t0 = c.DetectedAt
		a.w = window{step: 15, stopMin: 1}
	}
	for i := range n {
		a.blind[i] = true
		for _, k := range a.byNode[i] {
			if e := a.ev[k]; !e.fresh && e.kind.role != roleAvail {
				a.blind[i] = false
			}
		}
	}
	a.metricItems()
	a.alertItems()
	return a
}

func (a *analysis) at(sample int) float64 { return a.t0 + float64(sample)*a.w.step }

// tolerance is how much later a cause may start than its effect and still
// explain it: onsets are estimated from smoothed, noisy samples.
func (a *analysis) tolerance() float64 { return max(60, 3*a.w.step) }

// addItem merges evidence into the item of its node and role. The item
// starts when the earliest of its strong parts did: a weak series drifting
// early does not move it.
func (a *analysis) addItem(it item) int {
	key := [2]int{it.node, int(it.role)}
	it.parts = []part{{it.a, it.onset, len(it.alerts) > 0}}
	k, ok := a.itemAt[key]
	if !ok {
		a.items = append(a.items, it)
		a.itemAt[key] = len(a.items) - 1
		return len(a.items) - 1
	}
	cur := &a.items[k]
	if it.a > cur.a {
		cur.a, cur.best, cur.usage = it.a, it.best, it.usage
		if it.why != "" {
			cur.why = it.why
		}
	}
	cur.alerts = append(cur.alerts, it.alerts...)
	cur.parts = append(cur.parts, it.parts...)
	// Metrics date an item better than alerts, which fire after a delay.
	best, fromAlerts := 0.0, true
	for _, p := range cur.parts {
		if !p.alert {
			fromAlerts = false
			best = max(best, p.a)
		}
	}
	cur.onset = math.Inf(1)
	for _, p := range cur.parts {
		if p.alert == fromAlerts && (fromAlerts || p.a >= 0.5*best) {
			cur.onset = min(cur.onset, p.onset)
		}
	}
	return k
}

// part is one piece of evidence merged into an item.
type part struct {
	a, onset float64
	alert    bool
}

// metricItems turns series evidence into items: the strongest series of
// each role on each node, and a node that stopped reporting.
func (a *analysis) metricItems() {
	for node, idx := range a.byNode {
		var stopped, history int
		stopAt := []float64{}
		for _, k := range idx {
			e := a.ev[k]
			if e.fresh {
				continue
			}
			history++
			if e.stopped {
				stopped++
				stopAt = append(stopAt, a.at(e.stopAt))
			}
			s := strength(e.z)
			if s <= 0 {
				continue
			}
			a.addItem(item{node: node, role: e.kind.role, a: s, onset: a.at(e.onset), best: k, usage: e.kind.usage})
		}
		// One series going quiet is a scrape problem; most of a node's
		// series going quiet together is the node.
		if stopped > 0 && (stopped >= 2 || history == 1) && 2*stopped >= history {
			frac := float64(stopped) / float64(history)
			a.addItem(item{node: node, role: roleStop, a: 2.5 * frac, onset: medianOf(stopAt), best: -1,
				why: fmt.Sprintf("%d of its %d series stopped reporting at %s", stopped, history, clock(medianOf(stopAt)))})
		}
	}
}

// alertItems adds the evidence of the alerts, mapped to nodes by labels.
func (a *analysis) alertItems() {
	det := a.c.DetectedAt
	for i, al := range a.c.Alerts {
		node := a.gr.alertTarget(al.Labels)
		if node < 0 {
			continue
		}
		start := det
		if !al.StartsAt.IsZero() {
			start = float64(al.StartsAt.Unix())
		}
		if !al.EndsAt.IsZero() && float64(al.EndsAt.Unix()) < det-600 {
			continue // over well before the incident
		}
		// An alert says a threshold was crossed, which is weaker evidence
		// than the series themselves when they are at hand.
		s := 0.9
		switch strings.ToLower(al.Labels["severity"]) {
		case "critical", "page", "error":
			s = 1.2
		case "info", "none":
			s = 0.4
		}
		if start < det-3600 {
			s *= 0.3 // firing for long before: a standing condition
		}
		// Rules wait a few minutes ("for") before firing: the condition
		// began earlier than the alert.
		a.addItem(item{node: node, role: alertRole(a.gr.kind[node], al.Labels["alertname"]), a: s, onset: start - 180, best: -1, alerts: []int{i}})
	}
}

// alertRole reads an alert's name for what kind of signal it reports.
func alertRole(kind, name string) role {
	n := strings.ToLower(name)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(n, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("notready", "down", "unreachable", "absent", "nodata", "missing", "lost"):
		return roleAvail
	case has("restart", "crashloop", "oom", "throttl", "evict"):
		return roleSat
	case has("network", "packet"):
		if kind == "pod" {
			return roleSat
		}
		return roleRes
	case has("cpu", "memory", "disk", "io", "filesystem", "inode"):
		return roleRes
	case has("latency", "slow", "error", "slo", "budget", "5xx", "availability", "timeout", "fail"):
		return rolePerf
	}
	return roleGen
}

func (a *analysis) score() {
	a.explain()
	a.known = slices.Clone(a.explained)
	a.latent()
	if a.infer() {
		a.explain()
		a.latent()
	}
	a.transport()
}
