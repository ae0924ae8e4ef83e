// Package embedded is the span store that needs nothing installed: spans,
// their indexes and the dependency links in a Pebble LSM tree on local disk.
//
// Pebble (CockroachDB's storage engine) is pure Go, compresses its blocks,
// and deletes a key range with one tombstone, which makes retention by age
// cheap when keys are partitioned by time; unlike Badger it keeps values in
// the LSM itself, so there is no value log to garbage-collect.
package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Options configure the embedded store.
type Options struct {
	// Dir holds the database; it is created when missing.
	Dir string
	// Retention is how long spans (by start time) and dependency buckets
	// are kept; zero keeps them forever.
	Retention time.Duration
	// PartitionWidth is the time span of one partition. Zero derives it
	// from Retention: a twelfth of it, between one hour and one day.
	PartitionWidth time.Duration
	// MaxIndexedValueLength is the longest attribute value (as a string)
	// written to the tag index; longer ones are still matched, by reading
	// the spans of the service. Zero means 256.
	MaxIndexedValueLength int
	// Now is the clock retention uses (time.Now when nil).
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.PartitionWidth <= 0 {
		w := o.Retention / 12
		w = w.Truncate(time.Hour)
		w = max(w, time.Hour)
		if w > 24*time.Hour || o.Retention == 0 {
			w = 24 * time.Hour
		}
		o.PartitionWidth = w
	}
	if o.MaxIndexedValueLength <= 0 {
		o.MaxIndexedValueLength = 256
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store is the embedded span store.
type Store struct {
	db     *pebble.DB
	opts   Options
	part   partitioner
	logger *slog.Logger

	mtx        sync.RWMutex
	partitions []uint32            // sorted, partitions holding spans
	written    map[string]struct{} // 'V' and 'W' keys already written

	stop     chan struct{}
	done     chan struct{}
	closeMtx sync.Mutex
	closed   bool

	deletedPartitions prometheus.Counter
}

var _ store.Store = (*Store)(nil)

// Open opens (or creates) the store in opts.Dir and starts its retention
// loop when opts.Retention is set. reg may be nil.
func Open(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	opts.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	popts := &pebble.Options{
		Logger: pebbleLogger{logger},
		// Spans arrive in large batches and are rarely updated: bigger
		// memtables and a bigger base level mean fewer, larger flushes and
		// less rewriting by compactions.
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		LBaseMaxBytes:               512 << 20,
	}
	popts.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionBalanced })
	db, err := pebble.Open(opts.Dir, popts)
	if err != nil {
		return nil, fmt.Errorf("open span store in %s: %w", opts.Dir, err)
	}
	s := &Store{
		db:      db,
		opts:    opts,
		part:    partitioner{opts.PartitionWidth},
		logger:  logger,
		written: map[string]struct{}{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		deletedPartitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_store_partitions_deleted_total",
			Help: "Time partitions of the embedded span store deleted by retention.",
		}),
	}
	if reg != nil {
		if err := reg.Register(s.deletedPartitions); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.loadPartitions(); err != nil {
		db.Close()
		return nil, err
	}
	if opts.Retention > 0 {
		if err := s.ApplyRetention(); err != nil {
			db.Close()
			return nil, err
		}
		go s.retentionLoop()
	} else {
		close(s.done)
	}
	return s, nil
}

// loadPartitions finds the partitions holding spans by skipping from one
// partition to the next in the span table.
func (s *Store) loadPartitions() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tableSpan}, UpperBound: []byte{tableSpan + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var parts []uint32
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < 5 {
			ok = it.Next()
			continue
		}
		p := binary.BigEndian.Uint32(k[1:5])
		parts = append(parts, p)
		if p == ^uint32(0) {
			break
		}
		ok = it.SeekGE(newKey(tableSpan, p+1).bytes())
	}
	s.partitions = parts
	return it.Error()
}

func (s *Store) addPartition(p uint32) {
	s.mtx.RLock()
	_, found := slices.BinarySearch(s.partitions, p)
	s.mtx.RUnlock()
	if found {
		return
	}
	s.mtx.Lock()
	if i, found := slices.BinarySearch(s.partitions, p); !found {
		s.partitions = slices.Insert(s.partitions, i, p)
	}
	s.mtx.Unlock()
}

// livePartitions returns the partitions newest first.
func (s *Store) livePartitions() []uint32 {
	s.mtx.RLock()
	defer s.mtx.RUnlock()
	out := slices.Clone(s.partitions)
	slices.Reverse(out)
	return out
}

// WriteTraces stores every span with its index entries in one synced batch.
func (s *Store) WriteTraces(_ context.Context, td ptrace.Traces) error {
	b := s.db.NewBatch()
	defer b.Close()
	w := &spanWriter{b: b, batchMarkers: map[string]struct{}{}, holder: newHolder()}
	parts := map[uint32]struct{}{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		svc := store.ServiceName(rs.Resource())
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			res, err := encodeResource(rs, ss)
			if err != nil {
				return store.Permanent(fmt.Errorf("encode resource: %w", err))
			}
			for k := 0; k < ss.Spans().Len(); k++ {
				span := ss.Spans().At(k)
				if span.TraceID().IsEmpty() || span.SpanID().IsEmpty() {
					return store.Permanent(fmt.Errorf("span %q of service %q has an empty trace or span ID", span.Name(), svc))
				}
				if err := s.writeSpan(w, rs, res, span, svc); err != nil {
					return err
				}
				parts[s.part.of(uint64(span.StartTimestamp()))] = struct{}{}
			}
		}
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("commit spans: %w", err)
	}
	for p := range parts {
		s.addPartition(p)
	}
	s.mtx.Lock()
	if len(s.written) > 100_000 {
		clear(s.written)
	}
	for m := range w.batchMarkers {
		s.written[m] = struct{}{}
	}
	s.mtx.Unlock()
	return nil
}

// spanWriter is the state of one WriteTraces call.
type spanWriter struct {
	b *pebble.Batch
	// batchMarkers are the resource, service and operation keys set in
	// this batch (recorded in Store.written once it is committed).
	batchMarkers map[string]struct{}
	holder       ptrace.Traces
}

// setOnce sets a marker-like key unless this batch or an earlier one did.
func (s *Store) setOnce(w *spanWriter, k, v []byte) error {
	if _, done := w.batchMarkers[string(k)]; done {
		return nil
	}
	s.mtx.RLock()
	_, done := s.written[string(k)]
	s.mtx.RUnlock()
	if done {
		return nil
	}
	w.batchMarkers[string(k)] = struct{}{}
	return w.b.Set(k, v, nil)
}

func (s *Store) writeSpan(w *spanWriter, rs ptrace.ResourceSpans, res resourceRecord, span ptrace.Span, svc string) error {
	b := w.b
	start := uint64(span.StartTimestamp())
	p := s.part.of(start)
	tid, sid := span.TraceID(), span.SpanID()
	if err := s.setOnce(w, newKey(tableResource, p).u64(res.hash).b, res.data); err != nil {
		return err
	}
	val, err := encodeSpan(w.holder, res.hash, span)
	if err != nil {
		return store.Permanent(fmt.Errorf("encode span: %w", err))
	}
	if err := b.Set(newKey(tableSpan, p).raw(tid[:]).raw(sid[:]).b, val, nil); err != nil {
		return err
	}
	var dur [8]byte
	binary.BigEndian.PutUint64(dur[:], uint64(store.SpanDuration(span)))
	tail := make([]byte, 0, indexTailLen)
	tail = binary.BigEndian.AppendUint64(tail, start)
	tail = append(tail, tid[:]...)
	tail = append(tail, sid[:]...)

	kb := &keyBuilder{b: make([]byte, 0, 128)}
	set := func(k *keyBuilder) error { return b.Set(k.raw(tail).b, dur[:], nil) }
	if err := set(kb.reset(tableService, p).str(svc)); err != nil {
		return err
	}
	if err := set(kb.reset(tableOperation, p).str(svc).str(span.Name())); err != nil {
		return err
	}
	seen := make(map[[2]string]struct{}, span.Attributes().Len()+4)
	indexTag := func(k, v string) error {
		if len(v) > s.opts.MaxIndexedValueLength {
			return nil
		}
		if _, dup := seen[[2]string{k, v}]; dup {
			return nil
		}
		seen[[2]string{k, v}] = struct{}{}
		return set(kb.reset(tableTag, p).str(svc).str(k).str(v))
	}
	var ierr error
	indexMap := func(m pcommon.Map) {
		m.Range(func(k string, v pcommon.Value) bool {
			ierr = indexTag(k, v.AsString())
			return ierr == nil
		})
	}
	for k, v := range store.SyntheticTags(span) {
		if err := indexTag(k, v); err != nil {
			return err
		}
	}
	indexMap(span.Attributes())
	if ierr == nil {
		// service.name is in every key already; FindTraces checks a
		// service.name tag on the span instead.
		rs.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
			if k != "service.name" {
				ierr = indexTag(k, v.AsString())
			}
			return ierr == nil
		})
	}
	for i := 0; i < span.Events().Len() && ierr == nil; i++ {
		indexMap(span.Events().At(i).Attributes())
	}
	if ierr != nil {
		return ierr
	}

	for _, k := range [][]byte{
		newKey(tableServices, p).str(svc).b,
		newKey(tableOps, p).str(svc).str(span.Name()).str(store.KindName(span.Kind())).b,
	} {
		if err := s.setOnce(w, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// resourceRecord is a resource with an instrumentation scope, stored once
// per partition under its hash; spans refer to it.
type resourceRecord struct {
	hash uint64
	data []byte
}

// encodeResource encodes the resource and scope of spans as an OTLP request
// with one ResourceSpans and one ScopeSpans and no span.
func encodeResource(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) (resourceRecord, error) {
	td := ptrace.NewTraces()
	nrs := td.ResourceSpans().AppendEmpty()
	rs.Resource().CopyTo(nrs.Resource())
	nrs.SetSchemaUrl(rs.SchemaUrl())
	nss := nrs.ScopeSpans().AppendEmpty()
	ss.Scope().CopyTo(nss.Scope())
	nss.SetSchemaUrl(ss.SchemaUrl())
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return resourceRecord{}, err
	}
	h := fnv.New64a()
	h.Write(b)
	return resourceRecord{hash: h.Sum64(), data: b}, nil
}

// spanFormat is the first byte of a stored span: then the hash of its
// resource record (8 bytes) and an OTLP request holding only the span.
const spanFormat = 1

// newHolder returns the reusable one-span request encodeSpan fills.
func newHolder() ptrace.Traces {
	td := ptrace.NewTraces()
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	return td
}

func encodeSpan(holder ptrace.Traces, resHash uint64, span ptrace.Span) ([]byte, error) {
	spans := holder.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.RemoveIf(func(ptrace.Span) bool { return true })
	span.CopyTo(spans.AppendEmpty())
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(holder)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 9+len(b))
	out = append(out, spanFormat)
	out = binary.BigEndian.AppendUint64(out, resHash)
	return append(out, b...), nil
}

// decodeSpan returns the hash of the span's resource record and the span.
func decodeSpan(b []byte) (uint64, ptrace.Span, error) {
	if len(b) < 9 || b[0] != spanFormat {
		return 0, ptrace.Span{}, errors.New("decode stored span: unknown format")
	}
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b[9:])
	if err != nil {
		return 0, ptrace.Span{}, fmt.Errorf("decode stored span: %w", err)
	}
	if td.ResourceSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().Len() != 1 {
		return 0, ptrace.Span{}, errors.New("decode stored span: not exactly one span")
	}
	return binary.BigEndian.Uint64(b[1:9]), td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0), nil
}

// resources reads resource records, each once.
type resources struct {
	s     *Store
	cache map[[12]byte]ptrace.ResourceSpans
}

func (s *Store) resources() *resources {
	return &resources{s: s, cache: map[[12]byte]ptrace.ResourceSpans{}}
}

// get returns the record of partition p as a ResourceSpans holding one
// ScopeSpans without spans; a missing record (its partition expired while
// the span was written) gives an empty resource and scope.
func (r *resources) get(p uint32, hash uint64) (ptrace.ResourceSpans, error) {
	var k [12]byte
	binary.BigEndian.PutUint32(k[:4], p)
	binary.BigEndian.PutUint64(k[4:], hash)
	if rs, ok := r.cache[k]; ok {
		return rs, nil
	}
	rs := ptrace.NewResourceSpans()
	v, closer, err := r.s.db.Get(newKey(tableResource, p).u64(hash).b)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		rs.ScopeSpans().AppendEmpty()
	case err != nil:
		return rs, err
	default:
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(v)
		closer.Close()
		if err != nil || td.ResourceSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().Len() != 1 {
			return rs, fmt.Errorf("decode stored resource: %v", err)
		}
		td.ResourceSpans().At(0).MoveTo(rs)
	}
	r.cache[k] = rs
	return rs, nil
}

// GetTrace reads the trace's spans with one prefix scan per partition;
// spans of the same resource and scope come back in one ResourceSpans.
func (s *Store) GetTrace(_ context.Context, id pcommon.TraceID) (ptrace.Traces, error) {
	return s.getTrace(id, s.resources())
}

// getTrace reads trace id with the resource records of res, which a
// search shares between the traces it returns (they hold spans of the same
// few resources, each otherwise read and decoded once per trace).
func (s *Store) getTrace(id pcommon.TraceID, res *resources) (ptrace.Traces, error) {
	out := ptrace.NewTraces()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tableSpan}, UpperBound: []byte{tableSpan + 1}})
	if err != nil {
		return out, err
	}
	defer it.Close()
	groups := map[[12]byte]ptrace.SpanSlice{}
	for _, p := range s.livePartitions() {
		prefix := newKey(tableSpan, p).raw(id[:]).bytes()
		for ok := it.SeekGE(prefix); ok && hasPrefix(it.Key(), prefix); ok = it.Next() {
			hash, span, err := decodeSpan(it.Value())
			if err != nil {
				return out, err
			}
			var k [12]byte
			binary.BigEndian.PutUint32(k[:4], p)
			binary.BigEndian.PutUint64(k[4:], hash)
			spans, ok := groups[k]
			if !ok {
				rec, err := res.get(p, hash)
				if err != nil {
					return out, err
				}
				rs := out.ResourceSpans().AppendEmpty()
				rec.CopyTo(rs)
				spans = rs.ScopeSpans().At(0).Spans()
				groups[k] = spans
			}
			span.MoveTo(spans.AppendEmpty())
		}
	}
	if err := it.Error(); err != nil {
		return out, err
	}
	if out.SpanCount() == 0 {
		return out, store.ErrTraceNotFound
	}
	return out, nil
}

func hasPrefix(k, p []byte) bool {
	return len(k) >= len(p) && string(k[:len(p)]) == string(p)
}

// GetServices lists the services of every live partition.
func (s *Store) GetServices(context.Context) ([]string, error) {
	set := map[string]struct{}{}
	err := s.scanMarkers(tableServices, nil, func(rest []byte) {
		if svc, _, ok := readStr(rest); ok {
			set[svc] = struct{}{}
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(set))
	for svc := range set {
		out = append(out, svc)
	}
	slices.Sort(out)
	return out, nil
}

// GetOperations lists a service's operations of every live partition.
func (s *Store) GetOperations(_ context.Context, q store.OperationQuery) ([]store.Operation, error) {
	kind := q.SpanKind
	if kind == "unspecified" {
		kind = ""
	}
	set := map[store.Operation]struct{}{}
	svcPrefix := (&keyBuilder{}).str(q.ServiceName).b
	err := s.scanMarkers(tableOps, svcPrefix, func(rest []byte) {
		op, rest, ok := readStr(rest)
		if !ok {
			return
		}
		k, _, ok := readStr(rest)
		if !ok {
			return
		}
		if q.SpanKind != "" && k != kind {
			return
		}
		set[store.Operation{Name: op, SpanKind: k}] = struct{}{}
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.Operation, 0, len(set))
	for op := range set {
		out = append(out, op)
	}
	slices.SortFunc(out, func(a, b store.Operation) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		if a.SpanKind < b.SpanKind {
			return -1
		}
		if a.SpanKind > b.SpanKind {
			return 1
		}
		return 0
	})
	return out, nil
}

// scanMarkers calls f with the rest of every key of table (after the
// partition and sub) in every live partition.
func (s *Store) scanMarkers(table byte, sub []byte, f func(rest []byte)) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{table}, UpperBound: []byte{table + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for _, p := range s.livePartitions() {
		prefix := newKey(table, p).raw(sub).bytes()
		for ok := it.SeekGE(prefix); ok && hasPrefix(it.Key(), prefix); ok = it.Next() {
			f(it.Key()[len(prefix):])
		}
	}
	return it.Error()
}

// WriteDependencies replaces the bucket that ends at ts.
func (s *Store) WriteDependencies(_ context.Context, ts time.Time, links []store.DependencyLink) error {
	if links == nil {
		links = []store.DependencyLink{}
	}
	v, err := json.Marshal(links)
	if err != nil {
		return store.Permanent(err)
	}
	k := append([]byte{tableDeps}, binary.BigEndian.AppendUint64(nil, uint64(ts.UnixNano()))...)
	return s.db.Set(k, v, pebble.Sync)
}

// GetDependencies sums the buckets in (endTs-lookback, endTs].
func (s *Store) GetDependencies(_ context.Context, endTs time.Time, lookback time.Duration) ([]store.DependencyLink, error) {
	lo := nanos(endTs.Add(-lookback))
	if lo < math.MaxInt64 {
		lo++
	}
	hi := nanos(endTs)
	if hi < math.MaxInt64 {
		hi++
	}
	if hi <= lo {
		return []store.DependencyLink{}, nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: append([]byte{tableDeps}, binary.BigEndian.AppendUint64(nil, uint64(lo))...),
		UpperBound: append([]byte{tableDeps}, binary.BigEndian.AppendUint64(nil, uint64(hi))...),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	sums := map[[2]string]uint64{}
	for ok := it.First(); ok; ok = it.Next() {
		var links []store.DependencyLink
		if err := json.Unmarshal(it.Value(), &links); err != nil {
			return nil, fmt.Errorf("decode dependency bucket: %w", err)
		}
		for _, l := range links {
			sums[[2]string{l.Parent, l.Child}] += l.CallCount
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	out := make([]store.DependencyLink, 0, len(sums))
	for k, n := range sums {
		out = append(out, store.DependencyLink{Parent: k[0], Child: k[1], CallCount: n})
	}
	slices.SortFunc(out, func(a, b store.DependencyLink) int {
		if a.Parent != b.Parent {
			if a.Parent < b.Parent {
				return -1
			}
			return 1
		}
		if a.Child < b.Child {
			return -1
		}
		if a.Child > b.Child {
			return 1
		}
		return 0
	})
	return out, nil
}

// Close stops retention and closes the database.
func (s *Store) Close() error {
	s.closeMtx.Lock()
	defer s.closeMtx.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	<-s.done
	// Flush the memtables so that the write-ahead logs behind them are
	// deleted: a closed store holds only compressed tables (and opens
	// without replaying logs).
	ferr := s.db.Flush()
	return errors.Join(ferr, s.db.Close())
}

// pebbleLogger sends Pebble's messages to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}
