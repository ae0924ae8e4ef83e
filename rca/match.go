package rca

import (
	"slices"
	"strings"

	"github.com/panorama-obs/panorama/topology"
)

// Matcher finds the topology node a set of labels names, by the rules that
// map a case's alerts to nodes: the most specific node the labels name (a
// pod before a Kubernetes node before a service before anything else), with
// cluster and namespace agreeing. Capture uses it to map PromQL series to
// nodes, so that series and alerts land on the same nodes.
type Matcher struct {
	gr *graph
	// byValue lists the nodes whose identity or name holds a value, so that
	// a label set is compared with a few candidates, not the whole graph.
	byValue map[string][]int
}

// NewMatcher indexes g for matching.
func NewMatcher(g *topology.Graph) *Matcher {
	gr := newGraph(g)
	m := &Matcher{gr: gr, byValue: make(map[string][]int, 2*len(gr.ids))}
	for i, id := range gr.ident {
		vals := []string{gr.name[i]}
		for _, k := range []string{"pod", "node", "service", "instance", "ip"} {
			if v := id[k]; v != "" {
				vals = append(vals, v)
			}
		}
		slices.Sort(vals)
		for _, v := range slices.Compact(vals) {
			m.byValue[v] = append(m.byValue[v], i)
		}
	}
	return m
}

// Match returns the ID of the node labels name, and false when none does.
func (m *Matcher) Match(labels map[string]string) (string, bool) {
	l := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		l[strings.ToLower(k)] = v
	}
	if l["node"] == "" && l["instance"] != "" {
		host := l["instance"]
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			host = host[:i]
		}
		l["instance_host"] = host
	}
	var cands []int
	for _, v := range l {
		cands = append(cands, m.byValue[v]...)
	}
	best, bestRank := -1, 0
	pick := func(i int) {
		if r := m.gr.matchRank(i, m.gr.ident[i], l); r > bestRank || r == bestRank && r > 0 && i < best {
			best, bestRank = i, r
		}
	}
	for _, i := range cands {
		pick(i)
	}
	if best < 0 || l["instance_host"] != "" && bestRank < 4 {
		// Matches the index cannot see: a node named by a mangled
		// instance address, a cluster named by its label alone.
		for i := range m.gr.ids {
			pick(i)
		}
	}
	if best < 0 {
		return "", false
	}
	return m.gr.ids[best], true
}
