package federation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/stats"
	"github.com/thanos-io/thanos/pkg/api/query/querypb"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb/prompb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/panorama-obs/panorama/federation/pushdown"
	"github.com/panorama-obs/panorama/internal/labelsort"
)

// pushdownEngine is the federator's PromQL engine: Prometheus' own, plus
// aggregation push-down. For each query it looks for aggregations whose
// input comes from one selector through per-series functions only
// (`sum by (job) (rate(x[5m]))`), asks every leaf that can hold matching
// series to evaluate that aggregation over its own data at the query's own
// timestamps, and has Prometheus' engine evaluate the rest of the query
// with each such aggregation replaced by the re-aggregation of the leaves'
// answers (sum of sums, sum of counts, min of mins, topk of topks, sum ÷
// count for avg). The leaves' answers reach the engine as series with a
// sample at every step where the leaf had a value and a staleness marker at
// every other step, so that the engine's lookback sees exactly the leaf's
// answer.
//
// Push-down is only tried when it cannot change the answer: every leaf that
// can match is healthy and serves the push-down service, the leaves' label
// sets (without the replica labels, when deduplicating) are disjoint, so no
// series is in two of them, and the aggregation is not inside a subquery.
// Anything else — and any push-down that meets an error, or a PromQL info or
// warning at a leaf or at the top, whose text and position must be
// Prometheus' own — is answered by pulling series, exactly as without
// push-down.
type pushdownEngine struct {
	inner *promql.Engine
	// limited are engines like inner with a smaller sample limit, for a
	// parent federator's push-down requests (pushdown.Request.MaxSamples).
	limited *pushdown.Engines
	f       *Federator
	// limit is the engine's --query.max-concurrent, which the calls to the
	// leaves take a slot of too (released before the engine takes its own).
	limit     *concurrencyLimit
	logger    *slog.Logger
	outcomes  *prometheus.CounterVec
	mu        sync.Mutex
	noService map[string]time.Time // endpoints that answered Unimplemented, until when
}

// noServiceRecheck is how long an endpoint without the push-down service
// (a Thanos sidecar, store or querier) is not asked again.
const noServiceRecheck = 5 * time.Minute

func newPushdownEngine(f *Federator, limit *concurrencyLimit, opts promql.EngineOpts, reg prometheus.Registerer) *pushdownEngine {
	e := &pushdownEngine{
		inner:   promql.NewEngine(opts),
		limited: pushdown.NewEngines(opts),
		limit:   limit,
		f:       f,
		logger:  f.logger.With("component", "push-down"),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_federator_pushdown_aggregations_total",
			Help: "Expressions considered for push-down (aggregations, and expressions of single series), by outcome: pushed (evaluated at the leaves), pulled (aggregations not distributable here: their series were pulled), fallback (push-down was tried and the query was answered by pulling series instead).",
		}, []string{"outcome"}),
		noService: map[string]time.Time{},
	}
	for _, o := range []string{"pushed", "pulled", "fallback"} {
		e.outcomes.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(e.outcomes)
	}
	return e
}

func (e *pushdownEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return e.withMaxSamples(e.f.opts.QueryMaxSamples).NewInstantQuery(ctx, q, opts, qs, ts)
}

func (e *pushdownEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	return e.withMaxSamples(e.f.opts.QueryMaxSamples).NewRangeQuery(ctx, q, opts, qs, start, end, step)
}

// withMaxSamples is the engine with a sample limit of maxSamples, at most
// the federator's own --query.max-samples: for its own queries, and for a
// parent's push-down requests with a smaller limit. The limit applies to
// what this federator loads, and is sent to its leaves with every
// push-down request, so that they evaluate with it too.
func (e *pushdownEngine) withMaxSamples(maxSamples int) *limitedEngine {
	own := e.f.opts.QueryMaxSamples
	if maxSamples <= 0 || maxSamples >= own {
		return &limitedEngine{e: e, inner: e.inner, maxSamples: own}
	}
	return &limitedEngine{e: e, inner: e.limited.Get(maxSamples), maxSamples: maxSamples}
}

// limitedEngine is the push-down engine with one sample limit.
type limitedEngine struct {
	e          *pushdownEngine
	inner      promql.QueryEngine
	maxSamples int
}

func (l *limitedEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	pull, err := l.inner.NewInstantQuery(ctx, q, opts, qs, ts)
	if err != nil || !l.e.f.opts.PushDown {
		return pull, err
	}
	return l.plan(q, opts, qs, pull, ts, ts, 0), nil
}

func (l *limitedEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, step time.Duration) (promql.Query, error) {
	pull, err := l.inner.NewRangeQuery(ctx, q, opts, qs, start, end, step)
	if err != nil || !l.e.f.opts.PushDown {
		return pull, err
	}
	return l.plan(q, opts, qs, pull, start, end, step), nil
}

// pushNode is one aggregation to evaluate at the leaves.
type pushNode struct {
	// expr is what is replaced: agg, or an expression of single series
	// (agg nil) whose answers are just the union of the leaves'.
	expr     parser.Expr
	agg      *parser.AggregateExpr
	selector *parser.VectorSelector
	// leafQuery is what each leaf evaluates: the aggregation itself, or
	// for sum and avg (parts) its input, which the leaf sums by group as
	// Prometheus' compensated summation does and answers with the state of
	// the sum (pushdown.Request.Parts).
	leafQuery string
	parts     bool
	// keepsLabel tells whether the aggregation's output keeps a label of
	// the input series (for the federator's own external labels).
	keepsLabel func(name string) bool
}

func (l *limitedEngine) plan(q storage.Queryable, opts promql.QueryOpts, qs string, pull promql.Query, start, end time.Time, step time.Duration) promql.Query {
	e := l.e
	expr, err := parser.ParseExpr(qs)
	if err != nil || (step != 0 && step.Milliseconds() == 0) {
		// (A range query's step is sent in milliseconds.)
		return pull
	}
	if opts == nil {
		// As Prometheus' engine, for callers such as rule evaluation.
		opts = promql.NewPrometheusQueryOpts(false, 0)
	}
	var nodes []*pushNode
	pulled := 0
	inspect(expr, false, true, func(x parser.Expr) bool {
		var n *pushNode
		if a, ok := x.(*parser.AggregateExpr); ok {
			n = e.distributable(a)
		} else {
			n = e.perSeriesNode(x)
		}
		if n == nil {
			if _, ok := x.(*parser.AggregateExpr); ok {
				pulled++
			}
			return false
		}
		nodes = append(nodes, n)
		return true
	})
	e.outcomes.WithLabelValues("pulled").Add(float64(pulled))
	if len(nodes) == 0 {
		return pull
	}
	return &pushdownQuery{e: e, inner: l.inner, maxSamples: l.maxSamples, q: q, opts: opts, expr: expr, nodes: nodes, start: start, end: end, step: step, pull: pull}
}

// inspect calls f, outermost first, on every aggregation, and every
// vector-valued expression of single series that is not a bare selector's
// own argument position where it matters (bare), evaluated at the query's
// own steps (not inside a subquery); it does not descend into those f takes.
func inspect(e parser.Expr, inSubquery, bare bool, f func(parser.Expr) bool) {
	if !inSubquery {
		switch n := e.(type) {
		case *parser.AggregateExpr:
			if f(n) {
				return
			}
		case *parser.VectorSelector, *parser.Call, *parser.BinaryExpr, *parser.UnaryExpr:
			if bare && e.Type() == parser.ValueTypeVector {
				if _, ok := perSeries(e); ok && f(e) {
					return
				}
			}
		}
	}
	switch n := e.(type) {
	case *parser.AggregateExpr:
		inspect(n.Expr, inSubquery, true, f)
		if n.Param != nil {
			inspect(n.Param, inSubquery, true, f)
		}
	case *parser.BinaryExpr:
		inspect(n.LHS, inSubquery, true, f)
		inspect(n.RHS, inSubquery, true, f)
	case *parser.Call:
		// absent() makes its answer's labels from a selector argument:
		// that one must stay a selector of the real series.
		absent := n.Func.Name == "absent" || n.Func.Name == "absent_over_time"
		for _, a := range n.Args {
			inspect(a, inSubquery, !absent, f)
		}
	case *parser.ParenExpr:
		inspect(n.Expr, inSubquery, bare, f)
	case *parser.UnaryExpr:
		inspect(n.Expr, inSubquery, true, f)
	case *parser.SubqueryExpr:
		inspect(n.Expr, true, true, f)
	}
}

// perSeriesNode returns the push-down of an expression of single series
// (`x`, `rate(x[5m])`, `x > 5`): each leaf evaluates it, and the answers
// are the union of theirs, since no series is in two leaves.
func (e *pushdownEngine) perSeriesNode(x parser.Expr) *pushNode {
	sel, ok := perSeries(x)
	if !ok || !e.leafMatchers(sel) {
		return nil
	}
	return &pushNode{expr: x, selector: sel, leafQuery: x.String(), keepsLabel: func(string) bool { return true }}
}

// leafMatchers removes from sel the matchers on the federator's own
// external labels, which are attached above the leaves and so decided
// here; false when they match nothing or nothing selective is left.
func (e *pushdownEngine) leafMatchers(sel *parser.VectorSelector) bool {
	own := e.f.opts.ExternalLabels
	var ms []*labels.Matcher
	for _, m := range sel.LabelMatchers {
		if v := own.Get(m.Name); v != "" {
			if !m.Matches(v) {
				return false // nothing matches; let the pull path say so
			}
			continue
		}
		ms = append(ms, m)
	}
	if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches("") }) {
		return false
	}
	sel.LabelMatchers = ms
	return true
}

// reaggregate is how the answers of the leaves merge, per aggregation. The
// partial sums of sum and avg are merged by the federator itself (see
// mergeParts), one series per group, which the engine's sum passes on as
// it is.
var reaggregate = map[parser.ItemType]parser.ItemType{
	parser.SUM:     parser.SUM,
	parser.AVG:     parser.SUM,
	parser.COUNT:   parser.SUM,
	parser.MIN:     parser.MIN,
	parser.MAX:     parser.MAX,
	parser.GROUP:   parser.GROUP,
	parser.TOPK:    parser.TOPK,
	parser.BOTTOMK: parser.BOTTOMK,
}

// distributable returns the push-down of a, or nil when a's input is not
// a function of each series alone.
func (e *pushdownEngine) distributable(a *parser.AggregateExpr) *pushNode {
	if _, ok := reaggregate[a.Op]; !ok {
		return nil
	}
	if a.Op == parser.TOPK || a.Op == parser.BOTTOMK {
		if _, ok := pushdown.Unparen(a.Param).(*parser.NumberLiteral); !ok {
			return nil
		}
	}
	sel, ok := perSeries(a.Expr)
	if !ok {
		return nil
	}
	parts := a.Op == parser.SUM || a.Op == parser.AVG
	if parts {
		// The leaf sums in label order, which is the engine's order
		// only when every input series has the same metric name.
		if slices.Contains(a.Grouping, labels.MetricName) || !slices.ContainsFunc(sel.LabelMatchers, func(m *labels.Matcher) bool {
			return m.Name == labels.MetricName && m.Type == labels.MatchEqual
		}) {
			return nil
		}
	}
	if !e.leafMatchers(sel) {
		return nil
	}
	n := &pushNode{agg: a, expr: a, selector: sel, parts: parts, keepsLabel: func(name string) bool {
		switch a.Op {
		case parser.TOPK, parser.BOTTOMK:
			return true
		}
		return slices.Contains(a.Grouping, name) != a.Without
	}}
	if parts {
		n.leafQuery = a.Expr.String()
	} else {
		n.leafQuery = (&parser.AggregateExpr{Op: a.Op, Expr: a.Expr, Param: a.Param, Grouping: a.Grouping, Without: a.Without}).String()
	}
	return n
}

// perSeriesFuncs are the functions whose value for a series depends on
// that series alone (classic histogram_quantile: on the series of one
// label set but le, which all come from the same leaf).
var perSeriesFuncs = map[string]bool{
	"rate": true, "increase": true, "irate": true, "delta": true, "idelta": true, "deriv": true,
	"resets": true, "changes": true, "predict_linear": true,
	"avg_over_time": true, "min_over_time": true, "max_over_time": true, "sum_over_time": true,
	"count_over_time": true, "last_over_time": true, "present_over_time": true,
	"stddev_over_time": true, "stdvar_over_time": true, "quantile_over_time": true,
	"abs": true, "ceil": true, "floor": true, "exp": true, "ln": true, "log2": true, "log10": true,
	"sqrt": true, "round": true, "clamp": true, "clamp_min": true, "clamp_max": true, "sgn": true,
	"timestamp":          true,
	"histogram_quantile": true, "histogram_count": true, "histogram_sum": true, "histogram_avg": true,
	"histogram_fraction": true, "histogram_stddev": true, "histogram_stdvar": true,
}

// perSeries tells whether e is a function of each input series alone,
// reading exactly one selector (returned), with literal parameters.
func perSeries(e parser.Expr) (*parser.VectorSelector, bool) {
	switch n := e.(type) {
	case *parser.VectorSelector:
		if n.OriginalOffsetExpr != nil || n.Anchored || n.Smoothed {
			return nil, false
		}
		return n, true
	case *parser.MatrixSelector:
		if n.RangeExpr != nil {
			return nil, false
		}
		return perSeries(n.VectorSelector)
	case *parser.ParenExpr:
		return perSeries(n.Expr)
	case *parser.UnaryExpr:
		return perSeries(n.Expr)
	case *parser.SubqueryExpr:
		// With an explicit step only: the default one is each leaf's own.
		if n.Step == 0 || n.StepExpr != nil || n.RangeExpr != nil || n.OriginalOffsetExpr != nil {
			return nil, false
		}
		return perSeries(n.Expr)
	case *parser.BinaryExpr:
		if n.Op.IsSetOperator() {
			return nil, false
		}
		if isLiteral(n.LHS) {
			return perSeries(n.RHS)
		}
		if isLiteral(n.RHS) {
			return perSeries(n.LHS)
		}
		return nil, false
	case *parser.Call:
		if !perSeriesFuncs[n.Func.Name] {
			return nil, false
		}
		var sel *parser.VectorSelector
		for _, a := range n.Args {
			switch a.Type() {
			case parser.ValueTypeVector, parser.ValueTypeMatrix:
				if sel != nil {
					return nil, false
				}
				s, ok := perSeries(a)
				if !ok {
					return nil, false
				}
				sel = s
			default:
				if !isLiteral(a) {
					return nil, false
				}
			}
		}
		return sel, sel != nil
	}
	return nil, false
}

func isLiteral(e parser.Expr) bool {
	switch n := pushdown.Unparen(e).(type) {
	case *parser.NumberLiteral, *parser.StringLiteral:
		return true
	case *parser.UnaryExpr:
		return isLiteral(n.Expr)
	}
	return false
}

// pushdownQuery is one query with aggregations to push down; pull is the
// same query without push-down, run instead whenever push-down cannot give
// Prometheus' exact answer.
type pushdownQuery struct {
	e *pushdownEngine
	// inner evaluates the query over the leaves' answers, with the
	// query's sample limit, maxSamples, which the leaves are sent too.
	inner      promql.QueryEngine
	maxSamples int
	q          storage.Queryable
	opts       promql.QueryOpts
	expr       parser.Expr
	nodes      []*pushNode
	start, end time.Time
	step       time.Duration
	pull       promql.Query

	mu     sync.Mutex
	pushed promql.Query // the query over the leaves' answers, once made
	used   promql.Query // whose result Exec returned
}

func (p *pushdownQuery) Exec(ctx context.Context) *promql.Result {
	res, err := p.push(ctx)
	if err == nil {
		return res
	}
	if ctx.Err() == nil && !errors.Is(err, errAllPulled) {
		p.e.outcomes.WithLabelValues("fallback").Add(float64(len(p.nodes)))
		p.e.logger.Debug("Pulling series instead", "query", p.pull.String(), "reason", err)
	}
	p.mu.Lock()
	p.used = p.pull
	p.mu.Unlock()
	return p.pull.Exec(ctx)
}

// errNotPushed is why a query was not pushed down (not a failure).
type errNotPushed struct{ reason string }

func (e errNotPushed) Error() string { return e.reason }

// errAllPulled: no aggregation of the query could be pushed down safely.
var errAllPulled = errors.New("no aggregation can be pushed down")

func (p *pushdownQuery) push(ctx context.Context) (*promql.Result, error) {
	ro := requestOptionsFrom(ctx, p.e.f.queryable.defaults)
	replicas := p.e.f.queryable.replicaLabelsFor(ro)
	lookback := p.opts.LookbackDelta()
	if lookback <= 0 {
		lookback = p.e.f.opts.LookbackDelta
	}
	req := pushdown.Request{
		StartMs:         p.start.UnixMilli(),
		EndMs:           p.end.UnixMilli(),
		StepMs:          p.step.Milliseconds(),
		LookbackMs:      lookback.Milliseconds(),
		Dedup:           ro.Dedup,
		PartialResponse: ro.PartialResponse,
		MaxSamples:      int64(p.maxSamples),
	}
	if ro.Dedup {
		req.ReplicaLabels = replicas
	}

	// Which aggregations go to which leaves; the others are evaluated by
	// pulling series, within the same query.
	type call struct {
		node int
		addr string
	}
	var (
		calls  []call
		nodes  []*pushNode
		pulled int
	)
	for _, n := range p.nodes {
		leaves, err := p.e.leavesFor(n, ro.Dedup, replicas)
		if err != nil {
			var np errNotPushed
			if !errors.As(err, &np) {
				return nil, err
			}
			pulled++
			p.e.logger.Debug("Not pushed down", "expression", n.expr.String(), "reason", err)
			continue
		}
		for _, addr := range leaves {
			calls = append(calls, call{len(nodes), addr})
		}
		nodes = append(nodes, n)
	}
	if len(nodes) == 0 {
		p.e.outcomes.WithLabelValues("pulled").Add(float64(pulled))
		return nil, errAllPulled
	}

	type answer struct {
		series   []*prompb.TimeSeries
		warnings []string
		err      error
		// json and samples, instead of series, when encoding (below).
		json    [][]byte
		samples int
	}
	own := p.e.f.opts.ExternalLabels
	// The whole answer is the leaves' answers, and the query API (or a
	// parent's push-down request, withEncodedRelay) only encodes it: the
	// leaves answer in JSON with the labels set above and the federator's
	// own written in, and a leaf that answers with series has them encoded
	// as they come (encoded.go). Not when a name is both set above and
	// the federator's own: which value wins is then the federators' to
	// decide, one after the other.
	set, shared := pushdown.DisjointUnion(setLabelsFrom(ctx), own)
	encode := p.step == 0 && len(nodes) == 1 && pulled == 0 && nodes[0].agg == nil &&
		pushdown.Unparen(p.expr) == nodes[0].expr && shared == "" && encodedResultAccepted(ctx)
	if _, err := p.e.limit.Insert(ctx, p.pull.String()); err != nil {
		return nil, err
	}
	answers := make([]answer, len(calls))
	var wg sync.WaitGroup
	for k, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := req
			n := nodes[c.node]
			r.Query = n.leafQuery
			if n.parts {
				r.Parts, r.PartsGrouping, r.PartsWithout = true, n.agg.Grouping, n.agg.Without
			}
			// Ties of topk and bottomk go as the engine meets the series.
			r.SortSeries = n.agg != nil && (n.agg.Op == parser.TOPK || n.agg.Op == parser.BOTTOMK)
			r.EncodeJSON = encode
			if encode {
				r.SetLabels = set
			}
			a := &answers[k]
			a.err = p.e.call(ctx, c.addr, &r, func(resp *pushdown.Response) error {
				var series []*prompb.TimeSeries
				switch {
				case resp.JSON != nil && !encode:
					return errors.New("JSON samples, not asked for")
				case resp.JSON != nil && !set.IsEmpty() && !resp.LabelsSet:
					// A leaf before pushdown.Request.SetLabels.
					return errNotPushed{fmt.Sprintf("leaf %s: JSON samples without the labels to set", c.addr)}
				case resp.JSON != nil:
					a.json = append(a.json, resp.JSON)
					a.samples += resp.Samples
					return nil
				case resp.GetTimeseriesBatch() != nil:
					series = resp.GetTimeseriesBatch().Series
				case resp.GetTimeseries() != nil:
					series = []*prompb.TimeSeries{resp.GetTimeseries()}
				}
				switch {
				case series != nil && encode:
					b, n, err := encodeSamples(series, r.StartMs, set)
					a.json = append(a.json, b)
					a.samples += n
					return err
				case series != nil:
					a.series = append(a.series, series...)
				case resp.GetWarnings() != "":
					w := resp.GetWarnings()
					if pushdown.IsPromQLAnnotation(w) {
						// Its text and position must be Prometheus' own.
						return errNotPushed{fmt.Sprintf("leaf %s: %s", c.addr, w)}
					}
					a.warnings = append(a.warnings, w)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	p.e.limit.Delete(0)

	for _, a := range answers {
		if pushdown.IsTooManySamples(a.err) {
			// A leaf's part of the query alone loads more than
			// --query.max-samples: the whole query would too, pulling
			// its series. Fail as that would, without pulling them.
			p.e.outcomes.WithLabelValues("pushed").Add(float64(len(nodes)))
			p.e.outcomes.WithLabelValues("pulled").Add(float64(pulled))
			return &promql.Result{Err: promql.ErrTooManySamples(tooManySamplesEnv)}, nil
		}
	}
	grid := stepGrid(p.start, p.end, p.step)
	warnings := annotations.New()
	perNode := make([][]answer, len(nodes))
	for k, c := range calls {
		a := answers[k]
		if a.err != nil {
			if status.Code(a.err) == codes.Unimplemented {
				p.e.markNoService(c.addr)
			}
			return nil, fmt.Errorf("push down to %s: %w", c.addr, a.err)
		}
		for _, w := range a.warnings {
			warnings.Add(errors.New(w))
		}
		perNode[c.node] = append(perNode[c.node], a)
	}
	if encode {
		v := encodedVector{}
		for _, a := range answers {
			v.parts = append(v.parts, a.json...)
			v.samples += a.samples
		}
		if v.samples > p.maxSamples {
			// Over the limit as the engine counts: the engine's error
			// comes from pulling, as with the answers evaluated below.
			return nil, promql.ErrTooManySamples(tooManySamplesEnv)
		}
		p.e.outcomes.WithLabelValues("pushed").Inc()
		return &promql.Result{Value: v, Warnings: *warnings}, nil
	}
	withOwn := func(n *pushNode, lset labels.Labels) labels.Labels {
		if own.IsEmpty() {
			return lset
		}
		b := labels.NewBuilder(lset)
		own.Range(func(l labels.Label) {
			if n.keepsLabel(l.Name) {
				b.Set(l.Name, l.Value)
			}
		})
		return b.Labels()
	}

	// The query over the leaves' answers: each pushed aggregation becomes
	// the re-aggregation of a selector of its answers.
	synthetic := &answersQueryable{Queryable: p.q, sets: map[string][]storage.Series{}, warnings: *warnings}
	replaced := map[parser.Expr]parser.Expr{}
	for i, n := range nodes {
		id := strconv.Itoa(i)
		var set []storage.Series
		if n.parts {
			var leafAnswers [][]*prompb.TimeSeries
			for _, a := range perNode[i] {
				leafAnswers = append(leafAnswers, a.series)
			}
			for _, g := range mergeParts(leafAnswers, n.agg.Op == parser.AVG) {
				set = append(set, pointsSeries(withOwn(n, g.lset), g.points, nil, grid))
			}
		} else {
			for _, a := range perNode[i] {
				for _, ts := range a.series {
					set = append(set, pointsSeries(withOwn(n, labelpb.ZLabelsToPromLabels(ts.Labels)), ts.Samples, ts.Histograms, grid))
				}
			}
		}
		// In label order, as pulled series would come: the engine's topk
		// and bottomk break ties by the order they meet the series in.
		// When the answers are the whole result (a selector, or a function
		// of each series), no such operation follows, and an instant
		// vector's order means nothing (a range query's matrix is sorted
		// by the engine): sorting thousands of series by their labels
		// was a fifth of the federator's CPU for a raw selector.
		if n.agg != nil || pushdown.Unparen(p.expr) != n.expr {
			perm := labelsort.Order(len(set), func(i int) labels.Labels { return set[i].Labels() })
			sorted := make([]storage.Series, len(set))
			for i, j := range perm {
				sorted[i] = set[j]
			}
			set = sorted
		}
		synthetic.sets[id] = set
		sel := &parser.VectorSelector{LabelMatchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, answerLabel, id)}}
		if n.agg == nil {
			replaced[n.expr] = sel
			continue
		}
		replaced[n.expr] = &parser.AggregateExpr{Op: reaggregate[n.agg.Op], Expr: sel, Param: n.agg.Param, Grouping: n.agg.Grouping, Without: n.agg.Without}
	}
	p.e.outcomes.WithLabelValues("pulled").Add(float64(pulled))
	qs := replaceExprs(p.expr, replaced).String()
	var (
		qry promql.Query
		err error
	)
	if p.step == 0 {
		qry, err = p.inner.NewInstantQuery(ctx, synthetic, p.opts, qs, p.start)
	} else {
		qry, err = p.inner.NewRangeQuery(ctx, synthetic, p.opts, qs, p.start, p.end, p.step)
	}
	if err != nil {
		return nil, fmt.Errorf("the query over the leaves' answers, %s: %w", qs, err)
	}
	p.mu.Lock()
	p.pushed = qry
	p.mu.Unlock()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return nil, res.Err
	}
	for _, w := range res.Warnings {
		if errors.Is(w, annotations.PromQLInfo) || errors.Is(w, annotations.PromQLWarning) {
			// Its position would be in qs, not in the user's query.
			return nil, errNotPushed{"annotation at the top: " + w.Error()}
		}
	}
	p.e.outcomes.WithLabelValues("pushed").Add(float64(len(nodes)))
	p.mu.Lock()
	p.used = qry
	p.mu.Unlock()
	return res, nil
}

// tooManySamplesEnv is where Prometheus' engine reports a query over its
// sample limit: "query processing would load too many samples into memory
// in query execution".
const tooManySamplesEnv = "query execution"

// mergedGroup is one group of a pushed-down sum or avg: its labels and its
// value per step.
type mergedGroup struct {
	lset   labels.Labels
	points []prompb.Sample
}

// mergeParts merges the leaves' partial sums (pushdown.Request.Parts) into
// each group's sum (or mean), carrying the compensation of every leaf and
// of the merge, so that the result rounds as Prometheus' one compensated
// sum over all the series does (exactly so when a group is in one leaf).
func mergeParts(leaves [][]*prompb.TimeSeries, mean bool) []mergedGroup {
	groups := mergePartStates(leaves)
	out := make([]mergedGroup, len(groups))
	for i, g := range groups {
		points := make([]prompb.Sample, len(g.steps))
		for j, st := range g.steps {
			v := st.t + st.c
			if mean {
				v = st.t/st.n + st.c/st.n
			}
			points[j] = prompb.Sample{Timestamp: st.ts, Value: v}
		}
		out[i] = mergedGroup{lset: g.lset, points: points}
	}
	return out
}

// partStep is the merged state of one group's compensated sum at one
// step: running sum, compensation (the merge's and every leaf's), count.
type partStep struct {
	ts      int64
	t, c, n float64
}

type partGroup struct {
	lset  labels.Labels
	steps []partStep // by time
}

// mergePartStates merges the leaves' partial sums into one state per group
// and step, itself a valid partial sum for the next level up.
func mergePartStates(leaves [][]*prompb.TimeSeries) []partGroup {
	type state struct {
		t, c, cs, n float64
		seen        bool
	}
	type group struct {
		lset  labels.Labels
		steps map[int64]*state
	}
	groups := map[string]*group{}
	var order []string
	b := labels.NewBuilder(labels.EmptyLabels())
	for _, series := range leaves {
		// This leaf's t, c and n per group and step, merged in once all
		// three are known.
		type leafState struct{ t, c, n float64 }
		mine := map[string]map[int64]*leafState{}
		var mineOrder []string
		for _, ts := range series {
			lset := labelpb.ZLabelsToPromLabels(ts.Labels)
			part := lset.Get(pushdown.PartLabel)
			b.Reset(lset)
			lset = b.Del(pushdown.PartLabel).Labels()
			key := string(lset.Bytes(nil))
			if _, ok := groups[key]; !ok {
				groups[key] = &group{lset: lset, steps: map[int64]*state{}}
				order = append(order, key)
			}
			m, ok := mine[key]
			if !ok {
				m = map[int64]*leafState{}
				mine[key] = m
				mineOrder = append(mineOrder, key)
			}
			for _, smp := range ts.Samples {
				st, ok := m[smp.Timestamp]
				if !ok {
					st = &leafState{}
					m[smp.Timestamp] = st
				}
				switch part {
				case "t":
					st.t = smp.Value
				case "c":
					st.c = smp.Value
				case "n":
					st.n = smp.Value
				}
			}
		}
		for _, key := range mineOrder {
			g := groups[key]
			for t, ls := range mine[key] {
				st, ok := g.steps[t]
				if !ok {
					st = &state{}
					g.steps[t] = st
				}
				if !st.seen {
					st.t, st.seen = ls.t, true
				} else {
					st.t, st.c = pushdown.KahanSumInc(ls.t, st.t, st.c)
				}
				st.cs += ls.c
				st.n += ls.n
			}
		}
	}
	out := make([]partGroup, 0, len(order))
	for _, key := range order {
		g := groups[key]
		steps := make([]partStep, 0, len(g.steps))
		for t, st := range g.steps {
			steps = append(steps, partStep{ts: t, t: st.t, c: st.c + st.cs, n: st.n})
		}
		slices.SortFunc(steps, func(a, b partStep) int { return cmp.Compare(a.ts, b.ts) })
		out = append(out, partGroup{lset: g.lset, steps: steps})
	}
	return out
}

// forwardParts answers a parent's request for partial sums by asking this
// federator's own leaves for theirs and merging them, when that is safe
// here; handled is false when the request must be evaluated here instead.
func (e *pushdownEngine) forwardParts(ctx context.Context, req *pushdown.Request, out pushdown.Sender) (handled bool, err error) {
	if !e.f.opts.PushDown {
		return false, nil
	}
	inner, err := parser.ParseExpr(req.Query)
	if err != nil {
		return false, nil
	}
	n := e.distributable(&parser.AggregateExpr{Op: parser.SUM, Expr: inner, Grouping: req.PartsGrouping, Without: req.PartsWithout})
	if n == nil || !n.parts {
		return false, nil
	}
	replicas := e.f.queryable.replicaLabelsFor(RequestOptions{ReplicaLabels: req.ReplicaLabels})
	leaves, err := e.leavesFor(n, req.Dedup, replicas)
	if err != nil {
		return false, nil
	}
	r := *req
	r.Query = n.leafQuery
	if req.Dedup {
		r.ReplicaLabels = replicas
	}
	// The leaves evaluate with the smaller of the parent's limit and this
	// federator's.
	ownMax := int64(e.f.opts.QueryMaxSamples)
	r.MaxSamples = ownMax
	if req.MaxSamples > 0 && req.MaxSamples < ownMax {
		r.MaxSamples = req.MaxSamples
	}
	if _, err := e.limit.Insert(ctx, req.Query); err != nil {
		return true, err
	}
	defer e.limit.Delete(0)
	answers := make([][]*prompb.TimeSeries, len(leaves))
	warnings := make([][]string, len(leaves))
	errs := make([]error, len(leaves))
	var wg sync.WaitGroup
	for i, addr := range leaves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.call(ctx, addr, &r, func(resp *pushdown.Response) error {
				switch {
				case resp.JSON != nil:
					return errors.New("JSON samples, not asked for")
				case resp.GetTimeseriesBatch() != nil:
					answers[i] = append(answers[i], resp.GetTimeseriesBatch().Series...)
				case resp.GetTimeseries() != nil:
					answers[i] = append(answers[i], resp.GetTimeseries())
				case resp.GetWarnings() != "":
					if pushdown.IsPromQLAnnotation(resp.GetWarnings()) {
						return errNotPushed{resp.GetWarnings()}
					}
					warnings[i] = append(warnings[i], resp.GetWarnings())
				}
				return nil
			})
			if status.Code(errs[i]) == codes.Unimplemented {
				e.markNoService(addr)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if pushdown.IsTooManySamples(err) && req.MaxSamples > 0 && req.MaxSamples <= ownMax {
			// Over the parent's limit: the parent fails the query.
			return true, err
		}
		if err != nil {
			e.logger.Debug("Evaluating partial sums here instead", "query", req.Query, "reason", err)
			return false, nil
		}
	}
	e.outcomes.WithLabelValues("pushed").Inc()
	for _, ws := range warnings {
		for _, w := range ws {
			if err := out.Send(querypb.NewQueryWarningsResponse(errors.New(w))); err != nil {
				return true, err
			}
		}
	}
	var series []*prompb.TimeSeries
	own := e.f.opts.ExternalLabels
	for _, g := range mergePartStates(answers) {
		lset := g.lset
		if !own.IsEmpty() {
			b := labels.NewBuilder(lset)
			own.Range(func(l labels.Label) {
				if n.keepsLabel(l.Name) {
					b.Set(l.Name, l.Value)
				}
			})
			lset = b.Labels()
		}
		for _, part := range []string{"t", "c", "n"} {
			samples := make([]prompb.Sample, len(g.steps))
			for i, st := range g.steps {
				v := st.t
				switch part {
				case "c":
					v = st.c
				case "n":
					v = st.n
				}
				samples[i] = prompb.Sample{Timestamp: st.ts, Value: v}
			}
			series = append(series, &prompb.TimeSeries{Labels: labelpb.ZLabelsFromPromLabels(labels.NewBuilder(lset).Set(pushdown.PartLabel, part).Labels()), Samples: samples})
		}
	}
	for start := 0; start < len(series); start += 256 {
		if err := out.Send(&querypb.QueryResponse{Result: &querypb.QueryResponse_TimeseriesBatch{TimeseriesBatch: &querypb.TimeSeriesBatch{Series: series[start:min(start+256, len(series))]}}}); err != nil {
			return true, err
		}
	}
	return true, nil
}

// federatorEvaluator serves push-down to a parent federator: partial sums
// are forwarded to this federator's own leaves when that is safe, and
// everything else is evaluated here (pushing down further where it can).
type federatorEvaluator struct {
	e       *pushdownEngine
	generic *pushdown.Server
}

func (fe *federatorEvaluator) Eval(ctx context.Context, req *pushdown.Request, out pushdown.Sender) error {
	if req.Parts {
		if handled, err := fe.e.forwardParts(ctx, req, out); handled {
			return err
		}
	}
	return fe.generic.Eval(ctx, req, out)
}

// replaceExprs returns e with the expressions in r replaced.
func replaceExprs(e parser.Expr, r map[parser.Expr]parser.Expr) parser.Expr {
	if x, ok := r[e]; ok {
		return x
	}
	switch n := e.(type) {
	case *parser.AggregateExpr:
		n.Expr = replaceExprs(n.Expr, r)
		if n.Param != nil {
			n.Param = replaceExprs(n.Param, r)
		}
	case *parser.BinaryExpr:
		n.LHS = replaceExprs(n.LHS, r)
		n.RHS = replaceExprs(n.RHS, r)
	case *parser.Call:
		for i, a := range n.Args {
			n.Args[i] = replaceExprs(a, r)
		}
	case *parser.ParenExpr:
		n.Expr = replaceExprs(n.Expr, r)
	case *parser.UnaryExpr:
		n.Expr = replaceExprs(n.Expr, r)
	case *parser.SubqueryExpr:
		n.Expr = replaceExprs(n.Expr, r)
	}
	return e
}

func (p *pushdownQuery) Close() {
	p.pull.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pushed != nil {
		p.pushed.Close()
	}
}

func (p *pushdownQuery) Statement() parser.Statement { return p.pull.Statement() }

func (p *pushdownQuery) Stats() *stats.Statistics {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used != nil {
		return p.used.Stats()
	}
	return p.pull.Stats()
}

func (p *pushdownQuery) Cancel() {
	p.pull.Cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pushed != nil {
		p.pushed.Cancel()
	}
}

func (p *pushdownQuery) String() string { return p.pull.String() }

// leavesFor are the endpoints to ask for node n, or an error saying why
// push-down is not safe.
func (e *pushdownEngine) leavesFor(n *pushNode, dedup bool, replicas []string) ([]string, error) {
	ms := n.selector.LabelMatchers
	type leaf struct {
		addr string
		sets []labels.Labels
	}
	var leaves []leaf
	for _, st := range e.f.endpoints.statuses() {
		if st.LabelSets != nil && !store.LabelSetsMatch(ms, st.LabelSets...) {
			continue // cannot hold a matching series
		}
		if st.LastError != nil {
			return nil, errNotPushed{fmt.Sprintf("endpoint %s is unhealthy", st.Name)}
		}
		if e.lacksService(st.Name) {
			return nil, errNotPushed{fmt.Sprintf("endpoint %s does not serve push-down", st.Name)}
		}
		sets := st.LabelSets
		if dedup && len(replicas) > 0 {
			sets = make([]labels.Labels, len(st.LabelSets))
			for i, ls := range st.LabelSets {
				sets[i] = labels.NewBuilder(ls).Del(replicas...).Labels()
			}
		}
		leaves = append(leaves, leaf{addr: st.Name, sets: sets})
	}
	// No series may be in two leaves: every label set of one must differ
	// from every label set of another in a label both have. For avg, no
	// group either: a mean merged from several leaves' sums would not
	// round as Prometheus' one mean does.
	for i := range leaves {
		for j := i + 1; j < len(leaves); j++ {
			for _, a := range leaves[i].sets {
				for _, b := range leaves[j].sets {
					if !conflict(a, b, nil) {
						return nil, errNotPushed{fmt.Sprintf("endpoints %s and %s may hold the same series (%s, %s)", leaves[i].addr, leaves[j].addr, a, b)}
					}
					if n.agg != nil && n.agg.Op == parser.AVG && !conflict(a, b, n.keepsLabel) {
						return nil, errNotPushed{fmt.Sprintf("a group of %s may span endpoints %s and %s", n.agg, leaves[i].addr, leaves[j].addr)}
					}
				}
			}
			if len(leaves[i].sets) == 0 || len(leaves[j].sets) == 0 {
				return nil, errNotPushed{fmt.Sprintf("endpoints %s and %s may hold the same series", leaves[i].addr, leaves[j].addr)}
			}
		}
	}
	if len(leaves) == 0 {
		// Nothing can match: the pull path answers (and warns) as usual.
		return nil, errNotPushed{"no endpoint can match"}
	}
	out := make([]string, len(leaves))
	for i, l := range leaves {
		out[i] = l.addr
	}
	return out, nil
}

// conflict tells whether a and b have a label of the same name with
// different values (among those kept, when not nil), so that no series
// (or group) can carry both.
func conflict(a, b labels.Labels, kept func(string) bool) bool {
	found := false
	a.Range(func(l labels.Label) {
		if v := b.Get(l.Name); v != "" && v != l.Value && (kept == nil || kept(l.Name)) {
			found = true
		}
	})
	return found
}

func (e *pushdownEngine) lacksService(addr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	until, ok := e.noService[addr]
	if ok && time.Now().After(until) {
		delete(e.noService, addr)
		return false
	}
	return ok
}

func (e *pushdownEngine) markNoService(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.noService[addr]; !ok {
		e.logger.Info("Endpoint does not serve push-down; pulling its series", "endpoint", addr)
	}
	e.noService[addr] = time.Now().Add(noServiceRecheck)
}

// call sends one push-down request, bounded by the endpoint timeout.
func (e *pushdownEngine) call(ctx context.Context, addr string, req *pushdown.Request, recv func(*pushdown.Response) error) error {
	cc, err := e.f.endpoints.conn(addr)
	if err != nil {
		return err
	}
	if t := e.f.opts.EndpointTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	return pushdown.Call(ctx, cc, req, recv)
}

// stepGrid are the evaluation timestamps of a query, in milliseconds.
func stepGrid(start, end time.Time, step time.Duration) []int64 {
	s, e := start.UnixMilli(), end.UnixMilli()
	if step == 0 {
		return []int64{s}
	}
	st := step.Milliseconds()
	grid := make([]int64, 0, (e-s)/st+1)
	for t := s; t <= e; t += st {
		grid = append(grid, t)
	}
	return grid
}

// pointsSeries is one series of the leaves' answers as the engine reads
// it: its points, and a staleness marker at every later step where it had
// none, so that the lookback does not carry a point to the next step.
func pointsSeries(lset labels.Labels, floats []prompb.Sample, hists []prompb.Histogram, grid []int64) storage.Series {
	var out []chunks.Sample
	fi, hi := 0, 0
	for _, t := range grid {
		for fi < len(floats) && floats[fi].Timestamp < t {
			fi++
		}
		for hi < len(hists) && hists[hi].Timestamp < t {
			hi++
		}
		switch {
		case fi < len(floats) && floats[fi].Timestamp == t:
			out = append(out, answerPoint{t: t, f: floats[fi].Value})
		case hi < len(hists) && hists[hi].Timestamp == t:
			out = append(out, answerPoint{t: t, fh: prompb.FromProtoHistogram(hists[hi])})
		case len(out) > 0:
			out = append(out, answerPoint{t: t, f: staleNaN})
		}
	}
	return storage.NewListSeries(lset, out)
}

var staleNaN = math.Float64frombits(value.StaleNaN)

type answerPoint struct {
	t  int64
	f  float64
	fh *histogram.FloatHistogram
}

func (p answerPoint) T() int64                      { return p.t }
func (p answerPoint) F() float64                    { return p.f }
func (p answerPoint) H() *histogram.Histogram       { return nil }
func (p answerPoint) FH() *histogram.FloatHistogram { return p.fh }
func (p answerPoint) Type() chunkenc.ValueType {
	if p.fh != nil {
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}
func (p answerPoint) Copy() chunks.Sample {
	c := p
	if p.fh != nil {
		c.fh = p.fh.Copy()
	}
	return c
}

// answerLabel marks the selectors of the leaves' answers; a name starting
// with __ is reserved, so no stored series has it.
const answerLabel = "__panorama_pushdown__"

// answersQueryable serves the leaves' answers to the selectors marked with
// answerLabel, and everything else from the federated view.
type answersQueryable struct {
	storage.Queryable
	sets     map[string][]storage.Series
	warnings annotations.Annotations
	once     sync.Once
}

func (a *answersQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := a.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &answersQuerier{Querier: q, a: a}, nil
}

type answersQuerier struct {
	storage.Querier
	a *answersQueryable
}

func (q *answersQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	if len(ms) == 1 && ms[0].Name == answerLabel {
		set := &listSet{series: q.a.sets[ms[0].Value], i: -1}
		// The leaves' warnings, once per query.
		q.a.once.Do(func() { set.warnings = q.a.warnings })
		return set
	}
	return q.Querier.Select(ctx, sortSeries, hints, ms...)
}

type listSet struct {
	series   []storage.Series
	i        int
	warnings annotations.Annotations
}

func (s *listSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *listSet) At() storage.Series                { return s.series[s.i] }
func (s *listSet) Err() error                        { return nil }
func (s *listSet) Warnings() annotations.Annotations { return s.warnings }

var (
	_ promql.QueryEngine = (*pushdownEngine)(nil)
	_ promql.Query       = (*pushdownQuery)(nil)
)
