package rca

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Options tunes Rank.
type Options struct {
	// Limit is how many candidates the ranking lists; 20 when zero, all
	// when negative.
	Limit int
}

// Ranking is Rank's answer, in the output format of the formats README.
type Ranking struct {
	Ranking []Ranked `json:"ranking"`
	// Warnings repeats the case's warnings and adds the ranker's own; they
	// go to stderr, not into the README's output.
	Warnings []string `json:"-"`
}

// Ranked is one candidate root cause: a topology node, its share of the
// incident's evidence, and the lines a person reads to check it.
type Ranked struct {
	Node     string   `json:"node"`
	Score    float64  `json:"score"`
	Evidence []string `json:"evidence"`
}

// Nodes returns the ranked node IDs, best first.
func (r Ranking) Nodes() []string {
	out := make([]string, len(r.Ranking))
	for i, x := range r.Ranking {
		out[i] = x.Node
	}
	return out
}

// WriteText writes the ranking for a person: one numbered candidate per
// paragraph, its evidence indented below it.
func (r Ranking) WriteText(w io.Writer) error {
	var b strings.Builder
	if len(r.Ranking) == 0 {
		b.WriteString("no candidate: nothing in the case looks abnormal\n")
	}
	for i, x := range r.Ranking {
		fmt.Fprintf(&b, "%2d. %s  (score %.3f)\n", i+1, x.Node, x.Score)
		for _, e := range x.Evidence {
			fmt.Fprintf(&b, "      - %s\n", e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Rank ranks the candidate root causes of an incident. It reads only the
// case, which holds no truth.
//
// Every series is scored against its own history before the incident with
// robust statistics (median and MAD, a detrended variant for seasonality,
// counters as increases, a median of three against lone spikes), and every
// alert is mapped to the node its labels name. The evidence of each node,
// per kind of signal (latency and errors, traffic, resource use,
// saturation, readiness, having stopped reporting), then flows over the
// topology to whatever can explain it and started no later: a caller's
// latency to the callee whose latency rose first, a service's to the pod or
// node behind it, a pod's throttling to its saturated node, a node's CPU to
// the pod that consumes it. Evidence nothing explains stays where it is;
// each node's score is the evidence that comes to rest on it. Nodes without
// metrics of their own (a dead node, a database seen only through traces)
// are inferred from the failing things that depend on them.
func Rank(c *Case, opts Options) Ranking {
	out := Ranking{Warnings: slices.Clone(c.Warnings)}
	if c.Topology == nil || len(c.Topology.Nodes) == 0 {
		out.Warnings = append(out.Warnings, "empty topology: nothing to rank")
		out.Ranking = []Ranked{}
		return out
	}
	a := newAnalysis(c)
	a.score()
	limit := opts.Limit
	if limit == 0 {
		limit = 20
	}
	out.Ranking = a.ranked(limit)
	return out
}

// clock formats sample times for evidence lines.
func clock(unix float64) string {
	if math.IsNaN(unix) || math.IsInf(unix, 0) {
		return "?"
	}
	return time.Unix(int64(math.Round(unix)), 0).UTC().Format("15:04:05")
}

// num formats a metric value compactly.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "?"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}
