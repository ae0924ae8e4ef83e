package collector

import (
	"context"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"

	"github.com/panorama-obs/panorama/federation/pushdown"
)

// servePushDown adds the push-down service to the StoreAPI's gRPC server:
// a federator above evaluates distributable aggregations here, with the
// collector's own engine over the series its StoreAPI serves (external
// labels attached; replica labels dropped when the federator deduplicates,
// as its querier does with pulled series). Partial sums, topk and JSON
// answers read the series without the external labels and add them where
// the answer is made, when no stored series has a label of their names
// (pushdown.Server.Unattached). A request evaluates with the
// smaller of the collector's --query.max-samples (maxSamples, engine's
// limit) and the federator's, from limited.
func (s *storeServer) servePushDown(engine promql.QueryEngine, maxSamples int, limited *pushdown.Engines, q *externalLabelsQueryable) {
	pushdown.Register(s.srv, &pushdown.Server{
		Engine:     engine,
		MaxSamples: maxSamples,
		Limited:    limited.Get,
		Queryable: func(ctx context.Context, req *pushdown.Request) (context.Context, storage.Queryable) {
			if !req.Dedup {
				return ctx, q
			}
			return ctx, pushdown.WithoutLabels(q, req.ReplicaLabels)
		},
		Unattached: func(ctx context.Context, req *pushdown.Request) (storage.Queryable, labels.Labels, bool) {
			uq, ok := q.unattached(ctx)
			if !ok {
				return nil, labels.EmptyLabels(), false
			}
			if !req.Dedup {
				return uq, q.ext, true
			}
			return pushdown.WithoutLabels(uq, req.ReplicaLabels), labels.NewBuilder(q.ext).Del(req.ReplicaLabels...).Labels(), true
		},
	})
}
