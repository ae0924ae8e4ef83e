package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/panorama-obs/panorama/tracing/store"
)

// WriteDependencies stores the bucket ending at ts as one document, _id =
// ts in Unix nanoseconds, in the dependencies index of ts's day, so writing
// the same bucket again replaces it.
func (s *Store) WriteDependencies(ctx context.Context, ts time.Time, links []store.DependencyLink) error {
	doc := dependenciesDoc{
		Timestamp:         ts.UTC().Format(time.RFC3339Nano),
		TimestampUnixNano: ts.UnixNano(),
		Dependencies:      make([]dependencyDoc, 0, len(links)),
	}
	for _, l := range links {
		doc.Dependencies = append(doc.Dependencies, dependencyDoc(l))
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return store.Permanent(err)
	}
	if err := s.ensureTemplates(ctx); err != nil {
		return err
	}
	index := s.indexName(kindDependencies, ts)
	res, err := s.do(ctx, esapi.IndexRequest{
		Index:      index,
		DocumentID: strconv.FormatInt(ts.UnixNano(), 10),
		Body:       bytes.NewReader(body),
		Refresh:    s.cfg.Refresh,
	})
	if err != nil {
		return fmt.Errorf("elasticsearch: write dependencies to %s: %w", index, err)
	}
	if err := responseError(res); err != nil {
		return fmt.Errorf("elasticsearch: write dependencies to %s: %w", index, err)
	}
	return nil
}

// GetDependencies sums the buckets with ts in (endTs-lookback, endTs].
func (s *Store) GetDependencies(ctx context.Context, endTs time.Time, lookback time.Duration) ([]store.DependencyLink, error) {
	from := endTs.Add(-lookback)
	sums := map[[2]string]uint64{}
	err := s.searchAll(ctx, s.indicesBetween(kindDependencies, from, endTs),
		map[string]any{"bool": map[string]any{"filter": []any{
			map[string]any{"range": map[string]any{"timestampUnixNano": map[string]any{
				"gt":  from.UnixNano(),
				"lte": endTs.UnixNano(),
			}}},
		}}},
		[]any{map[string]any{"timestampUnixNano": "asc"}},
		func(h searchHit) error {
			var doc dependenciesDoc
			if err := json.Unmarshal(h.Source, &doc); err != nil {
				return fmt.Errorf("elasticsearch: decode dependencies document %s/%s: %w", h.Index, h.ID, err)
			}
			for _, d := range doc.Dependencies {
				sums[[2]string{d.Parent, d.Child}] += d.CallCount
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	out := make([]store.DependencyLink, 0, len(sums))
	for k, n := range sums {
		out = append(out, store.DependencyLink{Parent: k[0], Child: k[1], CallCount: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Parent != out[j].Parent {
			return out[i].Parent < out[j].Parent
		}
		return out[i].Child < out[j].Child
	})
	return out, nil
}
