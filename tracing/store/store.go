// Package store defines the span storage interface that every trace store
// implements (the embedded store, Elasticsearch) and the query types the
// Jaeger-compatible API issues against it.
//
// Spans stay in OpenTelemetry pdata from receipt to storage: writers take
// ptrace.Traces, readers return ptrace.Traces.
package store

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ErrTraceNotFound is returned by GetTrace when no span of the trace is stored.
var ErrTraceNotFound = errors.New("trace not found")

// Store is a span store. Implementations are safe for concurrent use.
type Store interface {
	Writer
	Reader
	DependencyStore
	// Close flushes and releases resources.
	Close() error
}

// Writer stores spans.
type Writer interface {
	// WriteTraces stores every span of td. It is idempotent: a span is
	// identified by its trace ID and span ID, and writing it again replaces
	// it rather than duplicating it, so a caller may retry a whole batch.
	// It returns nil only when every span is durably stored; an error wrapped
	// with Permanent means retrying the same input cannot succeed.
	WriteTraces(ctx context.Context, td ptrace.Traces) error
}

// Reader answers the queries of the Jaeger query API.
type Reader interface {
	// GetTrace returns every stored span of the trace, or ErrTraceNotFound.
	GetTrace(ctx context.Context, id pcommon.TraceID) (ptrace.Traces, error)
	// GetServices returns the names of every service with stored spans,
	// sorted.
	GetServices(ctx context.Context) ([]string, error)
	// GetOperations returns the operations (span names) of a service, sorted
	// by name then kind. An empty SpanKind in the query means every kind.
	GetOperations(ctx context.Context, q OperationQuery) ([]Operation, error)
	// FindTraces returns whole traces (every stored span of each) that have
	// at least one span matching every condition of q, most recent first
	// (by the start time of the newest matching span), at most q.NumTraces.
	FindTraces(ctx context.Context, q TraceQuery) ([]ptrace.Traces, error)
}

// DependencyStore keeps the service dependency links derived from spans (the
// service graph), in time buckets, for /api/dependencies.
type DependencyStore interface {
	// WriteDependencies records the call counts observed in the bucket that
	// ends at ts. Writing the same ts again replaces that bucket.
	WriteDependencies(ctx context.Context, ts time.Time, links []DependencyLink) error
	// GetDependencies sums the buckets whose ts lies in (endTs-lookback,
	// endTs], one link per (parent, child) pair, sorted by parent then child.
	GetDependencies(ctx context.Context, endTs time.Time, lookback time.Duration) ([]DependencyLink, error)
}

// OperationQuery selects the operations of one service.
type OperationQuery struct {
	ServiceName string
	// SpanKind is one of "", "unspecified", "internal", "server", "client",
	// "producer", "consumer" (Jaeger's lower-case names).
	SpanKind string
}

// Operation is a span name with the kind of the spans that carry it.
type Operation struct {
	Name     string
	SpanKind string // Jaeger's lower-case name; "" for unspecified
}

// TraceQuery is the search of Jaeger's /api/traces. Every set field must hold
// for one and the same span.
type TraceQuery struct {
	ServiceName   string // required
	OperationName string // optional: the span name
	// Tags match span attributes, resource attributes, or event
	// attributes of the span (Jaeger semantics); values compare as strings
	// (an int attribute 200 matches "200", a bool true matches "true").
	// The special keys "error", "span.kind", "otel.status_code" match the
	// span's status and kind as Jaeger renders them.
	Tags         map[string]string
	StartTimeMin time.Time // inclusive; zero means unbounded
	StartTimeMax time.Time // inclusive; zero means unbounded
	DurationMin  time.Duration
	DurationMax  time.Duration // zero means unbounded
	NumTraces    int           // zero means the store's default (20)
}

// DependencyLink is Jaeger's model.DependencyLink.
type DependencyLink struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

// DefaultNumTraces is the number of traces FindTraces returns when the query
// does not say.
const DefaultNumTraces = 20

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that IsPermanent reports true for it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked with
// Permanent. The durable queue drops, and counts, batches that fail
// permanently, and retries every other error with backoff.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
