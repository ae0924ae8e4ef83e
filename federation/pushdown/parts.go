package pushdown

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"

	"github.com/panorama-obs/panorama/internal/labelsort"
)

// PartLabel names the part of a partial sum in a Parts answer: "t" the
// running sum, "c" its compensation, "n" the number of series.
const PartLabel = "__panorama_part__"

// ErrNotSummable is answered for Parts when the series cannot be summed as
// floats here (native histograms, or an overflow, where Prometheus changes
// method): the federator then pulls the series instead.
var ErrNotSummable = errors.New("not summable as floats at the leaf")

// KahanSumInc is one step of Prometheus' compensated (Kahan-Neumaier)
// summation, as promql.kahanSumInc.
func KahanSumInc(inc, sum, c float64) (newSum, newC float64) {
	t := sum + inc
	switch {
	case math.IsInf(t, 0):
		c = 0
	case math.Abs(sum) >= math.Abs(inc):
		c += (sum - t) + inc
	default:
		c += (inc - t) + sum
	}
	return t, c
}

type partState struct {
	t, c, n float64
}

type partGroup struct {
	lset   labels.Labels
	states map[int64]*partState
}

// partialSums sums the series of v in label order (the order in which
// Prometheus' engine meets them when pulled and all have the same metric
// name, whatever the order the leaf's storage gave) by group and step,
// exactly as Prometheus' sum and avg accumulate; groups are told apart by
// the hash of their labels, as Prometheus' aggregation does.
//
// ext are labels every series of v carries without having them in v (a
// leaf's external labels, not attached): no series of v has a label of
// their names. They take their place in the order and in the groups as if
// attached.
func partialSums(v parser.Value, grouping []string, without bool, ext labels.Labels) ([]*prompb.TimeSeries, error) {
	var (
		metrics []labels.Labels
		floats  [][]promql.FPoint
	)
	switch v := v.(type) {
	case promql.Vector:
		metrics, floats = make([]labels.Labels, len(v)), make([][]promql.FPoint, len(v))
		points := make([]promql.FPoint, len(v))
		for i, s := range v {
			if s.H != nil {
				return nil, ErrNotSummable
			}
			points[i] = promql.FPoint{T: s.T, F: s.F}
			metrics[i], floats[i] = s.Metric, points[i:i+1:i+1]
		}
	case promql.Matrix:
		metrics, floats = make([]labels.Labels, len(v)), make([][]promql.FPoint, len(v))
		for i, s := range v {
			if len(s.Histograms) > 0 {
				return nil, ErrNotSummable
			}
			metrics[i], floats[i] = s.Metric, s.Floats
		}
	default:
		return nil, fmt.Errorf("partial sums of a %s", v.Type())
	}
	// The hashes want the names sorted; without also drops the metric
	// name, which HashWithoutLabels leaves out by itself.
	sorted := slices.Sorted(slices.Values(grouping))
	groups := map[uint64]*partGroup{}
	var (
		order []uint64
		buf   = make([]byte, 0, 1024)
		b     = labels.NewBuilder(labels.EmptyLabels())
	)
	// The external labels a group keeps.
	var extKept []labels.Label
	ext.Range(func(l labels.Label) {
		if slices.Contains(grouping, l.Name) != without {
			extKept = append(extKept, l)
		}
	})
	for _, i := range labelsort.OrderWith(len(metrics), func(i int) labels.Labels { return metrics[i] }, ext) {
		var h uint64
		if without {
			h, buf = metrics[i].HashWithoutLabels(buf, sorted...)
		} else {
			h, buf = metrics[i].HashForLabels(buf, sorted...)
		}
		g, ok := groups[h]
		if !ok {
			b.Reset(metrics[i])
			if without {
				b.Del(grouping...)
				b.Del(labels.MetricName)
			} else {
				b.Keep(grouping...)
			}
			for _, l := range extKept {
				b.Set(l.Name, l.Value)
			}
			g = &partGroup{lset: b.Labels(), states: map[int64]*partState{}}
			groups[h] = g
			order = append(order, h)
		}
		for _, p := range floats[i] {
			st, ok := g.states[p.T]
			if !ok {
				g.states[p.T] = &partState{t: p.F, n: 1}
				continue
			}
			st.t, st.c = KahanSumInc(p.F, st.t, st.c)
			if math.IsInf(st.t, 0) {
				return nil, ErrNotSummable
			}
			st.n++
		}
	}
	out := make([]*prompb.TimeSeries, 0, 3*len(order))
	for _, key := range order {
		g := groups[key]
		ts := make([]int64, 0, len(g.states))
		for t := range g.states {
			ts = append(ts, t)
		}
		slices.Sort(ts)
		for _, part := range []string{"t", "c", "n"} {
			samples := make([]prompb.Sample, len(ts))
			for i, t := range ts {
				st := g.states[t]
				v := st.t
				switch part {
				case "c":
					v = st.c
				case "n":
					v = st.n
				}
				samples[i] = prompb.Sample{Timestamp: t, Value: v}
			}
			lset := labels.NewBuilder(g.lset).Set(PartLabel, part).Labels()
			out = append(out, &prompb.TimeSeries{Labels: labelpb.ZLabelsFromPromLabels(lset), Samples: samples})
		}
	}
	return out, nil
}
