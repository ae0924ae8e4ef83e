package rca

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		kind, name string
		role       role
		dir        int
		counter    bool
		usage      bool
	}{
		{"service", "latency_p99_seconds", rolePerf, 1, false, false},
		{"service", "error_ratio", rolePerf, 1, false, false},
		{"service", "request_rate", roleLoad, 0, false, false},
		{"pod", "cpu_usage_cores", roleRes, 1, false, true},
		{"pod", "cpu_throttled_ratio", roleSat, 1, false, false},
		{"pod", "memory_working_set_bytes", roleRes, 1, false, true},
		{"pod", "restarts_total", roleSat, 1, true, false},
		{"pod", "network_transmit_errors_rate", roleSat, 1, false, false},
		{"node", "network_errors_rate", roleRes, 1, false, false},
		{"node", "disk_io_utilization", roleRes, 1, false, false},
		{"node", "ready", roleAvail, -1, false, false},
		{"database", "query_latency_p99_seconds", rolePerf, 1, false, false},
		{"queue", "queue_depth", rolePerf, 1, false, false},
		{"database", "queries_rate", roleLoad, 0, false, false},
		{"external", "temperature_celsius", roleGen, 0, false, false},
		{"service", "http_requests_total", roleLoad, 0, true, false},
	} {
		k := classify(tc.kind, tc.name)
		if k.role != tc.role || k.dir != tc.dir || k.counter != tc.counter || k.usage != tc.usage {
			t.Errorf("classify(%s, %s) = %+v", tc.kind, tc.name, k)
		}
	}
}

func TestAnalyze(t *testing.T) {
	const n, det = 160, 100
	w := newWindow(n, 15, 0, det*15)
	rng := rand.New(rand.NewPCG(3, 4))
	gen := func(f func(i int) float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return v
	}
	noisy := func(base float64) func(int) float64 {
		return func(int) float64 { return base * (1 + 0.03*rng.NormFloat64()) }
	}
	step := func(at int, from, to float64) func(int) float64 {
		return func(i int) float64 {
			if i >= at {
				return to * (1 + 0.03*rng.NormFloat64())
			}
			return from * (1 + 0.03*rng.NormFloat64())
		}
	}
	nan := math.NaN()
	for _, tc := range []struct {
		name    string
		metric  string
		values  []float64
		minZ    float64 // 0: must be normal
		onset   int     // -1: not checked
		stopped bool
		fresh   bool
	}{
		{"normal", "latency_p99_seconds", gen(noisy(0.2)), 0, -1, false, false},
		{"step", "latency_p99_seconds", gen(step(95, 0.2, 0.6)), 20, 95, false, false},
		{"fall of the wrong way", "latency_p99_seconds", gen(step(95, 0.2, 0.05)), 0, -1, false, false},
		{"readiness drop on a flat series", "ready", gen(func(i int) float64 { return map[bool]float64{true: 0, false: 1}[i >= 95] }), 20, 95, false, false},
		{"blip", "cpu_usage_cores", gen(func(i int) float64 { return map[bool]float64{true: 5, false: 0.3}[i == 120] }), 0, -1, false, false},
		{"seasonal trend", "request_rate", gen(func(i int) float64 { return 100 * (1 + 0.0015*float64(i)) * (1 + 0.02*rng.NormFloat64()) }), 0, -1, false, false},
		{"sparse counts", "network_transmit_errors_rate", gen(func(i int) float64 { return float64(i%13/12) / 60 }), 0, -1, false, false},
		{"one restart is not much", "restarts_total", gen(func(i int) float64 { return map[bool]float64{true: 4, false: 3}[i >= 110] }), 0, -1, false, false},
		{"crash loop", "restarts_total", gen(func(i int) float64 { return 3 + float64(max(0, i-100)/6) }), 3.5, 106, false, false},
		{"counter jitter is no reset", "restarts_total", gen(func(i int) float64 { return 3 * (1 + 0.01*rng.NormFloat64()) }), 0, -1, false, false},
		{"stopped", "cpu_utilization", gen(func(i int) float64 {
			if i >= 96 {
				return nan
			}
			return 0.4
		}), 0, -1, true, false},
		{"fresh", "cpu_usage_cores", gen(func(i int) float64 {
			if i < 105 {
				return nan
			}
			return 0.3
		}), 0, -1, false, true},
		{"all missing", "cpu_usage_cores", gen(func(int) float64 { return nan }), 0, -1, false, false},
		{"leak restarting every few minutes starts with its first cycle", "memory_working_set_bytes", gen(func(i int) float64 {
			if i < 90 {
				return 1e9
			}
			return 1e9 * (1 + 0.05*float64((i-90)%25))
		}), 20, 96, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := analyze(tc.values, classify("pod", tc.metric), w)
			switch {
			case tc.minZ == 0 && strength(e.z) > 0:
				t.Errorf("z = %.1f, want normal", e.z)
			case tc.minZ > 0 && e.z < tc.minZ:
				t.Errorf("z = %.1f, want at least %v", e.z, tc.minZ)
			}
			if tc.onset >= 0 && (e.onset < tc.onset-2 || e.onset > tc.onset+2) {
				t.Errorf("onset = %d, want about %d", e.onset, tc.onset)
			}
			if e.stopped != tc.stopped || e.fresh != tc.fresh {
				t.Errorf("stopped %v fresh %v, want %v %v", e.stopped, e.fresh, tc.stopped, tc.fresh)
			}
		})
	}
}

func TestNewWindow(t *testing.T) {
	for _, tc := range []struct {
		n           int
		det         float64
		ref, test   int
		description string
	}{
		{160, 100 * 15, 50, 92, "history split, at most 15 minutes kept out"},
		{400, 300 * 15, 240, 292, "long history: 15 minutes kept out"},
		{160, 8 * 15, 6, 6, "short history: a minimal reference"},
		{160, 1e12, 100, 152, "detection after the window"},
	} {
		w := newWindow(tc.n, 15, 0, tc.det)
		if w.ref != tc.ref || w.test != tc.test {
			t.Errorf("%s: ref %d test %d, want %d %d", tc.description, w.ref, w.test, tc.ref, tc.test)
		}
	}
}

func TestQuantiles(t *testing.T) {
	if m := medianOf([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := medianOf([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if !math.IsNaN(medianOf(nil)) || !math.IsNaN(quantileSorted(nil, 0.5)) {
		t.Error("empty median is not NaN")
	}
	if q := quantileSorted([]float64{0, 10}, 0.8); q != 8 {
		t.Errorf("quantile = %v", q)
	}
	if r := correlation([]float64{1, 2, 3, 4, 5, math.NaN()}, []float64{2, 4, 6, 8, 10, 1}); math.Abs(r-1) > 1e-9 {
		t.Errorf("correlation = %v", r)
	}
}
