package pushdown

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestServerMaxSamples: a leaf evaluates with the smaller of its own
// limit and the request's, answers ResourceExhausted (the requester's
// too-many-samples) only when the request's limit was the one exceeded,
// and Aborted (pull instead) when its own was; a request without a limit
// has none but the leaf's.
func TestServerMaxSamples(t *testing.T) {
	db, app, now := openTestDB(t)
	for _, inst := range []string{"a", "b"} {
		for i := 0; i < 40; i++ {
			if _, err := app.Append(0, labels.FromStrings("__name__", "x", "instance", inst), now.Add(time.Duration(i-39)*15*time.Second).UnixMilli(), float64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	opts := promql.EngineOpts{MaxSamples: 100, Timeout: time.Minute, LookbackDelta: 5 * time.Minute}
	engines := NewEngines(opts)
	server := func(own int, limited bool) *Server {
		o := opts
		o.MaxSamples = own
		s := &Server{Engine: promql.NewEngine(o), MaxSamples: own, Queryable: func(ctx context.Context, _ *Request) (context.Context, storage.Queryable) { return ctx, db }}
		if limited {
			s.Limited = func(n int) promql.QueryEngine { return engines.Get(n) }
		}
		return s
	}
	// 40 samples of each series in 10m.
	const q = `rate(x[10m])`
	for _, tc := range []struct {
		name      string
		own       int
		limited   bool
		requested int64
		want      codes.Code
	}{
		{"no limit requested", 100, true, 0, codes.OK},
		{"a larger limit requested", 100, true, 1000, codes.OK},
		{"a smaller limit requested", 100, true, 30, codes.ResourceExhausted},
		{"the same limit requested", 30, true, 30, codes.ResourceExhausted},
		{"the leaf's own limit is smaller", 30, true, 1000, codes.Aborted},
		{"a leaf that cannot lower its limit", 100, false, 30, codes.OK},
	} {
		err := server(tc.own, tc.limited).Eval(context.Background(), &Request{Query: q, StartMs: now.UnixMilli(), MaxSamples: tc.requested}, SendFunc(func(*querypb.QueryResponse) error { return nil }))
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
		if tc.want == codes.ResourceExhausted && (!IsTooManySamples(err) || status.Convert(err).Message() != "query processing would load too many samples into memory in query execution") {
			t.Errorf("%s: %v is not the requester's too many samples", tc.name, err)
		}
		if tc.want != codes.ResourceExhausted && IsTooManySamples(err) {
			t.Errorf("%s: %v taken for the requester's too many samples", tc.name, err)
		}
	}
}

// TestServerAnswersVector: an instant vector comes back as it was
// evaluated, float and native-histogram series alike, in batches of at
// most batchSize series, and decodes on the federator's side to the same.
func TestServerAnswersVector(t *testing.T) {
	const n = batchSize + 7
	s, h, now := vectorServer(t, n, func(i int) labels.Labels {
		return labels.FromStrings("__name__", "x", "i", strconv.Itoa(i))
	}, func(i int) float64 { return float64(i) + 0.5 })
	got := map[string]string{}
	batches := 0
	err := s.Eval(context.Background(), &Request{Query: "x", StartMs: now.UnixMilli()}, SendFunc(func(r *querypb.QueryResponse) error {
		// Through the wire and the federator's decoding.
		b, err := r.Marshal()
		if err != nil {
			return err
		}
		var back Response
		if err := back.Unmarshal(b); err != nil {
			return err
		}
		batch := back.GetTimeseriesBatch().Series
		if len(batch) > batchSize {
			t.Errorf("a batch of %d series", len(batch))
		}
		batches++
		for _, ts := range batch {
			lset := labelpb.ZLabelsToPromLabels(ts.Labels).String()
			switch {
			case len(ts.Samples) == 1 && len(ts.Histograms) == 0:
				got[lset] = fmt.Sprintf("%g@%d", ts.Samples[0].Value, ts.Samples[0].Timestamp)
			case len(ts.Samples) == 0 && len(ts.Histograms) == 1:
				got[lset] = prompb.FromProtoHistogram(ts.Histograms[0]).String() + "@" + strconv.FormatInt(ts.Histograms[0].Timestamp, 10)
			default:
				t.Errorf("%s: %d samples and %d histograms", lset, len(ts.Samples), len(ts.Histograms))
			}
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 || batches != 2 {
		t.Fatalf("%d series in %d batches, want %d in 2", len(got), batches, n+1)
	}
	for i := range n {
		lset := labels.FromStrings("__name__", "x", "i", strconv.Itoa(i)).String()
		if want := fmt.Sprintf("%g@%d", float64(i)+0.5, now.UnixMilli()); got[lset] != want {
			t.Errorf("%s = %s, want %s", lset, got[lset], want)
		}
	}
	lset := labels.FromStrings("__name__", "x", "i", "h").String()
	if want := h.ToFloat(nil).String() + "@" + strconv.FormatInt(now.UnixMilli(), 10); got[lset] != want {
		t.Errorf("%s = %s, want %s", lset, got[lset], want)
	}
}

// vectorServer is a leaf holding n float series, lset(i) = value(i), and
// the native histogram h as x{i="h"}, all at now.
func vectorServer(t *testing.T, n int, lset func(int) labels.Labels, value func(int) float64) (*Server, *histogram.Histogram, time.Time) {
	t.Helper()
	db, app, now := openTestDB(t)
	for i := range n {
		if _, err := app.Append(0, lset(i), now.UnixMilli(), value(i)); err != nil {
			t.Fatal(err)
		}
	}
	h := &histogram.Histogram{Count: 5, Sum: 2.5, Schema: 0, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, 1}}
	if _, err := app.AppendHistogram(0, labels.FromStrings("__name__", "x", "i", "h"), now.UnixMilli(), h, nil); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return &Server{Engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute}),
		Queryable: func(ctx context.Context, _ *Request) (context.Context, storage.Queryable) { return ctx, db }}, h, now
}

// openTestDB opens a TSDB for a test, closed at its end, with an appender
// and the minute to write at.
func openTestDB(t *testing.T) (*tsdb.DB, storage.Appender, time.Time) {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, db.Appender(context.Background()), time.Now().Truncate(time.Minute)
}

func TestKeepsInputLabels(t *testing.T) {
	for q, want := range map[string][2]bool{ // keeps, topk
		`topk(10, rate(x[5m]))`:                                   {true, true},
		`(bottomk(1, (x > 5) * 2))`:                               {true, true},
		`topk by (job) (3, histogram_quantile(0.9, rate(h[5m])))`: {true, true},
		`topk(1, abs(x offset 5m @ 100))`:                         {true, true},
		`topk(1, max_over_time(x[10m:1m]))`:                       {true, true},
		`x`:                                                       {true, false},
		`rate(x{cluster="a"}[5m]) * 100`:                          {true, false},
		`-x`:                                                      {true, false},
		`sum(x)`:                                                  {false, false},
		`topk(scalar(y), x)`:                                      {false, false},
		`topk(1, label_replace(x, "a", "b", "c", "d"))`: {false, false},
		`label_join(x, "a", ",", "b")`:                  {false, false},
		`topk(1, x / y)`:                                {false, false},
		`x / on (cluster) y`:                            {false, false},
		`topk(1, sum by (job) (x))`:                     {false, false},
		`topk(1, vector(1))`:                            {false, false},
		`absent(x)`:                                     {false, false},
		`scalar(x)`:                                     {false, false},
		`not a query (`:                                 {false, false},
	} {
		if keeps, topk := keepsInputLabels(q); keeps != want[0] || (topk != nil) != want[1] {
			t.Errorf("%s: %v, %v, want %v", q, keeps, topk, want)
		}
	}
}
