package embedded

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

var base = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func tid(b byte) pcommon.TraceID { return pcommon.TraceID{0xab, b, 15: b} }
func sid(t, s byte) pcommon.SpanID {
	return pcommon.SpanID{0xcd, t, 7: s}
}

type sp struct {
	trace, id, parent byte
	svc, op           string
	kind              ptrace.SpanKind
	start             time.Duration // after base
	dur               time.Duration
	attrs             map[string]any
	res               map[string]any
	err               bool
	event             map[string]any
}

func traces(spans ...sp) ptrace.Traces {
	td := ptrace.NewTraces()
	for _, s := range spans {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", s.svc)
		if s.res != nil {
			for k, v := range s.res {
				rs.Resource().Attributes().PutStr(k, v.(string))
			}
		}
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("test")
		span := ss.Spans().AppendEmpty()
		span.SetTraceID(tid(s.trace))
		span.SetSpanID(sid(s.trace, s.id))
		if s.parent != 0 {
			span.SetParentSpanID(sid(s.trace, s.parent))
		}
		span.SetName(s.op)
		span.SetKind(s.kind)
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(base.Add(s.start)))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(base.Add(s.start + s.dur)))
		if s.attrs != nil {
			if err := span.Attributes().FromRaw(s.attrs); err != nil {
				panic(err)
			}
		}
		if s.err {
			span.Status().SetCode(ptrace.StatusCodeError)
			span.Status().SetMessage("boom")
		}
		if s.event != nil {
			ev := span.Events().AppendEmpty()
			ev.SetName("log")
			ev.SetTimestamp(pcommon.NewTimestampFromTime(base.Add(s.start)))
			if err := ev.Attributes().FromRaw(s.event); err != nil {
				panic(err)
			}
		}
	}
	return td
}

// fixture: trace 1 frontend→cart (client/server), trace 2 frontend error,
// trace 3 cart only, a day later.
var fixture = []sp{
	{trace: 1, id: 1, svc: "frontend", op: "GET /cart", kind: ptrace.SpanKindServer, start: 0, dur: 300 * time.Millisecond, attrs: map[string]any{"http.status_code": 200}},
	{trace: 1, id: 2, parent: 1, svc: "frontend", op: "cart.Get", kind: ptrace.SpanKindClient, start: 10 * time.Millisecond, dur: 200 * time.Millisecond, attrs: map[string]any{"peer.service": "cart"}},
	{trace: 1, id: 3, parent: 2, svc: "cart", op: "Get", kind: ptrace.SpanKindServer, start: 20 * time.Millisecond, dur: 150 * time.Millisecond, res: map[string]any{"k8s.namespace.name": "shop"}},
	{trace: 2, id: 1, svc: "frontend", op: "GET /cart", kind: ptrace.SpanKindServer, start: time.Minute, dur: 2 * time.Second, attrs: map[string]any{"http.status_code": 500, "retry": true}, err: true, event: map[string]any{"exception.type": "Timeout"}},
	{trace: 3, id: 1, svc: "cart", op: "Cleanup", kind: ptrace.SpanKindInternal, start: 25 * time.Hour, dur: time.Second},
}

func open(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	o.Dir = dir
	s, err := Open(o, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spanIDs(td ptrace.Traces) []string {
	var out []string
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				out = append(out, ss.Spans().At(k).SpanID().String())
			}
		}
	}
	slices.Sort(out)
	return out
}

func traceIDsOf(tds []ptrace.Traces) []pcommon.TraceID {
	var out []pcommon.TraceID
	for _, td := range tds {
		out = append(out, td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID())
	}
	return out
}

func TestReaderQueries(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	if err := s.WriteTraces(ctx, traces(fixture[:3]...)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTraces(ctx, traces(fixture[3:]...)); err != nil {
		t.Fatal(err)
	}

	t.Run("GetTrace", func(t *testing.T) {
		td, err := s.GetTrace(ctx, tid(1))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{sid(1, 1).String(), sid(1, 2).String(), sid(1, 3).String()}
		if got := spanIDs(td); !reflect.DeepEqual(got, want) {
			t.Fatalf("spans = %v, want %v", got, want)
		}
		// The resource and attributes come back whole.
		rs := td.ResourceSpans()
		var found bool
		for i := 0; i < rs.Len(); i++ {
			if v, ok := rs.At(i).Resource().Attributes().Get("k8s.namespace.name"); ok && v.Str() == "shop" {
				found = true
			}
		}
		if !found {
			t.Error("resource attribute k8s.namespace.name of cart's span is missing")
		}
		if _, err := s.GetTrace(ctx, tid(9)); !errors.Is(err, store.ErrTraceNotFound) {
			t.Errorf("GetTrace of an unknown trace: err = %v, want ErrTraceNotFound", err)
		}
	})

	t.Run("GetServices", func(t *testing.T) {
		got, err := s.GetServices(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"cart", "frontend"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("services = %v, want %v", got, want)
		}
	})

	t.Run("GetOperations", func(t *testing.T) {
		for _, tc := range []struct {
			q    store.OperationQuery
			want []store.Operation
		}{
			{store.OperationQuery{ServiceName: "frontend"}, []store.Operation{{Name: "GET /cart", SpanKind: "server"}, {Name: "cart.Get", SpanKind: "client"}}},
			{store.OperationQuery{ServiceName: "frontend", SpanKind: "client"}, []store.Operation{{Name: "cart.Get", SpanKind: "client"}}},
			{store.OperationQuery{ServiceName: "cart"}, []store.Operation{{Name: "Cleanup", SpanKind: "internal"}, {Name: "Get", SpanKind: "server"}}},
			{store.OperationQuery{ServiceName: "cart", SpanKind: "producer"}, []store.Operation{}},
			{store.OperationQuery{ServiceName: "nope"}, []store.Operation{}},
		} {
			got, err := s.GetOperations(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%+v: got %v, want %v", tc.q, got, tc.want)
			}
		}
	})

	t.Run("FindTraces", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			q    store.TraceQuery
			want []pcommon.TraceID
		}{
			{"service, newest first", store.TraceQuery{ServiceName: "frontend"}, []pcommon.TraceID{tid(2), tid(1)}},
			{"service across days", store.TraceQuery{ServiceName: "cart"}, []pcommon.TraceID{tid(3), tid(1)}},
			{"limit", store.TraceQuery{ServiceName: "cart", NumTraces: 1}, []pcommon.TraceID{tid(3)}},
			{"operation", store.TraceQuery{ServiceName: "frontend", OperationName: "cart.Get"}, []pcommon.TraceID{tid(1)}},
			{"span tag int as string", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.status_code": "500"}}, []pcommon.TraceID{tid(2)}},
			{"bool tag", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"retry": "true"}}, []pcommon.TraceID{tid(2)}},
			{"resource tag", store.TraceQuery{ServiceName: "cart", Tags: map[string]string{"k8s.namespace.name": "shop"}}, []pcommon.TraceID{tid(1)}},
			{"event tag", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"exception.type": "Timeout"}}, []pcommon.TraceID{tid(2)}},
			{"error tag", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"error": "true"}}, []pcommon.TraceID{tid(2)}},
			{"span.kind tag", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"span.kind": "client"}}, []pcommon.TraceID{tid(1)}},
			{"two tags, one span", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.status_code": "200", "span.kind": "server"}}, []pcommon.TraceID{tid(1)}},
			{"two tags, different spans", store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"http.status_code": "200", "span.kind": "client"}}, nil},
			{"tag and operation", store.TraceQuery{ServiceName: "frontend", OperationName: "cart.Get", Tags: map[string]string{"peer.service": "cart"}}, []pcommon.TraceID{tid(1)}},
			{"tag and wrong operation", store.TraceQuery{ServiceName: "frontend", OperationName: "GET /cart", Tags: map[string]string{"peer.service": "cart"}}, nil},
			{"min duration", store.TraceQuery{ServiceName: "frontend", DurationMin: time.Second}, []pcommon.TraceID{tid(2)}},
			{"max duration", store.TraceQuery{ServiceName: "frontend", DurationMax: 250 * time.Millisecond}, []pcommon.TraceID{tid(1)}},
			{"duration range excluding all", store.TraceQuery{ServiceName: "frontend", DurationMin: 400 * time.Millisecond, DurationMax: time.Second}, nil},
			{"time range", store.TraceQuery{ServiceName: "frontend", StartTimeMin: base, StartTimeMax: base.Add(30 * time.Second)}, []pcommon.TraceID{tid(1)}},
			{"inclusive start bounds", store.TraceQuery{ServiceName: "frontend", StartTimeMin: base.Add(time.Minute), StartTimeMax: base.Add(time.Minute)}, []pcommon.TraceID{tid(2)}},
			{"time range later day", store.TraceQuery{ServiceName: "cart", StartTimeMin: base.Add(24 * time.Hour)}, []pcommon.TraceID{tid(3)}},
			{"unknown service", store.TraceQuery{ServiceName: "nope"}, nil},
			{"bounds beyond int64 nanoseconds", store.TraceQuery{ServiceName: "frontend", StartTimeMin: time.Unix(-1e12, 0), StartTimeMax: time.Unix(1e11, 0)}, []pcommon.TraceID{tid(2), tid(1)}},
			{"service.name tag", store.TraceQuery{ServiceName: "cart", Tags: map[string]string{"service.name": "cart"}}, []pcommon.TraceID{tid(3), tid(1)}},
			{"other service.name tag", store.TraceQuery{ServiceName: "cart", Tags: map[string]string{"service.name": "frontend"}}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.FindTraces(ctx, tc.q)
				if err != nil {
					t.Fatal(err)
				}
				if ids := traceIDsOf(got); !reflect.DeepEqual(ids, tc.want) {
					t.Fatalf("traces = %v, want %v", ids, tc.want)
				}
			})
		}
		// Found traces are whole: all three spans of trace 1.
		got, err := s.FindTraces(ctx, store.TraceQuery{ServiceName: "cart", OperationName: "Get"})
		if err != nil || len(got) != 1 || got[0].SpanCount() != 3 {
			t.Fatalf("FindTraces returned %d traces (err %v), want trace 1 with its 3 spans", len(got), err)
		}
		if _, err := s.FindTraces(ctx, store.TraceQuery{}); !store.IsPermanent(err) {
			t.Errorf("FindTraces without a service: err = %v, want a permanent error", err)
		}
	})

	t.Run("long tag value", func(t *testing.T) {
		long := string(make([]byte, 300))
		long = "x" + long[1:]
		if err := s.WriteTraces(ctx, traces(sp{trace: 4, id: 1, svc: "frontend", op: "big", start: 2 * time.Minute, dur: time.Millisecond, attrs: map[string]any{"blob": long}})); err != nil {
			t.Fatal(err)
		}
		got, err := s.FindTraces(ctx, store.TraceQuery{ServiceName: "frontend", Tags: map[string]string{"blob": long}})
		if err != nil {
			t.Fatal(err)
		}
		if ids := traceIDsOf(got); !reflect.DeepEqual(ids, []pcommon.TraceID{tid(4)}) {
			t.Fatalf("traces = %v, want trace 4 (a value too long to index is matched on the span)", ids)
		}
	})
}

func TestIdempotentWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for range 3 {
		if err := s.WriteTraces(ctx, traces(fixture...)); err != nil {
			t.Fatal(err)
		}
	}
	td, err := s.GetTrace(ctx, tid(1))
	if err != nil {
		t.Fatal(err)
	}
	if n := td.SpanCount(); n != 3 {
		t.Fatalf("trace 1 has %d spans after three identical writes, want 3", n)
	}
	got, err := s.FindTraces(ctx, store.TraceQuery{ServiceName: "frontend", NumTraces: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("found %d traces, want 2", len(got))
	}
	// A span without IDs is refused for good.
	bad := traces(sp{trace: 5, id: 1, svc: "x", op: "y"})
	bad.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetTraceID(pcommon.TraceID{})
	if err := s.WriteTraces(ctx, bad); !store.IsPermanent(err) {
		t.Fatalf("span with an empty trace ID: err = %v, want permanent", err)
	}
}

func TestRestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	s := open(t, dir, Options{})
	if err := s.WriteTraces(ctx, traces(fixture...)); err != nil {
		t.Fatal(err)
	}
	links := []store.DependencyLink{{Parent: "frontend", Child: "cart", CallCount: 3}}
	if err := s.WriteDependencies(ctx, base.Add(time.Minute), links); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, Options{})
	defer s.Close()
	total := 0
	for _, id := range []byte{1, 2, 3} {
		td, err := s.GetTrace(ctx, tid(id))
		if err != nil {
			t.Fatalf("trace %d after reopening: %v", id, err)
		}
		total += td.SpanCount()
	}
	if total != len(fixture) {
		t.Fatalf("%d spans after reopening, want %d", total, len(fixture))
	}
	svcs, err := s.GetServices(ctx)
	if err != nil || !reflect.DeepEqual(svcs, []string{"cart", "frontend"}) {
		t.Fatalf("services after reopening = %v (err %v)", svcs, err)
	}
	got, err := s.FindTraces(ctx, store.TraceQuery{ServiceName: "cart"})
	if err != nil || !reflect.DeepEqual(traceIDsOf(got), []pcommon.TraceID{tid(3), tid(1)}) {
		t.Fatalf("FindTraces after reopening = %v (err %v)", traceIDsOf(got), err)
	}
	deps, err := s.GetDependencies(ctx, base.Add(time.Hour), 2*time.Hour)
	if err != nil || !reflect.DeepEqual(deps, links) {
		t.Fatalf("dependencies after reopening = %v (err %v)", deps, err)
	}
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	now := base.Add(26 * time.Hour)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	// 24h retention → 2h partitions. Trace 1 and 2 start at base (26h ago):
	// their partition ended before the cutoff. Trace 3 started 1h ago.
	s := open(t, dir, Options{Retention: 24 * time.Hour, Now: clock})
	if err := s.WriteTraces(ctx, traces(fixture...)); err != nil {
		t.Fatal(err)
	}
	for _, ts := range []time.Time{base, now.Add(-time.Hour)} {
		if err := s.WriteDependencies(ctx, ts, []store.DependencyLink{{Parent: "a", Child: "b", CallCount: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTrace(ctx, tid(1)); !errors.Is(err, store.ErrTraceNotFound) {
		t.Fatalf("trace 1 after retention: err = %v, want not found", err)
	}
	if _, err := s.GetTrace(ctx, tid(3)); err != nil {
		t.Fatalf("trace 3 (recent) after retention: %v", err)
	}
	svcs, _ := s.GetServices(ctx)
	if !reflect.DeepEqual(svcs, []string{"cart"}) {
		t.Fatalf("services after retention = %v, want [cart]", svcs)
	}
	ops, _ := s.GetOperations(ctx, store.OperationQuery{ServiceName: "frontend"})
	if len(ops) != 0 {
		t.Fatalf("frontend operations after retention = %v, want none", ops)
	}
	got, _ := s.FindTraces(ctx, store.TraceQuery{ServiceName: "frontend"})
	if len(got) != 0 {
		t.Fatalf("found %d frontend traces after retention, want 0", len(got))
	}
	deps, _ := s.GetDependencies(ctx, now, 48*time.Hour)
	if !reflect.DeepEqual(deps, []store.DependencyLink{{Parent: "a", Child: "b", CallCount: 1}}) {
		t.Fatalf("dependencies after retention = %v, want only the recent bucket", deps)
	}
	s.Close()
	// Reopening does not bring anything back.
	s = open(t, dir, Options{Retention: 24 * time.Hour, Now: clock})
	defer s.Close()
	if _, err := s.GetTrace(ctx, tid(2)); !errors.Is(err, store.ErrTraceNotFound) {
		t.Fatalf("trace 2 after reopening: err = %v, want not found", err)
	}
}

func dl(p, c string, n uint64) store.DependencyLink {
	return store.DependencyLink{Parent: p, Child: c, CallCount: n}
}

func TestDependencies(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	w := func(ts time.Time, l ...store.DependencyLink) {
		if err := s.WriteDependencies(ctx, ts, l); err != nil {
			t.Fatal(err)
		}
	}
	w(base, store.DependencyLink{Parent: "a", Child: "b", CallCount: 1})
	w(base.Add(time.Minute), store.DependencyLink{Parent: "a", Child: "b", CallCount: 2}, store.DependencyLink{Parent: "a", Child: "c", CallCount: 5})
	w(base.Add(2*time.Minute), store.DependencyLink{Parent: "b", Child: "c", CallCount: 7})
	// Rewriting a bucket replaces it.
	w(base.Add(2*time.Minute), store.DependencyLink{Parent: "b", Child: "c", CallCount: 4})
	for _, tc := range []struct {
		end      time.Time
		lookback time.Duration
		want     []store.DependencyLink
	}{
		{base.Add(2 * time.Minute), time.Hour, []store.DependencyLink{dl("a", "b", 3), dl("a", "c", 5), dl("b", "c", 4)}},
		// (end-lookback, end]: the bucket at exactly end-lookback is out.
		{base.Add(2 * time.Minute), time.Minute, []store.DependencyLink{dl("b", "c", 4)}},
		{base.Add(time.Minute), time.Minute, []store.DependencyLink{dl("a", "b", 2), dl("a", "c", 5)}},
		{base.Add(-time.Second), time.Hour, []store.DependencyLink{}},
		{time.Unix(1e10, 0), 280 * 365 * 24 * time.Hour, []store.DependencyLink{dl("a", "b", 3), dl("a", "c", 5), dl("b", "c", 4)}},
	} {
		got, err := s.GetDependencies(ctx, tc.end, tc.lookback)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("GetDependencies(%s, %s) = %v, want %v", tc.end, tc.lookback, got, tc.want)
		}
	}
}

// TestResourceStoredOnce: spans of one resource and scope share one
// resource record per partition, and come back grouped under it.
func TestResourceStoredOnce(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "big")
	for i := range 20 {
		rs.Resource().Attributes().PutStr(fmt.Sprintf("attr.%d", i), "some resource attribute value")
	}
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("lib")
	for i := range 100 {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(tid(7))
		sp.SetSpanID(sid(7, byte(i+1)))
		sp.SetName("op")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(base))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(base.Add(time.Millisecond)))
	}
	for range 2 { // a second write finds the record written
		if err := s.WriteTraces(ctx, td); err != nil {
			t.Fatal(err)
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tableResource}, UpperBound: []byte{tableResource + 1}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	it.Close()
	if n != 1 {
		t.Fatalf("%d resource records for one resource and scope, want 1", n)
	}
	got, err := s.GetTrace(ctx, tid(7))
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceSpans().Len() != 1 || got.SpanCount() != 100 {
		t.Fatalf("GetTrace: %d resource spans, %d spans; want 1 and 100", got.ResourceSpans().Len(), got.SpanCount())
	}
	if v, _ := got.ResourceSpans().At(0).Resource().Attributes().Get("attr.19"); v.Str() != "some resource attribute value" {
		t.Errorf("resource attribute attr.19 = %q", v.Str())
	}
	if n := got.ResourceSpans().At(0).ScopeSpans().At(0).Scope().Name(); n != "lib" {
		t.Errorf("scope = %q, want lib", n)
	}
}
