package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// The span set of BenchmarkTracingQuery: traces of a made-up shop of 20
// services with 10 operations each, generated deterministically from a
// seed, so that every server gets the same spans (the same IDs, names,
// attributes and timestamps).
//
// A trace starts with a server span in one of two entry services; a server
// span calls zero to three services of the next tier of a fixed call graph
// (two entry services, three tiers of six), each call a client span in the
// caller and a server span in the callee, up to 40 spans. Self times are log-normal (median 3 ms);
// one server span in 100 is slow (0.2–2 s more). One server span in 70
// fails on its own (status error, http.status_code 500), and a failure
// propagates to the caller half the time; 3 % answer 404. Every server
// span carries the trace's customer.id (one of 5,000). Trace i starts at
// start + window·i/(expected traces), so the spans arrive in about the
// order of their start times, as from a live system.

var synthServiceNames = []string{
	"frontend", "mobile-gateway", "checkout", "cart", "catalog",
	"search", "recommendation", "user", "auth", "payment",
	"pricing", "currency", "inventory", "shipping", "fraud",
	"ledger", "notification", "email", "reviews", "ads",
}

// synthTiers are the first service of each tier of the call graph:
// entry services, then three tiers of six.
var synthTiers = []int{0, 2, 8, 14, 20}

var synthResources = []string{"items", "orders", "profile", "session", "status", "quote", "history", "batch", "lookup", "events"}

const (
	synthInstances      = 3  // instances (resources) per service
	synthMaxTraceSpans  = 40 // spans per trace at most
	synthCustomers      = 5000
	synthSlowPerMille   = 10
	synthErrorOneIn     = 70
	synthNotFoundPerMil = 30
)

type synthOp struct{ name, method, route string }

type synthService struct {
	name  string
	ops   []synthOp
	calls []int // services it may call, all with a larger index
}

// spanSet is the deterministic set of n spans that a spanLoader sends.
type spanSet struct {
	seed     uint64
	n        int           // spans in the set
	batch    int           // spans per request (whole traces; the last trace of a request may overshoot)
	start    time.Time     // the first trace's start
	window   time.Duration // traces start within [start, start+window)
	services []synthService
	expected float64 // traces in the set, estimated
}

func newSpanSet(seed uint64, n, batch int, start time.Time, window time.Duration) *spanSet {
	s := &spanSet{seed: seed, n: n, batch: batch, start: start, window: window}
	g := rand.New(rand.NewPCG(seed, math.MaxUint64))
	for _, name := range synthServiceNames {
		svc := synthService{name: name}
		for j, res := range synthResources {
			method := "GET"
			if j%3 == 1 {
				method = "POST"
			}
			route := "/" + name + "/" + res
			svc.ops = append(svc.ops, synthOp{name: method + " " + route, method: method, route: route})
		}
		s.services = append(s.services, svc)
	}
	// Each service calls two or three services of the next tier, and
	// every service of a tier is called by one of the tier before.
	for t := 0; t+2 < len(synthTiers); t++ {
		lo, hi, next := synthTiers[t], synthTiers[t+1], synthTiers[t+2]
		for c := hi; c < next; c++ {
			caller := lo + (c-hi)%(hi-lo)
			s.services[caller].calls = append(s.services[caller].calls, c)
		}
		for i := lo; i < hi; i++ {
			for _, c := range g.Perm(next - hi) {
				if len(s.services[i].calls) >= 2+g.IntN(2) {
					break
				}
				if !slices.Contains(s.services[i].calls, hi+c) {
					s.services[i].calls = append(s.services[i].calls, hi+c)
				}
			}
		}
	}
	// The mean trace size, from the first traces of the set itself.
	const sample = 2000
	spans := 0
	tb := newTraceBatch()
	for i := range sample {
		spans += s.trace(tb, i, synthMaxTraceSpans)
	}
	s.expected = float64(n) / (float64(spans) / sample)
	return s
}

// span time range the set covers: from start to the end of the last trace.
func (s *spanSet) end() time.Time { return s.start.Add(s.window + time.Minute) }

// customerWith is the customer.id of a trace late in the set with a
// server span of operation op in service svc.
func (s *spanSet) customerWith(svc, op string) string {
	for i := int(s.expected * 0.95); i >= 0; i-- {
		tb := newTraceBatch()
		s.trace(tb, i, synthMaxTraceSpans)
		rss := tb.td.ResourceSpans()
		for j := 0; j < rss.Len(); j++ {
			if name, _ := rss.At(j).Resource().Attributes().Get("service.name"); name.Str() != svc {
				continue
			}
			sl := rss.At(j).ScopeSpans().At(0).Spans()
			for k := 0; k < sl.Len(); k++ {
				if sp := sl.At(k); sp.Name() == op && sp.Kind() == ptrace.SpanKindServer {
					c, _ := sp.Attributes().Get("customer.id")
					return c.Str()
				}
			}
		}
	}
	return ""
}

// traceBatch accumulates spans of one request, one ResourceSpans per
// service instance.
type traceBatch struct {
	td    ptrace.Traces
	byRes map[int]ptrace.SpanSlice
	spans int
}

func newTraceBatch() *traceBatch {
	return &traceBatch{td: ptrace.NewTraces(), byRes: map[int]ptrace.SpanSlice{}}
}

func (tb *traceBatch) span(s *spanSet, svc, inst int) ptrace.Span {
	key := svc*synthInstances + inst
	sl, ok := tb.byRes[key]
	if !ok {
		rs := tb.td.ResourceSpans().AppendEmpty()
		a := rs.Resource().Attributes()
		name := s.services[svc].name
		a.PutStr("service.name", name)
		a.PutStr("service.instance.id", fmt.Sprintf("%s-%d", name, inst))
		a.PutStr("host.name", fmt.Sprintf("node-%d", (svc*synthInstances+inst)%7))
		a.PutStr("service.version", "1.4.2")
		a.PutStr("deployment.environment", "prod")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("bench/synthetic")
		ss.Scope().SetVersion("1.0.0")
		sl = ss.Spans()
		tb.byRes[key] = sl
	}
	tb.spans++
	return sl.AppendEmpty()
}

// traceGen is the state of generating one trace.
type traceGen struct {
	s     *spanSet
	tb    *traceBatch
	rng   *rand.Rand
	tid   pcommon.TraceID
	cust  string
	count int
	max   int
}

// trace adds trace i, at most maxSpans spans of it, to tb and returns how
// many spans it added.
func (s *spanSet) trace(tb *traceBatch, i, maxSpans int) int {
	g := &traceGen{s: s, tb: tb, rng: rand.New(rand.NewPCG(s.seed, uint64(i))), max: maxSpans}
	var tid [16]byte
	putRand(g.rng, tid[:])
	g.tid = tid
	g.cust = fmt.Sprintf("cust-%04d", g.rng.IntN(synthCustomers))
	at := s.start
	if s.expected > 0 {
		at = at.Add(time.Duration(float64(s.window) * min(float64(i)/s.expected, 1)))
	}
	at = at.Add(time.Duration(g.rng.IntN(int(50 * time.Millisecond))))
	entry := g.rng.IntN(2)
	g.server(entry, g.rng.IntN(len(s.services[entry].ops)), pcommon.SpanID{}, uint64(at.UnixNano()), 0)
	return g.count
}

func putRand(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, len(b)); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	if allZero(b) {
		b[0] = 1
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (g *traceGen) spanID() pcommon.SpanID {
	var id [8]byte
	putRand(g.rng, id[:])
	return id
}

// newSpan adds a span of service svc (on a random instance) to the trace,
// with a fresh span ID, and returns it and its ID.
func (g *traceGen) newSpan(svc int, parent pcommon.SpanID, name string, kind ptrace.SpanKind, start uint64) (ptrace.Span, pcommon.SpanID) {
	sp := g.tb.span(g.s, svc, g.rng.IntN(synthInstances))
	g.count++
	id := g.spanID()
	sp.SetTraceID(g.tid)
	sp.SetSpanID(id)
	sp.SetParentSpanID(parent)
	sp.SetName(name)
	sp.SetKind(kind)
	sp.SetStartTimestamp(pcommon.Timestamp(start))
	return sp, id
}

func (g *traceGen) lognormal(median time.Duration, sigma float64) uint64 {
	return uint64(float64(median) * math.Exp(g.rng.NormFloat64()*sigma))
}

// server adds a server span of service svc, operation op, and the calls
// it makes, and returns its end time and whether it failed.
func (g *traceGen) server(svc, op int, parent pcommon.SpanID, start uint64, depth int) (end uint64, failed bool) {
	s := &g.s.services[svc]
	o := s.ops[op]
	sp, id := g.newSpan(svc, parent, o.name, ptrace.SpanKindServer, start)

	self := g.lognormal(3*time.Millisecond, 0.8)
	if g.rng.IntN(1000) < synthSlowPerMille {
		self += uint64(200*time.Millisecond) + uint64(g.rng.Int64N(int64(1800*time.Millisecond)))
	}
	cursor := start + self/2
	calls := 0
	if len(s.calls) > 0 {
		calls = g.rng.IntN(4)
		if depth == 0 {
			calls = 1 + g.rng.IntN(3)
		}
	}
	childFailed := false
	for range calls {
		if g.count+2 > g.max {
			break
		}
		callee := s.calls[g.rng.IntN(len(s.calls))]
		cop := g.rng.IntN(len(g.s.services[callee].ops))
		co := g.s.services[callee].ops[cop]
		cl, cid := g.newSpan(svc, id, co.name, ptrace.SpanKindClient, cursor)
		net := uint64(200*time.Microsecond) + uint64(g.rng.Int64N(int64(time.Millisecond)))
		cend, cfailed := g.server(callee, cop, cid, cursor+net, depth+1)
		cursor = cend + net
		cl.SetEndTimestamp(pcommon.Timestamp(cursor))
		a := cl.Attributes()
		a.PutStr("http.method", co.method)
		a.PutStr("server.address", g.s.services[callee].name)
		if cfailed {
			a.PutInt("http.status_code", 500)
			cl.Status().SetCode(ptrace.StatusCodeError)
			childFailed = true
		} else {
			a.PutInt("http.status_code", 200)
		}
		cursor += uint64(g.rng.Int64N(int64(500 * time.Microsecond)))
	}
	end = cursor + self/2
	sp.SetEndTimestamp(pcommon.Timestamp(end))

	failed = g.rng.IntN(synthErrorOneIn) == 0 || (childFailed && g.rng.IntN(2) == 0)
	code := int64(200)
	switch {
	case failed:
		code = 500
		sp.Status().SetCode(ptrace.StatusCodeError)
		sp.Status().SetMessage("internal error")
	case g.rng.IntN(1000) < synthNotFoundPerMil:
		code = 404
	}
	a := sp.Attributes()
	a.PutStr("http.method", o.method)
	a.PutStr("http.route", o.route)
	a.PutInt("http.status_code", code)
	a.PutStr("customer.id", g.cust)
	return end, failed
}

// batches sends the set's requests, in order, to out until the set is
// done or ctx is cancelled; each request holds whole traces (the last
// trace of the set is cut short at n spans).
func (s *spanSet) batches(ctx context.Context, out chan<- ptraceotlp.ExportRequest) {
	defer close(out)
	total, i := 0, 0
	for total < s.n {
		tb := newTraceBatch()
		for tb.spans < s.batch && total+tb.spans < s.n {
			s.trace(tb, i, min(synthMaxTraceSpans, s.n-total-tb.spans))
			i++
		}
		total += tb.spans
		select {
		case out <- ptraceotlp.NewExportRequestFromTraces(tb.td):
		case <-ctx.Done():
			return
		}
	}
}

// loadResult is what a spanLoader sent.
type loadResult struct {
	spans, requests, retries int64
	elapsed                  time.Duration
}

// loadSpans sends the set to the OTLP/gRPC endpoint addr over streams
// concurrent requests, as fast as the server takes them. A request the
// server refuses with a retryable code (Unavailable, ResourceExhausted)
// is sent again after a backoff, so that every span of the set is
// accepted once; any other error, or spans the server reports rejected,
// end the load with an error. progress, if not nil, is called every 10 s
// with the spans accepted so far.
func loadSpans(ctx context.Context, addr string, set *spanSet, streams int, progress func(spans int64, elapsed time.Duration)) (loadResult, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return loadResult{}, err
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := make(chan ptraceotlp.ExportRequest, 2*streams)
	go set.batches(ctx, reqs)

	var (
		res      loadResult
		spans    atomic.Int64
		requests atomic.Int64
		retries  atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	stopProgress := make(chan struct{})
	if progress != nil {
		go func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					progress(spans.Load(), time.Since(start))
				}
			}
		}()
	}
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range reqs {
				n := int64(req.Traces().SpanCount())
				backoff := 20 * time.Millisecond
				for {
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
					resp, err := client.Export(rctx, req)
					rcancel()
					if err == nil {
						if r := resp.PartialSuccess().RejectedSpans(); r > 0 {
							fail(fmt.Errorf("%s: %d of %d spans rejected: %s", addr, r, n, resp.PartialSuccess().ErrorMessage()))
							return
						}
						spans.Add(n)
						requests.Add(1)
						break
					}
					if c := status.Code(err); (c == grpccodes.Unavailable || c == grpccodes.ResourceExhausted) && ctx.Err() == nil {
						retries.Add(1)
						select {
						case <-time.After(backoff):
						case <-ctx.Done():
						}
						backoff = min(2*backoff, time.Second)
						continue
					}
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s: export: %w", addr, err))
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	res.elapsed = time.Since(start)
	res.spans, res.requests, res.retries = spans.Load(), requests.Load(), retries.Load()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.spans != int64(set.n) {
		return res, errors.New("span loader: sent " + fmt.Sprint(res.spans) + " spans, want " + fmt.Sprint(set.n))
	}
	return res, nil
}

// TestSpanSet checks that the span set is deterministic, holds exactly n
// spans, and that every parent is in its trace.
func TestSpanSet(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gen := func() ([]ptraceotlp.ExportRequest, int) {
		set := newSpanSet(7, 12345, 500, start, time.Hour)
		ch := make(chan ptraceotlp.ExportRequest)
		go set.batches(context.Background(), ch)
		var reqs []ptraceotlp.ExportRequest
		n := 0
		for r := range ch {
			reqs = append(reqs, r)
			n += r.Traces().SpanCount()
		}
		return reqs, n
	}
	a, n := gen()
	if n != 12345 {
		t.Fatalf("%d spans, want 12345", n)
	}
	b, _ := gen()
	if len(a) != len(b) {
		t.Fatalf("%d and %d requests", len(a), len(b))
	}
	spans := map[pcommon.SpanID]bool{}
	var parents []pcommon.SpanID
	services := map[string]bool{}
	for i := range a {
		x, err1 := a[i].MarshalProto()
		y, err2 := b[i].MarshalProto()
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if string(x) != string(y) {
			t.Fatalf("request %d differs between two generations", i)
		}
		rss := a[i].Traces().ResourceSpans()
		for j := 0; j < rss.Len(); j++ {
			svc, _ := rss.At(j).Resource().Attributes().Get("service.name")
			services[svc.Str()] = true
			sl := rss.At(j).ScopeSpans().At(0).Spans()
			for k := 0; k < sl.Len(); k++ {
				sp := sl.At(k)
				spans[sp.SpanID()] = true
				if !sp.ParentSpanID().IsEmpty() {
					parents = append(parents, sp.ParentSpanID())
				}
				if sp.EndTimestamp() < sp.StartTimestamp() || sp.StartTimestamp().AsTime().Before(start) {
					t.Fatalf("span %s: bad times", sp.Name())
				}
			}
		}
	}
	for _, p := range parents {
		if !spans[p] {
			t.Fatalf("parent %s not in the set", p)
		}
	}
	if len(services) != len(synthServiceNames) {
		t.Fatalf("%d services have spans, want %d", len(services), len(synthServiceNames))
	}
	t.Logf("%d requests, %d spans, %d traces, %d services", len(a), n, len(spans)-len(parents), len(services))
}
