package rca

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/panorama-obs/panorama/topology"
)

// Fault types the simulator injects, as written in truth.fault.
const (
	FaultCPUHog         = "cpu_hog"
	FaultMemoryLeak     = "memory_leak"
	FaultLatency        = "latency_injection"
	FaultErrors         = "error_injection"
	FaultNodeFailure    = "node_failure"
	FaultDiskSaturation = "disk_saturation"
	FaultNetworkLoss    = "network_loss"
)

// Situations the simulator sets up, as written in truth.situations.
const (
	SituationPlain          = "plain"
	SituationNoisyNeighbour = "noisy_neighbour"
	SituationSharedDep      = "shared_dependency"
	SituationMultiFault     = "multi_fault"
	SituationRescheduled    = "rescheduled"
	SituationMissingEdges   = "missing_edges"
	SituationLateDetection  = "late_detection"
)

// FaultTypes lists every fault type the simulator injects.
var FaultTypes = []string{FaultCPUHog, FaultMemoryLeak, FaultLatency, FaultErrors, FaultNodeFailure, FaultDiskSaturation, FaultNetworkLoss}

// Simulate builds case index of the family seeded by seed: a random
// Kubernetes topology (one to four clusters, a handful to 300+ services in a
// layered call graph, databases and queues, one to three pods per service on
// shared nodes), one or two injected faults in one of the situations that
// fool simple rankers, the noisy, seasonal, gappy metric series they produce,
// the alerts that rules over those series fire, and the truth. The same
// (seed, index) always gives the same case.
//
// The simulator knows nothing of the ranker, and the ranker nothing of it:
// they meet only in the case format.
func Simulate(seed uint64, index int) (*Case, *Truth) {
	return simulate(seed, index, 0)
}

// simulate is Simulate with the number of services fixed (0 draws it).
func simulate(seed uint64, index, services int) (*Case, *Truth) {
	plan := newPlan(rand.New(rand.NewPCG(seed, uint64(index))))
	plan.services = services
	for attempt := uint64(1); ; attempt++ {
		rng := rand.New(rand.NewPCG(seed+attempt*0x9e3779b97f4a7c15, uint64(index)))
		w := newWorld(rng)
		w.plan = plan
		if attempt > 100 {
			// Some systems cannot host some situations; fall back to a
			// plain fault rather than loop.
			w.plan.situation = SituationPlain
		}
		// An incident nobody noticed in time makes no case: draw again.
		if c, t, ok := w.run(fmt.Sprintf("sim-%d-%d", seed, index)); ok {
			return c, t
		}
	}
}

// simWorld is one simulated system and its incident.
type simWorld struct {
	rng   *rand.Rand
	plan  simPlan
	step  float64 // seconds between samples
	n     int     // samples simulated
	t0    float64 // unix time of sample 0
	fault int     // sample at which the (first) fault starts

	clusters []string
	nodes    []*simNode
	svcs     []*simSvc // services, databases and queues
	pods     []*simPod
	entries  []*simSvc

	season simSeason

	faults     []simFault
	situations []string
	hideCalls  map[*simCall]bool
	dropPods   map[*simPod]bool
	herrings   []string
	ruleset    simRules
	traffic    map[*simSvc][]float64 // extra entry traffic, as a share of the usual

	noiseMul            float64
	maxSmooth, maxDelay int
	seriesDrop          float64
}

type simSeason struct {
	amp, period, phase float64
}

type simNode struct {
	id, cluster, name, ip string
	cpuCap, memCap        float64 // cores, bytes
	sysCPU, sysMem        float64
	diskBase, netBase     float64
	pods                  []*simPod
	exporter, ksm         bool // node-exporter and kube-state-metrics series present

	downAt  int // sample at which it fails; -1 when it does not
	diskAdd []float64
	netLoss []float64

	cpu, mem, disk, netErr, ready []float64
}

type simSvc struct {
	id, cluster, ns, name string
	kind                  string // service, database, queue
	managed               bool   // a database outside the cluster: no pods
	layer                 int
	calls, callers        []*simCall
	pods                  []*simPod
	p50, p99, errBase     float64
	timeout               float64
	metrics               bool
	ioHeavy               bool
	smooth                int
	noise                 float64
	entryRate             float64   // requests per second, entry services only
	drift                 []float64 // slow drift of entry traffic

	latAdd, errAdd []float64

	rate, lat50, lat99, errR []float64
}

type simCall struct {
	from, to *simSvc
	mult     float64 // callee requests per caller request
	weight   float64 // share of the callee's latency the caller waits for
	errProp  float64 // share of the callee's errors the caller passes on
	delay    int
	kind     topology.EdgeKind
}

type simPod struct {
	id, name           string
	svc                *simSvc
	node               *simNode
	born, died         int     // alive on [born, died)
	cpuIdle, cpuPerReq float64 // cpuPerReq holds the target use until calibrate
	baseRate           float64 // requests per second before the incident
	cpuLimit           float64 // 0: no limit
	memBase, memLimit  float64
	ioSens             float64
	restarts0          float64
	noisy              bool // takes what it wants from its node
	lbDelay            int  // samples a dead pod still receives requests
	gc                 float64
	noise              float64

	cpuAdd, memAdd, latMult, errAdd []float64
	down                            []bool // restarting after an OOM kill
	restartAt                       []int

	cpu, thr, mem, restarts, netErr []float64
}

func (p *simPod) alive(t int) bool { return t >= p.born && t < p.died && !p.down[t] }

func (p *simPod) routed(t int) bool { return t >= p.born && t < p.died+p.lbDelay }

type simFault struct {
	kind   string
	start  int
	pod    *simPod
	svc    *simSvc
	node   *simNode
	root   []string
	strict string
}

var (
	simDomains = []string{"shop", "cart", "checkout", "payment", "shipping", "catalog", "search", "recommend", "user", "auth",
		"inventory", "pricing", "order", "notify", "email", "review", "ads", "currency", "session", "profile", "billing",
		"ledger", "fraud", "media", "geo", "loyalty", "coupon", "tax", "report", "audit"}
	simRoles    = []string{"api", "svc", "worker", "gateway", "reader", "writer", "sync", "cache", "engine", "adapter"}
	simNS       = []string{"shop", "payments", "identity", "data", "search", "platform", "media", "growth"}
	simEntries  = []string{"frontend", "api-gateway", "mobile-bff", "web", "partner-api"}
	simDBs      = []string{"postgres", "mysql", "redis", "mongo", "cassandra", "elasticsearch"}
	simQueues   = []string{"kafka", "rabbitmq", "nats"}
	simClusters = []string{"east", "west", "central", "eu", "ap"}
)

func newWorld(rng *rand.Rand) *simWorld {
	w := &simWorld{rng: rng, hideCalls: map[*simCall]bool{}, dropPods: map[*simPod]bool{}, traffic: map[*simSvc][]float64{}}
	switch r := rng.Float64(); {
	case r < 0.75:
		w.step = 15
	case r < 0.9:
		w.step = 30
	default:
		w.step = 10
	}
	// How this system's monitoring looks: how noisy, how smoothed by rate
	// windows, how late callers see their callees, how much is missing.
	w.noiseMul = math.Exp(w.uniform(math.Log(0.5), math.Log(2.5)))
	w.maxSmooth = 1 + rng.IntN(6)
	w.maxDelay = rng.IntN(max(1, int(45/w.step)) + 1)
	w.seriesDrop = w.uniform(0, 0.08)
	w.t0 = 1763700000 + float64(rng.IntN(30*86400))
	w.t0 -= math.Mod(w.t0, w.step)
	return w
}

func (w *simWorld) uniform(lo, hi float64) float64 { return lo + (hi-lo)*w.rng.Float64() }

func (w *simWorld) chance(p float64) bool { return w.rng.Float64() < p }

func (w *simWorld) samples(seconds float64) int { return int(math.Round(seconds / w.step)) }

func pick[T any](w *simWorld, list []T) T { return list[w.rng.IntN(len(list))] }

// build makes the topology: clusters, nodes, services in layers, calls,
// databases and queues, pods placed on nodes.
func (w *simWorld) build() {
	rng := w.rng
	var nSvc int
	switch r := rng.Float64(); {
	case w.plan.services > 0:
		nSvc = w.plan.services
	case r < 0.15:
		nSvc = 3 + rng.IntN(6)
	case r < 0.45:
		nSvc = 8 + rng.IntN(23)
	case r < 0.8:
		nSvc = 30 + rng.IntN(71)
	default:
		nSvc = 100 + rng.IntN(241)
	}
	nClusters := 1
	switch {
	case nSvc >= 100:
		nClusters = 2 + rng.IntN(3)
	case nSvc >= 30:
		nClusters = 1 + rng.IntN(3)
	case nSvc >= 8:
		nClusters = 1 + rng.IntN(2)
	}
	perm := rng.Perm(len(simClusters))
	for i := range nClusters {
		w.clusters = append(w.clusters, simClusters[perm[i]])
	}
	layers := 2 + min(4, nSvc/12)
	if nSvc <= 5 {
		layers = 2
	}

	used := map[string]bool{}
	name := func(base []string) string {
		for {
			var s string
			if len(used) < len(base)*3 || rng.IntN(2) == 0 {
				s = pick(w, base) + "-" + pick(w, simRoles)
			} else {
				s = pick(w, base) + "-" + pick(w, simRoles) + fmt.Sprint(rng.IntN(9)+2)
			}
			if !used[s] {
				used[s] = true
				return s
			}
		}
	}
	nsOf := map[string][]string{}
	for _, c := range w.clusters {
		k := 1 + min(len(simNS)-1, nSvc/nClusters/12)
		p := rng.Perm(len(simNS))
		for i := range k {
			nsOf[c] = append(nsOf[c], simNS[p[i]])
		}
	}

	byLayer := make([][]*simSvc, layers)
	add := func(kind, cluster, ns, nm string, layer int) *simSvc {
		s := &simSvc{cluster: cluster, ns: ns, name: nm, kind: kind, layer: layer, metrics: true}
		s.id = strings.Join([]string{kind, cluster, ns, nm}, "/")
		s.smooth = 1 + rng.IntN(w.maxSmooth)
		s.noise = w.uniform(0.03, 0.12) * w.noiseMul
		switch kind {
		case "service":
			s.p50 = math.Exp(w.uniform(math.Log(0.004), math.Log(0.08)))
			s.p99 = s.p50 * w.uniform(2.5, 6)
			s.metrics = !w.chance(0.04)
		default:
			s.p50 = math.Exp(w.uniform(math.Log(0.001), math.Log(0.02)))
			s.p99 = s.p50 * w.uniform(3, 8)
			s.ioHeavy = true
		}
		s.errBase = 0
		if w.chance(0.6) {
			s.errBase = math.Exp(w.uniform(math.Log(0.0002), math.Log(0.01)))
		}
		s.timeout = w.uniform(1, 5)
		w.svcs = append(w.svcs, s)
		return s
	}
	// Entry services, then the rest spread over the deeper layers.
	entriesPer := 1 + rng.IntN(2)
	if nSvc >= 60 {
		entriesPer = 2 + rng.IntN(2)
	}
	usedEntry := map[string]bool{}
	for _, c := range w.clusters {
		for range entriesPer {
			nm := pick(w, simEntries)
			for usedEntry[c+nm] {
				nm = pick(w, simEntries) + fmt.Sprint(rng.IntN(9)+2)
			}
			usedEntry[c+nm] = true
			s := add("service", c, nsOf[c][0], nm, 0)
			byLayer[0] = append(byLayer[0], s)
			w.entries = append(w.entries, s)
		}
	}
	for len(w.svcs) < max(nSvc, len(w.entries)+layers-1) {
		c := pick(w, w.clusters)
		l := 1 + rng.IntN(layers-1)
		s := add("service", c, pick(w, nsOf[c]), name(simDomains), l)
		byLayer[l] = append(byLayer[l], s)
	}
	for l := 1; l < layers; l++ {
		if len(byLayer[l]) == 0 {
			c := pick(w, w.clusters)
			s := add("service", c, pick(w, nsOf[c]), name(simDomains), l)
			byLayer[l] = append(byLayer[l], s)
		}
	}

	call := func(from, to *simSvc) {
		for _, c := range from.calls {
			if c.to == to {
				return
			}
		}
		kind := topology.EdgeCalls
		if to.kind != "service" && w.chance(0.4) {
			kind = topology.EdgeDependsOn
		}
		c := &simCall{from: from, to: to, mult: w.uniform(0.3, 1.8), weight: w.uniform(0.3, 1), errProp: w.uniform(0.3, 0.95), kind: kind}
		c.delay = rng.IntN(w.maxDelay + 1)
		from.calls = append(from.calls, c)
		to.callers = append(to.callers, c)
	}
	sameCluster := func(list []*simSvc, cluster string) []*simSvc {
		var out []*simSvc
		for _, s := range list {
			if s.cluster == cluster {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return list
		}
		return out
	}
	for l := 0; l < layers-1; l++ {
		for _, s := range byLayer[l] {
			k := 1 + rng.IntN(3)
			if l == 0 {
				k = 2 + rng.IntN(3)
			}
			for range k {
				tl := l + 1
				if l+2 < layers && w.chance(0.35) {
					tl = l + 2 + rng.IntN(layers-l-2)
				}
				cands := byLayer[tl]
				if w.chance(0.9) {
					cands = sameCluster(cands, s.cluster)
				}
				call(s, pick(w, cands))
			}
		}
	}
	for l := 1; l < layers; l++ {
		for _, s := range byLayer[l] {
			if len(s.callers) == 0 {
				from := pick(w, sameCluster(byLayer[rng.IntN(l)], s.cluster))
				call(from, s)
			}
		}
	}

	// Databases and queues, each used by one to six services.
	nDB := max(1, nSvc/8)
	nQ := nSvc / 20
	if nSvc >= 8 && nQ == 0 && w.chance(0.5) {
		nQ = 1
	}
	var stores []*simSvc
	for i := range nDB + nQ {
		c := pick(w, w.clusters)
		kind, base := "database", simDBs
		if i >= nDB {
			kind, base = "queue", simQueues
		}
		s := add(kind, c, "data", pick(w, simDomains)+"-"+pick(w, base), layers)
		for used[s.name] {
			s.name = pick(w, simDomains) + "-" + pick(w, base) + fmt.Sprint(rng.IntN(9)+2)
		}
		used[s.name] = true
		s.id = strings.Join([]string{kind, c, "data", s.name}, "/")
		if kind == "database" && w.chance(0.3) {
			s.managed = true
			s.id = strings.Join([]string{kind, c, s.name}, "/")
			s.metrics = w.chance(0.5)
		}
		stores = append(stores, s)
		users := 1 + rng.IntN(min(6, max(1, nSvc/3)))
		var cands []*simSvc
		for l := 1; l < layers; l++ {
			cands = append(cands, sameCluster(byLayer[l], c)...)
		}
		if len(cands) == 0 {
			cands = byLayer[0]
		}
		for range users {
			call(pick(w, cands), s)
		}
	}

	// Nodes and pods.
	for _, cl := range w.clusters {
		var svcs []*simSvc
		for _, s := range w.svcs {
			if s.cluster == cl && !s.managed {
				svcs = append(svcs, s)
			}
		}
		nPods := 0
		podsOf := map[*simSvc]int{}
		for _, s := range svcs {
			k := 1 + rng.IntN(3)
			if s.kind != "service" {
				k = 1 + rng.IntN(2)
			}
			podsOf[s] = k
			nPods += k
		}
		nNodes := max(2, int(math.Ceil(float64(nPods)/w.uniform(4, 10))))
		var nodes []*simNode
		taken := map[string]bool{}
		for range nNodes {
			ip := fmt.Sprintf("10-%d-%d-%d", rng.IntN(4), rng.IntN(256), 2+rng.IntN(250))
			// Two nodes of a cluster never share an address (nor an ID).
			for taken[ip] {
				ip = fmt.Sprintf("10-%d-%d-%d", rng.IntN(4), rng.IntN(256), 2+rng.IntN(250))
			}
			taken[ip] = true
			nd := &simNode{cluster: cl, name: "ip-" + ip, ip: strings.ReplaceAll(ip, "-", "."), downAt: -1}
			nd.id = topology.NodeID(cl, nd.name)
			nd.cpuCap = pick(w, []float64{4, 8, 8, 16, 16, 32})
			nd.memCap = nd.cpuCap * pick(w, []float64{2, 4, 4, 8}) * (1 << 30)
			nd.sysCPU = nd.cpuCap * w.uniform(0.03, 0.1)
			nd.sysMem = nd.memCap * w.uniform(0.08, 0.2)
			nd.diskBase = w.uniform(0.02, 0.25)
			nd.netBase = w.uniform(0, 0.3)
			nd.exporter = !w.chance(0.08)
			nd.ksm = !w.chance(0.1)
			nodes = append(nodes, nd)
			w.nodes = append(w.nodes, nd)
		}
		for _, s := range svcs {
			for range podsOf[s] {
				p := w.newPod(s, nodes)
				s.pods = append(s.pods, p)
			}
		}
	}
}

// newPod makes a pod of s on the least loaded of a few random nodes.
func (w *simWorld) newPod(s *simSvc, nodes []*simNode) *simPod {
	rng := w.rng
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	rnd := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		return string(b)
	}
	p := &simPod{svc: s, died: math.MaxInt32}
	if s.kind == "service" {
		p.name = s.name + "-" + rnd(9) + "-" + rnd(5)
	} else {
		p.name = fmt.Sprintf("%s-%d", s.name, len(s.pods))
	}
	p.id = topology.PodID(s.cluster, s.ns, p.name)
	var best *simNode
	for range 3 {
		n := pick(w, nodes)
		if best == nil || len(n.pods)*int(best.cpuCap) < len(best.pods)*int(n.cpuCap) {
			best = n
		}
	}
	p.node = best
	best.pods = append(best.pods, p)
	p.cpuIdle = w.uniform(0.01, 0.08)
	usage := math.Exp(w.uniform(math.Log(0.05), math.Log(1.2)))
	p.cpuPerReq = usage // scaled by the request rate once rates are known
	if w.chance(0.75) {
		p.cpuLimit = math.Ceil(usage*w.uniform(2, 4)*10) / 10
	}
	p.memBase = math.Exp(w.uniform(math.Log(80e6), math.Log(2e9)))
	if s.kind != "service" {
		p.memBase *= 3
	}
	p.memLimit = 0
	if w.chance(0.85) {
		p.memLimit = p.memBase * w.uniform(1.5, 3)
	}
	p.ioSens = w.uniform(0.05, 0.5)
	if s.ioHeavy {
		p.ioSens = w.uniform(0.8, 1.5)
	}
	if w.chance(0.2) {
		p.restarts0 = float64(1 + rng.IntN(6))
	}
	p.lbDelay = max(1, w.samples(w.uniform(20, 90)))
	p.gc = w.uniform(0, 0.08)
	p.noise = w.uniform(0.02, 0.08) * w.noiseMul
	w.pods = append(w.pods, p)
	return p
}

// topologyGraph is the graph a capture would see: hidden calls and dropped
// pods left out.
func (w *simWorld) topologyGraph() *topology.Graph {
	g := &topology.Graph{}
	for _, c := range w.clusters {
		g.Nodes = append(g.Nodes, topology.Node{ID: topology.ClusterID(c), Kind: topology.KindCluster})
	}
	for _, n := range w.nodes {
		g.Nodes = append(g.Nodes, topology.Node{ID: n.id, Kind: topology.KindNode, Cluster: n.cluster, Labels: map[string]string{"node": n.name}})
		g.Edges = append(g.Edges, topology.Edge{From: n.id, To: topology.ClusterID(n.cluster), Kind: topology.EdgeMemberOf})
	}
	for _, s := range w.svcs {
		labels := map[string]string{"namespace": s.ns, "service": s.name}
		if s.managed {
			labels = map[string]string{s.kind: s.name}
		}
		g.Nodes = append(g.Nodes, topology.Node{ID: s.id, Kind: topology.NodeKind(s.kind), Cluster: s.cluster, Labels: labels})
		for _, c := range s.calls {
			if !w.hideCalls[c] {
				g.Edges = append(g.Edges, topology.Edge{From: s.id, To: c.to.id, Kind: c.kind})
			}
		}
	}
	for _, p := range w.pods {
		if w.dropPods[p] {
			continue
		}
		s := p.svc
		g.Nodes = append(g.Nodes, topology.Node{ID: p.id, Kind: topology.KindPod, Cluster: s.cluster,
			Labels: map[string]string{"namespace": s.ns, "pod": p.name, "node": p.node.name}})
		g.Edges = append(g.Edges,
			topology.Edge{From: s.id, To: p.id, Kind: topology.EdgeSelects},
			topology.Edge{From: p.id, To: p.node.id, Kind: topology.EdgeRunsOn})
	}
	// Shuffle so that no ranker can lean on the order.
	w.rng.Shuffle(len(g.Nodes), func(i, j int) { g.Nodes[i], g.Nodes[j] = g.Nodes[j], g.Nodes[i] })
	w.rng.Shuffle(len(g.Edges), func(i, j int) { g.Edges[i], g.Edges[j] = g.Edges[j], g.Edges[i] })
	return g
}

// upstream returns every service whose requests reach s through calls.
func upstream(s *simSvc) map[*simSvc]bool {
	seen := map[*simSvc]bool{s: true}
	queue := []*simSvc{s}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		for _, c := range x.callers {
			if !seen[c.from] {
				seen[c.from] = true
				queue = append(queue, c.from)
			}
		}
	}
	return seen
}

func sortedSvcs(m map[*simSvc]bool) []*simSvc {
	out := make([]*simSvc, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *simSvc) int { return strings.Compare(a.id, b.id) })
	return out
}
