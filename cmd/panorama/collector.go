package main

import (
	"fmt"
	"log/slog"
	"net/url"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"

	"github.com/panorama-obs/panorama/collector"
	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/server"
)

func registerCollector(app *kingpin.Application, roles map[string]setupFunc) {
	cmd := app.Command("collector", "Run in a Kubernetes cluster: discover, scrape, store and serve its metrics and topology.")
	web := server.AddFlags(cmd, ":9090")
	var (
		opts        collector.Options
		externalURL string
		retention   model.Duration
	)
	cmd.Flag("config.file", "Collector configuration file (Prometheus format plus kubernetes_auto).").Default("collector.yml").StringVar(&opts.ConfigFile)
	cmd.Flag("grpc-address", "Listen address of the Thanos StoreAPI (gRPC); empty disables it.").Default(":10901").StringVar(&opts.GRPCAddress)
	grpcTLS := grpctls.AddServerFlags(cmd)
	cmd.Flag("storage.tsdb.path", "Directory of the TSDB and its WAL.").Default("data/").StringVar(&opts.TSDBPath)
	cmd.Flag("storage.tsdb.retention.time", "How long to keep samples.").Default("15d").SetValue(&retention)
	cmd.Flag("web.external-url", "URL under which the collector is reached from outside (for links).").StringVar(&externalURL)
	cmd.Flag("web.cors.origin", `Regexp of origins the API answers with CORS headers, anchored; ".*" allows all.`).Default(".*").StringVar(&opts.CORSOrigin)
	cmd.Flag("web.enable-remote-write-receiver", "Accept Prometheus remote write at /api/v1/write.").Default("true").BoolVar(&opts.RemoteWriteReceiver)
	cmd.Flag("query.max-samples", "Most samples a single query may load into memory.").Default("50000000").IntVar(&opts.QueryMaxSamples)
	cmd.Flag("query.timeout", "Longest a query may run.").Default("2m").DurationVar(&opts.QueryTimeout)
	cmd.Flag("query.max-concurrency", "Most queries run at once.").Default("20").IntVar(&opts.QueryMaxConcurrency)
	cmd.Flag("query.lookback-delta", "How far back an instant query looks for a sample.").Default("5m").DurationVar(&opts.LookbackDelta)
	cmd.Flag("storage.remote.flush-deadline", "How long to wait flushing remote-write samples on shutdown.").Default("1m").DurationVar(&opts.RemoteFlushDeadline)

	roles[cmd.FullCommand()] = func(logCfg *promslog.Config) error {
		opts.Retention = retention
		opts.GRPCServerTLS = *grpcTLS
		if externalURL != "" {
			u, err := url.Parse(externalURL)
			if err != nil {
				return fmt.Errorf("--web.external-url: %w", err)
			}
			opts.ExternalURL = u
		}
		return runCollector(promslog.New(logCfg), web, opts)
	}
}

func runCollector(logger *slog.Logger, web *server.Flags, opts collector.Options) error {
	reg := server.NewRegistry("collector")
	srv, err := server.New(logger, web, reg)
	if err != nil {
		return err
	}
	opts.ListenAddress = srv.Addr()
	c, err := collector.New(logger, reg, reg, opts)
	if err != nil {
		srv.Shutdown(err)
		return err
	}
	c.Mount(srv.Handle)
	srv.OnReload(c.Reload)

	// Interrupts run in order: stop taking signals and requests first, then
	// stop the collector, which closes its storage last.
	var g run.Group
	g.Add(srv.SignalActor())
	g.Add(srv.Run, srv.Shutdown)
	c.Register(&g)
	go func() {
		<-c.Ready()
		srv.SetReady(true)
		logger.Info("Collector ready", "cluster", c.Cluster(), "query", "http://"+srv.Addr()+"/api/v1/query")
	}()
	return g.Run()
}
