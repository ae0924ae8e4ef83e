package online

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/panorama-obs/panorama/rca"
)

const block = `{"nodes": [
  {"id": "cluster/east", "kind": "cluster"},
  {"id": "node/east/n1", "kind": "node", "cluster": "east", "labels": {"node": "n1"}},
  {"id": "pod/east/shop/cart-1", "kind": "pod", "cluster": "east", "labels": {"namespace": "shop", "pod": "cart-1", "node": "n1"}},
  {"id": "service/east/shop/cart", "kind": "service", "cluster": "east", "labels": {"namespace": "shop", "service": "cart"}},
  {"id": "database/east/shop/orders", "kind": "database", "cluster": "east", "labels": {"namespace": "shop", "service": "orders"}}
],
"edges": [
  {"from": "service/east/shop/frontend", "to": "service/east/shop/cart", "kind": "calls"},
  {"from": "service/east/shop/cart", "to": "pod/east/shop/cart-1", "kind": "selects"},
  {"from": "service/east/shop/cart", "to": "database/east/shop/orders", "kind": "calls"},
  {"from": "pod/east/shop/cart-1", "to": "node/east/n1", "kind": "runs_on"}
]}`

// fakeProm answers query_range from a table of metric name to series; a
// query is answered with the series of the first name it mentions.
type fakeProm struct {
	mu       sync.Mutex
	queries  []string
	series   map[string][]fakeSeries
	warnings []string
	refuse   string // a name whose queries get a bad_data error
	hang     bool
}

type fakeSeries struct {
	labels map[string]string
	value  func(t time.Time) (float64, bool)
}

func (f *fakeProm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query_range" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	if f.hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if f.refuse != "" && strings.Contains(q, f.refuse+"{") {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"parse error in %s"}`, f.refuse)
		return
	}
	start, _ := strconv.ParseFloat(r.Form.Get("start"), 64)
	end, _ := strconv.ParseFloat(r.Form.Get("end"), 64)
	step, _ := strconv.ParseFloat(r.Form.Get("step"), 64)
	name := strings.TrimPrefix(strings.Fields(strings.NewReplacer("(", " ", "{", " ").Replace(q))[1], "")
	result := []map[string]any{}
	for _, s := range f.series[name] {
		var values [][2]any
		for t := start; t <= end+1e-9; t += step {
			if v, ok := s.value(time.Unix(int64(t), 0)); ok {
				values = append(values, [2]any{t, strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
		if len(values) > 0 {
			result = append(result, map[string]any{"metric": s.labels, "values": values})
		}
	}
	json.NewEncoder(w).Encode(map[string]any{"status": "success", "warnings": f.warnings,
		"data": map[string]any{"resultType": "matrix", "result": result}})
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func serveBlock(t *testing.T, body string) string {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(body))
	}))
}

var detected = time.Date(2026, 11, 23, 4, 40, 0, 0, time.UTC)

func constant(v float64) func(time.Time) (float64, bool) {
	return func(time.Time) (float64, bool) { return v, true }
}

func TestCaptureMapsSeriesAndAlertsToNodes(t *testing.T) {
	prom := &fakeProm{warnings: []string{"partial response: endpoint 10.0.0.9:10901 unreachable"}, series: map[string][]fakeSeries{
		"cpu_usage_cores": {
			{labels: map[string]string{"cluster": "east", "namespace": "shop", "pod": "cart-1", "node": "n1", "job": "x"},
				value: func(t time.Time) (float64, bool) {
					if t.Before(detected.Add(-2 * time.Minute)) {
						return 0.2, true
					}
					return 0.95, true
				}},
			{labels: map[string]string{"cluster": "east", "namespace": "shop", "pod": "gone-1"}, value: constant(1)},
		},
		"latency_p99_seconds": {{labels: map[string]string{"cluster": "east", "namespace": "shop", "service": "cart"}, value: constant(0.1)}},
		"query_latency_p99_seconds": {{labels: map[string]string{"cluster": "east", "namespace": "shop", "service": "orders"},
			value: func(t time.Time) (float64, bool) { return 0.01, t.Before(detected) }}},
		"ready": {{labels: map[string]string{"cluster": "east", "node": "n1"}, value: constant(1)}},
		"ALERTS": {{labels: map[string]string{"__name__": "ALERTS", "alertname": "HighLatency", "alertstate": "firing", "cluster": "east", "namespace": "shop", "service": "cart"},
			value: func(t time.Time) (float64, bool) { return 1, !t.Before(detected) }}},
	}}
	c, err := New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)},
		ExtraMetrics: []string{"query_latency_p99_seconds"}, Now: func() time.Time { return detected.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := c.Capture(context.Background(), Incident{DetectedAt: detected})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(prom.queries), len(DefaultSignals())+1+2; got != want {
		t.Errorf("%d queries, want one per signal and two for alerts: %d", got, want)
	}
	for _, q := range prom.queries {
		if !strings.Contains(q, `cluster=~"east|"`) {
			t.Errorf("query not restricted to the topology's clusters: %s", q)
		}
	}
	m := cs.Metrics
	if m == nil || m.Step != 15 {
		t.Fatalf("metrics %+v", m)
	}
	// Window: 30 min, three quarters before detection.
	if want := float64(detected.Add(-22*time.Minute - 30*time.Second).Unix()); m.Start != want {
		t.Errorf("start %v, want %v", time.Unix(int64(m.Start), 0).UTC(), time.Unix(int64(want), 0).UTC())
	}
	got := map[string]rca.Series{}
	for _, s := range m.Series {
		got[s.Node+" "+s.Name] = s
	}
	for _, k := range []string{"pod/east/shop/cart-1 cpu_usage_cores", "service/east/shop/cart latency_p99_seconds",
		"database/east/shop/orders query_latency_p99_seconds", "node/east/n1 ready"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no series %s; have %v", k, keys(got))
		}
	}
	if len(m.Series) != 4 {
		t.Errorf("%d series, want 4: %v", len(m.Series), keys(got))
	}
	db := got["database/east/shop/orders query_latency_p99_seconds"].Values
	if n := len(db); n != m.Len() || !math.IsNaN(db[n-1]) || db[0] != 0.01 {
		t.Errorf("a series that stops must end in missing samples: %v", db)
	}
	if len(cs.Alerts) != 1 || cs.Alerts[0].Labels["alertname"] != "HighLatency" || !cs.Alerts[0].StartsAt.Equal(detected) || !cs.Alerts[0].EndsAt.IsZero() {
		t.Errorf("alerts %+v", cs.Alerts)
	}
	if _, ok := cs.Alerts[0].Labels["alertstate"]; ok {
		t.Error("alertstate kept in the alert's labels")
	}
	warnings := strings.Join(cs.Warnings, "\n")
	for _, w := range []string{"partial response", "1 series name no topology node", "gone-1"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
	r := rca.Rank(cs, rca.Options{})
	if len(r.Ranking) == 0 || r.Ranking[0].Node != "pod/east/shop/cart-1" {
		t.Errorf("ranking %v", r.Nodes())
	}
}

func TestCaptureErrors(t *testing.T) {
	good := serveBlock(t, block)
	okProm := serve(t, &fakeProm{})
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	for _, tc := range []struct {
		name       string
		federator  string
		topologies []string
		want       string
	}{
		{"unreachable federator", closedURL, []string{good}, "cannot reach the federator " + closedURL},
		{"unreachable topology", okProm, []string{good, closedURL}, "topology " + closedURL},
		{"topology HTTP error", okProm, []string{serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "the Kubernetes topology has not synced yet", http.StatusServiceUnavailable)
		}))}, "503 Service Unavailable: the Kubernetes topology has not synced yet"},
		{"bad topology field", okProm, []string{serveBlock(t, "{\"nodes\": [\n {\"id\": \"node/a/b\", \"kind\": 7}\n], \"edges\": []}")}, "line 2: topology.nodes[0].kind"},
		{"topology not JSON", okProm, []string{serveBlock(t, "<html>")}, "topology "},
		{"empty topology", okProm, []string{serveBlock(t, `{"nodes": [], "edges": []}`)}, "hold no node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{FederatorURL: tc.federator, TopologyURLs: tc.topologies})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Capture(context.Background(), Incident{DetectedAt: detected})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCaptureRefusedQueryIsAWarning(t *testing.T) {
	prom := &fakeProm{refuse: "error_ratio", series: map[string][]fakeSeries{
		"request_rate": {{labels: map[string]string{"cluster": "east", "namespace": "shop", "service": "cart"}, value: constant(10)}},
	}}
	c, err := New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)}})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := c.Capture(context.Background(), Incident{DetectedAt: detected, Alerts: []rca.Alert{}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(cs.Warnings, "\n"), "query for error_ratio failed: bad_data: parse error") {
		t.Errorf("warnings %v", cs.Warnings)
	}
	if cs.Metrics == nil || len(cs.Metrics.Series) != 1 {
		t.Errorf("metrics %+v", cs.Metrics)
	}
	for _, q := range prom.queries {
		if strings.Contains(q, "ALERTS") {
			t.Errorf("the incident has its alerts, yet ALERTS was queried: %s", q)
		}
	}
}

func TestCaptureWithoutMetricsRanksOnAlerts(t *testing.T) {
	c, err := New(Config{FederatorURL: serve(t, &fakeProm{}), TopologyURLs: []string{serveBlock(t, block)}})
	if err != nil {
		t.Fatal(err)
	}
	alert := rca.Alert{Labels: map[string]string{"alertname": "KubePodCrashLooping", "severity": "critical", "cluster": "east", "namespace": "shop", "pod": "cart-1"},
		StartsAt: detected}
	r, err := c.Rank(context.Background(), Incident{Alerts: []rca.Alert{alert}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.Warnings, "\n"), "no metrics") {
		t.Errorf("warnings %v", r.Warnings)
	}
	if len(r.Ranking) == 0 || r.Ranking[0].Node != "pod/east/shop/cart-1" {
		t.Errorf("ranking %v", r.Nodes())
	}
}

func TestCaptureRefusesBadIncidents(t *testing.T) {
	c, err := New(Config{FederatorURL: serve(t, &fakeProm{}), TopologyURLs: []string{serveBlock(t, block)},
		Now: func() time.Time { return detected }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inc  Incident
		want string
	}{
		{Incident{}, "no detection time"},
		{Incident{DetectedAt: detected.Add(time.Hour)}, "is in the future"},
		{Incident{DetectedAt: detected, Start: detected, End: detected.Add(-time.Minute)}, "is empty"},
	} {
		if _, err := c.Capture(context.Background(), tc.inc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.inc, err, tc.want)
		}
	}
}

func TestCaptureTimeout(t *testing.T) {
	prom := &fakeProm{hang: true}
	c, err := New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Capture(context.Background(), Incident{DetectedAt: detected})
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("error %v, want the timeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, _ = New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)}})
	if _, err := c.Capture(ctx, Incident{DetectedAt: detected}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("error %v, want the cancellation", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TopologyURLs: []string{"x"}}, "no federator URL"},
		{Config{FederatorURL: "http://x"}, "no topology URL"},
		{Config{FederatorURL: "http://x", TopologyURLs: []string{"x"}, ExtraMetrics: []string{"not a name"}}, `signal "not a name": not a metric name`},
		{Config{FederatorURL: "http://x", TopologyURLs: []string{"x"}, ExtraMetrics: []string{"ready"}}, "ready: listed twice"},
		{Config{FederatorURL: "http://x", TopologyURLs: []string{"x"}, Window: time.Minute}, "at least 10 steps"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestAlertsFromSeries(t *testing.T) {
	gd := grid{start: detected, step: 15 * time.Second, n: 40}
	at := func(i int) model.Time {
		return model.TimeFromUnixNano(detected.Add(time.Duration(i) * gd.step).UnixNano())
	}
	run := func(from, to int) []model.SamplePair {
		var out []model.SamplePair
		for i := from; i <= to; i++ {
			out = append(out, model.SamplePair{Timestamp: at(i), Value: 1})
		}
		return out
	}
	lbl := model.Metric{"__name__": "ALERTS", "alertname": "A", "alertstate": "firing"}
	old := detected.Add(-48 * time.Hour)
	alerts := model.Matrix{{Metric: lbl, Values: append(run(0, 5), run(20, 39)...)}}
	forState := model.Matrix{{Metric: model.Metric{"__name__": "ALERTS_FOR_STATE", "alertname": "A"},
		Values: []model.SamplePair{{Timestamp: at(0), Value: model.SampleValue(old.Unix())}}}}
	got := alertsFromSeries(alerts, forState, gd)
	if len(got) != 2 {
		t.Fatalf("%d alerts, want 2: %+v", len(got), got)
	}
	if !got[0].StartsAt.Equal(old) || !got[0].EndsAt.Equal(at(6).Time()) {
		t.Errorf("first run: %v–%v, want %v–%v (firing since before the window)", got[0].StartsAt, got[0].EndsAt, old, at(6).Time())
	}
	if !got[1].StartsAt.Equal(at(20).Time()) || !got[1].EndsAt.IsZero() {
		t.Errorf("second run: %v–%v, want %v and still firing", got[1].StartsAt, got[1].EndsAt, at(20).Time())
	}
}

func TestSignalQuery(t *testing.T) {
	sc := scope{clusters: []string{"east", "we.st"}, namespaces: []string{"shop"}}
	var cpu Signal
	for _, s := range DefaultSignals() {
		if s.Name == "cpu_usage_cores" {
			cpu = s
		}
	}
	got := cpu.query(sc, 15*time.Second, 2*time.Minute)
	want := `last_over_time(cpu_usage_cores{cluster=~"east|we\\.st|"}[15s]) or on (cluster, namespace, pod) ` +
		`(sum by (cluster, namespace, pod) (rate(container_cpu_usage_seconds_total{container!="",cluster=~"east|we\\.st|",namespace=~"shop"}[120s])))`
	if got != want {
		t.Errorf("query\n got %s\nwant %s", got, want)
	}
	if got := (Signal{Name: "queue_depth"}).query(scope{}, 30*time.Second, time.Minute); got != `last_over_time(queue_depth{}[30s])` {
		t.Errorf("generic query %s", got)
	}
}

func keys(m map[string]rca.Series) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestQueriesParse checks every query a capture sends with PromQL's own
// parser, with and without label values to restrict it.
func TestQueriesParse(t *testing.T) {
	for _, sc := range []scope{{}, {clusters: []string{"east", "we.st"}, namespaces: []string{"shop", "a|b"}}} {
		for _, s := range append(DefaultSignals(), Signal{Name: "queue_depth"}) {
			q := s.query(sc, 15*time.Second, 2*time.Minute)
			if _, err := parser.ParseExpr(q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
		for _, q := range []string{sc.alertsQuery(time.Minute), sc.forStateQuery(time.Minute)} {
			if _, err := parser.ParseExpr(q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	}
}

func TestCaptureMergesAlertmanager(t *testing.T) {
	now := detected.Add(5 * time.Minute)
	prom := &fakeProm{series: map[string][]fakeSeries{
		"ALERTS": {
			{labels: map[string]string{"__name__": "ALERTS", "alertname": "HighLatency", "alertstate": "firing", "cluster": "east", "namespace": "shop", "service": "cart"},
				value: func(t time.Time) (float64, bool) { return 1, !t.Before(detected) }},
			{labels: map[string]string{"__name__": "ALERTS", "alertname": "NodeDown", "alertstate": "firing", "cluster": "east", "node": "n1"},
				value: func(t time.Time) (float64, bool) { return 1, !t.Before(detected) }},
		},
	}}
	am := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/alerts" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `[
 {"labels": {"alertname": "HighLatency", "cluster": "east", "namespace": "shop", "service": "cart"}, "annotations": {"summary": "p99 above 1s"},
  "startsAt": %q, "endsAt": %q, "status": {"state": "active"}, "fingerprint": "a"},
 {"labels": {"alertname": "KubePodCrashLooping", "cluster": "east", "namespace": "shop", "pod": "cart-1"}, "annotations": {},
  "startsAt": %q, "endsAt": %q, "status": {"state": "active"}, "fingerprint": "b"},
 {"labels": {"alertname": "Later", "cluster": "east"}, "startsAt": %q, "endsAt": %q, "fingerprint": "c"},
 {"labels": {"alertname": "LongGone", "cluster": "east"}, "startsAt": %q, "endsAt": %q, "fingerprint": "d"}
]`, detected.Add(-20*time.Second).Format(time.RFC3339), now.Add(4*time.Minute).Format(time.RFC3339),
			detected.Add(-time.Minute).Format(time.RFC3339), now.Add(4*time.Minute).Format(time.RFC3339),
			now.Add(time.Hour).Format(time.RFC3339), now.Add(2*time.Hour).Format(time.RFC3339),
			detected.Add(-5*time.Hour).Format(time.RFC3339), detected.Add(-4*time.Hour).Format(time.RFC3339))
	}))
	c, err := New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)}, AlertmanagerURL: am,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := c.Capture(context.Background(), Incident{DetectedAt: detected})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range cs.Alerts {
		names = append(names, a.Labels["alertname"])
		if !a.EndsAt.IsZero() {
			t.Errorf("%s: endsAt %v; an active alert has none", a.Labels["alertname"], a.EndsAt)
		}
		if a.Labels["alertname"] == "HighLatency" && (a.Annotations["summary"] == "" || !a.StartsAt.Equal(detected.Add(-20*time.Second))) {
			t.Errorf("HighLatency is ALERTS' copy, not Alertmanager's: %+v", a)
		}
	}
	if want := "KubePodCrashLooping HighLatency NodeDown"; strings.Join(names, " ") != want {
		t.Errorf("alerts %v, want %s", names, want)
	}

	// An Alertmanager that fails leaves ALERTS' alerts and a warning.
	c, _ = New(Config{FederatorURL: serve(t, prom), TopologyURLs: []string{serveBlock(t, block)}, AlertmanagerURL: serve(t, http.NotFoundHandler()),
		Now: func() time.Time { return now }})
	cs, err = c.Capture(context.Background(), Incident{DetectedAt: detected})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Alerts) != 2 || !strings.Contains(strings.Join(cs.Warnings, "\n"), "HTTP 404 Not Found: 404 page not found; the alerts are the federator's ALERTS only") {
		t.Errorf("alerts %d, warnings %v", len(cs.Alerts), cs.Warnings)
	}
}
