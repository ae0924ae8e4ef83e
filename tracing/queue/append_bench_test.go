package queue

import (
	"sync/atomic"
	"testing"
)

// BenchmarkAppendParallel appends 512-span requests from many goroutines,
// as concurrent OTLP clients do; with group commit they share fsyncs.
func BenchmarkAppendParallel(b *testing.B) {
	o := opts(b.TempDir())
	o.MaxBytes, o.SegmentBytes = 1<<40, 16<<20
	q, err := Open(o, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	var g atomic.Int32
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		id := byte(g.Add(1))
		i := 0
		for pb.Next() {
			if err := q.Append(batch(id, i*512, 512)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
