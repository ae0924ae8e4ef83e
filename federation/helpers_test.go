package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/panorama-obs/panorama/internal/server"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"
	apiv1 "github.com/prometheus/prometheus/web/api/v1"
	"github.com/thanos-io/thanos/pkg/component"
	"github.com/thanos-io/thanos/pkg/info"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
)

// syncBuffer collects a component's log, shown when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t testing.TB, name string) *slog.Logger {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// sample is one value of a series.
type sample struct {
	t int64
	v float64
}

// testSeries is a series of a leaf, without the leaf's external labels.
type testSeries struct {
	lset    labels.Labels
	samples []sample
}

// base is the start of every test's data: ten minutes ago, on a 15s grid,
// so that data and query times are recent enough for the head block.
var base = time.Now().Add(-10 * time.Minute).Truncate(15 * time.Second)

// ts is the millisecond timestamp of the i-th 15s step after base.
func ts(i int) int64 { return base.Add(time.Duration(i) * 15 * time.Second).UnixMilli() }

// queryTime is the evaluation time of instant queries: after every sample.
var queryTime = base.Add(10 * time.Minute)

// workload is a small cluster's worth of series: up, a counter per
// instance and code, and a histogram, over ten minutes every 15s. seed
// varies the values between clusters.
func workload(seed float64) []testSeries {
	var out []testSeries
	add := func(lset labels.Labels, f func(i int) float64) {
		s := testSeries{lset: lset}
		for i := 0; i <= 40; i++ {
			s.samples = append(s.samples, sample{ts(i), f(i)})
		}
		out = append(out, s)
	}
	for n, inst := range []string{"a:9100", "b:9100"} {
		// Distinct values everywhere, so that topk and bottomk have no
		// ties to break by series order.
		seed := seed * (1 + 0.5*float64(n))
		add(labels.FromStrings("__name__", "up", "job", "node", "instance", inst), func(int) float64 { return 1 })
		for _, code := range []string{"200", "500"} {
			rate := seed
			if code == "500" {
				rate = seed / 10
			}
			add(labels.FromStrings("__name__", "http_requests_total", "job", "api", "instance", inst, "code", code),
				func(i int) float64 { return float64(i) * rate * 15 })
		}
		for _, le := range []string{"0.1", "0.5", "1", "+Inf"} {
			frac := map[string]float64{"0.1": 0.3, "0.5": 0.7, "1": 0.9, "+Inf": 1}[le]
			add(labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "job", "api", "instance", inst, "le", le),
				func(i int) float64 { return math.Floor(float64(i) * seed * frac * 15) })
		}
	}
	return out
}

// tsdbLeaf is a StoreAPI leaf: Thanos' TSDBStore over a TSDB in a
// temporary directory with external labels, served over loopback gRPC as a
// collector serves its own, counting its Series calls, and able to hang or
// to be killed and restarted on the same address.
type tsdbLeaf struct {
	t      testing.TB
	ext    labels.Labels
	db     *tsdb.DB
	addr   string
	mu     sync.Mutex
	srv    *grpc.Server
	series atomic.Int64
	hang   atomic.Bool
}

func startLeaf(t testing.TB, ext labels.Labels, data []testSeries) *tsdbLeaf {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	app := db.Appender(context.Background())
	for _, s := range data {
		for _, smp := range s.samples {
			if _, err := app.Append(0, s.lset, smp.t, smp.v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	l := &tsdbLeaf{t: t, ext: ext, db: db, addr: "127.0.0.1:0"}
	l.start()
	t.Cleanup(func() {
		l.stop()
		db.Close()
	})
	return l
}

func (l *tsdbLeaf) start() {
	l.t.Helper()
	lis, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.addr = lis.Addr().String()
	kl := server.GoKitLogger(slog.New(slog.DiscardHandler))
	ts := store.NewTSDBStore(kl, l.db, component.Sidecar, l.ext)
	infoSrv := info.NewInfoServer(component.Sidecar.String(),
		info.WithLabelSetFunc(func() []labelpb.ZLabelSet { return ts.LabelSet() }),
		info.WithStoreInfoFunc(func() (*infopb.StoreInfo, error) {
			mint, maxt := ts.TimeRange()
			return &infopb.StoreInfo{MinTime: mint, MaxTime: maxt, SupportsSharding: true, SupportsWithoutReplicaLabels: true}, nil
		}),
	)
	srv := grpc.NewServer()
	store.RegisterStoreServer(&leafStore{StoreServer: ts, leaf: l}, kl)(srv)
	info.RegisterInfoServer(infoSrv)(srv)
	l.mu.Lock()
	l.srv = srv
	l.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// stop kills the leaf as a crash would: connections close at once.
func (l *tsdbLeaf) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.srv != nil {
		l.srv.Stop()
		l.srv = nil
	}
}

// leafStore counts Series calls and hangs them when asked to.
type leafStore struct {
	storepb.StoreServer
	leaf *tsdbLeaf
}

func (s *leafStore) Series(r *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	s.leaf.series.Add(1)
	if s.leaf.hang.Load() {
		<-srv.Context().Done()
		return srv.Context().Err()
	}
	return s.StoreServer.Series(r, srv)
}

func (s *leafStore) LabelNames(ctx context.Context, r *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	if s.leaf.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.StoreServer.LabelNames(ctx, r)
}

// silentListener accepts TCP connections and never says a word: a leaf
// whose process is wedged, or a wrong port behind a load balancer.
func silentListener(t testing.TB) string { return silentListenerAt(t, "127.0.0.1:0") }

func silentListenerAt(t testing.TB, addr string) string {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// testFederator is a federator with its HTTP API on a loopback server.
type testFederator struct {
	f   *Federator
	url string
	reg *prometheus.Registry
}

func testOptions(endpoints ...string) Options {
	o := DefaultOptions()
	o.Endpoints = endpoints
	o.GRPCAddress = "127.0.0.1:0"
	o.ListenAddress = "127.0.0.1:0"
	o.EndpointInfoInterval = 300 * time.Millisecond
	o.EndpointTimeout = 2 * time.Second
	o.QueryTimeout = 30 * time.Second
	return o
}

func startFederator(t testing.TB, opts Options) *testFederator {
	t.Helper()
	reg := prometheus.NewRegistry()
	f, err := New(testLogger(t, "federator "+strings.Join(opts.Endpoints, ",")), reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	url := serveRole(t, "federator", 10*time.Second, f.Mount, f.Register)
	select {
	case <-f.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("federator not ready after 10s")
	}
	return &testFederator{f: f, url: url, reg: reg}
}

// serveRole serves a role's HTTP API on an httptest server and runs its
// actors until the test ends, when it must stop within stopWithin.
func serveRole(t testing.TB, name string, stopWithin time.Duration, mount func(func(string, http.Handler)), register func(*run.Group)) string {
	t.Helper()
	mux := http.NewServeMux()
	mount(mux.Handle)
	hs := httptest.NewServer(mux)
	var g run.Group
	register(&g)
	stop := make(chan struct{})
	g.Add(func() error { <-stop; return nil }, func(error) {})
	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	t.Cleanup(func() {
		hs.Close()
		close(stop)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(stopWithin):
			t.Errorf("%s did not stop within %s", name, stopWithin)
		}
	})
	return hs.URL
}

// apiResponse is Prometheus' API envelope, with the data left raw.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
	code      int
}

// get calls the API with GET.
func get(t testing.TB, base, path string, params url.Values) apiResponse {
	t.Helper()
	u := base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// post calls the API with a form body, as Grafana does by default.
func post(t testing.TB, base, path string, params url.Values) apiResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+path, strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func do(t testing.TB, req *http.Request) apiResponse {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %s", req.Method, req.URL, resp.StatusCode, body)
	}
	r.code = resp.StatusCode
	return r
}

func instant(q string) url.Values {
	return url.Values{"query": {q}, "time": {fmt.Sprint(float64(queryTime.UnixMilli()) / 1000)}}
}

func rangeQ(q string) url.Values {
	return url.Values{"query": {q}, "start": {fmt.Sprint(ts(4) / 1000)}, "end": {fmt.Sprint(ts(40) / 1000)}, "step": {"30"}}
}

// mustSucceed fails the test unless r is a success without warnings.
func mustSucceed(t testing.TB, what string, r apiResponse) {
	t.Helper()
	if r.Status != "success" || r.code != http.StatusOK {
		t.Fatalf("%s: %d %s %s: %s", what, r.code, r.Status, r.ErrorType, r.Error)
	}
	if len(r.Warnings) > 0 {
		t.Fatalf("%s: unexpected warnings %q", what, r.Warnings)
	}
}

// queryResult is the data of a query answer.
type queryResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
		Values [][]any           `json:"values"`
	} `json:"result"`
}

func (r apiResponse) result(t testing.TB) queryResult {
	t.Helper()
	var q queryResult
	if err := json.Unmarshal(r.Data, &q); err != nil {
		t.Fatalf("query data: %v: %s", err, r.Data)
	}
	return q
}

// metrics are the label sets of a vector or matrix, as sorted strings.
func (q queryResult) metrics() []string {
	var out []string
	for _, s := range q.Result {
		out = append(out, labels.FromMap(s.Metric).String())
	}
	slices.Sort(out)
	return out
}

// reference is "one Prometheus holding all the data": Prometheus' engine
// over one TSDB with every leaf's series, their external labels attached as
// ordinary labels.
type reference struct {
	db     *tsdb.DB
	engine *promql.Engine
}

func newReference(t testing.TB, leaves map[string][]testSeries) *reference {
	t.Helper()
	db, err := tsdb.Open(filepath.Join(t.TempDir(), "ref"), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender(context.Background())
	for ext, data := range leaves {
		extLset, err := ParseLabels(strings.Split(ext, ","))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range data {
			lset := labelpb.ExtendSortedLabels(s.lset, extLset)
			for _, smp := range s.samples {
				if _, err := app.Append(0, lset, smp.t, smp.v); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	return &reference{db: db, engine: promql.NewEngine(promql.EngineOpts{
		MaxSamples: opts.QueryMaxSamples, Timeout: opts.QueryTimeout, LookbackDelta: opts.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return opts.DefaultEvaluationInterval.Milliseconds() },
		EnableAtModifier:         true, EnableNegativeOffset: true,
	})}
}

// data answers a query as Prometheus' API would, and returns its data
// field as JSON.
func (r *reference) data(t testing.TB, params url.Values) json.RawMessage {
	t.Helper()
	ctx := context.Background()
	parseT := func(s string) time.Time {
		var f float64
		if _, err := fmt.Sscan(s, &f); err != nil {
			t.Fatal(err)
		}
		return time.UnixMilli(int64(math.Round(f * 1000)))
	}
	var qry promql.Query
	var err error
	if params.Has("step") {
		var step float64
		fmt.Sscan(params.Get("step"), &step)
		qry, err = r.engine.NewRangeQuery(ctx, r.db, nil, params.Get("query"), parseT(params.Get("start")), parseT(params.Get("end")), time.Duration(step*float64(time.Second)))
	} else {
		qry, err = r.engine.NewInstantQuery(ctx, r.db, nil, params.Get("query"), parseT(params.Get("time")))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		t.Fatalf("reference %s: %v", params.Get("query"), res.Err)
	}
	b, err := apiv1.JSONCodec{}.Encode(&apiv1.Response{Status: "success", Data: &apiv1.QueryData{ResultType: res.Value.Type(), Result: res.Value}})
	if err != nil {
		t.Fatal(err)
	}
	var env apiResponse
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data
}

// normalized is a query's data as canonical JSON, with the series of a
// vector or matrix in label order: the API promises no order.
func normalized(raw []byte) string {
	var d struct {
		ResultType string            `json:"resultType"`
		Result     json.RawMessage   `json:"result"`
		Series     []json.RawMessage `json:"-"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return "invalid: " + string(raw)
	}
	var canon any
	if d.ResultType == "vector" || d.ResultType == "matrix" {
		var series []map[string]any
		_ = json.Unmarshal(d.Result, &series)
		key := func(s map[string]any) string { b, _ := json.Marshal(s["metric"]); return string(b) }
		slices.SortFunc(series, func(a, b map[string]any) int { return strings.Compare(key(a), key(b)) })
		canon = map[string]any{"resultType": d.ResultType, "result": series}
	} else {
		var v any
		_ = json.Unmarshal(raw, &v)
		canon = v
	}
	b, _ := json.Marshal(canon)
	return string(b)
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
