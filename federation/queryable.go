package federation

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/thanos/pkg/query"
)

// RequestOptions are what a single query may choose about the fan-out.
type RequestOptions struct {
	// PartialResponse answers with the endpoints that did answer, and a
	// warning naming each that did not; without it such a query fails.
	PartialResponse bool
	// Dedup merges the series of HA replicas (those differing only in
	// the replica labels) with Thanos' penalty-based deduplication.
	Dedup bool
	// ReplicaLabels, when not nil, are deduplicated on in addition to the
	// federator's own --query.replica-label (a parent pushing a query down
	// sends its own).
	ReplicaLabels []string
}

type requestOptionsKey struct{}

// WithRequestOptions returns a context that makes the federator's
// queryable use opts for the queries run under it.
func WithRequestOptions(ctx context.Context, opts RequestOptions) context.Context {
	return context.WithValue(ctx, requestOptionsKey{}, opts)
}

func requestOptionsFrom(ctx context.Context, defaults RequestOptions) RequestOptions {
	if o, ok := ctx.Value(requestOptionsKey{}).(RequestOptions); ok {
		return o
	}
	return defaults
}

// queryable is the federated view as a Prometheus storage.Queryable, the
// seam where the PromQL engine meets the fan-out: each Select becomes one
// Thanos querier over the federator's store, made with the options of the
// request it serves (carried in the context, since the engine and the
// Prometheus API hand the queryable nothing else of the request).
//
// Aggregation push-down sits above this seam (pushdownEngine decides what
// the leaves evaluate), so this type knows nothing of it.
type queryable struct {
	create        query.QueryableCreator
	replicaLabels []string
	defaults      RequestOptions
}

// replicaLabelsFor are the replica labels of a request with options o.
func (q *queryable) replicaLabelsFor(o RequestOptions) []string {
	if len(o.ReplicaLabels) == 0 {
		return q.replicaLabels
	}
	out := slices.Clone(q.replicaLabels)
	for _, l := range o.ReplicaLabels {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

func (q *queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return &querier{q: q, mint: mint, maxt: maxt}, nil
}

// ChunkQuerier completes what Prometheus' API needs (its remote-read
// endpoint streams chunks through it), from the same series; remote read
// from a federator is not tested yet.
func (q *queryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return &chunkQuerier{querier{q: q, mint: mint, maxt: maxt}}, nil
}

type querier struct {
	q          *queryable
	mint, maxt int64
}

func (qr *querier) thanos(ctx context.Context, skipChunks bool) storage.Querier {
	o := requestOptionsFrom(ctx, qr.q.defaults)
	tq, _ := qr.q.create(o.Dedup, qr.q.replicaLabelsFor(o), nil, 0, o.PartialResponse, skipChunks, nil, query.NoopSeriesStatsReporter).Querier(qr.mint, qr.maxt)
	return tq
}

func (qr *querier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	// The series endpoint needs labels only: leave the chunks at the leaves.
	skipChunks := hints != nil && hints.Func == "series"
	if hints != nil && counterFuncs[hints.Func] {
		// Thanos' querier reads a counter function as a request for the
		// COUNTER aggregate of downsampled data, and for raw chunks applies
		// its counter-reset iterator (thanos-io/thanos#3644): resets()
		// then finds none and rate() differs from Prometheus' in the last
		// digits. The federator always asks for raw data, so the raw
		// samples must reach the engine as they are.
		h := *hints
		h.Func = ""
		hints = &h
	}
	return &seriesSet{SeriesSet: qr.thanos(ctx, skipChunks).Select(ctx, sortSeries, hints, ms...), ctx: ctx}
}

// counterFuncs are the functions Thanos' querier maps to its COUNTER
// aggregate (query.aggrsFromFunc).
var counterFuncs = map[string]bool{"rate": true, "irate": true, "increase": true, "resets": true, "xrate": true, "xincrease": true}

func (qr *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	vals, ws, err := qr.thanos(ctx, true).LabelValues(ctx, name, hints, ms...)
	return vals, ws, contextError(ctx, err)
}

func (qr *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	names, ws, err := qr.thanos(ctx, true).LabelNames(ctx, hints, ms...)
	return names, ws, contextError(ctx, err)
}

// contextError gives an error that came with the request's own deadline
// or cancellation Prometheus' error type for it, so that the API answers
// 503 timeout (or canceled) as Prometheus does, instead of 422.
func contextError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	switch ctx.Err() {
	case context.DeadlineExceeded:
		return fmt.Errorf("%w (%w)", promql.ErrQueryTimeout("expression evaluation"), err)
	case context.Canceled:
		return fmt.Errorf("%w (%w)", promql.ErrQueryCanceled("expression evaluation"), err)
	}
	return err
}

// seriesSet adapts Thanos' lazy series set to what Prometheus' engine and
// API expect: the first Next, which waits for the endpoints, gives up at the
// request's deadline (Thanos' select detaches from the request and keeps its
// own timer), a request past its deadline fails as Prometheus' timeout, and
// the warnings can be asked for before the first Next, as the series
// endpoint does.
type seriesSet struct {
	storage.SeriesSet
	ctx                          context.Context
	started, peeked, peekedValue bool
	abandoned                    bool
}

func (s *seriesSet) Next() bool {
	if s.peeked {
		s.peeked = false
		return s.peekedValue
	}
	if s.abandoned {
		return false
	}
	if !s.started {
		s.started = true
		return s.first()
	}
	return s.SeriesSet.Next()
}

func (s *seriesSet) first() bool {
	done := make(chan bool, 1)
	go func() { done <- s.SeriesSet.Next() }()
	select {
	case ok := <-done:
		return ok
	case <-s.ctx.Done():
		// The set finishes in the background within Thanos' own select
		// timeout; nothing reads it any more.
		s.abandoned = true
		return false
	}
}

func (s *seriesSet) Warnings() annotations.Annotations {
	if !s.started {
		s.started, s.peeked = true, true
		s.peekedValue = s.first()
	}
	if s.abandoned {
		return nil
	}
	return s.SeriesSet.Warnings()
}

func (s *seriesSet) At() storage.Series {
	if s.abandoned {
		return nil
	}
	return s.SeriesSet.At()
}

func (s *seriesSet) Err() error {
	if s.abandoned {
		return contextError(s.ctx, s.ctx.Err())
	}
	return contextError(s.ctx, s.SeriesSet.Err())
}

func (qr *querier) Close() error { return nil }

type chunkQuerier struct{ querier }

func (cq *chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	return storage.NewSeriesSetToChunkSet(cq.querier.Select(ctx, sortSeries, hints, ms...))
}

var (
	_ storage.SampleAndChunkQueryable = (*queryable)(nil)
	_ storage.Querier                 = (*querier)(nil)
	_ storage.ChunkQuerier            = (*chunkQuerier)(nil)
)
