package federation

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// receivedBytes counts what the federator receives from each endpoint
// (every gRPC message: Series, labels, Info, push-down answers), so that
// the effect of push-down on the network shows.
type receivedBytes struct {
	counter *prometheus.CounterVec
}

func newReceivedBytes(reg prometheus.Registerer) *receivedBytes {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "panorama_federator_leaf_received_bytes_total",
		Help: "Bytes of gRPC messages received from each endpoint (as sent on the wire).",
	}, []string{"endpoint"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return &receivedBytes{counter: c}
}

// dialOption counts the bytes of a connection to addr.
func (r *receivedBytes) dialOption(addr string) grpc.DialOption {
	return grpc.WithStatsHandler(&byteCounter{c: r.counter.WithLabelValues(addr)})
}

type byteCounter struct{ c prometheus.Counter }

func (b *byteCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (b *byteCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		b.c.Add(float64(in.WireLength))
	}
}
func (b *byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (b *byteCounter) HandleConn(context.Context, stats.ConnStats)                       {}

// leafConns are the federator's own connections to the endpoints for
// push-down (Thanos' endpoint set keeps its connections to itself), dialed
// on first use with the endpoint set's options.
type leafConns struct {
	dial  func(addr string) []grpc.DialOption
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (l *leafConns) get(addr string) (*grpc.ClientConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cc, ok := l.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, l.dial(addr)...)
	if err != nil {
		return nil, err
	}
	if l.conns == nil {
		l.conns = map[string]*grpc.ClientConn{}
	}
	l.conns[addr] = cc
	return cc, nil
}

// keep closes the connections to addresses no longer in addrs.
func (l *leafConns) keep(addrs []string) {
	want := map[string]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, cc := range l.conns {
		if !want[a] {
			cc.Close()
			delete(l.conns, a)
		}
	}
}

func (l *leafConns) close() { l.keep(nil) }
