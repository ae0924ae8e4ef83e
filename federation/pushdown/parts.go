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
// exactly as Prometheus' sum and avg accumulate.
func partialSums(v parser.Value, grouping []string, without bool) ([]*prompb.TimeSeries, error) {
	var series promql.Matrix
	switch v := v.(type) {
	case promql.Vector:
		for _, s := range v {
			if s.H != nil {
				return nil, ErrNotSummable
			}
			series = append(series, promql.Series{Metric: s.Metric, Floats: []promql.FPoint{{T: s.T, F: s.F}}})
		}
	case promql.Matrix:
		series = v
	default:
		return nil, fmt.Errorf("partial sums of a %s", v.Type())
	}
	slices.SortFunc(series, func(a, b promql.Series) int { return labels.Compare(a.Metric, b.Metric) })
	groups := map[string]*partGroup{}
	var order []string
	b := labels.NewBuilder(labels.EmptyLabels())
	for _, s := range series {
		if len(s.Histograms) > 0 {
			return nil, ErrNotSummable
		}
		b.Reset(s.Metric)
		if without {
			b.Del(grouping...)
			b.Del(labels.MetricName)
		} else {
			b.Keep(grouping...)
		}
		lset := b.Labels()
		key := string(lset.Bytes(nil))
		g, ok := groups[key]
		if !ok {
			g = &partGroup{lset: lset, states: map[int64]*partState{}}
			groups[key] = g
			order = append(order, key)
		}
		for _, p := range s.Floats {
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
