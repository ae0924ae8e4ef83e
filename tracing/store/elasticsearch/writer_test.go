package elasticsearch_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch/estest"
)

// bulkProxy serves the fake, except that _bulk requests go to bulk when it
// returns true.
func bulkProxy(t *testing.T, fake *estest.Server, bulk func(w http.ResponseWriter, r *http.Request, body []byte) bool) *estest.Server {
	t.Helper()
	h := fake.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_bulk") {
			body, _ := io.ReadAll(r.Body)
			if bulk(w, r, body) {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	fake.URL = srv.URL
	return fake
}

// TestWholeBulkRequestRejectedWith400IsPermanent: a _bulk request refused
// as a whole with 400 fails its items permanently, as items rejected with
// 400 do.
func TestWholeBulkRequestRejectedWith400IsPermanent(t *testing.T) {
	var bulks atomic.Int32
	fake := bulkProxy(t, estest.NewServer(), func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		bulks.Add(1)
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line [1]"},"status":400}`)
		return true
	})
	s := newStore(t, fake)
	defer s.Close()
	err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 5))
	if err == nil || !store.IsPermanent(err) {
		t.Fatalf("WriteTraces with the _bulk request refused with 400 = %v, want a permanent error", err)
	}
	t.Logf("WriteTraces: %v", err)
	if !strings.Contains(err.Error(), "illegal_argument_exception") {
		t.Errorf("the error does not say why: %v", err)
	}
	if n := bulks.Load(); n > 2 {
		t.Errorf("%d _bulk requests: a request refused with 400 was sent again", n)
	}
}

// TestBulkAnswerWithTooFewItems: an answer that does not account for every
// item sent fails the write (retryably) instead of leaving it waiting.
func TestBulkAnswerWithTooFewItems(t *testing.T) {
	fake := bulkProxy(t, estest.NewServer(), func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"took":1,"errors":false,"items":[]}`)
		return true
	})
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 2 })
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.WriteTraces(ctx, testSpans("svc", time.Now(), 5))
	if err == nil || store.IsPermanent(err) || ctx.Err() != nil {
		t.Fatalf("WriteTraces with _bulk answers without items = %v (context: %v), want a retryable error", err, ctx.Err())
	}
	t.Logf("WriteTraces: %v", err)
	if !strings.Contains(err.Error(), "items for") {
		t.Errorf("the error does not say what was wrong: %v", err)
	}
}

// TestUnavailableAfterStart: the whole _bulk request answered with 503
// (after the client's own retries) fails the write back to the queue,
// retryably, and the same write succeeds once the cluster is back.
func TestUnavailableAfterStart(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 2 })
	defer s.Close()
	fake.SetDown(estest.Unavailable)
	td := testSpans("svc", time.Now().Add(-time.Minute), 30)
	err := s.WriteTraces(context.Background(), td)
	if err == nil || store.IsPermanent(err) {
		t.Fatalf("WriteTraces while the cluster answers 503 = %v, want a retryable error", err)
	}
	t.Logf("WriteTraces: %v", err)
	fake.SetDown(estest.Up)
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatalf("WriteTraces after the cluster came back: %v", err)
	}
	if got, want := spanDocIDs(t, fake), expectedIDs(td); !reflect.DeepEqual(got, want) {
		t.Fatalf("%d span documents, want %d", len(got), len(want))
	}
}

// TestConcurrentWrites share the store's bulk indexer; each returns once
// its own spans are stored, some of them after 429s.
func TestConcurrentWrites(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxBytes = 4000 })
	defer s.Close()
	fake.SetBulkItemFailure(func(index, id string, attempt int) int {
		if strings.HasSuffix(id, "3") && attempt == 1 {
			return 429
		}
		return 0
	})
	const writers = 8
	tds := make([]ptrace.Traces, writers)
	for i := range tds {
		tds[i] = testSpans(fmt.Sprintf("svc-%d", i), time.Now().Add(-time.Minute), 50)
		// Distinct trace IDs per writer.
		spans := tds[i].ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for j := 0; j < spans.Len(); j++ {
			id := spans.At(j).TraceID()
			id[8] = byte(i + 1)
			spans.At(j).SetTraceID(id)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range tds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.WriteTraces(context.Background(), tds[i])
			// Once WriteTraces returns, its spans are there.
			got := spanDocIDs(t, fake)
			for id := range expectedIDs(tds[i]) {
				if !got[id] {
					errs[i] = fmt.Errorf("span %s not stored when WriteTraces returned", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if n := len(spanDocIDs(t, fake)); n != writers*50 {
		t.Errorf("%d span documents, want %d", n, writers*50)
	}
	svcs, err := s.GetServices(context.Background())
	if err != nil || len(svcs) != writers {
		t.Errorf("GetServices = %v, %v", svcs, err)
	}
}

// TestWriteAfterClose fails instead of panicking.
func TestWriteAfterClose(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake)
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 3)); err == nil {
		t.Error("WriteTraces after Close succeeded")
	}
}
