package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFederatorCascadeEqualsReferencePrometheus runs three levels: each
// cluster's HA pair of collectors under its own region federator, both
// regions under a global federator, as a company would stack them (cluster
// → region → global). The answers at the top must equal the reference
// Prometheus holding the union, over the whole suite; and since the regions
// deduplicate their replicas and hold disjoint clusters, the global level
// pushes the aggregations down to them.
func TestFederatorCascadeEqualsReferencePrometheus(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s := startFederatedSetup(t, ctx)

	var regions []*Federator
	for _, cluster := range federatedClusters {
		args := []string{"--query.replica-label=replica"}
		for _, replica := range []string{"a", "b"} {
			args = append(args, "--endpoint="+s.collectors[cluster+"-"+replica].GRPCAddr)
		}
		region := StartFederator(t, args...)
		waitForClusters(t, ctx, region.API, 1)
		regions = append(regions, region)
	}
	global := StartFederator(t, "--endpoint="+regions[0].GRPCAddr, "--endpoint="+regions[1].GRPCAddr, "--query.replica-label=replica")
	waitForClusters(t, ctx, global.API, len(federatedClusters))

	// The global level sees both clusters, deduplicated.
	for q, want := range map[string]string{
		`count(http_requests_total)`: "24",
		`count(rpc_latency_seconds)`: "4",
	} {
		v, err := global.API.Vector(ctx, q, s.d.end)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].V != want {
			t.Errorf("%s at the top: %v, want %s", q, v, want)
		}
	}

	compareAPIs(t, ctx, s.d, federatedQueries(s.d), "global federator over two region federators", global.API, s.ref.API)

	pushed := metricValue(t, ctx, global.URL, `panorama_federator_pushdown_aggregations_total{outcome="pushed"}`)
	t.Logf("aggregations the global federator pushed down to the regions: %v", pushed)
	if pushed < 100 {
		t.Errorf("the global federator pushed %v aggregations down to the regions, want the suite's (≥ 100): the regions hold disjoint clusters", pushed)
	}

	// A region that goes away: the top still answers, for the other
	// region, with a warning naming the missing one.
	regions[1].Kill()
	Eventually(t, 30*time.Second, 250*time.Millisecond, func() error {
		r, err := global.API.Query(ctx, `count by (cluster) (up)`, s.d.end)
		if err != nil {
			return err
		}
		if r.Status != "success" || !strings.Contains(string(r.Data), `"east"`) || strings.Contains(string(r.Data), `"west"`) {
			return fmt.Errorf("with the west region down: %s %s, want east only", r.Status, r.Data)
		}
		if !strings.Contains(strings.Join(r.Warnings, " "), regions[1].GRPCAddr) {
			return fmt.Errorf("with the west region down: warnings %v, want one naming %s", r.Warnings, regions[1].GRPCAddr)
		}
		return nil
	})
}
