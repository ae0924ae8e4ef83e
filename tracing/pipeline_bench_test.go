package tracing

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// batchOf returns n spans shaped like telemetrygen's: traces of a root
// server span and client children, a few attributes each.
func batchOf(n int, seq *uint64) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "telemetrygen")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("telemetrygen")
	now := time.Now()
	var root pcommon.SpanID
	for i := range n {
		*seq++
		s := ss.Spans().AppendEmpty()
		id := *seq
		if i%4 == 0 {
			root = pcommon.SpanID{byte(id >> 56), byte(id >> 48), byte(id >> 40), byte(id >> 32), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
		}
		s.SetTraceID(pcommon.TraceID{1, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id / 4)})
		s.SetSpanID(pcommon.SpanID{byte(id >> 56), byte(id >> 48), byte(id >> 40), byte(id >> 32), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)})
		if i%4 == 0 {
			s.SetKind(ptrace.SpanKindServer)
			s.SetName("lets-go")
		} else {
			s.SetParentSpanID(root)
			s.SetKind(ptrace.SpanKindClient)
			s.SetName("okey-dokey-0")
		}
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(123 * time.Microsecond)))
		s.Attributes().PutStr("net.peer.ip", "1.2.3.4")
		s.Attributes().PutStr("peer.service", "telemetrygen-server")
	}
	return td
}

// BenchmarkPipeline sends 512-span OTLP/gRPC requests through the whole
// role (receiver, durable queue, embedded store, service graph) and
// reports spans stored per second of the benchmark.
func BenchmarkPipeline(b *testing.B) {
	opts := DefaultOptions()
	opts.DataDir = b.TempDir()
	opts.Receiver.GRPCAddress, opts.Receiver.HTTPAddress = "127.0.0.1:0", ""
	st, err := OpenEmbeddedStore(opts, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := New(opts, st, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	go tr.receiver.Run()
	defer func() { tr.receiver.Shutdown(nil); tr.Close() }()
	conn, err := grpc.NewClient(tr.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)
	var seq uint64
	reqs := make([]ptraceotlp.ExportRequest, b.N)
	for i := range reqs {
		reqs[i] = ptraceotlp.NewExportRequestFromTraces(batchOf(512, &seq))
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := client.Export(context.Background(), reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	for {
		if bytes, _ := tr.queue.Pending(); bytes == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N*512)/time.Since(start).Seconds(), "spans/s")
}
