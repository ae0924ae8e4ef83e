// Package servicegraph turns spans, as they arrive, into the service call
// graph and RED metrics, with the semantics and metric names of the
// OpenTelemetry Collector's servicegraph and spanmetrics connectors:
//
//   - a client (or producer) span and the server (or consumer) span whose
//     parent it is make one request on the edge client → server; the first
//     of the pair waits in an in-memory store of unpaired edges until the
//     other arrives or it expires;
//   - a client span naming a database (db.name, else db.system) is an edge
//     to that database at once;
//   - an unpaired client span that expires becomes an edge to a virtual
//     node named by its first peer attribute (peer.service, server.address,
//     db.name, db.system…), and an unpaired root server span an edge from
//     the virtual client "user".
//
// Completed edges count into traces_service_graph_* series, every span into
// traces_spanmetrics_*; per-interval call counts are written to the span
// store as dependency links (for Jaeger's /api/dependencies), and the graph
// with its recent rates is served as a topology block for root-cause
// analysis.
package servicegraph

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/panorama-obs/panorama/tracing/store"
)

// Connection types, the connection_type label of the service graph series.
const (
	ConnectionUnknown   = ""
	ConnectionMessaging = "messaging_system"
	ConnectionDatabase  = "database"
	ConnectionVirtual   = "virtual_node"
)

// DefaultBuckets are the histogram bounds of both connectors, in seconds.
var DefaultBuckets = []float64{0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15}

// DefaultPeerAttributes name a virtual callee, first present wins.
var DefaultPeerAttributes = []string{"peer.service", "server.address", "db.name", "db.system", "net.peer.name", "rpc.service", "net.sock.peer.addr"}

// Options configure the service graph.
type Options struct {
	// TTL is how long an unpaired half of an edge waits for the other.
	TTL time.Duration
	// MaxItems bounds the unpaired edges; spans beyond it are not paired
	// (and counted in panorama_tracing_servicegraph_dropped_spans_total).
	MaxItems int
	// FlushInterval is the length of a dependency bucket written to the store.
	FlushInterval time.Duration
	// Window is the span of recent buckets the topology's rates cover.
	Window time.Duration
	// PeerAttributes name virtual nodes; DefaultPeerAttributes when nil.
	PeerAttributes []string
	// Cluster names the cluster in topology IDs when a resource has no
	// k8s.cluster.name.
	Cluster string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultOptions returns the defaults of the tracing role.
func DefaultOptions() Options {
	return Options{TTL: 2 * time.Second, MaxItems: 10000, FlushInterval: time.Minute, Window: 5 * time.Minute}
}

type edgeKey struct {
	trace pcommon.TraceID
	span  pcommon.SpanID
}

// edge is one request, possibly half-seen.
type edge struct {
	created        time.Time
	connectionType string
	client, server node
	clientLatency  float64
	serverLatency  float64
	failed         bool
	peer           string
	rootServer     bool // the server span has no parent
}

// node identifies a graph vertex: a service, database or virtual callee.
type node struct {
	name, kind, cluster, namespace string
}

// link is a directed pair of nodes.
type link struct{ from, to node }

type linkStats struct {
	requests, failed float64
	latencySum       float64
}

// bucket counts completed requests of one flush interval.
type bucket struct {
	end   time.Time
	links map[link]*linkStats
}

// Graph builds the service graph and the span metrics.
type Graph struct {
	opts   Options
	deps   store.DependencyStore
	logger *slog.Logger

	mtx     sync.Mutex
	pending map[edgeKey]*edge
	current *bucket
	recent  []*bucket // closed buckets within the window, oldest first
	nodes   map[string]node
	seen    map[link]struct{} // every link ever completed
	started time.Time

	stop chan struct{}
	done chan struct{}

	requests, failedRequests *prometheus.CounterVec
	serverSeconds            *prometheus.HistogramVec
	clientSeconds            *prometheus.HistogramVec
	calls                    *prometheus.CounterVec
	duration                 *prometheus.HistogramVec
	dropped, expired         prometheus.Counter
}

// New returns a service graph writing dependency buckets to deps (which may
// be nil) and registering its series on reg (which may be nil).
func New(opts Options, deps store.DependencyStore, logger *slog.Logger, reg prometheus.Registerer) (*Graph, error) {
	d := DefaultOptions()
	if opts.TTL <= 0 {
		opts.TTL = d.TTL
	}
	if opts.MaxItems <= 0 {
		opts.MaxItems = d.MaxItems
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = d.FlushInterval
	}
	if opts.Window <= 0 {
		opts.Window = d.Window
	}
	if opts.PeerAttributes == nil {
		opts.PeerAttributes = DefaultPeerAttributes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := opts.Now()
	edgeLabels := []string{"client", "server", "connection_type"}
	spanLabels := []string{"service_name", "span_name", "span_kind", "status_code"}
	g := &Graph{
		opts: opts, deps: deps, logger: logger,
		pending: map[edgeKey]*edge{},
		current: &bucket{end: now.Add(opts.FlushInterval), links: map[link]*linkStats{}},
		nodes:   map[string]node{},
		seen:    map[link]struct{}{},
		started: now,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traces_service_graph_request_total", Help: "Total count of requests between two nodes.",
		}, edgeLabels),
		failedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traces_service_graph_request_failed_total", Help: "Total count of failed requests between two nodes.",
		}, edgeLabels),
		serverSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "traces_service_graph_request_server_seconds", Help: "Time for a request between two nodes as seen from the server.", Buckets: DefaultBuckets,
		}, edgeLabels),
		clientSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "traces_service_graph_request_client_seconds", Help: "Time for a request between two nodes as seen from the client.", Buckets: DefaultBuckets,
		}, edgeLabels),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "traces_spanmetrics_calls_total", Help: "Spans, by service, name, kind and status.",
		}, spanLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "traces_spanmetrics_duration_seconds", Help: "Span durations, by service, name, kind and status.", Buckets: DefaultBuckets,
		}, spanLabels),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_servicegraph_dropped_spans_total", Help: "Client or server spans not paired because too many edges were waiting.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_servicegraph_expired_edges_total", Help: "Half-seen edges that expired before their other span arrived.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{g.requests, g.failedRequests, g.serverSeconds, g.clientSeconds, g.calls, g.duration, g.dropped, g.expired} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

func attr(name string, maps ...pcommon.Map) (string, bool) {
	for _, m := range maps {
		if v, ok := m.Get(name); ok && v.AsString() != "" {
			return v.AsString(), true
		}
	}
	return "", false
}

// serviceNode names the service of a resource, with its Kubernetes place.
func (g *Graph) serviceNode(res pcommon.Resource) node {
	n := node{name: store.ServiceName(res), kind: "service", cluster: g.opts.Cluster}
	if c, ok := attr("k8s.cluster.name", res.Attributes()); ok {
		n.cluster = c
	}
	if ns, ok := attr("k8s.namespace.name", res.Attributes()); ok {
		n.namespace = ns
	} else if ns, ok := attr("service.namespace", res.Attributes()); ok {
		n.namespace = ns
	}
	return n
}

func seconds(s ptrace.Span) float64 { return store.SpanDuration(s).Seconds() }

// spanKindLabel and statusLabel are the spanmetrics connector's values.
func spanKindLabel(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindInternal:
		return "SPAN_KIND_INTERNAL"
	case ptrace.SpanKindServer:
		return "SPAN_KIND_SERVER"
	case ptrace.SpanKindClient:
		return "SPAN_KIND_CLIENT"
	case ptrace.SpanKindProducer:
		return "SPAN_KIND_PRODUCER"
	case ptrace.SpanKindConsumer:
		return "SPAN_KIND_CONSUMER"
	}
	return "SPAN_KIND_UNSPECIFIED"
}

func statusLabel(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeOk:
		return "STATUS_CODE_OK"
	case ptrace.StatusCodeError:
		return "STATUS_CODE_ERROR"
	}
	return "STATUS_CODE_UNSET"
}

// Observe takes accepted spans; the receiver calls it for every batch.
func (g *Graph) Observe(td ptrace.Traces) {
	now := g.opts.Now()
	g.mtx.Lock()
	defer g.mtx.Unlock()
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		svc := g.serviceNode(rs.Resource())
		g.nodes[svc.id()] = svc
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			spans := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				g.observeSpan(now, rs.Resource(), svc, spans.At(k))
			}
		}
	}
}

func (g *Graph) observeSpan(now time.Time, res pcommon.Resource, svc node, s ptrace.Span) {
	labels := []string{svc.name, s.Name(), spanKindLabel(s.Kind()), statusLabel(s.Status().Code())}
	g.calls.WithLabelValues(labels...).Inc()
	g.duration.WithLabelValues(labels...).Observe(seconds(s))

	failed := s.Status().Code() == ptrace.StatusCodeError
	switch s.Kind() {
	case ptrace.SpanKindClient, ptrace.SpanKindProducer:
		ct := ConnectionUnknown
		if s.Kind() == ptrace.SpanKindProducer {
			ct = ConnectionMessaging
		}
		e := g.upsert(now, edgeKey{s.TraceID(), s.SpanID()})
		if e == nil {
			return
		}
		e.connectionType = ct
		e.client = svc
		e.clientLatency = seconds(s)
		e.failed = e.failed || failed
		for _, a := range g.opts.PeerAttributes {
			if v, ok := attr(a, s.Attributes()); ok {
				e.peer = v
				break
			}
		}
		// A database answers no span of its own: the client span is the
		// whole request.
		db, ok := attr("db.name", res.Attributes(), s.Attributes())
		if !ok {
			db, ok = attr("db.system", res.Attributes(), s.Attributes())
		}
		if ok {
			e.connectionType = ConnectionDatabase
			e.server = node{name: db, kind: "database", cluster: svc.cluster, namespace: svc.namespace}
			e.serverLatency = seconds(s)
		}
		g.completeIfPaired(edgeKey{s.TraceID(), s.SpanID()}, e)
	case ptrace.SpanKindServer, ptrace.SpanKindConsumer:
		ct := ConnectionUnknown
		if s.Kind() == ptrace.SpanKindConsumer {
			ct = ConnectionMessaging
		}
		key := edgeKey{s.TraceID(), s.ParentSpanID()}
		e := g.upsert(now, key)
		if e == nil {
			return
		}
		if e.connectionType == ConnectionUnknown {
			e.connectionType = ct
		}
		e.server = svc
		e.serverLatency = seconds(s)
		e.failed = e.failed || failed
		e.rootServer = s.ParentSpanID().IsEmpty()
		g.completeIfPaired(key, e)
	}
}

func (g *Graph) upsert(now time.Time, k edgeKey) *edge {
	if e, ok := g.pending[k]; ok {
		return e
	}
	if len(g.pending) >= g.opts.MaxItems {
		g.dropped.Inc()
		return nil
	}
	e := &edge{created: now}
	g.pending[k] = e
	return e
}

func (g *Graph) completeIfPaired(k edgeKey, e *edge) {
	if e.client.name == "" || e.server.name == "" {
		return
	}
	delete(g.pending, k)
	g.complete(e)
}

// complete records one request; g.mtx is held.
func (g *Graph) complete(e *edge) {
	labels := []string{e.client.name, e.server.name, e.connectionType}
	g.requests.WithLabelValues(labels...).Inc()
	g.failedRequests.WithLabelValues(labels...) // the series exists from the first request
	if e.failed {
		g.failedRequests.WithLabelValues(labels...).Inc()
	}
	g.serverSeconds.WithLabelValues(labels...).Observe(e.serverLatency)
	g.clientSeconds.WithLabelValues(labels...).Observe(e.clientLatency)

	g.nodes[e.client.id()] = e.client
	g.nodes[e.server.id()] = e.server
	l := link{from: e.client, to: e.server}
	g.seen[l] = struct{}{}
	st, ok := g.current.links[l]
	if !ok {
		st = &linkStats{}
		g.current.links[l] = st
	}
	st.requests++
	if e.failed {
		st.failed++
	}
	lat := e.serverLatency
	if lat == 0 {
		lat = e.clientLatency
	}
	st.latencySum += lat
}

// Expire settles the edges older than the TTL: a client side becomes an
// edge to a virtual node, a root server side an edge from "user"; other
// halves are dropped.
func (g *Graph) Expire() {
	now := g.opts.Now()
	g.mtx.Lock()
	defer g.mtx.Unlock()
	for k, e := range g.pending {
		if now.Sub(e.created) < g.opts.TTL {
			continue
		}
		delete(g.pending, k)
		g.expired.Inc()
		switch {
		case e.client.name != "" && e.server.name == "":
			name := e.peer
			if name == "" {
				name = "unknown"
			}
			e.connectionType = ConnectionVirtual
			e.server = node{name: name, kind: "external", cluster: e.client.cluster, namespace: e.client.namespace}
			g.complete(e)
		case e.server.name != "" && e.client.name == "" && e.rootServer:
			e.connectionType = ConnectionVirtual
			e.client = node{name: "user", kind: "external", cluster: e.server.cluster}
			g.complete(e)
		}
	}
}

// Flush closes the current bucket: its links are written to the
// dependency store under the bucket's end time, and it joins the recent
// buckets the topology's rates are computed from.
func (g *Graph) Flush(ctx context.Context) error {
	now := g.opts.Now()
	g.mtx.Lock()
	b := g.current
	b.end = now
	g.current = &bucket{end: now.Add(g.opts.FlushInterval), links: map[link]*linkStats{}}
	g.recent = append(g.recent, b)
	for len(g.recent) > 0 && now.Sub(g.recent[0].end) > g.opts.Window {
		g.recent = g.recent[1:]
	}
	links := make([]store.DependencyLink, 0, len(b.links))
	for l, st := range b.links {
		links = append(links, store.DependencyLink{Parent: l.from.name, Child: l.to.name, CallCount: uint64(st.requests)})
	}
	g.mtx.Unlock()
	if g.deps == nil || len(links) == 0 {
		return nil
	}
	return g.deps.WriteDependencies(ctx, b.end, mergeLinks(links))
}

// mergeLinks sums links that differ only in the cluster or namespace of a
// node, since Jaeger's links are by service name.
func mergeLinks(in []store.DependencyLink) []store.DependencyLink {
	idx := map[[2]string]int{}
	var out []store.DependencyLink
	for _, l := range in {
		k := [2]string{l.Parent, l.Child}
		if i, ok := idx[k]; ok {
			out[i].CallCount += l.CallCount
			continue
		}
		idx[k] = len(out)
		out = append(out, l)
	}
	return out
}

// Run expires edges every TTL and flushes every FlushInterval until
// Shutdown, then flushes once more; an oklog/run execute function.
func (g *Graph) Run() error {
	defer close(g.done)
	expire := time.NewTicker(max(g.opts.TTL/2, 100*time.Millisecond))
	defer expire.Stop()
	flush := time.NewTicker(g.opts.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-g.stop:
			g.Expire()
			if err := g.Flush(context.Background()); err != nil {
				g.logger.Error("Writing the last dependency bucket failed", "err", err)
			}
			return nil
		case <-expire.C:
			g.Expire()
		case <-flush.C:
			if err := g.Flush(context.Background()); err != nil {
				g.logger.Error("Writing dependency links failed", "err", err)
			}
		}
	}
}

// Shutdown stops Run; an oklog/run interrupt function.
func (g *Graph) Shutdown(error) {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
}
