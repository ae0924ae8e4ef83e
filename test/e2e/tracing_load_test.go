package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TelemetrygenPath is the OTLP load generator of the OpenTelemetry
// Collector contrib (cmd/telemetrygen v0.161.0).
const TelemetrygenPath = ".cache/bin/telemetrygen"

func metricFloat(t *testing.T, text, series string) float64 {
	t.Helper()
	v, ok := MetricValue(text, series)
	if !ok {
		t.Fatalf("%s missing from /metrics", series)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s = %q: %v", series, v, err)
	}
	return f
}

// TestTracingTelemetrygenLoad sends load with telemetrygen over OTLP/gRPC
// and OTLP/HTTP. telemetrygen drops what its exporter cannot send in time,
// so the server's own counters are the reference: every accepted span is
// stored exactly once and found again through the Jaeger API.
func TestTracingTelemetrygenLoad(t *testing.T) {
	bin := RequireBinary(t, TelemetrygenPath)
	ctx := context.Background()
	tr := StartTracing(t, "")

	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"traces", "--otlp-insecure", "--rate", "0", "--child-spans", "3", "--workers", "2", "--traces", "2000"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("telemetrygen %v: %v\n%s", args, err, out)
		}
	}
	before, err := tr.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cpu0 := metricFloat(t, before, "process_cpu_seconds_total")
	start := time.Now()
	run("--otlp-endpoint", tr.GRPCAddr, "--service", "load-grpc")
	run("--otlp-endpoint", tr.HTTPAddr, "--otlp-http", "--service", "load-http")

	var accepted float64
	Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		text, err := tr.Metrics(ctx)
		if err != nil {
			return err
		}
		accepted = metricFloat(t, text, `panorama_tracing_spans_accepted_total{transport="grpc"}`) + metricFloat(t, text, `panorama_tracing_spans_accepted_total{transport="http"}`)
		stored := metricFloat(t, text, "panorama_tracing_spans_stored_total")
		if queued := metricFloat(t, text, "panorama_tracing_queue_spans"); queued != 0 || stored != accepted {
			return fmt.Errorf("accepted %v, stored %v, queued %v", accepted, stored, queued)
		}
		return nil
	})
	elapsed := time.Since(start)
	after, err := tr.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cpu := metricFloat(t, after, "process_cpu_seconds_total") - cpu0
	for _, transport := range []string{"grpc", "http"} {
		if n := metricFloat(t, after, `panorama_tracing_spans_accepted_total{transport="`+transport+`"}`); n == 0 {
			t.Errorf("no span accepted over %s", transport)
		}
		if n := metricFloat(t, after, `panorama_tracing_spans_refused_total{transport="`+transport+`"}`); n != 0 {
			t.Errorf("%v spans refused over %s", n, transport)
		}
	}
	t.Logf("%.0f spans accepted and stored in %s (%.0f spans/s), %.2f CPU-seconds (%.0f spans per CPU-second)",
		accepted, elapsed.Round(time.Millisecond), accepted/elapsed.Seconds(), cpu, accepted/cpu)

	// Exactly once: the traces found, read whole, hold every accepted span.
	found := 0
	for _, svc := range []string{"load-grpc", "load-http"} {
		var resp jaegerResponse
		if _, err := tr.JaegerGet(ctx, "/api/traces?service="+svc+"&limit=100000&lookback=1h", &resp); err != nil {
			t.Fatal(err)
		}
		var traces []struct {
			Spans []json.RawMessage `json:"spans"`
		}
		if err := json.Unmarshal(resp.Data, &traces); err != nil {
			t.Fatal(err)
		}
		for _, tr := range traces {
			found += len(tr.Spans)
		}
	}
	if float64(found) != accepted {
		t.Fatalf("the Jaeger API finds %d spans, the server accepted %.0f", found, accepted)
	}
	// Each telemetrygen trace is a client span with server children of the
	// same service: the service graph pairs them.
	if n := metricFloat(t, after, `traces_service_graph_request_total{client="load-grpc",connection_type="",server="load-grpc"}`); n == 0 {
		t.Error("no load-grpc → load-grpc request in the service graph")
	}
}
