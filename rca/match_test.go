package rca

import (
	"strings"
	"testing"
)

func TestMatcher(t *testing.T) {
	c, err := ParseCase(strings.NewReader(`{"version": 1, "topology": {"nodes": [
  {"id": "cluster/east", "kind": "cluster"},
  {"id": "node/east/ip-10-0-1-7", "kind": "node", "cluster": "east", "labels": {"node": "ip-10-0-1-7"}},
  {"id": "pod/east/shop/cart-1", "kind": "pod", "cluster": "east", "labels": {"namespace": "shop", "pod": "cart-1", "node": "ip-10-0-1-7"}},
  {"id": "pod/west/shop/cart-1", "kind": "pod", "cluster": "west", "labels": {"namespace": "shop", "pod": "cart-1"}},
  {"id": "service/east/shop/cart", "kind": "service", "cluster": "east", "labels": {"namespace": "shop", "service": "cart"}},
  {"id": "database/east/billing", "kind": "database", "cluster": "east", "labels": {"database": "billing"}}
], "edges": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(c.Topology)
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"cluster": "east", "namespace": "shop", "pod": "cart-1", "node": "ip-10-0-1-7", "job": "x"}, "pod/east/shop/cart-1"},
		{map[string]string{"cluster": "west", "namespace": "shop", "pod": "cart-1"}, "pod/west/shop/cart-1"},
		{map[string]string{"cluster": "east", "node": "ip-10-0-1-7"}, "node/east/ip-10-0-1-7"},
		{map[string]string{"cluster": "east", "instance": "10.0.1.7:9100"}, "node/east/ip-10-0-1-7"},
		{map[string]string{"cluster": "east", "namespace": "shop", "service": "cart"}, "service/east/shop/cart"},
		{map[string]string{"cluster": "east", "database": "billing"}, "database/east/billing"},
		{map[string]string{"cluster": "east"}, "cluster/east"},
		{map[string]string{"cluster": "east", "namespace": "shop", "pod": "gone-1"}, ""},
		{map[string]string{"cluster": "north", "namespace": "shop", "service": "cart"}, ""},
	} {
		got, ok := m.Match(tc.labels)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Match(%v) = %q, %v; want %q", tc.labels, got, ok, tc.want)
		}
	}
	// The matcher and the ranker's alert mapping agree.
	gr := newGraph(c.Topology)
	labels := map[string]string{"cluster": "east", "namespace": "shop", "service": "cart", "alertname": "HighLatency"}
	got, _ := m.Match(labels)
	if i := gr.alertTarget(labels); i < 0 || gr.ids[i] != got {
		t.Errorf("alert maps to %d, matcher to %s", i, got)
	}
}
