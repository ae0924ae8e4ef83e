package query

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/embedded"
)

var t0 = time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC)

var (
	traceA = pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	// traceB has a zero high half: Jaeger renders it with 16 digits.
	traceB = pcommon.TraceID{8: 0, 9: 0, 10: 0, 11: 0, 12: 0, 13: 0x12, 14: 0x34, 15: 0x56}
	spanA1 = pcommon.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	spanA2 = pcommon.SpanID{0x5f, 0xb3, 0x97, 0xbe, 0x34, 0xd2, 0x6b, 0x51}
	spanB1 = pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 1}
)

// fixture: frontend's server span calls cart (client span), cart's server
// span answers with an error; trace B is a single span of batch-job.
func fixture() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "frontend")
	rs.Resource().Attributes().PutStr("host.name", "web-1")
	rs.Resource().Attributes().PutInt("process.pid", 4242)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("shop/http")
	ss.Scope().SetVersion("1.2.0")
	s := ss.Spans().AppendEmpty()
	s.SetTraceID(traceA)
	s.SetSpanID(spanA1)
	s.SetName("GET /cart")
	s.SetKind(ptrace.SpanKindServer)
	s.SetStartTimestamp(pcommon.NewTimestampFromTime(t0))
	s.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(1500 * time.Microsecond)))
	s.Attributes().PutStr("http.method", "GET")
	s.Attributes().PutInt("http.status_code", 500)
	s.Attributes().PutDouble("ratio", 0.25)
	s.Attributes().PutBool("cached", false)
	s.Attributes().PutInt("big", 1<<60)
	s.Attributes().PutEmptyBytes("raw").FromRaw([]byte{1, 2, 3})
	sl := s.Attributes().PutEmptySlice("list")
	sl.AppendEmpty().SetStr("a")
	sl.AppendEmpty().SetInt(1)
	s.TraceState().FromRaw("vendor=1")
	s.Status().SetCode(ptrace.StatusCodeError)
	s.Status().SetMessage("upstream failed")
	ev := s.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(pcommon.NewTimestampFromTime(t0.Add(time.Millisecond)))
	ev.Attributes().PutStr("exception.type", "Timeout")
	ev.Attributes().PutStr("a.first", "x")
	l := s.Links().AppendEmpty()
	l.SetTraceID(traceB)
	l.SetSpanID(spanB1)

	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("service.name", "cart")
	s2 := rs2.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s2.SetTraceID(traceA)
	s2.SetSpanID(spanA2)
	s2.SetParentSpanID(spanA1)
	s2.SetName("Get")
	s2.SetKind(ptrace.SpanKindClient)
	s2.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(100 * time.Microsecond)))
	s2.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(900 * time.Microsecond)))

	rs3 := td.ResourceSpans().AppendEmpty()
	rs3.Resource().Attributes().PutStr("service.name", "batch-job")
	s3 := rs3.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	s3.SetTraceID(traceB)
	s3.SetSpanID(spanB1)
	s3.SetName("nightly")
	s3.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(-time.Hour)))
	s3.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(-time.Hour + time.Second)))
	return td
}

func serve(t *testing.T) (*httptest.Server, store.Store) {
	t.Helper()
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.WriteTraces(context.Background(), fixture()); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteDependencies(context.Background(), t0, []store.DependencyLink{{Parent: "frontend", Child: "cart", CallCount: 7}, {Parent: "cart", Child: "db", CallCount: 2}}); err != nil {
		t.Fatal(err)
	}
	api := New(st, nil)
	api.now = func() time.Time { return t0.Add(time.Minute) }
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv, st
}

func get(t *testing.T, srv *httptest.Server, path string) (int, any) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", path, ct)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
	return resp.StatusCode, v
}

func decode(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(err)
	}
	return v
}

func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("%s:\ngot  %s\nwant %s", what, g, w)
	}
}

// traceAJSON is trace A as Jaeger's /api/traces/{id} renders it: tags and
// log fields sorted (event first), spans by start time, processes p1, p2.
const traceAJSON = `{
  "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
  "spans": [
    {
      "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
      "spanID": "00f067aa0ba902b7",
      "operationName": "GET /cart",
      "references": [{"refType": "FOLLOWS_FROM", "traceID": "0000000000123456", "spanID": "0000000000000001"}],
      "startTime": 1795339800000000,
      "duration": 1500,
      "tags": [
        {"key": "big", "type": "int64", "value": "1152921504606846976"},
        {"key": "cached", "type": "bool", "value": false},
        {"key": "error", "type": "bool", "value": true},
        {"key": "http.method", "type": "string", "value": "GET"},
        {"key": "http.status_code", "type": "int64", "value": 500},
        {"key": "list", "type": "string", "value": "[\"a\",1]"},
        {"key": "otel.scope.name", "type": "string", "value": "shop/http"},
        {"key": "otel.scope.version", "type": "string", "value": "1.2.0"},
        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
        {"key": "otel.status_description", "type": "string", "value": "upstream failed"},
        {"key": "ratio", "type": "float64", "value": 0.25},
        {"key": "raw", "type": "binary", "value": "AQID"},
        {"key": "span.kind", "type": "string", "value": "server"},
        {"key": "w3c.tracestate", "type": "string", "value": "vendor=1"}
      ],
      "logs": [{"timestamp": 1795339800001000, "fields": [
        {"key": "event", "type": "string", "value": "exception"},
        {"key": "a.first", "type": "string", "value": "x"},
        {"key": "exception.type", "type": "string", "value": "Timeout"}
      ]}],
      "processID": "p1",
      "warnings": null
    },
    {
      "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
      "spanID": "5fb397be34d26b51",
      "operationName": "Get",
      "references": [{"refType": "CHILD_OF", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spanID": "00f067aa0ba902b7"}],
      "startTime": 1795339800000100,
      "duration": 800,
      "tags": [{"key": "span.kind", "type": "string", "value": "client"}],
      "logs": [],
      "processID": "p2",
      "warnings": null
    }
  ],
  "processes": {
    "p1": {"serviceName": "frontend", "tags": [
      {"key": "host.name", "type": "string", "value": "web-1"},
      {"key": "process.pid", "type": "int64", "value": 4242}
    ]},
    "p2": {"serviceName": "cart", "tags": []}
  },
  "warnings": null
}`

func TestGetTrace(t *testing.T) {
	srv, _ := serve(t)
	code, got := get(t, srv, "/api/traces/4bf92f3577b34da6a3ce929d0e0e4736")
	if code != 200 {
		t.Fatalf("status %d: %v", code, got)
	}
	same(t, "GET /api/traces/{id}", got, decode(`{"data": [`+traceAJSON+`], "total": 0, "limit": 0, "offset": 0, "errors": null}`))

	// A trace ID without its high half, and with leading zeros dropped.
	code, got = get(t, srv, "/api/traces/123456")
	if code != 200 {
		t.Fatalf("short trace ID: status %d: %v", code, got)
	}
	data := got.(map[string]any)["data"].([]any)[0].(map[string]any)
	if data["traceID"] != "0000000000123456" {
		t.Errorf("traceID = %v, want 0000000000123456", data["traceID"])
	}
	sp := data["spans"].([]any)[0].(map[string]any)
	same(t, "span without kind, status, attributes", sp["tags"], []any{})
	same(t, "root span references", sp["references"], []any{})

	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/api/traces/xyz", 400, "traceID"},
		{"/api/traces/" + strings.Repeat("a", 33), 400, "traceID"},
		{"/api/traces/0", 400, "zero"},
		{"/api/traces/4bf92f3577b34da6a3ce929d0e0e4737", 404, "trace not found"},
	} {
		code, got := get(t, srv, tc.path)
		if code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.path, code, tc.code)
			continue
		}
		errs := got.(map[string]any)["errors"].([]any)
		e := errs[0].(map[string]any)
		if e["code"] != float64(tc.code) || !strings.Contains(e["msg"].(string), tc.msg) {
			t.Errorf("%s: error %v, want code %d and a message with %q", tc.path, e, tc.code, tc.msg)
		}
		if got.(map[string]any)["data"] != nil {
			t.Errorf("%s: data = %v, want null", tc.path, got.(map[string]any)["data"])
		}
	}
}

func TestServicesAndOperations(t *testing.T) {
	srv, _ := serve(t)
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/api/services", `{"data": ["batch-job", "cart", "frontend"], "total": 3, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/services/frontend/operations", `{"data": ["GET /cart"], "total": 1, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/services/nope/operations", `{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/operations?service=cart", `{"data": [{"name": "Get", "spanKind": "client"}], "total": 1, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/operations?service=cart&spanKind=server", `{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/operations?service=batch-job&spanKind=unspecified", `{"data": [{"name": "nightly", "spanKind": ""}], "total": 1, "limit": 0, "offset": 0, "errors": null}`},
		{"/api/operations", `{"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 400, "msg": "unable to parse param 'service': parameter 'service' is required"}]}`},
		{"/api/operations?service=cart&spanKind=weird", `{"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": 400, "msg": "unable to parse param 'spanKind': unsupported span kind \"weird\": use unspecified, internal, server, client, producer or consumer"}]}`},
	} {
		_, got := get(t, srv, tc.path)
		same(t, tc.path, got, decode(tc.want))
	}
}

func TestSearch(t *testing.T) {
	srv, _ := serve(t)
	us := func(tm time.Time) string { return strconv.FormatInt(tm.UnixMicro(), 10) }
	traceIDs := func(v any) []string {
		var out []string
		for _, tr := range v.(map[string]any)["data"].([]any) {
			out = append(out, tr.(map[string]any)["traceID"].(string))
		}
		return out
	}
	a, b := "4bf92f3577b34da6a3ce929d0e0e4736", "0000000000123456"
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"service=frontend", []string{a}},
		{"service=cart&operation=Get", []string{a}},
		{"service=cart&operation=Nope", nil},
		{"service=frontend&tag=http.status_code:500", []string{a}},
		{"service=frontend&tag=http.status_code:200", nil},
		{`service=frontend&tags={"error":"true","http.method":"GET"}`, []string{a}},
		{`service=frontend&tags={"http.status_code":500}`, []string{a}},
		{"service=frontend&minDuration=1ms&maxDuration=2ms", []string{a}},
		{"service=frontend&minDuration=2ms", nil},
		{"service=batch-job", []string{b}}, // an hour old: within the default 48h lookback
		{"service=batch-job&lookback=30m", nil},
		{"service=batch-job&lookback=2h", []string{b}},
		{"service=batch-job&start=" + us(t0.Add(-2*time.Hour)) + "&end=" + us(t0.Add(-59*time.Minute)), []string{b}},
		{"service=batch-job&start=" + us(t0.Add(-30*time.Minute)) + "&end=" + us(t0), nil},
		{"traceID=" + b + "&traceID=" + a, []string{b, a}},
		{"service=frontend&limit=0", []string{a}},
	} {
		code, got := get(t, srv, "/api/traces?"+strings.ReplaceAll(tc.query, `"`, "%22"))
		if code != 200 {
			t.Errorf("%s: status %d: %v", tc.query, code, got)
			continue
		}
		if ids := traceIDs(got); !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("%s: traces %v, want %v", tc.query, ids, tc.want)
		}
	}

	// The search answer carries whole traces in the same shape as GET by ID.
	_, got := get(t, srv, "/api/traces?service=cart")
	same(t, "search answer", got, decode(`{"data": [`+traceAJSON+`], "total": 0, "limit": 0, "offset": 0, "errors": null}`))

	// A missing trace among several IDs is reported, not fatal.
	_, got = get(t, srv, "/api/traces?traceID="+a+"&traceID=abc")
	errs := got.(map[string]any)["errors"].([]any)
	same(t, "missing trace error", errs, decode(`[{"msg": "trace not found", "traceID": "0000000000000abc"}]`))
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

func TestBadParameters(t *testing.T) {
	srv, _ := serve(t)
	for _, tc := range []struct{ query, param string }{
		{"", "service"},
		{"service=a&limit=x", "limit"},
		{"service=a&limit=-1", "limit"},
		{"service=a&start=yesterday", "start"},
		{"service=a&end=1.5", "end"},
		{"service=a&start=200&end=100", "start"},
		{"service=a&minDuration=fast", "minDuration"},
		{"service=a&maxDuration=1", "maxDuration"},
		{"service=a&minDuration=2s&maxDuration=1s", "maxDuration"},
		{"service=a&tag=novalue", "tag"},
		{"service=a&tags=notjson", "tags"},
		{"service=a&tags=%7B%22a%22%3A%5B1%5D%7D", "tags"},
		{"service=a&lookback=1y", "lookback"},
		{"service=a&end=9999999999999999999", "end"},
		{"service=a&start=9223372036854775", "start"},
		{"traceID=zz", "traceID"},
	} {
		code, got := get(t, srv, "/api/traces?"+tc.query)
		if code != 400 {
			t.Errorf("%q: status %d, want 400", tc.query, code)
			continue
		}
		msg := got.(map[string]any)["errors"].([]any)[0].(map[string]any)["msg"].(string)
		if !strings.Contains(msg, "'"+tc.param+"'") {
			t.Errorf("%q: message %q does not name '%s'", tc.query, msg, tc.param)
		}
	}
	for _, tc := range []struct{ query, param string }{
		{"endTs=abc", "endTs"},
		{"lookback=-5", "lookback"},
		{"lookback=1h", "lookback"},
		{"endTs=9999999999999", "endTs"},
		{"lookback=9999999999999", "lookback"},
	} {
		code, got := get(t, srv, "/api/dependencies?"+tc.query)
		if code != 400 {
			t.Errorf("dependencies %q: status %d, want 400", tc.query, code)
			continue
		}
		msg := got.(map[string]any)["errors"].([]any)[0].(map[string]any)["msg"].(string)
		if !strings.Contains(msg, "'"+tc.param+"'") {
			t.Errorf("dependencies %q: message %q does not name '%s'", tc.query, msg, tc.param)
		}
	}
}

func TestDependencies(t *testing.T) {
	srv, _ := serve(t)
	end := itoa(t0.UnixMilli())
	for _, tc := range []struct{ query, want string }{
		{"endTs=" + end + "&lookback=60000", `{"data": [{"parent": "cart", "child": "db", "callCount": 2}, {"parent": "frontend", "child": "cart", "callCount": 7}], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
		{"", `{"data": [{"parent": "cart", "child": "db", "callCount": 2}, {"parent": "frontend", "child": "cart", "callCount": 7}], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
		{"endTs=" + itoa(t0.Add(-time.Second).UnixMilli()), `{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
		{"endTs=" + end + "&service=db", `{"data": [{"parent": "cart", "child": "db", "callCount": 2}], "total": 0, "limit": 0, "offset": 0, "errors": null}`},
	} {
		code, got := get(t, srv, "/api/dependencies?"+tc.query)
		if code != 200 {
			t.Fatalf("%s: %d %v", tc.query, code, got)
		}
		same(t, tc.query, got, decode(tc.want))
	}
}

// FuzzParseSearch: any query string either fails with a ParamError naming
// a parameter, or gives a query that a store can run.
func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{
		"service=a&operation=b&tag=k:v&tags=%7B%22x%22%3A1%7D&minDuration=1ms&maxDuration=2s&start=1&end=2&limit=5&lookback=1h",
		"traceID=abc&traceID=4bf92f3577b34da6a3ce929d0e0e4736",
		"service=a&lookback=custom",
		"service=&limit=9999999999",
	} {
		f.Add(s)
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := ParseSearch(v, now)
		if err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param == "" {
				t.Fatalf("error %v does not name a parameter", err)
			}
			return
		}
		if len(p.TraceIDs) == 0 && p.Query.ServiceName == "" {
			t.Fatal("a search without a service was accepted")
		}
		if p.Query.StartTimeMin.After(p.Query.StartTimeMax) {
			t.Fatal("start after end accepted")
		}
		if p.Query.StartTimeMax.UnixMicro() != p.Query.StartTimeMax.UnixNano()/1000 {
			t.Fatalf("end %v does not fit in int64 nanoseconds", p.Query.StartTimeMax)
		}
		if p.Query.NumTraces <= 0 || p.Query.DurationMin < 0 || p.Query.DurationMax < 0 {
			t.Fatalf("accepted a query with limit %d, durations %s..%s", p.Query.NumTraces, p.Query.DurationMin, p.Query.DurationMax)
		}
		if _, _, err := ParseDependencies(v, now); err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("dependencies error %v does not name a parameter", err)
			}
		}
	})
}
