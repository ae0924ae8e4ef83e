package rca

import (
	"strings"

	"github.com/panorama-obs/panorama/topology"
)

// graph is the topology indexed for ranking: who calls whom, which pods a
// service selects, which node a pod runs on.
type graph struct {
	ids   []string
	index map[string]int
	kind  []string
	// name is the last part of the ID, the name alerts use.
	name []string
	// ident holds the Kubernetes identity of each node (cluster, namespace,
	// pod, service, node), from its labels and, failing those, its ID.
	ident []map[string]string

	// callees: what a node needs (calls, depends_on and unknown edges);
	// callers the reverse.
	callees, callers [][]int
	// members: the pods a service (or workload) selects; groups the reverse.
	members, groups [][]int
	// host: the node a pod runs on (-1 when unknown); hosted the reverse.
	host   []int
	hosted [][]int
}

func newGraph(g *topology.Graph) *graph {
	n := len(g.Nodes)
	gr := &graph{
		ids: make([]string, n), index: make(map[string]int, n), kind: make([]string, n), name: make([]string, n),
		ident:   make([]map[string]string, n),
		callees: make([][]int, n), callers: make([][]int, n),
		members: make([][]int, n), groups: make([][]int, n),
		host: make([]int, n), hosted: make([][]int, n),
	}
	for i, nd := range g.Nodes {
		gr.ids[i] = nd.ID
		gr.index[nd.ID] = i
		gr.kind[i] = strings.ToLower(string(nd.Kind))
		gr.ident[i] = identity(nd)
		gr.name[i] = nd.ID[strings.LastIndexByte(nd.ID, '/')+1:]
		gr.host[i] = -1
	}
	seen := map[[2]int]bool{}
	for _, e := range g.Edges {
		from, ok1 := gr.index[e.From]
		to, ok2 := gr.index[e.To]
		if !ok1 || !ok2 || from == to {
			continue
		}
		switch strings.ToLower(string(e.Kind)) {
		case string(topology.EdgeSelects):
			gr.link(seen, gr.members, gr.groups, from, to, 's')
		case string(topology.EdgeOwnedBy):
			// A workload groups its pods as a service does.
			gr.link(seen, gr.members, gr.groups, to, from, 's')
		case string(topology.EdgeRunsOn):
			if gr.host[from] < 0 {
				gr.host[from] = to
				gr.hosted[to] = append(gr.hosted[to], from)
			}
		case string(topology.EdgeMemberOf):
			// Cluster membership carries no symptoms.
		default:
			gr.link(seen, gr.callees, gr.callers, from, to, 'c')
		}
	}
	return gr
}

func (gr *graph) link(seen map[[2]int]bool, fwd, back [][]int, from, to int, tag int) {
	key := [2]int{from, to*4 + tag%4}
	if seen[key] {
		return
	}
	seen[key] = true
	fwd[from] = append(fwd[from], to)
	back[to] = append(back[to], from)
}

// identity returns the labels alerts are matched on. IDs built the way the
// topology package builds them fill in what the labels lack.
func identity(n topology.Node) map[string]string {
	id := map[string]string{}
	for k, v := range n.Labels {
		id[strings.ToLower(k)] = v
	}
	if n.Cluster != "" && id["cluster"] == "" {
		id["cluster"] = n.Cluster
	}
	parts := strings.Split(n.ID, "/")
	set := func(k, v string) {
		if id[k] == "" && v != "" {
			id[k] = v
		}
	}
	kind := strings.ToLower(string(n.Kind))
	switch {
	case kind == string(topology.KindCluster) && len(parts) == 2:
		set("cluster", parts[1])
	case kind == string(topology.KindNode) && len(parts) == 3:
		set("cluster", parts[1])
		set("node", parts[2])
	case len(parts) == 4:
		set("cluster", parts[1])
		set("namespace", parts[2])
		if kind == string(topology.KindPod) || kind == string(topology.KindService) {
			set(kind, parts[3])
		}
	case len(parts) == 3:
		set("cluster", parts[1])
	}
	return id
}

// alertTarget returns the node an alert is about: the most specific one its
// labels name (a pod before a node before a service before anything else),
// or -1 when none matches.
func (gr *graph) alertTarget(labels map[string]string) int {
	l := make(map[string]string, len(labels))
	for k, v := range labels {
		l[strings.ToLower(k)] = v
	}
	if l["node"] == "" && l["instance"] != "" {
		// node-exporter alerts often name the node only by instance.
		host := l["instance"]
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			host = host[:i]
		}
		l["instance_host"] = host
	}
	best, bestRank := -1, 0
	for i, id := range gr.ident {
		r := gr.matchRank(i, id, l)
		if r > bestRank {
			best, bestRank = i, r
		}
	}
	return best
}

// matchRank scores how specifically labels l name node i: 0 when they do not.
func (gr *graph) matchRank(i int, id, l map[string]string) int {
	for _, k := range []string{"cluster", "namespace"} {
		if l[k] != "" && id[k] != "" && l[k] != id[k] {
			return 0
		}
	}
	switch gr.kind[i] {
	case string(topology.KindPod):
		if l["pod"] != "" && l["pod"] == id["pod"] {
			return 5
		}
	case string(topology.KindNode):
		if l["pod"] != "" {
			return 0
		}
		if l["node"] != "" && l["node"] == id["node"] {
			return 4
		}
		if h := l["instance_host"]; h != "" && (h == id["node"] || h == id["instance"] || h == id["ip"] || strings.Contains(id["node"], strings.ReplaceAll(h, ".", "-"))) {
			return 4
		}
	case string(topology.KindService):
		if l["pod"] != "" || l["node"] != "" && l["service"] == "" {
			return 0
		}
		if l["service"] != "" && l["service"] == id["service"] {
			return 3
		}
	case string(topology.KindCluster):
		if len(l) > 0 && l["cluster"] == id["cluster"] && l["namespace"] == "" && l["pod"] == "" && l["node"] == "" && l["service"] == "" {
			return 1
		}
	default:
		if l["pod"] != "" {
			return 0
		}
		// Any other kind: a label named after the kind, or the service
		// label, holding the node's name.
		if v := l[gr.kind[i]]; v != "" && v == gr.name[i] {
			return 3
		}
		if v := l["service"]; v != "" && (v == gr.name[i] || v == id["service"]) {
			return 3
		}
	}
	return 0
}
