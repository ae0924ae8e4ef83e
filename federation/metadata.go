package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/prometheus/util/httputil"
	"github.com/thanos-io/thanos/pkg/metadata"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/storepb"

	apiv1 "github.com/prometheus/prometheus/web/api/v1"
)

// serveMetadata answers /api/v1/metadata from the endpoints that serve
// Thanos' Metadata gRPC API (Thanos sidecars and Queriers, other
// federators), fanned out with Thanos' metadata proxy: the parameters,
// shape and errors are Prometheus' (limit, limit_per_metric, metric), the
// entries of one metric are deduplicated across endpoints, and an endpoint
// that fails is a warning (or the error, with partial_response=false).
// Endpoints without the API (Panorama collectors, this version) are not
// asked.
func (f *Federator) serveMetadata(w http.ResponseWriter, r *http.Request) {
	httputil.SetCORS(w, f.cors, r)
	form, err := peekForm(r)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid form: %w", err))
		return
	}
	limit, limitPerMetric := -1, -1
	for _, p := range []struct {
		name string
		dst  *int
	}{{"limit", &limit}, {"limit_per_metric", &limitPerMetric}} {
		if s := form.Get(p.name); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("%s must be a number", p.name))
				return
			}
			*p.dst = v
		}
	}
	opts := requestOptionsFrom(r.Context(), f.queryable.defaults)
	if v := form.Get("partial_response"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "bad_data", fmt.Errorf("invalid parameter %q: %q is not a boolean (true or false)", "partial_response", v))
			return
		}
		opts.PartialResponse = b
	}
	strategy := storepb.PartialResponseStrategy_ABORT
	if opts.PartialResponse {
		strategy = storepb.PartialResponseStrategy_WARN
	}
	ctx, cancel := r.Context(), func() {}
	if f.opts.EndpointTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, f.opts.EndpointTimeout)
	}
	defer cancel()
	res, warns, err := metadata.NewGRPCClient(f.metadata).MetricMetadata(ctx, &metadatapb.MetricMetadataRequest{
		Metric:                  form.Get("metric"),
		Limit:                   int32(max(min(limit, 1<<30), -1)),
		PartialResponseStrategy: strategy,
	})
	if err != nil {
		writeAPIError(w, http.StatusUnprocessableEntity, "execution", err)
		return
	}
	type meta struct {
		Type string `json:"type"`
		Help string `json:"help"`
		Unit string `json:"unit"`
	}
	data := make(map[string][]meta, len(res))
	for name, ms := range res {
		for _, m := range ms {
			if limitPerMetric > 0 && len(data[name]) >= limitPerMetric {
				break
			}
			data[name] = append(data[name], meta{Type: m.Type, Help: m.Help, Unit: m.Unit})
		}
	}
	var warnings []string
	for _, w := range warns {
		warnings = append(warnings, w.Error())
	}
	writeJSON(w, apiv1.Response{Status: "success", Data: data, Warnings: warnings})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
