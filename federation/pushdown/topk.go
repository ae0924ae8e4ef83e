package pushdown

import (
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// Which of several series with the same value topk and bottomk keep
// depends on the order the engine meets every series in (its heap), so a
// leaf that must choose as the federator pulling the series would reads
// them in label order: with its external labels merged in, that is a sort
// of every series the query selects. That order matters only when a series
// outside the k kept has the value of one inside: otherwise the k best are
// the same whatever the order. A leaf therefore first evaluates the same
// aggregation of k+1 over the storage's order, and keeps its k best of
// each group at each step when they are strictly better than the one more;
// only when they are not (a tie at the boundary) does it evaluate k over
// the label order.
//
// Why k+1 decides it, for topk (bottomk is the mirror), in the engine's
// order of values (NaN below every number): the heap of k+1 only ever
// drops or passes over a value at most its least at that moment, and its
// least only grows, so every value outside its final k+1 is at most their
// least, h. When its k best are all above h, every other series is at
// most h: those k are the only k best of the input, and a heap of k, in
// any order, takes each of them (at least one of any k it holds is below
// it) and never drops one (that takes k others at least as good, and
// there are only k-1). When the k-th best and the one more tie, which of
// the tied series are kept depends on the order, and the order is needed.

// maxOneMoreK bounds the k that is tried with k+1: past it most series
// are kept and the order is read anyway.
const maxOneMoreK = 10000

// topkOneMore is a, a topk or bottomk of a number k (keepsInputLabels),
// as the same aggregation of k+1, with k; ok false unless k is at least 1
// and at most maxOneMoreK.
func topkOneMore(a *parser.AggregateExpr) (oneMore string, k int, ok bool) {
	n, ok := Unparen(a.Param).(*parser.NumberLiteral)
	if !ok || !(n.Val >= 1 && n.Val <= maxOneMoreK) {
		return "", 0, false
	}
	// The engine's k is the parameter truncated.
	k = int(n.Val)
	b := *a
	b.Param = &parser.NumberLiteral{Val: float64(k + 1)}
	return b.String(), k, true
}

// keepK is v, the answer of a's aggregation of k+1 (a vector, or a
// matrix for a range query), with the one more dropped from each group at
// each step that has k+1; ok false when a group's k-th best and the one
// more tie (or v holds histograms, which topk and bottomk ignore).
func keepK(v parser.Value, a *parser.AggregateExpr, k int) (parser.Value, bool) {
	// As the engine's heap compares: x replaces y when better.
	better := func(x, y float64) bool {
		if math.IsNaN(y) && !math.IsNaN(x) {
			return true
		}
		if a.Op == parser.BOTTOMK {
			return x < y
		}
		return x > y
	}
	grouping := slices.Clone(a.Grouping)
	slices.Sort(grouping)
	var buf []byte
	group := func(lset labels.Labels) uint64 {
		// The engine's grouping key (generateGroupingKey).
		var h uint64
		switch {
		case a.Without:
			h, buf = lset.HashWithoutLabels(buf, grouping...)
		case len(grouping) > 0:
			h, buf = lset.HashForLabels(buf, grouping...)
		}
		return h
	}
	// A value of the answer: the point-th point of the series-th series
	// (of the vector: its series-th sample).
	type ref struct {
		series, point int
		f             float64
	}
	type at struct {
		t int64
		g uint64
	}
	// The values of each group at each step; a vector's at its one step.
	steps := map[at][]ref{}
	switch v := v.(type) {
	case promql.Vector:
		for i, s := range v {
			if s.H != nil {
				return nil, false
			}
			g := group(s.Metric)
			steps[at{0, g}] = append(steps[at{0, g}], ref{series: i, f: s.F})
		}
	case promql.Matrix:
		for i, s := range v {
			if len(s.Histograms) > 0 {
				return nil, false
			}
			g := group(s.Metric)
			for j, p := range s.Floats {
				steps[at{p.T, g}] = append(steps[at{p.T, g}], ref{series: i, point: j, f: p.F})
			}
		}
	default:
		return nil, false
	}
	// The one more of each group of k+1, which must stand apart (and
	// more than k+1 would not be the engine's groups).
	drop := map[[2]int]bool{}
	for _, refs := range steps {
		if len(refs) <= k {
			continue
		}
		if len(refs) > k+1 {
			return nil, false
		}
		slices.SortFunc(refs, func(x, y ref) int {
			switch {
			case better(x.f, y.f):
				return -1
			case better(y.f, x.f):
				return 1
			}
			return 0
		})
		if !better(refs[k-1].f, refs[k].f) {
			return nil, false
		}
		drop[[2]int{refs[k].series, refs[k].point}] = true
	}
	switch v := v.(type) {
	case promql.Vector:
		out := make(promql.Vector, 0, len(v)-len(drop))
		for i, s := range v {
			if !drop[[2]int{i, 0}] {
				out = append(out, s)
			}
		}
		return out, true
	case promql.Matrix:
		out := make(promql.Matrix, 0, len(v))
		for i, s := range v {
			var kept []promql.FPoint
			for j, p := range s.Floats {
				if !drop[[2]int{i, j}] {
					kept = append(kept, p)
				}
			}
			if len(kept) > 0 {
				s.Floats = kept
				out = append(out, s)
			}
		}
		return out, true
	}
	return nil, false
}
