package rca

import (
	"math"
	"slices"
	"strings"

	"github.com/panorama-obs/panorama/topology"
)

// relation says which roles of which nodes can cause an item, and how much
// to trust the link.
type relation struct {
	node   int
	roles  []role
	weight float64
	usage  bool // the cause must be consumption (CPU or memory)
	// fresh, when set, makes the link hold only for causes that started
	// before this time: pods recreated elsewhere after a node died.
	fresh float64
}

// The roles a cause may show, by kind of relation.
var (
	anyTrouble  = []role{rolePerf, roleRes, roleSat, roleAvail, roleStop, roleGen}
	hostTrouble = []role{roleRes, roleAvail, roleStop, roleGen, roleSat}
	down        = []role{roleAvail, roleStop}
)

// relations lists what can cause item it.
func (a *analysis) relations(it item) []relation {
	gr := a.gr
	x := it.node
	var out []relation
	add := func(node int, w float64, roles ...role) {
		out = append(out, relation{node: node, roles: roles, weight: w})
	}
	switch it.role {
	case rolePerf, roleGen:
		for _, y := range gr.callees[x] {
			add(y, 1, anyTrouble...)
		}
		pods := gr.members[x]
		onHost := map[int]int{}
		for _, p := range pods {
			add(p, 1, anyTrouble...)
			if h := gr.host[p]; h >= 0 {
				onHost[h]++
			}
		}
		for _, h := range sortedInts(onHost) {
			add(h, min(1, 0.5+float64(onHost[h])/float64(len(pods))), hostTrouble...)
		}
		if h := gr.host[x]; h >= 0 {
			add(h, 1, hostTrouble...)
		}
		if it.role == rolePerf {
			out = append(out, a.rescheduled(x, pods)...)
		}
	case roleLoad:
		for _, y := range gr.callers[x] {
			add(y, 0.8, roleLoad, rolePerf, roleAvail, roleStop)
		}
		for _, s := range gr.groups[x] {
			add(s, 1, roleLoad)
			for _, sib := range gr.members[s] {
				if sib != x {
					add(sib, 0.8, down...)
				}
			}
		}
	case roleRes, roleSat:
		if gr.kind[x] == string(topology.KindNode) {
			// A node's load is its pods' consumption, and that of pods
			// moved onto it.
			for _, p := range gr.hosted[x] {
				out = append(out, relation{node: p, roles: []role{roleRes}, weight: 1, usage: it.usage})
			}
			out = append(out, a.rescheduled(x, gr.hosted[x])...)
			break
		}
		for _, s := range gr.groups[x] {
			add(s, 1, roleLoad)
			for _, sib := range gr.members[s] {
				if sib != x {
					add(sib, 0.8, down...)
				}
			}
		}
		if it.role == roleSat || !it.usage {
			if h := gr.host[x]; h >= 0 {
				add(h, 1, hostTrouble...)
			}
		}
	case roleAvail, roleStop:
		if h := gr.host[x]; h >= 0 {
			add(h, 1, roleAvail, roleStop, roleRes, roleGen)
		}
		for _, y := range gr.callees[x] {
			add(y, 0.6, anyTrouble...)
		}
	}
	return out
}

// rescheduled links the trouble of x, which has the given pods, to the
// Kubernetes nodes of its cluster that went down before any of those pods
// appeared: pods recreated during an incident point at the node their
// predecessors died with.
func (a *analysis) rescheduled(x int, pods []int) []relation {
	gr := a.gr
	first := math.Inf(1)
	for _, p := range pods {
		for _, k := range a.byNode[p] {
			if e := a.ev[k]; e.fresh {
				first = min(first, a.at(e.freshAt))
			}
		}
	}
	if math.IsInf(first, 1) {
		return nil
	}
	var out []relation
	for n := range gr.ids {
		if n != x && gr.kind[n] == string(topology.KindNode) && gr.ident[n]["cluster"] == gr.ident[x]["cluster"] {
			out = append(out, relation{node: n, roles: down, weight: 0.8, fresh: first})
		}
	}
	return out
}

// explain finds the causes of every item and the share of its evidence they
// take.
func (a *analysis) explain() {
	a.causes = make([][]cause, len(a.items))
	a.explained = make([]float64, len(a.items))
	for v, it := range a.items {
		if it.a <= 0 {
			continue
		}
		tol := a.tolerance()
		if it.best < 0 && it.why != "" {
			// An inferred item is dated by the earliest of the troubles
			// it stands for, which noise moves a little either way: a
			// cause may have started a little after that estimate.
			tol *= 2
		}
		var cs []cause
		for _, rel := range a.relations(it) {
			best, bestS := -1, 0.0
			for _, r := range rel.roles {
				u, ok := a.itemAt[[2]int{rel.node, int(r)}]
				if !ok || u == v {
					continue
				}
				cu := a.items[u]
				ca, con := cu.a, cu.onset
				if rel.usage {
					// A node's CPU is explained by its pods' CPU, not
					// their memory.
					if !cu.usage {
						continue
					}
					if sa, so, ok := a.sameResource(rel.node, it); ok {
						ca, con = sa, so
					}
				}
				if con > it.onset+tol || (rel.fresh != 0 && con > rel.fresh+tol) || ca <= 0 {
					continue
				}
				s := rel.weight * min(1, ca/it.a) * a.saturation(u, it.node)
				if cu.role == rolePerf && it.role == rolePerf {
					// Latency and errors add up along calls: a callee whose
					// own rose at least as much explains its caller's,
					// however noisy either is.
					if share, ok := a.riseShare(cu.node, it.node); ok {
						s = max(s, rel.weight*share)
					}
				}
				if cu.role == roleLoad && it.usage {
					// Traffic explains as much more CPU as it brings; the
					// memory a process holds does not follow its traffic.
					s = 0
					if it.best >= 0 && resource(a.ev[it.best].name) != "memory" {
						s = rel.weight * loadShare(a.ratio(u), a.ratio(v))
					}
				}
				if s > bestS {
					best, bestS = u, s
				}
			}
			if best >= 0 {
				cs = append(cs, cause{item: best, strength: bestS})
			}
		}
		keep := 1.0
		for _, c := range cs {
			keep *= 1 - c.strength
		}
		a.causes[v] = cs
		a.explained[v] = min(0.95, 1-keep)
	}
}

// sameResource returns the strength and onset of node's strongest abnormal
// consumption of the resource item it measures, and whether the resource is
// known on both sides (false leaves the item's own strength in force).
func (a *analysis) sameResource(node int, it item) (float64, float64, bool) {
	if it.best < 0 {
		return 0, 0, false
	}
	want := resource(a.ev[it.best].name)
	if want == "" {
		return 0, 0, false
	}
	best, onset, known := 0.0, math.Inf(1), false
	for _, k := range a.byNode[node] {
		e := a.ev[k]
		if !e.kind.usage || resource(e.name) != want {
			continue
		}
		known = true
		if s := strength(e.z); s > best {
			best, onset = s, a.at(e.onset)
		}
	}
	if !known {
		return 0, 0, false
	}
	return best, onset, true
}

// resource names what a consumption metric measures: "cpu", "memory", or
// "" when its name does not say.
func resource(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "cpu"):
		return "cpu"
	case strings.Contains(n, "mem") || strings.Contains(n, "heap") || strings.Contains(n, "working_set") || strings.Contains(n, "rss"):
		return "memory"
	}
	return ""
}

// saturation scales what a utilization (a share of a capacity) can explain
// elsewhere by how close to full it got: a disk busier than usual but far
// from full slows nobody down.
func (a *analysis) saturation(u, effectNode int) float64 {
	it := a.items[u]
	if it.node == effectNode || it.best < 0 {
		return 1
	}
	e := a.ev[it.best]
	if e.kind.unit != unitRatio || e.kind.role != roleRes || !strings.Contains(strings.ToLower(e.name), "util") {
		return 1
	}
	return clamp((e.value-0.6)/0.3, 0.1, 1)
}

// ratio is how many times its usual level the item's strongest series
// reached, NaN when unknown.
func (a *analysis) ratio(i int) float64 {
	it := a.items[i]
	if it.best < 0 {
		return math.NaN()
	}
	e := a.ev[it.best]
	if e.base <= 0 || math.IsNaN(e.value) {
		return math.NaN()
	}
	return e.value / e.base
}

// loadShare is the share of a rise by factor use that a rise of traffic by
// factor load accounts for.
func loadShare(load, use float64) float64 {
	if math.IsNaN(load) || math.IsNaN(use) || load <= 1 || use <= 1 {
		return 0
	}
	return clamp(math.Log(load)/math.Log(use), 0, 1)
}

// latent lets latency and errors that nothing in the topology explains be
// explained by other latency or errors that started earlier, were at least
// as strong and moved in step with them: traces never see every call, so
// the call between them may be missing from the topology.
func (a *analysis) latent() {
	var perf []int
	for i, it := range a.items {
		if it.role == rolePerf && it.best >= 0 && a.ev[it.best].zs != nil {
			perf = append(perf, i)
		}
	}
	step := a.w.step
	for _, v := range perf {
		if a.explained[v] >= 0.3 {
			continue
		}
		iv := a.items[v]
		var cs []cause
		for _, u := range perf {
			iu := a.items[u]
			if u == v || iu.node == iv.node || iu.onset > iv.onset+step || !a.conserves(iu.node, iv.node) {
				continue
			}
			// The likelier cause started first and is at least as
			// abnormal, or rose clearly more in the measures both share
			// (a callee's errors and latency are its callers' and more),
			// or is clearly more abnormal; the first is the surest.
			earlier := iu.onset <= iv.onset-step && iu.a >= iv.a
			share, shared := a.riseShare(iv.node, iu.node)
			w := 0.7
			if !earlier {
				if !(shared && share < 0.8) && iu.a < 1.3*iv.a {
					continue
				}
				w = 0.5
			}
			r := correlation(a.ev[iu.best].zs, a.ev[iv.best].zs)
			if r < 0.7 {
				continue
			}
			cs = append(cs, cause{item: u, strength: w * r * r})
		}
		if len(cs) == 0 {
			continue
		}
		keep := 1 - a.explained[v]
		for _, c := range cs {
			keep *= 1 - c.strength
		}
		a.causes[v] = append(a.causes[v], cs...)
		a.explained[v] = min(0.95, 1-keep)
	}
}

// rises returns how much each abnormal latency or error series of node
// rose, by name.
func (a *analysis) rises(node int) map[string]float64 {
	m := map[string]float64{}
	for _, k := range a.byNode[node] {
		if e := a.ev[k]; e.kind.role == rolePerf && strength(e.z) > 0 && e.value > e.base {
			m[e.name] = e.value - e.base
		}
	}
	return m
}

// conserves reports whether what cause did could have made effect do what
// it did: a caller's error ratio rises no more than its callee's, its
// latency by no more than the callee's. Compared where both measured the
// same thing and both rose.
func (a *analysis) conserves(cause, effect int) bool {
	rc, re := a.rises(cause), a.rises(effect)
	for name, d := range re {
		if dc, ok := rc[name]; ok && dc < 0.8*d {
			return false
		}
	}
	return true
}

// riseShare is the share of effect's rise in latency or errors that
// cause's rise in the same measures covers, at worst over the measures both
// share; ok is false when they share none.
func (a *analysis) riseShare(cause, effect int) (float64, bool) {
	rc, re := a.rises(cause), a.rises(effect)
	share, ok := 1.0, false
	for name, d := range re {
		if dc, found := rc[name]; found {
			share = min(share, dc/d)
			ok = true
		}
	}
	return share, ok
}

// correlation is Pearson's r over the samples where both are known.
func correlation(x, y []float64) float64 {
	var n, sx, sy, sxx, syy, sxy float64
	for i := range min(len(x), len(y)) {
		if math.IsNaN(x[i]) || math.IsNaN(y[i]) {
			continue
		}
		n++
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		syy += y[i] * y[i]
		sxy += x[i] * y[i]
	}
	if n < 5 {
		return 0
	}
	cov := sxy/n - sx*sy/(n*n)
	vx, vy := sxx/n-sx*sx/(n*n), syy/n-sy*sy/(n*n)
	if vx <= 0 || vy <= 0 {
		return 0
	}
	return cov / math.Sqrt(vx*vy)
}

func sortedInts(m map[int]int) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
