// Package collector is Panorama's per-cluster role: it discovers what runs
// in a Kubernetes cluster, scrapes it into a local Prometheus TSDB, keeps
// the cluster's topology, and serves it all through the Prometheus HTTP
// API, /federate, remote-write receive and Thanos' StoreAPI.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	"github.com/grafana/regexp"
	"github.com/oklog/run"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/route"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/notifications"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/panorama-obs/panorama/collector/kube"
	"github.com/panorama-obs/panorama/federation/pushdown"
	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/server"
)

// Options are the collector's command-line settings.
type Options struct {
	ConfigFile string
	// ListenAddress is the web address the collector is reached at, for
	// the links Prometheus' API builds.
	ListenAddress string
	TSDBPath      string
	Retention     model.Duration
	GRPCAddress   string
	// GRPCServerTLS is the TLS of the StoreAPI's gRPC server (Thanos'
	// --grpc-server-tls-*); plaintext when empty.
	GRPCServerTLS       grpctls.ServerConfig
	ExternalURL         *url.URL
	QueryMaxSamples     int
	QueryTimeout        time.Duration
	QueryMaxConcurrency int
	LookbackDelta       time.Duration
	// RemoteWriteReceiver enables /api/v1/write.
	RemoteWriteReceiver bool
	// CORSOrigin is the regexp (anchored) of origins the API answers with
	// CORS headers, Prometheus' --web.cors.origin; empty allows all.
	CORSOrigin string
	// RemoteFlushDeadline bounds how long shutdown waits for remote write.
	RemoteFlushDeadline time.Duration
}

// Collector is one running collector.
type Collector struct {
	logger *slog.Logger
	reg    prometheus.Registerer
	opts   Options

	mtx sync.RWMutex
	cfg *Config

	db             *tsdb.DB
	dbStats        *tsdb.DBStats
	remote         *remote.Storage
	fanout         storage.Storage
	queryable      *externalLabelsQueryable
	engine         *promql.Engine
	discovery      *discovery.Manager
	scrape         *scrape.Manager
	rules          *rules.Manager
	api            *apiv1.API
	store          *storeServer
	topology       *kube.Topology
	topologyReg    *prometheus.Registry
	internal       net.Listener
	grpcLis        net.Listener
	internalSrv    *http.Server
	ctx            context.Context
	cancel         context.CancelFunc
	readyCh        chan struct{}
	topologySynced prometheus.Gauge
	applyingSince  time.Time
}

// New loads the configuration, opens the TSDB and builds every part; a bad
// configuration file fails here, before anything listens.
func New(logger *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, opts Options) (*Collector, error) {
	cfg, err := LoadFile(opts.ConfigFile, logger)
	if err != nil {
		return nil, err
	}
	// Before anything is opened: a bad certificate file stops start-up.
	if err := opts.GRPCServerTLS.Check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Collector{logger: logger, reg: reg, opts: opts, cfg: cfg, ctx: ctx, cancel: cancel, readyCh: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()

	tsdbOpts := tsdb.DefaultOptions()
	tsdbOpts.RetentionDuration = int64(time.Duration(opts.Retention) / time.Millisecond)
	c.dbStats = tsdb.NewDBStats()
	c.db, err = tsdb.Open(opts.TSDBPath, logger.With("component", "tsdb"), reg, tsdbOpts, c.dbStats)
	if err != nil {
		return nil, fmt.Errorf("open TSDB at --storage.tsdb.path=%s: %w", opts.TSDBPath, err)
	}

	c.remote = remote.NewStorage(logger.With("component", "remote"), reg, c.db.StartTime, opts.TSDBPath, opts.RemoteFlushDeadline, readyScrape{c}, false)
	// Remote write follows the WAL as it is written, not on a 15 s poll.
	c.db.SetWriteNotified(c.remote)
	c.fanout = storage.NewFanout(logger, c.db, c.remote)
	c.queryable = newExternalLabelsQueryable(c.db, cfg.Prometheus.GlobalConfig.ExternalLabels)

	// The internal listener serves what the generated jobs scrape from the
	// collector itself; the scrape client reaches it through InternalTarget.
	c.internal, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("internal listener: %w", err)
	}
	c.topologyReg = prometheus.NewRegistry()
	imux := http.NewServeMux()
	imux.Handle("/probe", newProber(logger.With("component", "prober")))
	imux.Handle("/topology/metrics", promhttp.HandlerFor(c.topologyReg, promhttp.HandlerOpts{}))
	c.internalSrv = &http.Server{Handler: imux, ReadHeaderTimeout: 10 * time.Second}

	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("discovery metrics: %w", err)
	}
	c.discovery = discovery.NewManager(ctx, logger.With("component", "discovery manager scrape"), reg, sdMetrics, discovery.Name("scrape"))
	if c.discovery == nil {
		return nil, errors.New("cannot create the discovery manager")
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	internalAddr := c.internal.Addr().String()
	c.scrape, err = scrape.NewManager(&scrape.Options{
		HTTPClientOptions: []commonconfig.HTTPClientOption{
			commonconfig.WithDialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == InternalTarget {
					addr = internalAddr
				}
				return dialer.DialContext(ctx, network, addr)
			}),
		},
	}, logger.With("component", "scrape manager"), nil, c.fanout, reg)
	if err != nil {
		return nil, fmt.Errorf("scrape manager: %w", err)
	}

	engineOpts := promql.EngineOpts{
		Logger:               logger.With("component", "query engine"),
		Reg:                  reg,
		MaxSamples:           opts.QueryMaxSamples,
		Timeout:              opts.QueryTimeout,
		ActiveQueryTracker:   promql.NewActiveQueryTracker(opts.TSDBPath, opts.QueryMaxConcurrency, logger.With("component", "activeQueryTracker")),
		LookbackDelta:        opts.LookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		NoStepSubqueryIntervalFn: func(int64) int64 {
			return int64(time.Duration(c.config().Prometheus.GlobalConfig.EvaluationInterval) / time.Millisecond)
		},
	}
	c.engine = promql.NewEngine(engineOpts)
	c.rules = rules.NewManager(&rules.ManagerOptions{
		Appendable: c.fanout,
		Queryable:  c.db,
		QueryFunc:  rules.EngineQueryFunc(c.engine, c.queryable),
		// The collector sends no alerts itself: Panorama's alerting role
		// evaluates alerting rules over the federated view.
		NotifyFunc: func(context.Context, string, ...*rules.Alert) {},
		Context:    ctx,
		ExternalURL: func() *url.URL {
			if opts.ExternalURL != nil {
				return opts.ExternalURL
			}
			return &url.URL{}
		}(),
		Registerer: reg,
		Logger:     logger.With("component", "rule manager"),
	})

	if cfg.Auto != nil && on(cfg.Auto.Jobs.Topology) {
		restCfg, err := cfg.Auto.RESTConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes_auto: %w", err)
		}
		client, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return nil, fmt.Errorf("kubernetes_auto: client: %w", err)
		}
		c.topology = kube.NewTopology(client, cfg.Cluster, cfg.Auto.Namespaces, logger.With("component", "topology"))
		c.topologyReg.MustRegister(c.topology)
		c.topologySynced = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "panorama_topology_synced",
			Help: "Whether the Kubernetes topology watch has synced (1) or is still waiting for the API server (0).",
		})
		reg.MustRegister(c.topologySynced)
	}

	c.store, err = newStoreServer(logger, c.db, cfg.Prometheus.GlobalConfig.ExternalLabels, opts.GRPCServerTLS)
	if err != nil {
		return nil, err
	}
	c.store.servePushDown(c.engine, opts.QueryMaxSamples, pushdown.NewEngines(engineOpts), c.queryable)
	if opts.GRPCAddress != "" {
		if c.grpcLis, err = net.Listen("tcp", opts.GRPCAddress); err != nil {
			return nil, fmt.Errorf("listen on --grpc-address=%s: %w", opts.GRPCAddress, err)
		}
	}
	origin := opts.CORSOrigin
	if origin == "" {
		origin = ".*"
	}
	cors, err := regexp.Compile("^(?s:" + origin + ")$")
	if err != nil {
		return nil, fmt.Errorf("--web.cors.origin: %w", err)
	}
	c.api = c.newAPI(gatherer, cors)

	if err := c.applyConfig(cfg); err != nil {
		return nil, err
	}
	close(c.readyCh)
	ok = true
	return c, nil
}

func (c *Collector) config() *Config {
	c.mtx.RLock()
	defer c.mtx.RUnlock()
	return c.cfg
}

// Reload re-reads the configuration file and applies it; on error the
// running configuration stays.
func (c *Collector) Reload() error {
	cfg, err := LoadFile(c.opts.ConfigFile, c.logger)
	if err != nil {
		return err
	}
	old := c.config()
	if !labels.Equal(old.Prometheus.GlobalConfig.ExternalLabels, cfg.Prometheus.GlobalConfig.ExternalLabels) {
		return errors.New("external labels cannot change on reload: the series already served under them would change identity; restart the collector instead")
	}
	if (old.Auto == nil) != (cfg.Auto == nil) {
		return errors.New("adding or removing kubernetes_auto needs a restart")
	}
	return c.applyConfig(cfg)
}

func (c *Collector) applyConfig(cfg *Config) error {
	pcfg := cfg.Prometheus
	if err := c.remote.ApplyConfig(pcfg); err != nil {
		return fmt.Errorf("apply remote_write: %w", err)
	}
	if err := c.scrape.ApplyConfig(pcfg); err != nil {
		return fmt.Errorf("apply scrape_configs: %w", err)
	}
	scrapeCfgs, err := pcfg.GetScrapeConfigs()
	if err != nil {
		return err
	}
	sd := make(map[string]discovery.Configs, len(scrapeCfgs))
	for _, sc := range scrapeCfgs {
		sd[sc.JobName] = sc.ServiceDiscoveryConfigs
	}
	if err := c.discovery.ApplyConfig(sd); err != nil {
		return fmt.Errorf("apply service discovery: %w", err)
	}
	var files []string
	for _, pat := range pcfg.RuleFiles {
		fs, err := filepathGlob(pat)
		if err != nil {
			return fmt.Errorf("rule_files %q: %w", pat, err)
		}
		files = append(files, fs...)
	}
	if err := c.rules.Update(time.Duration(pcfg.GlobalConfig.EvaluationInterval), files, pcfg.GlobalConfig.ExternalLabels, c.externalURL(), nil); err != nil {
		return fmt.Errorf("apply rule_files: %v", err)
	}
	// As Prometheus: runtime.gogc, 75 unless the file says otherwise.
	if old := debug.SetGCPercent(pcfg.Runtime.GoGC); old != pcfg.Runtime.GoGC {
		c.logger.Info("Updated GOGC", "old", old, "new", pcfg.Runtime.GoGC)
	}
	c.mtx.Lock()
	c.cfg = cfg
	c.mtx.Unlock()
	return nil
}

func (c *Collector) externalURL() string {
	if c.opts.ExternalURL == nil {
		return ""
	}
	return c.opts.ExternalURL.String()
}

// GRPCAddr is the bound StoreAPI address, empty when disabled.
func (c *Collector) GRPCAddr() string {
	if c.grpcLis == nil {
		return ""
	}
	return c.grpcLis.Addr().String()
}

// Cluster is the value of the cluster external label.
func (c *Collector) Cluster() string { return c.config().Cluster }

// Queryable is the collector's local storage as the API serves it: with the
// external labels attached.
func (c *Collector) Queryable() storage.SampleAndChunkQueryable { return c.queryable }

// Engine is the collector's PromQL engine.
func (c *Collector) Engine() *promql.Engine { return c.engine }

// Ready is closed when the collector has opened its storage and applied its
// configuration, as Prometheus' readiness. The Kubernetes topology may sync
// later (it needs the API server and its RBAC): until it has, only
// /api/v1/topology answers 503, so a collector with wrong RBAC can still be
// diagnosed through its own API.
func (c *Collector) Ready() <-chan struct{} { return c.readyCh }

// watchTopologySync logs when the topology has synced, and warns while it
// has not, which is nearly always missing RBAC.
func (c *Collector) watchTopologySync() {
	start := time.Now()
	warn := time.NewTicker(30 * time.Second)
	defer warn.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
			if c.topology.HasSynced() {
				c.topologySynced.Set(1)
				c.logger.Info("Kubernetes topology synced", "after", time.Since(start).Round(time.Millisecond))
				return
			}
		case <-warn.C:
			c.logger.Warn("Kubernetes topology has not synced yet: check that the collector's RBAC allows list and watch of nodes, pods, services, endpointslices and replicasets (docs/collector.md)", "waiting", time.Since(start).Round(time.Second))
		}
	}
}

// Register adds the collector's long-running parts to a run group.
func (c *Collector) Register(g *run.Group) {
	g.Add(func() error {
		err := c.discovery.Run()
		return err
	}, func(error) { c.cancel() })
	g.Add(func() error {
		return c.scrape.Run(c.discovery.SyncCh())
	}, func(error) { c.scrape.Stop() })
	g.Add(func() error {
		err := c.internalSrv.Serve(c.internal)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}, func(error) { c.internalSrv.Close() })
	g.Add(func() error {
		c.rules.Run()
		<-c.ctx.Done()
		return nil
	}, func(error) { c.rules.Stop(); c.cancel() })
	if c.grpcLis != nil {
		g.Add(func() error {
			return c.store.ServeListener(c.grpcLis)
		}, func(error) { c.store.Stop() })
	}
	if c.topology != nil {
		g.Add(func() error {
			return c.topology.Run(c.ctx)
		}, func(error) { c.cancel() })
		go c.watchTopologySync()
	}
	// Closing storage comes last: run's interrupts are called in order, so
	// this one waits for the scrapers above to stop.
	g.Add(func() error {
		<-c.ctx.Done()
		return nil
	}, func(error) {
		c.cancel()
		c.close()
	})
}

func (c *Collector) close() {
	c.cancel()
	if c.internal != nil {
		c.internal.Close()
	}
	if c.grpcLis != nil {
		c.grpcLis.Close()
	}
	if c.remote != nil {
		if err := c.remote.Close(); err != nil {
			c.logger.Error("Closing remote storage", "err", err)
		}
	}
	if c.db != nil {
		if err := c.db.Close(); err != nil {
			c.logger.Error("Closing TSDB", "err", err)
		}
		c.db = nil
	}
}

// Mount adds the collector's HTTP endpoints under mux-style patterns.
func (c *Collector) Mount(handle func(pattern string, h http.Handler)) {
	r := route.New()
	c.api.Register(r)
	handle("/api/v1/", server.GzipFast(http.StripPrefix("/api/v1", r)))
	handle("/api/v1/topology", c.whenReady(c.serveTopology))
	handle("/federate", c.whenReady(c.serveFederate))
}

// whenReady answers 503 until the collector is ready, as Prometheus does.
func (c *Collector) whenReady(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-c.readyCh:
			f(w, r)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Service Unavailable")
		}
	}
}

func (c *Collector) newAPI(gatherer prometheus.Gatherer, cors *regexp.Regexp) *apiv1.API {
	listen := c.opts.ListenAddress
	host, scheme := "", "http"
	if c.opts.ExternalURL != nil {
		host, scheme = c.opts.ExternalURL.Host, c.opts.ExternalURL.Scheme
	}
	return apiv1.NewAPI(c.engine, c.queryable, c.fanout, c.db,
		func(context.Context) apiv1.ScrapePoolsRetriever { return c.scrape },
		func(context.Context) apiv1.TargetRetriever { return c.scrape },
		func(context.Context) apiv1.AlertmanagerRetriever { return noAlertmanagers{} },
		func() config.Config { return *c.config().Prometheus },
		map[string]string{},
		apiv1.GlobalURLOptions{ListenAddress: listen, Host: host, Scheme: scheme},
		c.whenReady,
		tsdbAdmin{db: c.db, stats: c.dbStats},
		c.opts.TSDBPath,
		false,
		c.logger.With("component", "api"),
		func(context.Context) apiv1.RulesRetriever { return c.rules },
		5e7, 10, 1048576,
		false,
		cors,
		func() (apiv1.RuntimeInfo, error) {
			return apiv1.RuntimeInfo{StartTime: startTime, CWD: cwd(), StorageRetention: c.opts.Retention.String()}, nil
		},
		&apiv1.PrometheusVersion{Version: version.Version, Revision: version.Revision, Branch: version.Branch, BuildUser: version.BuildUser, BuildDate: version.BuildDate, GoVersion: version.GoVersion},
		func() []notifications.Notification { return nil },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		gatherer,
		c.reg,
		nil,
		c.opts.RemoteWriteReceiver,
		remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType},
		false, false, false, false,
		c.opts.LookbackDelta,
		false, false,
		nil,
		nil,
	)
}

type readyScrape struct{ c *Collector }

func (r readyScrape) Get() (*scrape.Manager, error) { return r.c.scrape, nil }

// noAlertmanagers answers /api/v1/alertmanagers: a collector sends alerts
// to none; Panorama's alerting role does.
type noAlertmanagers struct{}

func (noAlertmanagers) Alertmanagers() []*url.URL        { return nil }
func (noAlertmanagers) DroppedAlertmanagers() []*url.URL { return nil }
