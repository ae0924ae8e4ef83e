package federation

import (
	"context"
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"

	"github.com/panorama-obs/panorama/federation/pushdown"
)

// TestDistributable: which aggregations of a query are pushed down, and
// what the leaves are asked.
func TestDistributable(t *testing.T) {
	e := &pushdownEngine{f: &Federator{opts: Options{ExternalLabels: labels.FromStrings("region", "eu")}}}
	for _, tc := range []struct {
		query string
		// want are the leaf queries of the pushed aggregations, outermost
		// first ("parts:" for the partial sums of sum and avg).
		want []string
	}{
		{`sum by (job) (rate(x[5m]))`, []string{`parts:rate(x[5m])`}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))`, []string{`parts:rate(h_bucket[5m])`}},
		{`topk(10, rate(x[5m]))`, []string{`topk(10, rate(x[5m]))`}},
		{`count without (instance) (x offset 5m)`, []string{`count without (instance) (x offset 5m)`}},
		{`max(max_over_time(x[10m:1m]))`, []string{`max(max_over_time(x[10m:1m]))`}},
		{`min(clamp(x, 0, 1) * 2)`, []string{`min(clamp(x, 0, 1) * 2)`}},
		{`group by (cluster) (x @ 100)`, []string{`group by (cluster) (x @ 100.000)`}},
		{`avg by (cluster) (x)`, []string{`parts:x`}},
		// The federator's own label is decided here, not at the leaves.
		{`sum(x{region="eu", job="a"})`, []string{`parts:x{job="a"}`}},
		{`sum(x{region="us"})`, nil},
		{`sum({region="eu"})`, nil},
		// Nested: the inner one only.
		{`topk(1, sum by (cluster) (rate(x[5m])))`, []string{`parts:rate(x[5m])`}},
		// Both sides of a binary operation.
		{`sum(up{cluster="a"}) - count(up)`, []string{`parts:up{cluster="a"}`, `count(up)`}},
		// Not a function of each series alone, or not at the query's
		// steps: the expressions of single series in them are pushed.
		{`sum(a / b)`, []string{`series:a`, `series:b`}},
		{`sum(label_replace(x, "a", "b", "c", "d"))`, []string{`series:x`}},
		{`sum(vector(1))`, nil},
		{`max_over_time(sum(x)[10m:1m])`, nil},
		{`sum(max_over_time(x[10m:]))`, nil},
		{`topk(scalar(y), x)`, []string{`series:x`, `series:y`}},
		{`quantile(0.5, rate(x[5m]))`, []string{`series:rate(x[5m])`}},
		{`stddev(x)`, []string{`series:x`}},
		{`count_values("v", x > 1)`, []string{`series:x > 1`}},
		// A sum needs one metric name (its order of summation).
		{`sum({job="a"})`, []string{`series:{job="a"}`}},
		{`sum by (__name__) (x)`, []string{`series:x`}},
		{`count({job="a"})`, []string{`count({job="a"})`}},
		// Expressions of single series.
		{`x`, []string{`series:x`}},
		{`up == 0`, []string{`series:up == 0`}},
		{`timestamp(x) - x`, []string{`series:timestamp(x)`, `series:x`}},
		// absent() takes its labels from a selector: that stays.
		{`absent(x{job="a"})`, nil},
		{`absent(sum(x))`, []string{`parts:x`}},
		{`absent_over_time(x[5m])`, nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			expr, err := parser.ParseExpr(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			inspect(expr, false, true, func(x parser.Expr) bool {
				var n *pushNode
				if a, ok := x.(*parser.AggregateExpr); ok {
					n = e.distributable(a)
				} else {
					n = e.perSeriesNode(x)
				}
				if n == nil {
					return false
				}
				q := n.leafQuery
				switch {
				case n.parts:
					q = "parts:" + q
				case n.agg == nil:
					q = "series:" + q
				}
				got = append(got, q)
				return true
			})
			if len(got) != len(tc.want) {
				t.Fatalf("pushed %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("pushed %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// TestMergePartsRoundsAsOneSum: the leaves' compensated partial sums,
// merged, give Prometheus' compensated sum over all the series in order,
// bit for bit, where adding the leaves' rounded sums does not.
func TestMergePartsRoundsAsOneSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	naiveDiffers := 0
	for trial := range 2000 {
		nLeaves := 2 + rng.IntN(3)
		var all []float64
		var leaves [][]*prompb.TimeSeries
		naive := 0.0
		for range nLeaves {
			n := 1 + rng.IntN(20)
			var sum, c float64
			for i := range n {
				v := rng.Float64() * math.Pow(10, float64(rng.IntN(6)))
				if rng.IntN(4) == 0 {
					v = -v
				}
				all = append(all, v)
				if i == 0 {
					sum = v
				} else {
					sum, c = pushdown.KahanSumInc(v, sum, c)
				}
			}
			naive += sum + c
			part := func(p string, v float64) *prompb.TimeSeries {
				return &prompb.TimeSeries{
					Labels:  labelpb.ZLabelsFromPromLabels(labels.FromStrings("job", "a", pushdown.PartLabel, p)),
					Samples: []prompb.Sample{{Timestamp: 1000, Value: v}},
				}
			}
			leaves = append(leaves, []*prompb.TimeSeries{part("t", sum), part("c", c), part("n", float64(n))})
		}
		// Prometheus: the first value, then compensated steps, then t + c.
		want, c := all[0], 0.0
		for _, v := range all[1:] {
			want, c = pushdown.KahanSumInc(v, want, c)
		}
		want += c

		got := mergeParts(leaves, false)
		if len(got) != 1 || len(got[0].points) != 1 || got[0].lset.String() != `{job="a"}` {
			t.Fatalf("trial %d: merged %+v", trial, got)
		}
		if g := got[0].points[0].Value; g != want {
			t.Fatalf("trial %d: merged sum %v, Prometheus' %v (%s)", trial, g, want, strconv.FormatFloat(g-want, 'g', -1, 64))
		}
		if naive != want {
			naiveDiffers++
		}
	}
	// The test is only worth something if the plain sum of the leaves'
	// sums would have differed.
	if naiveDiffers == 0 {
		t.Error("adding the leaves' rounded sums never differed from Prometheus': the data is too easy")
	}
	t.Logf("adding the leaves' rounded sums differs from Prometheus' in %d of 2000 trials", naiveDiffers)
}

// TestMergePartsOneLeafMean: a group in one leaf averages exactly as
// Prometheus' avg.
func TestMergePartsOneLeafMean(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 500 {
		n := 1 + rng.IntN(30)
		var sum, c float64
		for i := range n {
			v := rng.Float64() * 1e3
			if i == 0 {
				sum = v
			} else {
				sum, c = pushdown.KahanSumInc(v, sum, c)
			}
		}
		want := sum/float64(n) + c/float64(n)
		part := func(p string, v float64) *prompb.TimeSeries {
			return &prompb.TimeSeries{Labels: labelpb.ZLabelsFromPromLabels(labels.FromStrings(pushdown.PartLabel, p)), Samples: []prompb.Sample{{Timestamp: 5, Value: v}}}
		}
		got := mergeParts([][]*prompb.TimeSeries{{part("t", sum), part("c", c), part("n", float64(n))}}, true)
		if g := got[0].points[0].Value; g != want {
			t.Fatalf("trial %d: mean %v, Prometheus' %v", trial, g, want)
		}
	}
}

// TestPointsSeriesStaleness: a leaf's answer missing at a step must not be
// carried there by the engine's lookback.
func TestPointsSeriesStaleness(t *testing.T) {
	grid := []int64{0, 10, 20, 30}
	s := pointsSeries(labels.FromStrings("a", "b"), []prompb.Sample{{Timestamp: 10, Value: 1}, {Timestamp: 30, Value: 3}}, nil, grid)
	it := s.Iterator(nil)
	var got []string
	for it.Next() != 0 {
		ts, v := it.At()
		got = append(got, strconv.FormatInt(ts, 10)+"="+strconv.FormatFloat(v, 'g', -1, 64))
	}
	// No point before the first answer; a staleness marker (a NaN) at 20.
	if want := []string{"10=1", "20=NaN", "30=3"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("points %q, want %q", got, want)
	}
}

// TestPushDownEngineInProcess: the federator's engine as a role in the
// same process uses it (rule evaluation passes no query options) pushes
// down to real collectors and answers as without push-down, instant and
// range, including a step that is not a whole second.
func TestPushDownEngineInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and two federators")
	}
	var addrs []string
	for i, cluster := range []string{"east", "west"} {
		rc := startCollector(t, cluster)
		rc.write(t, workload(float64(i+1)))
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	push := startFederator(t, testOptions(addrs...))
	pullOpts := testOptions(addrs...)
	pullOpts.PushDown = false
	pull := startFederator(t, pullOpts)
	ctx := context.Background()
	at := time.UnixMilli(ts(30))
	for _, q := range []string{
		`sum by (code) (rate(http_requests_total[5m]))`,
		`topk(2, http_requests_total)`,
		`count(up) * 2`,
	} {
		eval := func(f *testFederator, rangeQuery bool) string {
			t.Helper()
			var (
				qry promql.Query
				err error
			)
			if rangeQuery {
				qry, err = f.f.Engine().NewRangeQuery(ctx, f.f.Queryable(), nil, q, at.Add(-5*time.Minute), at, 7500*time.Millisecond)
			} else {
				qry, err = f.f.Engine().NewInstantQuery(ctx, f.f.Queryable(), nil, q, at)
			}
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			defer qry.Close()
			res := qry.Exec(ctx)
			if res.Err != nil {
				t.Fatalf("%s: %v", q, res.Err)
			}
			if m, ok := res.Value.(promql.Matrix); ok {
				sort.Sort(m)
			}
			if v, ok := res.Value.(promql.Vector); ok {
				sort.Slice(v, func(i, j int) bool { return labels.Compare(v[i].Metric, v[j].Metric) < 0 })
			}
			return res.Value.String()
		}
		for _, rangeQuery := range []bool{false, true} {
			got, want := eval(push, rangeQuery), eval(pull, rangeQuery)
			if got != want || want == "" {
				t.Errorf("%s (range %v): with push-down\n%s\nwithout\n%s", q, rangeQuery, got, want)
			}
		}
	}
	if v := testutil.ToFloat64(push.f.engine.outcomes.WithLabelValues("pushed")); v < 6 {
		t.Errorf("%v expressions pushed down, want every query's", v)
	}
	if v := testutil.ToFloat64(push.f.engine.outcomes.WithLabelValues("fallback")); v != 0 {
		t.Errorf("%v expressions fell back to pulling", v)
	}
}

// TestPushDownStoredExternalLabel: where a collector stores series with
// a label of its external label's name (their own value wins, and a series
// may merge with another when the external label is attached), pushed-down
// sums equal pulled ones; elsewhere the leaf sums without attaching.
func TestPushDownStoredExternalLabel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and two federators")
	}
	var addrs []string
	for i, cluster := range []string{"east", "west"} {
		rc := startCollector(t, cluster)
		w := workload(float64(i + 1))
		if cluster == "east" {
			own := func(lset labels.Labels, v string) labels.Labels {
				return labels.NewBuilder(lset).Set("cluster", v).Labels()
			}
			var extra []testSeries
			for _, s := range w {
				switch s.lset.Get("code") {
				case "200":
					// Its own value.
					extra = append(extra, testSeries{lset: own(s.lset, "elsewhere"), samples: s.samples})
				case "500":
					// The same series once east is attached.
					extra = append(extra, testSeries{lset: own(s.lset, "east"), samples: s.samples})
				}
			}
			w = append(w, extra...)
		}
		rc.write(t, w)
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	pushEqualsPull(t, addrs, []string{
		`sum by (cluster) (http_requests_total)`,
		`sum by (cluster, code) (rate(http_requests_total[5m]))`,
		`sum without (instance) (rate(http_requests_total[5m]))`,
		`sum(http_requests_total)`,
		`avg by (cluster) (http_requests_total)`,
		`count by (cluster) (http_requests_total)`,
		`http_requests_total`,
		`rate(http_requests_total{cluster="east"}[5m])`,
		`topk(3, http_requests_total)`,
	})
}

// TestPushDownTopkTies: topk and bottomk keep, among tied series, the
// first the engine meets in label order; a leaf that selects its series
// without its external labels orders them as if attached, which is not
// always the order without them ({a="1"} before {a="1", b="0"}, but
// {a="1", b="0", cluster="east"} before {a="1", cluster="east"}). (Not
// over a binary operation in a range query: Prometheus' engine puts its
// output series in map order, so that which tied series wins varies from
// one run to the next, pulled or not.)
func TestPushDownTopkTies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two collectors and two federators")
	}
	var addrs []string
	for _, cluster := range []string{"east", "west"} {
		rc := startCollector(t, cluster)
		var data []testSeries
		for _, lset := range []labels.Labels{
			labels.FromStrings("__name__", "tied_total", "a", "1"),
			labels.FromStrings("__name__", "tied_total", "a", "1", "b", "0"),
			labels.FromStrings("__name__", "tied_total", "a", "2", "d", "0"),
			labels.FromStrings("__name__", "tied_total", "a", "2"),
		} {
			s := testSeries{lset: lset}
			for i := 0; i <= 40; i++ {
				s.samples = append(s.samples, sample{ts(i), float64(i)})
			}
			data = append(data, s)
		}
		rc.write(t, data)
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	pushEqualsPull(t, addrs, []string{
		`topk(1, tied_total)`,
		`bottomk(1, tied_total)`,
		`topk(3, rate(tied_total[5m]))`,
		`topk by (a) (1, tied_total)`,
		`bottomk(1, tied_total{cluster="east"})`,
	})
}

// pushEqualsPull checks that a federator with push-down over addrs
// answers queries, instant and range, as one without, and never falls
// back to pulling.
func pushEqualsPull(t *testing.T, addrs []string, queries []string) {
	t.Helper()
	push := startFederator(t, testOptions(addrs...))
	pullOpts := testOptions(addrs...)
	pullOpts.PushDown = false
	pull := startFederator(t, pullOpts)
	for _, q := range queries {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			got, want := get(t, push.url, path, params), get(t, pull.url, path, params)
			mustSucceed(t, q, got)
			if normalized(got.Data) != normalized(want.Data) || len(want.result(t).Result) == 0 {
				t.Errorf("%s %s: pushed down\n%s\npulled\n%s", path, q, normalized(got.Data), normalized(want.Data))
			}
		}
	}
	if v := testutil.ToFloat64(push.f.engine.outcomes.WithLabelValues("fallback")); v != 0 {
		t.Errorf("%v expressions fell back to pulling", v)
	}
}
