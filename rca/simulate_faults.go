package rca

import (
	"math"
	"math/rand/v2"
	"slices"
)

// run sets up the incident, simulates it and assembles the case; ok is false
// when the incident was never detected and the attempt should be redrawn.
func (w *simWorld) run(name string) (*Case, *Truth, bool) {
	w.build()
	w.fault = w.samples(w.uniform(20, 40) * 60)
	w.n = w.fault + w.samples(35*60)
	w.alloc()
	w.season = simSeason{amp: w.uniform(0, 0.3), period: math.Exp(w.uniform(math.Log(600), math.Log(86400))), phase: w.uniform(0, 2*math.Pi)}
	w.rates()
	w.calibrate()

	situation := w.plan.situation
	if !w.inject(situation) {
		return nil, nil, false
	}
	if situation != SituationLateDetection && situation != SituationMissingEdges {
		if w.plan.alsoMissingEdges {
			w.situations = append(w.situations, SituationMissingEdges)
			w.hideRootCalls()
		}
	}
	w.ruleset = w.pickRules(slices.Contains(w.situations, SituationLateDetection))
	// Traces never see every call.
	for _, s := range w.svcs {
		for _, c := range s.calls {
			if w.chance(0.03) {
				w.hideCalls[c] = true
			}
		}
	}
	w.redHerrings()
	w.rates()
	w.simulate()
	alerts, detected := w.alerts()
	if detected < 0 {
		return nil, nil, false
	}
	end := min(w.n, detected+w.samples(w.uniform(5, 15)*60))
	return w.assemble(name, alerts, detected, end), w.truth(), true
}

// simPlan is what a case is about, drawn from (seed, index) alone so that
// redrawing an undetected incident keeps the mix of situations and faults.
type simPlan struct {
	situation        string
	faults           [2]string
	alsoMissingEdges bool
	services         int // 0 draws the size of the system
}

func newPlan(rng *rand.Rand) simPlan {
	p := simPlan{situation: pickSituation(rng), alsoMissingEdges: rng.Float64() < 0.1}
	for i := range p.faults {
		p.faults[i] = FaultTypes[rng.IntN(len(FaultTypes))]
		// A leak restarts its pod before the front end's SLO burns for
		// minutes; it is noticed by other alerts or not at all.
		for p.situation == SituationLateDetection && p.faults[i] == FaultMemoryLeak {
			p.faults[i] = FaultTypes[rng.IntN(len(FaultTypes))]
		}
	}
	return p
}

func pickSituation(rng *rand.Rand) string {
	switch r := rng.Float64(); {
	case r < 0.28:
		return SituationPlain
	case r < 0.38:
		return SituationNoisyNeighbour
	case r < 0.50:
		return SituationSharedDep
	case r < 0.60:
		return SituationMultiFault
	case r < 0.70:
		return SituationRescheduled
	case r < 0.85:
		return SituationMissingEdges
	default:
		return SituationLateDetection
	}
}

// alloc gives every entity its per-sample effect and output arrays.
func (w *simWorld) alloc() {
	n := w.n
	for _, nd := range w.nodes {
		nd.diskAdd, nd.netLoss = make([]float64, n), make([]float64, n)
	}
	for _, s := range w.svcs {
		s.latAdd, s.errAdd = make([]float64, n), make([]float64, n)
	}
	for _, p := range w.pods {
		w.allocPod(p)
	}
}

func (w *simWorld) allocPod(p *simPod) {
	n := w.n
	p.cpuAdd, p.memAdd, p.errAdd = make([]float64, n), make([]float64, n), make([]float64, n)
	p.latMult = make([]float64, n)
	p.down = make([]bool, n)
}

// inject sets up the situation's faults. It returns false when the drawn
// system cannot host the situation.
func (w *simWorld) inject(situation string) bool {
	w.situations = []string{situation}
	switch situation {
	case SituationNoisyNeighbour:
		return w.noisyNeighbour()
	case SituationSharedDep:
		return w.sharedDependency()
	case SituationRescheduled:
		return w.nodeFailure(w.fault, true, nil)
	case SituationMultiFault:
		if !w.randomFault(w.plan.faults[0], w.fault, false) {
			return false
		}
		second := w.fault + w.samples(w.uniform(-2, 4)*60)
		return w.randomFault(w.plan.faults[1], second, false)
	case SituationMissingEdges:
		if !w.randomFault(w.plan.faults[0], w.fault, true) {
			return false
		}
		w.hideRootCalls()
		return true
	case SituationLateDetection:
		return w.randomFault(w.plan.faults[0], w.fault, true)
	default:
		return w.randomFault(w.plan.faults[0], w.fault, false)
	}
}

// randomFault injects a fault of the given type at sample at. With
// reachEntry, the fault must sit behind an entry service and behind a
// caller, so that it can be seen from the front and hidden by missing edges.
func (w *simWorld) randomFault(kind string, at int, reachEntry bool) bool {
	for range 30 {
		var ok bool
		switch kind {
		case FaultCPUHog, FaultMemoryLeak:
			s := w.faultService(reachEntry, true)
			if s == nil || len(s.pods) == 0 {
				continue
			}
			p := pick(w, s.pods)
			if w.disjoint(p.id, s, p.node) {
				w.podFault(kind, at, p)
				ok = true
			}
		case FaultLatency, FaultErrors:
			s := w.faultService(reachEntry, false)
			if s != nil && w.disjoint(s.id, s, nil) {
				w.serviceFault(kind, at, s)
				ok = true
			}
		case FaultNodeFailure:
			ok = w.nodeFailure(at, false, nil)
		default:
			nd := w.faultNode(reachEntry)
			if nd != nil && w.disjoint(nd.id, nil, nd) {
				w.nodeFault(kind, at, nd)
				ok = true
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// disjoint reports whether a new fault at id, on service s or node nd, is
// independent of the faults already injected: not the same thing, not
// upstream or downstream of it, not on the same node.
func (w *simWorld) disjoint(id string, s *simSvc, nd *simNode) bool {
	for _, f := range w.faults {
		if f.strict == id {
			return false
		}
		for _, fs := range w.faultServices(f) {
			if s != nil && (upstream(s)[fs] || upstream(fs)[s]) {
				return false
			}
		}
		if nd != nil && f.node == nd {
			return false
		}
		if f.pod != nil && nd != nil && f.pod.node == nd {
			return false
		}
		if f.node != nil && s != nil {
			for _, p := range s.pods {
				if p.node == f.node {
					return false
				}
			}
		}
	}
	return true
}

func (w *simWorld) faultServices(f simFault) []*simSvc {
	switch {
	case f.svc != nil:
		return []*simSvc{f.svc}
	case f.pod != nil:
		return []*simSvc{f.pod.svc}
	}
	var out []*simSvc
	for _, p := range f.node.pods {
		if !slices.Contains(out, p.svc) {
			out = append(out, p.svc)
		}
	}
	return out
}

// faultService picks a service (not a store) to break.
func (w *simWorld) faultService(reachEntry, withPods bool) *simSvc {
	for range 50 {
		s := pick(w, w.svcs)
		if s.kind != "service" || (withPods && len(s.pods) == 0) {
			continue
		}
		if reachEntry && (s.layer == 0 || len(s.callers) == 0) {
			continue
		}
		return s
	}
	return nil
}

// faultNode picks a node hosting at least two pods.
func (w *simWorld) faultNode(reachEntry bool) *simNode {
	for range 50 {
		nd := pick(w, w.nodes)
		if len(nd.pods) < 2 {
			continue
		}
		if reachEntry {
			deep := false
			for _, p := range nd.pods {
				deep = deep || p.svc.layer > 0
			}
			if !deep {
				continue
			}
		}
		return nd
	}
	return nil
}

// boost makes faults stronger when only the entry services' SLOs are
// watched: a fault nobody notices makes no incident.
func (w *simWorld) boost() float64 {
	if w.lateOnly() {
		return 2
	}
	return 1
}

// ramp returns the share of a fault's full effect at sample t when it starts
// at start and takes rampUp samples to build.
func ramp(t, start, rampUp int) float64 {
	switch {
	case t < start:
		return 0
	case rampUp <= 0 || t >= start+rampUp:
		return 1
	}
	return float64(t-start+1) / float64(rampUp+1)
}

func (w *simWorld) podFault(kind string, at int, p *simPod) {
	f := simFault{kind: kind, start: at, pod: p, root: []string{p.id, p.svc.id}, strict: p.id}
	switch kind {
	case FaultCPUHog:
		if p.cpuLimit == 0 {
			p.cpuLimit = math.Ceil(w.baseCPU(p)*w.uniform(2, 4)*10) / 10
		}
		extra := p.cpuLimit * w.uniform(0.8, 3) * w.boost()
		up := w.rng.IntN(3)
		for t := range w.n {
			p.cpuAdd[t] += extra * ramp(t, at, up)
		}
	case FaultMemoryLeak:
		if p.memLimit == 0 {
			p.memLimit = p.memBase * w.uniform(1.5, 3)
		}
		// Reach the limit in 4 to 20 minutes, then be OOM-killed, restart
		// and leak again.
		perSample := (p.memLimit - p.memBase) / float64(w.samples(w.uniform(3, 12)*60))
		down := max(1, w.samples(w.uniform(10, 40)))
		leaked := 0.0
		for t := at; t < w.n; t++ {
			if p.down[t] {
				continue
			}
			leaked += perSample * w.uniform(0.6, 1.4)
			if p.memBase+leaked >= p.memLimit {
				p.restartAt = append(p.restartAt, t)
				for k := t; k < min(w.n, t+down); k++ {
					p.down[k] = true
				}
				leaked = 0
				continue
			}
			p.memAdd[t] = leaked
		}
	}
	w.faults = append(w.faults, f)
}

func (w *simWorld) serviceFault(kind string, at int, s *simSvc) {
	f := simFault{kind: kind, start: at, svc: s, root: []string{s.id}, strict: s.id}
	for _, p := range s.pods {
		f.root = append(f.root, p.id)
	}
	switch kind {
	case FaultLatency:
		add := math.Max(s.p99*w.uniform(1, 6), w.uniform(0.05, 1.5)) * w.boost()
		for t := at; t < w.n; t++ {
			s.latAdd[t] += add
		}
	case FaultErrors:
		add := min(0.9, w.uniform(0.05, 0.6)*w.boost())
		for t := at; t < w.n; t++ {
			s.errAdd[t] += add
		}
	}
	w.faults = append(w.faults, f)
}

func (w *simWorld) nodeFault(kind string, at int, nd *simNode) {
	f := simFault{kind: kind, start: at, node: nd, root: []string{nd.id}, strict: nd.id}
	up := w.rng.IntN(4)
	switch kind {
	case FaultDiskSaturation:
		level := w.uniform(0.93, 1.0) - nd.diskBase
		for t := range w.n {
			nd.diskAdd[t] += level * ramp(t, at, up)
		}
	case FaultNetworkLoss:
		loss := w.uniform(0.08, 0.4)
		for t := range w.n {
			nd.netLoss[t] += loss * ramp(t, at, up)
		}
	}
	w.faults = append(w.faults, f)
}

// nodeFailure stops a node at sample at. With reschedule, its pods come
// back on other nodes of the cluster a little later, under new names, and
// most captures no longer list the old ones.
func (w *simWorld) nodeFailure(at int, reschedule bool, nd *simNode) bool {
	for range 50 {
		if nd != nil {
			break
		}
		c := pick(w, w.nodes)
		if len(c.pods) >= 2 && w.disjoint(c.id, nil, c) {
			others := 0
			for _, o := range w.nodes {
				if o.cluster == c.cluster && o != c {
					others++
				}
			}
			if !reschedule || others > 0 {
				nd = c
			}
		}
	}
	if nd == nil {
		return false
	}
	nd.downAt = at
	for _, p := range nd.pods {
		p.died = at
	}
	if reschedule {
		var others []*simNode
		for _, o := range w.nodes {
			if o.cluster == nd.cluster && o != nd {
				others = append(others, o)
			}
		}
		old := slices.Clone(nd.pods)
		dropOld := w.chance(0.6)
		for _, p := range old {
			if p.svc.kind != "service" && w.chance(0.5) {
				continue // a stateful pod waiting for its volume
			}
			np := w.newPod(p.svc, others)
			w.allocPod(np)
			np.born = at + w.samples(w.uniform(40, 360))
			np.cpuPerReq, np.baseRate, np.cpuLimit, np.memBase, np.memLimit = p.cpuPerReq, p.baseRate, p.cpuLimit, p.memBase, p.memLimit
			p.svc.pods = append(p.svc.pods, np)
			if dropOld {
				w.dropPods[p] = true
			}
		}
	}
	w.faults = append(w.faults, simFault{kind: FaultNodeFailure, start: at, node: nd, root: []string{nd.id}, strict: nd.id})
	return true
}

// noisyNeighbour lets a pod without a CPU limit take its whole node: its
// neighbours are throttled and slow while its own service looks healthy.
func (w *simWorld) noisyNeighbour() bool {
	for range 50 {
		nd := pick(w, w.nodes)
		if len(nd.pods) < 3 {
			continue
		}
		p := pick(w, nd.pods)
		if p.svc.kind != "service" {
			continue
		}
		p.cpuLimit = 0
		p.noisy = true
		free := nd.cpuCap - nd.sysCPU
		for _, o := range nd.pods {
			free -= w.baseCPU(o)
		}
		extra := math.Max(free, 0) + nd.cpuCap*w.uniform(0.15, 0.6)
		up := w.rng.IntN(4)
		for t := range w.n {
			p.cpuAdd[t] += extra * ramp(t, w.fault, up)
		}
		w.faults = append(w.faults, simFault{kind: FaultCPUHog, start: w.fault, pod: p, root: []string{p.id, p.svc.id}, strict: p.id})
		return true
	}
	return false
}

// sharedDependency breaks a database or queue that several services use.
func (w *simWorld) sharedDependency() bool {
	var stores []*simSvc
	for _, s := range w.svcs {
		if s.kind != "service" && len(s.callers) >= 2 {
			stores = append(stores, s)
		}
	}
	if len(stores) == 0 {
		return false
	}
	s := pick(w, stores)
	switch r := w.rng.Float64(); {
	case r < 0.25 && len(s.pods) > 0:
		w.podFault(FaultCPUHog, w.fault, pick(w, s.pods))
	case r < 0.65:
		w.serviceFault(FaultLatency, w.fault, s)
	default:
		w.serviceFault(FaultErrors, w.fault, s)
	}
	return true
}

// hideRootCalls drops from the topology most calls into the faulty
// services, as when traces miss a client library.
func (w *simWorld) hideRootCalls() {
	for _, f := range w.faults {
		for _, s := range w.faultServices(f) {
			for _, c := range s.callers {
				if w.chance(0.75) {
					w.hideCalls[c] = true
				}
			}
		}
	}
}

// baseCPU is a pod's CPU use before the incident.
func (w *simWorld) baseCPU(p *simPod) float64 {
	return p.cpuIdle + p.cpuPerReq*p.baseRate
}

// redHerrings adds anomalies unrelated to the incident, some of them
// during it.
func (w *simWorld) redHerrings() {
	k := 1 + min(4, len(w.svcs)/60) + w.rng.IntN(3)
	isRoot := map[string]bool{}
	for _, f := range w.faults {
		for _, r := range f.root {
			isRoot[r] = true
		}
		if f.node != nil {
			for _, p := range f.node.pods {
				isRoot[p.id] = true
			}
		}
	}
	for range k {
		at := w.fault + w.samples(w.uniform(-20, 20)*60)
		at = max(1, min(w.n-2, at))
		dur := w.samples(w.uniform(1, 10) * 60)
		switch w.rng.IntN(7) {
		case 0: // a batch job's CPU burst
			p := pick(w, w.pods)
			if isRoot[p.id] || p.noisy {
				continue
			}
			extra := w.uniform(0.3, 1.2)
			if p.cpuLimit > 0 {
				extra = p.cpuLimit * w.uniform(0.5, 1.5)
			}
			for t := at; t < min(w.n, at+dur); t++ {
				p.cpuAdd[t] += extra
			}
			w.herrings = append(w.herrings, "cpu burst "+p.id)
		case 1: // an unrelated restart
			p := pick(w, w.pods)
			if isRoot[p.id] {
				continue
			}
			p.restartAt = append(p.restartAt, at)
			p.down[at] = true
			w.herrings = append(w.herrings, "restart "+p.id)
		case 2: // a slow dependency for a moment
			s := pick(w, w.svcs)
			if isRoot[s.id] {
				continue
			}
			add := s.p99 * w.uniform(1, 4)
			for t := at; t < min(w.n, at+w.samples(w.uniform(1, 4)*60)); t++ {
				s.latAdd[t] += add
			}
			w.herrings = append(w.herrings, "latency blip "+s.id)
		case 3: // a backup saturating a disk for a while
			nd := pick(w, w.nodes)
			if isRoot[nd.id] {
				continue
			}
			level := w.uniform(0.2, 0.45)
			for t := at; t < min(w.n, at+dur); t++ {
				nd.diskAdd[t] += level
			}
			w.herrings = append(w.herrings, "disk spike "+nd.id)
		case 4: // a deploy that uses more memory from now on
			p := pick(w, w.pods)
			if isRoot[p.id] {
				continue
			}
			step := p.memBase * w.uniform(0.2, 0.5)
			for t := at; t < w.n; t++ {
				p.memAdd[t] += step
			}
			w.herrings = append(w.herrings, "memory step "+p.id)
		case 5: // more traffic on one entry, from a campaign
			s := pick(w, w.entries)
			mult := w.uniform(0.15, 0.4)
			tr := w.traffic[s]
			if tr == nil {
				tr = make([]float64, w.n)
				w.traffic[s] = tr
			}
			for t := at; t < w.n; t++ {
				tr[t] += mult
			}
			w.herrings = append(w.herrings, "traffic "+s.id)
		case 6: // a pod running hot against its limit all along
			p := pick(w, w.pods)
			if isRoot[p.id] || p.cpuLimit == 0 {
				continue
			}
			extra := math.Max(0, p.cpuLimit*w.uniform(0.9, 1.2)-w.baseCPU(p))
			for t := range w.n {
				p.cpuAdd[t] += extra
			}
			w.herrings = append(w.herrings, "chronic throttling "+p.id)
		}
	}
}

// truth lists the accepted answers of every fault.
func (w *simWorld) truth() *Truth {
	t := &Truth{Fault: w.faults[0].kind, Situations: w.situations}
	for _, f := range w.faults {
		for _, r := range f.root {
			if !slices.Contains(t.Root, r) {
				t.Root = append(t.Root, r)
			}
		}
		t.Strict = append(t.Strict, f.strict)
		if len(w.faults) > 1 {
			t.Faults = append(t.Faults, f.kind)
		}
	}
	return t
}
