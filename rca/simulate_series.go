package rca

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// season is the traffic's daily (or shorter) swing at sample t.
func (w *simWorld) seasonAt(t int) float64 {
	x := w.t0 + float64(t)*w.step
	return w.season.amp * math.Sin(2*math.Pi*x/w.season.period+w.season.phase)
}

// rates computes every service's request rate: entry traffic with its
// seasonality and drift, carried down the calls.
func (w *simWorld) rates() {
	n := w.n
	order := slices.Clone(w.svcs)
	slices.SortStableFunc(order, func(a, b *simSvc) int { return a.layer - b.layer })
	for _, s := range w.svcs {
		s.rate = make([]float64, n)
	}
	for _, e := range w.entries {
		if e.entryRate == 0 {
			e.entryRate = math.Exp(w.uniform(math.Log(5), math.Log(2000)))
			e.drift = make([]float64, n)
			d := 0.0
			for t := range n {
				d = 0.98*d + w.rng.NormFloat64()*0.004
				e.drift[t] = d
			}
		}
		tr := w.traffic[e]
		for t := range n {
			v := e.entryRate * (1 + w.seasonAt(t)) * (1 + e.drift[t])
			if tr != nil {
				v *= 1 + tr[t]
			}
			e.rate[t] = v
		}
	}
	for _, s := range order {
		for _, c := range s.calls {
			for t := range n {
				c.to.rate[t] += s.rate[max(0, t-c.delay)] * c.mult
			}
		}
	}
}

// calibrate turns each pod's target CPU use into a cost per request, now
// that the request rates are known.
func (w *simWorld) calibrate() {
	for _, s := range w.svcs {
		if len(s.pods) == 0 {
			continue
		}
		per := simMedian(s.rate[:w.fault]) / float64(len(s.pods))
		for _, p := range s.pods {
			p.baseRate = max(per, 1e-3)
			p.cpuPerReq = max(p.cpuPerReq-p.cpuIdle, 0.01) / p.baseRate
		}
	}
}

// simulate computes the true state of every pod, node and service, then
// what monitoring observes of it.
func (w *simWorld) simulate() {
	n := w.n
	podRate := map[*simPod][]float64{}
	for _, s := range w.svcs {
		for _, p := range s.pods {
			podRate[p] = make([]float64, n)
		}
		for t := range n {
			k := 0
			for _, p := range s.pods {
				if p.routed(t) {
					k++
				}
			}
			for _, p := range s.pods {
				if p.routed(t) {
					podRate[p][t] = s.rate[t] / float64(k)
				}
			}
		}
	}

	// Pods' CPU, throttling and latency, and their nodes' saturation.
	starveK := map[*simPod]float64{}
	starveThr := map[*simPod]float64{}
	for _, p := range w.pods {
		starveK[p] = w.uniform(1, 3.5)
		starveThr[p] = w.uniform(0.25, 0.7)
		p.cpu, p.thr, p.mem, p.restarts, p.netErr = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
		for t := range n {
			p.latMult[t] = 1
		}
	}
	memPress := map[*simPod]float64{}
	for _, p := range w.pods {
		memPress[p] = w.uniform(1.5, 5)
	}
	for _, nd := range w.nodes {
		nd.cpu, nd.mem, nd.disk, nd.netErr, nd.ready = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
		grace := w.samples(w.uniform(20, 50))
		for t := range n {
			down := nd.downAt >= 0 && t >= nd.downAt
			nd.ready[t] = 1
			if nd.downAt >= 0 && t >= nd.downAt+grace {
				nd.ready[t] = 0
			}
			demand := map[*simPod]float64{}
			total := nd.sysCPU
			var noisy *simPod
			for _, p := range nd.pods {
				if !p.alive(t) {
					continue
				}
				d := p.cpuIdle + p.cpuPerReq*podRate[p][t] + p.cpuAdd[t]
				demand[p] = d
				use := d
				if p.cpuLimit > 0 {
					use = min(d, p.cpuLimit)
					p.thr[t] = 0.05*math.Pow(use/p.cpuLimit, 2) + clamp((d/p.cpuLimit-0.9)*1.2, 0, 0.95)
					p.latMult[t] *= 1 + 3*clamp((d/p.cpuLimit-0.9)*1.2, 0, 0.95)
				}
				p.cpu[t] = use
				if p.noisy {
					noisy = p
				} else {
					total += use
				}
			}
			if noisy != nil {
				noisy.cpu[t] = min(demand[noisy], max(0.1, nd.cpuCap*0.98-total))
				total += demand[noisy]
			}
			over := total / nd.cpuCap
			if over > 0.9 {
				s := min(1, (over-0.9)/0.25)
				for _, p := range nd.pods {
					if !p.alive(t) || p.noisy {
						continue
					}
					p.thr[t] = max(p.thr[t], s*starveThr[p])
					p.latMult[t] *= 1 + starveK[p]*s
					p.cpu[t] *= 1 - 0.25*s
				}
			}
			if down {
				continue
			}
			used, memUsed, io, traffic := nd.sysCPU, nd.sysMem, 0.0, 50.0
			for _, p := range nd.pods {
				if !p.alive(t) {
					continue
				}
				used += p.cpu[t]
				memUsed += p.memBase + p.memAdd[t]
				io += p.ioSens * 0.04 * math.Min(1, podRate[p][t]/max(p.baseRate, 1e-3))
				traffic += podRate[p][t] * 4
			}
			nd.cpu[t] = min(1, used/nd.cpuCap)
			nd.mem[t] = min(1, memUsed/nd.memCap)
			nd.disk[t] = min(1, nd.diskBase+io+nd.diskAdd[t])
			nd.netErr[t] = nd.netBase + nd.netLoss[t]*traffic
		}
	}
	for _, p := range w.pods {
		nd := p.node
		restarts := p.restarts0
		slices.Sort(p.restartAt)
		ri := 0
		errNet := w.uniform(0.3, 1)
		for t := range n {
			for ri < len(p.restartAt) && p.restartAt[ri] <= t {
				restarts++
				ri++
			}
			p.restarts[t] = restarts
			saw := 0.0
			if p.gc > 0 {
				saw = p.gc * math.Mod(float64(t)*w.step/180, 1)
			}
			p.mem[t] = p.memBase*(1+saw) + p.memAdd[t]
			if p.memLimit > 0 {
				if f := p.mem[t] / p.memLimit; f > 0.7 {
					p.latMult[t] *= 1 + math.Pow((f-0.7)/0.3, 2)*memPress[p]
				}
			}
			if d := clamp((nd.disk[t]-0.85)/0.15, 0, 1); d > 0 {
				p.latMult[t] *= 1 + p.ioSens*d*4
			}
			loss := nd.netLoss[t]
			if loss > 0 {
				p.latMult[t] *= 1 + loss*6
			}
			p.netErr[t] = loss * podRate[p][t] * 2
			e := p.errAdd[t] + loss*errNet
			if p.routed(t) && (t >= p.died || p.down[t]) {
				e = 1
			}
			p.errAdd[t] = min(1, e)
		}
	}

	// Services, callees first.
	order := slices.Clone(w.svcs)
	slices.SortStableFunc(order, func(a, b *simSvc) int { return b.layer - a.layer })
	for _, s := range order {
		s.lat50, s.lat99, s.errR = make([]float64, n), make([]float64, n), make([]float64, n)
		base := simMedian(s.rate[:w.fault])
		latAddTail := w.uniform(1, 1.5)
		for t := range n {
			m50, m99, perr, k := 0.0, 1.0, 0.0, 0
			for _, p := range s.pods {
				if !p.routed(t) {
					continue
				}
				k++
				m50 += p.latMult[t]
				m99 = max(m99, p.latMult[t])
				perr += p.errAdd[t]
			}
			own := s.errBase + s.errAdd[t]
			switch {
			case k > 0:
				m50 /= float64(k)
				own += perr / float64(k)
			case len(s.pods) > 0:
				m50, own = 1, 1 // no endpoints: every request fails fast
			default:
				m50 = 1
			}
			load := 1.0
			if base > 0 {
				load = clamp(1+0.12*(s.rate[t]/base-1), 0.8, 1.5)
			}
			l50 := s.p50*m50*load + s.latAdd[t]
			l99 := s.p99*math.Pow(m99, 0.9)*load + s.latAdd[t]*latAddTail
			ok := 1 - min(1, own)
			for _, c := range s.calls {
				tc := max(0, t-c.delay)
				l50 += c.weight * c.to.lat50[tc]
				l99 += c.weight * c.to.lat99[tc] * 0.8
				ok *= 1 - c.errProp*c.to.errR[tc]
				if c.to.lat99[tc] > s.timeout {
					ok *= 1 - 0.3*c.weight*min(1, (c.to.lat99[tc]-s.timeout)/s.timeout)
				}
			}
			s.lat50[t], s.lat99[t], s.errR[t] = l50, l99, clamp(1-ok, 0, 1)
		}
	}
	w.observe()
}

// observe turns true state into what monitoring sees: rate windows smooth
// service metrics, every sample is noisy, p99 spikes, dead things stop
// reporting.
func (w *simWorld) observe() {
	n := w.n
	nan := math.NaN()
	for _, s := range w.svcs {
		s.rate, s.lat50, s.lat99, s.errR = smooth(s.rate, s.smooth), smooth(s.lat50, s.smooth), smooth(s.lat99, s.smooth), smooth(s.errR, s.smooth)
		for t := range n {
			r := s.rate[t]
			s.rate[t] = r * math.Exp(w.rng.NormFloat64()*(0.015+0.5/math.Sqrt(r*60+1)))
			s.lat50[t] *= math.Exp(w.rng.NormFloat64() * s.noise)
			s.lat99[t] *= math.Exp(w.rng.NormFloat64() * s.noise * 1.6)
			if w.chance(0.006) {
				s.lat99[t] *= w.uniform(1.5, 3)
			}
			reqs := r * 60
			p := s.errR[t]
			if reqs < 50 {
				s.errR[t] = min(1, poisson(w, p*reqs)/math.Max(reqs, 1))
			} else {
				s.errR[t] = clamp(p+w.rng.NormFloat64()*math.Sqrt(p*(1-p)/reqs), 0, 1)
			}
		}
	}
	for _, p := range w.pods {
		for t := range n {
			if t < p.born || t >= p.died {
				p.cpu[t], p.thr[t], p.mem[t], p.restarts[t], p.netErr[t] = nan, nan, nan, nan, nan
				continue
			}
			p.cpu[t] *= math.Exp(w.rng.NormFloat64() * p.noise)
			p.thr[t] = clamp(p.thr[t]+w.rng.NormFloat64()*0.01*w.noiseMul, 0, 1)
			p.mem[t] *= 1 + w.rng.NormFloat64()*0.004*w.noiseMul
			p.netErr[t] = poisson(w, (0.002+p.netErr[t])*60) / 60
		}
	}
	for _, nd := range w.nodes {
		for t := range n {
			if nd.downAt >= 0 && t >= nd.downAt {
				nd.cpu[t], nd.mem[t], nd.disk[t], nd.netErr[t] = nan, nan, nan, nan
				continue
			}
			nd.cpu[t] = clamp(nd.cpu[t]+w.rng.NormFloat64()*0.015*w.noiseMul, 0, 1)
			nd.mem[t] = clamp(nd.mem[t]+w.rng.NormFloat64()*0.003*w.noiseMul, 0, 1)
			nd.disk[t] = clamp(nd.disk[t]+w.rng.NormFloat64()*0.02*w.noiseMul, 0, 1)
			nd.netErr[t] = poisson(w, nd.netErr[t]*60) / 60
		}
	}
}

// smooth is a trailing moving average over k samples, as a rate over a
// window of k samples would be.
func smooth(x []float64, k int) []float64 {
	if k <= 1 {
		return x
	}
	out := make([]float64, len(x))
	sum := 0.0
	for i := range x {
		sum += x[i]
		if i >= k {
			sum -= x[i-k]
		}
		out[i] = sum / float64(min(i+1, k))
	}
	return out
}

func poisson(w *simWorld, lambda float64) float64 {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return math.Max(0, math.Round(lambda+w.rng.NormFloat64()*math.Sqrt(lambda)))
	}
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= w.rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// simRules says which alerting rules the simulated organisation runs.
type simRules struct {
	slo, svc, pod, node, db bool
	sloFor, svcFor          int
}

func (w *simWorld) pickRules(late bool) simRules {
	if late {
		return simRules{slo: true, sloFor: w.samples(w.uniform(3, 6) * 60)}
	}
	return simRules{
		slo: true, sloFor: w.samples(w.uniform(1, 3) * 60),
		svc: w.chance(0.8), svcFor: w.samples(w.uniform(1, 2) * 60),
		pod: w.chance(0.7), node: w.chance(0.75), db: w.chance(0.6),
	}
}

// simAlert is an alert and the sample it started at.
type simAlert struct {
	Alert
	start  int
	entity string
}

// alerts evaluates the rules over the observed series and returns the
// alerts and the sample of detection: the first alert on something the
// faults touched, or -1 when none fired soon enough.
func (w *simWorld) alerts() ([]simAlert, int) {
	var out []simAlert
	r := w.ruleset
	at := func(t int) time.Time {
		return time.Unix(int64(w.t0+float64(t)*w.step), 0).UTC()
	}
	fire := func(entity, name, severity, summary string, labels map[string]string, forN int, cond func(t int) bool) {
		run := 0
		open := -1
		for t := 0; t <= w.n; t++ {
			if t < w.n && cond(t) {
				run++
				if run > forN && open < 0 {
					open = t
				}
				continue
			}
			run = 0
			if open >= 0 {
				a := simAlert{start: open, entity: entity}
				a.Labels = map[string]string{"alertname": name, "severity": severity}
				for k, v := range labels {
					a.Labels[k] = v
				}
				a.Annotations = map[string]string{"summary": summary}
				a.StartsAt = at(open)
				if t < w.n {
					a.EndsAt = at(t)
				}
				out = append(out, a)
				open = -1
			}
		}
	}
	baseline := func(x []float64) float64 {
		return simMedian(x[:w.fault])
	}
	for _, s := range w.svcs {
		if !s.metrics {
			continue
		}
		labels := map[string]string{"cluster": s.cluster, "namespace": s.ns, "service": s.name}
		if s.managed {
			labels = map[string]string{"cluster": s.cluster, s.kind: s.name}
		}
		b99, bErr := baseline(s.lat99), baseline(s.errR)
		lat, errs := s.lat99, s.errR
		if s.layer == 0 && r.slo {
			slo := b99 * w.uniform(1.3, 2)
			sloErr := max(0.01, 3*bErr+0.005)
			fire(s.id, "SLOLatencyBudgetBurn", "critical", "p99 latency above its SLO", labels, r.sloFor, func(t int) bool { return lat[t] > slo })
			fire(s.id, "SLOErrorBudgetBurn", "critical", "error ratio above its SLO", labels, r.sloFor, func(t int) bool { return errs[t] > sloErr })
		}
		if s.kind == "service" && r.svc {
			thr := max(b99*w.uniform(2, 3), b99+0.02)
			thrErr := max(0.05, 5*bErr)
			fire(s.id, "HighLatency", "warning", "p99 latency high", labels, r.svcFor, func(t int) bool { return lat[t] > thr })
			fire(s.id, "HighErrorRate", "warning", "error ratio high", labels, r.svcFor, func(t int) bool { return errs[t] > thrErr })
		}
		if s.kind != "service" && r.db {
			thr := b99 * 3
			fire(s.id, "DatastoreSlow", "warning", s.kind+" slow", labels, w.samples(60), func(t int) bool { return lat[t] > thr })
			fire(s.id, "DatastoreErrors", "warning", s.kind+" errors", labels, w.samples(60), func(t int) bool { return errs[t] > 0.05 })
		}
	}
	if r.pod {
		for _, p := range w.pods {
			if w.dropPods[p] {
				continue
			}
			labels := map[string]string{"cluster": p.svc.cluster, "namespace": p.svc.ns, "pod": p.name, "container": p.svc.name}
			thr, mem, rs := p.thr, p.mem, p.restarts
			fire(p.id, "CPUThrottlingHigh", "info", "CPU throttled", labels, w.samples(120), func(t int) bool { return thr[t] > 0.25 })
			if p.memLimit > 0 {
				lim := p.memLimit
				fire(p.id, "PodMemoryNearLimit", "warning", "memory near its limit", labels, w.samples(60), func(t int) bool { return mem[t] > 0.9*lim })
			}
			window := w.samples(300)
			fire(p.id, "KubePodRestarted", "warning", "container restarted", labels, 0, func(t int) bool {
				return t-window >= 0 && rs[t] > rs[t-window]
			})
		}
	}
	if r.node {
		for _, nd := range w.nodes {
			labels := map[string]string{"cluster": nd.cluster, "node": nd.name}
			if nd.ksm {
				ready := nd.ready
				fire(nd.id, "KubeNodeNotReady", "critical", "node not ready", labels, w.samples(60), func(t int) bool { return ready[t] == 0 })
			}
			if !nd.exporter {
				continue
			}
			inst := map[string]string{"cluster": nd.cluster, "instance": nd.ip + ":9100", "node": nd.name}
			cpu, disk, netErr := nd.cpu, nd.disk, nd.netErr
			fire(nd.id, "NodeExporterDown", "critical", "node-exporter is down", inst, w.samples(60), func(t int) bool { return math.IsNaN(cpu[t]) })
			fire(nd.id, "NodeCPUSaturated", "warning", "node CPU saturated", inst, w.samples(120), func(t int) bool { return cpu[t] > 0.9 })
			fire(nd.id, "NodeDiskIOSaturated", "warning", "node disk I/O saturated", inst, w.samples(120), func(t int) bool { return disk[t] > 0.85 })
			fire(nd.id, "NodeNetworkErrors", "warning", "node network errors", inst, w.samples(60), func(t int) bool { return netErr[t] > 5 })
		}
	}

	impacted := w.impacted()
	first := w.fault
	for _, f := range w.faults {
		first = min(first, f.start)
	}
	detected := -1
	for _, a := range out {
		if impacted[a.entity] && a.start >= first && (detected < 0 || a.start < detected) {
			detected = a.start
		}
	}
	if detected < 0 || detected > first+w.samples(15*60) || detected < first+w.samples(180) && w.lateOnly() {
		return nil, -1
	}
	return out, detected
}

func (w *simWorld) lateOnly() bool { return slices.Contains(w.situations, SituationLateDetection) }

// impacted lists the entities a fault can move: the faulty thing, what runs
// beside or on it, and every service upstream.
func (w *simWorld) impacted() map[string]bool {
	out := map[string]bool{}
	addSvc := func(s *simSvc) {
		for u := range upstream(s) {
			out[u.id] = true
			for _, p := range u.pods {
				out[p.id] = true
			}
		}
	}
	for _, f := range w.faults {
		out[f.strict] = true
		switch {
		case f.pod != nil:
			out[f.pod.node.id] = true
			for _, p := range f.pod.node.pods {
				out[p.id] = true
				addSvc(p.svc)
			}
		case f.svc != nil:
			addSvc(f.svc)
		case f.node != nil:
			for _, p := range f.node.pods {
				addSvc(p.svc)
			}
		}
	}
	return out
}

// assemble crops the window at end and writes the case as a capture would
// see it: the topology, the series of its nodes (some absent, some with
// gaps), the alerts active in the window.
func (w *simWorld) assemble(name string, alerts []simAlert, detected, end int) *Case {
	g := w.topologyGraph()
	c := &Case{Version: CaseVersion, Topology: g, DetectedAt: w.t0 + float64(detected)*w.step}
	kinds := make([]string, 0, len(w.faults))
	for _, f := range w.faults {
		kinds = append(kinds, f.kind)
	}
	c.Name = fmt.Sprintf("%s: %s (%s)", name, strings.Join(kinds, " + "), strings.Join(w.situations, ", "))
	m := &Metrics{Start: w.t0, Step: w.step}
	add := func(node, metric string, v []float64) {
		if w.chance(w.seriesDrop) {
			return
		}
		vals := slices.Clone(v[:end])
		holes := w.uniform(0, 0.02)
		for i := range vals {
			if w.chance(holes) {
				vals[i] = math.NaN()
			}
		}
		if w.chance(0.15) {
			at, k := w.rng.IntN(end), w.samples(w.uniform(60, 180))
			for i := at; i < min(end, at+k); i++ {
				vals[i] = math.NaN()
			}
		}
		for i, x := range vals {
			if !math.IsNaN(x) {
				vals[i] = round(x)
			}
		}
		m.Series = append(m.Series, Series{Node: node, Name: metric, Values: vals})
	}
	for _, s := range w.svcs {
		if !s.metrics {
			continue
		}
		switch s.kind {
		case "service":
			add(s.id, "request_rate", s.rate)
			add(s.id, "error_ratio", s.errR)
			add(s.id, "latency_p50_seconds", s.lat50)
			add(s.id, "latency_p99_seconds", s.lat99)
		case "database":
			add(s.id, "queries_rate", s.rate)
			add(s.id, "error_ratio", s.errR)
			add(s.id, "query_latency_p99_seconds", s.lat99)
			conns := make([]float64, w.n)
			for t := range conns {
				conns[t] = math.Round(5 + s.rate[t]*s.lat50[t]*2)
			}
			add(s.id, "connections_active", conns)
		case "queue":
			add(s.id, "publish_rate", s.rate)
			add(s.id, "error_ratio", s.errR)
			add(s.id, "publish_latency_p99_seconds", s.lat99)
			depth := make([]float64, w.n)
			base := simMedian(s.lat99[:w.fault])
			for t := range depth {
				depth[t] = math.Round(20 * math.Pow(s.lat99[t]/base, 1.5) * (1 + 5*s.errR[t]))
			}
			add(s.id, "queue_depth", depth)
		}
	}
	for _, p := range w.pods {
		if w.dropPods[p] {
			continue
		}
		add(p.id, "cpu_usage_cores", p.cpu)
		if p.cpuLimit > 0 || w.chance(0.5) {
			add(p.id, "cpu_throttled_ratio", p.thr)
		}
		add(p.id, "memory_working_set_bytes", p.mem)
		add(p.id, "restarts_total", p.restarts)
		add(p.id, "network_transmit_errors_rate", p.netErr)
	}
	for _, nd := range w.nodes {
		if nd.exporter {
			add(nd.id, "cpu_utilization", nd.cpu)
			add(nd.id, "memory_utilization", nd.mem)
			add(nd.id, "disk_io_utilization", nd.disk)
			add(nd.id, "network_errors_rate", nd.netErr)
		}
		if nd.ksm {
			add(nd.id, "ready", nd.ready)
		}
	}
	w.rng.Shuffle(len(m.Series), func(i, j int) { m.Series[i], m.Series[j] = m.Series[j], m.Series[i] })
	c.Metrics = m

	endT := w.t0 + float64(end)*w.step
	for _, a := range alerts {
		if a.start >= end {
			continue
		}
		al := a.Alert
		if !al.EndsAt.IsZero() && float64(al.EndsAt.Unix()) > endT {
			al.EndsAt = time.Time{}
		}
		c.Alerts = append(c.Alerts, al)
	}
	// Alerts that have been firing for days on things that are fine.
	for range w.rng.IntN(3) {
		p := pick(w, w.pods)
		if w.dropPods[p] {
			continue
		}
		c.Alerts = append(c.Alerts, Alert{
			Labels:      map[string]string{"alertname": "KubeContainerWaiting", "severity": "info", "cluster": p.svc.cluster, "namespace": p.svc.ns, "pod": p.name},
			Annotations: map[string]string{"summary": "a sidecar container has been waiting"},
			StartsAt:    time.Unix(int64(w.t0-w.uniform(3600, 3*86400)), 0).UTC(),
		})
	}
	slices.SortStableFunc(c.Alerts, func(a, b Alert) int { return a.StartsAt.Compare(b.StartsAt) })
	return c
}

// round keeps five significant digits, which is below every noise level.
func round(x float64) float64 {
	if x == 0 || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, 4-math.Floor(math.Log10(math.Abs(x))))
	return math.Round(x*p) / p
}

// simMedian returns the median of the finite values of x, NaN when none.
func simMedian(x []float64) float64 {
	v := make([]float64, 0, len(x))
	for _, f := range x {
		if !math.IsNaN(f) {
			v = append(v, f)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
