package pushdown

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
)

func TestPartialSums(t *testing.T) {
	series := func(name, job, instance string, pts ...float64) promql.Series {
		s := promql.Series{Metric: labels.FromStrings("__name__", name, "job", job, "instance", instance)}
		for i, v := range pts {
			s.Floats = append(s.Floats, promql.FPoint{T: int64(i) * 10, F: v})
		}
		return s
	}
	// Out of label order on purpose: the leaf sums in label order.
	m := promql.Matrix{
		series("x", "b", "2", 1e16, 1),
		series("x", "a", "2", 0.1),
		series("x", "a", "1", 0.2, 5),
		series("x", "b", "1", 1, 1),
	}
	parts := func(grouping []string, without bool) map[string][]float64 {
		t.Helper()
		out, err := partialSums(m, grouping, without, labels.EmptyLabels())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]float64{}
		for _, ts := range out {
			lset := labelpb.ZLabelsToPromLabels(ts.Labels)
			for _, s := range ts.Samples {
				got[lset.String()] = append(got[lset.String()], float64(s.Timestamp), s.Value)
			}
		}
		return got
	}
	// by (job): group a is 0.2 then 0.1 (instance 1 before 2) at t=0, 5
	// at t=10; group b is 1 then 1e16 at t=0 (1e16+1 needs the
	// compensation), 1 + 1 at t=10.
	t0, c0 := KahanSumInc(0.1, 0.2, 0)
	bt, bc := KahanSumInc(1e16, 1, 0)
	want := map[string][]float64{
		`{__panorama_part__="t", job="a"}`: {0, t0, 10, 5},
		`{__panorama_part__="c", job="a"}`: {0, c0, 10, 0},
		`{__panorama_part__="n", job="a"}`: {0, 2, 10, 1},
		`{__panorama_part__="t", job="b"}`: {0, bt, 10, 2},
		`{__panorama_part__="c", job="b"}`: {0, bc, 10, 0},
		`{__panorama_part__="n", job="b"}`: {0, 2, 10, 2},
	}
	got := parts([]string{"job"}, false)
	if len(got) != len(want) {
		t.Fatalf("by (job): %v, want %v", got, want)
	}
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			t.Fatalf("by (job) %s: %v, want %v", k, g, w)
		}
		for i := range w {
			if g[i] != w[i] {
				t.Errorf("by (job) %s: %v, want %v", k, g, w)
				break
			}
		}
	}
	if bc == 0 {
		t.Error("the test data needs a compensation")
	}
	// without (instance) drops the metric name too: the same groups.
	if got := parts([]string{"instance"}, true); len(got) != 6 || got[`{__panorama_part__="n", job="b"}`] == nil {
		t.Errorf("without (instance): %v", got)
	}

	h := promql.Matrix{{Metric: labels.FromStrings("__name__", "h"), Histograms: []promql.HPoint{{T: 0, H: &histogram.FloatHistogram{Count: 1}}}}}
	if _, err := partialSums(h, nil, false, labels.EmptyLabels()); !errors.Is(err, ErrNotSummable) {
		t.Errorf("native histograms: %v, want ErrNotSummable", err)
	}
}

// TestPartialSumsUnattached: with the external labels given apart, the
// partial sums are those of the series with the labels attached: the same
// groups, labels, order of summation and so rounding.
func TestPartialSumsUnattached(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ext := labels.FromStrings("cluster", "east", "zone", "z1")
	for trial := range 200 {
		var plain, attached promql.Matrix
		for range 1 + rng.IntN(30) {
			// Names around the external ones, so that attaching them
			// changes the order of some sets.
			b := labels.NewBuilder(labels.FromStrings("__name__", "x"))
			for _, n := range []string{"a", "code", "d", "job", "zz"} {
				if rng.IntN(3) > 0 {
					b.Set(n, strconv.Itoa(rng.IntN(3)))
				}
			}
			lset := b.Labels()
			if slices.ContainsFunc(plain, func(s promql.Series) bool { return labels.Equal(s.Metric, lset) }) {
				continue
			}
			var pts []promql.FPoint
			for step := range 3 {
				if rng.IntN(4) > 0 {
					// Magnitudes far apart: the order of summation shows.
					pts = append(pts, promql.FPoint{T: int64(step) * 1000, F: rng.Float64() * math.Pow(10, float64(rng.IntN(32)-16))})
				}
			}
			plain = append(plain, promql.Series{Metric: lset, Floats: pts})
			attached = append(attached, promql.Series{Metric: labelpb.ExtendSortedLabels(lset, ext), Floats: pts})
		}
		for _, g := range []struct {
			grouping []string
			without  bool
		}{{nil, false}, {[]string{"job"}, false}, {[]string{"cluster", "code"}, false}, {[]string{"zone"}, false},
			{[]string{"a"}, true}, {[]string{"cluster"}, true}, {nil, true}} {
			got, err := partialSums(plain, g.grouping, g.without, ext)
			if err != nil {
				t.Fatal(err)
			}
			want, err := partialSums(attached, g.grouping, g.without, labels.EmptyLabels())
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("trial %d, %v without %v:\n%v\nwant\n%v", trial, g.grouping, g.without, got, want)
			}
		}
	}
}
