// Package online ranks the root causes of a live incident: it fetches the
// topology from the collectors' and tracing's topology endpoints and the
// incident window's series from the federator through PromQL, builds a
// case in memory and ranks it with rca.Rank. `panorama rca capture` uses
// the same code to write the case to a file instead, so that a real
// incident can be replayed and shared.
package online

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/panorama-obs/panorama/rca"
	"github.com/panorama-obs/panorama/topology"
)

// Config says where a capture reads from. FederatorURL and at least one
// topology URL are required; the rest has defaults.
type Config struct {
	// FederatorURL is the base URL of a Prometheus HTTP API (the federator,
	// or any Prometheus-compatible server): http://federator:9091.
	FederatorURL string
	// TopologyURLs answer GET with a topology block, {"nodes","edges"}
	// (collectors' and tracing's /api/v1/topology); they are merged.
	TopologyURLs []string
	// Client makes every request; http.DefaultClient when nil.
	Client *http.Client
	// Step is the case's sampling interval; 15 s when zero.
	Step time.Duration
	// Window is how much time the case covers; 30 min when zero. Three
	// quarters of it precede the detection time, when the present allows.
	Window time.Duration
	// Lookback is how far back from each step a sample still counts; Step
	// when zero. Raise it to the scrape interval when that is longer than
	// Step (a series that stops is then seen to stop that much later).
	Lookback time.Duration
	// Timeout bounds a whole capture; 1 min when zero.
	Timeout time.Duration
	// AlertmanagerURL, when set, is an Alertmanager API v2 (Alertmanager,
	// or Panorama's alerting role) whose alerts join the federator's
	// ALERTS for incidents given without alerts. It holds only active and
	// recently resolved alerts: it serves incidents in progress.
	AlertmanagerURL string
	// Signals are the metric families read; DefaultSignals when nil.
	Signals []Signal
	// ExtraMetrics are more metric names to read as they are, for nodes of
	// any kind (a database's query_latency_p99_seconds…).
	ExtraMetrics []string
	// Parallel is how many queries run at once; 4 when zero.
	Parallel int
	// Now returns the present; time.Now when nil.
	Now func() time.Time
}

// Incident is what the alerting engine knows of an incident.
type Incident struct {
	// Name names the case; "incident at <time>" when empty.
	Name string
	// Alerts are the incident's alerts. When nil, the alerts firing in the
	// window are read from the federator's ALERTS series and, when
	// configured, from Alertmanager.
	Alerts []rca.Alert
	// DetectedAt is when the incident was noticed; the earliest alert start
	// when zero.
	DetectedAt time.Time
	// Start and End bound the window; when zero they follow from
	// DetectedAt and Config.Window.
	Start, End time.Time
}

// Capturer fetches incidents' cases from a live system. It is safe for
// concurrent use.
type Capturer struct {
	cfg     Config
	signals []Signal
	prom    promv1.API
}

// New checks cfg and returns a Capturer.
func New(cfg Config) (*Capturer, error) {
	if cfg.FederatorURL == "" {
		return nil, errors.New("no federator URL")
	}
	if len(cfg.TopologyURLs) == 0 {
		return nil, errors.New("no topology URL: give at least one collector's or tracing's /api/v1/topology")
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Step <= 0 {
		cfg.Step = 15 * time.Second
	}
	if cfg.Step < time.Second {
		return nil, fmt.Errorf("step %s: must be at least 1s", cfg.Step)
	}
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Minute
	}
	if cfg.Window < 10*cfg.Step {
		return nil, fmt.Errorf("window %s: must hold at least 10 steps of %s", cfg.Window, cfg.Step)
	}
	if cfg.Lookback <= 0 {
		cfg.Lookback = cfg.Step
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	signals := cfg.Signals
	if signals == nil {
		signals = DefaultSignals()
	}
	signals = slices.Clone(signals)
	for _, name := range cfg.ExtraMetrics {
		signals = append(signals, Signal{Name: name})
	}
	seen := map[string]bool{}
	for _, s := range signals {
		if err := s.validate(); err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("signal %s: listed twice", s.Name)
		}
		seen[s.Name] = true
	}
	client, err := api.NewClient(api.Config{Address: cfg.FederatorURL, Client: cfg.Client})
	if err != nil {
		return nil, fmt.Errorf("federator URL %q: %w", cfg.FederatorURL, err)
	}
	return &Capturer{cfg: cfg, signals: signals, prom: promv1.NewAPI(client)}, nil
}

// Rank captures the incident's case and ranks it. The ranking's warnings
// include what the capture could not read.
func (c *Capturer) Rank(ctx context.Context, inc Incident) (rca.Ranking, error) {
	cs, err := c.Capture(ctx, inc)
	if err != nil {
		return rca.Ranking{}, err
	}
	return rca.Rank(cs, rca.Options{}), nil
}

// Capture fetches the topology, the window's series and, when the incident
// has none, its alerts, and returns them as a case (without truth). It
// fails when a topology endpoint fails or the federator cannot be reached;
// a query the federator refuses, partial answers and missing series are
// warnings on the case.
func (c *Capturer) Capture(ctx context.Context, inc Incident) (*rca.Case, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	det := inc.DetectedAt
	if det.IsZero() {
		for _, a := range inc.Alerts {
			if !a.StartsAt.IsZero() && (det.IsZero() || a.StartsAt.Before(det)) {
				det = a.StartsAt
			}
		}
	}
	if det.IsZero() {
		return nil, errors.New("the incident has no detection time and none of its alerts a start")
	}
	if now := c.cfg.Now(); det.After(now.Add(time.Minute)) {
		return nil, fmt.Errorf("the detection time %s is in the future (now is %s)", det.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	start, end := c.window(det, inc.Start, inc.End)
	if !end.After(start) {
		return nil, fmt.Errorf("the window %s–%s is empty", start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	}

	g, err := c.fetchTopology(ctx)
	if err != nil {
		return nil, err
	}
	cs := &rca.Case{Version: rca.CaseVersion, Name: inc.Name, Topology: g, Alerts: inc.Alerts,
		DetectedAt: float64(det.UnixMilli()) / 1000}
	if cs.Name == "" {
		cs.Name = "incident at " + det.UTC().Format(time.RFC3339)
	}

	m, alerts, warnings, err := c.fetchSeries(ctx, g, start, end, inc.Alerts == nil)
	if err != nil {
		return nil, err
	}
	cs.Warnings = append(cs.Warnings, warnings...)
	if inc.Alerts == nil {
		cs.Alerts = alerts
		if c.cfg.AlertmanagerURL != "" {
			am, err := fetchAlertmanager(ctx, c.cfg.Client, c.cfg.AlertmanagerURL, start, end, c.cfg.Now())
			if err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				cs.Warnings = append(cs.Warnings, fmt.Sprintf("%v; the alerts are the federator's ALERTS only", err))
			}
			// Alertmanager's copy of an alert has its annotations and
			// exact start: it wins over the one read from ALERTS.
			cs.Alerts = mergeAlerts(am, alerts)
		}
	}
	if m == nil {
		cs.Warnings = append(cs.Warnings, "no metrics: ranking on topology and alerts only")
	} else {
		cs.Metrics = m
		last := m.Start + m.Step*float64(m.Len()-1)
		if cs.DetectedAt < m.Start || cs.DetectedAt > last {
			cs.Warnings = append(cs.Warnings, fmt.Sprintf("detectedAt %s is outside the metrics window %s–%s",
				det.UTC().Format(time.RFC3339), unixRFC3339(m.Start), unixRFC3339(last)))
		}
	}
	return cs, nil
}

// window returns the incident's window: three quarters before detection
// and a quarter after, ending no later than now, unless given; both ends
// aligned down to the step.
func (c *Capturer) window(det, start, end time.Time) (time.Time, time.Time) {
	if end.IsZero() {
		end = det.Add(c.cfg.Window / 4)
		if now := c.cfg.Now(); end.After(now) {
			end = now
		}
	}
	if start.IsZero() {
		start = end.Add(-c.cfg.Window)
	}
	// Aligned to the step, as Grafana aligns its range queries, so that
	// captures of one system share a grid and steps fall on whole seconds.
	return start.Truncate(c.cfg.Step), end.Truncate(c.cfg.Step)
}

// fetchTopology reads and merges every topology endpoint.
func (c *Capturer) fetchTopology(ctx context.Context) (*topology.Graph, error) {
	graphs := make([]*topology.Graph, len(c.cfg.TopologyURLs))
	errs := make([]error, len(c.cfg.TopologyURLs))
	var wg sync.WaitGroup
	for i, u := range c.cfg.TopologyURLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			graphs[i], errs[i] = FetchTopology(ctx, c.cfg.Client, u)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	g := topology.Merge(graphs...)
	g.AddImplicitNodes()
	if len(g.Nodes) == 0 {
		return nil, fmt.Errorf("the topology endpoints (%s) hold no node", strings.Join(c.cfg.TopologyURLs, ", "))
	}
	return g, nil
}

// grid is the case's sampling: n steps from start.
type grid struct {
	start time.Time
	step  time.Duration
	n     int
}

func (gd grid) index(t model.Time) (int, bool) {
	d := t.Time().Sub(gd.start)
	if d < 0 {
		return 0, false
	}
	i := int((d + gd.step/2) / gd.step)
	return i, i < gd.n
}

// fetchSeries runs one range query per signal (and, when wanted, the
// ALERTS queries) and maps each result series to its node.
func (c *Capturer) fetchSeries(ctx context.Context, g *topology.Graph, start, end time.Time, wantAlerts bool) (*rca.Metrics, []rca.Alert, []string, error) {
	step := c.cfg.Step
	gd := grid{start: start, step: step, n: int(end.Sub(start)/step) + 1}
	if gd.n < 2 {
		return nil, nil, nil, fmt.Errorf("window %s–%s holds fewer than two steps of %s", start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), step)
	}
	end = start.Add(time.Duration(gd.n-1) * step)
	r := promv1.Range{Start: start, End: end, Step: step}

	var sc scope
	for _, n := range g.Nodes {
		sc.clusters = append(sc.clusters, n.Cluster, n.Labels["cluster"])
		if n.Kind == topology.KindPod || n.Kind == topology.KindService {
			sc.namespaces = append(sc.namespaces, n.Labels["namespace"])
		}
	}
	sc.clusters, sc.namespaces = sortedSet(sc.clusters), sortedSet(sc.namespaces)
	rateWindow := max(4*step, 2*time.Minute)

	type job struct {
		name, query string
		alerts      bool
	}
	var jobs []job
	for _, s := range c.signals {
		jobs = append(jobs, job{name: s.Name, query: s.query(sc, c.cfg.Lookback, rateWindow)})
	}
	alertLookback := max(step, time.Minute)
	if wantAlerts {
		jobs = append(jobs,
			job{name: "ALERTS", query: sc.alertsQuery(alertLookback), alerts: true},
			job{name: "ALERTS_FOR_STATE", query: sc.forStateQuery(alertLookback), alerts: true})
	}

	results := make([]model.Matrix, len(jobs))
	errs := make([]error, len(jobs))
	warns := make([][]string, len(jobs))
	sem := make(chan struct{}, c.cfg.Parallel)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			v, w, err := c.prom.QueryRange(ctx, j.query, r)
			warns[i] = w
			if err != nil {
				errs[i] = err
				return
			}
			mat, ok := v.(model.Matrix)
			if !ok {
				errs[i] = fmt.Errorf("answer of type %s, not a matrix", v.Type())
				return
			}
			results[i] = mat
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("federator %s: %w (the capture's timeout is %s)", c.cfg.FederatorURL, err, c.cfg.Timeout)
	}

	var warnings []string
	var firstErr error
	failed := 0
	for i, err := range errs {
		for _, w := range warns[i] {
			warnings = append(warnings, fmt.Sprintf("federator warning for %s: %s", jobs[i].name, w))
		}
		if err == nil {
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = err
		}
		warnings = append(warnings, fmt.Sprintf("query for %s failed: %v", jobs[i].name, err))
	}
	if failed == len(jobs) {
		var apiErr *promv1.Error
		if !errors.As(firstErr, &apiErr) {
			return nil, nil, nil, fmt.Errorf("cannot reach the federator %s: %w", c.cfg.FederatorURL, firstErr)
		}
		return nil, nil, nil, fmt.Errorf("federator %s refused every query; first: %w", c.cfg.FederatorURL, firstErr)
	}

	matcher := rca.NewMatcher(g)
	type key struct{ node, name string }
	byKey := map[key][]float64{}
	var order []key
	var unmatched []string
	var alertMat, forState model.Matrix
	for i, j := range jobs {
		if j.alerts {
			if j.name == "ALERTS" {
				alertMat = results[i]
			} else {
				forState = results[i]
			}
			continue
		}
		for _, ss := range results[i] {
			labels := labelMap(ss.Metric)
			id, ok := matcher.Match(labels)
			if !ok {
				unmatched = append(unmatched, j.name+ss.Metric.String())
				continue
			}
			k := key{id, j.name}
			vals, ok := byKey[k]
			if !ok {
				vals = nanSlice(gd.n)
				byKey[k] = vals
				order = append(order, k)
			}
			// Several series on one node (the fallback's and the
			// signal's, or two of a generic metric): the first
			// sample at each step is kept.
			for _, p := range ss.Values {
				if x, ok := gd.index(p.Timestamp); ok && math.IsNaN(vals[x]) {
					vals[x] = float64(p.Value)
				}
			}
		}
	}
	if len(unmatched) > 0 {
		sort.Strings(unmatched)
		warnings = append(warnings, fmt.Sprintf("%d series name no topology node and were left out: %s", len(unmatched), sample(unmatched)))
	}

	var m *rca.Metrics
	if len(order) > 0 {
		// Trim the steps no series reached at either end (the present,
		// not yet ingested; a window reaching before the data).
		first, last := gd.n, -1
		for _, vals := range byKey {
			for i, v := range vals {
				if !math.IsNaN(v) {
					first, last = min(first, i), max(last, i)
				}
			}
		}
		if last >= first {
			sort.Slice(order, func(a, b int) bool {
				if order[a].node != order[b].node {
					return order[a].node < order[b].node
				}
				return order[a].name < order[b].name
			})
			m = &rca.Metrics{Start: float64(gd.start.Add(time.Duration(first)*step).UnixMilli()) / 1000, Step: step.Seconds()}
			for _, k := range order {
				m.Series = append(m.Series, rca.Series{Node: k.node, Name: k.name, Values: byKey[k][first : last+1]})
			}
		}
	}
	var alerts []rca.Alert
	if wantAlerts {
		alerts = alertsFromSeries(alertMat, forState, gd)
	}
	return m, alerts, warnings, nil
}

// alertsFromSeries turns ALERTS series into alerts: each run of firing
// samples is one alert, starting at its first sample (or, when it was
// already firing at the window's start, at its ALERTS_FOR_STATE time) and
// ending after its last one when that is before the window's end.
func alertsFromSeries(alerts, forState model.Matrix, gd grid) []rca.Alert {
	active := map[string]float64{}
	for _, s := range forState {
		m := s.Metric.Clone()
		delete(m, model.MetricNameLabel)
		if len(s.Values) > 0 {
			active[m.String()] = float64(s.Values[0].Value)
		}
	}
	var out []rca.Alert
	for _, s := range alerts {
		m := s.Metric.Clone()
		delete(m, model.MetricNameLabel)
		delete(m, "alertstate")
		labels := labelMap(m)
		var (
			begin, prev model.Time
			open        bool
		)
		flush := func(endAt model.Time, ended bool) {
			a := rca.Alert{Labels: labels, StartsAt: begin.Time().UTC()}
			if i, _ := gd.index(begin); i == 0 {
				if at, ok := active[m.String()]; ok && at > 0 && at < float64(begin.Unix()) {
					a.StartsAt = time.UnixMilli(int64(at * 1000)).UTC()
				}
			}
			if ended {
				a.EndsAt = endAt.Time().UTC()
			}
			out = append(out, a)
		}
		for _, p := range s.Values {
			if open && p.Timestamp.Sub(prev) > gd.step+gd.step/2 {
				flush(prev.Add(gd.step), true)
				open = false
			}
			if !open {
				begin, open = p.Timestamp, true
			}
			prev = p.Timestamp
		}
		if open {
			i, _ := gd.index(prev)
			flush(prev.Add(gd.step), i < gd.n-1)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartsAt.Before(out[j].StartsAt) })
	return out
}

func labelMap(m model.Metric) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k == model.MetricNameLabel {
			continue
		}
		out[string(k)] = string(v)
	}
	return out
}

func nanSlice(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.NaN()
	}
	return out
}

func sample(items []string) string {
	const show = 3
	if len(items) <= show {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:show], ", ") + fmt.Sprintf(" and %d more", len(items)-show)
}

func unixRFC3339(sec float64) string {
	return time.UnixMilli(int64(sec * 1000)).UTC().Format(time.RFC3339)
}
