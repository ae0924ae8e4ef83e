package federation

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// suite are queries whose answers through the federator must equal those of
// one Prometheus holding all the leaves' data.
var suite = []string{
	`up`,
	`sum(up)`,
	`count by (cluster) (up)`,
	`sum by (cluster) (rate(http_requests_total[5m]))`,
	`sum by (cluster, code) (increase(http_requests_total[2m]))`,
	`rate(http_requests_total{code="500"}[1m])`,
	`histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.5, sum by (cluster, le) (rate(http_request_duration_seconds_bucket[5m])))`,
	`topk(3, http_requests_total)`,
	`bottomk(1, sum by (cluster) (http_requests_total))`,
	`avg by (job) (http_requests_total)`,
	`max(http_requests_total) - min(http_requests_total)`,
	`count(up{cluster="east"})`,
	`http_requests_total offset 2m`,
	fmt.Sprintf(`http_requests_total @ %d`, ts(20)/1000),
	`max_over_time(rate(http_requests_total[1m])[5m:30s])`,
	`label_replace(up, "dc", "$1", "cluster", "(.*)")`,
	`sum(rate(http_requests_total{cluster="east"}[5m])) / sum(rate(http_requests_total{cluster="west"}[5m]))`,
	`up{cluster="east"} + on (instance, job) group_left up{cluster="west"}`,
	`http_requests_total{cluster="east"} / ignoring (cluster) http_requests_total{cluster="west"}`,
	`absent(nonexistent_metric)`,
	`count({cluster="east"})`,
	`count by (__name__) ({cluster=~"east|west"})`,
	`1 + 1`,
	`vector(time())`,
}

// TestUnionOfLeaves is (a): two leaves with different cluster labels answer
// as one Prometheus holding both, for instant and range queries, GET and
// POST.
func TestUnionOfLeaves(t *testing.T) {
	east, west := workload(1), workload(3)
	le := startLeaf(t, labels.FromStrings("cluster", "east"), east)
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), west)
	ref := newReference(t, map[string][]testSeries{`cluster=east`: east, `cluster=west`: west})
	fed := startFederator(t, testOptions(le.addr, lw.addr))

	for _, q := range suite {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			kind := "instant"
			if params.Has("step") {
				kind = "range"
			}
			path := "/api/v1/query"
			if kind == "range" {
				path = "/api/v1/query_range"
			}
			call := get
			if len(q)%2 == 0 {
				call = post
			}
			r := call(t, fed.url, path, params)
			mustSucceed(t, kind+" "+q, r)
			if got, want := normalized(r.Data), normalized(ref.data(t, params)); got != want {
				t.Errorf("%s %s:\nfederator: %s\nreference: %s", kind, q, got, want)
			}
		}
	}
	r := get(t, fed.url, "/api/v1/query", instant(`up`))
	if got := r.result(t).metrics(); len(got) != 4 {
		t.Errorf("up: want 2 instances in each of 2 clusters, got %q", got)
	}
}

// TestPruneByExternalLabels is (b): a query that names a cluster touches only
// that cluster's leaves.
func TestPruneByExternalLabels(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), workload(2))
	fed := startFederator(t, testOptions(le.addr, lw.addr))

	for _, c := range []struct {
		query      string
		east, west int64
	}{
		{`up{cluster="east"}`, 1, 0},
		{`sum(rate(http_requests_total{cluster="west"}[5m]))`, 0, 1},
		{`up{cluster=~"east|west"}`, 1, 1},
		{`up{cluster!="east"}`, 0, 1},
		{`up{cluster="north"}`, 0, 0},
		{`up`, 1, 1},
	} {
		le.series.Store(0)
		lw.series.Store(0)
		r := get(t, fed.url, "/api/v1/query", instant(c.query))
		mustSucceed(t, c.query, r)
		if e, w := le.series.Load(), lw.series.Load(); e != c.east || w != c.west {
			t.Errorf("%s: Series calls east=%d west=%d, want east=%d west=%d", c.query, e, w, c.east, c.west)
		}
	}
	// The label APIs prune the same way.
	le.series.Store(0)
	lw.series.Store(0)
	r := get(t, fed.url, "/api/v1/series", url.Values{"match[]": {`up{cluster="east"}`}})
	mustSucceed(t, "series", r)
	if e, w := le.series.Load(), lw.series.Load(); e != 1 || w != 0 {
		t.Errorf("series: Series calls east=%d west=%d, want 1 and 0", e, w)
	}
}

// TestHAPairDeduplicated is (c): two replicas of one cluster, one with a gap,
// answer as one complete copy; without dedup both replicas show.
func TestHAPairDeduplicated(t *testing.T) {
	full := workload(2)
	var gappy []testSeries
	for _, s := range full {
		g := testSeries{lset: s.lset}
		for _, smp := range s.samples {
			// Replica b was down for three minutes.
			if smp.t >= ts(12) && smp.t < ts(24) {
				continue
			}
			g.samples = append(g.samples, smp)
		}
		gappy = append(gappy, g)
	}
	la := startLeaf(t, labels.FromStrings("cluster", "east", "replica", "a"), full)
	lb := startLeaf(t, labels.FromStrings("cluster", "east", "replica", "b"), gappy)
	ref := newReference(t, map[string][]testSeries{`cluster=east`: full})
	opts := testOptions(la.addr, lb.addr)
	opts.ReplicaLabels = []string{"replica"}
	fed := startFederator(t, opts)

	for _, q := range []string{`up`, `sum(rate(http_requests_total[5m]))`, `http_requests_total`, `histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`} {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			r := post(t, fed.url, "/api/v1/query_range", params)
			if !params.Has("step") {
				r = post(t, fed.url, "/api/v1/query", params)
			}
			mustSucceed(t, q, r)
			if got, want := normalized(r.Data), normalized(ref.data(t, params)); got != want {
				t.Errorf("%s (step %q):\nfederator: %s\nreference: %s", q, params.Get("step"), got, want)
			}
		}
	}
	params := instant(`up`)
	params.Set("dedup", "false")
	r := get(t, fed.url, "/api/v1/query", params)
	mustSucceed(t, "up dedup=false", r)
	got := r.result(t).metrics()
	if len(got) != 4 || !strings.Contains(strings.Join(got, " "), `replica="b"`) {
		t.Errorf("up with dedup=false: want both replicas of 2 instances, got %q", got)
	}
}

// TestLeafKilled is (d): a dead leaf gives a partial answer naming it, an
// error with partial_response=false, and full answers once it is back.
func TestLeafKilled(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), workload(2))
	fed := startFederator(t, testOptions(le.addr, lw.addr))
	mustSucceed(t, "before", get(t, fed.url, "/api/v1/query", instant(`up`)))

	lw.stop()
	check := func(when string) {
		t.Helper()
		r := get(t, fed.url, "/api/v1/query", instant(`up`))
		if r.Status != "success" {
			t.Fatalf("%s: partial response: %d %s %s", when, r.code, r.ErrorType, r.Error)
		}
		if got := r.result(t).metrics(); len(got) != 2 || strings.Contains(strings.Join(got, ""), "west") {
			t.Errorf("%s: want east's 2 series only, got %q", when, got)
		}
		if len(r.Warnings) == 0 || !strings.Contains(strings.Join(r.Warnings, "\n"), lw.addr) {
			t.Errorf("%s: want a warning naming %s, got %q", when, lw.addr, r.Warnings)
		}
		// A query the dead leaf could not answer anyway gets no warning.
		r = get(t, fed.url, "/api/v1/query", instant(`up{cluster="east"}`))
		mustSucceed(t, when+": east only", r)

		p := instant(`up`)
		p.Set("partial_response", "false")
		r = post(t, fed.url, "/api/v1/query", p)
		if r.Status != "error" || r.code/100 != 4 || !strings.Contains(r.Error, lw.addr) {
			t.Errorf("%s: partial_response=false: want a 4xx error naming %s, got %d %s %s: %s", when, lw.addr, r.code, r.Status, r.ErrorType, r.Error)
		}
		for _, path := range []string{"/api/v1/labels", "/api/v1/label/job/values"} {
			r = get(t, fed.url, path, nil)
			if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), lw.addr) {
				t.Errorf("%s: %s: want success with a warning naming %s, got %d %s %q", when, path, lw.addr, r.code, r.Error, r.Warnings)
			}
		}
	}
	// At once, before the federator's next Info round notices...
	check("just killed")
	// ...and once it has marked the endpoint unhealthy.
	eventually(t, 5*time.Second, func() error {
		for _, st := range fed.f.Endpoints() {
			if st.Name == lw.addr && st.LastError != nil {
				return nil
			}
		}
		return fmt.Errorf("%s not marked unhealthy: %+v", lw.addr, fed.f.Endpoints())
	})
	check("marked unhealthy")

	lw.start()
	eventually(t, 5*time.Second, func() error {
		r := get(t, fed.url, "/api/v1/query", instant(`up`))
		if r.Status != "success" || len(r.Warnings) > 0 || len(r.result(t).metrics()) != 4 {
			return fmt.Errorf("after restart: %s %q %q", r.Status, r.Warnings, r.result(t).metrics())
		}
		return nil
	})
}

// TestHangingLeaf is (e): neither a leaf that accepts TCP and never speaks,
// nor one that stops answering mid-way, makes the federator wait longer
// than --query.endpoint-timeout.
func TestHangingLeaf(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lh := startLeaf(t, labels.FromStrings("cluster", "west"), workload(2))
	silent := silentListener(t)
	opts := testOptions(le.addr, lh.addr, silent)
	opts.EndpointTimeout = time.Second
	fed := startFederator(t, opts)

	timed := func(what string, f func() apiResponse) apiResponse {
		t.Helper()
		start := time.Now()
		r := f()
		if took := time.Since(start); took > opts.EndpointTimeout+time.Second {
			t.Errorf("%s took %s, want at most the endpoint timeout %s (plus slack)", what, took, opts.EndpointTimeout)
		} else {
			t.Logf("%s answered in %s", what, took.Round(time.Millisecond))
		}
		return r
	}
	r := timed("query with a silent endpoint", func() apiResponse { return get(t, fed.url, "/api/v1/query", instant(`up`)) })
	if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), silent) {
		t.Errorf("silent endpoint: want a partial answer naming %s, got %d %s %q", silent, r.code, r.Error, r.Warnings)
	}
	if got := r.result(t).metrics(); len(got) != 4 {
		t.Errorf("silent endpoint: want the 4 series of the two live leaves, got %q", got)
	}

	lh.hang.Store(true)
	for _, c := range []struct {
		path   string
		params url.Values
	}{
		{"/api/v1/query", instant(`up`)},
		{"/api/v1/query_range", rangeQ(`sum(rate(http_requests_total[5m]))`)},
		{"/api/v1/series", url.Values{"match[]": {`up`}}},
		{"/api/v1/labels", url.Values{"match[]": {`up`}}},
	} {
		r := timed(c.path+" with a hanging leaf", func() apiResponse { return get(t, fed.url, c.path, c.params) })
		if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), lh.addr) {
			t.Errorf("%s with a hanging leaf: want a partial answer naming %s, got %d %s %q", c.path, lh.addr, r.code, r.Error, r.Warnings)
		}
	}
	p := instant(`up`)
	p.Set("partial_response", "false")
	r = timed("partial_response=false with a hanging leaf", func() apiResponse { return get(t, fed.url, "/api/v1/query", p) })
	if r.Status != "error" {
		t.Errorf("partial_response=false with a hanging leaf: want an error, got %s", r.Status)
	}

	// A healthy leaf replaced, between two Info rounds, by a process that
	// accepts TCP and never speaks: the federator's connection to it
	// never becomes ready, and opening a stream waits at most the
	// endpoint timeout.
	lr := startLeaf(t, labels.FromStrings("cluster", "south"), workload(3))
	slow := testOptions(le.addr, lr.addr)
	slow.EndpointTimeout = time.Second
	slow.EndpointInfoInterval = time.Minute
	fed2 := startFederator(t, slow)
	mustSucceed(t, "before the swap", get(t, fed2.url, "/api/v1/query", instant(`up`)))
	lr.stop()
	silentListenerAt(t, lr.addr)
	r = timed("query with a wedged replacement", func() apiResponse { return get(t, fed2.url, "/api/v1/query", instant(`up`)) })
	if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), lr.addr) || len(r.result(t).metrics()) != 2 {
		t.Errorf("wedged replacement: want east's answer with a warning naming %s, got %d %s %q %q", lr.addr, r.code, r.Error, r.Warnings, r.result(t).metrics())
	}
	r = timed("labels with a wedged replacement", func() apiResponse { return get(t, fed2.url, "/api/v1/labels", nil) })
	if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), lr.addr) {
		t.Errorf("labels, wedged replacement: want a warning naming %s, got %d %s %q", lr.addr, r.code, r.Error, r.Warnings)
	}
}

// TestCascade is (f): a federator over a federator answers as the lower one
// does, and as one Prometheus holding everything; the lower federator's
// own --label is attached to everything it serves.
func TestCascade(t *testing.T) {
	east, west, north := workload(1), workload(2), workload(5)
	le := startLeaf(t, labels.FromStrings("cluster", "east"), east)
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), west)
	ln := startLeaf(t, labels.FromStrings("cluster", "north"), north)
	eu := testOptions(le.addr, lw.addr)
	eu.ExternalLabels = labels.FromStrings("region", "eu")
	region := startFederator(t, eu)
	us := testOptions(ln.addr)
	us.ExternalLabels = labels.FromStrings("region", "us")
	region2 := startFederator(t, us)
	global := startFederator(t, testOptions(region.f.GRPCAddr(), region2.f.GRPCAddr()))
	ref := newReference(t, map[string][]testSeries{
		`cluster=east,region=eu`: east, `cluster=west,region=eu`: west, `cluster=north,region=us`: north,
	})
	refEU := newReference(t, map[string][]testSeries{`cluster=east,region=eu`: east, `cluster=west,region=eu`: west})

	queries := append(slices.Clone(suite),
		`sum by (region) (rate(http_requests_total[5m]))`,
		`count by (region, cluster) (up)`,
		`up{region="eu"}`,
		`count({region="us"})`,
	)
	for _, q := range queries {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			top := get(t, global.url, path, params)
			mustSucceed(t, "global "+q, top)
			if got, want := normalized(top.Data), normalized(ref.data(t, params)); got != want {
				t.Errorf("global %s %s:\ngot:  %s\nwant: %s", path, q, got, want)
			}
			mid := get(t, region.url, path, params)
			mustSucceed(t, "region "+q, mid)
			if got, want := normalized(mid.Data), normalized(refEU.data(t, params)); got != want {
				t.Errorf("region %s %s:\ngot:  %s\nwant: %s", path, q, got, want)
			}
		}
	}

	// Routing by the region label reaches only that region's leaves.
	le.series.Store(0)
	ln.series.Store(0)
	mustSucceed(t, "us only", get(t, global.url, "/api/v1/query", instant(`up{region="us"}`)))
	if e, n := le.series.Load(), ln.series.Load(); e != 0 || n != 1 {
		t.Errorf(`up{region="us"}: Series calls east=%d north=%d, want 0 and 1`, e, n)
	}

	// Label names and values see the region label too.
	r := get(t, global.url, "/api/v1/label/region/values", nil)
	mustSucceed(t, "region values", r)
	if string(r.Data) != `["eu","us"]` {
		t.Errorf("region values: %s", r.Data)
	}
	r = get(t, global.url, "/api/v1/label/region/values", url.Values{"match[]": {`up{cluster="north"}`}})
	mustSucceed(t, "region values of north", r)
	if string(r.Data) != `["us"]` {
		t.Errorf("region values of north: %s", r.Data)
	}
	r = get(t, global.url, "/api/v1/labels", url.Values{"match[]": {`up`}})
	mustSucceed(t, "labels", r)
	if string(r.Data) != `["__name__","cluster","instance","job","region"]` {
		t.Errorf("labels of up: %s", r.Data)
	}

	// A leaf killed two levels down is named at the top.
	lw.stop()
	r = get(t, global.url, "/api/v1/query", instant(`up`))
	if r.Status != "success" || !strings.Contains(strings.Join(r.Warnings, "\n"), lw.addr) {
		t.Errorf("leaf killed under the region: want a partial answer naming %s at the top, got %d %s %q", lw.addr, r.code, r.Error, r.Warnings)
	}
	p := instant(`up`)
	p.Set("partial_response", "false")
	if r = get(t, global.url, "/api/v1/query", p); r.Status != "error" || !strings.Contains(r.Error, lw.addr) {
		t.Errorf("leaf killed under the region, partial_response=false: want an error naming %s, got %s %s", lw.addr, r.Status, r.Error)
	}
}

// TestStoresShape is (g): /api/v1/stores lists the endpoints by component
// type, as a Thanos Querier does, with the unhealthy ones marked.
func TestStoresShape(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), workload(1))
	dead := startLeaf(t, labels.FromStrings("cluster", "gone"), workload(1))
	fed := startFederator(t, testOptions(le.addr, lw.addr, dead.addr))
	dead.stop()
	never := silentListener(t)
	upper := startFederator(t, testOptions(fed.f.GRPCAddr(), never))

	eventually(t, 5*time.Second, func() error {
		r := get(t, fed.url, "/api/v1/stores", nil)
		var data map[string][]map[string]any
		if err := json.Unmarshal(r.Data, &data); err != nil {
			return err
		}
		if r.Status != "success" || len(data) != 1 || len(data["sidecar"]) != 3 {
			return fmt.Errorf("want 3 sidecars, got %s", r.Data)
		}
		for _, st := range data["sidecar"] {
			for _, k := range []string{"name", "lastCheck", "lastError", "labelSets", "minTime", "maxTime"} {
				if _, ok := st[k]; !ok {
					return fmt.Errorf("%v has no %q", st, k)
				}
			}
			sets, _ := json.Marshal(st["labelSets"])
			switch st["name"] {
			case le.addr, lw.addr:
				if st["lastError"] != nil {
					return fmt.Errorf("%s: lastError %v", st["name"], st["lastError"])
				}
				if want := map[any]string{le.addr: `[{"cluster":"east"}]`, lw.addr: `[{"cluster":"west"}]`}[st["name"]]; string(sets) != want {
					return fmt.Errorf("%s: labelSets %s, want %s", st["name"], sets, want)
				}
				if st["minTime"].(float64) != float64(ts(0)) {
					return fmt.Errorf("%s: minTime %v, want %d", st["name"], st["minTime"], ts(0))
				}
			case dead.addr:
				if e, _ := st["lastError"].(string); e == "" {
					return fmt.Errorf("dead %s: want a lastError, got %v", dead.addr, st["lastError"])
				}
				// Its labels are remembered, so queries can still be
				// pruned by them and warned about.
				if string(sets) != `[{"cluster":"gone"}]` {
					return fmt.Errorf("dead %s: labelSets %s", dead.addr, sets)
				}
			default:
				return fmt.Errorf("unexpected endpoint %v", st["name"])
			}
		}
		return nil
	})

	r := get(t, upper.url, "/api/v1/stores", nil)
	var data map[string][]map[string]any
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatal(err)
	}
	if len(data["query"]) != 1 || data["query"][0]["name"] != fed.f.GRPCAddr() {
		t.Errorf("upper federator: want the lower one as a query endpoint, got %s", r.Data)
	}
	if len(data["unknown"]) != 1 || data["unknown"][0]["name"] != never || data["unknown"][0]["lastError"] == nil {
		t.Errorf("upper federator: want the silent endpoint as unknown with an error, got %s", r.Data)
	}
	if got, _ := json.Marshal(data["query"][0]["labelSets"]); !strings.Contains(string(got), `{"cluster":"east"}`) || !strings.Contains(string(got), `{"cluster":"gone"}`) {
		t.Errorf("upper federator: the lower one's label sets should be its endpoints', got %s", got)
	}
}

// TestGrafanaDataSource walks what Grafana's Prometheus data source calls:
// the health check, the query editor's metadata, series, labels and label
// values with match[], start, end and limit, and buildinfo.
func TestGrafanaDataSource(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lw := startLeaf(t, labels.FromStrings("cluster", "west"), workload(2))
	fed := startFederator(t, testOptions(le.addr, lw.addr))
	start, end := fmt.Sprint(ts(0)/1000), fmt.Sprint(ts(40)/1000)

	mustSucceed(t, "health check", post(t, fed.url, "/api/v1/query", url.Values{"query": {"1+1"}, "time": {end}}))
	for _, c := range []struct {
		path   string
		params url.Values
		want   string
	}{
		{"/api/v1/status/buildinfo", nil, `"version"`},
		{"/api/v1/metadata", nil, `{}`},
		{"/api/v1/labels", url.Values{"start": {start}, "end": {end}}, `["__name__","cluster","code","instance","job","le"]`},
		{"/api/v1/labels", url.Values{"match[]": {`up`}, "start": {start}, "end": {end}}, `["__name__","cluster","instance","job"]`},
		{"/api/v1/labels", url.Values{"match[]": {`up`}, "start": {start}, "end": {end}, "limit": {"2"}}, `["__name__","cluster"]`},
		{"/api/v1/label/__name__/values", url.Values{"start": {start}, "end": {end}}, `["http_request_duration_seconds_bucket","http_requests_total","up"]`},
		{"/api/v1/label/cluster/values", url.Values{"match[]": {`http_requests_total`}, "start": {start}, "end": {end}}, `["east","west"]`},
		{"/api/v1/label/instance/values", url.Values{"match[]": {`up{cluster="west"}`}, "start": {start}, "end": {end}, "limit": {"1"}}, `["a:9100"]`},
		{"/api/v1/series", url.Values{"match[]": {`up{cluster="east"}`}, "start": {start}, "end": {end}}, `[{"__name__":"up","cluster":"east","instance":"a:9100","job":"node"},{"__name__":"up","cluster":"east","instance":"b:9100","job":"node"}]`},
		{"/api/v1/series", url.Values{"match[]": {`up`, `http_requests_total{code="500"}`}, "start": {start}, "end": {end}, "limit": {"1"}}, `[{"__name__":"http_requests_total","cluster":"east","code":"500","instance":"a:9100","job":"api"}]`},
		{"/api/v1/targets", nil, `"activeTargets":[]`},
		{"/api/v1/rules", nil, `"groups":[]`},
		{"/api/v1/alerts", nil, `"alerts":[]`},
		{"/api/v1/query_exemplars", url.Values{"query": {`up`}, "start": {start}, "end": {end}}, `[]`},
		{"/api/v1/status/runtimeinfo", nil, `"startTime"`},
		{"/api/v1/status/config", nil, `"yaml"`},
	} {
		calls := []func(testing.TB, string, string, url.Values) apiResponse{get}
		if c.path == "/api/v1/labels" || c.path == "/api/v1/series" {
			// Where Prometheus accepts POST, Grafana may use it.
			calls = append(calls, post)
		}
		for _, call := range calls {
			r := call(t, fed.url, c.path, c.params)
			if r.Status != "success" || !strings.Contains(string(r.Data), c.want) {
				t.Errorf("%s %v: got %d %s %s %s, want data containing %s", c.path, c.params, r.code, r.Status, r.Error, r.Data, c.want)
			}
		}
	}
	// A browser's cross-origin call is answered, with CORS headers.
	req, _ := http.NewRequest(http.MethodGet, fed.url+"/api/v1/query?query=1", nil)
	req.Header.Set("Origin", "http://grafana.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("cross-origin query: %d, Access-Control-Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestBadInputAndLimits: invalid PromQL and parameters are 400 bad_data;
// the limits answer with Prometheus' error types.
func TestBadInputAndLimits(t *testing.T) {
	le := startLeaf(t, labels.FromStrings("cluster", "east"), workload(1))
	lh := startLeaf(t, labels.FromStrings("cluster", "west"), workload(1))
	opts := testOptions(le.addr, lh.addr)
	opts.QueryMaxSamples = 100
	opts.QueryMaxConcurrent = 1
	opts.QueryTimeout = time.Second
	opts.EndpointTimeout = 5 * time.Second
	fed := startFederator(t, opts)

	for _, c := range []struct {
		path     string
		params   url.Values
		code     int
		errType  string
		contains string
	}{
		{"/api/v1/query", url.Values{"query": {"sum(up"}}, 400, "bad_data", "parse error"},
		{"/api/v1/query", url.Values{"query": {"up"}, "time": {"yesterday"}}, 400, "bad_data", `invalid parameter "time"`},
		{"/api/v1/query_range", url.Values{"query": {"up"}, "start": {"1"}, "end": {"0"}, "step": {"1"}}, 400, "bad_data", "end timestamp must not be before start"},
		{"/api/v1/query", url.Values{"query": {"up"}, "partial_response": {"maybe"}}, 400, "bad_data", `invalid parameter "partial_response"`},
		{"/api/v1/query", url.Values{"query": {"up"}, "dedup": {"2"}}, 400, "bad_data", `invalid parameter "dedup"`},
		{"/api/v1/series", nil, 400, "bad_data", "no match[] parameter provided"},
		{"/api/v1/query_range", rangeQ(`http_requests_total`), 422, "execution", "too many samples"},
	} {
		r := get(t, fed.url, c.path, c.params)
		if r.code != c.code || r.ErrorType != c.errType || !strings.Contains(r.Error, c.contains) {
			t.Errorf("%s %v: got %d %s %q, want %d %s containing %q", c.path, c.params, r.code, r.ErrorType, r.Error, c.code, c.errType, c.contains)
		}
	}

	// A query that outlives --query.timeout (held by a hanging leaf), and
	// one queued behind it with --query.max-concurrent=1 and a shorter
	// timeout of its own: Prometheus' timeout errors.
	lh.hang.Store(true)
	first := make(chan apiResponse, 1)
	go func() { first <- get(t, fed.url, "/api/v1/query", url.Values{"query": {"up"}}) }()
	time.Sleep(200 * time.Millisecond)
	r := get(t, fed.url, "/api/v1/query", url.Values{"query": {"up"}, "timeout": {"300ms"}})
	// Prometheus' engine queues while parsing too, and its API answers a
	// timeout there as bad_data on the query; while executing, as timeout.
	if !strings.Contains(r.Error, "query timed out in query queue") || !(r.code == 400 && r.ErrorType == "bad_data" || r.code == 503 && r.ErrorType == "timeout") {
		t.Errorf("queued query: got %d %s %q, want a timeout in the query queue", r.code, r.ErrorType, r.Error)
	}
	// The query's deadline and the endpoint's select deadline (both
	// --query.timeout) race: a timeout, or a partial answer naming the leaf;
	// or, when the deadline falls while Prometheus' engine reads the
	// series the other leaf sent, the engine's own answer for that:
	// 422 "expanding series: context deadline exceeded" (seen once in CI).
	r = <-first
	timeout := r.code == http.StatusServiceUnavailable && r.ErrorType == "timeout" && strings.Contains(r.Error, "query timed out in expression evaluation")
	partial := r.Status == "success" && strings.Contains(strings.Join(r.Warnings, "\n"), lh.addr)
	reading := r.code == http.StatusUnprocessableEntity && r.ErrorType == "execution" && r.Error == "expanding series: context deadline exceeded"
	if !timeout && !partial && !reading {
		t.Errorf("query past its timeout: got %d %s %q %q, want a timeout or a partial answer", r.code, r.ErrorType, r.Error, r.Warnings)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, c := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Endpoints = nil }, "no endpoints"},
		{func(o *Options) { o.Endpoints = []string{"localhost"} }, "--endpoint=localhost"},
		{func(o *Options) { o.Endpoints = []string{"dns+collector"} }, "needs a port"},
		{func(o *Options) { o.Endpoints = []string{"srv+x:1"} }, "unknown discovery prefix"},
		{func(o *Options) { o.ReplicaLabels = []string{""} }, "--query.replica-label"},
		{func(o *Options) { o.CORSOrigin = "(" }, "--web.cors.origin"},
		{func(o *Options) { o.QueryMaxConcurrent = 0 }, "--query.max-concurrent"},
	} {
		o := testOptions("127.0.0.1:1")
		c.mutate(&o)
		_, err := New(testLogger(t, "federator"), nil, o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error containing %q, got %v", c.want, err)
		}
	}
}

func TestParseLabels(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
		err  string
	}{
		{[]string{`region="eu"`}, `{region="eu"}`, ""},
		{[]string{`region=eu`, `zone="a b"`}, `{region="eu", zone="a b"}`, ""},
		{[]string{`z="1"`, `a="2"`}, `{a="2", z="1"}`, ""},
		{[]string{`region`}, "", "want name="},
		{[]string{`="a"`}, "", "not a valid label name"},
		{[]string{`__name__="a"`}, "", "not a valid label name"},
		{[]string{`a="unterminated`}, "", "well-quoted"},
		{[]string{`a=""`}, "", "empty"},
		{[]string{`a="1"`, `a="2"`}, "", "twice"},
	} {
		got, err := ParseLabels(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: want error containing %q, got %v", c.in, c.err, err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("%q: got %s %v, want %s", c.in, got, err, c.want)
		}
	}
}

// TestCounterFunctionsReadRawSamples: rate, irate, increase and resets see
// the samples as Prometheus does, counter resets included, with and
// without dedup (a Thanos Querier hides the reset: thanos-io/thanos#3644).
func TestCounterFunctionsReadRawSamples(t *testing.T) {
	var s testSeries
	s.lset = labels.FromStrings("__name__", "jobs_total", "job", "worker")
	v := 0.0
	for i := 0; i <= 40; i++ {
		if i == 20 {
			v = 0 // a restart
		}
		v += 1.1 + float64(i%7)*0.37
		s.samples = append(s.samples, sample{ts(i), v})
	}
	data := []testSeries{s}
	la := startLeaf(t, labels.FromStrings("cluster", "east", "replica", "a"), data)
	lb := startLeaf(t, labels.FromStrings("cluster", "east", "replica", "b"), data)
	ref := newReference(t, map[string][]testSeries{`cluster=east`: data})
	opts := testOptions(la.addr, lb.addr)
	opts.ReplicaLabels = []string{"replica"}
	fed := startFederator(t, opts)
	for _, q := range []string{`resets(jobs_total[10m])`, `rate(jobs_total[5m])`, `irate(jobs_total[1m])`, `increase(jobs_total[10m])`, `sum(rate(jobs_total[2m]))`} {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			r := get(t, fed.url, path, params)
			mustSucceed(t, q, r)
			if got, want := normalized(r.Data), normalized(ref.data(t, params)); got != want {
				t.Errorf("%s %s:\nfederator: %s\nreference: %s", path, q, got, want)
			}
		}
	}
	r := get(t, fed.url, "/api/v1/query", instant(`resets(jobs_total[10m])`))
	if !strings.Contains(string(r.Data), `"1"]`) {
		t.Errorf("resets: %s, want 1", r.Data)
	}
}
