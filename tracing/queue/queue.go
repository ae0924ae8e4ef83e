// Package queue is the durable span queue between the OTLP receiver and the
// span store: an accepted request is appended to a segment file and synced
// before the client is answered, and a consumer hands each record to the
// store, retrying with exponential backoff until the store takes it. After a
// crash or restart the records not yet stored are replayed; the store's
// idempotent writes make a replay harmless.
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// ErrFull is returned by Append when the queue holds MaxBytes already; the
// client should retry later.
var ErrFull = errors.New("span queue is full")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("span queue is closed")

// Options configure a queue.
type Options struct {
	// Dir holds the segment files and the consumer's cursor.
	Dir string
	// MaxBytes bounds the records not yet stored (headers included).
	MaxBytes int64
	// SegmentBytes is the size after which a new segment file is started.
	SegmentBytes int64
	// MinBackoff and MaxBackoff bound the wait between store attempts.
	MinBackoff, MaxBackoff time.Duration
	// MaxBatchSpans bounds the spans of queued requests merged into one
	// store write (a request is never split).
	MaxBatchSpans int
}

// DefaultOptions returns the defaults the tracing role uses.
func DefaultOptions() Options {
	return Options{MaxBytes: 1 << 30, SegmentBytes: 16 << 20, MinBackoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxBatchSpans: 16384}
}

// A record is a header, then an OTLP ExportTraceServiceRequest in protobuf:
// length(4) crc32c(4) spans(4), big-endian; the CRC covers the payload.
const headerLen = 12

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Queue is a durable FIFO of span batches with one consumer.
type Queue struct {
	opts   Options
	logger *slog.Logger

	mtx       sync.Mutex
	cond      *sync.Cond
	closed    bool
	wSeg      uint64 // the end of what is written and synced (published)
	wSize     int64
	rSeg      uint64 // the consumer's position
	rOff      int64
	pendBytes int64
	pendSpans int64

	// fileMtx guards the segment being appended to; it is taken before
	// mtx, never after.
	fileMtx  sync.Mutex
	w        *os.File
	fileSeg  uint64
	fileSize int64 // written, not necessarily synced
	// Group commit: appends write under fileMtx and then wait until a sync
	// covers their record. One of them (the leader) syncs, with fileMtx
	// released so that others keep writing; one fsync then acknowledges
	// every record written before it started.
	syncCond      *sync.Cond // on fileMtx
	syncing       bool
	syncedSize    int64  // of fileSeg: written and synced (and published)
	unsyncedSpans int64  // spans of the records after syncedSize
	syncGen       uint64 // bumped when a failed sync cut unsynced records
	cutSeg        uint64 // where the last failed sync cut records off
	cutOff        int64

	stop    chan struct{}
	running sync.WaitGroup

	spansStored  prometheus.Counter
	spansDropped *prometheus.CounterVec
	failures     prometheus.Counter
}

// Open opens the queue in opts.Dir, creating it when missing, and repairs a
// segment whose last record was cut short by a crash.
func Open(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Queue, error) {
	d := DefaultOptions()
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = d.MaxBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = d.SegmentBytes
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = d.MinBackoff
	}
	if opts.MaxBatchSpans <= 0 {
		opts.MaxBatchSpans = d.MaxBatchSpans
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(d.MaxBackoff, opts.MinBackoff)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create queue directory: %w", err)
	}
	q := &Queue{
		opts:   opts,
		logger: logger,
		stop:   make(chan struct{}),
		spansStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_spans_stored_total", Help: "Spans the durable queue handed to the span store successfully.",
		}),
		spansDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_spans_dropped_total", Help: "Spans taken from the durable queue and dropped: the store refused them for good (reason=permanent) or the record was corrupt on disk (reason=corrupt).",
		}, []string{"reason"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_store_write_failures_total", Help: "Failed attempts to write a queued batch to the span store (each is retried unless permanent).",
		}),
	}
	q.cond = sync.NewCond(&q.mtx)
	q.syncCond = sync.NewCond(&q.fileMtx)
	if err := q.recover(); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			q.spansStored, q.spansDropped, q.failures,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "panorama_tracing_queue_bytes", Help: "Bytes of span batches in the durable queue not yet stored."}, func() float64 {
				b, _ := q.Pending()
				return float64(b)
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "panorama_tracing_queue_spans", Help: "Spans in the durable queue not yet stored."}, func() float64 {
				_, s := q.Pending()
				return float64(s)
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "panorama_tracing_queue_capacity_bytes", Help: "Most bytes the durable queue holds before refusing spans."}, func() float64 {
				return float64(q.opts.MaxBytes)
			}),
		} {
			if err := reg.Register(c); err != nil {
				q.w.Close()
				return nil, err
			}
		}
	}
	return q, nil
}

func segName(id uint64) string { return fmt.Sprintf("%020d.seg", id) }

func (q *Queue) segments() ([]uint64, error) {
	ents, err := os.ReadDir(q.opts.Dir)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// recover reads the cursor, counts what is pending and opens the last
// segment for appending, cut after its last whole record.
func (q *Queue) recover() error {
	ids, err := q.segments()
	if err != nil {
		return err
	}
	q.rSeg, q.rOff = q.readCursor()
	if len(ids) == 0 {
		ids = []uint64{max(q.rSeg, 1)}
		q.rSeg, q.rOff = ids[0], 0
	}
	if q.rSeg < ids[0] {
		q.rSeg, q.rOff = ids[0], 0
	}
	for _, id := range ids {
		if id < q.rSeg {
			// Stored already; its deletion was cut short.
			os.Remove(filepath.Join(q.opts.Dir, segName(id)))
			continue
		}
		last := id == ids[len(ids)-1]
		from := int64(0)
		if id == q.rSeg {
			from = q.rOff
		}
		valid, spans, err := scanSegment(filepath.Join(q.opts.Dir, segName(id)), from)
		if err != nil {
			return err
		}
		if last {
			q.wSeg, q.wSize = id, valid
			if err := os.Truncate(filepath.Join(q.opts.Dir, segName(id)), valid); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("repair queue segment: %w", err)
			}
		}
		if valid > from {
			q.pendBytes += valid - from
		}
		q.pendSpans += spans
	}
	if q.rSeg == q.wSeg && q.rOff > q.wSize {
		q.rOff = q.wSize
	}
	f, err := os.OpenFile(filepath.Join(q.opts.Dir, segName(q.wSeg)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open queue segment: %w", err)
	}
	q.w, q.fileSeg, q.fileSize, q.syncedSize = f, q.wSeg, q.wSize, q.wSize
	if q.pendSpans > 0 {
		q.logger.Info("Replaying span queue", "spans", q.pendSpans, "bytes", q.pendBytes)
	}
	return syncDir(q.opts.Dir)
}

// scanSegment returns the end of the last whole record and the spans of the
// records from offset from.
func scanSegment(path string, from int64) (valid, spans int64, err error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var off int64
	hdr := make([]byte, headerLen)
	for {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return off, spans, nil
		}
		n := int64(binary.BigEndian.Uint32(hdr[0:4]))
		payload := make([]byte, n)
		if _, err := f.ReadAt(payload, off+headerLen); err != nil {
			return off, spans, nil
		}
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
			return off, spans, nil
		}
		if off >= from {
			spans += int64(binary.BigEndian.Uint32(hdr[8:12]))
		}
		off += headerLen + n
	}
}

func (q *Queue) cursorPath() string { return filepath.Join(q.opts.Dir, "cursor") }

func (q *Queue) readCursor() (uint64, int64) {
	b, err := os.ReadFile(q.cursorPath())
	if err != nil || len(b) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(b[:8]), int64(binary.BigEndian.Uint64(b[8:]))
}

// writeCursor records the consumer's position. It is not synced: after a
// crash the consumer resumes from an older position and the store receives
// a few batches again, which its idempotence absorbs.
func (q *Queue) writeCursor(seg uint64, off int64) error {
	b := binary.BigEndian.AppendUint64(nil, seg)
	b = binary.BigEndian.AppendUint64(b, uint64(off))
	tmp := q.cursorPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, q.cursorPath())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append stores td durably (written and synced) or returns ErrFull.
func (q *Queue) Append(td ptrace.Traces) error {
	payload, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return fmt.Errorf("encode spans: %w", err)
	}
	rec := make([]byte, headerLen, headerLen+len(payload))
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:8], crc32.Checksum(payload, castagnoli))
	binary.BigEndian.PutUint32(rec[8:12], uint32(td.SpanCount()))
	rec = append(rec, payload...)

	n := int64(len(rec))
	// Reserve room under the state lock, then write and sync under the
	// file lock only, so that the consumer is not held up by a sync.
	q.mtx.Lock()
	if q.closed {
		q.mtx.Unlock()
		return ErrClosed
	}
	if q.pendBytes+n > q.opts.MaxBytes {
		q.mtx.Unlock()
		return ErrFull
	}
	q.pendBytes += n
	q.mtx.Unlock()

	q.fileMtx.Lock()
	defer q.fileMtx.Unlock()
	spans := int64(td.SpanCount())
	seg, end, gen, err := q.write(rec, spans)
	if err == nil {
		err = q.waitSynced(seg, end, gen)
	}
	if err != nil {
		q.mtx.Lock()
		q.pendBytes -= n
		q.mtx.Unlock()
	}
	return err
}

// errCut is returned to appends whose record a failed sync cut off.
var errCut = errors.New("sync span queue: the record was cut after a failed sync")

// write appends one record to the current segment, or a new one when it
// is full, without syncing it; q.fileMtx is held. It returns where the
// record ends and the sync generation it was written in.
func (q *Queue) write(rec []byte, spans int64) (seg uint64, end int64, gen uint64, err error) {
	for q.w != nil && q.fileSize > 0 && q.fileSize+int64(len(rec)) > q.opts.SegmentBytes {
		// The segment is full: leave it once everything written to it
		// is synced (another append may rotate first).
		switch {
		case q.syncing:
			q.syncCond.Wait()
		case q.syncedSize < q.fileSize:
			if err := q.syncLocked(); err != nil {
				return 0, 0, 0, err
			}
		default:
			if err := q.rotate(); err != nil {
				return 0, 0, 0, err
			}
		}
	}
	if q.w == nil {
		return 0, 0, 0, ErrClosed
	}
	if _, err := q.w.Write(rec); err != nil {
		// Cut the partial record so the segment stays readable.
		_ = q.w.Truncate(q.fileSize)
		return 0, 0, 0, fmt.Errorf("append to span queue: %w", err)
	}
	q.fileSize += int64(len(rec))
	q.unsyncedSpans += spans
	return q.fileSeg, q.fileSize, q.syncGen, nil
}

// waitSynced returns once a sync covers the record ending at end in seg,
// syncing itself when no other append is; q.fileMtx is held.
func (q *Queue) waitSynced(seg uint64, end int64, gen uint64) error {
	for {
		if q.syncGen != gen {
			// A sync failed since the record was written: it survived
			// only if it was synced before (one failure since; after
			// several, refuse it: the client retries and the store's
			// idempotence absorbs a record that was kept after all).
			if q.syncGen == gen+1 && (seg < q.cutSeg || seg == q.cutSeg && end <= q.cutOff) {
				return nil
			}
			return errCut
		}
		if seg < q.fileSeg || end <= q.syncedSize {
			return nil
		}
		if q.w == nil {
			return ErrClosed
		}
		if !q.syncing {
			if err := q.syncLocked(); err != nil {
				return err
			}
			continue
		}
		q.syncCond.Wait()
	}
}

// syncLocked syncs what is written to the current segment and publishes it
// to the consumer; q.fileMtx is held, released during the fsync, and no
// other sync is running. A failed sync cuts every unsynced record.
func (q *Queue) syncLocked() error {
	q.syncing = true
	f, seg, target, spans := q.w, q.fileSeg, q.fileSize, q.unsyncedSpans
	q.fileMtx.Unlock()
	err := f.Sync()
	q.fileMtx.Lock()
	q.syncing = false
	defer q.syncCond.Broadcast()
	if err != nil {
		// Records after target were written while this sync ran and
		// are cut as well: their appends see the new generation.
		_ = f.Truncate(q.syncedSize)
		q.fileSize, q.unsyncedSpans, q.cutSeg, q.cutOff = q.syncedSize, 0, seg, q.syncedSize
		q.syncGen++
		return fmt.Errorf("sync span queue: %w", err)
	}
	q.syncedSize = target
	q.unsyncedSpans -= spans
	// Publish in write order: offsets only grow within a segment.
	q.mtx.Lock()
	q.wSeg, q.wSize = seg, target
	q.pendSpans += spans
	q.cond.Broadcast()
	q.mtx.Unlock()
	return nil
}

// rotate starts the next segment; q.fileMtx is held and everything written
// to the current one is synced. The consumer learns of the new segment when
// the first record in it is published.
func (q *Queue) rotate() error {
	f, err := os.OpenFile(filepath.Join(q.opts.Dir, segName(q.fileSeg+1)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start queue segment: %w", err)
	}
	if err := syncDir(q.opts.Dir); err != nil {
		f.Close()
		return err
	}
	q.w.Close()
	q.w, q.fileSeg, q.fileSize, q.syncedSize, q.unsyncedSpans = f, q.fileSeg+1, 0, 0, 0
	return nil
}

// Pending returns the bytes and spans not yet stored.
func (q *Queue) Pending() (bytes, spans int64) {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return q.pendBytes, q.pendSpans
}

// Start runs the consumer, which writes every record to w in order until
// Close.
func (q *Queue) Start(w store.Writer) {
	q.running.Add(1)
	go func() {
		defer q.running.Done()
		q.consume(w)
	}()
}

// Close stops the consumer (a write in progress is abandoned and replayed
// at the next Open) and closes the segment.
func (q *Queue) Close() error {
	q.mtx.Lock()
	if q.closed {
		q.mtx.Unlock()
		return nil
	}
	q.closed = true
	close(q.stop)
	q.cond.Broadcast()
	q.mtx.Unlock()
	q.running.Wait()
	q.fileMtx.Lock()
	defer q.fileMtx.Unlock()
	for q.syncing {
		q.syncCond.Wait()
	}
	err := q.w.Close()
	q.w = nil
	q.syncCond.Broadcast()
	return err
}

// next waits for a record after the consumer's position and returns where
// it is; ok is false once the queue is closed.
func (q *Queue) next() (seg uint64, off int64, ok bool) {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	for !q.closed && q.rSeg == q.wSeg && q.rOff >= q.wSize {
		q.cond.Wait()
	}
	return q.rSeg, q.rOff, !q.closed
}

func (q *Queue) consume(w store.Writer) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-q.stop
		cancel()
	}()
	var (
		r    *os.File
		rSeg uint64
	)
	defer func() {
		if r != nil {
			r.Close()
		}
	}()
	for {
		seg, off, ok := q.next()
		if !ok {
			return
		}
		if r == nil || rSeg != seg {
			if r != nil {
				r.Close()
			}
			f, err := os.Open(filepath.Join(q.opts.Dir, segName(seg)))
			if err != nil {
				q.logger.Error("Opening span queue segment failed", "segment", seg, "err", err)
				if !q.sleep(time.Second) {
					return
				}
				continue
			}
			r, rSeg = f, seg
		}
		td, size, spans, err := readRecord(r, off)
		switch {
		case errors.Is(err, io.EOF):
			// The end of a segment the writer has left: on to the next.
			if !q.finishSegment(seg) {
				if !q.sleep(10 * time.Millisecond) {
					return
				}
			}
			continue
		case err != nil:
			q.logger.Error("Corrupt record in the span queue; skipping the rest of its segment", "segment", seg, "offset", off, "err", err)
			q.spansDropped.WithLabelValues("corrupt").Add(float64(spans))
			q.skipSegment(seg, off)
			continue
		}
		// When more records wait behind this one, they go to the store in
		// the same write: one sync for many requests.
		recs, end, nspans := []ptrace.Traces{td}, off+size, int64(spans)
		for len(recs) < maxMergeRecords && nspans < int64(q.opts.MaxBatchSpans) && q.available(seg, end) {
			next, nsize, ns, err := readRecord(r, end)
			if err != nil {
				break // the next round handles it
			}
			recs = append(recs, next)
			end += nsize
			nspans += int64(ns)
		}
		if !q.storeAll(ctx, w, recs) {
			return
		}
		q.advance(seg, end, nspans, end-off)
	}
}

// maxMergeRecords bounds the records merged into one store write.
const maxMergeRecords = 64

// available says whether a whole record may start at off in seg.
func (q *Queue) available(seg uint64, off int64) bool {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return seg < q.wSeg || off < q.wSize
}

// storeAll writes the records as one batch; if the store refuses it for
// good, each record is written alone so that only the bad ones are dropped.
func (q *Queue) storeAll(ctx context.Context, w store.Writer, recs []ptrace.Traces) bool {
	if len(recs) == 1 {
		return q.store(ctx, w, recs[0])
	}
	merged := ptrace.NewTraces()
	for _, td := range recs {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			td.ResourceSpans().At(i).CopyTo(merged.ResourceSpans().AppendEmpty())
		}
	}
	ok, permanent := q.retry(ctx, w, merged)
	if !ok {
		return false
	}
	if permanent == nil {
		return true
	}
	for _, td := range recs {
		if !q.store(ctx, w, td) {
			return false
		}
	}
	return true
}

// store writes td until it succeeds or fails permanently (then it is
// dropped and counted); false means the queue was closed meanwhile.
func (q *Queue) store(ctx context.Context, w store.Writer, td ptrace.Traces) bool {
	ok, permanent := q.retry(ctx, w, td)
	if permanent != nil {
		q.logger.Error("The span store refused a batch for good; dropping it", "spans", td.SpanCount(), "err", permanent)
		q.spansDropped.WithLabelValues("permanent").Add(float64(td.SpanCount()))
	}
	return ok
}

// retry writes td with exponential backoff until it is stored (ok, nil) or
// refused for good (ok, the error); ok is false when the queue was closed.
func (q *Queue) retry(ctx context.Context, w store.Writer, td ptrace.Traces) (ok bool, permanent error) {
	backoff := q.opts.MinBackoff
	for {
		err := w.WriteTraces(ctx, td)
		if err == nil {
			q.spansStored.Add(float64(td.SpanCount()))
			return true, nil
		}
		if store.IsPermanent(err) {
			return true, err
		}
		q.failures.Inc()
		q.logger.Warn("Writing spans to the store failed; retrying", "spans", td.SpanCount(), "backoff", backoff, "err", err)
		if !q.sleep(backoff) {
			return false, nil
		}
		backoff = min(backoff*2, q.opts.MaxBackoff)
	}
}

func (q *Queue) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-q.stop:
		return false
	case <-t.C:
		return true
	}
}

func readRecord(r *os.File, off int64) (td ptrace.Traces, size int64, spans uint32, err error) {
	hdr := make([]byte, headerLen)
	if _, err := r.ReadAt(hdr, off); err != nil {
		if errors.Is(err, io.EOF) {
			return td, 0, 0, io.EOF
		}
		return td, 0, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	spans = binary.BigEndian.Uint32(hdr[8:12])
	payload := make([]byte, n)
	if _, err := r.ReadAt(payload, off+headerLen); err != nil {
		return td, 0, spans, fmt.Errorf("read record: %w", err)
	}
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
		return td, 0, spans, errors.New("checksum mismatch")
	}
	td, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(payload)
	if err != nil {
		return td, 0, spans, fmt.Errorf("decode record: %w", err)
	}
	return td, headerLen + int64(n), spans, nil
}

func (q *Queue) advance(seg uint64, off, spans, size int64) {
	q.mtx.Lock()
	q.rSeg, q.rOff = seg, off
	q.pendBytes -= size
	q.pendSpans -= spans
	q.mtx.Unlock()
	if err := q.writeCursor(seg, off); err != nil {
		q.logger.Warn("Saving the span queue position failed", "err", err)
	}
}

// finishSegment moves the consumer past a segment it has read to the end,
// and deletes it; false when the writer is still appending to it.
func (q *Queue) finishSegment(seg uint64) bool {
	q.mtx.Lock()
	if seg >= q.wSeg {
		q.mtx.Unlock()
		return false
	}
	q.rSeg, q.rOff = seg+1, 0
	q.mtx.Unlock()
	if err := q.writeCursor(seg+1, 0); err != nil {
		q.logger.Warn("Saving the span queue position failed", "err", err)
	}
	if err := os.Remove(filepath.Join(q.opts.Dir, segName(seg))); err != nil {
		q.logger.Warn("Deleting a stored span queue segment failed", "segment", seg, "err", err)
	}
	return true
}

// skipSegment drops what is left of a segment with a corrupt record.
func (q *Queue) skipSegment(seg uint64, off int64) {
	q.mtx.Lock()
	var size int64
	if seg == q.wSeg {
		size = q.wSize
	} else if st, err := os.Stat(filepath.Join(q.opts.Dir, segName(seg))); err == nil {
		size = st.Size()
	}
	q.pendBytes -= max(size-off, 0)
	q.rOff = max(size, off)
	q.mtx.Unlock()
	if seg == q.wSeg {
		// The writer's own segment: continue after its current end.
		_ = q.writeCursor(seg, size)
		return
	}
	q.finishSegment(seg)
}
