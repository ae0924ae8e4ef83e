package federation

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/panorama-obs/panorama/collector"
)

// TestMaxSamplesPushedDown: the federator's --query.max-samples reaches
// the leaves with every push-down request, so that a query over the
// federator's limit (and under the collectors' own) fails with Prometheus'
// error with push-down as without it, at one level and through a region
// federator; a query under it answers as before, and a collector whose own
// limit is the smaller one still answers through the pull path.
func TestMaxSamplesPushedDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three collectors and nine federators")
	}
	data := map[string][]testSeries{}
	var addrs []string
	for i, cluster := range []string{"east", "west"} {
		w := workload(float64(i + 1))
		rc := startCollector(t, cluster)
		rc.write(t, w)
		data["cluster="+cluster] = w
		addrs = append(addrs, rc.c.GRPCAddr())
	}
	ref := newReference(t, data)

	// 40 samples per series in 10m: over a limit of 30 for the pull path
	// and for each collector's part, while the collectors' answers (three
	// parts of a compensated sum per group) are few enough for it.
	const q = `sum by (cluster, code) (rate(http_requests_total[10m]))`
	federator := func(maxSamples int, pushDown bool, endpoints ...string) *testFederator {
		opts := testOptions(endpoints...)
		opts.QueryMaxSamples = maxSamples
		opts.PushDown = pushDown
		return startFederator(t, opts)
	}
	region := startFederator(t, testOptions(addrs...))
	var want apiResponse
	for _, tc := range []struct {
		name string
		f    *testFederator
	}{
		{"pulling", federator(30, false, addrs...)},
		{"pushing down", federator(30, true, addrs...)},
		{"pulling over a federator", federator(30, false, region.f.GRPCAddr())},
		{"pushing down over a federator", federator(30, true, region.f.GRPCAddr())},
	} {
		for _, params := range []url.Values{instant(q), rangeQ(q)} {
			r := get(t, tc.f.url, "/api/v1/query", params)
			if params.Has("step") {
				r = get(t, tc.f.url, "/api/v1/query_range", params)
			}
			if r.code != http.StatusUnprocessableEntity || r.ErrorType != "execution" || r.Error != "query processing would load too many samples into memory in query execution" {
				t.Errorf("%s %s: got %d %s %q, want Prometheus' too many samples", tc.name, params, r.code, r.ErrorType, r.Error)
			}
			if want.code == 0 {
				want = r
			} else if r.Error != want.Error || r.ErrorType != want.ErrorType || r.code != want.code {
				t.Errorf("%s: %d %s %q differs from pulling: %d %s %q", tc.name, r.code, r.ErrorType, r.Error, want.code, want.ErrorType, want.Error)
			}
		}
		if fb := testutil.ToFloat64(tc.f.f.engine.outcomes.WithLabelValues("fallback")); fb != 0 {
			t.Errorf("%s: %v aggregations fell back to pulling the series", tc.name, fb)
		}
	}
	// Refused at the region, not by pulling there: the region pushed the
	// sums on to the collectors with the global limit.
	if v := testutil.ToFloat64(region.f.engine.outcomes.WithLabelValues("fallback")); v != 0 {
		t.Errorf("the region fell back to pulling %v times", v)
	}

	// Under the limit: the same answers as the reference, pushed down.
	for name, f := range map[string]*testFederator{
		"one level": federator(1000, true, addrs...),
		"two levels": federator(1000, true, startFederator(t, func() Options {
			o := testOptions(addrs...)
			o.ExternalLabels = labels.FromStrings("region", "eu")
			return o
		}()).f.GRPCAddr()),
	} {
		for _, params := range []url.Values{instant(q), rangeQ(`sum by (cluster) (rate(http_requests_total[2m]))`)} {
			path := "/api/v1/query"
			if params.Has("step") {
				path = "/api/v1/query_range"
			}
			r := get(t, f.url, path, params)
			mustSucceed(t, name, r)
			if name == "one level" {
				if got, want := normalized(r.Data), normalized(ref.data(t, params)); got != want {
					t.Errorf("%s %s:\ngot:  %s\nwant: %s", name, params.Get("query"), got, want)
				}
			}
		}
		if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("pushed")); v == 0 {
			t.Errorf("%s: nothing pushed down under the limit", name)
		}
	}

	// A collector whose own limit is smaller than the federator's refuses
	// the push-down; the federator pulls its series and answers, as it
	// does without push-down.
	small := startCollector(t, "north", func(o *collector.Options) { o.QueryMaxSamples = 30 })
	small.write(t, workload(3))
	f := federator(1000, true, small.c.GRPCAddr())
	r := get(t, f.url, "/api/v1/query", instant(q))
	mustSucceed(t, "over a collector with a smaller limit", r)
	if got := len(r.result(t).Result); got != 2 {
		t.Errorf("over a collector with a smaller limit: %d series, want 2", got)
	}
	if v := testutil.ToFloat64(f.f.engine.outcomes.WithLabelValues("fallback")); v == 0 {
		t.Error("the collector with the smaller limit did not refuse the push-down")
	}
}
