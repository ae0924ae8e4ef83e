package rca

import (
	"fmt"
	"math"
	"sort"

	"github.com/panorama-obs/panorama/topology"
)

// maxEvidence bounds the lines per candidate.
const maxEvidence = 6

// evidence returns the lines that justify node i's rank: its own abnormal
// series and alerts, strongest first, then what its trouble explains.
func (a *analysis) evidence(i int) []string {
	var lines []string
	// Own series, strongest first.
	idx := append([]int(nil), a.byNode[i]...)
	sort.SliceStable(idx, func(x, y int) bool { return a.ev[idx[x]].z > a.ev[idx[y]].z })
	for _, k := range idx {
		if len(lines) >= 3 {
			break
		}
		if l := a.describe(a.ev[k]); l != "" {
			lines = append(lines, l)
		}
	}
	// Inferred evidence and alerts.
	for _, it := range a.items {
		if it.node != i {
			continue
		}
		if it.why != "" {
			lines = append(lines, it.why)
		}
	}
	seen := map[string]bool{}
	for _, it := range a.items {
		if it.node != i {
			continue
		}
		for _, k := range it.alerts {
			al := a.c.Alerts[k]
			name := al.Labels["alertname"]
			if name == "" {
				name = "unnamed"
			}
			if seen[name] {
				continue
			}
			seen[name] = true
			l := "alert " + name
			if sev := al.Labels["severity"]; sev != "" {
				l += " (" + sev + ")"
			}
			if !al.StartsAt.IsZero() {
				l += " firing since " + clock(float64(al.StartsAt.Unix()))
			}
			lines = append(lines, l)
		}
	}
	if len(lines) > maxEvidence-2 {
		lines = lines[:maxEvidence-2]
	}
	lines = append(lines, a.explains(i)...)
	if len(lines) == 0 {
		lines = append(lines, "nothing abnormal of its own")
	}
	if len(lines) > maxEvidence {
		lines = lines[:maxEvidence]
	}
	return lines
}

// describe writes one series' change for a person, or "" when it is normal.
func (a *analysis) describe(e seriesEvidence) string {
	if e.stopped {
		return fmt.Sprintf("%s stopped reporting at %s", e.name, clock(a.at(e.stopAt)))
	}
	if strength(e.z) <= 0 {
		return ""
	}
	when := clock(a.at(e.onset))
	if e.kind.counter {
		return fmt.Sprintf("%s rising from %s (%s a minute, usually %s)", e.name, when, num(e.value), num(e.base))
	}
	up := e.value >= e.base
	verb := "rose"
	if !up {
		verb = "fell"
	}
	if e.base != 0 && up && e.value/e.base >= 1.5 && !math.IsNaN(e.value) {
		return fmt.Sprintf("%s %s %.3gx at %s (%s → %s)", e.name, verb, e.value/e.base, when, num(e.base), num(e.value))
	}
	return fmt.Sprintf("%s %s from %s to %s at %s", e.name, verb, num(e.base), num(e.value), when)
}

// explains summarises the evidence that came to rest on node i from other
// nodes, grouped by how they relate to it.
func (a *analysis) explains(i int) []string {
	type src struct {
		node int
		mass float64
	}
	var froms []src
	for k, m := range a.flows {
		if k[1] == i && m > 0 {
			froms = append(froms, src{k[0], m})
		}
	}
	sort.Slice(froms, func(x, y int) bool {
		if froms[x].mass != froms[y].mass {
			return froms[x].mass > froms[y].mass
		}
		return froms[x].node < froms[y].node
	})
	gr := a.gr
	groups := map[string][]string{}
	var order []string
	for _, f := range froms {
		var rel string
		switch {
		case contains(gr.callees[f.node], i):
			rel = "callers"
		case contains(gr.members[f.node], i):
			rel = "services it serves"
		case gr.host[f.node] == i:
			rel = "pods on it"
		case gr.host[i] == f.node:
			rel = "its node"
		case contains(gr.groups[f.node], i):
			rel = "its pods"
		case gr.kind[f.node] == string(topology.KindService):
			rel = "services behind it"
		default:
			rel = "dependents"
		}
		if groups[rel] == nil {
			order = append(order, rel)
		}
		groups[rel] = append(groups[rel], gr.name[f.node])
	}
	var lines []string
	for _, rel := range order {
		names := groups[rel]
		switch rel {
		case "its node":
			lines = append(lines, "explains its node's saturation ("+list(names)+")")
		default:
			lines = append(lines, fmt.Sprintf("explains the trouble of %d %s (%s), which started no earlier", len(names), rel, list(names)))
		}
	}
	return lines
}

func contains(list []int, x int) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}
