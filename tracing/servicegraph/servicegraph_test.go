package servicegraph

import (
	"context"
	"encoding/json"
	"math"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/topology"
	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/embedded"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

type spec struct {
	svc           string
	res           map[string]string
	trace         byte
	id, parent    byte
	name          string
	kind          ptrace.SpanKind
	dur           time.Duration
	err           bool
	attrs         map[string]string
	noParentTrace bool
}

func spans(specs ...spec) ptrace.Traces {
	td := ptrace.NewTraces()
	for _, s := range specs {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", s.svc)
		for k, v := range s.res {
			rs.Resource().Attributes().PutStr(k, v)
		}
		sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{9, s.trace})
		sp.SetSpanID(pcommon.SpanID{7, s.trace, 7: s.id})
		if s.parent != 0 {
			sp.SetParentSpanID(pcommon.SpanID{7, s.trace, 7: s.parent})
		}
		sp.SetName(s.name)
		sp.SetKind(s.kind)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(t0))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(s.dur)))
		if s.err {
			sp.Status().SetCode(ptrace.StatusCodeError)
		}
		for k, v := range s.attrs {
			sp.Attributes().PutStr(k, v)
		}
	}
	return td
}

func newGraph(t *testing.T, deps store.DependencyStore) (*Graph, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{t: t0}
	reg := prometheus.NewRegistry()
	g, err := New(Options{Now: c.now, TTL: 2 * time.Second, FlushInterval: time.Minute, Window: 5 * time.Minute}, deps, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return g, c, reg
}

// histogram returns the sample count and sum of one histogram series.
func histogram(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range labels {
		if got[k] != v {
			return false
		}
	}
	return len(got) == len(labels)
}

func counter(vec *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(vec.WithLabelValues(labels...))
}

func TestClientServerPair(t *testing.T) {
	g, _, reg := newGraph(t, nil)
	// The server span arrives first, in another batch.
	g.Observe(spans(spec{svc: "cart", trace: 1, id: 3, parent: 2, name: "Get", kind: ptrace.SpanKindServer, dur: 150 * time.Millisecond, err: true}))
	if n := testutil.CollectAndCount(g.requests); n != 0 {
		t.Fatalf("%d request series before the client span arrived, want 0", n)
	}
	g.Observe(spans(
		spec{svc: "frontend", trace: 1, id: 1, name: "GET /", kind: ptrace.SpanKindServer, dur: 300 * time.Millisecond},
		spec{svc: "frontend", trace: 1, id: 2, parent: 1, name: "cart.Get", kind: ptrace.SpanKindClient, dur: 200 * time.Millisecond},
	))
	if v := counter(g.requests, "frontend", "cart", ""); v != 1 {
		t.Errorf("request_total{frontend→cart} = %v, want 1", v)
	}
	if v := counter(g.failedRequests, "frontend", "cart", ""); v != 1 {
		t.Errorf("request_failed_total{frontend→cart} = %v, want 1", v)
	}
	edge := map[string]string{"client": "frontend", "server": "cart", "connection_type": ""}
	if n, sum := histogram(t, reg, "traces_service_graph_request_server_seconds", edge); n != 1 || math.Abs(sum-0.15) > 1e-9 {
		t.Errorf("server seconds: count %d sum %v, want 1 and 0.15", n, sum)
	}
	if n, sum := histogram(t, reg, "traces_service_graph_request_client_seconds", edge); n != 1 || math.Abs(sum-0.2) > 1e-9 {
		t.Errorf("client seconds: count %d sum %v, want 1 and 0.2", n, sum)
	}
	// Span metrics: one series per service, name, kind, status.
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"cart", "Get", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"}, 1},
		{[]string{"frontend", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"}, 1},
		{[]string{"frontend", "cart.Get", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"}, 1},
	} {
		if v := counter(g.calls, tc.labels...); v != tc.want {
			t.Errorf("calls_total%v = %v, want %v", tc.labels, v, tc.want)
		}
	}
	if n, sum := histogram(t, reg, "traces_spanmetrics_duration_seconds", map[string]string{"service_name": "frontend", "span_name": "GET /", "span_kind": "SPAN_KIND_SERVER", "status_code": "STATUS_CODE_UNSET"}); n != 1 || math.Abs(sum-0.3) > 1e-9 {
		t.Errorf("spanmetrics duration: count %d sum %v, want 1 and 0.3", n, sum)
	}
	// The bucket layout is the connectors' default.
	const want = `
# HELP traces_service_graph_request_total Total count of requests between two nodes.
# TYPE traces_service_graph_request_total counter
traces_service_graph_request_total{client="frontend",connection_type="",server="cart"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "traces_service_graph_request_total"); err != nil {
		t.Error(err)
	}
	if len(g.pending) != 1 {
		t.Errorf("%d edges pending, want 1 (the root server span of frontend)", len(g.pending))
	}
}

func TestDatabaseMessagingAndVirtualNodes(t *testing.T) {
	g, c, _ := newGraph(t, nil)
	g.Observe(spans(
		spec{svc: "orders", trace: 2, id: 1, name: "INSERT", kind: ptrace.SpanKindClient, dur: 5 * time.Millisecond, attrs: map[string]string{"db.system": "postgresql", "db.name": "ordersdb"}},
		spec{svc: "orders", trace: 2, id: 2, name: "GET redis", kind: ptrace.SpanKindClient, dur: time.Millisecond, attrs: map[string]string{"db.system": "redis"}},
		spec{svc: "orders", trace: 2, id: 3, name: "publish", kind: ptrace.SpanKindProducer, dur: time.Millisecond},
		spec{svc: "billing", trace: 2, id: 4, parent: 3, name: "consume", kind: ptrace.SpanKindConsumer, dur: 2 * time.Millisecond},
		spec{svc: "orders", trace: 2, id: 5, name: "charge", kind: ptrace.SpanKindClient, dur: 40 * time.Millisecond, err: true, attrs: map[string]string{"peer.service": "payments-api", "server.address": "pay.example.com"}},
		spec{svc: "orders", trace: 2, id: 6, name: "lookup", kind: ptrace.SpanKindClient, dur: 40 * time.Millisecond, attrs: map[string]string{"server.address": "geo.example.com"}},
		spec{svc: "orders", trace: 3, id: 1, name: "POST /order", kind: ptrace.SpanKindServer, dur: 50 * time.Millisecond},
	))
	if v := counter(g.requests, "orders", "ordersdb", "database"); v != 1 {
		t.Errorf("orders→ordersdb database = %v, want 1", v)
	}
	if v := counter(g.requests, "orders", "redis", "database"); v != 1 {
		t.Errorf("orders→redis database = %v, want 1", v)
	}
	if v := counter(g.requests, "orders", "billing", "messaging_system"); v != 1 {
		t.Errorf("orders→billing messaging = %v, want 1", v)
	}
	// Before the TTL nothing is settled; after it, virtual nodes.
	c.t = c.t.Add(time.Second)
	g.Expire()
	if v := counter(g.requests, "orders", "payments-api", "virtual_node"); v != 0 {
		t.Fatalf("virtual edge before the TTL: %v", v)
	}
	c.t = c.t.Add(2 * time.Second)
	g.Expire()
	for _, tc := range []struct {
		client, server string
		want, failed   float64
	}{
		{"orders", "payments-api", 1, 1}, // peer.service first
		{"orders", "geo.example.com", 1, 0},
		{"user", "orders", 1, 0}, // the root server span
	} {
		if v := counter(g.requests, tc.client, tc.server, "virtual_node"); v != tc.want {
			t.Errorf("%s→%s virtual = %v, want %v", tc.client, tc.server, v, tc.want)
		}
		if v := counter(g.failedRequests, tc.client, tc.server, "virtual_node"); v != tc.failed {
			t.Errorf("%s→%s virtual failed = %v, want %v", tc.client, tc.server, v, tc.failed)
		}
	}
	if len(g.pending) != 0 {
		t.Errorf("%d edges still pending after expiry", len(g.pending))
	}
	if v := testutil.ToFloat64(g.expired); v != 3 {
		t.Errorf("expired edges = %v, want 3", v)
	}
}

func TestMaxItems(t *testing.T) {
	c := &clock{t: t0}
	g, err := New(Options{Now: c.now, MaxItems: 2}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := byte(1); i <= 3; i++ {
		g.Observe(spans(spec{svc: "a", trace: i, id: 1, name: "x", kind: ptrace.SpanKindClient}))
	}
	if len(g.pending) != 2 || testutil.ToFloat64(g.dropped) != 1 {
		t.Fatalf("pending %d, dropped %v; want 2 and 1", len(g.pending), testutil.ToFloat64(g.dropped))
	}
}

func TestDependenciesAndTopology(t *testing.T) {
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g, c, _ := newGraph(t, st)
	ctx := context.Background()
	k8s := func(ns string) map[string]string {
		return map[string]string{"k8s.cluster.name": "east", "k8s.namespace.name": ns}
	}
	call := func(trace byte, failed bool) {
		g.Observe(spans(
			spec{svc: "frontend", res: k8s("shop"), trace: trace, id: 1, name: "cart.Get", kind: ptrace.SpanKindClient, dur: 20 * time.Millisecond},
			spec{svc: "cart", res: k8s("shop"), trace: trace, id: 2, parent: 1, name: "Get", kind: ptrace.SpanKindServer, dur: 10 * time.Millisecond, err: failed},
		))
	}
	// Minute 1: 3 calls, one failed; minute 2: 1 call, and a database call.
	for i := range byte(3) {
		call(10+i, i == 0)
	}
	c.t = t0.Add(time.Minute)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	call(20, false)
	g.Observe(spans(spec{svc: "cart", res: k8s("shop"), trace: 21, id: 1, name: "SELECT", kind: ptrace.SpanKindClient, dur: 4 * time.Millisecond, attrs: map[string]string{"db.name": "carts"}}))
	c.t = t0.Add(2 * time.Minute)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		end      time.Time
		lookback time.Duration
		want     []store.DependencyLink
	}{
		{t0.Add(2 * time.Minute), time.Hour, []store.DependencyLink{{Parent: "cart", Child: "carts", CallCount: 1}, {Parent: "frontend", Child: "cart", CallCount: 4}}},
		{t0.Add(time.Minute), time.Minute, []store.DependencyLink{{Parent: "frontend", Child: "cart", CallCount: 3}}},
	} {
		got, err := st.GetDependencies(ctx, tc.end, tc.lookback)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("dependencies(%s, %s) = %v, want %v", tc.end, tc.lookback, got, tc.want)
		}
	}

	// Two minutes since start: rates are per second over 120 s.
	rec := httptest.NewRecorder()
	g.ServeTopology(rec, httptest.NewRequest("GET", "/api/v1/topology", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got Topology
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	wantNodes := []topology.Node{
		{ID: "database/east/shop/carts", Kind: "database", Cluster: "east", Labels: map[string]string{"name": "carts", "namespace": "shop", "cluster": "east"}},
		{ID: "service/east/shop/cart", Kind: "service", Cluster: "east", Labels: map[string]string{"service": "cart", "namespace": "shop", "cluster": "east"}},
		{ID: "service/east/shop/frontend", Kind: "service", Cluster: "east", Labels: map[string]string{"service": "frontend", "namespace": "shop", "cluster": "east"}},
	}
	if !reflect.DeepEqual(got.Nodes, wantNodes) {
		t.Errorf("nodes = %+v\nwant %+v", got.Nodes, wantNodes)
	}
	wantEdges := []Edge{
		{Edge: topology.Edge{From: "service/east/shop/cart", To: "database/east/shop/carts", Kind: "calls"}, RequestRate: 1.0 / 120, LatencyAvgSeconds: 0.004},
		{Edge: topology.Edge{From: "service/east/shop/frontend", To: "service/east/shop/cart", Kind: "calls"}, RequestRate: 4.0 / 120, ErrorRate: 1.0 / 120, LatencyAvgSeconds: 0.01},
	}
	if len(got.Edges) != len(wantEdges) {
		t.Fatalf("edges = %+v, want %+v", got.Edges, wantEdges)
	}
	for i := range wantEdges {
		g, w := got.Edges[i], wantEdges[i]
		if g.Edge != w.Edge || math.Abs(g.RequestRate-w.RequestRate) > 1e-12 || math.Abs(g.ErrorRate-w.ErrorRate) > 1e-12 || math.Abs(g.LatencyAvgSeconds-w.LatencyAvgSeconds) > 1e-12 {
			t.Errorf("edge %d = %+v, want %+v", i, g, w)
		}
	}
	// The block reads back with the shared decoder, extra fields ignored.
	if _, err := topology.Decode(strings.NewReader(rec.Body.String())); err != nil {
		t.Errorf("the topology block does not decode with the topology package: %v", err)
	}

	// Ten minutes later the rates are zero but the graph stays.
	c.t = t0.Add(12 * time.Minute)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	later := g.Topology()
	if len(later.Edges) != 2 || later.Edges[1].RequestRate != 0 {
		t.Errorf("edges after the window = %+v, want 2 edges with zero rates", later.Edges)
	}
}
