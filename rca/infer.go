package rca

import (
	"fmt"
	"math"
	"sort"
)

// infer adds evidence to nodes that cannot speak for themselves, from the
// trouble nothing else explains in what depends on them: a node whose pods
// all stopped together, a dependency without metrics that its callers'
// trouble points at, a node under pods or services of several kinds that
// degraded together, a pod nobody measures on a node saturated by nobody
// measured. It reports whether it added anything.
func (a *analysis) infer() bool {
	added := false
	for x := range a.gr.ids {
		for _, f := range []func(int) bool{a.inferDeadHost, a.inferDependency, a.inferHost, a.inferUnseenConsumer} {
			if f(x) {
				added = true
			}
		}
	}
	return added
}

// residual is the strongest evidence of the given roles on node that its
// causes leave unexplained, and when it started.
func (a *analysis) residual(node int, roles ...role) (float64, float64) {
	return a.residualBelow(node, 1, roles...)
}

// residualBelow is residual counting only items whose causes explain less
// than the given share of them: trouble already tied to something else is
// no sign of a hidden common cause.
func (a *analysis) residualBelow(node int, share float64, roles ...role) (float64, float64) {
	best, onset := 0.0, math.Inf(1)
	for _, r := range roles {
		if k, ok := a.itemAt[[2]int{node, int(r)}]; ok {
			it := a.items[k]
			e := a.explainedShare(k)
			if e >= share {
				continue
			}
			if res := it.a * (1 - e); res > best {
				best, onset = res, it.onset
			}
		}
	}
	return best, onset
}

// residualKnown is residual with the shares the topology explains, before
// any call edge was guessed from correlation.
func (a *analysis) residualKnown(node int, roles ...role) (float64, float64) {
	best, onset := 0.0, math.Inf(1)
	for _, r := range roles {
		if k, ok := a.itemAt[[2]int{node, int(r)}]; ok {
			it := a.items[k]
			e := 0.0
			if k < len(a.known) {
				e = a.known[k]
			}
			if res := it.a * (1 - e); res > best {
				best, onset = res, it.onset
			}
		}
	}
	return best, onset
}

// explainedShare is the share of item k its causes explain; items inferred
// since the last explain have none yet.
func (a *analysis) explainedShare(k int) float64 {
	if k < len(a.explained) {
		return a.explained[k]
	}
	return 0
}

// inferDeadHost: pods that stopped together on a node nothing is heard from.
func (a *analysis) inferDeadHost(x int) bool {
	pods := a.gr.hosted[x]
	if !a.blind[x] || len(pods) == 0 {
		return false
	}
	var sum, first float64 = 0, math.Inf(1)
	k := 0
	for _, p := range pods {
		if r, on := a.residual(p, roleStop, roleAvail); r > 0 {
			sum += r
			first = min(first, on)
			k++
		}
	}
	if k < 2 && !(k == 1 && len(pods) == 1) {
		return false
	}
	s := sum / float64(k) * float64(k) / float64(len(pods))
	if k == 1 {
		s *= 0.7
	}
	a.addItem(item{node: x, role: roleStop, a: s, onset: first, best: -1,
		why: fmt.Sprintf("no metrics of its own; %d of its %d pods stopped reporting", k, len(pods))})
	return true
}

// inferDependency: a dependency without metrics whose callers degraded with
// nothing else to explain it. One caller alone is as likely the cause
// itself, so it lends only part of its trouble.
func (a *analysis) inferDependency(x int) bool {
	gr := a.gr
	deps := gr.callers[x]
	if !a.blind[x] || len(deps) == 0 {
		return false
	}
	var sum, first float64 = 0, math.Inf(1)
	var names []string
	// The callers' trouble as the topology leaves it unexplained: callers
	// of one silent dependency degrade in step, so the edges latent
	// guesses between them from correlation must not hide it.
	for _, y := range deps {
		if r, on := a.residualKnown(y, rolePerf, roleGen); r > 0.3 {
			sum += r
			first = min(first, on)
			names = append(names, gr.name[y])
		}
	}
	k := len(names)
	var s float64
	switch {
	case k >= 2 && 5*k >= 2*len(deps):
		s = sum / float64(k) * (1 + 0.1*float64(k-2))
	case k == 1:
		// Shared with the caller's other unmeasured dependencies.
		blindCallees := 0
		for _, y := range deps {
			if r, _ := a.residual(y, rolePerf, roleGen); r > 0.3 {
				for _, z := range gr.callees[y] {
					if a.blind[z] && len(gr.members[z]) == 0 {
						blindCallees++
					}
				}
			}
		}
		s = 0.3 * sum / float64(max(1, blindCallees)) / math.Sqrt(float64(len(deps)))
	default:
		return false
	}
	a.addItem(item{node: x, role: rolePerf, a: s, onset: first - a.tolerance()/2, best: -1,
		why: fmt.Sprintf("no metrics of its own; %d of its %d callers degraded (%s)", k, len(deps), list(names))})
	return true
}

// trouble is unexplained evidence on a node, for inferHost.
type trouble struct {
	node     int
	svcs     []int // the services it concerns
	r, onset float64
}

// inferHost: pods, or services through their pods, of several kinds in
// trouble together on one node point at the node, even when its own series
// do not show why (the one that would is missing).
func (a *analysis) inferHost(x int) bool {
	gr := a.gr
	pods := gr.hosted[x]
	if len(pods) < 2 {
		return false
	}
	// The pods' own trouble.
	var ts []trouble
	for _, p := range pods {
		r, on := a.residualBelow(p, 0.25, roleSat, roleStop, roleAvail, rolePerf, roleGen)
		if k, ok := a.itemAt[[2]int{p, int(roleRes)}]; ok && !a.items[k].usage && a.explainedShare(k) < 0.25 {
			if rr := a.items[k].a * (1 - a.explainedShare(k)); rr > r {
				r, on = rr, a.items[k].onset
			}
		}
		if r > 0.3 {
			ts = append(ts, trouble{p, gr.groups[p], r, on})
		}
	}
	best, onset, why := a.together(ts, len(pods), "pods")
	// The trouble of the services they serve, unless the node's own
	// resource series are all there to say it is fine.
	if a.resourceSeries(x) < 4 {
		var svc []trouble
		seen := map[int]bool{}
		for _, p := range pods {
			for _, s := range gr.groups[p] {
				if seen[s] {
					continue
				}
				seen[s] = true
				if r, on := a.residualBelow(s, 0.25, rolePerf, roleGen); r > 0.3 {
					svc = append(svc, trouble{s, []int{s}, r, on})
				}
			}
		}
		if s, on, w := a.together(svc, len(seen), "services with pods on it"); s > best {
			best, onset, why = s, on, w
		}
	}
	if best <= 0 {
		return false
	}
	// Dated a little before the first of the trouble it explains.
	a.addItem(item{node: x, role: roleRes, a: best, onset: onset - a.tolerance()/2, best: -1, why: why})
	return true
}

// together finds the largest group of troubles that started within a
// couple of minutes of each other and concern at least two services. It
// returns the strength that lends their common host (0 for none), when the
// group started, and the line saying so.
func (a *analysis) together(ts []trouble, total int, what string) (float64, float64, string) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].onset < ts[j].onset })
	from, to := 0, 0
	for i, j := 0, 0; j < len(ts); j++ {
		for ts[j].onset-ts[i].onset > 2*a.tolerance() {
			i++
		}
		if j+1-i > to-from {
			from, to = i, j+1
		}
	}
	group := ts[from:to]
	svcs := map[int]bool{}
	var sum float64
	var names []string
	for _, t := range group {
		sum += t.r
		names = append(names, a.gr.name[t.node])
		for _, s := range t.svcs {
			svcs[s] = true
		}
	}
	k := len(group)
	if k < 2 || len(svcs) < 2 {
		return 0, 0, ""
	}
	s := sum / float64(k) * (1 + 0.1*float64(k-2)) * math.Sqrt(float64(k)/float64(total))
	return s, group[0].onset, fmt.Sprintf("%d of its %d %s degraded together (%s)", k, total, what, list(names))
}

// resourceSeries counts a node's resource series with history.
func (a *analysis) resourceSeries(x int) int {
	n := 0
	for _, k := range a.byNode[x] {
		if e := a.ev[k]; !e.fresh && e.kind.role == roleRes {
			n++
		}
	}
	return n
}

// inferUnseenConsumer: a node saturated by none of the pods whose use is
// measured may be saturated by one whose use is not.
func (a *analysis) inferUnseenConsumer(x int) bool {
	k, ok := a.itemAt[[2]int{x, int(roleRes)}]
	if !ok || !a.items[k].usage || a.items[k].why != "" {
		return false
	}
	r := a.items[k].a * (1 - a.explainedShare(k))
	if r <= 0.3 {
		return false
	}
	want := ""
	if b := a.items[k].best; b >= 0 {
		want = resource(a.ev[b].name)
	}
	var unseen []int
	for _, p := range a.gr.hosted[x] {
		measured := false
		for _, e := range a.byNode[p] {
			if ev := a.ev[e]; ev.kind.usage && !ev.fresh && (want == "" || resource(ev.name) == want) {
				measured = true
			}
		}
		if !measured {
			unseen = append(unseen, p)
		}
	}
	if len(unseen) == 0 || len(unseen) > 3 {
		return false
	}
	for _, p := range unseen {
		a.addItem(item{node: p, role: roleRes, usage: true, a: 0.5 * r / float64(len(unseen)), onset: a.items[k].onset - a.tolerance()/2, best: -1,
			why: fmt.Sprintf("its resource use is not measured, and its node %s is saturated by none of the pods whose use is", a.gr.name[x])})
	}
	return true
}
