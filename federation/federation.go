// Package federation is Panorama's query federator: one PromQL view over
// many Thanos StoreAPI endpoints (collectors, other federators, Thanos
// sidecars and stores), served through Prometheus' own HTTP API and, for
// the next level up, as a StoreAPI itself, so that federators stack into a
// tree without copying data upward.
//
// The layers, each a small interface to the next:
//
//	endpoints (endpointSet: discovery, Info, health)
//	  → Thanos proxy store (fan-out, pruning by external labels and time,
//	    partial response, per-endpoint timeout) + own external labels
//	    (storeServer, also served over gRPC)
//	  → Thanos querier with penalty dedup, per request (queryable)
//	  → Prometheus' PromQL engine, wrapped by the push-down planner
//	    (pushdownEngine: distributable aggregations are evaluated at the
//	    leaves through the pushdown service, the rest pulls series)
//	  → Prometheus' web/api/v1, plus /api/v1/stores.
package federation

import (
	"context"
	"errors"
	"fmt"
	"github.com/go-kit/log"
	"github.com/panorama-obs/panorama/federation/pushdown"
	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/server"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/grafana/regexp"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/component"
	"github.com/thanos-io/thanos/pkg/dedup"
	"github.com/thanos-io/thanos/pkg/extprom"
	"github.com/thanos-io/thanos/pkg/info"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata"
	"github.com/thanos-io/thanos/pkg/query"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"google.golang.org/grpc"

	apiv1 "github.com/prometheus/prometheus/web/api/v1"

	// Registers Thanos' gRPC codec for its gogo-protobuf messages.
	_ "github.com/thanos-io/thanos/pkg/extgrpc"
)

// Options are the federator's settings; DefaultOptions gives the defaults
// the command line uses.
type Options struct {
	// Endpoints are StoreAPI addresses: host:port, dns+host:port (A/AAAA
	// records) or dnssrv+name (SRV records).
	Endpoints []string
	// EndpointSDFiles are Prometheus file_sd files (JSON or YAML) whose
	// targets are more endpoints; they are re-read when they change.
	EndpointSDFiles []string
	// EndpointSDInterval is how often the sd-files are re-read even when no
	// change was noticed.
	EndpointSDInterval time.Duration
	// EndpointDNSInterval is how often dns+ and dnssrv+ names are resolved.
	EndpointDNSInterval time.Duration
	// EndpointInfoInterval is how often every endpoint's Info (external
	// labels, time range) is refreshed, and how long one Info call may take
	// before the endpoint is marked unhealthy.
	EndpointInfoInterval time.Duration
	// EndpointTimeout bounds each call to an endpoint and each wait for the
	// next message of a Series stream; an endpoint that exceeds it is left
	// out with a warning (or fails the query without partial response).
	EndpointTimeout time.Duration

	// ReplicaLabels are the labels HA replicas differ by; series that differ
	// only in them are deduplicated.
	ReplicaLabels []string
	// ExternalLabels are attached to every series the federator serves, as
	// a collector's are (for example region="eu" on a region's federator).
	ExternalLabels labels.Labels
	// PartialResponse is the default of the partial_response parameter.
	PartialResponse bool

	QueryTimeout    time.Duration
	QueryMaxSamples int
	// QueryMaxConcurrent queries run at once; more wait their turn within
	// their timeout.
	QueryMaxConcurrent int
	// QueryMaxConcurrentSelects is how many selections of one query go to
	// the endpoints at once.
	QueryMaxConcurrentSelects int
	LookbackDelta             time.Duration
	// DefaultEvaluationInterval is the step of subqueries that give none.
	DefaultEvaluationInterval time.Duration

	// PushDown evaluates distributable aggregations at the leaves (see
	// pushdownEngine); without it every query pulls series.
	PushDown bool

	// GRPCAddress is where the StoreAPI is served; empty disables it.
	GRPCAddress string
	// GRPCServerTLS is the TLS of that server (Thanos'
	// --grpc-server-tls-*); plaintext when empty.
	GRPCServerTLS grpctls.ServerConfig
	// GRPCClientTLS is the TLS of the connections to the endpoints, for
	// the StoreAPI and push-down alike (Thanos Querier's --grpc-client-*).
	GRPCClientTLS grpctls.ClientConfig
	// ListenAddress and ExternalURL are for the links Prometheus' API builds.
	ListenAddress string
	ExternalURL   *url.URL
	// CORSOrigin is the regular expression (anchored) of the origins
	// allowed to call the API from a browser, as Prometheus'
	// --web.cors.origin.
	CORSOrigin string
	// Flags are shown by /api/v1/status/flags.
	Flags map[string]string
}

// DefaultOptions are the defaults of the command line.
func DefaultOptions() Options {
	return Options{
		EndpointSDInterval:        5 * time.Minute,
		EndpointDNSInterval:       30 * time.Second,
		EndpointInfoInterval:      5 * time.Second,
		EndpointTimeout:           30 * time.Second,
		PartialResponse:           true,
		QueryTimeout:              2 * time.Minute,
		QueryMaxSamples:           50000000,
		QueryMaxConcurrent:        20,
		QueryMaxConcurrentSelects: 4,
		LookbackDelta:             5 * time.Minute,
		DefaultEvaluationInterval: time.Minute,
		PushDown:                  true,
		GRPCAddress:               ":10902",
		ListenAddress:             ":9091",
		CORSOrigin:                ".*",
	}
}

// Federator is one running federator.
type Federator struct {
	logger    *slog.Logger
	opts      Options
	endpoints *endpointSet
	proxy     *store.ProxyStore
	store     *storeServer
	metadata  *metadata.Proxy
	cors      *regexp.Regexp
	queryable *queryable
	engine    *pushdownEngine
	api       *apiv1.API
	grpcSrv   *grpc.Server
	grpcLis   net.Listener
	ctx       context.Context
	cancel    context.CancelFunc
	startTime time.Time
}

// New checks the options and builds every part; nothing is contacted until
// Register's actors run. reg receives the federator's metrics; when it is
// also a Gatherer (a *prometheus.Registry is), /api/v1/status/tsdb and
// friends read it.
func New(logger *slog.Logger, reg prometheus.Registerer, opts Options) (*Federator, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Federator{logger: logger, opts: opts, ctx: ctx, cancel: cancel, startTime: time.Now()}
	ok := false
	defer func() {
		if !ok {
			f.close()
		}
	}()

	var err error
	f.endpoints, err = newEndpointSet(logger.With("component", "endpoints"), reg, opts)
	if err != nil {
		return nil, err
	}
	kl := server.GoKitLogger(logger.With("component", "proxy"))
	f.proxy = store.NewProxyStore(kl, reg, f.endpoints.clients, component.Query, opts.ExternalLabels, opts.EndpointTimeout, store.EagerRetrieval)
	f.store = &storeServer{proxy: f.proxy, ext: opts.ExternalLabels}
	f.metadata = metadata.NewProxy(kl, f.endpoints.set.GetMetricMetadataClients)
	f.queryable = &queryable{
		create: query.NewQueryableCreator(kl, extprom.WrapRegistererWithPrefix("thanos_query_", reg), f.store,
			opts.QueryMaxConcurrentSelects, opts.QueryTimeout, dedup.AlgorithmPenalty, 0),
		replicaLabels: opts.ReplicaLabels,
		defaults:      RequestOptions{PartialResponse: opts.PartialResponse, Dedup: true},
	}
	evalInterval := opts.DefaultEvaluationInterval.Milliseconds()
	limit := newConcurrencyLimit(opts.QueryMaxConcurrent)
	f.engine = newPushdownEngine(f, limit, promql.EngineOpts{
		Logger:                   logger.With("component", "query engine"),
		Reg:                      reg,
		MaxSamples:               opts.QueryMaxSamples,
		Timeout:                  opts.QueryTimeout,
		ActiveQueryTracker:       limit,
		LookbackDelta:            opts.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return evalInterval },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	}, reg)
	gatherer, isGatherer := reg.(prometheus.Gatherer)
	if !isGatherer {
		gatherer = prometheus.NewRegistry()
	}
	cors, err := regexp.Compile("^(?:" + opts.CORSOrigin + ")$")
	if err != nil {
		return nil, fmt.Errorf("--web.cors.origin=%q: %w", opts.CORSOrigin, err)
	}
	f.cors = cors
	f.api = f.newAPI(reg, gatherer, cors)

	if opts.GRPCAddress != "" {
		if f.grpcLis, err = net.Listen("tcp", opts.GRPCAddress); err != nil {
			return nil, fmt.Errorf("listen on --grpc-address=%s: %w", opts.GRPCAddress, err)
		}
		if f.grpcSrv, err = f.newGRPCServer(kl); err != nil {
			return nil, err
		}
	}
	ok = true
	return f, nil
}

func (o Options) validate() error {
	if len(o.Endpoints) == 0 && len(o.EndpointSDFiles) == 0 {
		return errors.New("no endpoints: give at least one --endpoint or --endpoint.sd-file")
	}
	for _, l := range o.ReplicaLabels {
		if !model.LabelName(l).IsValid() || l == labels.MetricName {
			return fmt.Errorf("--query.replica-label=%q is not a valid label name", l)
		}
	}
	if err := o.ExternalLabels.Validate(func(l labels.Label) error {
		if !model.LabelName(l.Name).IsValid() || l.Name == labels.MetricName {
			return fmt.Errorf("--label: %q is not a valid label name", l.Name)
		}
		if l.Value == "" {
			return fmt.Errorf("--label: %s has an empty value", l.Name)
		}
		return nil
	}); err != nil {
		return err
	}
	for name, d := range map[string]time.Duration{
		"--endpoint.info-interval": o.EndpointInfoInterval,
		"--endpoint.dns-interval":  o.EndpointDNSInterval,
		"--query.timeout":          o.QueryTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if o.EndpointTimeout < 0 {
		return fmt.Errorf("--query.endpoint-timeout must not be negative, got %s", o.EndpointTimeout)
	}
	if len(o.EndpointSDFiles) > 0 && o.EndpointSDInterval <= 0 {
		return fmt.Errorf("--endpoint.sd-interval must be positive, got %s", o.EndpointSDInterval)
	}
	if o.QueryMaxConcurrent <= 0 || o.QueryMaxConcurrentSelects <= 0 {
		return errors.New("--query.max-concurrent and --query.max-concurrent-select must be positive")
	}
	if o.DefaultEvaluationInterval <= 0 {
		return fmt.Errorf("--query.default-evaluation-interval must be positive, got %s", o.DefaultEvaluationInterval)
	}
	if err := o.GRPCServerTLS.Check(); err != nil {
		return err
	}
	return o.GRPCClientTLS.Check()
}

func (f *Federator) newGRPCServer(kl log.Logger) (*grpc.Server, error) {
	infoSrv := info.NewInfoServer(component.Query.String(),
		info.WithLabelSetFunc(func() []labelpb.ZLabelSet { return f.proxy.LabelSet() }),
		info.WithStoreInfoFunc(func() (*infopb.StoreInfo, error) {
			select {
			case <-f.endpoints.ready:
			default:
				// As a Thanos Querier: a parent keeps asking until the
				// first round of Info calls to the endpoints is done.
				return nil, errors.New("not ready: the endpoints have not all been asked for their Info yet")
			}
			mint, maxt := f.proxy.TimeRange()
			return &infopb.StoreInfo{
				MinTime: mint,
				MaxTime: maxt,
				// The endpoints shard on their own labels; with labels
				// of its own attached, the federator leaves sharding to
				// the parent.
				SupportsSharding:             f.opts.ExternalLabels.IsEmpty(),
				SupportsWithoutReplicaLabels: true,
				TsdbInfos:                    f.proxy.TSDBInfos(),
			}, nil
		}),
		info.WithMetricMetadataInfoFunc(func() *infopb.MetricMetadataInfo { return &infopb.MetricMetadataInfo{} }),
	)
	srv, err := grpctls.NewServer(f.logger.With("component", "grpc"), f.opts.GRPCServerTLS)
	if err != nil {
		return nil, err
	}
	store.RegisterStoreServer(f.store, kl)(srv)
	metadata.RegisterMetadataServer(f.metadata)(srv)
	info.RegisterInfoServer(infoSrv)(srv)
	// A parent federator pushes aggregations down to this one; they are
	// evaluated as this federator evaluates its own queries (pushing down
	// further where it can), over the series the parent would have pulled.
	pushdown.Register(srv, &federatorEvaluator{e: f.engine, generic: &pushdown.Server{
		Engine:     f.engine,
		MaxSamples: f.opts.QueryMaxSamples,
		// A parent's smaller limit applies here and is forwarded on.
		Limited: func(maxSamples int) promql.QueryEngine { return f.engine.withMaxSamples(maxSamples) },
		Queryable: func(ctx context.Context, req *pushdown.Request) (context.Context, storage.Queryable) {
			ctx = WithRequestOptions(ctx, RequestOptions{PartialResponse: req.PartialResponse, Dedup: req.Dedup, ReplicaLabels: req.ReplicaLabels})
			if req.EncodeJSON && req.StepMs == 0 {
				// The answer only goes on as JSON: an answer made of
				// this federator's leaves' JSON is passed on as it is.
				ctx = withEncodedRelay(ctx, req.SetLabels)
			}
			return ctx, f.queryable
		},
	}})
	return srv, nil
}

// Register adds the federator's long-running parts to a run group.
func (f *Federator) Register(g *run.Group) {
	g.Add(func() error {
		return f.endpoints.run(f.ctx)
	}, func(error) { f.cancel() })
	if f.grpcSrv != nil {
		g.Add(func() error {
			f.logger.Info("Serving StoreAPI", "address", f.grpcLis.Addr().String())
			return f.grpcSrv.Serve(f.grpcLis)
		}, func(error) {
			// Graceful first, so that a parent's in-flight Series finish.
			stopped := make(chan struct{})
			go func() { f.grpcSrv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				f.grpcSrv.Stop()
			}
		})
	}
	g.Add(func() error {
		<-f.ctx.Done()
		return nil
	}, func(error) {
		f.cancel()
		f.close()
	})
}

func (f *Federator) close() {
	f.cancel()
	if f.grpcLis != nil && f.grpcSrv == nil {
		f.grpcLis.Close()
	}
	if f.endpoints != nil {
		f.endpoints.close()
	}
}

// GRPCAddr is the bound StoreAPI address, empty when disabled.
func (f *Federator) GRPCAddr() string {
	if f.grpcLis == nil {
		return ""
	}
	return f.grpcLis.Addr().String()
}

// Ready is closed once every endpoint has been asked for its Info once.
func (f *Federator) Ready() <-chan struct{} { return f.endpoints.ready }

// Queryable is the federated view as Prometheus storage, for roles that
// evaluate PromQL over it in-process (alerting rules); use
// WithRequestOptions on the context to choose partial response and dedup.
func (f *Federator) Queryable() storage.SampleAndChunkQueryable { return f.queryable }

// Engine is the federator's PromQL engine.
func (f *Federator) Engine() promql.QueryEngine { return f.engine }

// Endpoints are the endpoints' last known states, as /api/v1/stores shows.
func (f *Federator) Endpoints() []query.EndpointStatus { return f.endpoints.statuses() }
