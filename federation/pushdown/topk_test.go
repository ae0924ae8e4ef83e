package pushdown

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
)

// TestTopkOneMore: a leaf's topk and bottomk, which try k+1 in the
// storage's order before reading the series in label order, answer as the
// engine does over the label order, over data with ties (at the boundary
// of the k kept, inside them, or none), NaN, groups, and instant and range
// queries; and k+1 decides (no second evaluation) whenever no two values
// tie, and not when the k-th and the one more tie.
func TestTopkOneMore(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	decided, undecided := 0, 0
	for trial := range 60 {
		db, app, now := openTestDB(t)
		// distinct: every value differs; otherwise values from a few.
		distinct := trial%3 == 0
		var lsets []labels.Labels
		for i := range 12 + rng.IntN(30) {
			lset := labels.FromStrings("__name__", "x", "g", strconv.Itoa(rng.IntN(3)), "i", strconv.Itoa(i))
			if rng.IntN(4) == 0 {
				// Label sets of other lengths, a prefix of others'.
				lset = labels.FromStrings("__name__", "x", "g", strconv.Itoa(rng.IntN(3)))
				if slices.ContainsFunc(lsets, func(l labels.Labels) bool { return labels.Equal(l, lset) }) {
					continue
				}
			}
			lsets = append(lsets, lset)
		}
		// Written in an order of their own: the storage's order is not
		// the labels'.
		rng.Shuffle(len(lsets), func(i, j int) { lsets[i], lsets[j] = lsets[j], lsets[i] })
		n := 0
		for _, lset := range lsets {
			for step := range 21 {
				n++
				v := float64(rng.IntN(4))
				switch {
				case distinct:
					v = float64(n) + rng.Float64()
				case rng.IntN(20) == 0:
					v = math.NaN()
				}
				if _, err := app.Append(0, lset, now.Add(time.Duration(step-20)*15*time.Second).UnixMilli(), v); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
		s := &Server{Engine: engine, Queryable: func(ctx context.Context, _ *Request) (context.Context, storage.Queryable) { return ctx, db }}
		for _, q := range []string{
			`topk(%d, x)`, `bottomk(%d, x)`, `topk by (g) (%d, x)`, `bottomk without (i) (%d, x * 2)`,
			`topk(%d, delta(x[1m]))`, `(bottomk by (g) ((%d), x))`,
		} {
			q = fmt.Sprintf(q, 1+rng.IntN(5))
			reqs := []*Request{{Query: q, StartMs: now.UnixMilli(), SortSeries: true}}
			if !strings.Contains(q, "*") {
				// Over a range, the engine puts a binary operation's
				// series in map order: which tied series it keeps
				// varies from run to run, whatever its input's order.
				reqs = append(reqs, &Request{Query: q, StartMs: now.Add(-4 * time.Minute).UnixMilli(), EndMs: now.UnixMilli(), StepMs: 30e3, SortSeries: true})
			}
			for _, req := range reqs {
				want := evalSorted(t, engine, db, req)
				got := map[string]string{}
				err := s.Eval(context.Background(), req, SendFunc(func(r *querypb.QueryResponse) error {
					for _, ts := range r.GetTimeseriesBatch().Series {
						got[labelpb.ZLabelsToPromLabels(ts.Labels).String()] = fmt.Sprint(ts.Samples)
					}
					return nil
				}))
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("trial %d, %s (step %d):\n got %v\nwant %v", trial, q, req.StepMs, got, want)
				}

				// Whether k+1 decided.
				_, a := keepsInputLabels(q)
				if a == nil {
					t.Fatalf("%s: not taken for a topk of single series", q)
				}
				oneMore, k, ok := topkOneMore(a)
				if !ok {
					t.Fatalf("%s: not tried with k+1", q)
				}
				qry, err := newQuery(context.Background(), engine, db, req, oneMore)
				if err != nil {
					t.Fatal(err)
				}
				res := qry.Exec(context.Background())
				if res.Err != nil {
					t.Fatal(res.Err)
				}
				_, ok = keepK(res.Value, a, k)
				qry.Close()
				if distinct && !ok {
					t.Errorf("%s over distinct values: k+1 did not decide", q)
				}
				if ok {
					decided++
				} else {
					undecided++
				}
			}
		}
	}
	if decided == 0 || undecided == 0 {
		t.Errorf("k+1 decided %d times and not %d times: both ways must be tested", decided, undecided)
	}
	t.Logf("k+1 decided %d times, not %d times", decided, undecided)
}

// evalSorted is req's answer by the engine over db in label order, as
// series' labels → samples (as a leaf sends them).
func evalSorted(t *testing.T, engine promql.QueryEngine, db storage.Queryable, req *Request) map[string]string {
	t.Helper()
	qry, err := newQuery(context.Background(), engine, sortedQueryable{db}, req, req.Query)
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out := map[string]string{}
	switch v := res.Value.(type) {
	case promql.Vector:
		for _, s := range v {
			out[s.Metric.String()] = samplesString([]promql.FPoint{{T: s.T, F: s.F}})
		}
	case promql.Matrix:
		for _, s := range v {
			out[s.Metric.String()] = samplesString(s.Floats)
		}
	}
	return out
}

// samplesString prints points as fmt prints a leaf's prompb samples.
func samplesString(points []promql.FPoint) string {
	var b strings.Builder
	b.WriteString("[")
	for i, p := range points {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "{%v %d}", p.F, p.T)
	}
	b.WriteString("]")
	return b.String()
}

// keepK drops the one more, and refuses, rather than guesses, what it
// cannot decide.
func TestKeepK(t *testing.T) {
	vec := func(fs ...float64) promql.Vector {
		var v promql.Vector
		for i, f := range fs {
			v = append(v, promql.Sample{Metric: labels.FromStrings("i", strconv.Itoa(i)), F: f})
		}
		return v
	}
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		op   parser.ItemType
		v    promql.Vector
		k    int
		want string // the values kept; "undecided"
	}{
		{parser.TOPK, vec(3, 2, 1), 2, "[3 2]"},
		{parser.TOPK, vec(1, 3, 2), 2, "[3 2]"},
		{parser.BOTTOMK, vec(1, 3, 2), 2, "[1 2]"},
		{parser.TOPK, vec(3, 2, 2), 2, "undecided"},
		{parser.BOTTOMK, vec(3, 2, 2), 2, "[2 2]"},
		{parser.TOPK, vec(3, 3, 2), 2, "[3 3]"},
		{parser.TOPK, vec(2, 1), 2, "[2 1]"},
		{parser.TOPK, vec(nan, 1, 2), 2, "[2 1]"},
		{parser.TOPK, vec(1, nan, 2), 2, "[2 1]"},
		{parser.BOTTOMK, vec(nan, 2, 1), 2, "[1 2]"},
		{parser.TOPK, vec(nan, 2), 1, "[2]"},
		{parser.TOPK, vec(nan, nan, 2), 2, "undecided"},
		{parser.TOPK, vec(inf, inf, inf), 2, "undecided"},
		{parser.BOTTOMK, vec(-inf, 0, -inf), 2, "[-Inf -Inf]"},
	} {
		a := &parser.AggregateExpr{Op: tc.op}
		got, ok := keepK(tc.v, a, tc.k)
		desc := "undecided"
		if ok {
			var fs []float64
			for _, s := range got.(promql.Vector) {
				fs = append(fs, s.F)
			}
			slices.SortFunc(fs, func(x, y float64) int {
				if (tc.op == parser.TOPK) == (x > y) {
					return -1
				}
				return 1
			})
			desc = fmt.Sprint(fs)
		}
		if desc != tc.want {
			t.Errorf("%s(%d) of %v: %s, want %s", tc.op, tc.k, tc.v, desc, tc.want)
		}
	}
}
