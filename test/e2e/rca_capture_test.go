package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/panorama-obs/panorama/rca"
	"github.com/panorama-obs/panorama/rca/online"
	"github.com/panorama-obs/panorama/topology"
)

// rcaExtraMetrics are the simulator's names for databases and queues,
// outside the formats README's list: a capture reads them with --metric.
var rcaExtraMetrics = []string{"queries_rate", "query_latency_p99_seconds", "connections_active",
	"publish_rate", "publish_latency_p99_seconds", "queue_depth"}

// TestRCACaptureRoundTrip replays simulated incidents through a live
// system as a user would meet them: each cluster's series and firing
// alerts are remote-written into that cluster's collector (whose external
// label names the cluster), a federator fans out over the two, and the
// topology block is served over HTTP. `panorama rca capture` then writes a
// case from the federator and the topology endpoint, `panorama rca rank`
// ranks it, and the top cause must be the simulator's truth; the online Go
// API must find it too, from the incident's alerts alone.
//
// The cases are drawn by the simulator for seed 4242 (two clusters each,
// four fault types, a late detection, a multi-fault and a node failure
// with missing call edges); they prove the round trip, not the ranking,
// which the rca package's evaluation measures.
func TestRCACaptureRoundTrip(t *testing.T) {
	for _, index := range []int{2, 7, 32, 33} {
		t.Run(fmt.Sprintf("sim-4242-%04d", index), func(t *testing.T) {
			c, truth := rca.Simulate(4242, index)
			replayCase(t, c, truth)
		})
	}
}

func replayCase(t *testing.T, c *rca.Case, truth *rca.Truth) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := c.Metrics
	step := time.Duration(m.Step * float64(time.Second))
	n := m.Len()

	// The case's window, moved to end a minute ago.
	dataEnd := time.Now().Add(-time.Minute).Truncate(step)
	dataStart := dataEnd.Add(-time.Duration(n-1) * step)
	shift := time.Duration((float64(dataStart.UnixMilli())/1000 - m.Start) * float64(time.Second))
	at := time.UnixMilli(int64(c.DetectedAt * 1000)).Add(shift)

	// One collector per cluster, labelled as the collectors of a real
	// installation are.
	var clusters []string
	for _, nd := range c.Topology.Nodes {
		if nd.Kind == topology.KindCluster {
			clusters = append(clusters, strings.TrimPrefix(nd.ID, "cluster/"))
		}
	}
	slices.Sort(clusters)
	if len(clusters) != 2 {
		t.Fatalf("the case has clusters %v; the test wants two", clusters)
	}
	writes := map[string][]prompb.TimeSeries{}
	var fedArgs []string
	collectors := map[string]*Collector{}
	for _, cl := range clusters {
		col := StartCollector(t, "global:\n  external_labels:\n    cluster: "+cl+"\nscrape_configs: []\n", CollectorOptions{})
		collectors[cl] = col
		fedArgs = append(fedArgs, "--endpoint="+col.GRPCAddr)
	}

	// Series, labelled by the identity of their node (the cluster label
	// comes from the collector).
	nodes := map[string]topology.Node{}
	for _, nd := range c.Topology.Nodes {
		nodes[nd.ID] = nd
	}
	written := 0
	for _, s := range m.Series {
		nd, ok := nodes[s.Node]
		if !ok {
			nd = topology.Node{ID: s.Node, Kind: topology.ImplicitKind(s.Node)}
		}
		cl, kv := seriesIdentity(nd)
		ts := prompb.TimeSeries{Labels: lbls(append([]string{"__name__", s.Name, "job", "sim"}, kv...)...)}
		for i, v := range s.Values {
			if math.IsNaN(v) {
				continue
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: dataStart.Add(time.Duration(i) * step).UnixMilli(), Value: v})
		}
		if len(ts.Samples) > 0 {
			writes[cl] = append(writes[cl], ts)
			written++
		}
	}
	// Firing alerts as a Prometheus rule engine records them.
	firing := 0
	for _, a := range c.Alerts {
		from := a.StartsAt.Add(shift)
		to := dataEnd
		if !a.EndsAt.IsZero() && a.EndsAt.Add(shift).Before(to) {
			to = a.EndsAt.Add(shift)
		}
		kv := []string{}
		cl := clusters[0]
		for k, v := range a.Labels {
			if k == "cluster" {
				cl = v
				continue
			}
			kv = append(kv, k, v)
		}
		alerts := prompb.TimeSeries{Labels: lbls(append([]string{"__name__", "ALERTS", "alertstate", "firing"}, kv...)...)}
		forState := prompb.TimeSeries{Labels: lbls(append([]string{"__name__", "ALERTS_FOR_STATE"}, kv...)...)}
		for i := range n {
			tt := dataStart.Add(time.Duration(i) * step)
			if tt.Before(from) || tt.After(to) {
				continue
			}
			alerts.Samples = append(alerts.Samples, prompb.Sample{Timestamp: tt.UnixMilli(), Value: 1})
			forState.Samples = append(forState.Samples, prompb.Sample{Timestamp: tt.UnixMilli(), Value: float64(from.Unix())})
		}
		if len(alerts.Samples) > 0 {
			writes[cl] = append(writes[cl], alerts, forState)
			firing++
		}
	}
	for cl, series := range writes {
		col, ok := collectors[cl]
		if !ok {
			t.Fatalf("series of unknown cluster %q", cl)
		}
		for len(series) > 0 {
			batch := series[:min(len(series), 500)]
			series = series[len(batch):]
			res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", batch)
			if err != nil || res.Status/100 != 2 {
				t.Fatalf("remote write to %s: %v %+v", cl, err, res)
			}
		}
	}
	fed := StartFederator(t, fedArgs...)
	// Wait until the federator sees both clusters.
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := fed.API.Vector(ctx, `count by (cluster) (last_over_time({job="sim"}[10m]))`, time.Now())
		if err != nil {
			return err
		}
		if len(v) != 2 {
			return fmt.Errorf("the federator sees %d clusters of sim series, want 2", len(v))
		}
		return nil
	})

	block, err := json.Marshal(c.Topology)
	if err != nil {
		t.Fatal(err)
	}
	topo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(block)
	}))
	t.Cleanup(topo.Close)

	// The window must reach the last sample: a quarter of it follows --at.
	window := time.Duration(n-1) * step
	if after := dataEnd.Sub(at); 4*after > window {
		window = 4 * after
	}
	window = window.Truncate(step) + step

	// capture, as a user runs it.
	dir := t.TempDir()
	file := filepath.Join(dir, "incident.json")
	args := []string{"rca", "capture", "--federator", fed.URL, "--topology", topo.URL,
		"--at", strconv.FormatInt(at.Unix(), 10), "--window", window.String(), "--step", step.String(), "--out", file}
	for _, name := range rcaExtraMetrics {
		args = append(args, "--metric", name)
	}
	stdout, stderr := runPanorama(t, args...)
	t.Logf("capture: %s%s", stdout, stderr)

	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("captured file is not JSON: %v", err)
	}
	if _, ok := doc["truth"]; ok {
		t.Error("captured case holds a truth block")
	}
	got, err := rca.ParseCase(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("captured case does not parse: %v", err)
	}
	if got.Metrics == nil {
		t.Fatal("captured case has no metrics")
	}
	if len(got.Metrics.Series) < written*9/10 {
		t.Errorf("captured %d series, %d were written", len(got.Metrics.Series), written)
	}
	if got.Metrics.Step != m.Step {
		t.Errorf("captured step %v, want %v", got.Metrics.Step, m.Step)
	}
	if math.Abs(got.DetectedAt-float64(at.Unix())) > 0.001 {
		t.Errorf("captured detectedAt %v, want %v", got.DetectedAt, at.Unix())
	}
	if len(got.Alerts) < firing {
		t.Errorf("captured %d alerts, %d were firing in the window", len(got.Alerts), firing)
	}
	checkSamples(t, c, got, shift)

	// rank, as a user runs it.
	stdout, _ = runPanorama(t, "rca", "rank", "--case", file)
	var ranking rca.Ranking
	if err := json.Unmarshal([]byte(stdout), &ranking); err != nil {
		t.Fatalf("rank output: %v\n%s", err, stdout)
	}
	if len(ranking.Ranking) == 0 || !slices.Contains(truth.Root, ranking.Ranking[0].Node) {
		t.Errorf("rank of the captured case: top %v, truth %v (%s)", ranking.Nodes(), truth.Root, truth.Fault)
	}

	// The online API, given only the incident's alerts and the
	// detection time, as the alerting engine will call it.
	capturer, err := online.New(online.Config{
		FederatorURL: fed.URL, TopologyURLs: []string{topo.URL}, Step: step, Window: window,
		ExtraMetrics: rcaExtraMetrics, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	var alerts []rca.Alert
	for _, a := range c.Alerts {
		a.StartsAt = a.StartsAt.Add(shift)
		if !a.EndsAt.IsZero() {
			a.EndsAt = a.EndsAt.Add(shift)
		}
		alerts = append(alerts, a)
	}
	live, err := capturer.Rank(ctx, online.Incident{Alerts: alerts, DetectedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if len(live.Ranking) == 0 || !slices.Contains(truth.Root, live.Ranking[0].Node) {
		t.Errorf("online rank: top %v, truth %v (%s); warnings %v", live.Nodes(), truth.Root, truth.Fault, live.Warnings)
	}
	if len(live.Ranking) > 0 && len(live.Ranking[0].Evidence) == 0 {
		t.Errorf("online rank: top candidate %s without evidence", live.Ranking[0].Node)
	}
}

// seriesIdentity returns the cluster of a node and the labels its series
// carry, as exporters in that cluster label them.
func seriesIdentity(nd topology.Node) (string, []string) {
	parts := strings.Split(nd.ID, "/")
	cluster := nd.Cluster
	if cluster == "" && len(parts) > 1 {
		cluster = parts[1]
	}
	var kv []string
	if len(nd.Labels) > 0 {
		for k, v := range nd.Labels {
			if k != "cluster" {
				kv = append(kv, k, v)
			}
		}
		return cluster, kv
	}
	switch {
	case nd.Kind == topology.KindNode && len(parts) == 3:
		kv = []string{"node", parts[2]}
	case len(parts) == 4:
		kv = []string{"namespace", parts[2], string(nd.Kind), parts[3]}
	}
	return cluster, kv
}

// checkSamples compares a few captured series with the written ones, sample
// by sample.
func checkSamples(t *testing.T, want, got *rca.Case, shift time.Duration) {
	t.Helper()
	index := map[[2]string]rca.Series{}
	for _, s := range got.Metrics.Series {
		index[[2]string{s.Node, s.Name}] = s
	}
	gm, wm := got.Metrics, want.Metrics
	checked := 0
	for i, s := range wm.Series {
		if i%7 != 0 {
			continue
		}
		g, ok := index[[2]string{s.Node, s.Name}]
		if !ok {
			continue
		}
		checked++
		for j, v := range s.Values {
			tt := wm.Start + float64(j)*wm.Step + shift.Seconds()
			k := int(math.Round((tt - gm.Start) / gm.Step))
			if k < 0 || k >= len(g.Values) {
				continue
			}
			if gv := g.Values[k]; !(math.IsNaN(v) && math.IsNaN(gv)) && math.Abs(gv-v) > 1e-9*math.Max(1, math.Abs(v)) {
				t.Errorf("%s %s at step %d: captured %v, written %v", s.Node, s.Name, j, gv, v)
				return
			}
		}
	}
	if checked == 0 {
		t.Error("no written series was found in the captured case")
	}
}

// runPanorama runs the panorama binary and fails the test when it exits
// with an error.
func runPanorama(t *testing.T, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(PanoramaBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("panorama %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// TestRCACaptureFromExporters captures a cluster whose pods and nodes are
// measured only by the standard exporters (cAdvisor, kube-state-metrics,
// node-exporter), not by series named as the formats README names them:
// the capture's fallback queries must turn them into the README's series
// through a real federator's PromQL, beside a pod that has the README's
// name itself.
func TestRCACaptureFromExporters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	col := StartCollector(t, "global:\n  external_labels:\n    cluster: east\nscrape_configs: []\n", CollectorOptions{})

	const step = 15 * time.Second
	end := time.Now().Add(-30 * time.Second).Truncate(step)
	start := end.Add(-40 * time.Minute)
	var series []prompb.TimeSeries
	add := func(f func(i int, t time.Time) float64, kv ...string) {
		s := prompb.TimeSeries{Labels: lbls(kv...)}
		for i := 0; !start.Add(time.Duration(i) * step).After(end); i++ {
			tt := start.Add(time.Duration(i) * step)
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: tt.UnixMilli(), Value: f(i, tt)})
		}
		series = append(series, s)
	}
	secs := func(i int) float64 { return float64(i) * step.Seconds() }
	// cart-1: 0.5 cores over two containers, as cAdvisor counts them.
	for _, c := range []string{"app", "sidecar"} {
		add(func(i int, _ time.Time) float64 { return 0.25 * secs(i) },
			"__name__", "container_cpu_usage_seconds_total", "job", "cadvisor", "namespace", "shop", "pod", "cart-1", "container", c)
	}
	// cAdvisor's pod-level series (no container) must not count twice.
	add(func(i int, _ time.Time) float64 { return 0.5 * secs(i) },
		"__name__", "container_cpu_usage_seconds_total", "job", "cadvisor", "namespace", "shop", "pod", "cart-1", "container", "")
	add(func(int, time.Time) float64 { return 3 },
		"__name__", "kube_pod_container_status_restarts_total", "job", "ksm", "namespace", "shop", "pod", "cart-1", "container", "app")
	// cart-2 has the README's own name, and cAdvisor's too: its own wins.
	add(func(int, time.Time) float64 { return 0.75 }, "__name__", "cpu_usage_cores", "job", "rules", "namespace", "shop", "pod", "cart-2")
	add(func(i int, _ time.Time) float64 { return 2 * secs(i) },
		"__name__", "container_cpu_usage_seconds_total", "job", "cadvisor", "namespace", "shop", "pod", "cart-2", "container", "app")
	// n1: ready, and 4 CPUs idle three quarters of the time.
	add(func(int, time.Time) float64 { return 1 },
		"__name__", "kube_node_status_condition", "job", "ksm", "node", "n1", "condition", "Ready", "status", "true")
	for _, cpu := range []string{"0", "1", "2", "3"} {
		add(func(i int, _ time.Time) float64 { return 0.75 * secs(i) },
			"__name__", "node_cpu_seconds_total", "job", "node", "node", "n1", "cpu", cpu, "mode", "idle")
	}
	res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", series)
	if err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}
	fed := StartFederator(t, "--endpoint="+col.GRPCAddr)
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := fed.API.Vector(ctx, `count(last_over_time(node_cpu_seconds_total[10m]))`, time.Now())
		if err != nil || len(v) == 0 {
			return fmt.Errorf("the federator has no node_cpu_seconds_total yet: %v", err)
		}
		return nil
	})
	topo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"nodes": [
 {"id": "cluster/east", "kind": "cluster"},
 {"id": "node/east/n1", "kind": "node", "cluster": "east", "labels": {"node": "n1"}},
 {"id": "pod/east/shop/cart-1", "kind": "pod", "cluster": "east", "labels": {"namespace": "shop", "pod": "cart-1", "node": "n1"}},
 {"id": "pod/east/shop/cart-2", "kind": "pod", "cluster": "east", "labels": {"namespace": "shop", "pod": "cart-2", "node": "n1"}}
], "edges": [
 {"from": "pod/east/shop/cart-1", "to": "node/east/n1", "kind": "runs_on"},
 {"from": "pod/east/shop/cart-2", "to": "node/east/n1", "kind": "runs_on"}
]}`))
	}))
	t.Cleanup(topo.Close)

	capturer, err := online.New(online.Config{FederatorURL: fed.URL, TopologyURLs: []string{topo.URL}, Step: step, Window: 20 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := capturer.Capture(ctx, online.Incident{DetectedAt: end.Add(-5 * time.Minute), Alerts: []rca.Alert{}})
	if err != nil {
		t.Fatal(err)
	}
	if cs.Metrics == nil {
		t.Fatalf("no metrics; warnings %v", cs.Warnings)
	}
	got := map[string][]float64{}
	for _, s := range cs.Metrics.Series {
		got[s.Node+" "+s.Name] = s.Values
	}
	for key, want := range map[string]float64{
		"pod/east/shop/cart-1 cpu_usage_cores": 0.5,
		"pod/east/shop/cart-1 restarts_total":  3,
		"pod/east/shop/cart-2 cpu_usage_cores": 0.75,
		"node/east/n1 ready":                   1,
		"node/east/n1 cpu_utilization":         0.25,
	} {
		vals, ok := got[key]
		if !ok {
			t.Errorf("no series %s; warnings %v", key, cs.Warnings)
			continue
		}
		n := 0
		for _, v := range vals {
			if math.IsNaN(v) {
				continue
			}
			n++
			if math.Abs(v-want) > 1e-6 {
				t.Errorf("%s: %v, want %v", key, v, want)
				break
			}
		}
		if n < len(vals)*9/10 {
			t.Errorf("%s: %d of %d samples", key, n, len(vals))
		}
	}
	if len(got) != 5 {
		t.Errorf("series %v, want the five above", slices.Sorted(maps.Keys(got)))
	}
}
