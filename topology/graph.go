// Package topology holds the topology block shared by Panorama's case formats,
// the collector's Kubernetes view, the tracing service graph and root-cause
// analysis: a graph of clusters, nodes, pods, services and workloads joined by
// typed edges (see the "Topology block" section of the formats README).
package topology

import (
	"cmp"
	"maps"
	"slices"
	"strings"
)

// NodeKind says what a graph node stands for. Kinds other than the constants
// below ("database", "queue", "external"…) are valid and handled generically.
type NodeKind string

// Node kinds with a meaning of their own.
const (
	KindCluster     NodeKind = "cluster"
	KindNode        NodeKind = "node"
	KindPod         NodeKind = "pod"
	KindService     NodeKind = "service"
	KindDeployment  NodeKind = "deployment"
	KindStatefulSet NodeKind = "statefulset"
	KindDaemonSet   NodeKind = "daemonset"
	KindReplicaSet  NodeKind = "replicaset"
	KindJob         NodeKind = "job"
)

// EdgeKind says how the two ends of an edge relate. Unknown kinds are kept and
// handled generically, like unknown node kinds.
type EdgeKind string

// Edge kinds. Each is read "from <kind> to": a service selects a pod.
const (
	// EdgeCalls goes from a caller to its callee, as seen in traces.
	EdgeCalls EdgeKind = "calls"
	// EdgeSelects goes from a service to a pod behind it.
	EdgeSelects EdgeKind = "selects"
	// EdgeRunsOn goes from a pod to the node it is scheduled on.
	EdgeRunsOn EdgeKind = "runs_on"
	// EdgeMemberOf goes from a node to its cluster.
	EdgeMemberOf EdgeKind = "member_of"
	// EdgeDependsOn goes from anything to something else it needs.
	EdgeDependsOn EdgeKind = "depends_on"
	// EdgeOwnedBy goes from a pod to the workload controlling it (deployment,
	// statefulset, daemonset, job, or a replicaset without a deployment). It
	// is Panorama's extension to the README's edge kinds; readers that do not
	// know it must treat it like depends_on.
	EdgeOwnedBy EdgeKind = "owned_by"
)

// Graph is a topology block: nodes and the typed edges between them.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one vertex of the graph. Labels carry the Kubernetes identity
// (cluster, namespace, node, pod, service…) that alerts are matched on.
type Node struct {
	ID      string            `json:"id"`
	Kind    NodeKind          `json:"kind"`
	Cluster string            `json:"cluster,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Edge is a directed, typed relation between two node IDs.
type Edge struct {
	From string   `json:"from"`
	To   string   `json:"to"`
	Kind EdgeKind `json:"kind"`
}

// ClusterID returns the ID of a cluster node: cluster/<cluster>.
func ClusterID(cluster string) string {
	return string(KindCluster) + "/" + cluster
}

// NodeID returns the ID of a Kubernetes node: node/<cluster>/<name>.
func NodeID(cluster, name string) string {
	return strings.Join([]string{string(KindNode), cluster, name}, "/")
}

// PodID returns the ID of a pod: pod/<cluster>/<namespace>/<name>.
func PodID(cluster, namespace, name string) string {
	return ObjectID(KindPod, cluster, namespace, name)
}

// ServiceID returns the ID of a service: service/<cluster>/<namespace>/<name>.
func ServiceID(cluster, namespace, name string) string {
	return ObjectID(KindService, cluster, namespace, name)
}

// ObjectID returns the ID of any namespaced object, workloads included:
// <kind>/<cluster>/<namespace>/<name>, e.g. deployment/east/shop/cart.
func ObjectID(kind NodeKind, cluster, namespace, name string) string {
	return strings.Join([]string{string(kind), cluster, namespace, name}, "/")
}

// Merge returns the union of graphs. Nodes are deduplicated by ID: the first
// non-empty kind and cluster win, labels are merged with the first value of
// each key winning. Edges are deduplicated by (from, to, kind). Nodes are
// sorted by ID and edges by (from, to, kind), so equal inputs give equal
// output whatever their order. Nil graphs are skipped; inputs are not
// modified and share no maps with the result.
func Merge(graphs ...*Graph) *Graph {
	nodes := map[string]*Node{}
	edges := map[Edge]struct{}{}
	for _, g := range graphs {
		if g == nil {
			continue
		}
		for _, n := range g.Nodes {
			m, ok := nodes[n.ID]
			if !ok {
				m = &Node{ID: n.ID}
				nodes[n.ID] = m
			}
			if m.Kind == "" {
				m.Kind = n.Kind
			}
			if m.Cluster == "" {
				m.Cluster = n.Cluster
			}
			for k, v := range n.Labels {
				if _, ok := m.Labels[k]; ok {
					continue
				}
				if m.Labels == nil {
					m.Labels = make(map[string]string, len(n.Labels))
				}
				m.Labels[k] = v
			}
		}
		for _, e := range g.Edges {
			edges[e] = struct{}{}
		}
	}

	out := &Graph{
		Nodes: make([]Node, 0, len(nodes)),
		Edges: make([]Edge, 0, len(edges)),
	}
	for _, id := range slices.Sorted(maps.Keys(nodes)) {
		out.Nodes = append(out.Nodes, *nodes[id])
	}
	for e := range edges {
		out.Edges = append(out.Edges, e)
	}
	slices.SortFunc(out.Edges, compareEdges)
	return out
}

func compareEdges(a, b Edge) int {
	return cmp.Or(
		strings.Compare(a.From, b.From),
		strings.Compare(a.To, b.To),
		strings.Compare(string(a.Kind), string(b.Kind)),
	)
}
