package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// counterFuncRE matches the queries in which a Thanos Querier's own
// PromQL evaluation reads counters through its counter-reset iterator
// (thanos-io/thanos#3644): resets() finds none, and rate(), irate() and
// increase() differ from Prometheus' in the last digits.
var counterFuncRE = regexp.MustCompile(`\b(rate|irate|increase|resets)\(`)
var resetsRE = regexp.MustCompile(`\bresets\(`)

// subqueryRE finds a subquery ([range:step] or [range:]).
var subqueryRE = regexp.MustCompile(`\[[0-9a-z]+:[0-9a-z]*\]`)

// TestFederatorWithThanosQuerier runs the real Thanos Querier (v0.42.5,
// built from tools/thanos) next to the federator, both ways:
//
//   - thanos query over a collector and the federator (a federator is a
//     StoreAPI endpoint of component type query) answers as the federator;
//   - a federator over thanos query (a Thanos Querier is an endpoint of the
//     federator) answers exactly as the reference Prometheus.
func TestFederatorWithThanosQuerier(t *testing.T) {
	t.Parallel()
	RequireBinary(t, ThanosPath)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s := startFederatedSetup(t, ctx)
	queries := federatedQueries(s.d)

	tq := StartThanosQuery(t,
		"--endpoint="+s.collectors["east-a"].GRPCAddr,
		"--endpoint="+s.fed.GRPCAddr,
		"--query.replica-label=replica")
	waitForClusters(t, ctx, tq.API, len(federatedClusters))

	// Thanos lists the federator as a query component and the collector
	// as a sidecar, with their label sets.
	t.Run("thanos stores", func(t *testing.T) {
		r, err := tq.API.Do(ctx, false, "stores", nil)
		if err != nil {
			t.Fatal(err)
		}
		var stores map[string][]struct {
			Name      string              `json:"name"`
			LabelSets []map[string]string `json:"labelSets"`
		}
		if err := json.Unmarshal(r.Data, &stores); err != nil {
			t.Fatalf("%v: %s", err, r.Body)
		}
		found := map[string]int{}
		for typ, eps := range stores {
			for _, ep := range eps {
				switch ep.Name {
				case s.fed.GRPCAddr:
					found["fed"]++
					if typ != "query" || len(ep.LabelSets) != 4 {
						t.Errorf("thanos lists the federator as %s with %v, want query with the 4 collectors' label sets", typ, ep.LabelSets)
					}
				case s.collectors["east-a"].GRPCAddr:
					found["col"]++
					if typ != "sidecar" || len(ep.LabelSets) != 1 || ep.LabelSets[0]["cluster"] != "east" || ep.LabelSets[0]["replica"] != "a" {
						t.Errorf("thanos lists the collector as %s with %v", typ, ep.LabelSets)
					}
				}
			}
		}
		if found["fed"] != 1 || found["col"] != 1 {
			t.Errorf("thanos /api/v1/stores: %s", r.Body)
		}
	})

	// Exactly equal but for the counter functions, which Thanos' own
	// engine input differs on (see counterFuncRE): those are compared to
	// 1e-12 relative, and resets() not at all.
	// Over the federator alone: the Querier above also reaches east-a
	// directly, so it receives that replica twice, and which copy its
	// counter-aware dedup starts from depends on which answer arrives
	// first (seen: 4 % apart on max_over_time(rate(…)[10m:45s]) at the
	// staleness instant, once in a few runs under load).
	tqFed := StartThanosQuery(t, "--endpoint="+s.fed.GRPCAddr, "--query.replica-label=replica")
	waitForClusters(t, ctx, tqFed.API, len(federatedClusters))
	t.Run("thanos query over the federator", func(t *testing.T) {
		tq := tqFed
		var exact, approx []equalQuery
		for _, q := range queries {
			switch {
			case resetsRE.MatchString(q.q):
			case counterFuncRE.MatchString(q.q):
				approx = append(approx, q)
			default:
				exact = append(exact, q)
			}
		}
		compareAPIs(t, ctx, s.d, exact, "thanos query", tq.API, s.fed.API)
		n := 0
		for _, q := range approx {
			for _, at := range federatedInstants(s.d) {
				if at.name == "on-staleness" && subqueryRE.MatchString(q.q) {
					// A counter function evaluated at many steps across
					// the instant where the series go stale: the Querier's
					// counter-aware dedup of the two (identical) replicas
					// there depends on which replica's series reaches it
					// first, which the federator's StoreAPI does not fix
					// (the Querier asks it to drop the replica label, so
					// both come with the same labels). Seen: 4 % apart on
					// max_over_time(rate(…)[10m:45s]) once in a few runs,
					// also with the federator as the only endpoint.
					continue
				}
				g, err := tq.API.Query(ctx, q.q, at.ts)
				if err != nil {
					t.Fatal(err)
				}
				w, err := s.fed.API.Query(ctx, q.q, at.ts)
				if err != nil {
					t.Fatal(err)
				}
				n++
				if diff := approxDiff(g, w, 1e-12); diff != "" {
					t.Errorf("instant@%s %s: thanos query differs beyond 1e-12: %s", at.name, q.q, diff)
				}
			}
		}
		t.Logf("thanos query: %d answers of %d counter-function queries equal to 1e-12", n, len(approx))
	})

	t.Run("federator over thanos query", func(t *testing.T) {
		top := StartFederator(t, "--endpoint="+tq.GRPCAddr, "--query.replica-label=replica")
		waitForClusters(t, ctx, top.API, len(federatedClusters))
		compareAPIs(t, ctx, s.d, queries, "federator over thanos query", top.API, s.ref.API)
	})
}

// approxDiff compares two instant-vector answers: same status, same
// series and timestamps, values within tol relative.
func approxDiff(got, want *Response, tol float64) string {
	if got.Status != want.Status || got.ErrorType != want.ErrorType {
		return fmt.Sprintf("status %s %s %q, want %s %s %q", got.Status, got.ErrorType, got.Error, want.Status, want.ErrorType, want.Error)
	}
	if want.Status != "success" {
		return ""
	}
	type item struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	decode := func(r *Response) (map[string]item, error) {
		var d struct {
			Result []item `json:"result"`
		}
		if err := json.Unmarshal(r.Data, &d); err != nil {
			return nil, err
		}
		out := map[string]item{}
		for _, it := range d.Result {
			out[canonical(it.Metric)] = it
		}
		return out, nil
	}
	g, err := decode(got)
	if err != nil {
		return err.Error()
	}
	w, err := decode(want)
	if err != nil {
		return err.Error()
	}
	if len(g) != len(w) {
		return fmt.Sprintf("%d series, want %d", len(g), len(w))
	}
	for k, wi := range w {
		gi, ok := g[k]
		if !ok {
			return "missing " + k
		}
		if !reflect.DeepEqual(gi.Value[0], wi.Value[0]) {
			return fmt.Sprintf("%s at %v, want %v", k, gi.Value[0], wi.Value[0])
		}
		gs, _ := gi.Value[1].(string)
		ws, _ := wi.Value[1].(string)
		gv, _ := strconv.ParseFloat(gs, 64)
		wv, _ := strconv.ParseFloat(ws, 64)
		if gs == ws || (math.IsNaN(gv) && math.IsNaN(wv)) {
			continue
		}
		if math.Abs(gv-wv) > tol*math.Max(math.Abs(gv), math.Abs(wv)) {
			return fmt.Sprintf("%s = %s, want %s", k, gs, ws)
		}
	}
	return ""
}

// TestFederatorMetadataThroughThanosSidecar: a real Thanos sidecar next to
// the reference Prometheus (scraping itself) serves Thanos' Metadata API;
// the federator's /api/v1/metadata over it equals Prometheus' own.
func TestFederatorMetadataThroughThanosSidecar(t *testing.T) {
	t.Parallel()
	bin := RequireBinary(t, ThanosPath)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prom := StartReferencePrometheus(t, `
global:
  scrape_interval: 1s
  external_labels:
    cluster: sidecar-test
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{{WEB}}"]
`)
	sidecar, addrs := startWithRetry(t, 2, func(addrs []string) (*Process, string, error) {
		p, err := startProcess(t, "thanos-sidecar", bin, "sidecar",
			"--prometheus.url="+prom.URL,
			"--tsdb.path="+prom.DataDir,
			"--http-address="+addrs[0],
			"--grpc-address="+addrs[1])
		return p, "http://" + addrs[0] + "/-/ready", err
	})
	_ = sidecar
	fed := StartFederator(t, "--endpoint="+addrs[1])

	type meta struct{ Type, Help, Unit string }
	read := func(api *API) (map[string][]meta, error) {
		r, err := api.Do(ctx, false, "metadata", nil)
		if err != nil {
			return nil, err
		}
		if r.Status != "success" || len(r.Warnings) > 0 {
			return nil, fmt.Errorf("%s: %d %s", api.URL, r.HTTPStatus, r.Body)
		}
		var m map[string][]meta
		return m, json.Unmarshal(r.Data, &m)
	}
	var n int
	Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		want, err := read(prom.API)
		if err != nil {
			return err
		}
		if _, ok := want["prometheus_build_info"]; !ok {
			return fmt.Errorf("Prometheus has not scraped itself yet")
		}
		got, err := read(fed.API)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("federator's metadata (%d metrics) differs from Prometheus' (%d metrics)", len(got), len(want))
		}
		n = len(want)
		return nil
	})
	for _, params := range []url.Values{
		{"metric": {"prometheus_http_requests_total"}},
		{"limit": {"3"}},
	} {
		r, err := fed.API.Do(ctx, false, "metadata", params)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string][]meta
		_ = json.Unmarshal(r.Data, &m)
		if len(m) == 0 || (params.Has("limit") && len(m) != 3) || (params.Has("metric") && len(m) != 1) {
			t.Errorf("metadata %v: %s", params, r.Body)
		}
	}
	t.Logf("the federator's /api/v1/metadata equals Prometheus' (%d metrics) through a Thanos sidecar", n)
}
