package servicegraph

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/panorama-obs/panorama/topology"
)

// id is the node's topology ID: service/<cluster>/<namespace>/<name> when
// the resource says where the service runs (matching the collector's
// Kubernetes topology), else <kind>/<name>.
func (n node) id() string {
	if n.cluster != "" && n.namespace != "" {
		return topology.ObjectID(topology.NodeKind(n.kind), n.cluster, n.namespace, n.name)
	}
	return n.kind + "/" + n.name
}

func (n node) topologyNode() topology.Node {
	labels := map[string]string{}
	switch n.kind {
	case "service":
		labels["service"] = n.name
	default:
		labels["name"] = n.name
	}
	if n.namespace != "" {
		labels["namespace"] = n.namespace
	}
	if n.cluster != "" {
		labels["cluster"] = n.cluster
	}
	return topology.Node{ID: n.id(), Kind: topology.NodeKind(n.kind), Cluster: n.cluster, Labels: labels}
}

// Edge is a calls edge with the recent RED figures of its requests. The
// extra fields are Panorama's; readers of the topology block ignore them.
type Edge struct {
	topology.Edge
	// RequestRate and ErrorRate are requests and failed requests per
	// second over the window.
	RequestRate float64 `json:"requestRate"`
	ErrorRate   float64 `json:"errorRate"`
	// LatencyAvgSeconds is the mean server-side latency (client-side for
	// virtual nodes) over the window; 0 without requests.
	LatencyAvgSeconds float64 `json:"latencyAvgSeconds"`
}

// Topology is the service graph as a topology block with rates.
type Topology struct {
	Nodes []topology.Node `json:"nodes"`
	Edges []Edge          `json:"edges"`
}

// Topology returns the graph seen since start, with the rates of the last
// Window.
func (g *Graph) Topology() Topology {
	now := g.opts.Now()
	g.mtx.Lock()
	defer g.mtx.Unlock()
	sums := map[link]*linkStats{}
	add := func(b *bucket) {
		for l, st := range b.links {
			s, ok := sums[l]
			if !ok {
				s = &linkStats{}
				sums[l] = s
			}
			s.requests += st.requests
			s.failed += st.failed
			s.latencySum += st.latencySum
		}
	}
	for _, b := range g.recent {
		if now.Sub(b.end) <= g.opts.Window {
			add(b)
		}
	}
	add(g.current)
	for l := range g.seen {
		if _, ok := sums[l]; !ok {
			sums[l] = &linkStats{}
		}
	}
	span := min(now.Sub(g.started), g.opts.Window).Seconds()
	if span < 1 {
		span = 1
	}

	t := Topology{Nodes: []topology.Node{}, Edges: []Edge{}}
	for _, n := range g.nodes {
		t.Nodes = append(t.Nodes, n.topologyNode())
	}
	slices.SortFunc(t.Nodes, func(a, b topology.Node) int { return cmp.Compare(a.ID, b.ID) })
	for l, s := range sums {
		e := Edge{Edge: topology.Edge{From: l.from.id(), To: l.to.id(), Kind: topology.EdgeCalls}, RequestRate: s.requests / span, ErrorRate: s.failed / span}
		if s.requests > 0 {
			e.LatencyAvgSeconds = s.latencySum / s.requests
		}
		t.Edges = append(t.Edges, e)
	}
	slices.SortFunc(t.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To))
	})
	return t
}

// Graph returns the service graph as a plain topology block, for merging
// with other topology (the Kubernetes one) in root-cause analysis.
func (g *Graph) Graph() *topology.Graph {
	t := g.Topology()
	out := &topology.Graph{Nodes: t.Nodes, Edges: make([]topology.Edge, 0, len(t.Edges))}
	for _, e := range t.Edges {
		out.Edges = append(out.Edges, e.Edge)
	}
	return out
}

// ServeTopology answers GET /api/v1/topology.
func (g *Graph) ServeTopology(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(g.Topology())
}
