package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestCollectorScrapesLikePrometheus has the collector and the reference
// Prometheus scrape the same real targets (node-exporter, and the
// reference's own /metrics for a real histogram) with identical
// configurations every second. They scrape independently, so values
// differ slightly; the series, label sets and answer shapes must not.
func TestCollectorScrapesLikePrometheus(t *testing.T) {
	t.Parallel()
	const cluster = "scrape-eq"
	ne := StartNodeExporter(t)
	cfg := func(promAddr string) string {
		return `
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 30s
  external_labels:
    cluster: ` + cluster + `
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["` + ne.Addr + `"]
  - job_name: prometheus
    static_configs:
      - targets: ["` + promAddr + `"]
`
	}
	ref := StartReferencePrometheus(t, cfg("{{WEB}}"))
	col := StartCollector(t, cfg(ref.Addr), CollectorOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Wait until both hold 15 s of scrapes of both jobs.
	Eventually(t, 60*time.Second, time.Second, func() error {
		for _, s := range []*API{ref.API, col.API} {
			v, err := s.Vector(ctx, `min(count_over_time(up[30s]))`, time.Time{})
			if err != nil {
				return err
			}
			if len(v) != 1 {
				return fmt.Errorf("%s: no up series yet", s.URL)
			}
			if n, _ := strconv.Atoi(v[0].V); n < 15 {
				return fmt.Errorf("%s: %d scrapes so far", s.URL, n)
			}
		}
		return nil
	})
	ts := time.Now().Add(-2 * time.Second).Truncate(time.Millisecond)

	// Targets are healthy on both.
	for _, s := range []*API{ref.API, col.API} {
		v, err := s.Vector(ctx, `up == 1`, ts)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 2 {
			t.Errorf("%s: up == 1 has %d series, want 2 (node and prometheus): %v", s.URL, len(v), v)
		}
	}

	// The same label sets, answer by answer.
	sameShape := []string{
		`up`,
		`rate(node_cpu_seconds_total[10s])`,
		`sum by (mode) (rate(node_cpu_seconds_total[10s]))`,
		`histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))`,
		`histogram_quantile(0.9, sum by (le, handler) (rate(prometheus_http_request_duration_seconds_bucket{handler="/metrics"}[10s])))`,
		`label_replace(up, "x", "$1", "job", "(.*)")`,
		`node_load1 offset 5s`,
		`node_load1 @ ` + FormatTime(ts.Add(-3*time.Second)),
		`max_over_time(node_load1[10s:2s])`,
		`count by (__name__) ({job="node", __name__=~"node_(cpu|load|memory|network|exporter_build)_.*"})`,
		`node_exporter_build_info`,
		`node_memory_MemTotal_bytes / 1e9`,
	}
	for _, q := range sameShape {
		want, err := ref.API.Query(ctx, q, ts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := col.API.Query(ctx, q, ts)
		if err != nil {
			t.Fatal(err)
		}
		w, g := seriesLabelSets(t, want, cluster), seriesLabelSets(t, got, cluster)
		if len(w) == 0 {
			t.Errorf("%s: the reference answers nothing: the check is empty", q)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: label sets differ:\n  collector %v\n  reference %v", q, g, w)
		}
	}

	// Answers that do not depend on when each scraped: exactly equal.
	for _, q := range []string{
		`count(node_cpu_seconds_total)`,
		`count(node_network_receive_bytes_total)`,
		`absent(nonexistent)`,
		`up == 1`,
		`node_memory_MemTotal_bytes`,
		`count(count by (mode) (node_cpu_seconds_total))`,
	} {
		want, err := ref.API.Query(ctx, q, ts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := col.API.Query(ctx, q, ts)
		if err != nil {
			t.Fatal(err)
		}
		// Sample timestamps of an instant query are the evaluation
		// time, so the answers compare exactly.
		if diff, _ := resultDiff(got, want, cluster, false); diff != "" {
			t.Errorf("%s: collector differs from the reference:\n%s", q, diff)
		}
	}

	// topk: ties between idle interfaces may break either way; the
	// number of series and the top one must agree.
	want, err := ref.API.Vector(ctx, `topk(3, node_network_receive_bytes_total)`, ts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := col.API.Vector(ctx, `topk(3, node_network_receive_bytes_total)`, ts)
	if err != nil {
		t.Fatal(err)
	}
	top := func(s []Sample) string {
		sort.Slice(s, func(i, j int) bool {
			a, _ := strconv.ParseFloat(s[i].V, 64)
			b, _ := strconv.ParseFloat(s[j].V, 64)
			return a > b
		})
		if len(s) == 0 {
			return ""
		}
		m := map[string]string{}
		for k, v := range s[0].Metric {
			if k != "cluster" {
				m[k] = v
			}
		}
		return fmt.Sprint(m)
	}
	if len(got) != len(want) || top(got) != top(want) {
		t.Errorf("topk(3, node_network_receive_bytes_total): collector %v, reference %v", got, want)
	}
	for _, s := range got {
		if s.Metric["cluster"] != cluster {
			t.Errorf("topk series %v lacks cluster=%q", s.Metric, cluster)
		}
	}

	// The series of a scraped target, through /api/v1/series.
	seriesOf := func(a *API) []string {
		r, err := a.Do(ctx, false, "series", url.Values{
			"match[]": {`{job="node", __name__=~"node_cpu_seconds_total|node_load.*|node_memory_MemTotal_bytes|node_exporter_build_info"}`},
			"start":   {FormatTime(ts.Add(-5 * time.Second))},
			"end":     {FormatTime(ts)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != "success" {
			t.Fatalf("%s series: %s", a.URL, r.Body)
		}
		if a == col.API {
			var sets []map[string]string
			if err := json.Unmarshal(r.Data, &sets); err != nil {
				t.Fatal(err)
			}
			for _, s := range sets {
				if s["cluster"] != cluster {
					t.Errorf("collector /api/v1/series: %v lacks cluster=%q", s, cluster)
				}
			}
		}
		wrapped := &Response{Status: "success", Data: []byte(`{"resultType":"vector","result":[` + metricsAsItems(t, r.Data) + `]}`)}
		return seriesLabelSets(t, wrapped, cluster)
	}
	if g, w := seriesOf(col.API), seriesOf(ref.API); !reflect.DeepEqual(g, w) || len(w) == 0 {
		t.Errorf("/api/v1/series differ:\n  collector %v\n  reference %v", g, w)
	}
}
