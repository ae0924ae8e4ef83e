package topology

import (
	"reflect"
	"testing"
)

func TestIDs(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ClusterID("east"), "cluster/east"},
		{NodeID("east", "ip-10-0-1-7"), "node/east/ip-10-0-1-7"},
		{PodID("east", "shop", "cart-7d9f-x2"), "pod/east/shop/cart-7d9f-x2"},
		{ServiceID("east", "shop", "cart"), "service/east/shop/cart"},
		{ObjectID(KindDeployment, "east", "shop", "cart"), "deployment/east/shop/cart"},
		{ObjectID(KindStatefulSet, "east", "db", "pg"), "statefulset/east/db/pg"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestMerge(t *testing.T) {
	k8s := &Graph{
		Nodes: []Node{
			{ID: "service/e/shop/cart", Kind: KindService, Cluster: "e", Labels: map[string]string{"namespace": "shop", "service": "cart"}},
			{ID: "pod/e/shop/cart-1", Kind: KindPod, Cluster: "e"},
		},
		Edges: []Edge{
			{From: "service/e/shop/cart", To: "pod/e/shop/cart-1", Kind: EdgeSelects},
			{From: "service/e/shop/cart", To: "pod/e/shop/cart-1", Kind: EdgeSelects},
		},
	}
	traces := &Graph{
		Nodes: []Node{
			{ID: "service/e/shop/frontend", Kind: KindService},
			{ID: "service/e/shop/cart", Kind: "other", Labels: map[string]string{"service": "ignored", "team": "checkout"}},
		},
		Edges: []Edge{
			{From: "service/e/shop/frontend", To: "service/e/shop/cart", Kind: EdgeCalls},
			{From: "service/e/shop/cart", To: "pod/e/shop/cart-1", Kind: EdgeSelects},
		},
	}
	want := &Graph{
		Nodes: []Node{
			{ID: "pod/e/shop/cart-1", Kind: KindPod, Cluster: "e"},
			{ID: "service/e/shop/cart", Kind: KindService, Cluster: "e", Labels: map[string]string{"namespace": "shop", "service": "cart", "team": "checkout"}},
			{ID: "service/e/shop/frontend", Kind: KindService},
		},
		Edges: []Edge{
			{From: "service/e/shop/cart", To: "pod/e/shop/cart-1", Kind: EdgeSelects},
			{From: "service/e/shop/frontend", To: "service/e/shop/cart", Kind: EdgeCalls},
		},
	}

	got := Merge(k8s, nil, traces)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Merge =\n%+v\nwant\n%+v", got, want)
	}
	if k8s.Nodes[0].Labels["team"] != "" {
		t.Fatal("Merge modified its input")
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}

	empty := Merge()
	if empty.Nodes == nil || empty.Edges == nil {
		t.Fatal("Merge() must return empty, non-nil lists so JSON shows [] rather than null")
	}
}
