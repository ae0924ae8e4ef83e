// Package elasticsearch is the Elasticsearch span store: daily span indices
// with explicit mappings installed as composable index templates, a small
// service/operation index for the service and operation lists, and a
// dependencies index for the service graph. Spans and service documents are
// written through esutil.BulkIndexer with idempotent document IDs, so a
// retried write never duplicates a span.
package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-transport-go/v8/elastictransport"
	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Store is the Elasticsearch span store. It implements store.Store.
type Store struct {
	cfg     Config
	client  *client
	logger  *slog.Logger
	metrics *metrics

	templatesMu        sync.Mutex
	templatesInstalled bool

	// services remembers the service documents already written, so a write
	// only sends the ones that are new for their day.
	servicesMu sync.Mutex
	services   map[string]bool

	// indexer sends every write's documents; indexerMu's read side is
	// held while adding to it, so that Close can close it once nothing
	// adds any more.
	indexer       esutil.BulkIndexer
	indexerMu     sync.RWMutex
	indexerClosed bool

	stop chan struct{}
	done chan struct{}
}

var _ store.Store = (*Store)(nil)

// New connects to Elasticsearch and installs the index templates. When the
// cluster cannot be reached, New still returns the store and installs the
// templates before the first write; an error means the configuration or
// the templates are wrong.
func New(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	cfg = cfg.withDefaults()
	if len(cfg.ServerURLs) == 0 {
		return nil, errors.New("elasticsearch: no server URL (--es.server-urls)")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	password, apiKey, err := cfg.credentials()
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: %w", err)
	}
	m := newMetrics(reg)
	urls := make([]*url.URL, 0, len(cfg.ServerURLs))
	for _, a := range cfg.ServerURLs {
		u, err := url.Parse(strings.TrimRight(a, "/"))
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("elasticsearch: --es.server-urls: %q is not a URL like http://host:9200", a)
		}
		urls = append(urls, u)
	}
	tp, err := elastictransport.New(elastictransport.Config{
		UserAgent: "panorama-tracing",
		URLs:      urls,
		Username:  cfg.Username,
		Password:  password,
		APIKey:    apiKey,
		Transport: m.instrument(tr),
		// 429 and 5xx of whole requests are retried here; items a _bulk
		// answer rejects are retried by the writer.
		RetryOnStatus: []int{429, 502, 503, 504},
		MaxRetries:    2,
		RetryBackoff:  func(attempt int) time.Duration { return time.Duration(attempt) * 50 * time.Millisecond },
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: client for %v: %w", cfg.ServerURLs, err)
	}
	s := &Store{
		cfg:      cfg,
		client:   &client{tp: tp},
		logger:   logger,
		metrics:  m,
		services: map[string]bool{},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.indexer, err = s.newBulkIndexer(); err != nil {
		return nil, fmt.Errorf("elasticsearch: bulk indexer: %w", err)
	}
	if err := s.ensureTemplates(ctx); err != nil {
		if store.IsPermanent(err) {
			_ = s.indexer.Close(ctx)
			return nil, err
		}
		logger.Warn("Elasticsearch unreachable; index templates will be installed before the first write", "err", err)
	}
	go s.retentionLoop()
	return s, nil
}

// Close stops the retention loop, sends what the bulk indexer still holds,
// and closes the client.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	s.indexerMu.Lock()
	s.indexerClosed = true
	s.indexerMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout+5*time.Second)
	defer cancel()
	err := s.indexer.Close(ctx)
	if cerr := s.client.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// client is the transport with the check the official client makes: the
// first successful answer must come from Elasticsearch itself (its
// X-Elastic-Product header). It takes the place of go-elasticsearch's
// elasticsearch.Client, which is never created: the requests and the bulk
// indexer use this transport directly.
type client struct {
	tp      *elastictransport.Client
	checked atomic.Bool
}

// Perform implements esapi.Transport.
func (c *client) Perform(req *http.Request) (*http.Response, error) {
	res, err := c.tp.Perform(req)
	if err != nil || c.checked.Load() || res.StatusCode < 200 || res.StatusCode >= 300 {
		return res, err
	}
	if res.Header.Get("X-Elastic-Product") != "Elasticsearch" {
		res.Body.Close()
		return nil, store.Permanent(fmt.Errorf("the server at %s is not Elasticsearch (no X-Elastic-Product: Elasticsearch header)", req.URL.Host))
	}
	c.checked.Store(true)
	return res, nil
}

// Close closes the transport.
func (c *client) Close(ctx context.Context) error { return c.tp.Close(ctx) }

// ensureTemplates installs the index templates once.
func (s *Store) ensureTemplates(ctx context.Context) error {
	s.templatesMu.Lock()
	defer s.templatesMu.Unlock()
	if s.templatesInstalled {
		return nil
	}
	for _, kind := range indexKinds {
		body, err := json.Marshal(s.indexTemplate(kind))
		if err != nil {
			return err
		}
		res, err := s.do(ctx, esapi.IndicesPutIndexTemplateRequest{
			Name: s.templateName(kind),
			Body: bytes.NewReader(body),
		})
		if err != nil {
			return fmt.Errorf("elasticsearch: install index template %s: %w", s.templateName(kind), err)
		}
		if err := responseError(res); err != nil {
			return fmt.Errorf("elasticsearch: install index template %s: %w", s.templateName(kind), err)
		}
	}
	s.templatesInstalled = true
	return nil
}

// do performs req with the request timeout.
func (s *Store) do(ctx context.Context, req esapi.Request) (*esapi.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := req.Do(ctx, s.client)
	if err != nil {
		return nil, err
	}
	// Read the body before the context ends.
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	return res, nil
}

// esError is an error answer of Elasticsearch.
type esError struct {
	Status int
	Type   string
	Reason string
}

func (e *esError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("status %d", e.Status)
	}
	return fmt.Sprintf("status %d: %s: %s", e.Status, e.Type, e.Reason)
}

// responseError returns nil for a 2xx answer, and otherwise the error it
// carries, marked permanent for 4xx other than 408 and 429.
func responseError(res *esapi.Response) error {
	defer res.Body.Close()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return nil
	}
	e := &esError{Status: res.StatusCode}
	var body struct {
		Error json.RawMessage `json:"error"`
	}
	b, _ := io.ReadAll(res.Body)
	if json.Unmarshal(b, &body) == nil && len(body.Error) > 0 {
		var cause struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(body.Error, &cause) == nil && cause.Type != "" {
			e.Type, e.Reason = cause.Type, cause.Reason
		} else {
			e.Reason = strings.Trim(string(body.Error), `"`)
		}
	} else if len(b) > 0 {
		e.Reason = strings.TrimSpace(string(b))
		if len(e.Reason) > 200 {
			e.Reason = e.Reason[:200]
		}
	}
	if permanentStatus(res.StatusCode) {
		return store.Permanent(e)
	}
	return e
}

// permanentStatus reports whether sending the same request again cannot
// change an answer with this status.
func permanentStatus(code int) bool {
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}
