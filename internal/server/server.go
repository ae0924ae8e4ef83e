// Package server is the HTTP plumbing every Panorama role shares: listening
// (with TLS and basic auth from exporter-toolkit's --web.config.file),
// logging flags, /metrics, /-/healthy, /-/ready, /-/reload and SIGHUP reload.
// Roles mount their own handlers on it; none of them re-implements this.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
)

// LogFlags registers --log.level and --log.format on the application and
// returns the configuration they fill.
func LogFlags(app *kingpin.Application) *promslog.Config {
	cfg := &promslog.Config{}
	promslogflag.AddFlags(app, cfg)
	return cfg
}

// Flags are the web flags of one role.
type Flags struct {
	Web *web.FlagConfig
}

// AddFlags registers --web.listen-address (with the role's default) and
// --web.config.file on a role's command.
func AddFlags(cmd *kingpin.CmdClause, defaultAddress string) *Flags {
	return &Flags{Web: kingpinflag.AddFlags(cmd, defaultAddress)}
}

// NewRegistry returns a metrics registry with the Go, process and build
// collectors that every role exposes.
func NewRegistry(component string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "panorama_build_info",
			Help:        "A metric with a constant '1' value labeled by version, revision, goversion and the role of this process.",
			ConstLabels: prometheus.Labels{"version": version.Version, "revision": version.Revision, "goversion": version.GoVersion, "component": component},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Server serves one role's HTTP endpoints.
type Server struct {
	logger    *slog.Logger
	flags     *web.FlagConfig
	mux       *http.ServeMux
	srv       *http.Server
	listeners []net.Listener
	ready     atomic.Bool

	reloadMtx sync.Mutex
	reload    func() error

	reloads prometheus.Counter
	failed  prometheus.Gauge
}

// New binds the listen addresses at once (so that Addr is known before Run,
// and a busy port fails start-up) and mounts the operational endpoints.
func New(logger *slog.Logger, flags *Flags, reg *prometheus.Registry) (*Server, error) {
	if err := checkWebConfig(flags.Web); err != nil {
		return nil, err
	}
	s := &Server{
		logger: logger,
		flags:  flags.Web,
		mux:    http.NewServeMux(),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_config_reloads_total", Help: "Configuration reloads attempted.",
		}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "panorama_config_last_reload_successful", Help: "Whether the last configuration reload attempt was successful.",
		}),
	}
	s.failed.Set(1)
	reg.MustRegister(s.reloads, s.failed)
	for _, addr := range *flags.Web.WebListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listen on --web.listen-address=%s: %w", addr, err)
		}
		s.listeners = append(s.listeners, l)
	}
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	s.mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "Healthy.")
	})
	s.mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "Service Unavailable")
			return
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "Ready.")
	})
	s.mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "This endpoint requires a POST or PUT request.", http.StatusMethodNotAllowed)
			return
		}
		if err := s.Reload(); err != nil {
			http.Error(w, fmt.Sprintf("failed to reload config: %s", err), http.StatusInternalServerError)
		}
	})
	// Go's profiler, at the paths Prometheus and Thanos serve it, behind
	// the same TLS and authentication as everything else.
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 30 * time.Second}
	return s, nil
}

// checkWebConfig validates --web.config.file before anything listens, so a
// bad TLS or auth file stops start-up with its reason.
func checkWebConfig(flags *web.FlagConfig) error {
	if flags.WebConfigFile == nil || *flags.WebConfigFile == "" {
		return nil
	}
	if err := web.Validate(*flags.WebConfigFile); err != nil {
		return fmt.Errorf("--web.config.file=%s: %w", *flags.WebConfigFile, err)
	}
	return nil
}

// Handle mounts a handler; the longest matching pattern wins.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Addr is the first bound address (useful with port 0).
func (s *Server) Addr() string {
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].Addr().String()
}

// SetReady flips /-/ready.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// OnReload sets what /-/reload and SIGHUP call.
func (s *Server) OnReload(f func() error) {
	s.reloadMtx.Lock()
	defer s.reloadMtx.Unlock()
	s.reload = f
}

// Reload runs the reload function, one at a time, and records the outcome.
func (s *Server) Reload() error {
	s.reloadMtx.Lock()
	defer s.reloadMtx.Unlock()
	if s.reload == nil {
		return errors.New("this component has no configuration to reload")
	}
	s.reloads.Inc()
	if err := s.reload(); err != nil {
		s.failed.Set(0)
		s.logger.Error("Reloading configuration failed", "err", err)
		return err
	}
	s.failed.Set(1)
	s.logger.Info("Configuration reloaded")
	return nil
}

// Run serves until Shutdown; it is an oklog/run execute function.
func (s *Server) Run() error {
	s.logger.Info("Listening", "address", s.Addr())
	err := web.ServeMultiple(s.listeners, s.srv, s.flags, s.logger)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops serving; it is an oklog/run interrupt function.
func (s *Server) Shutdown(error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.closeListeners()
	}
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
}

// SignalActor returns oklog/run functions that stop on SIGINT/SIGTERM and
// reload on SIGHUP.
//
// The signals are taken from the call on, not from when the run group
// starts the actor: the group starts its actors concurrently, and a
// SIGTERM sent as soon as the server answered (a test stopping a
// collector it just queried; seen in CI) must not meet the default
// action, which kills the process without a graceful stop.
func (s *Server) SignalActor() (func() error, func(error)) {
	term := make(chan os.Signal, 1)
	signal.Notify(term, os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	return func() error {
			defer signal.Stop(term)
			defer signal.Stop(hup)
			for {
				select {
				case sig := <-term:
					s.logger.Info("Received signal, exiting gracefully", "signal", sig.String())
					return nil
				case <-hup:
					_ = s.Reload()
				case <-ctx.Done():
					return nil
				}
			}
		}, func(error) {
			cancel()
		}
}
