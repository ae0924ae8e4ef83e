package rca

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// transport moves each item's evidence along its causes until it comes to
// rest, and adds up where it rests per node.
func (a *analysis) transport() {
	n := len(a.gr.ids)
	a.absorbed = make([]float64, n)
	mass := make([]float64, len(a.items))
	// What the incident's alerts fire on is what the ranking must explain:
	// evidence there counts double.
	alerted := make([]bool, n)
	for _, it := range a.items {
		for _, k := range it.alerts {
			al := a.c.Alerts[k]
			sev := strings.ToLower(al.Labels["severity"])
			if sev != "info" && sev != "none" && (al.StartsAt.IsZero() || float64(al.StartsAt.Unix()) >= a.c.DetectedAt-900) {
				alerted[it.node] = true
			}
		}
	}
	for i, it := range a.items {
		mass[i] = it.a * roleWeight[it.role] * a.timing(it.onset)
		if alerted[it.node] {
			mass[i] *= 2
		}
	}
	for range 12 {
		next := make([]float64, len(a.items))
		moved := false
		for i, m := range mass {
			if m == 0 {
				continue
			}
			it := a.items[i]
			if it.role == roleLoad {
				continue // explained by traffic: not a fault
			}
			e := a.explained[i]
			a.absorbed[it.node] += m * (1 - e)
			if e == 0 {
				continue
			}
			var total float64
			for _, c := range a.causes[i] {
				total += c.strength * a.items[c.item].a
			}
			if !(total > 0) {
				a.absorbed[it.node] += m * e
				continue
			}
			for _, c := range a.causes[i] {
				share := m * e * c.strength * a.items[c.item].a / total
				next[c.item] += share
				to := a.items[c.item].node
				if to != it.node {
					a.flows[[2]int{it.node, to}] += share
				}
			}
			moved = true
		}
		mass = next
		if !moved {
			break
		}
	}
	for i, m := range mass {
		a.absorbed[a.items[i].node] += m
	}
}

// timing weighs evidence by when it started: what began after the incident
// was detected did not cause it, and counts for less the later it began
// (half every two minutes past the first).
func (a *analysis) timing(onset float64) float64 {
	late := onset - a.c.DetectedAt - 60
	if late <= 0 || math.IsNaN(late) {
		return 1
	}
	return math.Pow(0.5, late/120)
}

// ranked returns the first limit nodes by absorbed evidence.
func (a *analysis) ranked(limit int) []Ranked {
	var total float64
	order := make([]int, 0, len(a.absorbed))
	for i, s := range a.absorbed {
		if s > 1e-9 {
			order = append(order, i)
			total += s
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		si, sj := a.absorbed[order[i]], a.absorbed[order[j]]
		if si != sj {
			return si > sj
		}
		return a.gr.ids[order[i]] < a.gr.ids[order[j]]
	})
	if limit >= 0 && len(order) > limit {
		order = order[:limit]
	}
	out := make([]Ranked, 0, len(order))
	for _, i := range order {
		out = append(out, Ranked{Node: a.gr.ids[i], Score: math.Round(a.absorbed[i]/total*1e4) / 1e4, Evidence: a.evidence(i)})
	}
	return out
}

// list names up to three things and counts the rest.
func list(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + fmt.Sprintf(" and %d more", len(names)-3)
}
