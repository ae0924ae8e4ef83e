package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

type memAppender struct {
	mtx   sync.Mutex
	full  bool
	spans int
	last  ptrace.Traces
}

func (m *memAppender) Append(td ptrace.Traces) error {
	m.mtx.Lock()
	defer m.mtx.Unlock()
	if m.full {
		return errors.New("span queue is full")
	}
	m.spans += td.SpanCount()
	m.last = td
	return nil
}

func start(t *testing.T, o Options) (*Receiver, *memAppender, *prometheus.Registry, *int) {
	t.Helper()
	o.GRPCAddress, o.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	app := &memAppender{}
	reg := prometheus.NewRegistry()
	observed := new(int)
	r, err := New(o, app, nil, reg, func(td ptrace.Traces) { *observed += td.SpanCount() })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run() }()
	t.Cleanup(func() {
		r.Shutdown(nil)
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r, app, reg, observed
}

// request holds n valid spans, and bad spans without a trace ID.
func request(n, bad int, attr string) ptraceotlp.ExportRequest {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	ss := rs.ScopeSpans().AppendEmpty()
	for i := range n + bad {
		s := ss.Spans().AppendEmpty()
		if i < n {
			s.SetTraceID(pcommon.TraceID{1, 15: byte(i + 1)})
		}
		s.SetSpanID(pcommon.SpanID{2, 7: byte(i + 1)})
		s.SetName("pay")
		if attr != "" {
			s.Attributes().PutStr("note", attr)
		}
	}
	return ptraceotlp.NewExportRequestFromTraces(td)
}

func TestGRPC(t *testing.T) {
	r, app, reg, observed := start(t, Options{})
	conn, err := grpc.NewClient(r.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)
	ctx := context.Background()

	resp, err := client.Export(ctx, request(3, 0, ""))
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.PartialSuccess(); ps.RejectedSpans() != 0 || ps.ErrorMessage() != "" {
		t.Fatalf("partial success for a valid request: %d %q", ps.RejectedSpans(), ps.ErrorMessage())
	}
	resp, err = client.Export(ctx, request(2, 2, ""))
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.PartialSuccess(); ps.RejectedSpans() != 2 || !strings.Contains(ps.ErrorMessage(), "trace ID") {
		t.Fatalf("partial success = %d %q, want 2 rejected naming the trace ID", ps.RejectedSpans(), ps.ErrorMessage())
	}
	if app.spans != 5 || *observed != 5 {
		t.Fatalf("appended %d spans, observed %d, want 5", app.spans, *observed)
	}
	app.full = true
	_, err = client.Export(ctx, request(4, 0, ""))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("export to a full queue: %v, want Unavailable", err)
	}
	// A malformed message is InvalidArgument (not retryable), an oversized
	// one ResourceExhausted.
	bad := &rawMessage{data: []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}}
	err = conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", bad, &rawMessage{}, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed request: %v, want InvalidArgument", err)
	}
	if got := testutil.ToFloat64(r.malformed.WithLabelValues("grpc")); got != 1 {
		t.Errorf("malformed gRPC requests = %v, want 1", got)
	}
	app.full = false
	_, err = client.Export(ctx, request(1, 0, strings.Repeat("x", 17<<20)))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: %v, want ResourceExhausted", err)
	}
	for name, want := range map[string]float64{"accepted": 5, "rejected": 2, "refused": 4} {
		vec := map[string]*prometheus.CounterVec{"accepted": r.accepted, "rejected": r.rejected, "refused": r.refused}[name]
		if got := testutil.ToFloat64(vec.WithLabelValues("grpc")); got != want {
			t.Errorf("%s spans (grpc) = %v, want %v", name, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "panorama_tracing_spans_accepted_total"); err != nil || n != 2 {
		t.Errorf("panorama_tracing_spans_accepted_total series = %d (err %v), want 2 (grpc, http)", n, err)
	}
}

func post(t *testing.T, url, contentType, encoding string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestHTTP(t *testing.T) {
	r, app, _, _ := start(t, Options{MaxRequestBytes: 4096})
	url := "http://" + r.HTTPAddr() + "/v1/traces"
	pb, _ := request(2, 1, "").MarshalProto()
	js, _ := request(3, 0, "").MarshalJSON()

	t.Run("protobuf with a rejected span", func(t *testing.T) {
		resp, body := post(t, url, "application/x-protobuf", "", pb)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		out := ptraceotlp.NewExportResponse()
		if err := out.UnmarshalProto(body); err != nil {
			t.Fatal(err)
		}
		if out.PartialSuccess().RejectedSpans() != 1 {
			t.Fatalf("rejected = %d, want 1", out.PartialSuccess().RejectedSpans())
		}
	})
	t.Run("json", func(t *testing.T) {
		resp, body := post(t, url, "application/json; charset=utf-8", "", js)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		out := ptraceotlp.NewExportResponse()
		if err := out.UnmarshalJSON(body); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
	})
	t.Run("gzip json", func(t *testing.T) {
		resp, body := post(t, url, "application/json", "gzip", gz(js))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	if app.spans != 8 {
		t.Fatalf("appended %d spans, want 8", app.spans)
	}

	for _, tc := range []struct {
		name, ct, enc string
		body          []byte
		code          int
		msg           string
	}{
		{"malformed json", "application/json", "", []byte(`{"resourceSpans": [{"scopeSpans": 7}]`), 400, "malformed OTLP"},
		{"malformed protobuf", "application/x-protobuf", "", []byte{0x0a, 0xff, 0xff, 0xff, 0x0f, 1}, 400, "malformed OTLP"},
		{"bad gzip", "application/json", "gzip", js, 400, "gzip"},
		{"unknown encoding", "application/json", "br", js, 415, "Content-Encoding"},
		{"unknown content type", "text/plain", "", js, 415, "Content-Type"},
		{"too large", "application/json", "", bytes.Repeat([]byte(" "), 5000), 413, "larger than 4096"},
		{"too large once decompressed", "application/json", "gzip", gz(bytes.Repeat([]byte(" "), 5000)), 413, "larger than 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, url, tc.ct, tc.enc, tc.body)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			st := &spb.Status{}
			var err error
			if resp.Header.Get("Content-Type") == "application/x-protobuf" {
				err = proto.Unmarshal(body, st)
			} else {
				err = protojson.Unmarshal(body, st)
			}
			if err != nil {
				t.Fatalf("error body is not a google.rpc.Status: %v: %q", err, body)
			}
			if !strings.Contains(st.Message, tc.msg) {
				t.Fatalf("message %q does not mention %q", st.Message, tc.msg)
			}
		})
	}
	if got := testutil.ToFloat64(r.malformed.WithLabelValues("http")); got < 5 {
		t.Errorf("malformed requests counted = %v, want at least 5", got)
	}

	t.Run("full queue", func(t *testing.T) {
		app.full = true
		defer func() { app.full = false }()
		resp, _ := post(t, url, "application/json", "", js)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
			t.Fatalf("status %d, Retry-After %q, want 503 and 5", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Fatalf("GET: %d, want 405", resp.StatusCode)
		}
	})
}

func TestTruncation(t *testing.T) {
	r, app, _, _ := start(t, Options{MaxAttributeLength: 4})
	td := request(1, 0, "héllo wörld").Traces()
	sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	sl := sp.Attributes().PutEmptySlice("list")
	sl.AppendEmpty().SetStr("abcdefgh")
	sl.AppendEmpty().SetStr("ok")
	sp.Attributes().PutInt("n", 1234567)
	ev := sp.Events().AppendEmpty()
	ev.Attributes().PutStr("exception.message", "a long message")
	td.ResourceSpans().At(0).Resource().Attributes().PutStr("host.name", "exactly4"[:4])
	if _, _, err := r.accept(td, "grpc"); err != nil {
		t.Fatal(err)
	}
	got := app.last.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	if v, _ := got.Attributes().Get("note"); v.Str() != "héll" {
		t.Errorf("note = %q, want %q (4 characters)", v.Str(), "héll")
	}
	if v, _ := got.Attributes().Get("list"); v.Slice().At(0).Str() != "abcd" || v.Slice().At(1).Str() != "ok" {
		t.Errorf("list = %v", v.AsRaw())
	}
	if v, _ := got.Attributes().Get("n"); v.Int() != 1234567 {
		t.Errorf("int attribute changed: %v", v.AsRaw())
	}
	if v, _ := got.Events().At(0).Attributes().Get("exception.message"); v.Str() != "a lo" {
		t.Errorf("event attribute = %q", v.Str())
	}
	// service.name "checkout" too.
	if v, _ := app.last.ResourceSpans().At(0).Resource().Attributes().Get("service.name"); v.Str() != "chec" {
		t.Errorf("service.name = %q, want chec", v.Str())
	}
	if n := testutil.ToFloat64(r.truncated); n != 4 {
		t.Errorf("truncated = %v, want 4", n)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
		cut  bool
	}{
		{"abc", 3, "abc", false},
		{"abcd", 3, "abc", true},
		{"ééé", 3, "ééé", false}, // 6 bytes, 3 characters
		{"éééé", 3, "ééé", true},
		{"", 0, "", false},
		{"a", 0, "", true},
	} {
		got, cut := Truncate(tc.in, tc.max)
		if got != tc.want || cut != tc.cut {
			t.Errorf("Truncate(%q, %d) = %q, %v; want %q, %v", tc.in, tc.max, got, cut, tc.want, tc.cut)
		}
	}
}

// FuzzDecodeJSON: any body either fails to decode or decodes into a request
// that survives a round trip and the receiver's own processing.
func FuzzDecodeJSON(f *testing.F) {
	js, _ := request(2, 1, "hello").MarshalJSON()
	f.Add(js)
	f.Add([]byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"3"}]}}}]}]}]}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode("application/json", body)
		if err != nil {
			return
		}
		td := req.Traces()
		n := td.SpanCount()
		out, err := req.MarshalJSON()
		if err != nil {
			t.Fatalf("re-encoding a decoded request: %v", err)
		}
		again, err := Decode("application/json", out)
		if err != nil {
			t.Fatalf("decoding our own encoding: %v\n%s", err, out)
		}
		if again.Traces().SpanCount() != n {
			t.Fatalf("round trip changed the span count: %d → %d", n, again.Traces().SpanCount())
		}
		rejected := removeInvalid(td)
		truncateAttributes(td, 8)
		if int64(td.SpanCount())+rejected != int64(n) {
			t.Fatalf("accepted %d + rejected %d != %d spans", td.SpanCount(), rejected, n)
		}
	})
}
