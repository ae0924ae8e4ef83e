package collector

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
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
	return &externalLabelsQuerier{Querier: inner, ext: q.ext, extList: q.extList}, nil
}

type externalLabelsQuerier struct {
	storage.Querier
	ext     labels.Labels
	extList []labels.Label // ext, sorted by name
}

// split separates the matchers on external label names, which are checked
// after the labels are attached, from those the storage can use.
func (q *externalLabelsQuerier) split(ms []*labels.Matcher) (inner, outer []*labels.Matcher) {
	for _, m := range ms {
		if q.ext.Has(m.Name) {
			outer = append(outer, m)
		} else {
			inner = append(inner, m)
		}
	}
	return inner, outer
}

func (q *externalLabelsQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	inner, outer := q.split(ms)
	if len(inner) == 0 {
		// The storage refuses a selection with no matcher; this one
		// selects everything, which the outer matchers then narrow.
		inner = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	}
	collide := q.mayCollide(ctx)
	if !collide {
		// No stored series carries an external label name: the matchers
		// on them are decided once, against the external values.
		for _, m := range outer {
			if !m.Matches(q.ext.Get(m.Name)) {
				return storage.EmptySeriesSet()
			}
		}
		outer = nil
	}
	set := &attachingSeriesSet{inner: q.Querier.Select(ctx, false, hints, inner...), q: q, outer: outer}
	if !sortSeries && !collide {
		return set
	}
	// Attaching labels can change the order of series, so sort after; and
	// where some stored series carry an external label name themselves,
	// two series may now share a label set: merge them, as Prometheus'
	// fan-out storage merges identical series.
	var out []storage.Series
	for set.Next() {
		out = append(out, set.At())
	}
	slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	if collide {
		out = mergeIdentical(out)
	}
	return &sliceSeriesSet{series: out, i: -1, err: set.Err(), warnings: set.Warnings()}
}

// mayCollide reports whether any stored series carries an external label
// name itself; only then can attaching the external labels make two series
// identical.
func (q *externalLabelsQuerier) mayCollide(ctx context.Context) bool {
	collide := false
	q.ext.Range(func(l labels.Label) {
		if collide {
			return
		}
		vals, _, err := q.Querier.LabelValues(ctx, l.Name, nil)
		collide = err != nil || len(vals) > 0
	})
	return collide
}

// mergeIdentical merges neighbouring series with equal labels in a sorted
// slice.
func mergeIdentical(sorted []storage.Series) []storage.Series {
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
			out = append(out, storage.ChainedSeriesMerge(slices.Clone(sorted[i:j])...))
		}
		i = j
	}
	return out
}

// attachingSeriesSet attaches the external labels to each series and drops
// those the matchers on external label names reject.
type attachingSeriesSet struct {
	inner storage.SeriesSet
	q     *externalLabelsQuerier
	outer []*labels.Matcher
	cur   storage.Series
	b     labels.ScratchBuilder
}

func (s *attachingSeriesSet) Next() bool {
	for s.inner.Next() {
		series := s.inner.At()
		lset := s.q.attach(&s.b, series.Labels())
		if matchesAll(s.outer, lset) {
			s.cur = &relabeledSeries{Series: series, lset: lset}
			return true
		}
	}
	return false
}
func (s *attachingSeriesSet) At() storage.Series                { return s.cur }
func (s *attachingSeriesSet) Err() error                        { return s.inner.Err() }
func (s *attachingSeriesSet) Warnings() annotations.Annotations { return s.inner.Warnings() }

// attach merges the external labels into a series' sorted labels in one
// pass, with one allocation; a series' own label wins.
func (q *externalLabelsQuerier) attach(b *labels.ScratchBuilder, lset labels.Labels) labels.Labels {
	missing := false
	for _, e := range q.extList {
		if !lset.Has(e.Name) {
			missing = true
			break
		}
	}
	if !missing {
		return lset
	}
	b.Reset()
	ext := q.extList
	lset.Range(func(l labels.Label) {
		for len(ext) > 0 && ext[0].Name < l.Name {
			b.Add(ext[0].Name, ext[0].Value)
			ext = ext[1:]
		}
		if len(ext) > 0 && ext[0].Name == l.Name {
			ext = ext[1:]
		}
		b.Add(l.Name, l.Value)
	})
	for _, e := range ext {
		b.Add(e.Name, e.Value)
	}
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
	inner, outer := q.split(ms)
	if len(outer) > 0 || q.ext.Has(name) {
		// Answer exactly from the series themselves.
		return q.valuesFromSeries(ctx, name, hints, inner, outer)
	}
	return q.Querier.LabelValues(ctx, name, hints, inner...)
}

func (q *externalLabelsQuerier) valuesFromSeries(ctx context.Context, name string, hints *storage.LabelHints, inner, outer []*labels.Matcher) ([]string, annotations.Annotations, error) {
	ss := q.Select(ctx, false, nil, append(inner, outer...)...)
	seen := map[string]struct{}{}
	for ss.Next() {
		if v := ss.At().Labels().Get(name); v != "" {
			seen[v] = struct{}{}
		}
	}
	if err := ss.Err(); err != nil {
		return nil, ss.Warnings(), err
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return limit(out, hints), ss.Warnings(), nil
}

func (q *externalLabelsQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	inner, outer := q.split(ms)
	if len(outer) > 0 {
		ss := q.Select(ctx, false, nil, ms...)
		seen := map[string]struct{}{}
		for ss.Next() {
			ss.At().Labels().Range(func(l labels.Label) { seen[l.Name] = struct{}{} })
		}
		if err := ss.Err(); err != nil {
			return nil, ss.Warnings(), err
		}
		out := make([]string, 0, len(seen))
		for n := range seen {
			out = append(out, n)
		}
		slices.Sort(out)
		return limit(out, hints), ss.Warnings(), nil
	}
	names, ws, err := q.Querier.LabelNames(ctx, hints, inner...)
	if err != nil || len(names) == 0 {
		return names, ws, err
	}
	q.ext.Range(func(l labels.Label) {
		if i, found := slices.BinarySearch(names, l.Name); !found {
			names = slices.Insert(names, i, l.Name)
		}
	})
	return limit(names, hints), ws, nil
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

type sliceSeriesSet struct {
	series   []storage.Series
	i        int
	err      error
	warnings annotations.Annotations
}

func (s *sliceSeriesSet) Next() bool {
	s.i++
	return s.i < len(s.series)
}
func (s *sliceSeriesSet) At() storage.Series                { return s.series[s.i] }
func (s *sliceSeriesSet) Err() error                        { return s.err }
func (s *sliceSeriesSet) Warnings() annotations.Annotations { return s.warnings }
