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
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/protobuf/proto"
)

// serveFederate is Prometheus' /federate: the newest float sample of every
// series the match[] selectors pick, within the lookback window, with the
// external labels attached (a series' own label wins) and an empty
// instance label where the series has none. Native histograms are left out
// of the text formats, as Prometheus does.
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
	type sample struct {
		lset labels.Labels
		t    int64
		f    float64
	}
	var out []sample
	var it chunkenc.Iterator
	for set.Next() {
		s := set.At()
		it = s.Iterator(it)
		var (
			t     int64
			f     float64
			found bool
		)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				found = false
				continue
			}
			t, f = it.At()
			found = true
		}
		if !found || value.IsStaleNaN(f) {
			continue
		}
		out = append(out, sample{lset: s.Labels(), t: t, f: f})
	}
	if err := set.Err(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	slices.SortStableFunc(out, func(a, b sample) int {
		return strings.Compare(a.lset.Get(labels.MetricName), b.lset.Get(labels.MetricName))
	})

	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	var fam *dto.MetricFamily
	flush := func() error {
		if fam == nil {
			return nil
		}
		return enc.Encode(fam)
	}
	for _, s := range out {
		name := s.lset.Get(labels.MetricName)
		if fam == nil || fam.GetName() != name {
			if err := flush(); err != nil {
				c.logger.Error("Federation failed", "err", err)
				return
			}
			fam = &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_UNTYPED.Enum()}
		}
		m := &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(s.f)}, TimestampMs: proto.Int64(s.t)}
		hasInstance := false
		s.lset.Range(func(l labels.Label) {
			if l.Name == labels.MetricName {
				return
			}
			if l.Name == model.InstanceLabel {
				hasInstance = true
			}
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
		})
		if !hasInstance {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(model.InstanceLabel), Value: proto.String("")})
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		fam.Metric = append(fam.Metric, m)
	}
	if err := flush(); err != nil {
		c.logger.Error("Federation failed", "err", err)
	}
}
