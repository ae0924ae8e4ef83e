package e2e

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/panorama-obs/panorama/tracing/store/elasticsearch/estest"
)

// TestTracingElasticsearchOutage: `panorama tracing` on Elasticsearch (the
// in-process fake that speaks its REST protocol), which is down — refusing
// connections — while the OpenTelemetry SDK sends traces. OTLP clients are
// answered from the durable queue; once Elasticsearch is back every span
// is stored exactly once and the Jaeger API serves it.
func TestTracingElasticsearchOutage(t *testing.T) {
	ctx := context.Background()
	es := estest.Serve(t, "127.0.0.1:0")
	es.Stop()
	tr := StartTracing(t, "", "--es.server-urls="+es.URL, "--es.bulk.refresh=true", "--es.bulk.max-attempts=2")

	s := newShop(ctx, t, tr)
	base := time.Now().Add(-5 * time.Minute).Truncate(time.Millisecond)
	const requests = 150
	var sent [][]sentSpan
	spans := 0
	for i := range requests {
		ss := s.checkout(ctx, base.Add(time.Duration(i)*time.Second), i%10 == 0)
		sent = append(sent, ss)
		spans += len(ss)
	}
	if err := s.flush(ctx); err != nil {
		t.Fatalf("the SDK could not export while Elasticsearch was down: %v", err)
	}
	text, err := tr.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, transport := range []string{"grpc", "http"} {
		v, _ := MetricValue(text, `panorama_tracing_spans_accepted_total{transport="`+transport+`"}`)
		n, _ := strconv.Atoi(v)
		accepted += n
	}
	if accepted != spans {
		t.Fatalf("accepted %d spans while Elasticsearch was down, want %d", accepted, spans)
	}
	if v, _ := MetricValue(text, "panorama_tracing_spans_stored_total"); v != "0" {
		t.Fatalf("stored %s spans while Elasticsearch was down", v)
	}
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		text, err := tr.Metrics(ctx)
		if err != nil {
			return err
		}
		if v, _ := MetricValue(text, "panorama_tracing_store_write_failures_total"); v == "0" || v == "" {
			return fmt.Errorf("no failed store write yet")
		}
		return nil
	})

	if err := es.Start(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 90*time.Second, 250*time.Millisecond, func() error {
		if n := es.CountDocs("panorama-span-*"); n != spans {
			return fmt.Errorf("%d span documents, want %d", n, spans)
		}
		return nil
	})
	// Exactly once: the queue drained and nothing more arrives.
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		text, err := tr.Metrics(ctx)
		if err != nil {
			return err
		}
		if v, _ := MetricValue(text, "panorama_tracing_queue_spans"); v != "0" {
			return fmt.Errorf("%s spans still queued", v)
		}
		return nil
	})
	if n := es.CountDocs("panorama-span-*"); n != spans {
		t.Fatalf("%d span documents after the queue drained, want exactly %d", n, spans)
	}
	for _, i := range []int{0, 1, requests - 1} {
		checkTrace(t, waitForTrace(t, ctx, tr, sent[i][0].sc.TraceID(), len(sent[i])), sent[i], i%10 == 0)
	}
	var resp jaegerResponse
	if _, err := tr.JaegerGet(ctx, "/api/traces?service=frontend&limit=1000&lookback=1h", &resp); err != nil {
		t.Fatal(err)
	}
	if ids := traceIDsOf(t, resp); len(ids) != requests {
		t.Errorf("search found %d traces, want %d", len(ids), requests)
	}
	es.CheckSupported(t)
}
