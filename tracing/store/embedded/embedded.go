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
	var newMarkers []string
	parts := map[uint32]struct{}{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		svc := store.ServiceName(rs.Resource())
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				span := ss.Spans().At(k)
				if span.TraceID().IsEmpty() || span.SpanID().IsEmpty() {
					return store.Permanent(fmt.Errorf("span %q of service %q has an empty trace or span ID", span.Name(), svc))
				}
				m, err := s.writeSpan(b, rs, ss, span, svc)
				if err != nil {
					return err
				}
				newMarkers = append(newMarkers, m...)
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
	for _, m := range newMarkers {
		s.written[m] = struct{}{}
	}
	s.mtx.Unlock()
	return nil
}

func (s *Store) writeSpan(b *pebble.Batch, rs ptrace.ResourceSpans, ss ptrace.ScopeSpans, span ptrace.Span, svc string) ([]string, error) {
	start := uint64(span.StartTimestamp())
	p := s.part.of(start)
	tid, sid := span.TraceID(), span.SpanID()
	val, err := encodeSpan(rs, ss, span)
	if err != nil {
		return nil, store.Permanent(fmt.Errorf("encode span: %w", err))
	}
	if err := b.Set(newKey(tableSpan, p).raw(tid[:]).raw(sid[:]).b, val, nil); err != nil {
		return nil, err
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
		return nil, err
	}
	if err := set(kb.reset(tableOperation, p).str(svc).str(span.Name())); err != nil {
		return nil, err
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
			return nil, err
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
		return nil, ierr
	}

	var markers []string
	for _, k := range [][]byte{
		newKey(tableServices, p).str(svc).b,
		newKey(tableOps, p).str(svc).str(span.Name()).str(store.KindName(span.Kind())).b,
	} {
		s.mtx.RLock()
		_, done := s.written[string(k)]
		s.mtx.RUnlock()
		if done {
			continue
		}
		if err := b.Set(k, nil, nil); err != nil {
			return nil, err
		}
		markers = append(markers, string(k))
	}
	return markers, nil
}

// encodeSpan stores a span as a one-span OTLP request, with its resource
// and scope.
func encodeSpan(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans, span ptrace.Span) ([]byte, error) {
	td := ptrace.NewTraces()
	nrs := td.ResourceSpans().AppendEmpty()
	rs.Resource().CopyTo(nrs.Resource())
	nrs.SetSchemaUrl(rs.SchemaUrl())
	nss := nrs.ScopeSpans().AppendEmpty()
	ss.Scope().CopyTo(nss.Scope())
	nss.SetSchemaUrl(ss.SchemaUrl())
	span.CopyTo(nss.Spans().AppendEmpty())
	return (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
}

func decodeSpan(b []byte) (ptrace.Traces, error) {
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b)
	if err != nil {
		return td, fmt.Errorf("decode stored span: %w", err)
	}
	if td.ResourceSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().Len() != 1 || td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().Len() != 1 {
		return td, errors.New("decode stored span: not exactly one span")
	}
	return td, nil
}

// GetTrace reads the trace's spans with one prefix scan per partition.
func (s *Store) GetTrace(_ context.Context, id pcommon.TraceID) (ptrace.Traces, error) {
	out := ptrace.NewTraces()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tableSpan}, UpperBound: []byte{tableSpan + 1}})
	if err != nil {
		return out, err
	}
	defer it.Close()
	for _, p := range s.livePartitions() {
		prefix := newKey(tableSpan, p).raw(id[:]).bytes()
		for ok := it.SeekGE(prefix); ok && hasPrefix(it.Key(), prefix); ok = it.Next() {
			td, err := decodeSpan(it.Value())
			if err != nil {
				return out, err
			}
			td.ResourceSpans().MoveAndAppendTo(out.ResourceSpans())
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
	return s.db.Close()
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
