package elasticsearch

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	bulkItems *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bulkItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_elasticsearch_bulk_items_total",
			Help: "Items of _bulk requests by result: ok, retried (429/5xx, sent again), failed (given up or rejected).",
		}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "panorama_tracing_elasticsearch_request_duration_seconds",
			Help:    "Latency of requests to Elasticsearch by operation and status code.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"operation", "code"}),
	}
	for _, r := range []string{"ok", "retried", "failed"} {
		m.bulkItems.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.bulkItems, m.latency)
	}
	return m
}

// instrument wraps a transport to observe the latency of each request.
func (m *metrics) instrument(next http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		start := time.Now()
		res, err := next.RoundTrip(req)
		code := "error"
		if err == nil {
			code = http.StatusText(res.StatusCode)
			code = strings.ToLower(strings.ReplaceAll(code, " ", "_"))
			if code == "" {
				code = "unknown"
			}
		}
		m.latency.WithLabelValues(operationOf(req), code).Observe(time.Since(start).Seconds())
		return res, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// operationOf names the API a request calls, for the latency label.
func operationOf(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasSuffix(p, "/_bulk"):
		return "bulk"
	case strings.HasSuffix(p, "/_search"):
		return "search"
	case strings.HasPrefix(p, "/_index_template"):
		return "index_template"
	case strings.HasPrefix(p, "/_cat/indices"):
		return "cat_indices"
	case r.Method == http.MethodDelete:
		return "delete_index"
	case r.Method == http.MethodPut || r.Method == http.MethodPost:
		return "index"
	}
	return "other"
}
