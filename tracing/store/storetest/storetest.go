// Package storetest is the conformance suite every store.Store passes: the
// same spans written, the same queries asked, the same answers expected,
// whether the store is embedded or Elasticsearch.
//
// A store's test calls Run with a constructor that returns a new, empty
// store for each call:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return newStore(t) })
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Option adjusts the suite for one store.
type Option func(*options)

type options struct {
	now func() time.Time
}

// WithNow sets the clock the dataset is placed around (the suite writes
// spans on both sides of the last UTC midnight before now). The default is
// time.Now.
func WithNow(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Run runs the conformance suite. newStore returns a new, empty store each
// time it is called; Run closes the stores it gets.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	t.Run("Read", func(t *testing.T) {
		d := newDataset(o.now())
		s := open(t)
		write(t, s, d.batches...)
		t.Run("GetTrace", func(t *testing.T) { testGetTrace(t, s, d) })
		t.Run("GetTraceNotFound", func(t *testing.T) { testGetTraceNotFound(t, s) })
		t.Run("GetServices", func(t *testing.T) { testGetServices(t, s) })
		t.Run("GetOperations", func(t *testing.T) { testGetOperations(t, s) })
		t.Run("FindTraces", func(t *testing.T) { testFindTraces(t, s, d) })
	})
	t.Run("Idempotent", func(t *testing.T) {
		d := newDataset(o.now())
		s := open(t)
		testIdempotent(t, s, d)
	})
	t.Run("Replace", func(t *testing.T) {
		d := newDataset(o.now())
		s := open(t)
		testReplace(t, s, d)
	})
	t.Run("EmptyStore", func(t *testing.T) {
		s := open(t)
		testEmptyStore(t, s)
	})
	t.Run("Dependencies", func(t *testing.T) {
		s := open(t)
		testDependencies(t, s, o.now().UTC().Truncate(time.Minute))
	})
}

func write(t *testing.T, s store.Writer, batches ...ptrace.Traces) {
	t.Helper()
	for i, b := range batches {
		// Writers may keep what they are given; give each a copy so the
		// dataset stays intact.
		c := ptrace.NewTraces()
		b.CopyTo(c)
		if err := s.WriteTraces(context.Background(), c); err != nil {
			t.Fatalf("WriteTraces (call %d of %d): %v", i+1, len(batches), err)
		}
	}
}

func testGetTrace(t *testing.T, s store.Reader, d *dataset) {
	for _, name := range []string{"A", "B", "C", "E", "D2"} {
		id := d.traces[name]
		td, err := s.GetTrace(context.Background(), id)
		if err != nil {
			t.Errorf("GetTrace(%s, trace %s): %v", id, name, err)
			continue
		}
		if diff := diffSpans(normalize(td), d.trace(id)); diff != "" {
			t.Errorf("GetTrace(%s, trace %s):\n%s", id, name, diff)
		}
	}
}

func testGetTraceNotFound(t *testing.T, s store.Reader) {
	for _, id := range []pcommon.TraceID{traceID(0x42), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		td, err := s.GetTrace(context.Background(), id)
		if !errors.Is(err, store.ErrTraceNotFound) {
			t.Errorf("GetTrace(%s) of an unknown trace = %d spans, %v; want ErrTraceNotFound", id, td.SpanCount(), err)
		}
	}
}

func testGetServices(t *testing.T, s store.Reader) {
	got, err := s.GetServices(context.Background())
	if err != nil {
		t.Fatalf("GetServices: %v", err)
	}
	want := []string{"batch", "checkout", "frontend", "payment", "reports"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("GetServices = %q, want %q", got, want)
	}
}

func testGetOperations(t *testing.T, s store.Reader) {
	for _, tc := range []struct {
		q    store.OperationQuery
		want []store.Operation
	}{
		{store.OperationQuery{ServiceName: "frontend"}, []store.Operation{
			{Name: "GET /checkout", SpanKind: "server"},
			{Name: "GET /home", SpanKind: "server"},
			{Name: "GET /report", SpanKind: "server"},
			{Name: "POST /pay", SpanKind: "client"},
			{Name: "op-x", SpanKind: "internal"},
			{Name: "op-y", SpanKind: "internal"},
		}},
		{store.OperationQuery{ServiceName: "frontend", SpanKind: "client"}, []store.Operation{
			{Name: "POST /pay", SpanKind: "client"},
		}},
		{store.OperationQuery{ServiceName: "frontend", SpanKind: "server"}, []store.Operation{
			{Name: "GET /checkout", SpanKind: "server"},
			{Name: "GET /home", SpanKind: "server"},
			{Name: "GET /report", SpanKind: "server"},
		}},
		{store.OperationQuery{ServiceName: "frontend", SpanKind: "producer"}, nil},
		{store.OperationQuery{ServiceName: "payment"}, []store.Operation{{Name: "charge", SpanKind: "server"}}},
		{store.OperationQuery{ServiceName: "batch", SpanKind: "internal"}, []store.Operation{{Name: "job", SpanKind: "internal"}}},
		{store.OperationQuery{ServiceName: "no-such-service"}, nil},
	} {
		got, err := s.GetOperations(context.Background(), tc.q)
		if err != nil {
			t.Errorf("GetOperations(%+v): %v", tc.q, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("GetOperations(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

type findCase struct {
	name string
	q    store.TraceQuery
	want []string // dataset trace names, in the order expected
}

func findCases(d *dataset) []findCase {
	st := d.starts
	ms := time.Millisecond
	return []findCase{
		{"service", store.TraceQuery{ServiceName: "frontend"}, []string{"C", "B", "A", "E"}},
		{"service of a later span", store.TraceQuery{ServiceName: "reports"}, []string{"C"}},
		{"unknown service", store.TraceQuery{ServiceName: "nobody"}, nil},
		{"operation", store.TraceQuery{ServiceName: "frontend", OperationName: "GET /home"}, []string{"B"}},
		{"operation of another service", store.TraceQuery{ServiceName: "frontend", OperationName: "charge"}, nil},
		{"string span attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.method": "POST"}}, []string{"A"}},
		{"int span attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.status_code": "200"}}, []string{"C", "B", "A"}},
		{"int span attribute, other value", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.status_code": "500"}}, []string{"A"}},
		{"bool span attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.ok": "true"}}, []string{"A"}},
		{"double span attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"sampling.ratio": "0.25"}}, []string{"A"}},
		{"double span attribute of another service", store.TraceQuery{ServiceName: "payment", Tags: map[string]string{"payment.amount": "12.5"}}, []string{"A"}},
		{"attribute value not matching", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.method": "DELETE"}}, nil},
		{"resource attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"host.name": "web-2"}}, []string{"E"}},
		{"int resource attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"process.pid": "4242"}}, []string{"C", "B", "A"}},
		{"bool resource attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"k8s.pod.ready": "true"}}, []string{"C", "B", "A"}},
		{"event attribute", store.TraceQuery{ServiceName: "payment", Tags: map[string]string{"exception.type": "CardDeclined"}}, []string{"A"}},
		{"bool event attribute", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"cache.hit": "false"}}, []string{"A"}},
		{"error", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"error": "true"}}, []string{"A"}},
		{"error from status only", store.TraceQuery{ServiceName: "batch", Tags: map[string]string{"error": "true"}}, []string{"D2"}},
		{"otel.status_code", store.TraceQuery{ServiceName: "payment", Tags: map[string]string{"otel.status_code": "ERROR"}}, []string{"A"}},
		{"span.kind", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"span.kind": "client"}}, []string{"A"}},
		{"span and resource attribute on one span", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"host.name": "web-2", "color": "red"}}, []string{"E"}},
		{"operation and tag on one span", store.TraceQuery{ServiceName: "frontend", OperationName: "op-x", Tags: map[string]string{"color": "red"}}, []string{"E"}},
		{"operation and tag on different spans", store.TraceQuery{ServiceName: "frontend", OperationName: "op-x", Tags: map[string]string{"color": "blue"}}, nil},
		{"two tags on different spans", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"color": "red", "shape": "square"}}, nil},
		{"service and tag on different spans", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"exception.type": "CardDeclined"}}, nil},
		{"error and operation on different spans", store.TraceQuery{ServiceName: "frontend", OperationName: "GET /checkout", Tags: map[string]string{"error": "true"}}, nil},
		{"start time bounds inclusive", store.TraceQuery{ServiceName: "batch", StartTimeMin: st["D1"], StartTimeMax: st["D3"]}, []string{"D3", "D2", "D1"}},
		{"start time bounds exclusive of neighbours", store.TraceQuery{ServiceName: "batch", StartTimeMin: st["D1"].Add(1), StartTimeMax: st["D3"].Add(-1)}, []string{"D2"}},
		{"start time min only", store.TraceQuery{ServiceName: "batch", StartTimeMin: st["D3"]}, []string{"D4", "D3"}},
		{"start time max only", store.TraceQuery{ServiceName: "frontend", StartTimeMax: st["B1"]}, []string{"B", "A", "E"}},
		{"start time over midnight", store.TraceQuery{ServiceName: "reports", StartTimeMin: d.midnight, StartTimeMax: d.midnight.Add(time.Second)}, []string{"C"}},
		{"start time before midnight", store.TraceQuery{ServiceName: "reports", StartTimeMax: d.midnight.Add(-time.Nanosecond)}, nil},
		{"duration bounds inclusive", store.TraceQuery{ServiceName: "batch", DurationMin: 20 * ms, DurationMax: 40 * ms}, []string{"D3", "D2", "D1"}},
		{"duration bounds exclusive of neighbours", store.TraceQuery{ServiceName: "batch", DurationMin: 20*ms + 1, DurationMax: 40*ms - 1}, []string{"D2"}},
		{"duration min only", store.TraceQuery{ServiceName: "batch", DurationMin: 40 * ms}, []string{"D4", "D3"}},
		{"duration max only", store.TraceQuery{ServiceName: "frontend", DurationMax: 3 * ms}, []string{"E"}},
		{"duration on the matching span", store.TraceQuery{ServiceName: "frontend", OperationName: "op-y", DurationMin: 2 * ms}, nil},
		{"default limit", store.TraceQuery{ServiceName: "batch"}, []string{"D4", "D3", "D2", "D1", "D0"}},
		{"limit keeps the most recent", store.TraceQuery{ServiceName: "batch", NumTraces: 2}, []string{"D4", "D3"}},
		{"limit with conditions", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.method": "GET"}, NumTraces: 2}, []string{"C", "B"}},
		{"everything at once", store.TraceQuery{
			ServiceName: "frontend", OperationName: "POST /pay",
			Tags:         map[string]string{"error": "true", "http.status_code": "500", "host.name": "web-1"},
			StartTimeMin: st["A2"], StartTimeMax: st["A2"],
			DurationMin: 80 * ms, DurationMax: 80 * ms, NumTraces: 1,
		}, []string{"A"}},
	}
}

func testFindTraces(t *testing.T, s store.Reader, d *dataset) {
	for _, tc := range findCases(d) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.FindTraces(context.Background(), tc.q)
			if err != nil {
				t.Fatalf("FindTraces(%+v): %v", tc.q, err)
			}
			ids, err := traceIDsOf(got)
			if err != nil {
				t.Fatalf("FindTraces(%+v): %v", tc.q, err)
			}
			names := make([]string, len(ids))
			for i, id := range ids {
				names[i] = nameOf(d, id)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("FindTraces(%+v) = traces %v, want %v (most recent first)", tc.q, names, tc.want)
			}
			// Each result is the whole trace, not only the matching spans.
			for i, td := range got {
				if diff := diffSpans(normalize(td), d.trace(ids[i])); diff != "" {
					t.Errorf("FindTraces(%+v), trace %s:\n%s", tc.q, names[i], diff)
				}
			}
		})
	}
}

func nameOf(d *dataset, id pcommon.TraceID) string {
	for name, tid := range d.traces {
		if tid == id {
			return name
		}
	}
	return id.String()
}

func testIdempotent(t *testing.T, s store.Store, d *dataset) {
	write(t, s, d.batches...)
	// Write every span again, grouped differently: one call with
	// everything, as a caller retrying a merged batch would.
	write(t, s, d.all())
	write(t, s, d.batches[1])
	for name, id := range d.traces {
		td, err := s.GetTrace(context.Background(), id)
		if err != nil {
			t.Errorf("GetTrace(trace %s): %v", name, err)
			continue
		}
		if diff := diffSpans(normalize(td), d.trace(id)); diff != "" {
			t.Errorf("GetTrace(trace %s) after writing every span two or three times:\n%s", name, diff)
		}
	}
	got, err := s.FindTraces(context.Background(), store.TraceQuery{ServiceName: "frontend"})
	if err != nil {
		t.Fatalf("FindTraces: %v", err)
	}
	if len(got) != 4 {
		t.Errorf("FindTraces(service=frontend) after repeated writes = %d traces, want 4", len(got))
	}
	for _, td := range got {
		id := spansTraceID(td)
		if diff := diffSpans(normalize(td), d.trace(id)); diff != "" {
			t.Errorf("FindTraces, trace %s after repeated writes:\n%s", nameOf(d, id), diff)
		}
	}
	ops, err := s.GetOperations(context.Background(), store.OperationQuery{ServiceName: "batch"})
	if err != nil {
		t.Fatalf("GetOperations: %v", err)
	}
	if len(ops) != 1 {
		t.Errorf("GetOperations(batch) after repeated writes = %v, want one operation", ops)
	}
	svcs, err := s.GetServices(context.Background())
	if err != nil {
		t.Fatalf("GetServices: %v", err)
	}
	if len(svcs) != 5 {
		t.Errorf("GetServices after repeated writes = %v, want 5 services", svcs)
	}
}

// testReplace writes a span again with changed content: the store keeps the
// latest version, once.
func testReplace(t *testing.T, s store.Store, d *dataset) {
	write(t, s, d.batches...)
	changed := ptrace.NewTraces()
	d.batches[0].CopyTo(changed)
	spans := changed.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	var b1 ptrace.Span
	for i := 0; i < spans.Len(); i++ {
		if spans.At(i).Name() == "GET /home" {
			b1 = spans.At(i)
		}
	}
	b1.Attributes().PutStr("http.route", "/home")
	b1.Status().SetCode(ptrace.StatusCodeError)
	write(t, s, changed)

	id := d.traces["B"]
	td, err := s.GetTrace(context.Background(), id)
	if err != nil {
		t.Fatalf("GetTrace: %v", err)
	}
	var want []spanRecord
	for _, r := range normalize(changed) {
		if r.TraceID == id.String() {
			want = append(want, r)
		}
	}
	if diff := diffSpans(normalize(td), want); diff != "" {
		t.Errorf("GetTrace after rewriting a span with new content:\n%s", diff)
	}
	got, err := s.FindTraces(context.Background(), store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.route": "/home", "error": "true"}})
	if err != nil {
		t.Fatalf("FindTraces: %v", err)
	}
	if ids, _ := traceIDsOf(got); len(ids) != 1 || ids[0] != id {
		t.Errorf("FindTraces for the rewritten span's new tags = %v, want trace B only", ids)
	}
}

func testEmptyStore(t *testing.T, s store.Store) {
	ctx := context.Background()
	if svcs, err := s.GetServices(ctx); err != nil || len(svcs) != 0 {
		t.Errorf("GetServices on an empty store = %v, %v; want none", svcs, err)
	}
	if ops, err := s.GetOperations(ctx, store.OperationQuery{ServiceName: "frontend"}); err != nil || len(ops) != 0 {
		t.Errorf("GetOperations on an empty store = %v, %v; want none", ops, err)
	}
	if tr, err := s.FindTraces(ctx, store.TraceQuery{ServiceName: "frontend"}); err != nil || len(tr) != 0 {
		t.Errorf("FindTraces on an empty store = %d traces, %v; want none", len(tr), err)
	}
	if _, err := s.GetTrace(ctx, traceID(0xa)); !errors.Is(err, store.ErrTraceNotFound) {
		t.Errorf("GetTrace on an empty store: %v, want ErrTraceNotFound", err)
	}
	if deps, err := s.GetDependencies(ctx, time.Now(), 24*time.Hour); err != nil || len(deps) != 0 {
		t.Errorf("GetDependencies on an empty store = %v, %v; want none", deps, err)
	}
	if err := s.WriteTraces(ctx, ptrace.NewTraces()); err != nil {
		t.Errorf("WriteTraces of no spans: %v", err)
	}
}

func testDependencies(t *testing.T, s store.DependencyStore, t0 time.Time) {
	ctx := context.Background()
	wr := func(ts time.Time, links ...store.DependencyLink) {
		t.Helper()
		if err := s.WriteDependencies(ctx, ts, links); err != nil {
			t.Fatalf("WriteDependencies(%s): %v", ts, err)
		}
	}
	l := func(p, c string, n uint64) store.DependencyLink {
		return store.DependencyLink{Parent: p, Child: c, CallCount: n}
	}
	m := time.Minute
	wr(t0, l("frontend", "checkout", 1), l("checkout", "payment", 2))
	wr(t0.Add(m), l("frontend", "checkout", 3))
	wr(t0.Add(2*m), l("frontend", "checkout", 5), l("checkout", "db", 1))
	// A bucket far outside every window below.
	wr(t0.Add(-48*time.Hour), l("old", "older", 100))

	check := func(label string, endTs time.Time, lookback time.Duration, want ...store.DependencyLink) {
		t.Helper()
		got, err := s.GetDependencies(ctx, endTs, lookback)
		if err != nil {
			t.Fatalf("%s: GetDependencies(%s, %s): %v", label, endTs, lookback, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: GetDependencies(%s, %s) = %v, want %v", label, endTs, lookback, got, want)
		}
	}
	check("two buckets: the lower end is exclusive", t0.Add(2*m), 2*m,
		l("checkout", "db", 1), l("frontend", "checkout", 8))
	check("three buckets", t0.Add(2*m), 3*m,
		l("checkout", "db", 1), l("checkout", "payment", 2), l("frontend", "checkout", 9))
	check("the upper end is inclusive", t0.Add(2*m-1), 2*m,
		l("checkout", "payment", 2), l("frontend", "checkout", 4))
	check("one bucket exactly", t0.Add(m), 1,
		l("frontend", "checkout", 3))
	check("nothing in the window", t0.Add(-time.Hour), time.Hour)
	check("a long lookback reaches older days", t0.Add(2*m), 72*time.Hour,
		l("checkout", "db", 1), l("checkout", "payment", 2), l("frontend", "checkout", 9), l("old", "older", 100))

	// Writing a bucket again replaces it.
	wr(t0.Add(m), l("frontend", "checkout", 10), l("frontend", "search", 4))
	check("after replacing a bucket", t0.Add(2*m), 3*m,
		l("checkout", "db", 1), l("checkout", "payment", 2), l("frontend", "checkout", 16), l("frontend", "search", 4))
	wr(t0)
	check("after emptying a bucket", t0.Add(2*m), 3*m,
		l("checkout", "db", 1), l("frontend", "checkout", 15), l("frontend", "search", 4))
}
