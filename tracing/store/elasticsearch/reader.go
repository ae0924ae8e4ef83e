package elasticsearch

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// searchResponse is the part of a _search answer the reader uses.
type searchResponse struct {
	Hits struct {
		Hits []searchHit `json:"hits"`
	} `json:"hits"`
	Aggregations json.RawMessage `json:"aggregations"`
}

type searchHit struct {
	Index  string            `json:"_index"`
	ID     string            `json:"_id"`
	Source json.RawMessage   `json:"_source"`
	Sort   []json.RawMessage `json:"sort"`
}

// search runs one _search over indices; missing indices are skipped.
func (s *Store) search(ctx context.Context, indices []string, body map[string]any) (*searchResponse, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	yes := true
	res, err := s.do(ctx, esapi.SearchRequest{
		Index:             indices,
		Body:              bytes.NewReader(b),
		IgnoreUnavailable: &yes,
		AllowNoIndices:    &yes,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: search %v: %w", indices, err)
	}
	if err := responseError(res); err != nil {
		return nil, fmt.Errorf("elasticsearch: search %v: %w", indices, err)
	}
	defer res.Body.Close()
	var sr searchResponse
	if err := json.NewDecoder(res.Body).Decode(&sr); err != nil {
		return nil, fmt.Errorf("elasticsearch: decode search answer: %w", err)
	}
	return &sr, nil
}

// searchAll pages through every hit of query with search_after; sort must
// end in a field unique per document.
func (s *Store) searchAll(ctx context.Context, indices []string, query map[string]any, sortBy []any, each func(searchHit) error) error {
	var after []json.RawMessage
	for {
		body := map[string]any{
			"query":            query,
			"sort":             sortBy,
			"size":             s.cfg.PageSize,
			"track_total_hits": false,
		}
		if after != nil {
			body["search_after"] = after
		}
		sr, err := s.search(ctx, indices, body)
		if err != nil {
			return err
		}
		for _, h := range sr.Hits.Hits {
			if err := each(h); err != nil {
				return err
			}
		}
		if len(sr.Hits.Hits) < s.cfg.PageSize {
			return nil
		}
		after = sr.Hits.Hits[len(sr.Hits.Hits)-1].Sort
		if len(after) == 0 {
			return fmt.Errorf("elasticsearch: search answer without sort values; cannot page")
		}
	}
}

func term(field string, value any) map[string]any {
	return map[string]any{"term": map[string]any{field: value}}
}

// GetTrace returns every span of the trace from all span indices.
func (s *Store) GetTrace(ctx context.Context, id pcommon.TraceID) (ptrace.Traces, error) {
	traces, err := s.getTraces(ctx, []pcommon.TraceID{id})
	if err != nil {
		return ptrace.NewTraces(), err
	}
	td, ok := traces[id]
	if !ok {
		return ptrace.NewTraces(), store.ErrTraceNotFound
	}
	return td, nil
}

// getTraces reads every span of the given traces.
func (s *Store) getTraces(ctx context.Context, ids []pcommon.TraceID) (map[pcommon.TraceID]ptrace.Traces, error) {
	hexIDs := make([]string, len(ids))
	for i, id := range ids {
		hexIDs[i] = id.String()
	}
	// A span written again with another start time lives in two daily
	// indices; keep one.
	seen := map[string]bool{}
	out := map[pcommon.TraceID]ptrace.Traces{}
	err := s.searchAll(ctx, []string{s.indexPattern(kindSpan)},
		map[string]any{"bool": map[string]any{"filter": []any{
			map[string]any{"terms": map[string]any{"traceID": hexIDs}},
		}}},
		[]any{map[string]any{"traceID": "asc"}, map[string]any{"spanID": "asc"}},
		func(h searchHit) error {
			var doc struct {
				TraceID string          `json:"traceID"`
				SpanID  string          `json:"spanID"`
				OTLP    json.RawMessage `json:"otlp"`
			}
			if err := json.Unmarshal(h.Source, &doc); err != nil {
				return fmt.Errorf("elasticsearch: decode span document %s/%s: %w", h.Index, h.ID, err)
			}
			if seen[doc.TraceID+doc.SpanID] {
				return nil
			}
			seen[doc.TraceID+doc.SpanID] = true
			id, err := parseTraceID(doc.TraceID)
			if err != nil {
				return fmt.Errorf("elasticsearch: span document %s/%s: %w", h.Index, h.ID, err)
			}
			td, ok := out[id]
			if !ok {
				td = ptrace.NewTraces()
				out[id] = td
			}
			if err := appendSpan(td, doc.OTLP); err != nil {
				return fmt.Errorf("elasticsearch: span document %s/%s: %w", h.Index, h.ID, err)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseTraceID parses the 32 hex digits of a trace ID.
func parseTraceID(s string) (pcommon.TraceID, error) {
	var id pcommon.TraceID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("not a trace ID: %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// termsBucket is one bucket of a terms aggregation.
type termsBucket struct {
	Key      json.RawMessage `json:"key"`
	DocCount int64           `json:"doc_count"`
	Kinds    struct {
		Buckets []termsBucket `json:"buckets"`
	} `json:"kinds"`
	Newest struct {
		Value *float64 `json:"value"`
	} `json:"newest"`
}

func (b termsBucket) keyString() string {
	var s string
	if json.Unmarshal(b.Key, &s) == nil {
		return s
	}
	return string(b.Key)
}

// maxTerms bounds the service and operation lists.
const maxTerms = 10000

// GetServices lists the services of the service index.
func (s *Store) GetServices(ctx context.Context) ([]string, error) {
	sr, err := s.search(ctx, []string{s.indexPattern(kindService)}, map[string]any{
		"size": 0,
		"aggs": map[string]any{"services": map[string]any{
			"terms": map[string]any{"field": "serviceName", "size": maxTerms},
		}},
	})
	if err != nil {
		return nil, err
	}
	var aggs struct {
		Services struct{ Buckets []termsBucket } `json:"services"`
	}
	if err := decodeAggs(sr, &aggs); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(aggs.Services.Buckets))
	for _, b := range aggs.Services.Buckets {
		out = append(out, b.keyString())
	}
	sort.Strings(out)
	return out, nil
}

func decodeAggs(sr *searchResponse, v any) error {
	if len(sr.Aggregations) == 0 {
		return nil
	}
	if err := json.Unmarshal(sr.Aggregations, v); err != nil {
		return fmt.Errorf("elasticsearch: decode aggregations: %w", err)
	}
	return nil
}

// GetOperations lists the operations of a service, of one kind or all.
func (s *Store) GetOperations(ctx context.Context, q store.OperationQuery) ([]store.Operation, error) {
	filter := []any{term("serviceName", q.ServiceName)}
	if q.SpanKind != "" {
		kind := q.SpanKind
		if kind == "unspecified" {
			kind = ""
		}
		filter = append(filter, term("spanKind", kind))
	}
	sr, err := s.search(ctx, []string{s.indexPattern(kindService)}, map[string]any{
		"size":  0,
		"query": map[string]any{"bool": map[string]any{"filter": filter}},
		"aggs": map[string]any{"operations": map[string]any{
			"terms": map[string]any{"field": "operationName", "size": maxTerms},
			"aggs": map[string]any{"kinds": map[string]any{
				"terms": map[string]any{"field": "spanKind", "size": 10},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	var aggs struct {
		Operations struct{ Buckets []termsBucket } `json:"operations"`
	}
	if err := decodeAggs(sr, &aggs); err != nil {
		return nil, err
	}
	var out []store.Operation
	for _, op := range aggs.Operations.Buckets {
		for _, k := range op.Kinds.Buckets {
			out = append(out, store.Operation{Name: op.keyString(), SpanKind: k.keyString()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].SpanKind < out[j].SpanKind
	})
	return out, nil
}

// FindTraces finds the IDs of the traces with a matching span, newest
// first, with a terms aggregation over the daily indices the time range
// covers, then reads those traces whole.
func (s *Store) FindTraces(ctx context.Context, q store.TraceQuery) ([]ptrace.Traces, error) {
	limit := q.NumTraces
	if limit <= 0 {
		limit = store.DefaultNumTraces
	}
	filter := []any{term("serviceName", q.ServiceName)}
	if q.OperationName != "" {
		filter = append(filter, term("operationName", q.OperationName))
	}
	if !q.StartTimeMin.IsZero() || !q.StartTimeMax.IsZero() {
		r := map[string]any{}
		if !q.StartTimeMin.IsZero() {
			r["gte"] = q.StartTimeMin.UnixNano()
		}
		if !q.StartTimeMax.IsZero() {
			r["lte"] = q.StartTimeMax.UnixNano()
		}
		filter = append(filter, map[string]any{"range": map[string]any{"startTimeUnixNano": r}})
	}
	if q.DurationMin > 0 || q.DurationMax > 0 {
		r := map[string]any{}
		if q.DurationMin > 0 {
			r["gte"] = q.DurationMin.Nanoseconds()
		}
		if q.DurationMax > 0 {
			r["lte"] = q.DurationMax.Nanoseconds()
		}
		filter = append(filter, map[string]any{"range": map[string]any{"durationNanos": r}})
	}
	keys := make([]string, 0, len(q.Tags))
	for k := range q.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		filter = append(filter, map[string]any{"nested": map[string]any{
			"path": "tags",
			"query": map[string]any{"bool": map[string]any{"filter": []any{
				term("tags.key", k),
				term("tags.value", q.Tags[k]),
			}}},
		}})
	}
	indices := s.indicesBetween(kindSpan, q.StartTimeMin, q.StartTimeMax)
	if len(indices) == 0 {
		return nil, nil
	}
	sr, err := s.search(ctx, indices, map[string]any{
		"size":             0,
		"track_total_hits": false,
		"query":            map[string]any{"bool": map[string]any{"filter": filter}},
		"aggs": map[string]any{"traces": map[string]any{
			"terms": map[string]any{
				"field": "traceID",
				"size":  limit,
				"order": []any{map[string]any{"newest": "desc"}, map[string]any{"_key": "asc"}},
			},
			"aggs": map[string]any{"newest": map[string]any{"max": map[string]any{"field": "startTimeUnixNano"}}},
		}},
	})
	if err != nil {
		return nil, err
	}
	var aggs struct {
		Traces struct{ Buckets []termsBucket } `json:"traces"`
	}
	if err := decodeAggs(sr, &aggs); err != nil {
		return nil, err
	}
	ids := make([]pcommon.TraceID, 0, len(aggs.Traces.Buckets))
	for _, b := range aggs.Traces.Buckets {
		id, err := parseTraceID(b.keyString())
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: aggregation: %w", err)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	traces, err := s.getTraces(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]ptrace.Traces, 0, len(ids))
	for _, id := range ids {
		if td, ok := traces[id]; ok {
			out = append(out, td)
		}
	}
	return out, nil
}
