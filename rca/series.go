package rca

import (
	"math"
	"slices"
	"strings"
)

// role is what a metric says about its node, read from its name. Names the
// formats README gives a meaning to fall in the obvious roles; any other
// name is matched on the words it is made of, and failing that is generic.
type role uint8

const (
	// rolePerf is latency and errors: symptoms that travel from callee to
	// caller.
	rolePerf role = iota
	// roleLoad is traffic: request, query and publish rates.
	roleLoad
	// roleRes is resource use: CPU, memory, disk, a node's network errors.
	roleRes
	// roleSat is a pod's saturation: throttling, restarts, transmit errors.
	roleSat
	// roleAvail is readiness: 1 is good, 0 is down.
	roleAvail
	// roleGen is anything else.
	roleGen
	// roleStop is not a metric: the node stopped reporting.
	roleStop
	numRoles
)

// unit decides the smallest change worth noticing when a series is flat.
type unit uint8

const (
	unitOther unit = iota
	unitRatio      // 0..1
	unitSeconds
	unitBytes
	unitCores
)

// metricKind is what Rank knows of a series from its name.
type metricKind struct {
	role role
	// dir is +1 when a rise is bad, -1 when a fall is, 0 when both are.
	dir     int
	counter bool
	unit    unit
	// usage marks consumption (CPU, memory): a rise is something the node
	// itself does, which its host cannot cause.
	usage bool
}

func classify(nodeKind, name string) metricKind {
	n := strings.ToLower(name)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(n, w) {
				return true
			}
		}
		return false
	}
	k := metricKind{role: roleGen, dir: 0}
	switch {
	case strings.HasSuffix(n, "_total") || strings.HasSuffix(n, "_count") || strings.HasSuffix(n, "_sum") || strings.HasSuffix(n, "_bucket"):
		k.counter = true
	}
	switch {
	case strings.HasSuffix(n, "_ratio") || strings.HasSuffix(n, "_utilization") || has("percent", "ratio"):
		k.unit = unitRatio
	case strings.HasSuffix(n, "_seconds") && !k.counter:
		k.unit = unitSeconds
	case strings.HasSuffix(n, "_bytes"):
		k.unit = unitBytes
	case strings.HasSuffix(n, "_cores"):
		k.unit = unitCores
	}
	switch {
	case n == "ready" || n == "up" || has("ready", "available", "healthy") && !has("unavailable", "unhealthy", "not_ready"):
		k.role, k.dir = roleAvail, -1
	case has("throttl"):
		k.role, k.dir = roleSat, 1
	case has("restart", "oom", "crash", "evict"):
		k.role, k.dir = roleSat, 1
	case has("network", "packet", "net_", "tcp") && has("error", "drop", "loss", "retrans", "fail"):
		k.role, k.dir = roleRes, 1
		if nodeKind == "pod" {
			k.role = roleSat
		}
	case has("cpu"):
		k.role, k.dir, k.usage = roleRes, 1, true
	case has("memory", "mem_", "heap", "working_set", "rss"):
		k.role, k.dir, k.usage = roleRes, 1, true
	case has("disk", "io_util", "iops", "iowait", "filesystem", "inode"):
		k.role, k.dir = roleRes, 1
	case has("error", "fail", "5xx", "timeout", "reject", "unavailable", "unhealthy"):
		k.role, k.dir = rolePerf, 1
	case has("latency", "duration", "response_time", "p99", "p95", "p90", "p50", "lag", "delay") || k.unit == unitSeconds:
		k.role, k.dir = rolePerf, 1
	case has("queue_depth", "backlog", "pending", "connections", "waiting", "inflight", "in_flight", "saturation"):
		k.role, k.dir = rolePerf, 1
	case has("request", "rps", "qps", "throughput", "queries", "publish", "consum", "traffic") || strings.HasSuffix(n, "_rate"):
		k.role = roleLoad
	}
	return k
}

// window is how a case's samples split: the reference is [0, ref), the
// anomaly is looked for in [test, n), detection is at det.
type window struct {
	n, det, ref, test int
	step              float64
	// stopMin is the fewest trailing missing samples that count as a
	// series having stopped.
	stopMin int
}

// newWindow places the reference well before detection: the fault may have
// started minutes before anyone noticed, so the half of the history closest
// to detection (up to 15 minutes of it) is kept out of the reference.
func newWindow(n int, step, start, detectedAt float64) window {
	w := window{n: n, step: step}
	w.det = int(math.Round((detectedAt - start) / step))
	w.det = max(0, min(n, w.det))
	gap := min(w.det/2, w.samples(15*60))
	w.ref = w.det - gap
	if w.ref < 6 {
		w.ref = min(6, n/2)
	}
	w.test = max(w.ref, w.det-w.samples(120))
	w.stopMin = max(3, w.samples(120))
	return w
}

func (w window) samples(sec float64) int { return max(1, int(math.Round(sec/w.step))) }

// seriesEvidence is how abnormal one series is.
type seriesEvidence struct {
	node int
	name string
	kind metricKind
	// z is the sustained peak deviation in the bad direction, in robust
	// standard deviations of the reference (0 when normal).
	z float64
	// onset is the sample the anomaly began at.
	onset int
	// base and value are the reference median and the median from onset
	// on, of the series as scored (per-minute increase for counters).
	base, value float64
	// stopped is set when a series with history stops reporting; stopAt is
	// the first missing sample.
	stopped bool
	stopAt  int
	// fresh is set when a series has no history: it appeared at freshAt.
	fresh   bool
	freshAt int
	// zs is the deviation at every sample from the reference on (NaN
	// before), kept for latency and error series only.
	zs []float64
}

// analyze scores one series against its own reference.
func analyze(values []float64, k metricKind, w window) seriesEvidence {
	ev := seriesEvidence{kind: k, onset: -1}
	n := min(len(values), w.n)
	if n == 0 {
		return ev
	}
	values = values[:n]
	x := values
	if k.counter {
		x = increases(values, max(2, w.samples(60)))
	}
	ref := min(w.ref, n)
	refVals := finite(x[:ref])
	if len(refVals) < max(4, ref/4) {
		for i := ref; i < n; i++ {
			if !math.IsNaN(values[i]) {
				ev.fresh, ev.freshAt = true, i
				break
			}
		}
		return ev
	}
	// A series with history that goes quiet for good has stopped.
	last := -1
	for i := n - 1; i >= 0; i-- {
		if !math.IsNaN(values[i]) {
			last = i
			break
		}
	}
	if last+1 >= w.test-w.samples(300) && n-1-last >= w.stopMin && float64(len(refVals)) >= 0.5*float64(ref) {
		ev.stopped, ev.stopAt = true, last+1
	}

	med := medianOf(refVals)
	// The series' resolution: a change of one step of a quantized series
	// (a count per minute) is not an anomaly; one more restart may be. It
	// is read from the reference, lest the anomaly itself set it; a gauge
	// that was flat at zero has only its later steps to go by.
	var q float64
	switch {
	case k.counter:
		q = resolution(x) / 4
	default:
		q = resolution(x[:ref])
		if q == 0 && med == 0 {
			q = resolution(x[ref:])
		}
	}
	scale := spread(refVals, med, k, q)
	// Most series are normal: when not even the plain deviation reaches
	// the evidence threshold after the reference, nothing more can.
	quiet := true
	for i := max(w.test, ref) - 1; i < n && quiet; i++ {
		if i >= ref && !math.IsNaN(x[i]) {
			z := (x[i] - med) / scale
			quiet = (k.dir > 0 && z < 3) || (k.dir < 0 && z > -3) || (k.dir == 0 && math.Abs(z) < 3)
		}
	}
	ev.base = med
	if quiet {
		return ev
	}
	// A slow trend in the reference (seasonality seen through a short
	// window) is extrapolated; the smaller of the plain and the detrended
	// deviation is kept, so that neither a trend nor a poor fit alone makes
	// an anomaly.
	slope, center, scaleDet := 0.0, float64(ref-1)/2, scale
	if ref >= 16 {
		h := ref / 2
		m1, m2 := medianOf(finite(x[:h])), medianOf(finite(x[h:ref]))
		if !math.IsNaN(m1) && !math.IsNaN(m2) {
			slope = (m2 - m1) / float64(h)
			res := make([]float64, 0, ref)
			for i := range ref {
				if !math.IsNaN(x[i]) {
					res = append(res, x[i]-(med+slope*(float64(i)-center)))
				}
			}
			scaleDet = spread(res, medianOf(res), k, q)
			scaleDet = max(scaleDet, spreadFloor(k, med))
		}
	}
	zs := make([]float64, n)
	for i := range n {
		zs[i] = math.NaN()
		if i < ref || math.IsNaN(x[i]) {
			continue
		}
		z := (x[i] - med) / scale
		if slope != 0 {
			ahead := min(float64(i)-center, 3*float64(ref))
			zd := (x[i] - (med + slope*ahead)) / scaleDet
			switch {
			case z*zd <= 0:
				z = 0
			case math.Abs(zd) < math.Abs(z):
				z = zd
			}
		}
		switch k.dir {
		case 1:
		case -1:
			z = -z
		default:
			z = math.Abs(z)
		}
		zs[i] = min(z, 1000)
	}
	// A median of three neighbours ignores lone spikes.
	sus := make([]float64, n)
	var tmp [3]float64
	for i := range n {
		sus[i] = math.NaN()
		if i < ref {
			continue
		}
		c := 0
		for j := i - 1; j <= i+1; j++ {
			if j >= ref && j < n && !math.IsNaN(zs[j]) {
				tmp[c] = zs[j]
				c++
			}
		}
		switch c {
		case 3:
			a, b, d := tmp[0], tmp[1], tmp[2]
			sus[i] = max(min(a, b), min(max(a, b), d))
		case 2:
			sus[i] = min(tmp[0], tmp[1])
		}
	}
	peak, at := 0.0, -1
	for i := max(w.test, ref); i < n; i++ {
		if sus[i] > peak {
			peak, at = sus[i], i
		}
	}
	ev.base = med
	if at < 0 {
		return ev
	}
	// Episodes are found with a capped CUSUM of the deviation, so that a
	// noisy shift dipping now and then below the line stays one episode
	// while a quiet stretch of a minute ends it. The anomaly started with
	// the first episode reaching half the peak: a leak that kills its pod
	// every few minutes started with its first cycle, not its highest.
	drift := max(1.5, 0.25*peak)
	onset, dur := at, 0.0
	sum, first, last, top := 0.0, -1, -1, 0.0
	closeRun := func() {
		if first >= 0 && top >= 0.5*peak {
			onset = min(onset, first)
			dur += float64(last-first+1) * w.step
		}
		first, top = -1, 0
	}
	for i := ref; i < n; i++ {
		if math.IsNaN(zs[i]) {
			continue
		}
		sum = min(max(0, sum+zs[i]-drift), 4*drift)
		switch {
		case sum > 0 && first < 0:
			first, last = i, i
		case sum > 0:
			last = i
		case first >= 0:
			closeRun()
		}
		if first >= 0 && !math.IsNaN(sus[i]) {
			top = max(top, sus[i])
		}
	}
	closeRun()
	// A blip is weaker evidence than a shift that lasts: faults last
	// minutes, noise and housekeeping seconds; and the cause of an incident
	// still under way is usually still abnormal.
	persist := dur / (float64(n-onset) * w.step)
	ev.z, ev.onset = peak*math.Sqrt(min(1, dur/180))*(0.4+0.6*min(1, persist)), onset
	if k.role == rolePerf {
		ev.zs = zs
	}
	xv := make([]float64, 0, n-onset)
	for i := onset; i < n; i++ {
		if !math.IsNaN(zs[i]) {
			xv = append(xv, x[i])
		}
	}
	ev.value = medianOf(xv)
	return ev
}

// spread is the robust scale of the reference: the larger of the MAD and the
// 80th percentile of absolute deviations (for sparse series whose MAD is
// zero), never below what the unit says is noticeable nor below the
// series' resolution q.
func spread(ref []float64, med float64, k metricKind, q float64) float64 {
	dev := make([]float64, 0, len(ref))
	for _, v := range ref {
		dev = append(dev, math.Abs(v-med))
	}
	slices.Sort(dev)
	s := 1.4826 * quantileSorted(dev, 0.5)
	s = max(s, quantileSorted(dev, 0.8)/1.2816, spreadFloor(k, med), q)
	return max(s, 1e-12)
}

// spreadFloor is the smallest change the unit says is worth noticing around
// level med.
func spreadFloor(k metricKind, med float64) float64 {
	switch k.unit {
	case unitRatio:
		return 0.005
	case unitSeconds:
		return max(0.03*math.Abs(med), 1e-4)
	case unitBytes:
		return max(0.01*math.Abs(med), 1<<20)
	case unitCores:
		return max(0.03*math.Abs(med), 0.005)
	}
	return 0.03 * math.Abs(med)
}

// resolution is the typical non-zero step between consecutive samples: the
// quantum of a quantized series (one event a minute), about the noise of a
// continuous one.
func resolution(x []float64) float64 {
	steps := make([]float64, 0, len(x))
	for i := 1; i < len(x); i++ {
		if d := math.Abs(x[i] - x[i-1]); d > 0 {
			steps = append(steps, d)
		}
	}
	if len(steps) == 0 {
		return 0
	}
	return medianOf(steps)
}

// increases turns a counter into its increase over the last k samples,
// counting a drop by more than half as a reset.
func increases(v []float64, k int) []float64 {
	d := make([]float64, len(v))
	for i := range v {
		d[i] = math.NaN()
		if i == 0 || math.IsNaN(v[i]) || math.IsNaN(v[i-1]) {
			continue
		}
		switch x := v[i] - v[i-1]; {
		case x >= 0:
			d[i] = x
		case v[i] < 0.5*v[i-1]:
			d[i] = v[i] // a reset
		default:
			d[i] = 0 // jitter, not a reset
		}
	}
	out := make([]float64, len(v))
	for i := range d {
		sum, c := 0.0, 0
		for j := max(0, i-k+1); j <= i; j++ {
			if !math.IsNaN(d[j]) {
				sum += d[j]
				c++
			}
		}
		out[i] = math.NaN()
		if c > 0 {
			out[i] = sum * float64(k) / float64(c)
		}
	}
	return out
}

func finite(x []float64) []float64 {
	out := make([]float64, 0, len(x))
	for _, v := range x {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			out = append(out, v)
		}
	}
	return out
}

// medianOf returns the median of x (finite values), NaN when empty. It
// sorts a copy.
func medianOf(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return quantileSorted(s, 0.5)
}

// quantileSorted interpolates the q-quantile of sorted s, NaN when empty.
func quantileSorted(s []float64, q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}
