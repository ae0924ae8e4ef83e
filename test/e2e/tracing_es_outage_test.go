package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/panorama-obs/panorama/tracing/store/elasticsearch/estest"
)

// TestTracingElasticsearchOutage100k is issue 5's acceptance test for
// "nothing acknowledged is lost": Elasticsearch (the in-process fake,
// listening on a real port) becomes unreachable — its port closed — for
// five minutes (30 s with -short) while 100,000 spans arrive over
// OTLP/gRPC, spread over the outage. When it returns, every span is stored
// exactly once: the set of span document _ids equals the set of spans
// sent, and the Jaeger API serves the traces whole.
func TestTracingElasticsearchOutage100k(t *testing.T) {
	outage := 5 * time.Minute
	if testing.Short() {
		outage = 30 * time.Second
	}
	const (
		traces        = 10000
		spansPerTrace = 10
		total         = traces * spansPerTrace
		perRequest    = 1000 // spans per OTLP request
		services      = 5
	)
	ctx := context.Background()
	es := estest.Serve(t, "127.0.0.1:0")
	tr := StartTracing(t, "", "--es.server-urls="+es.URL, "--es.bulk.max-attempts=2")
	// Up at start: the templates are installed; then the cluster goes away.
	if len(es.Templates()) != 3 {
		t.Fatalf("index templates at start: %d, want 3", len(es.Templates()))
	}
	es.Stop()
	down := time.Now()

	conn, err := grpc.NewClient(tr.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)

	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	want := map[string]bool{}
	requests := total / perRequest
	for r := 0; r < requests; r++ {
		td := outageBatch(base, r*perRequest, perRequest, spansPerTrace, services, want)
		outageExport(t, ctx, client, td)
		// Spread the requests over the outage.
		if wait := time.Until(down.Add(outage * time.Duration(r+1) / time.Duration(requests))); wait > 0 {
			time.Sleep(wait)
		}
	}
	if len(want) != total {
		t.Fatalf("built %d distinct spans, want %d", len(want), total)
	}
	text, err := tr.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := MetricValue(text, `panorama_tracing_spans_accepted_total{transport="grpc"}`); v != strconv.Itoa(total) {
		t.Fatalf("accepted %s spans during the outage, want %d", v, total)
	}
	if v, _ := MetricValue(text, "panorama_tracing_spans_stored_total"); v != "0" {
		t.Fatalf("stored %s spans while Elasticsearch was unreachable", v)
	}
	if n := es.CountDocs("panorama-span-*"); n != 0 {
		t.Fatalf("%d span documents reached the stopped fake", n)
	}
	t.Logf("outage of %v with %d spans sent; Elasticsearch back", time.Since(down).Round(time.Second), total)

	if err := es.Start(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Minute, time.Second, func() error {
		text, err := tr.Metrics(ctx)
		if err != nil {
			return err
		}
		if v, _ := MetricValue(text, "panorama_tracing_queue_spans"); v != "0" {
			return fmt.Errorf("%s spans still queued; %d span documents", v, es.CountDocs("panorama-span-*"))
		}
		return nil
	})

	// Exactly once, by _id: every span sent has one document, in one
	// index, and there is no other.
	got := map[string]int{}
	for _, ix := range es.Indices() {
		if strings.HasPrefix(ix, "panorama-span-") {
			for id := range es.Docs(ix) {
				got[id]++
			}
		}
	}
	missing, extra, dup := 0, 0, 0
	for id := range want {
		if got[id] == 0 {
			missing++
		}
	}
	for id, n := range got {
		if !want[id] {
			extra++
		}
		if n > 1 {
			dup++
		}
	}
	if missing+extra+dup > 0 || len(got) != total {
		t.Fatalf("span documents: %d distinct, want %d; %d missing, %d unexpected, %d in more than one index", len(got), total, missing, extra, dup)
	}
	text, err = tr.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := MetricValue(text, "panorama_tracing_store_write_failures_total"); v == "0" || v == "" {
		t.Errorf("no failed store write counted during the outage")
	}

	// Through the Jaeger API: traces whole, services listed.
	for _, n := range []int{0, 1, traces / 2, traces - 1} {
		id := outageTraceID(n)
		var resp outageTraces
		code, err := tr.JaegerGet(ctx, "/api/traces/"+id.String(), &resp)
		if err != nil || code != 200 {
			t.Fatalf("GET /api/traces/%s: %d %v", id, code, err)
		}
		if len(resp.Data) != 1 || len(resp.Data[0].Spans) != spansPerTrace {
			t.Errorf("trace %s: %d traces with %v spans, want one of %d spans", id, len(resp.Data), outageSpanCounts(resp), spansPerTrace)
		}
	}
	var svcs struct {
		Data []string `json:"data"`
	}
	if _, err := tr.JaegerGet(ctx, "/api/services", &svcs); err != nil {
		t.Fatal(err)
	}
	for s := 0; s < services; s++ {
		if !outageContains(svcs.Data, fmt.Sprintf("load-%d", s)) {
			t.Errorf("/api/services = %v, lacks load-%d", svcs.Data, s)
		}
	}
	var found outageTraces
	if _, err := tr.JaegerGet(ctx, "/api/traces?service=load-0&limit=50&lookback=1h", &found); err != nil {
		t.Fatal(err)
	}
	if len(found.Data) != 50 {
		t.Errorf("search for service load-0 found %d traces, want 50", len(found.Data))
	}
	es.CheckSupported(t)
}

// outageTraces is the part of a Jaeger /api/traces answer this test reads.
type outageTraces struct {
	Data []struct {
		TraceID string            `json:"traceID"`
		Spans   []json.RawMessage `json:"spans"`
	} `json:"data"`
}

func outageContains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func outageSpanCounts(r outageTraces) []int {
	var out []int
	for _, d := range r.Data {
		out = append(out, len(d.Spans))
	}
	return out
}

func outageTraceID(n int) pcommon.TraceID {
	var id pcommon.TraceID
	copy(id[:], "panorama-es-")
	binary.BigEndian.PutUint32(id[12:], uint32(n))
	return id
}

// outageBatch builds spans first..first+n-1 of the load: trace i/spansPerTrace,
// a root and children, each trace's spans of one of services, and records
// each span's document _id in want.
func outageBatch(base time.Time, first, n, spansPerTrace, services int, want map[string]bool) ptrace.Traces {
	td := ptrace.NewTraces()
	scopes := map[int]ptrace.SpanSlice{}
	for i := first; i < first+n; i++ {
		trace, k := i/spansPerTrace, i%spansPerTrace
		svc := trace % services
		spans, ok := scopes[svc]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("load-%d", svc))
			rs.Resource().Attributes().PutStr("host.name", "load-host")
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("e2e")
			spans = ss.Spans()
			scopes[svc] = spans
		}
		sp := spans.AppendEmpty()
		tid := outageTraceID(trace)
		sp.SetTraceID(tid)
		var sid pcommon.SpanID
		binary.BigEndian.PutUint32(sid[:4], uint32(trace))
		binary.BigEndian.PutUint32(sid[4:], uint32(k+1))
		sp.SetSpanID(sid)
		if k > 0 {
			var parent pcommon.SpanID
			binary.BigEndian.PutUint32(parent[:4], uint32(trace))
			binary.BigEndian.PutUint32(parent[4:], 1)
			sp.SetParentSpanID(parent)
			sp.SetKind(ptrace.SpanKindInternal)
		} else {
			sp.SetKind(ptrace.SpanKindServer)
		}
		sp.SetName(fmt.Sprintf("op-%d", k))
		start := base.Add(time.Duration(trace) * time.Millisecond).Add(time.Duration(k) * time.Microsecond)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Duration(spansPerTrace-k) * time.Millisecond)))
		sp.Attributes().PutInt("load.span", int64(i))
		sp.Attributes().PutStr("http.method", "GET")
		want[tid.String()+sid.String()] = true
	}
	return td
}

// outageExport sends one OTLP request, retrying what the server says is
// retryable (a full queue), as an SDK's exporter does.
func outageExport(t *testing.T, ctx context.Context, client ptraceotlp.GRPCClient, td ptrace.Traces) {
	t.Helper()
	req := ptraceotlp.NewExportRequestFromTraces(td)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := client.Export(rctx, req)
		cancel()
		if err == nil {
			if ps := resp.PartialSuccess(); ps.RejectedSpans() != 0 {
				t.Fatalf("OTLP export: %d spans rejected: %s", ps.RejectedSpans(), ps.ErrorMessage())
			}
			return
		}
		if c := status.Code(err); (c != grpccodes.Unavailable && c != grpccodes.ResourceExhausted) || attempt == 20 {
			t.Fatalf("OTLP export (attempt %d): %v", attempt, err)
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
}
