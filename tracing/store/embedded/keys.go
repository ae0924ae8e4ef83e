package embedded

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Every key starts with a table byte. Span and index keys then carry a
// partition number (the span's start time divided by the partition width,
// big-endian uint32), so that retention drops whole partitions with one
// range deletion per table, and a time range query skips partitions that
// cannot hold it.
//
//	'R' P hash(8)                                    → a resource and scope (OTLP protobuf)
//	'S' P trace(16) span(8)                          → 1, hash(8) of its 'R', the span (OTLP protobuf)
//	'A' P str(service) start(8) trace span           → duration(8)   service index
//	'B' P str(service) str(op) start(8) trace span   → duration(8)   operation index
//	'C' P str(service) str(key) str(value) start(8) trace span → duration(8) tag index
//	'V' P str(service)                               → ""            services
//	'W' P str(service) str(op) str(kind)             → ""            operations
//	'L' ts(8)                                        → JSON links    dependencies
//
// str(x) is uvarint(len(x)) followed by x, so names may hold any byte; the
// indexes are only ever scanned by exact prefix, never ordered by name.
const (
	tableResource  byte = 'R'
	tableSpan      byte = 'S'
	tableService   byte = 'A'
	tableOperation byte = 'B'
	tableTag       byte = 'C'
	tableServices  byte = 'V'
	tableOps       byte = 'W'
	tableDeps      byte = 'L'
)

// partitionedTables are the tables retention deletes by partition.
var partitionedTables = []byte{tableResource, tableSpan, tableService, tableOperation, tableTag, tableServices, tableOps}

// keyBuilder appends key parts to a reusable buffer.
type keyBuilder struct{ b []byte }

func newKey(table byte, partition uint32) *keyBuilder {
	k := &keyBuilder{b: make([]byte, 0, 64)}
	k.b = append(k.b, table)
	k.b = binary.BigEndian.AppendUint32(k.b, partition)
	return k
}

// reset starts a new key in the same buffer; callers that hand the key to
// a pebble.Batch may reuse the buffer at once, since the batch copies it.
func (k *keyBuilder) reset(table byte, partition uint32) *keyBuilder {
	k.b = append(k.b[:0], table)
	k.b = binary.BigEndian.AppendUint32(k.b, partition)
	return k
}

func (k *keyBuilder) str(s string) *keyBuilder {
	k.b = binary.AppendUvarint(k.b, uint64(len(s)))
	k.b = append(k.b, s...)
	return k
}

func (k *keyBuilder) u64(v uint64) *keyBuilder {
	k.b = binary.BigEndian.AppendUint64(k.b, v)
	return k
}

func (k *keyBuilder) raw(p []byte) *keyBuilder {
	k.b = append(k.b, p...)
	return k
}

// bytes returns a copy, so the builder can keep growing.
func (k *keyBuilder) bytes() []byte { return append([]byte(nil), k.b...) }

// indexTail is the fixed-size end of every index key: start(8) trace(16) span(8).
const indexTailLen = 8 + 16 + 8

var errShortKey = errors.New("index key too short")

// parseIndexTail reads start, trace ID and span ID from the end of an index key.
func parseIndexTail(key []byte) (start uint64, trace [16]byte, span [8]byte, err error) {
	if len(key) < indexTailLen {
		return 0, trace, span, errShortKey
	}
	tail := key[len(key)-indexTailLen:]
	start = binary.BigEndian.Uint64(tail[:8])
	copy(trace[:], tail[8:24])
	copy(span[:], tail[24:32])
	return start, trace, span, nil
}

// readStr reads one str() part and returns it and the rest.
func readStr(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos is t in Unix nanoseconds, clamped to [0, MaxInt64] so that times
// outside int64 nanoseconds (before 1970, after 2262) do not wrap.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return 0
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// partitioner maps times to partitions.
type partitioner struct{ width time.Duration }

func (p partitioner) of(t uint64) uint32 {
	return uint32(t / uint64(p.width))
}

// bounds is the half-open time range [start, end) of a partition.
func (p partitioner) bounds(part uint32) (start, end uint64) {
	w := uint64(p.width)
	return uint64(part) * w, uint64(part+1) * w
}
