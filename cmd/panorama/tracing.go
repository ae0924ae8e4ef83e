package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/oklog/run"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"

	"github.com/panorama-obs/panorama/internal/server"
	"github.com/panorama-obs/panorama/tracing"
	"github.com/panorama-obs/panorama/tracing/store"
	"github.com/panorama-obs/panorama/tracing/store/elasticsearch"
)

func registerTracing(app *kingpin.Application, roles map[string]setupFunc) {
	cmd := app.Command("tracing", "Receive OTLP traces, store them (embedded store or Elasticsearch), serve the Jaeger query API, the service graph and RED metrics.")
	web := server.AddFlags(cmd, ":16686")
	opts := tracing.DefaultOptions()
	var (
		retention     = model.Duration(opts.Retention)
		queueMaxBytes = units.Base2Bytes(opts.Queue.MaxBytes)
		maxRequest    = units.Base2Bytes(opts.Receiver.MaxRequestBytes)
	)
	cmd.Flag("otlp.grpc-address", "Listen address of OTLP/gRPC; empty disables it.").Default(opts.Receiver.GRPCAddress).StringVar(&opts.Receiver.GRPCAddress)
	cmd.Flag("otlp.http-address", "Listen address of OTLP/HTTP (POST /v1/traces, protobuf or JSON); empty disables it.").Default(opts.Receiver.HTTPAddress).StringVar(&opts.Receiver.HTTPAddress)
	cmd.Flag("otlp.max-request-size", "Largest OTLP request accepted (after decompression).").Default(maxRequest.String()).BytesVar(&maxRequest)
	cmd.Flag("otlp.max-attribute-length", "Truncate string attribute values to this many characters (0: no limit); truncations are counted in panorama_tracing_attributes_truncated_total.").Default(fmt.Sprint(opts.Receiver.MaxAttributeLength)).IntVar(&opts.Receiver.MaxAttributeLength)
	cmd.Flag("data.dir", "Directory of the durable queue and the embedded span store.").Default(opts.DataDir).StringVar(&opts.DataDir)
	cmd.Flag("storage.retention", "How long the embedded store keeps spans and dependency links (by span start time).").Default(retention.String()).SetValue(&retention)
	cmd.Flag("queue.max-bytes", "Most bytes of spans waiting in the durable queue for the store; beyond it OTLP clients are told to retry (gRPC Unavailable, HTTP 503).").Default(queueMaxBytes.String()).BytesVar(&queueMaxBytes)
	cmd.Flag("servicegraph.flush-interval", "Length of the dependency buckets written to the store (what /api/dependencies sums).").Default(model.Duration(opts.ServiceGraph.FlushInterval).String()).DurationVar(&opts.ServiceGraph.FlushInterval)
	cmd.Flag("servicegraph.edge-wait", "How long a client or server span waits for the other half of its request before it is settled as an edge to a virtual node.").Default(model.Duration(opts.ServiceGraph.TTL).String()).DurationVar(&opts.ServiceGraph.TTL)
	cmd.Flag("servicegraph.cluster", "Cluster named in topology IDs for resources without k8s.cluster.name.").StringVar(&opts.ServiceGraph.Cluster)
	esCfg := elasticsearch.DefaultConfig()
	esCfg.AddFlags(cmd)

	roles[cmd.FullCommand()] = func(logCfg *promslog.Config) error {
		opts.Retention = time.Duration(retention)
		opts.Queue.MaxBytes = int64(queueMaxBytes)
		opts.Receiver.MaxRequestBytes = int64(maxRequest)
		return runTracing(promslog.New(logCfg), web, opts, esCfg)
	}
}

// runTracing serves the tracing role until a signal stops it.
func runTracing(logger *slog.Logger, web *server.Flags, opts tracing.Options, esCfg elasticsearch.Config) error {
	reg := server.NewRegistry("tracing")
	srv, err := server.New(logger, web, reg)
	if err != nil {
		return err
	}
	var (
		st       store.Store
		kind     = "embedded"
		storeLog = logger.With("component", "store")
	)
	if len(esCfg.ServerURLs) == 0 {
		st, err = tracing.OpenEmbeddedStore(opts, storeLog, reg)
	} else {
		kind = "elasticsearch"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		st, err = elasticsearch.New(ctx, esCfg, storeLog, reg)
		cancel()
	}
	if err != nil {
		srv.Shutdown(err)
		return err
	}
	t, err := tracing.New(opts, st, logger, reg)
	if err != nil {
		st.Close()
		srv.Shutdown(err)
		return err
	}
	t.Mount(srv.Handle)

	var g run.Group
	g.Add(srv.SignalActor())
	t.Register(&g)
	g.Add(srv.Run, srv.Shutdown)
	srv.SetReady(true)
	logger.Info("Tracing ready", "store", kind, "otlp_grpc", t.GRPCAddr(), "otlp_http", t.HTTPAddr(), "jaeger_api", "http://"+srv.Addr()+"/api/services")
	err = g.Run()
	if cerr := t.Close(); cerr != nil {
		logger.Error("Closing the span queue or store failed", "err", cerr)
	}
	return err
}
