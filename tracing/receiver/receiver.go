// Package receiver accepts OTLP traces over gRPC and HTTP (protobuf and
// JSON, optionally gzip), as an OpenTelemetry Collector's OTLP receiver
// does: spans that cannot be stored are rejected with a partial-success
// answer, over-long attribute values are truncated, and everything else is
// appended to the durable queue before the client hears back. When the
// queue is full the client gets a retryable error (gRPC Unavailable, HTTP
// 503 with Retry-After), never silence.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/grpc"
)

// Appender takes accepted spans durably; the durable queue is one.
type Appender interface {
	Append(td ptrace.Traces) error
}

// Options configure the receiver.
type Options struct {
	// GRPCAddress and HTTPAddress are listen addresses; empty disables one.
	GRPCAddress, HTTPAddress string
	// MaxRequestBytes bounds a request body (after decompression for HTTP).
	MaxRequestBytes int64
	// MaxAttributeLength truncates string attribute values longer than
	// this many characters; zero keeps them whole.
	MaxAttributeLength int
	// RetryAfter is the wait suggested to a client refused with 503.
	RetryAfter time.Duration
}

// DefaultOptions returns the defaults of the tracing role.
func DefaultOptions() Options {
	return Options{GRPCAddress: ":4317", HTTPAddress: ":4318", MaxRequestBytes: 16 << 20, MaxAttributeLength: 4096, RetryAfter: 5 * time.Second}
}

// Receiver is the OTLP endpoint pair.
type Receiver struct {
	opts      Options
	appender  Appender
	observers []func(ptrace.Traces)
	logger    *slog.Logger

	grpcLis, httpLis net.Listener
	grpcSrv          *grpc.Server
	httpSrv          *http.Server

	accepted, refused, rejected *prometheus.CounterVec
	malformed                   *prometheus.CounterVec
	truncated                   prometheus.Counter
}

// New binds the listen addresses at once. Every accepted batch is passed to
// observers after it is appended (the service graph watches spans this way).
func New(opts Options, appender Appender, logger *slog.Logger, reg prometheus.Registerer, observers ...func(ptrace.Traces)) (*Receiver, error) {
	d := DefaultOptions()
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = d.MaxRequestBytes
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = d.RetryAfter
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{
		opts: opts, appender: appender, observers: observers, logger: logger,
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_spans_accepted_total", Help: "Spans accepted over OTLP and appended to the durable queue.",
		}, []string{"transport"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_spans_refused_total", Help: "Spans refused with a retryable error because the durable queue was full or failed.",
		}, []string{"transport"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_spans_rejected_total", Help: "Spans rejected for good (reported as OTLP partial success): empty trace or span ID.",
		}, []string{"transport"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "panorama_tracing_requests_malformed_total", Help: "OTLP requests that could not be decoded or were too large.",
		}, []string{"transport"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "panorama_tracing_attributes_truncated_total", Help: "Attribute values truncated to --otlp.max-attribute-length.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.accepted, r.refused, r.rejected, r.malformed, r.truncated} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range []string{"grpc", "http"} {
		r.accepted.WithLabelValues(t)
		r.refused.WithLabelValues(t)
		r.rejected.WithLabelValues(t)
		r.malformed.WithLabelValues(t)
	}
	var err error
	if opts.GRPCAddress != "" {
		if r.grpcLis, err = net.Listen("tcp", opts.GRPCAddress); err != nil {
			return nil, fmt.Errorf("listen on --otlp.grpc-address=%s: %w", opts.GRPCAddress, err)
		}
		r.grpcSrv = grpc.NewServer(grpc.MaxRecvMsgSize(int(opts.MaxRequestBytes)), grpc.ForceServerCodec(rawCodec{}))
		r.grpcSrv.RegisterService(&traceServiceDesc, &grpcServer{r: r})
	}
	if opts.HTTPAddress != "" {
		if r.httpLis, err = net.Listen("tcp", opts.HTTPAddress); err != nil {
			if r.grpcLis != nil {
				r.grpcLis.Close()
			}
			return nil, fmt.Errorf("listen on --otlp.http-address=%s: %w", opts.HTTPAddress, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/v1/traces", r.HTTPHandler())
		r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	}
	return r, nil
}

// GRPCAddr is the bound gRPC address ("" when disabled).
func (r *Receiver) GRPCAddr() string {
	if r.grpcLis == nil {
		return ""
	}
	return r.grpcLis.Addr().String()
}

// HTTPAddr is the bound HTTP address ("" when disabled).
func (r *Receiver) HTTPAddr() string {
	if r.httpLis == nil {
		return ""
	}
	return r.httpLis.Addr().String()
}

// Run serves both endpoints until Shutdown; an oklog/run execute function.
func (r *Receiver) Run() error {
	errc := make(chan error, 2)
	n := 0
	if r.grpcSrv != nil {
		n++
		r.logger.Info("Listening for OTLP/gRPC", "address", r.GRPCAddr())
		go func() {
			err := r.grpcSrv.Serve(r.grpcLis)
			if errors.Is(err, grpc.ErrServerStopped) {
				err = nil
			}
			errc <- err
		}()
	}
	if r.httpSrv != nil {
		n++
		r.logger.Info("Listening for OTLP/HTTP", "address", r.HTTPAddr())
		go func() {
			err := r.httpSrv.Serve(r.httpLis)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			r.Shutdown(err)
		}
	}
	return first
}

// Shutdown stops both endpoints, letting requests in flight finish.
func (r *Receiver) Shutdown(error) {
	if r.grpcSrv != nil {
		done := make(chan struct{})
		go func() { r.grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			r.grpcSrv.Stop()
		}
	}
	if r.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.httpSrv.Shutdown(ctx); err != nil {
			r.httpSrv.Close()
		}
	}
}

// errRefused means the queue could not take the batch; retryable.
type errRefused struct{ err error }

func (e errRefused) Error() string { return e.err.Error() }

// accept validates, truncates, appends and observes one request's spans.
// It returns the number of spans rejected for good and why.
func (r *Receiver) accept(td ptrace.Traces, transport string) (rejected int64, msg string, err error) {
	rejected = removeInvalid(td)
	if rejected > 0 {
		msg = fmt.Sprintf("%d spans rejected: a span needs a non-zero trace ID and span ID", rejected)
		r.rejected.WithLabelValues(transport).Add(float64(rejected))
	}
	if r.opts.MaxAttributeLength > 0 {
		if n := truncateAttributes(td, r.opts.MaxAttributeLength); n > 0 {
			r.truncated.Add(float64(n))
		}
	}
	n := td.SpanCount()
	if n == 0 {
		return rejected, msg, nil
	}
	if err := r.appender.Append(td); err != nil {
		r.refused.WithLabelValues(transport).Add(float64(n))
		r.logger.Warn("Refusing spans: the durable queue cannot take them", "spans", n, "err", err)
		return rejected, msg, errRefused{err}
	}
	r.accepted.WithLabelValues(transport).Add(float64(n))
	for _, o := range r.observers {
		o(td)
	}
	return rejected, msg, nil
}

// removeInvalid drops spans without a trace or span ID, and resource and
// scope entries left empty, and returns how many spans it dropped.
func removeInvalid(td ptrace.Traces) int64 {
	var n int64
	td.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
		rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
			ss.Spans().RemoveIf(func(s ptrace.Span) bool {
				bad := s.TraceID().IsEmpty() || s.SpanID().IsEmpty()
				if bad {
					n++
				}
				return bad
			})
			return ss.Spans().Len() == 0
		})
		return rs.ScopeSpans().Len() == 0
	})
	return n
}

// truncateAttributes cuts string values (also inside arrays and maps) to
// max characters and returns how many it cut.
func truncateAttributes(td ptrace.Traces, max int) int {
	n := 0
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		n += truncateMap(rs.Resource().Attributes(), max)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			n += truncateMap(ss.Scope().Attributes(), max)
			for k := 0; k < ss.Spans().Len(); k++ {
				s := ss.Spans().At(k)
				n += truncateMap(s.Attributes(), max)
				for e := 0; e < s.Events().Len(); e++ {
					n += truncateMap(s.Events().At(e).Attributes(), max)
				}
				for l := 0; l < s.Links().Len(); l++ {
					n += truncateMap(s.Links().At(l).Attributes(), max)
				}
			}
		}
	}
	return n
}

func truncateMap(m pcommon.Map, max int) int {
	n := 0
	m.Range(func(_ string, v pcommon.Value) bool {
		n += truncateValue(v, max)
		return true
	})
	return n
}

func truncateValue(v pcommon.Value, max int) int {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		if s, cut := Truncate(v.Str(), max); cut {
			v.SetStr(s)
			return 1
		}
	case pcommon.ValueTypeSlice:
		n := 0
		for i := 0; i < v.Slice().Len(); i++ {
			n += truncateValue(v.Slice().At(i), max)
		}
		return n
	case pcommon.ValueTypeMap:
		return truncateMap(v.Map(), max)
	}
	return 0
}

// Truncate returns s cut to its first max characters (runes), and whether
// it cut anything.
func Truncate(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	i, runes := 0, 0
	for i < len(s) {
		if runes == max {
			return s[:i], true
		}
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
		runes++
	}
	return s, false
}

// retryAfterSeconds rounds the suggested wait up to whole seconds.
func (r *Receiver) retryAfterSeconds() string {
	return strconv.Itoa(int((r.opts.RetryAfter + time.Second - 1) / time.Second))
}
