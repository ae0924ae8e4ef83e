package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// SeriesPerTarget is how many series a synthetic target exposes.
const SeriesPerTarget = 1000

// A synthetic target looks like a small web service: request counters by
// handler, method and code (400 series), a request-duration histogram by
// handler (20 × (12 buckets + sum + count) = 280), per-CPU counters (64) and
// cache gauges (256).
var (
	handlers = []string{
		"/", "/api/v1/users", "/api/v1/users/:id", "/api/v1/orders", "/api/v1/orders/:id",
		"/api/v1/carts", "/api/v1/carts/:id", "/api/v1/products", "/api/v1/products/:id", "/api/v1/search",
		"/api/v1/login", "/api/v1/logout", "/api/v1/payments", "/api/v1/payments/:id", "/api/v1/inventory",
		"/healthz", "/readyz", "/metrics", "/static/*", "/graphql",
	}
	methods = []string{"GET", "POST", "PUT", "DELETE"}
	codes   = []string{"200", "201", "404", "429", "500"}
	// Relative request rates per code.
	codeWeights = []int{200, 20, 10, 3, 2}
	buckets     = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.Inf(1)}
	cpuModes    = []string{"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"}
	caches      = []string{
		"sessions", "users", "products", "prices", "carts", "tokens", "templates", "geo",
		"search", "recommendations", "inventory", "orders", "payments", "feature-flags", "dns", "tls",
	}
)

const (
	numCPU    = 8
	numShards = 16
)

// Label is one label pair.
type Label struct{ Name, Value string }

// Target is one synthetic scrape target: its series and their current
// values, which change every time Advance is called.
type Target struct {
	// Index names the target; TargetLabels derives its namespace and pod.
	Index int

	series []seriesDef
	values []float64
	rng    *rand.Rand
	// Histogram state per handler: cumulative bucket counts, sum.
	hist [][]float64
	sums []float64
	// Cumulative distribution of request durations per handler.
	cdf [][]float64

	body atomic.Pointer[[]byte]
}

type seriesDef struct {
	name   string
	labels []Label // without the target's labels, sorted by name
	prefix []byte  // the exposition line up to the value
}

// NewTarget builds target i with deterministic values (the same i always
// yields the same sequence).
func NewTarget(i int) *Target {
	t := &Target{Index: i, rng: rand.New(rand.NewPCG(uint64(i)+1, 0x9e3779b97f4a7c15))}
	add := func(name string, ls ...Label) {
		line := []byte(name)
		if len(ls) > 0 {
			line = append(line, '{')
			for j, l := range ls {
				if j > 0 {
					line = append(line, ',')
				}
				line = append(line, l.Name...)
				line = append(line, '=')
				line = strconv.AppendQuote(line, l.Value)
			}
			line = append(line, '}')
		}
		line = append(line, ' ')
		t.series = append(t.series, seriesDef{name: name, labels: ls, prefix: line})
	}
	for _, h := range handlers {
		for _, m := range methods {
			for _, c := range codes {
				add("http_requests_total", Label{"code", c}, Label{"handler", h}, Label{"method", m})
			}
		}
	}
	for hi, h := range handlers {
		for _, b := range buckets {
			add("http_request_duration_seconds_bucket", Label{"handler", h}, Label{"le", formatLe(b)})
		}
		add("http_request_duration_seconds_sum", Label{"handler", h})
		add("http_request_duration_seconds_count", Label{"handler", h})
		// A log-normal-ish latency per handler, slower for some.
		median := 0.02 * float64(1+(hi*7+i)%9)
		cdf := make([]float64, len(buckets))
		for bi, b := range buckets {
			if math.IsInf(b, 1) {
				cdf[bi] = 1
				continue
			}
			z := math.Log(b/median) / 0.9
			cdf[bi] = 0.5 * math.Erfc(-z/math.Sqrt2)
		}
		t.cdf = append(t.cdf, cdf)
		t.hist = append(t.hist, make([]float64, len(buckets)))
		t.sums = append(t.sums, 0)
	}
	for c := range numCPU {
		for _, m := range cpuModes {
			add("node_cpu_seconds_total", Label{"cpu", strconv.Itoa(c)}, Label{"mode", m})
		}
	}
	for _, c := range caches {
		for s := range numShards {
			add("app_cache_entries", Label{"cache", c}, Label{"shard", strconv.Itoa(s)})
		}
	}
	if len(t.series) != SeriesPerTarget {
		panic(fmt.Sprintf("synthetic target has %d series, want %d", len(t.series), SeriesPerTarget))
	}
	t.values = make([]float64, len(t.series))
	t.Advance()
	return t
}

func formatLe(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(b, 'g', -1, 64)
}

// Advance moves every value on: counters grow, gauges change.
func (t *Target) Advance() {
	r := t.rng
	k := 0
	for range handlers {
		for range methods {
			for ci := range codes {
				t.values[k] += float64(r.IntN(codeWeights[ci]))
				k++
			}
		}
	}
	for hi := range handlers {
		n := float64(r.IntN(400))
		h := t.hist[hi]
		for bi := range buckets {
			h[bi] += math.Floor(n * t.cdf[hi][bi])
			t.values[k] = h[bi]
			k++
		}
		t.sums[hi] += n * (0.01 + 0.1*r.Float64())
		t.values[k] = t.sums[hi]
		t.values[k+1] = h[len(buckets)-1]
		k += 2
	}
	for range numCPU {
		for range cpuModes {
			t.values[k] += math.Round(r.Float64()*500) / 100
			k++
		}
	}
	for range caches {
		for range numShards {
			t.values[k] = float64(1000 + r.IntN(100000))
			k++
		}
	}
}

// Render writes the current values in the text exposition format.
func (t *Target) Render(buf []byte) []byte {
	last := ""
	for i, s := range t.series {
		if fam := family(s.name); fam != last {
			last = fam
			typ := "counter"
			switch fam {
			case "http_request_duration_seconds":
				typ = "histogram"
			case "app_cache_entries":
				typ = "gauge"
			}
			buf = append(buf, "# HELP "...)
			buf = append(buf, fam...)
			buf = append(buf, " Synthetic benchmark series.\n# TYPE "...)
			buf = append(buf, fam...)
			buf = append(buf, ' ')
			buf = append(buf, typ...)
			buf = append(buf, '\n')
		}
		buf = append(buf, s.prefix...)
		buf = strconv.AppendFloat(buf, t.values[i], 'g', -1, 64)
		buf = append(buf, '\n')
	}
	return buf
}

func family(name string) string {
	if len(name) > len("http_request_duration_seconds") && name[:len("http_request_duration_seconds")] == "http_request_duration_seconds" {
		return "http_request_duration_seconds"
	}
	return name
}

// TargetLabels are the labels the scrape configuration gives target i.
func TargetLabels(i int) []Label {
	return []Label{
		{"namespace", fmt.Sprintf("team-%02d", i%20)},
		{"pod", fmt.Sprintf("shop-%04d-7d9f8c6b5-%05x", i, i*7919%0xfffff)},
	}
}

// Series calls f with each series' labels (the target's own, without job,
// instance or the target labels) and current value.
func (t *Target) Series(f func(name string, ls []Label, v float64)) {
	for i, s := range t.series {
		f(s.name, s.labels, t.values[i])
	}
}

// Farm serves synthetic targets, each on its own loopback listener, from
// pre-rendered bodies that a background loop re-renders every tick.
type Farm struct {
	Targets []*Target
	Addrs   []string

	servers []*http.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	scrapes atomic.Int64
}

// StartFarm serves n targets on 127.0.0.1:0 listeners and changes their
// values every tick.
func StartFarm(n int, tick time.Duration) (*Farm, error) {
	f := &Farm{}
	for i := range n {
		t := NewTarget(i)
		b := t.Render(nil)
		t.body.Store(&b)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Close()
			return nil, err
		}
		srv := &http.Server{Handler: f.handler(t), ReadHeaderTimeout: 10 * time.Second}
		f.Targets = append(f.Targets, t)
		f.Addrs = append(f.Addrs, l.Addr().String())
		f.servers = append(f.servers, srv)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				panic(err)
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			for _, t := range f.Targets {
				t.Advance()
				old := *t.body.Load()
				b := t.Render(make([]byte, 0, len(old)+1024))
				t.body.Store(&b)
			}
		}
	}()
	return f, nil
}

func (f *Farm) handler(t *Target) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.scrapes.Add(1)
		b := *t.body.Load()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
}

// Scrapes is how many requests the targets have answered.
func (f *Farm) Scrapes() int64 { return f.scrapes.Load() }

// Close stops the targets.
func (f *Farm) Close() {
	if f.cancel != nil {
		f.cancel()
	}
	for _, s := range f.servers {
		_ = s.Close()
	}
	f.wg.Wait()
}
