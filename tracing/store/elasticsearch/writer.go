package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// flushInterval is how often the BulkIndexer's workers send what they
// hold even when no write asked for a flush; each write flushes its own
// items explicitly, so this is only a backstop.
const flushInterval = time.Second

// bulkItem is one index action of a write.
type bulkItem struct {
	index, id string
	body      []byte
	// stored runs once the item is stored.
	stored func()
	// attempts is how often the item has been added to the BulkIndexer,
	// resolved the last attempt whose outcome was counted; both are
	// guarded by the write's mutex.
	attempts, resolved int
}

// newBulkIndexer returns the store's BulkIndexer: it sends through the
// store's own transport (no elasticsearch.Client), --es.bulk.workers
// workers, _bulk bodies of at most --es.bulk.max-bytes.
func (s *Store) newBulkIndexer() (esutil.BulkIndexer, error) {
	type cancelKey struct{}
	return esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client:        &bulkTransport{c: s.client},
		Decoder:       bulkDecoder{},
		NumWorkers:    s.cfg.BulkWorkers,
		FlushBytes:    s.cfg.BulkMaxBytes,
		FlushInterval: flushInterval,
		Refresh:       s.cfg.Refresh,
		OnError: func(_ context.Context, err error) {
			// Each item of a failed flush also gets OnFailure with the
			// error; that is where it is retried or given up.
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.logger.Debug("Elasticsearch _bulk request failed", "err", err)
			}
		},
		// Each _bulk request, answer included, is bounded by
		// --es.request-timeout, as every other request.
		OnFlushStart: func(ctx context.Context) context.Context {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			return context.WithValue(ctx, cancelKey{}, cancel)
		},
		OnFlushEnd: func(ctx context.Context) {
			if cancel, ok := ctx.Value(cancelKey{}).(context.CancelFunc); ok {
				cancel()
			}
		},
	})
}

// WriteTraces indexes every span of td, plus the service/operation
// documents not yet written, through the store's BulkIndexer, and returns
// once Elasticsearch has acknowledged each of them or each has definitively
// failed. Items rejected with 429, 5xx or any status but 400 (and items of
// _bulk requests that failed as a whole) are added again with backoff, up
// to BulkMaxAttempts times; items rejected with 400 (the document does not
// fit the mapping) make the error permanent.
func (s *Store) WriteTraces(ctx context.Context, td ptrace.Traces) error {
	var items []*bulkItem
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
				items = append(items, &bulkItem{
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
				items = append(items, &bulkItem{index: index, id: id, body: body, stored: func() { s.markServiceWritten(key) }})
			}
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.ensureTemplates(ctx); err != nil {
		return err
	}
	w := &write{s: s, ctx: ctx, total: len(items), pending: len(items), done: make(chan struct{})}
	if err := s.send(ctx, w, items); err != nil {
		return fmt.Errorf("elasticsearch: %d bulk items not stored: %w", len(items), err)
	}
	select {
	case <-w.done:
		return w.err()
	case <-ctx.Done():
		// Items already added still go out; their IDs make the queue's
		// retry of the batch harmless.
		return fmt.Errorf("elasticsearch: %d of %d bulk items not stored: %w", w.pendingItems(), len(items), ctx.Err())
	}
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

// errStoreClosed resolves the items of writes still going on when the
// store closes.
var errStoreClosed = errors.New("elasticsearch: store closed")

// send adds items to the BulkIndexer, then flushes it so that they go out
// now rather than at the next flush interval.
func (s *Store) send(ctx context.Context, w *write, items []*bulkItem) error {
	s.indexerMu.RLock()
	defer s.indexerMu.RUnlock()
	if s.indexerClosed {
		return errStoreClosed
	}
	for _, it := range items {
		w.mu.Lock()
		attempt := it.attempts + 1
		w.mu.Unlock()
		err := s.indexer.Add(ctx, esutil.BulkIndexerItem{
			Index:      it.index,
			Action:     "index",
			DocumentID: it.id,
			Body:       bytes.NewReader(it.body),
			OnSuccess: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem) {
				w.succeeded(it, attempt)
			},
			OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
				w.failed(it, attempt, res, err)
			},
		})
		if err != nil {
			return err
		}
		w.mu.Lock()
		it.attempts = attempt
		w.mu.Unlock()
	}
	if err := s.indexer.Flush(ctx); err != nil && !errors.Is(err, esutil.ErrIndexerClosed) {
		// The items are in the indexer's buffers: they go out at the
		// next flush, or when the store closes.
		return err
	}
	return nil
}

// write tracks the items of one WriteTraces call through the
// BulkIndexer's per-item callbacks.
type write struct {
	s   *Store
	ctx context.Context

	mu        sync.Mutex
	total     int
	pending   int
	permanent []string
	gaveUp    int
	lastRetry string
	ctxErr    error
	retries   map[int]*retryBatch // by the attempt that failed
	done      chan struct{}
}

// retryBatch gathers the items of a write that failed on the same attempt
// so that they are added again together, after one backoff.
type retryBatch struct {
	items []*bulkItem
}

// claim reports whether the callback for attempt of it is the first; w.mu
// must be held.
func (w *write) claim(it *bulkItem, attempt int) bool {
	if it.resolved >= attempt {
		return false
	}
	it.resolved = attempt
	return true
}

// finish counts one item done; w.mu must be held.
func (w *write) finish() {
	w.pending--
	if w.pending == 0 {
		close(w.done)
	}
}

func (w *write) succeeded(it *bulkItem, attempt int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.claim(it, attempt) {
		return
	}
	w.s.metrics.bulkItems.WithLabelValues("ok").Inc()
	if it.stored != nil {
		it.stored()
	}
	w.finish()
}

func (w *write) failed(it *bulkItem, attempt int, res esutil.BulkIndexerResponseItem, err error) {
	var reason string
	retryable := true
	if err != nil {
		// The whole _bulk request failed (or its answer could not be
		// read). A malformed request stays malformed; anything else
		// (overload, a node restarting, credentials being rotated) may
		// pass later.
		reason = err.Error()
		var e *esError
		if errors.As(err, &e) && e.Status == http.StatusBadRequest {
			retryable = false
		}
	} else {
		reason = fmt.Sprintf("status %d", res.Status)
		if res.Error.Type != "" {
			reason += ": " + res.Error.Type + ": " + res.Error.Reason
		}
		// Only a 400 is about the document itself (it does not fit the
		// mapping); anything else (429, 5xx, a 403 or a 404 while index
		// creation is not allowed) can pass once the cluster or its
		// settings change.
		retryable = res.Status != http.StatusBadRequest
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.claim(it, attempt) {
		return
	}
	switch {
	case !retryable:
		w.s.metrics.bulkItems.WithLabelValues("failed").Inc()
		if len(w.permanent) < 5 {
			w.permanent = append(w.permanent, fmt.Sprintf("%s/%s: %s", it.index, it.id, reason))
		}
		w.finish()
	case attempt >= w.s.cfg.BulkMaxAttempts:
		w.s.metrics.bulkItems.WithLabelValues("failed").Inc()
		w.gaveUp++
		w.lastRetry = reason
		w.finish()
	case w.ctx.Err() != nil:
		// WriteTraces has returned already: nobody waits for this item.
		w.ctxErr = w.ctx.Err()
		w.finish()
	default:
		w.s.metrics.bulkItems.WithLabelValues("retried").Inc()
		w.lastRetry = reason
		if w.retries == nil {
			w.retries = map[int]*retryBatch{}
		}
		b, ok := w.retries[attempt]
		if !ok {
			b = &retryBatch{}
			w.retries[attempt] = b
			wait := w.s.cfg.BulkBackoff << (attempt - 1)
			if wait > 5*time.Second || wait <= 0 {
				wait = 5 * time.Second
			}
			go w.retry(attempt, b, wait)
		}
		b.items = append(b.items, it)
	}
}

// retry adds the items of b again after wait, unless the write's context
// ends or the store closes first.
func (w *write) retry(attempt int, b *retryBatch, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	var stopErr error
	select {
	case <-t.C:
	case <-w.ctx.Done():
		stopErr = w.ctx.Err()
	case <-w.s.stop:
		stopErr = errStoreClosed
	}
	w.mu.Lock()
	// Items failing on this attempt from now on start a new batch.
	delete(w.retries, attempt)
	items := b.items
	if stopErr == nil {
		w.s.logger.Debug("Retrying rejected bulk items", "items", len(items), "attempt", attempt, "reason", w.lastRetry, "wait", wait)
	}
	w.mu.Unlock()
	if stopErr == nil {
		stopErr = w.s.send(w.ctx, w, items)
	}
	if stopErr == nil {
		return
	}
	// Items that did not make it into the indexer again are resolved
	// here; the others get their callbacks.
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ctxErr = stopErr
	for _, it := range items {
		if it.attempts == attempt {
			w.finish()
		}
	}
}

func (w *write) pendingItems() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending
}

// err is the outcome of a finished write.
func (w *write) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.gaveUp > 0:
		return fmt.Errorf("elasticsearch: %d of %d bulk items not stored after %d attempts (last: %s)", w.gaveUp, w.total, w.s.cfg.BulkMaxAttempts, w.lastRetry)
	case w.ctxErr != nil:
		return fmt.Errorf("elasticsearch: bulk items not stored: %w", w.ctxErr)
	case len(w.permanent) > 0:
		return store.Permanent(fmt.Errorf("elasticsearch: bulk items rejected: %s", strings.Join(w.permanent, "; ")))
	}
	return nil
}

// bulkTransport is the BulkIndexer's esapi.Transport: the store's client,
// plus two checks on _bulk requests the BulkIndexer does not make. An
// answer that is not 2xx becomes an *esError, so that the items of a
// request rejected as a whole with 400 fail permanently, as items rejected
// with 400 do. And the number of items the request carries goes with the
// answer's body to bulkDecoder, which refuses an answer with another
// number of items (the BulkIndexer would never resolve the missing ones,
// or index past its own list).
type bulkTransport struct{ c *client }

// Perform implements esapi.Transport.
func (t *bulkTransport) Perform(req *http.Request) (*http.Response, error) {
	items := -1
	if req.GetBody != nil {
		if body, err := req.GetBody(); err == nil {
			// Each item is an action line and a source line, and
			// json.Marshal escapes the newlines inside strings.
			var n int
			buf := make([]byte, 32<<10)
			for {
				m, err := body.Read(buf)
				n += bytes.Count(buf[:m], []byte{'\n'})
				if err != nil {
					break
				}
			}
			body.Close()
			items = n / 2
		}
	}
	res, err := t.c.Perform(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		err := responseError(&esapi.Response{StatusCode: res.StatusCode, Header: res.Header, Body: res.Body})
		var e *esError
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, err
	}
	if items >= 0 {
		res.Body = &bulkBody{ReadCloser: res.Body, items: items}
	}
	return res, nil
}

// bulkBody is the body of a _bulk answer and the number of items sent.
type bulkBody struct {
	io.ReadCloser
	items int
}

// bulkDecoder decodes a _bulk answer and checks it has an item for each
// item sent.
type bulkDecoder struct{}

func (bulkDecoder) UnmarshalFromReader(r io.Reader, blk *esutil.BulkIndexerResponse) error {
	if err := json.NewDecoder(r).Decode(blk); err != nil {
		return fmt.Errorf("decode _bulk answer: %w", err)
	}
	if b, ok := r.(*bulkBody); ok && len(blk.Items) != b.items {
		n := len(blk.Items)
		blk.Items = nil
		return fmt.Errorf("_bulk answered %d items for %d", n, b.items)
	}
	return nil
}
