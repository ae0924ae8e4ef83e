package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFederatorPushDownEqualsReferencePrometheus runs the reference suite
// through federators with and without push-down, over two clusters with and
// without an HA pair, against Prometheus 3.9.1 holding the union; and checks
// that push-down did happen where it is safe (disjoint clusters) and did not
// where it is not (the replicas of an HA pair hold the same series), and
// that the leaves then send fewer bytes.
func TestFederatorPushDownEqualsReferencePrometheus(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, setup := range []struct {
		name     string
		replicas []string
		// wantPushed: whether the suite's aggregations are evaluated at the
		// leaves (only when no two leaves can hold the same series).
		wantPushed bool
	}{
		{"one collector per cluster", []string{"a"}, true},
		{"HA pair per cluster", []string{"a", "b"}, false},
	} {
		t.Run(setup.name, func(t *testing.T) {
			s := startFederatedSetupReplicas(t, ctx, setup.replicas) // push-down on: the default
			pull := StartFederator(t, append(append(s.endpoints[:len(s.endpoints):len(s.endpoints)], "--query.replica-label=replica"), "--no-query.push-down")...)
			waitForClusters(t, ctx, pull.API, len(federatedClusters))
			queries := federatedQueries(s.d)

			t.Run("push-down", func(t *testing.T) {
				compareAPIs(t, ctx, s.d, queries, "federator with push-down", s.fed.API, s.ref.API)
			})
			t.Run("no push-down", func(t *testing.T) {
				compareAPIs(t, ctx, s.d, queries, "federator without push-down", pull.API, s.ref.API)
			})

			pushed := metricValue(t, ctx, s.fed.URL, `panorama_federator_pushdown_aggregations_total{outcome="pushed"}`)
			fallback := metricValue(t, ctx, s.fed.URL, `panorama_federator_pushdown_aggregations_total{outcome="fallback"}`)
			t.Logf("aggregations pushed down: %v, fallen back to pulling: %v", pushed, fallback)
			if setup.wantPushed && pushed < 100 {
				t.Errorf("%v aggregations were pushed down over disjoint clusters, want the suite's (≥ 100)", pushed)
			}
			if !setup.wantPushed && pushed != 0 {
				t.Errorf("%v aggregations were pushed down over HA pairs, want none (the replicas overlap)", pushed)
			}
			if pulled := metricValue(t, ctx, pull.URL, `panorama_federator_pushdown_aggregations_total{outcome="pushed"}`); pulled != 0 {
				t.Errorf("--no-query.push-down pushed %v aggregations down", pulled)
			}

			// What the leaves send for one aggregation over a longer range,
			// with and without push-down.
			if setup.wantPushed {
				q := `sum by (cluster) (rate(http_requests_total[5m]))`
				for _, f := range []*Federator{s.fed, pull} {
					r, err := f.API.QueryRange(ctx, q, s.d.start, s.d.end, 15*time.Second)
					if err != nil || r.Status != "success" {
						t.Fatalf("%s: %v %+v", q, err, r)
					}
				}
				before := map[*Federator]float64{s.fed: receivedBytes(t, ctx, s.fed.URL), pull: receivedBytes(t, ctx, pull.URL)}
				for _, f := range []*Federator{s.fed, pull} {
					if _, err := f.API.QueryRange(ctx, q, s.d.start, s.d.end, 15*time.Second); err != nil {
						t.Fatal(err)
					}
				}
				withPD, withoutPD := receivedBytes(t, ctx, s.fed.URL)-before[s.fed], receivedBytes(t, ctx, pull.URL)-before[pull]
				t.Logf("%s over the data: leaves sent %v bytes with push-down, %v without", q, withPD, withoutPD)
				if withPD <= 0 || withPD >= withoutPD {
					t.Errorf("leaves sent %v bytes with push-down, %v without: want fewer, and some", withPD, withoutPD)
				}

				// A leaf that dies: push-down fails (or is not tried once
				// the leaf is marked unhealthy), and the answer is the pull
				// path's: partial, with a warning naming the leaf, or an
				// error with partial_response=false.
				dead := s.collectors["west-a"]
				dead.Kill()
				Eventually(t, 30*time.Second, 250*time.Millisecond, func() error {
					r, err := s.fed.API.Query(ctx, q, s.d.end)
					if err != nil {
						return err
					}
					if r.Status != "success" || !strings.Contains(string(r.Data), `"east"`) || strings.Contains(string(r.Data), `"west"`) {
						return fmt.Errorf("with west down: %s %s, want east only", r.Status, r.Data)
					}
					if !strings.Contains(strings.Join(r.Warnings, " "), dead.GRPCAddr) {
						return fmt.Errorf("with west down: warnings %v, want one naming %s", r.Warnings, dead.GRPCAddr)
					}
					return nil
				})
				r, err := s.fed.API.Do(ctx, false, "query", map[string][]string{"query": {q}, "time": {FormatTime(s.d.end)}, "partial_response": {"false"}})
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != "error" || !strings.Contains(r.Error, dead.GRPCAddr) {
					t.Errorf("with west down and partial_response=false: %s %q, want an error naming %s", r.Status, r.Error, dead.GRPCAddr)
				}
			}
		})
	}
}

// metricValue reads one sample (name{labels} as exposed) from base/metrics.
func metricValue(t testing.TB, ctx context.Context, base, series string) float64 {
	t.Helper()
	body := metricsText(t, ctx, base)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("%s/metrics has no %s", base, series)
	return 0
}

var receivedRe = regexp.MustCompile(`(?m)^panorama_federator_leaf_received_bytes_total\{endpoint="[^"]*"\} (\S+)$`)

// receivedBytes sums panorama_federator_leaf_received_bytes_total over
// the endpoints.
func receivedBytes(t testing.TB, ctx context.Context, base string) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range receivedRe.FindAllStringSubmatch(metricsText(t, ctx, base), -1) {
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += f
	}
	return sum
}

func metricsText(t testing.TB, ctx context.Context, base string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d %v", base, resp.StatusCode, err)
	}
	return string(b)
}
