package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/embedded"
)

// batch returns n spans of trace t, span IDs from first.
func batch(t byte, first, n int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc")
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	for i := range n {
		sp := ss.Spans().AppendEmpty()
		id := first + i
		sp.SetTraceID(pcommon.TraceID{1, t, 14: byte(id >> 8), 15: byte(id)})
		sp.SetSpanID(pcommon.SpanID{2, byte(id >> 16), byte(id >> 8), byte(id), 7: 1})
		sp.SetName("op")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	}
	return td
}

// recorder is a store.Writer that records the span IDs it takes, failing
// while fail returns an error.
type recorder struct {
	mtx   sync.Mutex
	spans []string
	calls int
	fail  func(call int, td ptrace.Traces) error
}

func newRecorder() *recorder { return &recorder{} }

func (r *recorder) WriteTraces(_ context.Context, td ptrace.Traces) error {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(r.calls, td); err != nil {
			return err
		}
	}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		ss := td.ResourceSpans().At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			r.spans = append(r.spans, ss.At(j).SpanID().String())
		}
	}
	return nil
}

func (r *recorder) count() int {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	return len(r.spans)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func opts(dir string) Options {
	return Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 4 << 10, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}
}

func TestDeliversInOrderExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(opts(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 50 {
		td := batch(1, i*10, 10)
		if err := q.Append(td); err != nil {
			t.Fatal(err)
		}
		ss := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			want = append(want, ss.At(j).SpanID().String())
		}
	}
	if _, spans := q.Pending(); spans != 500 {
		t.Fatalf("pending spans = %d, want 500", spans)
	}
	r := newRecorder()
	q.Start(r)
	waitFor(t, "500 spans stored", func() bool { return r.count() == 500 })
	r.mtx.Lock()
	calls := r.calls
	r.mtx.Unlock()
	if calls >= 50 {
		t.Errorf("%d store writes for 50 queued requests, want them merged", calls)
	}
	waitFor(t, "queue drained", func() bool { b, s := q.Pending(); return b == 0 && s == 0 })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if r.spans[i] != want[i] {
			t.Fatalf("span %d delivered = %s, want %s", i, r.spans[i], want[i])
		}
	}
	// Segments were rotated (4 KiB each) and the stored ones deleted.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("%d segment files left after draining, want 1 (the current one)", len(segs))
	}
	// Reopening delivers nothing again.
	q, err = Open(opts(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if b, s := q.Pending(); b != 0 || s != 0 {
		t.Fatalf("after reopening a drained queue: pending %d bytes, %d spans", b, s)
	}
}

func TestFullRefusesThenAcceptsAgain(t *testing.T) {
	o := opts(t.TempDir())
	o.MaxBytes = 3000
	q, err := Open(o, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var accepted int
	for i := range 100 {
		err := q.Append(batch(2, i*10, 10))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if accepted == 0 || accepted == 100 {
		t.Fatalf("accepted %d batches into a 3000-byte queue, want some but not all", accepted)
	}
	if b, _ := q.Pending(); b > o.MaxBytes {
		t.Fatalf("queue holds %d bytes, more than MaxBytes %d", b, o.MaxBytes)
	}
	r := newRecorder()
	q.Start(r)
	waitFor(t, "drained", func() bool { b, _ := q.Pending(); return b == 0 })
	if err := q.Append(batch(2, 5000, 10)); err != nil {
		t.Fatalf("append after draining: %v", err)
	}
	waitFor(t, "the last batch stored", func() bool { return r.count() == accepted*10+10 })
}

func TestReplayAfterRestart(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.MaxBatchSpans = 1 // one request per store write
	q, err := Open(o, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := q.Append(batch(3, i*5, 5)); err != nil {
			t.Fatal(err)
		}
	}
	// The store takes 8 batches, then is down when the process stops.
	r := newRecorder()
	r.fail = func(_ int, _ ptrace.Traces) error {
		if len(r.spans) >= 40 { // 8 requests stored
			return errors.New("connection refused")
		}
		return nil
	}
	q.Start(r)
	waitFor(t, "8 batches stored", func() bool { return r.count() == 40 })
	waitFor(t, "a failed attempt", func() bool { r.mtx.Lock(); defer r.mtx.Unlock(); return r.calls > 2 })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of the next append leaves half a record.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0, 0, 1, 0, 9, 9})
	f.Close()

	q, err = Open(opts(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, spans := q.Pending(); spans != 60 {
		t.Fatalf("pending after restart = %d spans, want 60", spans)
	}
	if err := q.Append(batch(3, 1000, 5)); err != nil {
		t.Fatal(err)
	}
	r2 := newRecorder()
	q.Start(r2)
	waitFor(t, "the rest stored", func() bool { return r2.count() == 65 })
	seen := map[string]bool{}
	for _, s := range append(r.spans, r2.spans...) {
		if seen[s] {
			t.Fatalf("span %s delivered twice", s)
		}
		seen[s] = true
	}
	if len(seen) != 105 {
		t.Fatalf("%d distinct spans delivered, want 105", len(seen))
	}
}

func TestPermanentErrorsAreDroppedAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	q, err := Open(opts(t.TempDir()), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := newRecorder()
	// The store is unavailable twice, and refuses the batch holding the
	// first request's spans for good.
	r.fail = func(call int, td ptrace.Traces) error {
		if call <= 2 {
			return errors.New("503")
		}
		if td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SpanID() == batch(4, 0, 1).ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SpanID() {
			return store.Permanent(errors.New("mapping conflict"))
		}
		return nil
	}
	for i := range 3 {
		if err := q.Append(batch(4, i*7, 7)); err != nil {
			t.Fatal(err)
		}
	}
	q.Start(r)
	waitFor(t, "drained", func() bool { b, _ := q.Pending(); return b == 0 })
	if n := r.count(); n != 14 {
		t.Fatalf("stored %d spans, want 14 (the first batch dropped)", n)
	}
	if v := testutil.ToFloat64(q.spansDropped.WithLabelValues("permanent")); v != 7 {
		t.Errorf("dropped permanent = %v, want 7", v)
	}
	if v := testutil.ToFloat64(q.failures); v != 2 {
		t.Errorf("write failures = %v, want 2", v)
	}
	if v := testutil.ToFloat64(q.spansStored); v != 14 {
		t.Errorf("stored = %v, want 14", v)
	}
}

// flakyStore is the embedded store behind a switch that makes it
// unreachable.
type flakyStore struct {
	store.Store
	mtx  sync.Mutex
	down bool
}

func (f *flakyStore) WriteTraces(ctx context.Context, td ptrace.Traces) error {
	f.mtx.Lock()
	down := f.down
	f.mtx.Unlock()
	if down {
		return errors.New("dial tcp: connection refused")
	}
	return f.Store.WriteTraces(ctx, td)
}

// TestStoreOutage: 100k spans arrive while the store is down; once it is
// back, every one is queryable exactly once.
func TestStoreOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("100k spans")
	}
	ctx := context.Background()
	st, err := embedded.Open(embedded.Options{Dir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fs := &flakyStore{Store: st, down: true}
	o := opts(t.TempDir())
	o.MaxBytes, o.SegmentBytes = 64<<20, 1<<20
	q, err := Open(o, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Start(fs)
	const batches, per = 200, 500
	for i := range batches {
		td := batch(0, i*per, per)
		ss := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			ss.At(j).SetTraceID(pcommon.TraceID{3, byte(i >> 8), byte(i)})
		}
		if err := q.Append(td); err != nil {
			t.Fatal(err)
		}
	}
	if _, s := q.Pending(); s != batches*per {
		t.Fatalf("pending %d spans while the store is down, want %d", s, batches*per)
	}
	fs.mtx.Lock()
	fs.down = false
	fs.mtx.Unlock()
	waitFor(t, "queue drained", func() bool { b, _ := q.Pending(); return b == 0 })

	total := 0
	for i := range batches {
		td, err := st.GetTrace(ctx, pcommon.TraceID{3, byte(i >> 8), byte(i)})
		if err != nil {
			t.Fatalf("trace of batch %d: %v", i, err)
		}
		total += td.SpanCount()
	}
	if total != batches*per {
		t.Fatalf("%d spans stored, want exactly %d", total, batches*per)
	}
}

// TestConcurrentAppends: appends from many goroutines, across segment
// rotations, while the consumer runs; every span is delivered once.
func TestConcurrentAppends(t *testing.T) {
	q, err := Open(opts(t.TempDir()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := newRecorder()
	q.Start(r)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := q.Append(batch(byte(g), i*10, 10)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "4000 spans stored", func() bool { return r.count() >= 4000 })
	waitFor(t, "queue drained", func() bool { b, s := q.Pending(); return b == 0 && s == 0 })
	r.mtx.Lock()
	defer r.mtx.Unlock()
	// Drained: a lost span would leave fewer, a repeated one more.
	if len(r.spans) != 4000 {
		t.Fatalf("%d spans delivered, want 4000", len(r.spans))
	}
}

// Concurrent appends share syncs (group commit): every acknowledged record
// is on disk when Append returns, across segment rotations.
func TestConcurrentAppendsAreDurable(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(opts(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		acked atomic.Int64
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if err := q.Append(batch(byte(g), i*10, 10)); err != nil {
					t.Error(err)
					return
				}
				acked.Add(10)
			}
		}()
	}
	wg.Wait()
	_, pending := q.Pending()
	if pending != acked.Load() {
		t.Fatalf("%d spans pending, %d acknowledged", pending, acked.Load())
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(opts(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, pending := q.Pending(); pending != acked.Load() {
		t.Fatalf("after reopening, %d spans pending, want %d", pending, acked.Load())
	}
	r := newRecorder()
	q.Start(r)
	waitFor(t, "3200 spans stored", func() bool { return r.count() >= 3200 })
	waitFor(t, "queue drained", func() bool { b, s := q.Pending(); return b == 0 && s == 0 })
}
