package rca

import (
	"reflect"
	"testing"

	"github.com/panorama-obs/panorama/topology"
)

func TestBaselines(t *testing.T) {
	c := &Case{
		Topology:   &topology.Graph{Nodes: []topology.Node{{ID: "a", Kind: "x"}, {ID: "b", Kind: "x"}, {ID: "c", Kind: "x"}, {ID: "d", Kind: "x"}}},
		DetectedAt: 40,
		Metrics: &Metrics{Start: 0, Step: 10, Series: []Series{
			{Node: "a", Name: "m", Values: []float64{1, 2, 1, 2, 3, 2.5, 3}},
			{Node: "b", Name: "m", Values: []float64{1, 2, 1, 2, 9, 8, 9}},
			// Constant before detection: dropped, as in RCAEval.
			{Node: "c", Name: "m", Values: []float64{1, 1, 1, 1, 50, 40, 50}},
			// A fall scores low: the score is the largest value, not the
			// largest deviation.
			{Node: "d", Name: "m", Values: []float64{5, 6, 5, 6, -90, -90, 5}},
		}},
	}
	for name, f := range map[string]func(*Case) []string{"nsigma": NSigma, "baro": BARO} {
		if got, want := f(c), []string{"b", "a", "d"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if NSigma(&Case{Topology: c.Topology}) != nil {
		t.Error("ranking without metrics")
	}
}
