package collector

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// prober answers /probe?module=tcp|http|https&target=host:port[&path=/x], as the
// blackbox exporter does: the generated panorama-probes job scrapes it once
// per service endpoint, so every probe is a target with its own health.
type prober struct {
	logger *slog.Logger
	client *http.Client
}

func newProber(logger *slog.Logger) *prober {
	return &prober{logger: logger, client: &http.Client{
		// Health checks must not follow redirects off the endpoint.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			// The probe checks reachability, not certificates.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
			DisableKeepAlives: true,
		},
	}}
}

func (p *prober) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	target, module := q.Get("target"), q.Get("module")
	if target == "" {
		http.Error(w, "the target parameter is missing", http.StatusBadRequest)
		return
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		http.Error(w, fmt.Sprintf("target %q is not host:port: %v", target, err), http.StatusBadRequest)
		return
	}
	timeout := 5 * time.Second
	if v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
			// Leave room for the scrape itself, as the blackbox exporter does.
			timeout = time.Duration((s - 0.5) * float64(time.Second))
			if timeout <= 0 {
				timeout = time.Duration(s * float64(time.Second) / 2)
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	reg := prometheus.NewRegistry()
	success := prometheus.NewGauge(prometheus.GaugeOpts{Name: "panorama_probe_success", Help: "Whether the probe of the endpoint succeeded."})
	duration := prometheus.NewGauge(prometheus.GaugeOpts{Name: "panorama_probe_duration_seconds", Help: "How long the probe took."})
	reg.MustRegister(success, duration)

	start := time.Now()
	var ok bool
	switch module {
	case "", "tcp":
		ok = p.probeTCP(ctx, target)
	case "http", "https":
		status := prometheus.NewGauge(prometheus.GaugeOpts{Name: "panorama_probe_http_status_code", Help: "HTTP status code of the probe's response, 0 when none came."})
		reg.MustRegister(status)
		var code int
		ok, code = p.probeHTTP(ctx, module, target, q.Get("path"))
		status.Set(float64(code))
	default:
		http.Error(w, fmt.Sprintf("unknown probe module %q: use tcp, http or https", module), http.StatusBadRequest)
		return
	}
	duration.Set(time.Since(start).Seconds())
	if ok {
		success.Set(1)
	}
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (p *prober) probeTCP(ctx context.Context, target string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		p.logger.Debug("TCP probe failed", "target", target, "err", err)
		return false
	}
	conn.Close()
	return true
}

// probeHTTP succeeds on a 2xx or 3xx answer.
func (p *prober) probeHTTP(ctx context.Context, scheme, target, path string) (bool, int) {
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+target+path, nil)
	if err != nil {
		return false, 0
	}
	req.Header.Set("User-Agent", "Panorama-Probe/1")
	resp, err := p.client.Do(req)
	if err != nil {
		p.logger.Debug("HTTP probe failed", "target", target, "err", err)
		return false, 0
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400, resp.StatusCode
}
