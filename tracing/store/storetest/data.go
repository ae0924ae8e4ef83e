package storetest

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// dataset is the spans the suite writes: a few traces over several services,
// spread over two UTC days, written in several WriteTraces calls.
type dataset struct {
	midnight time.Time
	// batches are the WriteTraces calls, in order.
	batches []ptrace.Traces
	// traces names each trace the queries refer to.
	traces map[string]pcommon.TraceID
	// starts is the start time of named spans.
	starts map[string]time.Time
}

func traceID(b byte) pcommon.TraceID {
	return pcommon.TraceID{0x5a, b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, b}
}

func spanID(t, s byte) pcommon.SpanID {
	return pcommon.SpanID{0x7e, t, 0, 0, 0, 0, 0x02, s}
}

// spanSpec describes one span of the dataset.
type spanSpec struct {
	name     string // key in dataset.starts
	trace    byte
	id       byte
	parent   byte // 0: root
	op       string
	kind     ptrace.SpanKind
	start    time.Time
	duration time.Duration
	attrs    map[string]any
	status   ptrace.StatusCode
	message  string
	events   []eventSpec
	links    []linkSpec
}

type eventSpec struct {
	name  string
	at    time.Duration // after the span start
	attrs map[string]any
}

type linkSpec struct {
	trace, span byte
	attrs       map[string]any
}

// resourceSpec is the resource (process) the spans of one ResourceSpans
// share.
type resourceSpec struct {
	attrs map[string]any
}

func putAttrs(m pcommon.Map, attrs map[string]any) {
	if err := m.FromRaw(attrs); err != nil {
		panic(err)
	}
}

// appendSpans adds one ResourceSpans with one ScopeSpans holding spans.
func appendSpans(td ptrace.Traces, res resourceSpec, scope string, spans ...spanSpec) {
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
	putAttrs(rs.Resource().Attributes(), res.attrs)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.SetSchemaUrl("https://opentelemetry.io/schemas/1.24.0")
	ss.Scope().SetName(scope)
	ss.Scope().SetVersion("1.4.2")
	ss.Scope().Attributes().PutStr("scope.origin", "storetest")
	for _, s := range spans {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(traceID(s.trace))
		sp.SetSpanID(spanID(s.trace, s.id))
		if s.parent != 0 {
			sp.SetParentSpanID(spanID(s.trace, s.parent))
		}
		sp.TraceState().FromRaw("vendor=panorama")
		sp.SetFlags(1)
		sp.SetName(s.op)
		sp.SetKind(s.kind)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(s.start.Add(s.duration)))
		putAttrs(sp.Attributes(), s.attrs)
		sp.SetDroppedAttributesCount(1)
		sp.Status().SetCode(s.status)
		sp.Status().SetMessage(s.message)
		for _, e := range s.events {
			ev := sp.Events().AppendEmpty()
			ev.SetName(e.name)
			ev.SetTimestamp(pcommon.NewTimestampFromTime(s.start.Add(e.at)))
			putAttrs(ev.Attributes(), e.attrs)
		}
		for _, l := range s.links {
			ln := sp.Links().AppendEmpty()
			ln.SetTraceID(traceID(l.trace))
			ln.SetSpanID(spanID(l.trace, l.span))
			ln.TraceState().FromRaw("linked=yes")
			ln.SetFlags(1)
			putAttrs(ln.Attributes(), l.attrs)
		}
	}
}

// newDataset builds the suite's spans around the last UTC midnight before
// now, so that one trace straddles two daily partitions and every span is
// recent enough for any retention a store applies by default.
func newDataset(now time.Time) *dataset {
	m := now.UTC().Truncate(24 * time.Hour)
	// Nanosecond offsets catch stores that keep only micro- or
	// milliseconds.
	ns := time.Duration(123)
	d := &dataset{
		midnight: m,
		traces: map[string]pcommon.TraceID{
			"A": traceID(0xa), "B": traceID(0xb), "C": traceID(0xc),
			"E":  traceID(0xe),
			"D0": traceID(0xd0), "D1": traceID(0xd1), "D2": traceID(0xd2), "D3": traceID(0xd3), "D4": traceID(0xd4),
		},
		starts: map[string]time.Time{},
	}

	frontend := resourceSpec{attrs: map[string]any{
		"service.name":           "frontend",
		"host.name":              "web-1",
		"deployment.environment": "prod",
		"process.pid":            int64(4242),
		"k8s.pod.ready":          true,
	}}
	frontendCanary := resourceSpec{attrs: map[string]any{
		"service.name":           "frontend",
		"host.name":              "web-2",
		"deployment.environment": "prod",
	}}
	checkout := resourceSpec{attrs: map[string]any{"service.name": "checkout", "host.name": "shop-1"}}
	payment := resourceSpec{attrs: map[string]any{"service.name": "payment", "host.name": "pay-1", "cloud.region": "eu-west-1"}}
	reports := resourceSpec{attrs: map[string]any{"service.name": "reports"}}
	batch := resourceSpec{attrs: map[string]any{"service.name": "batch", "host.name": "cron-1"}}

	a0 := m.Add(-30*time.Minute + ns)
	a1 := spanSpec{
		name: "A1", trace: 0xa, id: 1, op: "GET /checkout", kind: ptrace.SpanKindServer,
		start: a0, duration: 120*time.Millisecond + 7*ns,
		attrs: map[string]any{
			"http.method":      "GET",
			"http.status_code": int64(200),
			"http.ok":          true,
			"sampling.ratio":   0.25,
			"request.id":       []byte{0x00, 0xff, 0x10},
			"big.int":          int64(9007199254740993), // not exact as a float64
			"cart.items":       []any{"apple", int64(3), true, 1.5},
			"user":             map[string]any{"id": "u-17", "tier": int64(2)},
		},
		status: ptrace.StatusCodeOk,
		events: []eventSpec{
			{name: "cache miss", at: 2 * time.Millisecond, attrs: map[string]any{"cache.key": "cart:42", "cache.hit": false}},
			{name: "rendered", at: 110 * time.Millisecond, attrs: map[string]any{}},
		},
	}
	a2 := spanSpec{
		name: "A2", trace: 0xa, id: 2, parent: 1, op: "POST /pay", kind: ptrace.SpanKindClient,
		start: a0.Add(10 * time.Millisecond), duration: 80 * time.Millisecond,
		attrs:  map[string]any{"http.method": "POST", "http.status_code": int64(500), "peer.service": "payment"},
		status: ptrace.StatusCodeError, message: "payment failed",
	}
	a3 := spanSpec{
		name: "A3", trace: 0xa, id: 3, parent: 2, op: "charge", kind: ptrace.SpanKindServer,
		start: a0.Add(20 * time.Millisecond), duration: 60 * time.Millisecond,
		attrs:  map[string]any{"payment.amount": 12.5, "retry": int64(0)},
		status: ptrace.StatusCodeError, message: "card declined",
		events: []eventSpec{{name: "exception", at: 50 * time.Millisecond, attrs: map[string]any{
			"exception.type": "CardDeclined", "exception.message": "insufficient funds",
		}}},
	}
	a4 := spanSpec{
		name: "A4", trace: 0xa, id: 4, parent: 1, op: "reserve", kind: ptrace.SpanKindInternal,
		start: a0.Add(50 * time.Millisecond), duration: 5 * time.Millisecond,
		attrs: map[string]any{"stock.sku": "sku-1"},
		links: []linkSpec{{trace: 0xb, span: 1, attrs: map[string]any{"link.reason": "follows"}}},
	}
	b1 := spanSpec{
		name: "B1", trace: 0xb, id: 1, op: "GET /home", kind: ptrace.SpanKindServer,
		start: m.Add(-20*time.Minute + 3*ns), duration: 10 * time.Millisecond,
		attrs: map[string]any{"http.method": "GET", "http.status_code": int64(200)},
	}
	// Trace C straddles midnight: its spans fall into two daily partitions.
	c1 := spanSpec{
		name: "C1", trace: 0xc, id: 1, op: "GET /report", kind: ptrace.SpanKindServer,
		start: m.Add(-100 * time.Millisecond), duration: 500 * time.Millisecond,
		attrs: map[string]any{"http.method": "GET", "http.status_code": int64(200)},
	}
	c2 := spanSpec{
		name: "C2", trace: 0xc, id: 2, parent: 1, op: "SELECT reports", kind: ptrace.SpanKindClient,
		start: m.Add(100 * time.Millisecond), duration: 200 * time.Millisecond,
		attrs: map[string]any{"db.system": "postgresql", "db.rows": int64(12)},
	}
	// Trace E: two spans of one service that each carry half of a query's
	// conditions, so that a store matching conditions over a whole trace
	// instead of one span shows.
	e1 := spanSpec{
		name: "E1", trace: 0xe, id: 1, op: "op-x", kind: ptrace.SpanKindInternal,
		start: m.Add(-40 * time.Minute), duration: 3 * time.Millisecond,
		attrs: map[string]any{"color": "red"},
	}
	e2 := spanSpec{
		name: "E2", trace: 0xe, id: 2, parent: 1, op: "op-y", kind: ptrace.SpanKindInternal,
		start: m.Add(-40*time.Minute + time.Millisecond), duration: 1 * time.Millisecond,
		attrs: map[string]any{"color": "blue", "shape": "square"},
	}
	var ds []spanSpec
	for i := 0; i < 5; i++ {
		s := spanSpec{
			name: "D" + string(rune('0'+i)), trace: byte(0xd0 + i), id: 1, op: "job", kind: ptrace.SpanKindInternal,
			start:    m.Add(time.Duration(i+1)*time.Minute + ns),
			duration: time.Duration(i+1) * 10 * time.Millisecond,
			attrs:    map[string]any{"job.index": int64(i)},
		}
		if i == 2 {
			s.status, s.message = ptrace.StatusCodeError, "job failed"
		}
		ds = append(ds, s)
	}
	for _, s := range append([]spanSpec{a1, a2, a3, a4, b1, c1, c2, e1, e2}, ds...) {
		d.starts[s.name] = s.start
	}

	// Call 1: the frontend's part of trace A and trace B, under one resource.
	t1 := ptrace.NewTraces()
	appendSpans(t1, frontend, "io.opentelemetry.http", a1, a2, b1)
	// Call 2: the rest of trace A, from two other services.
	t2 := ptrace.NewTraces()
	appendSpans(t2, payment, "io.opentelemetry.grpc", a3)
	appendSpans(t2, checkout, "shop.inventory", a4)
	// Call 3: trace C over midnight, E from a second frontend replica.
	t3 := ptrace.NewTraces()
	appendSpans(t3, frontend, "io.opentelemetry.http", c1)
	appendSpans(t3, reports, "io.opentelemetry.sql", c2)
	appendSpans(t3, frontendCanary, "io.opentelemetry.http", e1, e2)
	// Call 4: the batch jobs.
	t4 := ptrace.NewTraces()
	appendSpans(t4, batch, "cron", ds...)
	d.batches = []ptrace.Traces{t1, t2, t3, t4}
	return d
}

// all returns every span of the dataset in one ptrace.Traces.
func (d *dataset) all() ptrace.Traces {
	td := ptrace.NewTraces()
	for _, b := range d.batches {
		for i := 0; i < b.ResourceSpans().Len(); i++ {
			b.ResourceSpans().At(i).CopyTo(td.ResourceSpans().AppendEmpty())
		}
	}
	return td
}

// trace returns the spans of one trace of the dataset, each under its own
// resource and scope.
func (d *dataset) trace(id pcommon.TraceID) []spanRecord {
	var out []spanRecord
	for _, r := range normalize(d.all()) {
		if r.TraceID == id.String() {
			out = append(out, r)
		}
	}
	return out
}
