package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestCollectorSeriesCarryingTheClusterLabel stores the same series twice:
// once as scraped (no cluster label, the collector attaches its own) and
// once as a Prometheus of the same cluster remote-writes it (with its own
// cluster="<same value>"). The reference Prometheus answers two distinct
// series; the collector, which attaches the label at query time, must not
// turn them into two series with one label set: PromQL then fails
// ("vector cannot contain metrics with the same labelset") where the
// reference answers, and /api/v1/series lists duplicates.
func TestCollectorSeriesCarryingTheClusterLabel(t *testing.T) {
	t.Parallel()
	const cluster = "east"
	col := StartCollector(t, `
global:
  external_labels:
    cluster: `+cluster+`
scrape_configs: []
`, CollectorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	mk := func(extra ...string) prompb.TimeSeries {
		s := prompb.TimeSeries{Labels: lbls(append([]string{"__name__", "kube_pod_info", "job", "kube-state-metrics", "instance", "ksm:8080"}, extra...)...)}
		for i := 0; i < 10; i++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: start.Add(time.Duration(i) * 5 * time.Second).UnixMilli(), Value: float64(i)})
		}
		return s
	}
	res, err := RemoteWrite(ctx, http.DefaultClient, col.URL+"/api/v1/write", []prompb.TimeSeries{mk(), mk("cluster", cluster)})
	if err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write: %v %+v", err, res)
	}
	at := start.Add(50 * time.Second)

	for _, q := range []string{`rate(kube_pod_info[1m])`, `kube_pod_info + 0`, `kube_pod_info`, `kube_pod_info[1m]`} {
		r, err := col.API.Query(ctx, q, at)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != "success" {
			t.Errorf("%s: HTTP %d %s: %s", q, r.HTTPStatus, r.ErrorType, r.Error)
			continue
		}
		if sets := seriesLabelSets(t, r, "-"); hasDuplicates(sets) {
			t.Errorf("%s: the answer holds series with the same labels: %v", q, sets)
		}
	}

	// /federate is left out: Prometheus' own /federate, which attaches
	// external labels the same way, lists such a series twice too.

	r, err := col.API.Do(ctx, false, "series", url.Values{"match[]": {`kube_pod_info`}})
	if err != nil {
		t.Fatal(err)
	}
	var sets []map[string]string
	if err := json.Unmarshal(r.Data, &sets); err != nil {
		t.Fatalf("%v: %s", err, r.Body)
	}
	var keys []string
	for _, s := range sets {
		b, _ := json.Marshal(s)
		keys = append(keys, string(b))
	}
	if hasDuplicates(keys) {
		t.Errorf("/api/v1/series lists a series more than once: %v", keys)
	}
}

func hasDuplicates(s []string) bool {
	seen := map[string]bool{}
	for _, x := range s {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}
