package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// shop is the small instrumented program of the tracing tests: a frontend
// that exports over OTLP/gRPC and a cart service that exports over
// OTLP/HTTP, as two real OpenTelemetry SDK tracer providers.
type shop struct {
	frontend, cart *sdktrace.TracerProvider
}

func newShop(ctx context.Context, t *testing.T, tr *Tracing) *shop {
	t.Helper()
	gexp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(tr.GRPCAddr), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	hexp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(tr.HTTPAddr), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	res := func(svc, host string) *resource.Resource {
		return resource.NewSchemaless(
			attribute.String("service.name", svc),
			attribute.String("host.name", host),
			attribute.String("k8s.cluster.name", "east"),
			attribute.String("k8s.namespace.name", "shop"),
		)
	}
	s := &shop{
		frontend: sdktrace.NewTracerProvider(sdktrace.WithBatcher(gexp), sdktrace.WithResource(res("frontend", "web-1"))),
		cart:     sdktrace.NewTracerProvider(sdktrace.WithBatcher(hexp), sdktrace.WithResource(res("cart", "cart-1"))),
	}
	t.Cleanup(func() {
		s.frontend.Shutdown(context.Background())
		s.cart.Shutdown(context.Background())
	})
	return s
}

func (s *shop) flush(ctx context.Context) error {
	if err := s.frontend.ForceFlush(ctx); err != nil {
		return fmt.Errorf("frontend (OTLP/gRPC): %w", err)
	}
	if err := s.cart.ForceFlush(ctx); err != nil {
		return fmt.Errorf("cart (OTLP/HTTP): %w", err)
	}
	return nil
}

// sentSpan is what the program sent, to compare the API's answers with.
type sentSpan struct {
	service, op, kind string
	sc                trace.SpanContext
	parent            trace.SpanID
	start, end        time.Time
}

// checkout runs one request through the shop, at base: the frontend's
// server span calls cart (client span → cart's server span), which reads
// its session from Redis (a client span naming the database). With fail,
// cart answers with an error and records an exception event.
func (s *shop) checkout(ctx context.Context, base time.Time, fail bool) []sentSpan {
	fe := s.frontend.Tracer("shop/frontend", trace.WithInstrumentationVersion("1.0.0"))
	ct := s.cart.Tracer("shop/cart", trace.WithInstrumentationVersion("2.1.0"))
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	var sent []sentSpan
	record := func(svc, op, kind string, sp trace.Span, parent trace.SpanContext, start, end time.Time) {
		sent = append(sent, sentSpan{service: svc, op: op, kind: kind, sc: sp.SpanContext(), parent: parent.SpanID(), start: start, end: end})
	}

	status := 200
	if fail {
		status = 500
	}
	ctx1, root := fe.Start(ctx, "GET /checkout", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(at(0)),
		trace.WithAttributes(attribute.String("http.method", "GET"), attribute.String("http.route", "/checkout"), attribute.Int("http.status_code", status)))
	ctx2, call := fe.Start(ctx1, "cart.Get", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(at(2)),
		trace.WithAttributes(attribute.String("peer.service", "cart"), attribute.String("rpc.system", "grpc")))
	ctx3, get := ct.Start(ctx2, "Get", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(at(4)),
		trace.WithAttributes(attribute.Bool("user.vip", true), attribute.Int("cart.items", 3), attribute.Float64("cart.total", 42.5)))
	if !fail {
		_, db := ct.Start(ctx3, "GET session", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(at(6)),
			trace.WithAttributes(attribute.String("db.system", "redis"), attribute.String("db.name", "sessions")))
		db.End(trace.WithTimestamp(at(8)))
		record("cart", "GET session", "client", db, get.SpanContext(), at(6), at(8))
	} else {
		get.AddEvent("exception", trace.WithTimestamp(at(30)), trace.WithAttributes(attribute.String("exception.type", "OutOfStock")))
		get.SetStatus(codes.Error, "out of stock")
		call.SetStatus(codes.Error, "")
		root.SetStatus(codes.Error, "cart failed")
	}
	get.End(trace.WithTimestamp(at(20)))
	call.End(trace.WithTimestamp(at(22)))
	root.End(trace.WithTimestamp(at(30)))
	record("cart", "Get", "server", get, call.SpanContext(), at(4), at(20))
	record("frontend", "cart.Get", "client", call, root.SpanContext(), at(2), at(22))
	record("frontend", "GET /checkout", "server", root, trace.SpanContext{}, at(0), at(30))
	return sent
}

// bytesCodec sends and receives raw bytes, to send gRPC a malformed message.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (bytesCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (bytesCodec) Name() string { return "proto" }

// jaegerResponse is the envelope of Jaeger's API.
type jaegerResponse struct {
	Data   json.RawMessage `json:"data"`
	Total  int             `json:"total"`
	Limit  int             `json:"limit"`
	Offset int             `json:"offset"`
	Errors []struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		TraceID string `json:"traceID"`
	} `json:"errors"`
}

func tag(k, typ string, v any) map[string]any {
	return map[string]any{"key": k, "type": typ, "value": v}
}

func us(t time.Time) float64 { return float64(t.UnixMicro()) }

// expectedSpans renders what the program sent as Jaeger's UI JSON, keyed by
// span ID; processes are checked separately (their IDs are per answer).
func expectedSpans(sent []sentSpan, fail bool) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, s := range sent {
		refs := []any{}
		if s.parent.IsValid() {
			refs = append(refs, map[string]any{"refType": "CHILD_OF", "traceID": s.sc.TraceID().String(), "spanID": s.parent.String()})
		}
		scope, version := "shop/frontend", "1.0.0"
		if s.service == "cart" {
			scope, version = "shop/cart", "2.1.0"
		}
		var tags []any
		logs := []any{}
		switch s.op {
		case "GET /checkout":
			status := 200.0
			if fail {
				status = 500
			}
			tags = []any{tag("http.method", "string", "GET"), tag("http.route", "string", "/checkout"), tag("http.status_code", "int64", status)}
			if fail {
				tags = append(tags, tag("error", "bool", true), tag("otel.status_code", "string", "ERROR"), tag("otel.status_description", "string", "cart failed"))
			}
		case "cart.Get":
			tags = []any{tag("peer.service", "string", "cart"), tag("rpc.system", "string", "grpc")}
			if fail {
				tags = append(tags, tag("error", "bool", true), tag("otel.status_code", "string", "ERROR"))
			}
		case "Get":
			tags = []any{tag("cart.items", "int64", 3.0), tag("cart.total", "float64", 42.5), tag("user.vip", "bool", true)}
			if fail {
				tags = append(tags, tag("error", "bool", true), tag("otel.status_code", "string", "ERROR"), tag("otel.status_description", "string", "out of stock"))
				logs = append(logs, map[string]any{"timestamp": us(s.start.Add(26 * time.Millisecond)), "fields": []any{
					tag("event", "string", "exception"), tag("exception.type", "string", "OutOfStock"),
				}})
			}
		case "GET session":
			tags = []any{tag("db.name", "string", "sessions"), tag("db.system", "string", "redis")}
		}
		tags = append(tags, tag("otel.scope.name", "string", scope), tag("otel.scope.version", "string", version), tag("span.kind", "string", s.kind))
		sortTagMaps(tags)
		out[s.sc.SpanID().String()] = map[string]any{
			"traceID":       s.sc.TraceID().String(),
			"spanID":        s.sc.SpanID().String(),
			"operationName": s.op,
			"references":    refs,
			"startTime":     us(s.start),
			"duration":      float64(s.end.Sub(s.start).Microseconds()),
			"tags":          tags,
			"logs":          logs,
			"warnings":      nil,
			// processID is replaced by the process' service name below.
			"process": s.service,
		}
	}
	return out
}

func sortTagMaps(tags []any) {
	for i := 1; i < len(tags); i++ {
		for j := i; j > 0 && tags[j].(map[string]any)["key"].(string) < tags[j-1].(map[string]any)["key"].(string); j-- {
			tags[j], tags[j-1] = tags[j-1], tags[j]
		}
	}
}

// checkTrace compares one trace of the API with what was sent, field by
// field.
func checkTrace(t *testing.T, raw map[string]any, sent []sentSpan, fail bool) {
	t.Helper()
	want := expectedSpans(sent, fail)
	if raw["traceID"] != sent[0].sc.TraceID().String() {
		t.Errorf("traceID = %v, want %s", raw["traceID"], sent[0].sc.TraceID())
	}
	if w, ok := raw["warnings"]; !ok || w != nil {
		t.Errorf("trace warnings = %v (present %v), want null", w, ok)
	}
	procs, _ := raw["processes"].(map[string]any)
	if len(procs) != 2 {
		t.Errorf("processes = %v, want 2 (frontend, cart)", procs)
	}
	wantProc := map[string]any{
		"frontend": map[string]any{"serviceName": "frontend", "tags": []any{tag("host.name", "string", "web-1"), tag("k8s.cluster.name", "string", "east"), tag("k8s.namespace.name", "string", "shop")}},
		"cart":     map[string]any{"serviceName": "cart", "tags": []any{tag("host.name", "string", "cart-1"), tag("k8s.cluster.name", "string", "east"), tag("k8s.namespace.name", "string", "shop")}},
	}
	spans, _ := raw["spans"].([]any)
	if len(spans) != len(sent) {
		t.Fatalf("%d spans, want %d", len(spans), len(sent))
	}
	var lastStart float64
	for i, s := range spans {
		sp := s.(map[string]any)
		if st := sp["startTime"].(float64); st < lastStart {
			t.Errorf("span %d starts before the previous one: spans are not sorted by start time", i)
		} else {
			lastStart = st
		}
		id, _ := sp["spanID"].(string)
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected span %s", id)
			continue
		}
		pid, _ := sp["processID"].(string)
		proc, ok := procs[pid].(map[string]any)
		if !ok {
			t.Errorf("span %s: processID %q not in processes", id, pid)
			continue
		}
		if !reflect.DeepEqual(proc, wantProc[w["process"].(string)]) {
			t.Errorf("span %s (%s): process %v, want %v", id, w["operationName"], proc, wantProc[w["process"].(string)])
		}
		got := map[string]any{}
		for k, v := range sp {
			if k != "processID" {
				got[k] = v
			}
		}
		got["process"] = w["process"]
		if !reflect.DeepEqual(got, w) {
			for k := range w {
				if !reflect.DeepEqual(got[k], w[k]) {
					t.Errorf("span %s (%s): %s = %v, want %v", id, w["operationName"], k, got[k], w[k])
				}
			}
			for k := range got {
				if _, ok := w[k]; !ok {
					t.Errorf("span %s: unexpected field %s = %v", id, k, got[k])
				}
			}
		}
	}
}

func getTrace(ctx context.Context, tr *Tracing, id trace.TraceID) (map[string]any, int, error) {
	var resp jaegerResponse
	code, err := tr.JaegerGet(ctx, "/api/traces/"+id.String(), &resp)
	if err != nil || code != 200 {
		return nil, code, err
	}
	var data []map[string]any
	if err := json.Unmarshal(resp.Data, &data); err != nil {
		return nil, code, err
	}
	if len(data) != 1 {
		return nil, code, fmt.Errorf("%d traces in the answer", len(data))
	}
	return data[0], code, nil
}

// waitForTrace waits until the trace has n spans queryable.
func waitForTrace(t *testing.T, ctx context.Context, tr *Tracing, id trace.TraceID, n int) map[string]any {
	t.Helper()
	var got map[string]any
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		tr, code, err := getTrace(ctx, tr, id)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("GET trace %s: status %d", id, code)
		}
		if spans := len(tr["spans"].([]any)); spans != n {
			return fmt.Errorf("trace %s has %d spans, want %d", id, spans, n)
		}
		got = tr
		return nil
	})
	return got
}

func traceIDsOf(t *testing.T, resp jaegerResponse) []string {
	t.Helper()
	var data []struct {
		TraceID string `json:"traceID"`
	}
	if err := json.Unmarshal(resp.Data, &data); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range data {
		ids = append(ids, d.TraceID)
	}
	return ids
}

func TestTracingWithOpenTelemetrySDK(t *testing.T) {
	ctx := context.Background()
	tr := StartTracing(t, "", "--servicegraph.flush-interval=1s", "--servicegraph.edge-wait=1s")
	s := newShop(ctx, t, tr)
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	okSpans := s.checkout(ctx, base, false)
	failSpans := s.checkout(ctx, base.Add(time.Second), true)
	if err := s.flush(ctx); err != nil {
		t.Fatalf("the SDK could not export: %v", err)
	}
	okID, failID := okSpans[0].sc.TraceID(), failSpans[0].sc.TraceID()

	t.Run("trace by ID", func(t *testing.T) {
		checkTrace(t, waitForTrace(t, ctx, tr, okID, 4), okSpans, false)
		checkTrace(t, waitForTrace(t, ctx, tr, failID, 3), failSpans, true)
	})

	t.Run("services and operations", func(t *testing.T) {
		for _, tc := range []struct{ path, want string }{
			{"/api/services", `{"data":["cart","frontend"],"total":2,"limit":0,"offset":0,"errors":null}`},
			{"/api/services/frontend/operations", `{"data":["GET /checkout","cart.Get"],"total":2,"limit":0,"offset":0,"errors":null}`},
			{"/api/operations?service=cart", `{"data":[{"name":"GET session","spanKind":"client"},{"name":"Get","spanKind":"server"}],"total":2,"limit":0,"offset":0,"errors":null}`},
			{"/api/operations?service=frontend&spanKind=server", `{"data":[{"name":"GET /checkout","spanKind":"server"}],"total":1,"limit":0,"offset":0,"errors":null}`},
		} {
			var got, want any
			if code, err := tr.JaegerGet(ctx, tc.path, &got); err != nil || code != 200 {
				t.Fatalf("%s: %d %v", tc.path, code, err)
			}
			json.Unmarshal([]byte(tc.want), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s = %v, want %v", tc.path, got, want)
			}
		}
	})

	t.Run("search", func(t *testing.T) {
		ok, failed := okID.String(), failID.String()
		start := strconv.FormatInt(base.Add(-time.Minute).UnixMicro(), 10)
		end := strconv.FormatInt(base.Add(time.Minute).UnixMicro(), 10)
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"service=frontend", []string{failed, ok}},
			{"service=frontend&limit=1", []string{failed}},
			{"service=frontend&start=" + start + "&end=" + end + "&lookback=custom", []string{failed, ok}},
			{"service=frontend&end=" + strconv.FormatInt(base.Add(500*time.Millisecond).UnixMicro(), 10), []string{ok}},
			{"service=cart&operation=GET%20session", []string{ok}},
			{"service=cart&tags=" + url.QueryEscape(`{"error":"true"}`), []string{failed}},
			{"service=cart&tag=cart.items:3&tag=user.vip:true", []string{failed, ok}},
			{"service=cart&tag=exception.type:OutOfStock", []string{failed}},
			{"service=cart&tag=k8s.namespace.name:shop&operation=Get", []string{failed, ok}},
			{"service=frontend&minDuration=25ms&maxDuration=35ms&operation=GET%20/checkout", []string{failed, ok}},
			{"service=frontend&minDuration=25ms&operation=cart.Get", nil},
			{"service=frontend&tag=http.status_code:500", []string{failed}},
			{"traceID=" + ok, []string{ok}},
		} {
			var resp jaegerResponse
			code, err := tr.JaegerGet(ctx, "/api/traces?"+tc.query, &resp)
			if err != nil || code != 200 {
				t.Errorf("%s: %d %v", tc.query, code, err)
				continue
			}
			if ids := traceIDsOf(t, resp); !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("%s: traces %v, want %v", tc.query, ids, tc.want)
			}
		}
		// Search answers carry whole traces, in the same shape.
		var resp jaegerResponse
		if _, err := tr.JaegerGet(ctx, "/api/traces?service=cart&operation=GET%20session", &resp); err != nil {
			t.Fatal(err)
		}
		var data []map[string]any
		json.Unmarshal(resp.Data, &data)
		if len(data) == 1 {
			checkTrace(t, data[0], okSpans, false)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			code int
			msg  string
		}{
			{"/api/traces/not-a-trace-id", 400, "traceID"},
			{"/api/traces/" + strings.Repeat("f", 40), 400, "traceID"},
			{"/api/traces/0123456789abcdef0123456789abcdef", 404, "trace not found"},
			{"/api/traces?service=frontend&limit=many", 400, "'limit'"},
			{"/api/traces?service=frontend&minDuration=soon", 400, "'minDuration'"},
			{"/api/traces?operation=x", 400, "'service'"},
			{"/api/dependencies?endTs=yesterday", 400, "'endTs'"},
		} {
			var resp jaegerResponse
			code, err := tr.JaegerGet(ctx, tc.path, &resp)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || len(resp.Errors) != 1 || resp.Errors[0].Code != tc.code || !strings.Contains(resp.Errors[0].Msg, tc.msg) {
				t.Errorf("%s: status %d, errors %+v; want %d mentioning %q", tc.path, code, resp.Errors, tc.code, tc.msg)
			}
		}
		conn, err := grpc.NewClient(tr.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var out []byte
		in := []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}
		err = conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &in, &out, grpc.ForceCodec(bytesCodec{}))
		if status.Code(err) != grpccodes.InvalidArgument {
			t.Errorf("malformed OTLP/gRPC: %v, want InvalidArgument", err)
		}
		for _, tc := range []struct {
			ct   string
			body []byte
		}{
			{"application/json", []byte(`{"resourceSpans": 12}`)},
			{"application/json", []byte(`not json`)},
			{"application/x-protobuf", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		} {
			resp, err := http.Post("http://"+tr.HTTPAddr+"/v1/traces", tc.ct, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("malformed %s: status %d, want 400", tc.ct, resp.StatusCode)
			}
		}
	})

	t.Run("dependencies", func(t *testing.T) {
		want := []any{
			map[string]any{"parent": "cart", "child": "sessions", "callCount": 1.0},
			map[string]any{"parent": "frontend", "child": "cart", "callCount": 2.0},
			map[string]any{"parent": "user", "child": "frontend", "callCount": 2.0},
		}
		Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
			var resp map[string]any
			if _, err := tr.JaegerGet(ctx, "/api/dependencies?endTs="+strconv.FormatInt(time.Now().UnixMilli(), 10)+"&lookback=3600000", &resp); err != nil {
				return err
			}
			if !reflect.DeepEqual(resp["data"], want) {
				return fmt.Errorf("dependencies = %v, want %v", resp["data"], want)
			}
			return nil
		})
	})

	t.Run("metrics", func(t *testing.T) {
		text, err := tr.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for series, want := range map[string]string{
			`traces_service_graph_request_total{client="frontend",connection_type="",server="cart"}`:                                                                    "2",
			`traces_service_graph_request_failed_total{client="frontend",connection_type="",server="cart"}`:                                                             "1",
			`traces_service_graph_request_total{client="cart",connection_type="database",server="sessions"}`:                                                            "1",
			`traces_service_graph_request_total{client="user",connection_type="virtual_node",server="frontend"}`:                                                        "2",
			`traces_service_graph_request_server_seconds_count{client="frontend",connection_type="",server="cart"}`:                                                     "2",
			`traces_service_graph_request_server_seconds_bucket{client="frontend",connection_type="",server="cart",le="0.01"}`:                                          "0",
			`traces_service_graph_request_server_seconds_bucket{client="frontend",connection_type="",server="cart",le="0.05"}`:                                          "2",
			`traces_service_graph_request_client_seconds_sum{client="frontend",connection_type="",server="cart"}`:                                                       "0.04",
			`traces_spanmetrics_calls_total{service_name="cart",span_kind="SPAN_KIND_SERVER",span_name="Get",status_code="STATUS_CODE_ERROR"}`:                          "1",
			`traces_spanmetrics_calls_total{service_name="cart",span_kind="SPAN_KIND_SERVER",span_name="Get",status_code="STATUS_CODE_UNSET"}`:                          "1",
			`traces_spanmetrics_duration_seconds_count{service_name="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /checkout",status_code="STATUS_CODE_UNSET"}`: "1",
			`panorama_tracing_spans_accepted_total{transport="grpc"}`:                                                                                                   "4",
			`panorama_tracing_spans_accepted_total{transport="http"}`:                                                                                                   "3",
			`panorama_tracing_spans_stored_total`: "7",
		} {
			got, ok := MetricValue(text, series)
			if !ok {
				t.Errorf("%s missing from /metrics", series)
				continue
			}
			if got != want {
				t.Errorf("%s = %s, want %s", series, got, want)
			}
		}
	})

	t.Run("topology", func(t *testing.T) {
		var topo struct {
			Nodes []struct {
				ID, Kind string
			} `json:"nodes"`
			Edges []struct {
				From, To, Kind string
				RequestRate    float64 `json:"requestRate"`
				ErrorRate      float64 `json:"errorRate"`
			} `json:"edges"`
		}
		if code, err := tr.JaegerGet(ctx, "/api/v1/topology", &topo); err != nil || code != 200 {
			t.Fatalf("%d %v", code, err)
		}
		var found bool
		for _, e := range topo.Edges {
			if e.From == "service/east/shop/frontend" && e.To == "service/east/shop/cart" {
				found = e.Kind == "calls" && e.RequestRate > 0 && e.ErrorRate > 0 && e.ErrorRate < e.RequestRate
				if !found {
					t.Errorf("frontend → cart edge = %+v", e)
				}
			}
		}
		if !found {
			t.Errorf("no calls edge service/east/shop/frontend → service/east/shop/cart in %+v", topo.Edges)
		}
	})

	t.Run("restart keeps every span", func(t *testing.T) {
		dir := tr.DataDir
		if err := tr.Stop(); err != nil {
			t.Fatalf("tracing did not exit cleanly: %v", err)
		}
		tr2 := StartTracing(t, dir)
		checkTrace(t, waitForTrace(t, ctx, tr2, okID, 4), okSpans, false)
		checkTrace(t, waitForTrace(t, ctx, tr2, failID, 3), failSpans, true)
		var resp jaegerResponse
		if _, err := tr2.JaegerGet(ctx, "/api/services", &resp); err != nil || string(resp.Data) != `["cart","frontend"]` {
			t.Errorf("services after restart = %s (%v)", resp.Data, err)
		}
		var deps map[string]any
		if _, err := tr2.JaegerGet(ctx, "/api/dependencies?lookback=3600000", &deps); err != nil || len(deps["data"].([]any)) != 3 {
			t.Errorf("dependencies after restart = %v (%v), want the 3 links", deps["data"], err)
		}
	})
}
