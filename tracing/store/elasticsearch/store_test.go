package elasticsearch_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch/estest"
)

// testSpans builds n spans of service svc over traces of ten spans each,
// starting at start, one millisecond apart.
func testSpans(svc string, start time.Time, n int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	ss := rs.ScopeSpans().AppendEmpty()
	for i := 0; i < n; i++ {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, byte(i / 10 >> 8), byte(i / 10)})
		sp.SetSpanID(pcommon.SpanID{9, 9, 9, 9, 0, 0, byte(i >> 8), byte(i)})
		sp.SetName(fmt.Sprintf("op-%d", i%3))
		sp.SetKind(ptrace.SpanKindServer)
		ts := start.Add(time.Duration(i) * time.Millisecond)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(ts))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(ts.Add(time.Millisecond)))
		sp.Attributes().PutInt("i", int64(i))
	}
	return td
}

// spanDocIDs returns the _ids of every span document, and fails the test
// if one appears in more than one index.
func spanDocIDs(t *testing.T, fake *estest.Server) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, ix := range fake.Indices() {
		if !strings.HasPrefix(ix, "panorama-span-") {
			continue
		}
		for id := range fake.Docs(ix) {
			if ids[id] {
				t.Errorf("span document %s stored in more than one index", id)
			}
			ids[id] = true
		}
	}
	return ids
}

func expectedIDs(td ptrace.Traces) map[string]bool {
	ids := map[string]bool{}
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	for i := 0; i < spans.Len(); i++ {
		ids[spans.At(i).TraceID().String()+spans.At(i).SpanID().String()] = true
	}
	return ids
}

func TestPartialBulkFailureIsRetried(t *testing.T) {
	fake := estest.New(t)
	reg := prometheus.NewRegistry()
	cfg := elasticsearch.DefaultConfig()
	cfg.ServerURLs = []string{fake.URL}
	cfg.BulkBackoff = time.Millisecond
	s, err := elasticsearch.New(context.Background(), cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Every third span is rejected with 429 the first two times it comes.
	fake.SetBulkItemFailure(func(index, id string, attempt int) int {
		if strings.Contains(index, "-span-") && id[len(id)-1]%3 == 0 && attempt <= 2 {
			return 429
		}
		return 0
	})
	td := testSpans("svc", time.Now().Add(-time.Hour), 300)
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatalf("WriteTraces with 429s on some items: %v", err)
	}
	got, want := spanDocIDs(t, fake), expectedIDs(td)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stored %d span documents, want the %d written", len(got), len(want))
	}
	retried := testutil.ToFloat64(mustCounter(t, reg, "panorama_tracing_elasticsearch_bulk_items_total", "retried"))
	if retried == 0 {
		t.Errorf("no bulk item counted as retried")
	}
	ok := testutil.ToFloat64(mustCounter(t, reg, "panorama_tracing_elasticsearch_bulk_items_total", "ok"))
	if ok < 300 {
		t.Errorf("ok items = %v, want at least 300 spans", ok)
	}
	// Each span is readable, once.
	tr, err := s.GetTrace(context.Background(), td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID())
	if err != nil || tr.SpanCount() != 10 {
		t.Errorf("GetTrace = %d spans, %v; want 10", tr.SpanCount(), err)
	}
}

func TestItemsStillRejectedFailTheWriteThenTheRetrySucceeds(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 3 })
	defer s.Close()

	var mu sync.Mutex
	overloaded := true
	fake.SetBulkItemFailure(func(index, id string, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if overloaded && strings.HasSuffix(id, "07") {
			return 503
		}
		return 0
	})
	td := testSpans("svc", time.Now().Add(-time.Hour), 50)
	err := s.WriteTraces(context.Background(), td)
	if err == nil {
		t.Fatal("WriteTraces succeeded while an item kept failing with 503")
	}
	if store.IsPermanent(err) {
		t.Fatalf("a 503 item made the error permanent: %v", err)
	}
	mu.Lock()
	overloaded = false
	mu.Unlock()
	// The queue retries the whole batch: idempotent IDs keep each span
	// once.
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatalf("WriteTraces again: %v", err)
	}
	if got, want := spanDocIDs(t, fake), expectedIDs(td); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the retry: %d span documents, want %d", len(got), len(want))
	}
}

func TestMappingRejectionIsPermanent(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake)
	defer s.Close()
	fake.SetBulkItemFailure(func(index, id string, attempt int) int {
		if strings.HasSuffix(id, "05") && strings.Contains(index, "-span-") {
			return 400
		}
		return 0
	})
	err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 20))
	if err == nil || !store.IsPermanent(err) {
		t.Fatalf("WriteTraces with an item rejected with 400 = %v, want a permanent error", err)
	}
	if !strings.Contains(err.Error(), "document_parsing_exception") {
		t.Errorf("the error does not say why Elasticsearch refused the item: %v", err)
	}
	// The other spans were stored.
	if n := len(spanDocIDs(t, fake)); n != 19 {
		t.Errorf("%d span documents stored, want 19", n)
	}
}

// TestStrictMappingRejectsUnknownFields checks the fake enforces the
// store's own strict mapping, so the mapping and the documents cannot
// drift apart unnoticed.
func TestStrictMappingRejectsUnknownFields(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake)
	defer s.Close()
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 1)); err != nil {
		t.Fatal(err)
	}
	var span string
	for _, ix := range fake.Indices() {
		if strings.HasPrefix(ix, "panorama-span-") {
			span = ix
		}
	}
	if span == "" {
		t.Fatal("no span index created")
	}
	m := fake.Mappings(span)
	if m["dynamic"] != "strict" {
		t.Fatalf("span index mapping: dynamic = %v, want strict", m["dynamic"])
	}
}

func TestServerDownThenBack(t *testing.T) {
	for _, mode := range []estest.Down{estest.Unavailable, estest.Reset} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			fake := estest.New(t)
			// Down from the start: New must still return a store.
			fake.SetDown(mode)
			s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 2 })
			defer s.Close()
			td := testSpans("svc", time.Now().Add(-time.Minute), 40)
			for i := 0; i < 2; i++ {
				err := s.WriteTraces(context.Background(), td)
				if err == nil {
					t.Fatal("WriteTraces succeeded while Elasticsearch is down")
				}
				if store.IsPermanent(err) {
					t.Fatalf("a server that is down gave a permanent error: %v", err)
				}
			}
			if _, err := s.GetServices(context.Background()); err == nil {
				t.Error("GetServices succeeded while Elasticsearch is down")
			}
			fake.SetDown(estest.Up)
			if err := s.WriteTraces(context.Background(), td); err != nil {
				t.Fatalf("WriteTraces after Elasticsearch came back: %v", err)
			}
			if got, want := spanDocIDs(t, fake), expectedIDs(td); !reflect.DeepEqual(got, want) {
				t.Fatalf("%d span documents, want %d", len(got), len(want))
			}
			if len(fake.Templates()) != 3 {
				t.Errorf("templates after the server came back: %d, want 3", len(fake.Templates()))
			}
			svcs, err := s.GetServices(context.Background())
			if err != nil || len(svcs) != 1 || svcs[0] != "svc" {
				t.Errorf("GetServices = %v, %v", svcs, err)
			}
		})
	}
}

func TestRetentionDeletesOnlyOldIndices(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.Retention = 48 * time.Hour })
	defer s.Close()
	// Ten years ahead, so the store's own retention pass (run at start, on
	// the real clock) finds nothing to delete among these.
	now := time.Date(2036, 11, 23, 10, 0, 0, 0, time.UTC)
	// The cutoff is 2036-11-21T10:00: the 20th ended before it, the 21st
	// ends after it.
	for _, name := range []string{
		"panorama-span-2036-11-19", "panorama-span-2036-11-20", "panorama-span-2036-11-21", "panorama-span-2036-11-23",
		"panorama-service-2036-11-20", "panorama-service-2036-11-22",
		"panorama-dependencies-2036-11-01", "panorama-dependencies-2036-11-22",
		"panorama-span-archive", "other-span-2020-01-01", "panoramax-span-2020-01-01",
	} {
		fake.CreateIndex(name)
	}
	deleted, err := s.DeleteExpired(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"panorama-dependencies-2036-11-01", "panorama-service-2036-11-20", "panorama-span-2036-11-19", "panorama-span-2036-11-20"}
	if !reflect.DeepEqual(deleted, want) {
		t.Errorf("DeleteExpired deleted %v, want %v", deleted, want)
	}
	left := fake.Indices()
	wantLeft := []string{
		"other-span-2020-01-01", "panorama-dependencies-2036-11-22", "panorama-service-2036-11-22",
		"panorama-span-2036-11-21", "panorama-span-2036-11-23", "panorama-span-archive", "panoramax-span-2020-01-01",
	}
	if !reflect.DeepEqual(left, wantLeft) {
		t.Errorf("indices left: %v, want %v", left, wantLeft)
	}
}

func TestNoRetentionDeletesNothing(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake)
	defer s.Close()
	fake.CreateIndex("panorama-span-2001-01-01")
	if deleted, err := s.DeleteExpired(context.Background(), time.Now()); err != nil || len(deleted) != 0 {
		t.Errorf("DeleteExpired without retention = %v, %v", deleted, err)
	}
}

func TestTemplatesInstalledAtStart(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.IndexPrefix = "tr"; c.Shards = 3; c.Replicas = 2 })
	defer s.Close()
	tpls := fake.Templates()
	if len(tpls) != 3 {
		t.Fatalf("templates installed by New: %v", keys(tpls))
	}
	var span struct {
		IndexPatterns []string `json:"index_patterns"`
		Priority      int      `json:"priority"`
		Template      struct {
			Settings map[string]any `json:"settings"`
			Mappings map[string]any `json:"mappings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(tpls["tr-span"], &span); err != nil {
		t.Fatalf("tr-span template: %v", err)
	}
	if !reflect.DeepEqual(span.IndexPatterns, []string{"tr-span-*"}) {
		t.Errorf("index_patterns = %v", span.IndexPatterns)
	}
	if span.Template.Settings["number_of_shards"] != 3.0 || span.Template.Settings["number_of_replicas"] != 2.0 {
		t.Errorf("settings = %v, want 3 shards and 2 replicas", span.Template.Settings)
	}
	props := span.Template.Mappings["properties"].(map[string]any)
	want := map[string]string{
		"traceID": "keyword", "spanID": "keyword", "serviceName": "keyword", "operationName": "keyword",
		"startTimeUnixNano": "long", "durationNanos": "long", "startTime": "date_nanos", "tags": "nested", "otlp": "object",
	}
	for field, typ := range want {
		fm, _ := props[field].(map[string]any)
		if fm["type"] != typ {
			t.Errorf("span mapping of %s = %v, want type %s", field, props[field], typ)
		}
	}
	if props["otlp"].(map[string]any)["enabled"] != false {
		t.Errorf("otlp is indexed: %v", props["otlp"])
	}
	tagProps := props["tags"].(map[string]any)["properties"].(map[string]any)
	for _, f := range []string{"key", "value"} {
		if tagProps[f].(map[string]any)["type"] != "keyword" {
			t.Errorf("tags.%s mapping = %v", f, tagProps[f])
		}
	}
	if span.Template.Mappings["dynamic"] != "strict" {
		t.Errorf("span mapping is not strict")
	}
	for _, name := range []string{"tr-service", "tr-dependencies"} {
		var tpl struct {
			IndexPatterns []string `json:"index_patterns"`
		}
		if err := json.Unmarshal(tpls[name], &tpl); err != nil || len(tpl.IndexPatterns) != 1 || tpl.IndexPatterns[0] != name+"-*" {
			t.Errorf("template %s: %s", name, tpls[name])
		}
	}

	// A write creates daily indices named by span start time (UTC) with
	// the template's mappings, documents keyed by trace and span ID.
	start := time.Date(2026, 11, 20, 23, 59, 59, 0, time.FixedZone("UTC+2", 7200))
	td := testSpans("checkout", start, 1)
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatal(err)
	}
	docs := fake.Docs("tr-span-2026-11-20")
	sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	id := sp.TraceID().String() + sp.SpanID().String()
	raw, ok := docs[id]
	if !ok {
		t.Fatalf("no document %s in tr-span-2026-11-20; indices %v", id, fake.Indices())
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d["serviceName"] != "checkout" || d["spanKind"] != "server" || d["traceID"] != sp.TraceID().String() {
		t.Errorf("span document = %s", raw)
	}
	if !reflect.DeepEqual(fake.Mappings("tr-span-2026-11-20"), span.Template.Mappings) {
		t.Errorf("the daily index was not created with the template's mappings")
	}
	if n := len(fake.Docs("tr-service-2026-11-20")); n != 1 {
		t.Errorf("service documents = %d, want 1", n)
	}
	// Writing again does not add service documents.
	if err := s.WriteTraces(context.Background(), testSpans("checkout", start, 1)); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Docs("tr-service-2026-11-20")); n != 1 {
		t.Errorf("service documents after a second write = %d, want 1", n)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestBasicAuth(t *testing.T) {
	fake := estest.New(t)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.Username = "panorama"; c.PasswordFile = pw })
	defer s.Close()
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetServices(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("panorama:s3cret"))
	reqs := fake.Requests()
	if len(reqs) < 5 {
		t.Fatalf("only %d requests", len(reqs))
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != want {
			t.Errorf("%s %s: Authorization = %q, want %q", r.Method, r.Path, got, want)
		}
	}
}

func TestAPIKey(t *testing.T) {
	fake := estest.New(t)
	key := base64.StdEncoding.EncodeToString([]byte("id1:apikey1"))
	f := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.APIKeyFile = f; c.Username = "ignored" })
	defer s.Close()
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 2)); err != nil {
		t.Fatal(err)
	}
	for _, r := range fake.Requests() {
		// Elasticsearch takes the scheme in any case; the client sends
		// "APIKey".
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if got := r.Header.Get("Authorization"); !strings.EqualFold(scheme, "ApiKey") || cred != key {
			t.Errorf("%s %s: Authorization = %q, want the API key", r.Method, r.Path, got)
		}
	}
}

func TestCredentialFileErrors(t *testing.T) {
	cfg := elasticsearch.DefaultConfig()
	cfg.ServerURLs = []string{"http://127.0.0.1:1"}
	cfg.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := elasticsearch.New(context.Background(), cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "--es.password-file") {
		t.Errorf("New with a missing password file: %v", err)
	}
	cfg = elasticsearch.DefaultConfig()
	if _, err := elasticsearch.New(context.Background(), cfg, nil, nil); err == nil {
		t.Error("New without server URLs succeeded")
	}
}

func TestTLS(t *testing.T) {
	fake := estest.NewTLS(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := fake.HTTPTestServer().Certificate()
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.TLS.CAFile = ca })
	defer s.Close()
	td := testSpans("svc", time.Now(), 3)
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatalf("WriteTraces over TLS with the CA file: %v", err)
	}
	if n := len(spanDocIDs(t, fake)); n != 3 {
		t.Errorf("%d span documents, want 3", n)
	}

	// Without the CA, the server's certificate is not trusted.
	untrusted := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 1 })
	defer untrusted.Close()
	err := untrusted.WriteTraces(context.Background(), td)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("WriteTraces over TLS without the CA = %v, want a certificate error", err)
	}
	// insecure-skip-verify trusts anything.
	insecure := newStore(t, fake, func(c *elasticsearch.Config) { c.TLS.InsecureSkipVerify = true })
	defer insecure.Close()
	if err := insecure.WriteTraces(context.Background(), td); err != nil {
		t.Errorf("WriteTraces with insecure-skip-verify: %v", err)
	}
}

func TestUnreadableCAFile(t *testing.T) {
	cfg := elasticsearch.DefaultConfig()
	cfg.ServerURLs = []string{"https://127.0.0.1:1"}
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TLS.CAFile = f
	_, err := elasticsearch.New(context.Background(), cfg, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("New with a CA file without certificates: %v", err)
	}
}

// TestLargeTrace reads a trace of more spans than one search page holds.
func TestLargeTrace(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.PageSize = 100 })
	defer s.Close()
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	td.ResourceSpans().At(0).Resource().Attributes().PutStr("service.name", "big")
	id := pcommon.TraceID{0xbb, 1}
	start := time.Now().Add(-time.Hour)
	for i := 0; i < 1234; i++ {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(id)
		sp.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		sp.SetName("step")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Duration(i))))
	}
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTrace(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.SpanCount() != 1234 {
		t.Errorf("GetTrace = %d spans, want 1234", got.SpanCount())
	}
	found, err := s.FindTraces(context.Background(), store.TraceQuery{ServiceName: "big"})
	if err != nil || len(found) != 1 || found[0].SpanCount() != 1234 {
		t.Errorf("FindTraces = %d traces, %v", len(found), err)
	}
}

func TestContextCanceledDuringBackoff(t *testing.T) {
	fake := estest.New(t)
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkBackoff = time.Hour })
	defer s.Close()
	fake.SetBulkItemFailure(func(string, string, int) int { return 429 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.WriteTraces(ctx, testSpans("svc", time.Now(), 2)) }()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WriteTraces with a canceled context = %v", err)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not found", name, result)
	return nil
}

// TestConnectionRefusedThenBack: the cluster's port closed (not even a
// connection), then open again on the same address.
func TestConnectionRefusedThenBack(t *testing.T) {
	fake := estest.Serve(t, "127.0.0.1:0")
	s := newStore(t, fake, func(c *elasticsearch.Config) { c.BulkMaxAttempts = 2 })
	defer s.Close()
	before := testSpans("svc", time.Now().Add(-time.Minute), 20)
	if err := s.WriteTraces(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	fake.Stop()
	td := testSpans("svc", time.Now().Add(-time.Minute), 60)
	err := s.WriteTraces(context.Background(), td)
	if err == nil || store.IsPermanent(err) {
		t.Fatalf("WriteTraces while the port is closed = %v, want a retryable error", err)
	}
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteTraces(context.Background(), td); err != nil {
		t.Fatalf("WriteTraces after the cluster came back: %v", err)
	}
	if got, want := spanDocIDs(t, fake), expectedIDs(td); !reflect.DeepEqual(got, want) {
		t.Fatalf("%d span documents, want %d", len(got), len(want))
	}
}

// TestMutualTLS: the cluster requires a client certificate; the store
// presents the one of --es.tls.cert-file/--es.tls.key-file.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clientDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "panorama"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, caCert, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, serverCA := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"), filepath.Join(dir, "server-ca.pem")
	for f, b := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: clientDER},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	fake := estest.NewServer()
	srv := httptest.NewUnstartedServer(fake.Handler())
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	fake.URL = srv.URL
	if err := os.WriteFile(serverCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	s := newStore(t, fake, func(c *elasticsearch.Config) {
		c.TLS = elasticsearch.TLSConfig{CAFile: serverCA, CertFile: certFile, KeyFile: keyFile}
	})
	defer s.Close()
	if err := s.WriteTraces(context.Background(), testSpans("svc", time.Now(), 3)); err != nil {
		t.Fatalf("WriteTraces with a client certificate: %v", err)
	}
	if n := len(spanDocIDs(t, fake)); n != 3 {
		t.Errorf("%d span documents, want 3", n)
	}

	noCert := newStore(t, fake, func(c *elasticsearch.Config) {
		c.TLS = elasticsearch.TLSConfig{CAFile: serverCA}
		c.BulkMaxAttempts = 1
	})
	defer noCert.Close()
	if err := noCert.WriteTraces(context.Background(), testSpans("svc", time.Now(), 3)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("WriteTraces without a client certificate against a cluster that requires one = %v, want a certificate error", err)
	}
}

// TestNotElasticsearch: a server that answers but is not Elasticsearch (no
// X-Elastic-Product header, as the official client checks) is refused at
// start, permanently, with an error that says so.
func TestNotElasticsearch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"acknowledged":true}`)
	}))
	defer srv.Close()
	cfg := elasticsearch.DefaultConfig()
	cfg.ServerURLs = []string{srv.URL}
	_, err := elasticsearch.New(context.Background(), cfg, nil, prometheus.NewRegistry())
	if err == nil || !store.IsPermanent(err) || !strings.Contains(err.Error(), "not Elasticsearch") {
		t.Fatalf("New against a server that is not Elasticsearch: %v, want a permanent error saying so", err)
	}
}
