package embedded

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// BenchmarkWriteTraces writes 512-span batches shaped like telemetrygen's
// (a server span and three client children per trace, two attributes each).
func BenchmarkWriteTraces(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(Options{Dir: dir}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	batches := make([]ptrace.Traces, b.N)
	var id uint64
	for n := range batches {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "telemetrygen")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("telemetrygen")
		for i := range 512 {
			id++
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{1, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id / 4)})
			sp.SetSpanID(pcommon.SpanID{2, byte(id >> 32), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)})
			sp.SetKind(ptrace.SpanKindClient)
			if i%4 == 0 {
				sp.SetKind(ptrace.SpanKindServer)
			}
			sp.SetName("okey-dokey-0")
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(id) * time.Microsecond)))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Duration(id)*time.Microsecond + 123*time.Microsecond)))
			sp.Attributes().PutStr("net.peer.ip", "1.2.3.4")
			sp.Attributes().PutStr("peer.service", "telemetrygen-server")
		}
		batches[n] = td
	}
	b.ResetTimer()
	for n := range b.N {
		if err := s.WriteTraces(context.Background(), batches[n]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*512)/b.Elapsed().Seconds(), "spans/s")
	// Disk per span: the tables once the memtable is flushed (the WAL is
	// recycled and not counted).
	b.StopTimer()
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	var size int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			size += st.Size()
		}
	}
	b.ReportMetric(float64(size)/float64(b.N*512), "disk-bytes/span")
}
