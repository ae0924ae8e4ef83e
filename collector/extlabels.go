package collector

import (
	"context"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/panorama-obs/panorama/internal/labelsort"
)

// externalLabelsQueryable serves a local storage with the collector's
// external labels attached to every series, so that a query answered by a
// collector already says which cluster it came from. As in Prometheus'
// federation and remote write, a series' own label wins over an external
// label of the same name.
type externalLabelsQueryable struct {
	storage.SampleAndChunkQueryable
	ext     labels.Labels
	extList []labels.Label
}

func newExternalLabelsQueryable(q storage.SampleAndChunkQueryable, ext labels.Labels) *externalLabelsQueryable {
	var list []labels.Label
	ext.Range(func(l labels.Label) { list = append(list, l) })
	return &externalLabelsQueryable{SampleAndChunkQueryable: q, ext: ext, extList: list}
}

func (q *externalLabelsQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	inner, err := q.SampleAndChunkQueryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &externalLabelsQuerier{Querier: inner, extLabeler: q.labeler()}, nil
}

// ChunkQuerier serves chunks with the same labels as Querier serves samples:
// the collector's StoreAPI reads through it, so a federator sees exactly
// what the collector's own HTTP API shows.
func (q *externalLabelsQueryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	inner, err := q.SampleAndChunkQueryable.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return &externalLabelsChunkQuerier{ChunkQuerier: inner, extLabeler: q.labeler()}, nil
}

// unattached serves the same series as q without the external labels, for
// a caller that adds them itself (a push-down leaf's partial sums, topk
// and JSON answers, which then copy no series' labels to attach them):
// matchers on external label names are decided against the external
// values, and sorted selections come in the order of the attached labels.
// It is not ok when some stored series carries an external label name
// itself: attaching then decides which value wins, and may merge series.
func (q *externalLabelsQueryable) unattached(ctx context.Context) (storage.Queryable, bool) {
	if q.ext.IsEmpty() {
		return q.SampleAndChunkQueryable, true
	}
	lq, err := q.SampleAndChunkQueryable.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, false
	}
	defer lq.Close()
	e := q.labeler()
	if e.mayCollide(ctx, lq) {
		return nil, false
	}
	return unattachedQueryable{Queryable: q.SampleAndChunkQueryable, e: e}, true
}

type unattachedQueryable struct {
	storage.Queryable
	e extLabeler
}

func (u unattachedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := u.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return unattachedQuerier{Querier: q, e: u.e}, nil
}

type unattachedQuerier struct {
	storage.Querier
	e extLabeler
}

func (u unattachedQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	inner, outer := u.e.splitSelect(ms)
	if !u.e.matchesExternal(outer) {
		return storage.EmptySeriesSet()
	}
	if !sortSeries || u.e.ext.IsEmpty() {
		return u.Querier.Select(ctx, sortSeries, hints, inner...)
	}
	// In the order of the series with the labels attached, which the
	// caller's engine meets them in (topk breaks ties by it).
	set := u.Querier.Select(ctx, false, hints, inner...)
	return &sliceSet[storage.Series]{series: sortedSeries[storage.Series](set, u.e.ext), i: -1, err: set.Err(), warnings: set.Warnings()}
}

func (q *externalLabelsQueryable) labeler() extLabeler {
	return extLabeler{ext: q.ext, extList: q.extList}
}

// extLabeler attaches the external labels; the sample and the chunk
// querier share it.
type extLabeler struct {
	ext     labels.Labels
	extList []labels.Label // ext, sorted by name
}

type externalLabelsQuerier struct {
	storage.Querier
	extLabeler
}

func (q *externalLabelsQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	return selectAttached(ctx, q.extLabeler, q.Querier, sortSeries, ms,
		func(sortSeries bool, ms []*labels.Matcher) storage.SeriesSet {
			return q.Querier.Select(ctx, sortSeries, hints, ms...)
		},
		func(s storage.Series, lset labels.Labels) storage.Series {
			return &relabeledSeries{Series: s, lset: lset}
		},
		func(ss []storage.Series) storage.Series { return storage.ChainedSeriesMerge(ss...) },
		storage.EmptySeriesSet)
}

type externalLabelsChunkQuerier struct {
	storage.ChunkQuerier
	extLabeler
}

func (q *externalLabelsChunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	merge := storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)
	return selectAttached(ctx, q.extLabeler, q.ChunkQuerier, sortSeries, ms,
		func(sortSeries bool, ms []*labels.Matcher) storage.ChunkSeriesSet {
			return q.ChunkQuerier.Select(ctx, sortSeries, hints, ms...)
		},
		func(s storage.ChunkSeries, lset labels.Labels) storage.ChunkSeries {
			return &relabeledChunkSeries{ChunkSeries: s, lset: lset}
		},
		func(ss []storage.ChunkSeries) storage.ChunkSeries { return merge(ss...) },
		storage.EmptyChunkSeriesSet)
}

func (q *externalLabelsChunkQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return labelValues(ctx, q.extLabeler, q.eachLabels, q.ChunkQuerier, name, hints, ms)
}

func (q *externalLabelsChunkQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return labelNames(ctx, q.extLabeler, q.eachLabels, q.ChunkQuerier, hints, ms)
}

// split separates the matchers on external label names, which are checked
// after the labels are attached, from those the storage can use.
func (e extLabeler) split(ms []*labels.Matcher) (inner, outer []*labels.Matcher) {
	for _, m := range ms {
		if e.ext.Has(m.Name) {
			outer = append(outer, m)
		} else {
			inner = append(inner, m)
		}
	}
	return inner, outer
}

// splitSelect is split for a selection: the storage refuses one with no
// matcher, so inner then selects everything, which outer narrows.
func (e extLabeler) splitSelect(ms []*labels.Matcher) (inner, outer []*labels.Matcher) {
	inner, outer = e.split(ms)
	if len(inner) == 0 {
		inner = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	}
	return inner, outer
}

// seriesSet is what storage.SeriesSet and storage.ChunkSeriesSet have in
// common.
type seriesSet[S any] interface {
	Next() bool
	At() S
	Err() error
	Warnings() annotations.Annotations
}

// selectAttached selects through inner with the external labels attached
// to every series, the matchers on external label names applied to the
// attached labels, and series sorted after attaching when asked (attaching
// can change the order) or when identical series must be merged.
func selectAttached[S interface{ Labels() labels.Labels }, Set seriesSet[S]](
	ctx context.Context, e extLabeler, lq storage.LabelQuerier, sortSeries bool, ms []*labels.Matcher,
	sel func(sortSeries bool, ms []*labels.Matcher) Set,
	wrap func(S, labels.Labels) S,
	merge func([]S) S,
	empty func() Set,
) Set {
	inner, outer := e.splitSelect(ms)
	collide := e.mayCollide(ctx, lq)
	if !collide {
		// No stored series carries an external label name: the matchers
		// on them are decided once, against the external values.
		if !e.matchesExternal(outer) {
			return empty()
		}
		outer = nil
	}
	set := &attachingSet[S]{inner: sel(false, inner), e: e, outer: outer, wrap: wrap}
	if !sortSeries && !collide {
		return any(set).(Set)
	}
	// Where some stored series carry an external label name themselves,
	// two series may now share a label set: merge them, as Prometheus'
	// fan-out storage merges identical series.
	out := sortedSeries[S](set, labels.EmptyLabels())
	if collide {
		out = mergeIdentical(out, merge)
	}
	return any(&sliceSet[S]{series: out, i: -1, err: set.Err(), warnings: set.Warnings()}).(Set)
}

// matchesExternal tells whether the external labels pass every matcher of
// ms (all on external label names).
func (e extLabeler) matchesExternal(ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(e.ext.Get(m.Name)) {
			return false
		}
	}
	return true
}

// sortedSeries reads set whole, in the order of its series' labels with
// extra added to each (no series has a label of their names).
func sortedSeries[S interface{ Labels() labels.Labels }](set seriesSet[S], extra labels.Labels) []S {
	var out []S
	for set.Next() {
		out = append(out, set.At())
	}
	sorted := make([]S, len(out))
	for i, j := range labelsort.OrderWith(len(out), func(i int) labels.Labels { return out[i].Labels() }, extra) {
		sorted[i] = out[j]
	}
	return sorted
}

// mayCollide reports whether any stored series carries an external label
// name itself; only then can attaching the external labels make two series
// identical.
func (e extLabeler) mayCollide(ctx context.Context, lq storage.LabelQuerier) bool {
	collide := false
	e.ext.Range(func(l labels.Label) {
		if collide {
			return
		}
		vals, _, err := lq.LabelValues(ctx, l.Name, nil)
		collide = err != nil || len(vals) > 0
	})
	return collide
}

// mergeIdentical merges neighbouring series with equal labels in a sorted
// slice.
func mergeIdentical[S interface{ Labels() labels.Labels }](sorted []S, merge func([]S) S) []S {
	out := sorted[:0]
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && labels.Equal(sorted[i].Labels(), sorted[j].Labels()) {
			j++
		}
		if j-i == 1 {
			out = append(out, sorted[i])
		} else {
			// Copy: out reuses sorted's array, and the merged series
			// reads its parts lazily.
			out = append(out, merge(slices.Clone(sorted[i:j])))
		}
		i = j
	}
	return out
}

// attachingSet attaches the external labels to each series and drops those
// the matchers on external label names reject.
type attachingSet[S interface{ Labels() labels.Labels }] struct {
	inner seriesSet[S]
	e     extLabeler
	outer []*labels.Matcher
	wrap  func(S, labels.Labels) S
	cur   S
	b     labels.ScratchBuilder
}

func (s *attachingSet[S]) Next() bool {
	for s.inner.Next() {
		series := s.inner.At()
		lset := s.e.attach(&s.b, series.Labels())
		if matchesAll(s.outer, lset) {
			s.cur = s.wrap(series, lset)
			return true
		}
	}
	return false
}
func (s *attachingSet[S]) At() S                             { return s.cur }
func (s *attachingSet[S]) Err() error                        { return s.inner.Err() }
func (s *attachingSet[S]) Warnings() annotations.Annotations { return s.inner.Warnings() }

// attach merges the external labels into a series' sorted labels in one
// pass, with one allocation; a series' own label wins.
func (e extLabeler) attach(b *labels.ScratchBuilder, lset labels.Labels) labels.Labels {
	missing := false
	for _, l := range e.extList {
		if !lset.Has(l.Name) {
			missing = true
			break
		}
	}
	if !missing {
		return lset
	}
	b.Reset()
	labelsort.RangeWith(lset, e.extList, func(l labels.Label) { b.Add(l.Name, l.Value) })
	return b.Labels()
}

func matchesAll(ms []*labels.Matcher, lset labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (q *externalLabelsQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return labelValues(ctx, q.extLabeler, q.eachLabels, q.Querier, name, hints, ms)
}

func (q *externalLabelsQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return labelNames(ctx, q.extLabeler, q.eachLabels, q.Querier, hints, ms)
}

// eachLabels calls f with the attached labels of every selected series.
func (q *externalLabelsQuerier) eachLabels(ctx context.Context, ms []*labels.Matcher, f func(labels.Labels)) (annotations.Annotations, error) {
	return eachLabels(q.Select(ctx, false, nil, ms...), f)
}

func (q *externalLabelsChunkQuerier) eachLabels(ctx context.Context, ms []*labels.Matcher, f func(labels.Labels)) (annotations.Annotations, error) {
	return eachLabels(q.Select(ctx, false, nil, ms...), f)
}

func eachLabels[S interface{ Labels() labels.Labels }](set seriesSet[S], f func(labels.Labels)) (annotations.Annotations, error) {
	for set.Next() {
		f(set.At().Labels())
	}
	return set.Warnings(), set.Err()
}

type eachLabelsFunc func(ctx context.Context, ms []*labels.Matcher, f func(labels.Labels)) (annotations.Annotations, error)

// labelValues answers the values of a label as they are after attaching
// the external labels.
func labelValues(ctx context.Context, e extLabeler, each eachLabelsFunc, inner storage.LabelQuerier, name string, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	in, outer := e.split(ms)
	switch {
	case len(outer) > 0:
		// Matchers on external labels: answer exactly from the series.
		seen := map[string]struct{}{}
		ws, err := each(ctx, ms, func(l labels.Labels) {
			if v := l.Get(name); v != "" {
				seen[v] = struct{}{}
			}
		})
		if err != nil {
			return nil, ws, err
		}
		return limit(sortedKeys(seen), hints), ws, nil
	case e.ext.Has(name):
		// The series' own values, and the external value if any selected
		// series lacks the label.
		own, ws, err := inner.LabelValues(ctx, name, nil, in...)
		if err != nil {
			return nil, ws, err
		}
		v := e.ext.Get(name)
		if _, found := slices.BinarySearch(own, v); !found {
			lacking := append(slices.Clone(in), labels.MustNewMatcher(labels.MatchEqual, name, ""))
			if len(in) == 0 {
				lacking = append(lacking, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
			}
			set := selectInner(ctx, inner, lacking)
			if set != nil && set.Next() {
				own = slices.Insert(slices.Clone(own), 0, v)
				slices.Sort(own)
			}
		}
		return limit(own, hints), ws, nil
	default:
		return inner.LabelValues(ctx, name, hints, in...)
	}
}

// selectInner selects through the storage under the external labels, for
// an existence check.
func selectInner(ctx context.Context, lq storage.LabelQuerier, ms []*labels.Matcher) interface{ Next() bool } {
	switch q := lq.(type) {
	case storage.Querier:
		return q.Select(ctx, false, nil, ms...)
	case storage.ChunkQuerier:
		return q.Select(ctx, false, nil, ms...)
	}
	return nil
}

// labelNames answers the label names as they are after attaching the
// external labels.
func labelNames(ctx context.Context, e extLabeler, each eachLabelsFunc, inner storage.LabelQuerier, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
	in, outer := e.split(ms)
	if len(outer) > 0 {
		seen := map[string]struct{}{}
		ws, err := each(ctx, ms, func(l labels.Labels) {
			l.Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
		})
		if err != nil {
			return nil, ws, err
		}
		return limit(sortedKeys(seen), hints), ws, nil
	}
	names, ws, err := inner.LabelNames(ctx, nil, in...)
	if err != nil || len(names) == 0 {
		return names, ws, err
	}
	e.ext.Range(func(l labels.Label) {
		if i, found := slices.BinarySearch(names, l.Name); !found {
			names = slices.Insert(names, i, l.Name)
		}
	})
	return limit(names, hints), ws, nil
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func limit(s []string, hints *storage.LabelHints) []string {
	if hints != nil && hints.Limit > 0 && len(s) > hints.Limit {
		return s[:hints.Limit]
	}
	return s
}

type relabeledSeries struct {
	storage.Series
	lset labels.Labels
}

func (s *relabeledSeries) Labels() labels.Labels { return s.lset }

type relabeledChunkSeries struct {
	storage.ChunkSeries
	lset labels.Labels
}

func (s *relabeledChunkSeries) Labels() labels.Labels { return s.lset }

// sliceSet is a series set over a slice.
type sliceSet[S any] struct {
	series   []S
	i        int
	err      error
	warnings annotations.Annotations
}

func (s *sliceSet[S]) Next() bool {
	s.i++
	return s.i < len(s.series)
}
func (s *sliceSet[S]) At() S                             { return s.series[s.i] }
func (s *sliceSet[S]) Err() error                        { return s.err }
func (s *sliceSet[S]) Warnings() annotations.Annotations { return s.warnings }
