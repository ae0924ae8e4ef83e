package collector

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/protobuf/proto"
)

// federatedSample is the newest sample of one series: a float, or a
// histogram (h non-nil).
type federatedSample struct {
	lset labels.Labels
	t    int64
	f    float64
	h    *histogram.FloatHistogram
}

// serveFederate is Prometheus' /federate, following web/federate.go of the
// Prometheus version Panorama is built on: the newest sample of every series
// the match[] selectors pick, within the lookback window; the external
// labels attached (a series' own label wins) and an empty instance label
// where the series has none; native histograms in the protobuf formats only,
// histograms with custom buckets as classic histograms.
func (c *Collector) serveFederate(w http.ResponseWriter, req *http.Request) {
	if err := req.ParseForm(); err != nil {
		http.Error(w, fmt.Sprintf("error parsing form values: %v", err), http.StatusBadRequest)
		return
	}
	matcherSets, err := parser.ParseMetricSelectors(req.Form["match[]"])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	lookback := c.opts.LookbackDelta
	if lookback == 0 {
		lookback = 5 * time.Minute
	}
	now := time.Now()
	mint, maxt := timestamp.FromTime(now.Add(-lookback)), timestamp.FromTime(now)
	format := expfmt.Negotiate(req.Header)
	q, err := c.queryable.Querier(mint, maxt)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, tsdb.ErrNotReady) {
			code = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), code)
		return
	}
	defer q.Close()

	hints := &storage.SelectHints{Start: mint, End: maxt}
	sets := make([]storage.SeriesSet, 0, len(matcherSets))
	for _, ms := range matcherSets {
		sets = append(sets, q.Select(req.Context(), true, hints, ms...))
	}
	set := storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge)
	var (
		out []federatedSample
		it  chunkenc.Iterator
	)
	for set.Next() {
		s := set.At()
		it = s.Iterator(it)
		last := federatedSample{lset: s.Labels(), t: -1}
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				last.t, last.f = it.At()
				last.h = nil
			case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
				last.t, last.h = it.AtFloatHistogram(nil)
			}
		}
		if err := it.Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// The exposition formats have no stale markers: a stale series
		// is simply not federated.
		if last.t < 0 || (last.h == nil && value.IsStaleNaN(last.f)) || (last.h != nil && value.IsStaleNaN(last.h.Sum)) {
			continue
		}
		out = append(out, last)
	}
	if err := set.Err(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	slices.SortStableFunc(out, func(a, b federatedSample) int {
		return strings.Compare(a.lset.Get(labels.MetricName), b.lset.Get(labels.MetricName))
	})

	w.Header().Set("Content-Type", string(format))
	if err := encodeFederated(expfmt.NewEncoder(w, format), format, out); err != nil {
		c.logger.Error("Federation failed", "err", err)
	}
}

// encodeFederated writes the samples as metric families, a new family
// whenever the name or the kind of sample (float, histogram, gauge
// histogram) changes, as Prometheus does.
func encodeFederated(enc expfmt.Encoder, format expfmt.Format, samples []federatedSample) error {
	protobuf := false
	switch format.FormatType() {
	case expfmt.TypeProtoDelim, expfmt.TypeProtoText, expfmt.TypeProtoCompact:
		protobuf = true
	}
	var fam *dto.MetricFamily
	for _, s := range samples {
		if s.h != nil && !s.h.UsesCustomBuckets() && !protobuf {
			continue // a native histogram has no text exposition
		}
		name := s.lset.Get(labels.MetricName)
		if name == "" {
			continue
		}
		typ := dto.MetricType_UNTYPED
		if s.h != nil {
			typ = dto.MetricType_HISTOGRAM
			if s.h.CounterResetHint == histogram.GaugeType {
				typ = dto.MetricType_GAUGE_HISTOGRAM
			}
		}
		if fam == nil || fam.GetName() != name || fam.GetType() != typ {
			if fam != nil {
				if err := enc.Encode(fam); err != nil {
					return err
				}
			}
			fam = &dto.MetricFamily{Name: proto.String(name), Type: typ.Enum()}
		}
		m := &dto.Metric{TimestampMs: proto.Int64(s.t)}
		hasInstance := false
		s.lset.Range(func(l labels.Label) {
			if l.Name == labels.MetricName || l.Value == "" {
				return
			}
			hasInstance = hasInstance || l.Name == model.InstanceLabel
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
		})
		if !hasInstance {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(model.InstanceLabel), Value: proto.String("")})
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		switch {
		case s.h == nil:
			m.Untyped = &dto.Untyped{Value: proto.Float64(s.f)}
		case s.h.UsesCustomBuckets():
			m.Histogram = classicHistogram(s.h)
		default:
			m.Histogram = nativeHistogram(s.h)
		}
		fam.Metric = append(fam.Metric, m)
	}
	if fam != nil {
		return enc.Encode(fam)
	}
	return nil
}

// nativeHistogram is an exponential-schema histogram in the exposition
// protobuf.
func nativeHistogram(h *histogram.FloatHistogram) *dto.Histogram {
	return &dto.Histogram{
		SampleCountFloat: proto.Float64(h.Count),
		SampleSum:        proto.Float64(h.Sum),
		Schema:           proto.Int32(h.Schema),
		ZeroThreshold:    proto.Float64(h.ZeroThreshold),
		ZeroCountFloat:   proto.Float64(h.ZeroCount),
		NegativeCount:    h.NegativeBuckets,
		PositiveCount:    h.PositiveBuckets,
		NegativeSpan:     bucketSpans(h.NegativeSpans),
		PositiveSpan:     bucketSpans(h.PositiveSpans),
	}
}

func bucketSpans(spans []histogram.Span) []*dto.BucketSpan {
	if len(spans) == 0 {
		return nil
	}
	out := make([]*dto.BucketSpan, len(spans))
	for i, sp := range spans {
		out[i] = &dto.BucketSpan{Offset: proto.Int32(sp.Offset), Length: proto.Uint32(sp.Length)}
	}
	return out
}

// classicHistogram turns a histogram with custom buckets (NHCB) back into
// cumulative buckets; the +Inf bucket is implied.
func classicHistogram(h *histogram.FloatHistogram) *dto.Histogram {
	result := &dto.Histogram{
		SampleCountFloat: proto.Float64(h.Count),
		SampleSum:        proto.Float64(h.Sum),
		Bucket:           make([]*dto.Bucket, len(h.CustomValues)),
	}
	var (
		cumulative float64
		it         = h.PositiveBucketIterator()
		more       = it.Next()
	)
	for i, le := range h.CustomValues {
		for more && int(it.At().Index) < i {
			more = it.Next()
		}
		if more && int(it.At().Index) == i {
			cumulative += it.At().Count
		}
		result.Bucket[i] = &dto.Bucket{UpperBound: proto.Float64(le), CumulativeCountFloat: proto.Float64(cumulative)}
	}
	return result
}
