// Package tracing is the tracing role assembled from its parts: OTLP in
// (receiver), the durable queue, a span store (embedded or Elasticsearch),
// the Jaeger-compatible query API and the service graph. Each part lives in
// its own package and can be used alone; this one only joins them, the same
// way for the `panorama tracing` command and for the all-in-one mode.
package tracing

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/panorama-obs/panorama/tracing/query"
	"github.com/panorama-obs/panorama/tracing/queue"
	"github.com/panorama-obs/panorama/tracing/receiver"
	"github.com/panorama-obs/panorama/tracing/servicegraph"
	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/embedded"
)

// Options configure the role.
type Options struct {
	// DataDir holds the queue (DataDir/queue) and the embedded store
	// (DataDir/spans).
	DataDir string
	// Retention is the embedded store's retention by age.
	Retention time.Duration
	// Queue, Receiver and ServiceGraph configure those parts; Queue.Dir is
	// set from DataDir.
	Queue        queue.Options
	Receiver     receiver.Options
	ServiceGraph servicegraph.Options
}

// DefaultOptions returns the defaults of `panorama tracing`.
func DefaultOptions() Options {
	return Options{
		DataDir:      "data/",
		Retention:    72 * time.Hour,
		Queue:        queue.DefaultOptions(),
		Receiver:     receiver.DefaultOptions(),
		ServiceGraph: servicegraph.DefaultOptions(),
	}
}

// OpenEmbeddedStore opens the embedded store in DataDir/spans.
func OpenEmbeddedStore(opts Options, logger *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	return embedded.Open(embedded.Options{Dir: filepath.Join(opts.DataDir, "spans"), Retention: opts.Retention}, logger, reg)
}

// Tracing is a running tracing role.
type Tracing struct {
	logger   *slog.Logger
	store    store.Store
	queue    *queue.Queue
	receiver *receiver.Receiver
	graph    *servicegraph.Graph
	api      *query.API
}

// New joins the parts over st, which Close closes. The receiver's
// addresses are bound at once; nothing is served before Register's actors
// run.
func New(opts Options, st store.Store, logger *slog.Logger, reg prometheus.Registerer) (*Tracing, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts.Queue.Dir = filepath.Join(opts.DataDir, "queue")
	q, err := queue.Open(opts.Queue, logger.With("component", "queue"), reg)
	if err != nil {
		return nil, fmt.Errorf("open the span queue: %w", err)
	}
	g, err := servicegraph.New(opts.ServiceGraph, st, logger.With("component", "servicegraph"), reg)
	if err != nil {
		q.Close()
		return nil, err
	}
	r, err := receiver.New(opts.Receiver, q, logger.With("component", "otlp"), reg, g.Observe)
	if err != nil {
		q.Close()
		return nil, err
	}
	q.Start(st)
	return &Tracing{
		logger:   logger,
		store:    st,
		queue:    q,
		receiver: r,
		graph:    g,
		api:      query.New(st, logger.With("component", "query")),
	}, nil
}

// Mount adds the Jaeger API and /api/v1/topology to a server.
func (t *Tracing) Mount(handle func(pattern string, h http.Handler)) {
	t.api.Register(handle)
	handle("/api/v1/topology", http.HandlerFunc(t.graph.ServeTopology))
}

// Register adds the receiver and the service graph to g.
func (t *Tracing) Register(g *run.Group) {
	g.Add(t.receiver.Run, t.receiver.Shutdown)
	g.Add(t.graph.Run, t.graph.Shutdown)
}

// GRPCAddr and HTTPAddr are the bound OTLP addresses.
func (t *Tracing) GRPCAddr() string { return t.receiver.GRPCAddr() }

// HTTPAddr is the bound OTLP/HTTP address.
func (t *Tracing) HTTPAddr() string { return t.receiver.HTTPAddr() }

// ServiceGraph is the live service graph (for root-cause analysis).
func (t *Tracing) ServiceGraph() *servicegraph.Graph { return t.graph }

// Close stops the queue's consumer (what it has not stored stays on disk
// and is replayed at the next start) and closes the store. Call it after
// the actors of Register have returned.
func (t *Tracing) Close() error {
	return errors.Join(t.queue.Close(), t.store.Close())
}
