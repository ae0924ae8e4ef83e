package rca

import (
	"testing"

	"github.com/panorama-obs/panorama/topology"
)

func TestAlertTarget(t *testing.T) {
	g := &topology.Graph{
		Nodes: []topology.Node{
			{ID: "cluster/east", Kind: "cluster"},
			{ID: "node/east/ip-10-0-1-7", Kind: "node", Cluster: "east"},
			{ID: "pod/east/shop/cart-7d9f-x2", Kind: "pod", Cluster: "east", Labels: map[string]string{"namespace": "shop", "pod": "cart-7d9f-x2", "node": "ip-10-0-1-7"}},
			{ID: "service/east/shop/cart", Kind: "service", Cluster: "east", Labels: map[string]string{"namespace": "shop", "service": "cart"}},
			// Known only by an edge: its identity comes from its ID.
			{ID: "service/east/shop/frontend", Kind: "service"},
			{ID: "service/west/shop/cart", Kind: "service", Cluster: "west", Labels: map[string]string{"namespace": "shop", "service": "cart"}},
			{ID: "database/east/orders", Kind: "database", Cluster: "east", Labels: map[string]string{"database": "orders"}},
		},
	}
	gr := newGraph(g)
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"alertname": "KubePodCrashLooping", "cluster": "east", "namespace": "shop", "pod": "cart-7d9f-x2", "service": "cart"}, "pod/east/shop/cart-7d9f-x2"},
		{map[string]string{"alertname": "HighLatency", "cluster": "east", "namespace": "shop", "service": "cart"}, "service/east/shop/cart"},
		{map[string]string{"alertname": "HighLatency", "cluster": "west", "service": "cart"}, "service/west/shop/cart"},
		{map[string]string{"alertname": "HighLatency", "cluster": "east", "namespace": "shop", "service": "frontend"}, "service/east/shop/frontend"},
		{map[string]string{"alertname": "KubeNodeNotReady", "node": "ip-10-0-1-7"}, "node/east/ip-10-0-1-7"},
		{map[string]string{"alertname": "NodeExporterDown", "instance": "10.0.1.7:9100"}, "node/east/ip-10-0-1-7"},
		{map[string]string{"alertname": "DBSlow", "database": "orders"}, "database/east/orders"},
		{map[string]string{"alertname": "KubeAPIDown", "cluster": "east"}, "cluster/east"},
		{map[string]string{"alertname": "Watchdog"}, ""},
		{map[string]string{"alertname": "HighLatency", "service": "nowhere"}, ""},
	} {
		got := ""
		if i := gr.alertTarget(tc.labels); i >= 0 {
			got = gr.ids[i]
		}
		if got != tc.want {
			t.Errorf("alertTarget(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
}

func TestGraphRelations(t *testing.T) {
	g := &topology.Graph{
		Nodes: []topology.Node{{ID: "s", Kind: "service"}, {ID: "p", Kind: "pod"}, {ID: "n", Kind: "node"}, {ID: "d", Kind: "deployment"}, {ID: "x", Kind: "external"}},
		Edges: []topology.Edge{
			{From: "s", To: "p", Kind: topology.EdgeSelects},
			{From: "p", To: "n", Kind: topology.EdgeRunsOn},
			{From: "p", To: "d", Kind: topology.EdgeOwnedBy},
			{From: "s", To: "x", Kind: "speaks_to"},
			{From: "s", To: "x", Kind: topology.EdgeCalls},
			{From: "s", To: "s", Kind: topology.EdgeCalls},
		},
	}
	gr := newGraph(g)
	idx := gr.index
	if gr.host[idx["p"]] != idx["n"] || len(gr.hosted[idx["n"]]) != 1 {
		t.Error("runs_on not indexed")
	}
	if len(gr.members[idx["s"]]) != 1 || len(gr.members[idx["d"]]) != 1 {
		t.Error("selects and owned_by not indexed as groupings")
	}
	if len(gr.callees[idx["s"]]) != 1 {
		t.Errorf("callees of s = %v: an unknown edge kind and calls to the same node count once, self-calls not at all", gr.callees[idx["s"]])
	}
}
