package federation

import (
	"context"
	"errors"
	"fmt"
	"github.com/panorama-obs/panorama/internal/server"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/file"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/thanos-io/thanos/pkg/discovery/cache"
	"github.com/thanos-io/thanos/pkg/discovery/dns"
	"github.com/thanos-io/thanos/pkg/extgrpc"
	"github.com/thanos-io/thanos/pkg/extprom"
	"github.com/thanos-io/thanos/pkg/query"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
)

// endpointSet keeps the StoreAPI endpoints the federator fans out to: the
// --endpoint addresses, the dns+/dnssrv+ names among them and the targets
// of --endpoint.sd-file, each with its Info (external labels, time range)
// refreshed through Thanos' EndpointSet.
//
// Unlike a Thanos Querier, which forgets an endpoint that fails its Info
// call, the set keeps every endpoint that is configured or discovered,
// healthy or not: an unhealthy one is skipped by queries, but a query it
// could have answered says so in a warning (or fails without partial
// response) instead of silently returning less.
type endpointSet struct {
	logger      *slog.Logger
	set         *query.EndpointSet
	dns         *dns.Provider
	fileSD      *file.Discovery
	fileTargets *cache.Cache

	static  []string // --endpoint host:port
	dynamic []string // --endpoint dns+... and dnssrv+...

	callTimeout  time.Duration
	infoInterval time.Duration
	dnsInterval  time.Duration
	lastResolve  time.Time

	ready     chan struct{}
	readyOnce sync.Once

	received *receivedBytes
	leaves   leafConns
}

// infoTimeout bounds one round of Info calls, as Thanos'
// --endpoint.info-timeout does.
const infoTimeout = 5 * time.Second

func newEndpointSet(logger *slog.Logger, reg prometheus.Registerer, opts Options) (*endpointSet, error) {
	e := &endpointSet{
		logger:       logger,
		callTimeout:  opts.EndpointTimeout,
		infoInterval: opts.EndpointInfoInterval,
		dnsInterval:  opts.EndpointDNSInterval,
		fileTargets:  cache.New(),
		ready:        make(chan struct{}),
	}
	for _, addr := range opts.Endpoints {
		if err := validateEndpoint(addr); err != nil {
			return nil, fmt.Errorf("--endpoint=%s: %w", addr, err)
		}
		if dns.IsDynamicNode(addr) {
			e.dynamic = append(e.dynamic, addr)
		} else {
			e.static = append(e.static, addr)
		}
	}
	kl := server.GoKitLogger(logger)
	e.dns = dns.NewProvider(kl, extprom.WrapRegistererWithPrefix("panorama_federator_endpoints_", reg), dns.GolangResolverType)
	if len(opts.EndpointSDFiles) > 0 {
		conf := &file.SDConfig{Files: opts.EndpointSDFiles, RefreshInterval: model.Duration(opts.EndpointSDInterval)}
		metrics := conf.NewDiscovererMetrics(reg, nil)
		if err := metrics.Register(); err != nil {
			return nil, fmt.Errorf("--endpoint.sd-file metrics: %w", err)
		}
		var err error
		if e.fileSD, err = file.NewDiscovery(conf, logger.With("component", "endpoint sd-file"), metrics); err != nil {
			return nil, fmt.Errorf("--endpoint.sd-file: %w", err)
		}
	}
	dialOpts, err := extgrpc.StoreClientGRPCOpts(kl, reg, opentracing.NoopTracer{})
	if err != nil {
		return nil, err
	}
	// The same transport credentials for Thanos' endpoint set and for the
	// push-down connections (leafConns): TLS as --grpc-client-* say, or
	// plaintext.
	c := opts.GRPCClientTLS
	creds, err := extgrpc.StoreClientTLSCredentials(kl, c.Secure, c.SkipVerify, c.CertFile, c.KeyFile, c.CAFile, c.ServerName, c.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("gRPC client TLS: %w", err)
	}
	dialOpts = append(dialOpts, creds)
	e.received = newReceivedBytes(reg)
	e.leaves.dial = func(addr string) []grpc.DialOption {
		return append(slices.Clip(dialOpts), e.received.dialOption(addr))
	}
	e.set = query.NewEndpointSet(time.Now, kl, reg, func() []*query.GRPCEndpointSpec {
		addrs := e.addresses()
		specs := make([]*query.GRPCEndpointSpec, 0, len(addrs))
		for _, addr := range addrs {
			// Strict: an endpoint stays in the set while it is configured
			// or discovered, whatever its health (see endpointSet).
			specs = append(specs, query.NewGRPCEndpointSpec(addr, true, e.leaves.dial(addr)...))
		}
		e.leaves.keep(addrs)
		return specs
	}, opts.EndpointInfoInterval, opts.EndpointInfoInterval, opts.QueryTimeout)
	return e, nil
}

// validateEndpoint checks an --endpoint value the way it will be used, so
// that a typo stops start-up instead of showing up as an unhealthy endpoint.
func validateEndpoint(addr string) error {
	qtype, name := dns.GetQTypeName(addr)
	switch qtype {
	case "":
	case "dns", "dnsdualstack":
		if _, _, err := net.SplitHostPort(name); err != nil {
			return fmt.Errorf("a %s+ endpoint needs a port (dns+host:port): %w", qtype, err)
		}
		return nil
	case "dnssrv", "dnssrvnoa":
		if name == "" {
			return errors.New("empty SRV name")
		}
		return nil
	default:
		return fmt.Errorf("unknown discovery prefix %q: use host:port, dns+host:port or dnssrv+name", qtype+"+")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" || port == "" {
		return errors.New("want host:port with both parts")
	}
	return nil
}

// addresses are the endpoints to keep now: static ones, resolved DNS names
// and the targets of the sd-files (themselves possibly dns+ names).
func (e *endpointSet) addresses() []string {
	seen := map[string]struct{}{}
	var out []string
	add := func(a string) {
		if _, ok := seen[a]; !ok && a != "" {
			seen[a] = struct{}{}
			out = append(out, a)
		}
	}
	for _, a := range e.static {
		add(a)
	}
	for _, a := range e.fileTargets.Addresses() {
		if !dns.IsDynamicNode(a) {
			add(a)
		}
	}
	for _, a := range e.dns.Addresses() {
		add(a)
	}
	slices.Sort(out)
	return out
}

func (e *endpointSet) dynamicAddresses() []string {
	out := slices.Clone(e.dynamic)
	for _, a := range e.fileTargets.Addresses() {
		if dns.IsDynamicNode(a) {
			out = append(out, a)
		}
	}
	return out
}

// run refreshes the endpoints' Info every info interval, their DNS names
// every DNS interval, and both at once when an sd-file changes.
func (e *endpointSet) run(ctx context.Context) error {
	var fileUpdates chan []*targetgroup.Group
	if e.fileSD != nil {
		fileUpdates = make(chan []*targetgroup.Group)
		go e.fileSD.Run(ctx, fileUpdates)
		// The first read of the files comes at once; wait for it so that
		// readiness means every configured endpoint has been asked.
		select {
		case tgs := <-fileUpdates:
			e.fileTargets.Update(tgs)
		case <-time.After(e.infoInterval):
		case <-ctx.Done():
			return nil
		}
	}
	e.refresh(ctx, true)
	tick := time.NewTicker(e.infoInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case tgs := <-fileUpdates:
			e.fileTargets.Update(tgs)
			e.refresh(ctx, true)
		case <-tick.C:
			e.refresh(ctx, time.Since(e.lastResolve) >= e.dnsInterval)
		}
	}
}

func (e *endpointSet) refresh(ctx context.Context, resolve bool) {
	if resolve {
		// Also with no names left, which forgets those removed from an
		// sd-file.
		rctx, cancel := context.WithTimeout(ctx, max(e.dnsInterval, e.infoInterval))
		if err := e.dns.Resolve(rctx, e.dynamicAddresses(), true); err != nil {
			e.logger.Warn("Resolving endpoint DNS names failed; keeping the previous addresses", "err", err)
		}
		cancel()
		e.lastResolve = time.Now()
	}
	// An Info call may take longer than the refresh interval on a loaded
	// machine; give it the endpoint timeout (at most 5 s, Thanos'
	// --endpoint.info-timeout), so a slow but live leaf is not marked down.
	uctx, cancel := context.WithTimeout(ctx, max(e.infoInterval, min(e.callTimeout, infoTimeout)))
	e.set.Update(uctx)
	cancel()
	e.readyOnce.Do(func() { close(e.ready) })
}

// statuses are the endpoints' last Info results, as /api/v1/stores shows them.
func (e *endpointSet) statuses() []query.EndpointStatus { return e.set.GetEndpointStatus() }

// clients are the endpoints as the proxy store asks them: healthy ones
// with --query.endpoint-timeout applied to every call, unhealthy ones
// failing at once with the reason, so that the proxy turns them into a
// warning (or an error without partial response) when, and only when, their
// last known external labels and time range could match the query.
func (e *endpointSet) clients() []store.Client {
	unhealthy := map[string]error{}
	for _, st := range e.set.GetEndpointStatus() {
		if st.LastError == nil {
			continue
		}
		if st.LastCheck.IsZero() {
			unhealthy[st.Name] = fmt.Errorf("unreachable, no Info answer yet: %s", st.LastError.Error())
		} else {
			unhealthy[st.Name] = fmt.Errorf("unhealthy, last good Info at %s: %s", st.LastCheck.UTC().Format(time.RFC3339), st.LastError.Error())
		}
	}
	cs := e.set.GetStoreClients()
	out := make([]store.Client, 0, len(cs))
	for _, c := range cs {
		addr, _ := c.Addr()
		out = append(out, &endpointClient{Client: c, addr: addr, timeout: e.callTimeout, unhealthy: unhealthy[addr]})
	}
	return out
}

func (e *endpointSet) close() {
	e.set.Close()
	e.leaves.close()
}

// conn is the push-down connection to an endpoint.
func (e *endpointSet) conn(addr string) (*grpc.ClientConn, error) { return e.leaves.get(addr) }

// endpointClient is one endpoint as the proxy store sees it.
type endpointClient struct {
	store.Client
	addr      string
	timeout   time.Duration
	unhealthy error
}

var errOpenTimeout = errors.New("open timeout")

// Series bounds the opening of the stream by the endpoint timeout (a
// connection that accepts TCP but never speaks gRPC blocks there); the proxy
// store's own response timeout then bounds each message.
func (c *endpointClient) Series(ctx context.Context, req *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	if c.unhealthy != nil {
		return nil, c.unhealthy
	}
	if c.timeout <= 0 {
		return c.Client.Series(ctx, req, opts...)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(c.timeout, func() { cancel(errOpenTimeout) })
	cl, err := c.Client.Series(ctx, req, opts...)
	timer.Stop()
	if err != nil {
		cancel(nil)
		if errors.Is(context.Cause(ctx), errOpenTimeout) {
			return nil, fmt.Errorf("no answer to Series within %s (--query.endpoint-timeout)", c.timeout)
		}
		return nil, err
	}
	if errors.Is(context.Cause(ctx), errOpenTimeout) {
		cancel(nil)
		return nil, fmt.Errorf("no answer to Series within %s (--query.endpoint-timeout)", c.timeout)
	}
	return &cancelingStream{Store_SeriesClient: cl, cancel: cancel}, nil
}

func (c *endpointClient) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest, opts ...grpc.CallOption) (*storepb.LabelNamesResponse, error) {
	if c.unhealthy != nil {
		return nil, c.unhealthy
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.Client.LabelNames(ctx, req, opts...)
	return resp, c.callError(ctx, "LabelNames", err)
}

func (c *endpointClient) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest, opts ...grpc.CallOption) (*storepb.LabelValuesResponse, error) {
	if c.unhealthy != nil {
		return nil, c.unhealthy
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.Client.LabelValues(ctx, req, opts...)
	return resp, c.callError(ctx, "LabelValues", err)
}

func (c *endpointClient) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, c.timeout, errOpenTimeout)
}

func (c *endpointClient) callError(ctx context.Context, call string, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errOpenTimeout) {
		return fmt.Errorf("no answer to %s within %s (--query.endpoint-timeout)", call, c.timeout)
	}
	return err
}

// String names the endpoint in the proxy's warnings and errors.
func (c *endpointClient) String() string {
	return "endpoint " + c.addr
}

// cancelingStream releases the stream's context once the stream ends.
type cancelingStream struct {
	storepb.Store_SeriesClient
	cancel context.CancelCauseFunc
}

func (s *cancelingStream) Recv() (*storepb.SeriesResponse, error) {
	r, err := s.Store_SeriesClient.Recv()
	if err != nil {
		s.cancel(nil)
	}
	return r, err
}

var _ store.Client = (*endpointClient)(nil)
