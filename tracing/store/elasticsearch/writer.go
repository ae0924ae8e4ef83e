package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// bulkItem is one index action of a _bulk request.
type bulkItem struct {
	index, id string
	body      []byte
	// stored runs once the item is stored.
	stored func()
}

// itemOutcome is what became of one item in one attempt.
type itemOutcome struct {
	ok        bool
	retryable bool
	reason    string
}

// WriteTraces indexes every span of td, plus the service/operation
// documents not yet written, with one _bulk request per BulkMaxBytes of
// body. Items rejected with 429, 5xx or any status but 400 are sent again
// with backoff, up to BulkMaxAttempts times; items rejected with 400 (the
// document does not fit the mapping) make the error permanent.
func (s *Store) WriteTraces(ctx context.Context, td ptrace.Traces) error {
	var items []bulkItem
	inBatch := map[string]bool{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				sp := ss.Spans().At(k)
				doc, err := newSpanDoc(rs, ss, sp)
				if err != nil {
					return store.Permanent(err)
				}
				body, err := json.Marshal(doc)
				if err != nil {
					return store.Permanent(fmt.Errorf("encode span %s: %w", doc.SpanID, err))
				}
				start := sp.StartTimestamp().AsTime()
				items = append(items, bulkItem{
					index: s.indexName(kindSpan, start),
					id:    doc.TraceID + doc.SpanID,
					body:  body,
				})
				svc := serviceDoc{ServiceName: doc.ServiceName, OperationName: doc.OperationName, SpanKind: doc.SpanKind}
				index, id := s.indexName(kindService, start), svc.id()
				key := index + "/" + id
				if inBatch[key] || s.serviceWritten(key) {
					continue
				}
				inBatch[key] = true
				body, err = json.Marshal(svc)
				if err != nil {
					return store.Permanent(err)
				}
				items = append(items, bulkItem{index: index, id: id, body: body, stored: func() { s.markServiceWritten(key) }})
			}
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.ensureTemplates(ctx); err != nil {
		return err
	}
	return s.bulk(ctx, items)
}

func (s *Store) serviceWritten(key string) bool {
	s.servicesMu.Lock()
	defer s.servicesMu.Unlock()
	return s.services[key]
}

func (s *Store) markServiceWritten(key string) {
	s.servicesMu.Lock()
	defer s.servicesMu.Unlock()
	// Bounded: forgetting only costs a rewrite of the same document.
	if len(s.services) > 100000 {
		s.services = map[string]bool{}
	}
	s.services[key] = true
}

// bulk stores items, sending again those rejected with a retryable status.
func (s *Store) bulk(ctx context.Context, items []bulkItem) error {
	pending := items
	var permanent []string
	for attempt := 1; ; attempt++ {
		outcomes := s.sendChunks(ctx, pending)
		var retry []bulkItem
		var lastReason string
		for i, o := range outcomes {
			switch {
			case o.ok:
				s.metrics.bulkItems.WithLabelValues("ok").Inc()
				if pending[i].stored != nil {
					pending[i].stored()
				}
			case o.retryable:
				retry = append(retry, pending[i])
				lastReason = o.reason
			default:
				s.metrics.bulkItems.WithLabelValues("failed").Inc()
				if len(permanent) < 5 {
					permanent = append(permanent, fmt.Sprintf("%s/%s: %s", pending[i].index, pending[i].id, o.reason))
				}
			}
		}
		if len(retry) == 0 {
			break
		}
		if attempt >= s.cfg.BulkMaxAttempts {
			s.metrics.bulkItems.WithLabelValues("failed").Add(float64(len(retry)))
			return fmt.Errorf("elasticsearch: %d of %d bulk items not stored after %d attempts (last: %s)", len(retry), len(items), attempt, lastReason)
		}
		s.metrics.bulkItems.WithLabelValues("retried").Add(float64(len(retry)))
		wait := s.cfg.BulkBackoff << (attempt - 1)
		if wait > 5*time.Second || wait <= 0 {
			wait = 5 * time.Second
		}
		s.logger.Debug("Retrying rejected bulk items", "items", len(retry), "attempt", attempt, "reason", lastReason, "wait", wait)
		select {
		case <-ctx.Done():
			return fmt.Errorf("elasticsearch: %d bulk items not stored: %w", len(retry), ctx.Err())
		case <-time.After(wait):
		}
		pending = retry
	}
	if len(permanent) > 0 {
		return store.Permanent(fmt.Errorf("elasticsearch: bulk items rejected: %s", strings.Join(permanent, "; ")))
	}
	return nil
}

// sendChunks sends items in _bulk requests of at most BulkMaxBytes, up to
// BulkWorkers at once, and returns the outcome of each item.
func (s *Store) sendChunks(ctx context.Context, items []bulkItem) []itemOutcome {
	outcomes := make([]itemOutcome, len(items))
	type chunk struct{ from, to int }
	var chunks []chunk
	size, from := 0, 0
	for i, it := range items {
		n := len(it.body) + len(it.index) + len(it.id) + 40
		if i > from && size+n > s.cfg.BulkMaxBytes {
			chunks = append(chunks, chunk{from, i})
			from, size = i, 0
		}
		size += n
	}
	chunks = append(chunks, chunk{from, len(items)})

	sem := make(chan struct{}, s.cfg.BulkWorkers)
	var wg sync.WaitGroup
	for _, c := range chunks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.sendBulk(ctx, items[c.from:c.to], outcomes[c.from:c.to])
		}()
	}
	wg.Wait()
	return outcomes
}

// bulkResponse is the part of a _bulk answer the writer reads.
type bulkResponse struct {
	Errors bool                        `json:"errors"`
	Items  []map[string]bulkItemResult `json:"items"`
}

type bulkItemResult struct {
	Index  string `json:"_index"`
	ID     string `json:"_id"`
	Status int    `json:"status"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// sendBulk sends one _bulk request and fills the outcome of each item.
func (s *Store) sendBulk(ctx context.Context, items []bulkItem, outcomes []itemOutcome) {
	all := func(o itemOutcome) {
		for i := range outcomes {
			outcomes[i] = o
		}
	}
	var buf bytes.Buffer
	for _, it := range items {
		meta, _ := json.Marshal(map[string]any{"index": map[string]string{"_index": it.index, "_id": it.id}})
		buf.Write(meta)
		buf.WriteByte('\n')
		buf.Write(it.body)
		buf.WriteByte('\n')
	}
	res, err := s.do(ctx, esapi.BulkRequest{Body: &buf, Refresh: s.cfg.Refresh})
	if err != nil {
		all(itemOutcome{retryable: true, reason: err.Error()})
		return
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		err := responseError(res)
		// A malformed request stays malformed; anything else (overload,
		// a node restarting, credentials being rotated) may pass later.
		all(itemOutcome{retryable: res.StatusCode != 400, reason: err.Error()})
		return
	}
	defer res.Body.Close()
	var br bulkResponse
	if err := json.NewDecoder(res.Body).Decode(&br); err != nil {
		all(itemOutcome{retryable: true, reason: "decode _bulk answer: " + err.Error()})
		return
	}
	if len(br.Items) != len(items) {
		all(itemOutcome{retryable: true, reason: fmt.Sprintf("_bulk answered %d items for %d", len(br.Items), len(items))})
		return
	}
	for i, m := range br.Items {
		var r bulkItemResult
		for _, v := range m {
			r = v
		}
		switch {
		case r.Status >= 200 && r.Status < 300:
			outcomes[i] = itemOutcome{ok: true}
		default:
			reason := fmt.Sprintf("status %d", r.Status)
			if r.Error != nil {
				reason += ": " + r.Error.Type + ": " + r.Error.Reason
			}
			// Only a 400 is about the document itself (it does not fit
			// the mapping); anything else (429, 5xx, a 403 or a 404
			// while index creation is not allowed) can pass once the
			// cluster or its settings change.
			outcomes[i] = itemOutcome{retryable: r.Status != 400, reason: reason}
		}
	}
}
