package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// FindTraces walks one index backwards in time, partition by partition,
// newest first: the tag index when the query has an indexed tag (the most
// selective one there is; the resource's service.name is not indexed),
// else the operation index, else the service index. Each
// entry's duration is in the index value; other conditions are checked on
// the span itself, read only when the index cannot decide.
func (s *Store) FindTraces(ctx context.Context, q store.TraceQuery) ([]ptrace.Traces, error) {
	if q.ServiceName == "" {
		return nil, store.Permanent(errors.New("a trace search needs a service name"))
	}
	limit := q.NumTraces
	if limit <= 0 {
		limit = store.DefaultNumTraces
	}
	table, sub := tableService, (&keyBuilder{}).str(q.ServiceName)
	if q.OperationName != "" {
		table, sub = tableOperation, sub.str(q.OperationName)
	}
	// load says whether the index leaves a condition to check on the span.
	load := len(q.Tags) > 0
	tagKeys := make([]string, 0, len(q.Tags))
	for k := range q.Tags {
		tagKeys = append(tagKeys, k)
	}
	slices.Sort(tagKeys)
	for _, k := range tagKeys {
		if v := q.Tags[k]; len(v) <= s.opts.MaxIndexedValueLength && k != "service.name" {
			table, sub = tableTag, (&keyBuilder{}).str(q.ServiceName).str(k).str(v)
			load = len(q.Tags) > 1 || q.OperationName != ""
			break
		}
	}

	lo, hi := uint64(0), uint64(math.MaxUint64)
	if !q.StartTimeMin.IsZero() {
		lo = uint64(nanos(q.StartTimeMin))
	}
	if !q.StartTimeMax.IsZero() {
		if q.StartTimeMax.Before(minTime) {
			return nil, nil
		}
		hi = uint64(nanos(q.StartTimeMax))
	}
	if hi < lo {
		return nil, nil
	}

	var found []pcommon.TraceID
	seen := map[pcommon.TraceID]struct{}{}
	res := s.resources()
	for _, p := range s.livePartitions() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ps, pe := s.part.bounds(p)
		if pe <= lo || ps > hi {
			continue
		}
		prefix := newKey(table, p).raw(sub.b).bytes()
		lower := newKey(table, p).raw(sub.b).u64(lo).bytes()
		var upper []byte
		if hi == math.MaxUint64 {
			upper = prefixEnd(prefix)
		} else {
			upper = newKey(table, p).raw(sub.b).u64(hi + 1).bytes()
		}
		done, err := s.scanIndex(res, p, lower, upper, len(prefix), q, load, seen, &found, limit)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
	}

	out := make([]ptrace.Traces, 0, len(found))
	for _, id := range found {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		td, err := s.getTrace(id, res)
		if errors.Is(err, store.ErrTraceNotFound) {
			continue // deleted by retention meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, td)
	}
	return out, nil
}

// scanIndex walks one partition's index range newest first, adding the
// traces whose span matches; it reports whether the limit was reached.
func (s *Store) scanIndex(res *resources, p uint32, lower, upper []byte, prefixLen int, q store.TraceQuery, load bool, seen map[pcommon.TraceID]struct{}, found *[]pcommon.TraceID, limit int) (bool, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return false, err
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		key := it.Key()
		if len(key) != prefixLen+indexTailLen {
			continue
		}
		_, tid, sid, err := parseIndexTail(key)
		if err != nil {
			continue
		}
		traceID := pcommon.TraceID(tid)
		if _, dup := seen[traceID]; dup {
			continue
		}
		if v := it.Value(); len(v) == 8 {
			d := time.Duration(binary.BigEndian.Uint64(v))
			if d < q.DurationMin || (q.DurationMax > 0 && d > q.DurationMax) {
				continue
			}
		}
		if load {
			match, err := s.spanMatches(res, p, tid, sid, q)
			if err != nil {
				return false, err
			}
			if !match {
				continue
			}
		}
		seen[traceID] = struct{}{}
		*found = append(*found, traceID)
		if len(*found) >= limit {
			return true, nil
		}
	}
	return false, it.Error()
}

func (s *Store) spanMatches(res *resources, p uint32, tid [16]byte, sid [8]byte, q store.TraceQuery) (bool, error) {
	v, closer, err := s.db.Get(newKey(tableSpan, p).raw(tid[:]).raw(sid[:]).b)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	hash, span, err := decodeSpan(v)
	if err != nil {
		return false, err
	}
	rs, err := res.get(p, hash)
	if err != nil {
		return false, err
	}
	return store.Matches(rs.Resource(), span, q), nil
}

// ApplyRetention deletes every partition that ends before now minus the
// retention, with one range deletion per table, and the dependency buckets
// older than that.
func (s *Store) ApplyRetention() error {
	if s.opts.Retention <= 0 {
		return nil
	}
	cutoff := s.opts.Now().Add(-s.opts.Retention).UnixNano()
	if cutoff <= 0 {
		return nil
	}
	cutPart := s.part.of(uint64(cutoff))
	s.mtx.RLock()
	var old int
	for _, p := range s.partitions {
		if p < cutPart {
			old++
		}
	}
	s.mtx.RUnlock()
	if old > 0 {
		b := s.db.NewBatch()
		for _, t := range partitionedTables {
			if err := b.DeleteRange(newKey(t, 0).b, newKey(t, cutPart).b, nil); err != nil {
				b.Close()
				return err
			}
		}
		if err := b.Commit(pebble.Sync); err != nil {
			b.Close()
			return fmt.Errorf("delete expired partitions: %w", err)
		}
		b.Close()
		s.mtx.Lock()
		s.partitions = slices.DeleteFunc(s.partitions, func(p uint32) bool { return p < cutPart })
		clear(s.written)
		s.mtx.Unlock()
		s.deletedPartitions.Add(float64(old))
		s.logger.Info("Deleted expired span partitions", "partitions", old, "before", time.Unix(0, cutoff).UTC())
	}
	depLo := []byte{tableDeps}
	depHi := append([]byte{tableDeps}, binary.BigEndian.AppendUint64(nil, uint64(cutoff))...)
	if err := s.db.DeleteRange(depLo, depHi, pebble.NoSync); err != nil {
		return fmt.Errorf("delete expired dependency buckets: %w", err)
	}
	return nil
}

func (s *Store) retentionLoop() {
	defer close(s.done)
	interval := min(s.opts.PartitionWidth/4, time.Minute)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.ApplyRetention(); err != nil {
				s.logger.Error("Applying span retention failed", "err", err)
			}
		}
	}
}
