package main

import (
	"fmt"
	"log/slog"
	"net/url"

	"github.com/alecthomas/kingpin/v2"
	"github.com/oklog/run"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"

	"github.com/panorama-obs/panorama/federation"
	"github.com/panorama-obs/panorama/internal/grpctls"
	"github.com/panorama-obs/panorama/internal/server"
)

func registerFederator(app *kingpin.Application, roles map[string]setupFunc) {
	cmd := app.Command("federator", "Answer PromQL over many collectors, federators and Thanos StoreAPIs; serve the Prometheus HTTP API and a StoreAPI for the next level up.")
	web := server.AddFlags(cmd, ":9091")
	opts := federation.DefaultOptions()
	var (
		externalURL string
		extLabels   []string
	)
	cmd.Flag("grpc-address", "Listen address of the Thanos StoreAPI (gRPC) for the next level up; empty disables it.").Default(opts.GRPCAddress).StringVar(&opts.GRPCAddress)
	grpcServerTLS := grpctls.AddServerFlags(cmd)
	grpcClientTLS := grpctls.AddClientFlags(cmd)
	cmd.Flag("endpoint", "StoreAPI endpoint to query: host:port, dns+host:port or dnssrv+name (repeatable).").PlaceHolder("<endpoint>").StringsVar(&opts.Endpoints)
	cmd.Flag("endpoint.sd-file", "Prometheus file_sd file (JSON or YAML) whose targets are more endpoints, re-read on change (repeatable).").PlaceHolder("<path>").StringsVar(&opts.EndpointSDFiles)
	cmd.Flag("endpoint.sd-interval", "Re-read the sd-files at least this often.").Default(model.Duration(opts.EndpointSDInterval).String()).DurationVar(&opts.EndpointSDInterval)
	cmd.Flag("endpoint.dns-interval", "Resolve dns+ and dnssrv+ endpoints this often.").Default(model.Duration(opts.EndpointDNSInterval).String()).DurationVar(&opts.EndpointDNSInterval)
	cmd.Flag("endpoint.info-interval", "Refresh every endpoint's Info (external labels, time range, health) this often; also the longest an Info call may take.").Default(model.Duration(opts.EndpointInfoInterval).String()).DurationVar(&opts.EndpointInfoInterval)
	cmd.Flag("query.endpoint-timeout", "Longest wait for an endpoint's answer (each message of a Series stream, each label call); one that exceeds it is left out with a warning. 0 disables.").Default(model.Duration(opts.EndpointTimeout).String()).DurationVar(&opts.EndpointTimeout)
	cmd.Flag("query.replica-label", "Label HA replicas differ by; their series are deduplicated (repeatable).").PlaceHolder("<name>").StringsVar(&opts.ReplicaLabels)
	cmd.Flag("label", `External label attached to every series this federator serves, name="value" (repeatable).`).PlaceHolder(`<name>="<value>"`).StringsVar(&extLabels)
	cmd.Flag("query.partial-response", "Answer with the endpoints that answered, and a warning for each that did not, unless a request says partial_response=false.").Default("true").BoolVar(&opts.PartialResponse)
	cmd.Flag("query.push-down", "Evaluate aggregations that distribute over endpoints with disjoint external labels at the endpoints, and merge their answers (see docs/federation.md); --no-query.push-down pulls every series.").Default("true").BoolVar(&opts.PushDown)
	cmd.Flag("query.timeout", "Longest a query may run.").Default(model.Duration(opts.QueryTimeout).String()).DurationVar(&opts.QueryTimeout)
	cmd.Flag("query.max-samples", "Most samples a single query may load into memory.").Default(fmt.Sprint(opts.QueryMaxSamples)).IntVar(&opts.QueryMaxSamples)
	cmd.Flag("query.max-concurrent", "Most queries run at once; more wait within their timeout.").Default(fmt.Sprint(opts.QueryMaxConcurrent)).IntVar(&opts.QueryMaxConcurrent)
	cmd.Flag("query.max-concurrent-select", "Most selections of one query sent to the endpoints at once.").Default(fmt.Sprint(opts.QueryMaxConcurrentSelects)).IntVar(&opts.QueryMaxConcurrentSelects)
	cmd.Flag("query.lookback-delta", "How far back an instant query looks for a sample.").Default(model.Duration(opts.LookbackDelta).String()).DurationVar(&opts.LookbackDelta)
	cmd.Flag("query.default-evaluation-interval", "Step of subqueries that give none.").Default(model.Duration(opts.DefaultEvaluationInterval).String()).DurationVar(&opts.DefaultEvaluationInterval)
	cmd.Flag("web.external-url", "URL under which the federator is reached from outside (for links).").StringVar(&externalURL)
	cmd.Flag("web.cors.origin", "Regular expression of the origins allowed to call the API from a browser.").Default(opts.CORSOrigin).StringVar(&opts.CORSOrigin)

	roles[cmd.FullCommand()] = func(logCfg *promslog.Config) error {
		ext, err := federation.ParseLabels(extLabels)
		if err != nil {
			return err
		}
		opts.ExternalLabels = ext
		opts.GRPCServerTLS = *grpcServerTLS
		opts.GRPCClientTLS = *grpcClientTLS
		if externalURL != "" {
			u, err := url.Parse(externalURL)
			if err != nil {
				return fmt.Errorf("--web.external-url: %w", err)
			}
			opts.ExternalURL = u
		}
		opts.Flags = map[string]string{}
		for _, f := range cmd.Model().Flags {
			opts.Flags[f.Name] = f.Value.String()
		}
		return runFederator(promslog.New(logCfg), web, opts)
	}
}

func runFederator(logger *slog.Logger, web *server.Flags, opts federation.Options) error {
	reg := server.NewRegistry("federator")
	srv, err := server.New(logger, web, reg)
	if err != nil {
		return err
	}
	opts.ListenAddress = srv.Addr()
	f, err := federation.New(logger, reg, opts)
	if err != nil {
		srv.Shutdown(err)
		return err
	}
	f.Mount(srv.Handle)

	var g run.Group
	g.Add(srv.SignalActor())
	f.Register(&g)
	g.Add(srv.Run, srv.Shutdown)
	go func() {
		<-f.Ready()
		srv.SetReady(true)
		logger.Info("Federator ready", "endpoints", len(f.Endpoints()), "query", "http://"+srv.Addr()+"/api/v1/query", "storeapi", f.GRPCAddr())
	}()
	return g.Run()
}
