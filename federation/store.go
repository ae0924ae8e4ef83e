package federation

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
)

// storeServer is the federator's one view of all its endpoints, as a
// StoreAPI: Thanos' proxy store, plus the federator's own external labels
// (--label). The PromQL queryable reads through it and the gRPC StoreAPI
// serves it to the next level up, so both see the same series.
//
// As in a collector's or a Thanos sidecar's StoreAPI, the external labels
// are attached to every series, overriding a series' own label of the same
// name, and the proxy (which has them as its selector labels) already
// answers nothing to a matcher they contradict. Replica labels that a
// request asks to drop are not attached.
type storeServer struct {
	proxy *store.ProxyStore
	ext   labels.Labels
}

func (s *storeServer) attached(withoutReplicaLabels []string) labels.Labels {
	if len(withoutReplicaLabels) == 0 || s.ext.IsEmpty() {
		return s.ext
	}
	b := labels.NewBuilder(s.ext)
	for _, n := range withoutReplicaLabels {
		b.Del(n)
	}
	return b.Labels()
}

// externalNames are the label names the endpoints (and the federator) hold
// as external labels, which stores strip from a request's matchers.
func (s *storeServer) externalNames() map[string]struct{} {
	names := map[string]struct{}{}
	for _, ls := range s.proxy.LabelSet() {
		for _, l := range ls.Labels {
			names[l.Name] = struct{}{}
		}
	}
	return names
}

// withSelector makes sure a request keeps a matcher once the stores have
// stripped those on external labels: Prometheus accepts {cluster="east"}
// as a selector of every series of that cluster, while a StoreAPI refuses a
// request left with no matcher. The same fix as the collector's own API.
func (s *storeServer) withSelector(ms []storepb.LabelMatcher) []storepb.LabelMatcher {
	ext := s.externalNames()
	for _, m := range ms {
		if _, ok := ext[m.Name]; !ok {
			return ms
		}
	}
	return append(slices.Clip(ms), storepb.LabelMatcher{Type: storepb.LabelMatcher_RE, Name: labels.MetricName, Value: ".+"})
}

func (s *storeServer) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	r := *req
	r.Matchers = s.withSelector(req.Matchers)
	ext := s.attached(req.WithoutReplicaLabels)
	if ext.IsEmpty() {
		return s.proxy.Series(&r, srv)
	}
	// Attaching labels can change the order of series (when a series has
	// its own label of an external name), and the next level merges sorted
	// streams: so collect, attach, and re-sort when needed, as Thanos'
	// TSDBStore does for the same reason.
	r.ResponseBatchSize = 0
	buf := &collectingServer{Store_SeriesServer: srv}
	if err := s.proxy.Series(&r, buf); err != nil {
		return err
	}
	var prev labels.Labels
	sorted := true
	for i, series := range buf.series {
		lset := labelpb.ExtendSortedLabels(labelpb.ZLabelsToPromLabels(series.Labels), ext)
		series.Labels = labelpb.ZLabelsFromPromLabels(lset)
		if i > 0 && labels.Compare(prev, lset) > 0 {
			sorted = false
		}
		prev = lset
	}
	if !sorted {
		// Stable, so that the frames of one series stay in order.
		slices.SortStableFunc(buf.series, func(a, b *storepb.Series) int {
			return labels.Compare(labelpb.ZLabelsToPromLabels(a.Labels), labelpb.ZLabelsToPromLabels(b.Labels))
		})
	}
	batch := int(req.ResponseBatchSize)
	if batch <= 1 {
		for _, series := range buf.series {
			if err := srv.Send(storepb.NewSeriesResponse(series)); err != nil {
				return err
			}
		}
		return nil
	}
	for start := 0; start < len(buf.series); start += batch {
		if err := srv.Send(storepb.NewBatchResponse(buf.series[start:min(start+batch, len(buf.series))])); err != nil {
			return err
		}
	}
	return nil
}

// collectingServer keeps the series of a proxy response and passes
// warnings and hints straight on.
type collectingServer struct {
	storepb.Store_SeriesServer
	series []*storepb.Series
}

func (c *collectingServer) Send(r *storepb.SeriesResponse) error {
	switch {
	case r.GetSeries() != nil:
		c.series = append(c.series, r.GetSeries())
	case r.GetBatch() != nil:
		c.series = append(c.series, r.GetBatch().Series...)
	default:
		return c.Store_SeriesServer.Send(r)
	}
	return nil
}

func (s *storeServer) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	resp, err := s.proxy.LabelNames(ctx, req)
	ext := s.attached(req.WithoutReplicaLabels)
	if err != nil || ext.IsEmpty() || len(resp.Names) == 0 {
		return resp, err
	}
	names := resp.Names
	slices.Sort(names)
	ext.Range(func(l labels.Label) {
		if i, found := slices.BinarySearch(names, l.Name); !found {
			names = slices.Insert(names, i, l.Name)
		}
	})
	if req.Limit > 0 && len(names) > int(req.Limit) {
		names = names[:req.Limit]
	}
	resp.Names = names
	return resp, nil
}

func (s *storeServer) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	v := s.attached(req.WithoutReplicaLabels).Get(req.Label)
	if v == "" {
		return s.proxy.LabelValues(ctx, req)
	}
	// Every series served has this value; the only question is whether
	// any series matches at all.
	names, err := s.proxy.LabelNames(ctx, &storepb.LabelNamesRequest{
		PartialResponseDisabled: req.PartialResponseDisabled,
		PartialResponseStrategy: req.PartialResponseStrategy,
		Start:                   req.Start,
		End:                     req.End,
		Matchers:                req.Matchers,
		WithoutReplicaLabels:    req.WithoutReplicaLabels,
		Limit:                   1,
	})
	if err != nil {
		return nil, err
	}
	resp := &storepb.LabelValuesResponse{Warnings: names.Warnings}
	if len(names.Names) > 0 {
		resp.Values = []string{v}
	}
	return resp, nil
}

var _ storepb.StoreServer = (*storeServer)(nil)
