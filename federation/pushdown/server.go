package pushdown

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server evaluates pushed-down expressions with a leaf's own PromQL engine.
type Server struct {
	Engine promql.QueryEngine
	// MaxSamples is the leaf's own --query.max-samples, Engine's limit.
	MaxSamples int
	// Limited is an engine like Engine that loads at most maxSamples
	// samples (fewer than MaxSamples), for a request whose MaxSamples is
	// below the leaf's own; nil evaluates every request with Engine.
	Limited func(maxSamples int) promql.QueryEngine
	// Queryable gives the leaf's data as the federator would pull it for
	// req (for a collector: with its external labels, without the replica
	// labels when req.Dedup), and the context to evaluate under.
	Queryable func(ctx context.Context, req *Request) (context.Context, storage.Queryable)
	// Unattached, when not nil, may give for a Parts request, a topk or
	// bottomk, or an answer in JSON, the same series as Queryable without
	// the leaf's external labels attached, and those labels (ok true): the
	// partial sums add them to each group, the winners of topk get them,
	// and the JSON of each sample has them written in, instead of the
	// storage copying every series' labels to attach them.
	// It must answer ok only when no stored series has a label of their
	// names, apply matchers on those names against their values, and
	// sort a sorted selection as if they were attached.
	Unattached func(ctx context.Context, req *Request) (q storage.Queryable, ext labels.Labels, ok bool)
}

// batchSize is how many series go in one response message.
const batchSize = 256

// jsonMessageBytes is about how much JSON one message of an EncodeJSON
// answer holds: batches of series are encoded into it until it is full.
const jsonMessageBytes = 256 << 10

// Eval implements Evaluator.
func (s *Server) Eval(ctx context.Context, req *Request, out Sender) error {
	ctx, q := s.Queryable(ctx, req)
	ext := labels.EmptyLabels()
	keeps, topk := keepsInputLabels(req.Query)
	if s.Unattached != nil {
		if req.Parts || topk != nil || (keeps && req.EncodeJSON && req.StepMs == 0) {
			if uq, l, ok := s.Unattached(ctx, req); ok {
				q, ext = uq, l
			}
		}
	}
	// The smaller of the leaf's limit and the requester's.
	// requested: the limit in force is the requester's.
	engine, requested := s.Engine, false
	if req.MaxSamples > 0 {
		switch {
		case s.MaxSamples > 0 && req.MaxSamples == int64(s.MaxSamples):
			requested = true
		case (s.MaxSamples <= 0 || req.MaxSamples < int64(s.MaxSamples)) && s.Limited != nil:
			engine, requested = s.Limited(int(req.MaxSamples)), true
		}
	}
	if req.StepMs != 0 && (req.StepMs < 0 || req.EndMs < req.StartMs) {
		return status.Errorf(codes.InvalidArgument, "bad range: start %d, end %d, step %d ms", req.StartMs, req.EndMs, req.StepMs)
	}
	var res *promql.Result
	if req.SortSeries && topk != nil {
		// topk or bottomk of a function of each series: k+1 in the
		// storage's order decides without the label order, unless the
		// k-th and the one more tie (topk.go). Anything amiss (an error,
		// a limit, an annotation) leaves it to the evaluation below.
		if oneMore, k, ok := topkOneMore(topk); ok {
			if qry, err := newQuery(ctx, engine, q, req, oneMore); err == nil {
				defer qry.Close()
				if r := qry.Exec(ctx); r.Err == nil && len(r.Warnings) == 0 {
					if v, ok := keepK(r.Value, topk, k); ok {
						res = &promql.Result{Value: v}
					}
				}
			}
		}
	}
	if res == nil {
		if req.SortSeries {
			q = sortedQueryable{q}
		}
		qry, err := newQuery(ctx, engine, q, req, req.Query)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		defer qry.Close()
		res = qry.Exec(ctx)
	}
	if res.Err != nil {
		if requested && errors.As(res.Err, new(promql.ErrTooManySamples)) {
			// Over the requester's limit: the requester fails the query
			// with Prometheus' error, as it would pulling the series.
			return status.Error(codes.ResourceExhausted, res.Err.Error())
		}
		// Anything else, the leaf's own smaller limit included: the
		// requester pulls the series instead.
		return status.Error(codes.Aborted, res.Err.Error())
	}
	for _, w := range res.Warnings {
		// Without the query attached an annotation renders without a
		// position: "PromQL info: …", which the federator recognises.
		if err := out.Send(querypb.NewQueryWarningsResponse(w)); err != nil {
			return err
		}
	}
	if ev, ok := res.Value.(Encoded); ok && req.EncodeJSON {
		// A federator's answer made of its own leaves' JSON: passed on.
		parts, n := ev.EncodedParts()
		for _, p := range parts {
			if len(p) == 0 {
				continue
			}
			if err := out.SendJSON(p, n, !req.SetLabels.IsEmpty()); err != nil {
				return err
			}
			n = 0
		}
		return nil
	}
	_, vector := res.Value.(promql.Vector)
	if !req.Parts && !ext.IsEmpty() && !(vector && req.EncodeJSON) {
		// topk's winners, with the labels they would have had (JSON
		// gets them as it is written).
		switch v := res.Value.(type) {
		case promql.Vector:
			for i := range v {
				v[i].Metric = labelpb.ExtendSortedLabels(v[i].Metric, ext)
			}
		case promql.Matrix:
			for i := range v {
				v[i].Metric = labelpb.ExtendSortedLabels(v[i].Metric, ext)
			}
		}
	}
	if req.Parts {
		parts, err := partialSums(res.Value, req.PartsGrouping, req.PartsWithout, ext)
		if errors.Is(err, ErrNotSummable) {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		for start := 0; start < len(parts); start += batchSize {
			if err := out.Send(&querypb.QueryResponse{Result: &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: parts[start:min(start+batchSize, len(parts))]}}}); err != nil {
				return err
			}
		}
		return nil
	}
	var batch []*prompb.TimeSeries
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := out.Send(&querypb.QueryResponse{Result: &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: batch}}})
		batch = nil
		return err
	}
	add := func(lset labels.Labels, floats []prompb.Sample, hs []prompb.Histogram) error {
		batch = append(batch, &prompb.TimeSeries{Labels: labelpb.ZLabelsFromPromLabels(lset), Samples: floats, Histograms: hs})
		if len(batch) >= batchSize {
			return flush()
		}
		return nil
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		if req.EncodeJSON {
			extra, err := jsonLabels(v, ext, req.SetLabels)
			if err != nil {
				return status.Error(codes.FailedPrecondition, err.Error())
			}
			return sendVectorJSON(out, v, extra, !req.SetLabels.IsEmpty())
		}
		// A batch's series and float samples are each one array: a raw
		// selector's answer is thousands of one-sample series.
		for start := 0; start < len(v); start += batchSize {
			part := v[start:min(start+batchSize, len(v))]
			series := make([]prompb.TimeSeries, len(part))
			floats := make([]prompb.Sample, len(part))
			batch := make([]*prompb.TimeSeries, len(part))
			for i, smp := range part {
				ts := &series[i]
				ts.Labels = labelpb.ZLabelsFromPromLabels(smp.Metric)
				if smp.H == nil {
					floats[i] = prompb.Sample{Value: smp.F, Timestamp: smp.T}
					ts.Samples = floats[i : i+1 : i+1]
				} else {
					ts.Histograms = []prompb.Histogram{prompb.FloatHistogramToHistogramProto(smp.T, smp.H)}
				}
				batch[i] = ts
			}
			if err := out.Send(&querypb.QueryResponse{Result: &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: batch}}}); err != nil {
				return err
			}
		}
		return nil
	case promql.Matrix:
		for _, series := range v {
			f, h := prompb.SamplesFromPromqlSeries(series)
			if err := add(series.Metric, f, h); err != nil {
				return err
			}
		}
	default:
		return status.Errorf(codes.InvalidArgument, "push-down answers vectors, and %q is a %s", req.Query, res.Value.Type())
	}
	return flush()
}

// Encoded is an instant vector already encoded as Sender.SendJSON sends
// it, which Eval passes on as it is: a federator's answer made of its own
// leaves' JSON (Request.EncodeJSON), with the request's SetLabels and the
// federator's own labels written in.
type Encoded interface {
	parser.Value
	EncodedParts() (parts [][]byte, samples int)
}

// jsonLabels are the labels to write into every sample of v's JSON: the
// leaf's external labels ext, when v's series do not have them attached,
// and the requester's labels set, which neither ext nor any sample may
// have already (the requester's would replace it).
func jsonLabels(v promql.Vector, ext, set labels.Labels) (labels.Labels, error) {
	if set.IsEmpty() {
		return ext, nil
	}
	extra, shared := DisjointUnion(ext, set)
	if shared != "" {
		return labels.EmptyLabels(), fmt.Errorf("the label %q to set is an external label of this leaf", shared)
	}
	var err error
	for i := 0; i < len(v) && err == nil; i++ {
		set.Range(func(l labels.Label) {
			if err == nil && v[i].Metric.Has(l.Name) {
				err = fmt.Errorf("a series already has the label %q to set: %s", l.Name, v[i].Metric)
			}
		})
	}
	if err != nil {
		return labels.EmptyLabels(), err
	}
	return extra, nil
}

// DisjointUnion is a and b together, and the first name they share, if
// any (the union then has b's value for it).
func DisjointUnion(a, b labels.Labels) (union labels.Labels, shared string) {
	switch {
	case a.IsEmpty():
		return b, ""
	case b.IsEmpty():
		return a, ""
	}
	u := labels.NewBuilder(a)
	b.Range(func(l labels.Label) {
		if shared == "" && a.Has(l.Name) {
			shared = l.Name
		}
		u.Set(l.Name, l.Value)
	})
	return u.Labels(), shared
}

// newQuery is req's instant or range query of query over q.
func newQuery(ctx context.Context, engine promql.QueryEngine, q storage.Queryable, req *Request, query string) (promql.Query, error) {
	opts := promql.NewPrometheusQueryOpts(false, time.Duration(req.LookbackMs)*time.Millisecond)
	if req.StepMs == 0 {
		return engine.NewInstantQuery(ctx, q, opts, query, time.UnixMilli(req.StartMs))
	}
	return engine.NewRangeQuery(ctx, q, opts, query, time.UnixMilli(req.StartMs), time.UnixMilli(req.EndMs), time.Duration(req.StepMs)*time.Millisecond)
}

// keepsInputLabels tells whether every series of query's answer has the
// labels of a series of its input, some perhaps dropped (the metric name)
// but none added, changed or read by name: a selector, functions of each
// series, arithmetic and comparison with numbers, or topk or bottomk (with
// a number for k) of those (topk, that aggregation). Labels that every
// input series has can
// then be added to the answer instead: to the few winners of topk, or as
// the answer is encoded as JSON; an expression of single series answered
// as series would have as many copied as go in.
func keepsInputLabels(query string) (keeps bool, topk *parser.AggregateExpr) {
	e, err := parser.ParseExpr(query)
	if err != nil {
		return false, nil
	}
	e = Unparen(e)
	if a, ok := e.(*parser.AggregateExpr); ok && (a.Op == parser.TOPK || a.Op == parser.BOTTOMK) {
		if _, ok := Unparen(a.Param).(*parser.NumberLiteral); !ok {
			return false, nil
		}
		e, topk = a.Expr, a
	}
	keeps = true
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector, *parser.MatrixSelector, *parser.NumberLiteral, *parser.ParenExpr, *parser.SubqueryExpr, *parser.StepInvariantExpr, parser.Expressions:
		case *parser.UnaryExpr, nil:
		case *parser.BinaryExpr:
			// Between a vector and a number only.
			_, l := Unparen(n.LHS).(*parser.NumberLiteral)
			_, r := Unparen(n.RHS).(*parser.NumberLiteral)
			keeps = keeps && (l || r)
		case *parser.Call:
			keeps = keeps && !readsLabels[n.Func.Name] && n.Func.ReturnType == parser.ValueTypeVector
		default:
			keeps = false
		}
		return nil
	})
	if !keeps {
		return false, nil
	}
	return true, topk
}

// readsLabels are the functions whose answer's labels are not their input
// series' (or which read labels by name).
var readsLabels = map[string]bool{
	"label_replace": true, "label_join": true, "sort_by_label": true, "sort_by_label_desc": true,
	"absent": true, "absent_over_time": true, "vector": true, "info": true,
}

// Unparen is e without the parentheses around it.
func Unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// IsTooManySamples tells whether err, from Call, is a leaf's refusal to
// load more samples than the request's MaxSamples: the query is over the
// requester's --query.max-samples, and fails with
// promql.ErrTooManySamples as it would without push-down.
func IsTooManySamples(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), tooManySamplesPrefix)
}

// tooManySamplesPrefix is the start of promql.ErrTooManySamples' message.
var tooManySamplesPrefix = strings.TrimSuffix(promql.ErrTooManySamples("").Error(), " ")

// Engines are Prometheus engines that differ only in their sample limit,
// made on first use from one set of options (those of the leaf's own
// engine; its registerer is left out, as the own engine already exports
// the metrics, and its query tracker is shared, so that
// --query.max-concurrency counts them all). A leaf has few of them: one
// per distinct --query.max-samples of the federators above it.
type Engines struct {
	opts promql.EngineOpts
	mu   sync.Mutex
	m    map[int]*promql.Engine
}

// maxCachedEngines bounds Engines: past it, an engine is made per request.
const maxCachedEngines = 16

// NewEngines makes engines with opts but for MaxSamples.
func NewEngines(opts promql.EngineOpts) *Engines {
	opts.Reg = nil
	return &Engines{opts: opts, m: map[int]*promql.Engine{}}
}

// Get is the engine whose limit is maxSamples.
func (e *Engines) Get(maxSamples int) promql.QueryEngine {
	e.mu.Lock()
	defer e.mu.Unlock()
	if eng, ok := e.m[maxSamples]; ok {
		return eng
	}
	opts := e.opts
	opts.MaxSamples = maxSamples
	eng := promql.NewEngine(opts)
	if len(e.m) < maxCachedEngines {
		e.m[maxSamples] = eng
	}
	return eng
}

// sortedQueryable selects series in label order.
type sortedQueryable struct{ storage.Queryable }

func (s sortedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := s.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return sortedQuerier{q}, nil
}

type sortedQuerier struct{ storage.Querier }

func (s sortedQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return s.Querier.Select(ctx, true, hints, ms...)
}

// WithoutLabels is q with the names dropped from every series: a leaf's
// data as a federator deduplicating on those replica labels sees it.
func WithoutLabels(q storage.Queryable, names []string) storage.Queryable {
	if len(names) == 0 {
		return q
	}
	return &withoutLabels{Queryable: q, names: names}
}

type withoutLabels struct {
	storage.Queryable
	names []string
}

func (w *withoutLabels) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := w.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &withoutLabelsQuerier{Querier: q, names: w.names}, nil
}

type withoutLabelsQuerier struct {
	storage.Querier
	names []string
}

func (w *withoutLabelsQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return &withoutLabelsSet{SeriesSet: w.Querier.Select(ctx, sortSeries, hints, ms...), names: w.names}
}

type withoutLabelsSet struct {
	storage.SeriesSet
	names []string
}

func (s *withoutLabelsSet) At() storage.Series {
	series := s.SeriesSet.At()
	return &withoutLabelsSeries{Series: series, lset: labels.NewBuilder(series.Labels()).Del(s.names...).Labels()}
}

type withoutLabelsSeries struct {
	storage.Series
	lset labels.Labels
}

func (s *withoutLabelsSeries) Labels() labels.Labels { return s.lset }

// IsPromQLAnnotation tells a PromQL info or warning, as a leaf sends it,
// from a storage warning (an endpoint left out of a partial response).
func IsPromQLAnnotation(w string) bool {
	for _, p := range []error{annotations.PromQLInfo, annotations.PromQLWarning} {
		if len(w) > len(p.Error()) && w[:len(p.Error())] == p.Error() {
			return true
		}
	}
	return false
}

var _ Evaluator = (*Server)(nil)
