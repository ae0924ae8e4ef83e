package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// federatedClusters are the clusters of the federated data set; each has an
// HA pair of collectors (replica a and b) holding the same samples.
var federatedClusters = []string{"east", "west"}

// clusterSeries is the data one cluster's collectors hold: east holds
// buildDataset's series, west the same with every float value doubled
// (counters stay counters) and without the batch series, so that the
// clusters differ in values and in what exists.
func clusterSeries(d *dataset, cluster string) []prompb.TimeSeries {
	if cluster == "east" {
		return d.series
	}
	var out []prompb.TimeSeries
	for _, s := range d.series {
		if hasLabel(s.Labels, "job", "batch") {
			continue
		}
		c := prompb.TimeSeries{Labels: s.Labels, Histograms: s.Histograms}
		for _, smp := range s.Samples {
			if !value.IsStaleNaN(smp.Value) && !hasLabel(s.Labels, "__name__", "up") {
				smp.Value *= 2
			}
			c.Samples = append(c.Samples, smp)
		}
		out = append(out, c)
	}
	return out
}

func hasLabel(ls []prompb.Label, name, value string) bool {
	for _, l := range ls {
		if l.Name == name && l.Value == value {
			return true
		}
	}
	return false
}

// seriesKey orders series as labels.Compare does.
func seriesKey(s prompb.TimeSeries) string {
	var b strings.Builder
	for _, l := range s.Labels {
		b.WriteString(l.Name)
		b.WriteByte(0)
		b.WriteString(l.Value)
		b.WriteByte(0)
	}
	return b.String()
}

// withLabel returns copies of series with name=value added (labels sorted).
func withLabel(series []prompb.TimeSeries, name, value string) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, len(series))
	for i, s := range series {
		kv := make([]string, 0, 2*len(s.Labels)+2)
		for _, l := range s.Labels {
			kv = append(kv, l.Name, l.Value)
		}
		out[i] = prompb.TimeSeries{Labels: lbls(append(kv, name, value)...), Samples: s.Samples, Histograms: s.Histograms}
	}
	return out
}

// federatedSetup is two clusters × an HA pair of collectors (external
// labels cluster and replica), the reference Prometheus 3.9.1 holding the
// union with cluster as a real label and no replica, and a federator over
// the four collectors deduplicating on replica.
type federatedSetup struct {
	d          *dataset
	ref        *Prometheus
	collectors map[string]*Collector // "east-a", …
	fed        *Federator
	// endpoints are the collectors' --endpoint flags, for more federators.
	endpoints []string
}

const federatedRefConfig = `
global:
  scrape_interval: 15s
  evaluation_interval: 1m
scrape_configs: []
`

func startFederatedSetup(t *testing.T, ctx context.Context, fedArgs ...string) *federatedSetup {
	t.Helper()
	return startFederatedSetupReplicas(t, ctx, []string{"a", "b"}, fedArgs...)
}

// startFederatedSetupReplicas is startFederatedSetup with one collector per
// cluster and replica given ([]string{"a"}: no HA pair).
func startFederatedSetupReplicas(t *testing.T, ctx context.Context, replicas []string, fedArgs ...string) *federatedSetup {
	t.Helper()
	s := &federatedSetup{collectors: map[string]*Collector{}}
	s.ref = StartReferencePrometheus(t, federatedRefConfig)
	s.d = buildDataset(time.Now().Truncate(time.Second).Add(-30 * time.Second))
	var endpoints []string
	var refSeries []prompb.TimeSeries
	for _, cluster := range federatedClusters {
		series := clusterSeries(s.d, cluster)
		for _, replica := range replicas {
			col := StartCollector(t, fmt.Sprintf(`
global:
  scrape_interval: 15s
  evaluation_interval: 1m
  external_labels:
    cluster: %s
    replica: %s
scrape_configs: []
`, cluster, replica), CollectorOptions{})
			res, err := RemoteWrite(ctx, col.API.Client, col.URL+"/api/v1/write", series)
			if err != nil || res.Status/100 != 2 {
				t.Fatalf("remote write to %s-%s: %v %+v", cluster, replica, err, res)
			}
			s.collectors[cluster+"-"+replica] = col
			endpoints = append(endpoints, "--endpoint="+col.GRPCAddr)
		}
		refSeries = append(refSeries, withLabel(series, "cluster", cluster)...)
	}
	// A Prometheus TSDB hands the engine its series in the order they were
	// created, a StoreAPI in label order, and the order-sensitive
	// aggregations (avg, stddev, stdvar) differ in the last digit with the
	// order of their inputs: create the reference's series in label order.
	sort.Slice(refSeries, func(i, j int) bool { return seriesKey(refSeries[i]) < seriesKey(refSeries[j]) })
	res, err := RemoteWrite(ctx, s.ref.API.Client, s.ref.URL+"/api/v1/write", refSeries)
	if err != nil || res.Status/100 != 2 {
		t.Fatalf("remote write to the reference: %v %+v", err, res)
	}
	s.endpoints = endpoints
	s.fed = StartFederator(t, append(append(slices.Clip(endpoints), "--query.replica-label=replica"), fedArgs...)...)
	waitForClusters(t, ctx, s.fed.API, len(federatedClusters))
	return s
}

// waitForClusters waits until api answers every cluster's data.
func waitForClusters(t testing.TB, ctx context.Context, api *API, n int) {
	t.Helper()
	Eventually(t, 60*time.Second, 250*time.Millisecond, func() error {
		v, err := api.Vector(ctx, `count by (cluster) (up)`, time.Time{})
		if err != nil {
			return err
		}
		if len(v) != n {
			return fmt.Errorf("%s: count by (cluster) (up) = %v, want %d clusters", api.URL, v, n)
		}
		return nil
	})
}

// federatedQueries is the reference suite: every query runs as an instant
// query at several times and as a range query, against the federator and
// the reference Prometheus.
func federatedQueries(d *dataset) []equalQuery {
	at := func(off time.Duration) string { return FormatTime(d.start.Add(off)) }
	return []equalQuery{
		// Selectors.
		{q: `up`},
		{q: `up{cluster="east"}`},
		{q: `up{cluster=~"e.*|w.*", job="api"}`},
		{q: `up{cluster!="west"}`},
		{q: `{__name__=~"http_.*_count|up", instance="10.0.0.1:8080"}`},
		{q: `rpc_latency_seconds`},
		{q: `batch_last_success_timestamp_seconds`},
		{q: `timestamp(batch_last_success_timestamp_seconds)`},
		// sum / count / min / max / group / avg.
		{q: `sum(http_requests_total)`},
		{q: `sum by (cluster) (http_requests_total)`},
		{q: `sum by (code) (rate(http_requests_total[10m]))`},
		{q: `sum by (cluster, method) (rate(http_requests_total[5m]))`},
		{q: `sum without (instance, code) (rate(http_requests_total[5m]))`},
		{q: `sum without (cluster) (rate(http_requests_total[5m]))`},
		{q: `count(http_requests_total)`},
		{q: `count by (cluster) (up)`},
		{q: `count by (__name__) ({job="api"})`},
		{q: `count without (instance) (http_requests_total)`},
		{q: `count_values("v", up)`},
		{q: `count_values by (cluster) ("v", up)`},
		{q: `min(node_temperature_celsius)`},
		{q: `min by (cluster) (node_temperature_celsius)`},
		{q: `max(rate(http_requests_total[5m]))`},
		{q: `max by (cluster, instance) (rate(http_requests_total[5m]))`},
		{q: `group(http_requests_total)`},
		{q: `group by (cluster, job) ({__name__=~".+"})`},
		{q: `avg(node_temperature_celsius)`},
		{q: `avg by (cluster) (rate(http_requests_total[5m]))`},
		{q: `avg without (sensor) (node_temperature_celsius)`},
		// topk / bottomk / quantile / stddev / stdvar.
		{q: `topk(3, http_requests_total)`},
		{q: `topk by (cluster) (2, rate(http_requests_total[5m]))`},
		{q: `topk(1, sum by (cluster) (rate(http_requests_total[5m])))`},
		{q: `bottomk(2, rate(http_requests_total[5m]))`},
		{q: `bottomk by (cluster) (1, node_temperature_celsius)`},
		{q: `quantile(0.75, node_temperature_celsius)`},
		{q: `quantile by (cluster) (0.5, rate(http_requests_total[5m]))`},
		{q: `stddev(node_temperature_celsius)`},
		{q: `stddev by (sensor) (node_temperature_celsius)`},
		{q: `stdvar by (cluster) (rate(http_requests_total[5m]))`},
		{q: `sort_desc(sum by (cluster, instance) (rate(http_requests_total[5m])))`, ordered: true, instantOnly: true},
		{q: `sort(max by (cluster) (node_temperature_celsius))`, ordered: true, instantOnly: true},
		// rate / increase / irate / *_over_time.
		{q: `rate(http_requests_total[1m])`},
		{q: `rate(http_requests_total[5m])`},
		{q: `irate(http_requests_total[2m])`},
		{q: `increase(http_requests_total{code="500"}[10m])`},
		{q: `sum by (cluster) (increase(http_requests_total[10m]))`},
		{q: `resets(http_requests_total[30m])`},
		{q: `rate(node_temperature_celsius[5m])`}, // an info annotation: not a counter
		{q: `avg_over_time(node_temperature_celsius[5m])`},
		{q: `max_over_time(node_temperature_celsius[10m])`},
		{q: `min_over_time(node_temperature_celsius[10m])`},
		{q: `sum_over_time(up[10m])`},
		{q: `count_over_time(up[10m])`},
		{q: `last_over_time(node_temperature_celsius[5m])`},
		{q: `stddev_over_time(node_temperature_celsius[10m])`},
		{q: `quantile_over_time(0.9, node_temperature_celsius[10m])`},
		{q: `present_over_time(batch_last_success_timestamp_seconds[5m])`},
		{q: `max by (cluster) (max_over_time(node_temperature_celsius[10m]))`},
		{q: `sum by (cluster) (count_over_time(http_requests_total[5m]))`},
		{q: `predict_linear(node_temperature_celsius[10m], 3600)`},
		{q: `deriv(node_temperature_celsius[5m])`},
		{q: `delta(node_temperature_celsius[5m])`},
		{q: `changes(up[30m])`},
		// Histograms.
		{q: `histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`},
		{q: `histogram_quantile(0.9, sum by (cluster, le) (rate(http_request_duration_seconds_bucket[5m])))`},
		{q: `histogram_quantile(0.5, sum by (le, instance) (rate(http_request_duration_seconds_bucket[2m])))`},
		{q: `histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m]))`},
		{q: `histogram_quantile(0.9, sum by (le) (increase(http_request_duration_seconds_bucket[10m])))`},
		{q: `sum by (cluster) (rate(http_request_duration_seconds_sum[5m])) / sum by (cluster) (rate(http_request_duration_seconds_count[5m]))`},
		{q: `histogram_quantile(0.9, sum by (job) (rate(rpc_latency_seconds[5m])))`},
		{q: `histogram_quantile(0.5, sum by (cluster) (rate(rpc_latency_seconds[5m])))`},
		{q: `histogram_count(rate(rpc_latency_seconds[5m]))`},
		{q: `histogram_sum(sum(rpc_latency_seconds))`},
		{q: `histogram_fraction(0, 0.1, rate(rpc_latency_seconds[5m]))`},
		// offset and @.
		{q: `node_temperature_celsius offset 5m`},
		{q: `node_temperature_celsius offset -2m`},
		{q: `sum by (cluster) (rate(http_requests_total[5m] offset 10m))`},
		{q: `http_requests_total @ ` + at(10*time.Minute+500*time.Millisecond)},
		{q: `rate(http_requests_total[5m] @ ` + at(15*time.Minute) + `)`},
		{q: `sum(rate(http_requests_total[5m] @ ` + at(20*time.Minute) + ` offset 1m))`},
		{q: `node_temperature_celsius @ start()`},
		{q: `rate(http_requests_total[5m] @ end())`},
		// Subqueries (some with the default step).
		{q: `max_over_time(rate(http_requests_total[1m])[10m:45s])`},
		{q: `avg_over_time(node_temperature_celsius[10m:])`},
		{q: `min_over_time(deriv(node_temperature_celsius[5m])[10m:1m] offset 1m)`},
		{q: `max_over_time(sum by (cluster) (rate(http_requests_total[1m]))[15m:30s])`},
		{q: `rate(sum by (cluster) (http_requests_total)[5m:])`},
		// Label functions.
		{q: `label_replace(up, "x", "$1", "job", "(.*)")`},
		{q: `label_replace(up, "cluster", "c-$1", "cluster", "(.*)")`},
		{q: `sum by (dc) (label_replace(rate(http_requests_total[5m]), "dc", "$1", "cluster", "(.)(.*)"))`},
		{q: `label_join(up, "endpoint", "/", "cluster", "instance")`},
		// Binary operations, within and across clusters.
		{q: `up == 0`},
		{q: `up{job="api"} > bool 0`},
		{q: `http_requests_total{cluster="west"} / ignoring(cluster) http_requests_total{cluster="east"}`},
		{q: `rate(http_requests_total{cluster="east"}[5m]) - on(instance, method, code) rate(http_requests_total{cluster="west"}[5m])`},
		{q: `sum by (cluster) (rate(http_requests_total[5m])) / ignoring(cluster) group_left sum(rate(http_requests_total[5m]))`},
		{q: `sum by (instance) (rate(http_requests_total{code="500"}[5m])) / ignoring(code) sum by (instance) (rate(http_requests_total[5m]))`},
		{q: `rate(http_requests_total[5m]) / on(cluster, instance) group_left up{job="api"}`},
		{q: `rate(http_requests_total[5m]) * on(instance) group_left up{cluster="east", job="api"}`},
		{q: `up{cluster="east"} * on(instance, job) group_right(cluster) up{cluster="west"}`},
		{q: `http_requests_total and on(cluster, instance) (up == 1)`},
		{q: `http_requests_total unless on(instance) (up == 0)`},
		{q: `node_temperature_celsius{cluster="east"} or node_temperature_celsius{cluster="west", sensor="gpu"}`},
		{q: `up{cluster="east"} + up{cluster="west"}`}, // no match: cluster differs
		{q: `up + on(instance, job) up`}, // many-to-many: an error
		{q: `sum(up{cluster="east"}) - sum(up{cluster="west"})`},
		{q: `scalar(sum(up)) * 2`},
		{q: `vector(time())`},
		{q: `clamp(node_temperature_celsius, 42, 48)`},
		{q: `round(node_temperature_celsius, 0.1)`},
		// absent.
		{q: `absent(nonexistent)`},
		{q: `absent(nonexistent{job="x", cluster="east"})`},
		{q: `absent(batch_last_success_timestamp_seconds{cluster="west"})`},
		{q: `absent(up{cluster="east"})`},
		{q: `absent_over_time(batch_last_success_timestamp_seconds[1m])`},
		// Errors must match too.
		{q: `rate(http_requests_total)`},
		{q: `http_requests_total[5m]`, instantOnly: true},
	}
}

// federatedInstants are the evaluation times of the instant queries.
func federatedInstants(d *dataset) []struct {
	name string
	ts   time.Time
} {
	return []struct {
		name string
		ts   time.Time
	}{
		{"mid", d.start.Add(17*time.Minute + 17500*time.Millisecond)},
		{"end", d.end},
		{"after-end", d.end.Add(2*time.Minute + 3*time.Second)},
		{"on-staleness", d.start.Add(80*d.step + 42*time.Millisecond)},
	}
}

// compareAPIs runs the suite against got and want and reports every
// answer that differs (status, warnings, infos, values, timestamps).
func compareAPIs(t *testing.T, ctx context.Context, d *dataset, queries []equalQuery, gotName string, got, want *API) (compared int) {
	t.Helper()
	failed := 0
	rangeStart, rangeEnd, rangeStep := d.start.Add(5*time.Minute+250*time.Millisecond), d.end.Add(time.Minute), 37*time.Second
	check := func(kind string, q equalQuery, g, w *Response) {
		compared++
		// Both answers carry cluster as a label: drop nothing.
		if diff, _ := resultDiff(g, w, "\x00", q.ordered); diff != "" {
			failed++
			t.Errorf("%s %s: %s differs:\n%s", kind, q.q, gotName, diff)
		}
	}
	for _, q := range queries {
		for _, at := range federatedInstants(d) {
			w, err := want.Query(ctx, q.q, at.ts)
			if err != nil {
				t.Fatal(err)
			}
			g, err := got.Query(ctx, q.q, at.ts)
			if err != nil {
				t.Fatal(err)
			}
			check("instant@"+at.name, q, g, w)
		}
		if q.instantOnly {
			continue
		}
		w, err := want.QueryRange(ctx, q.q, rangeStart, rangeEnd, rangeStep)
		if err != nil {
			t.Fatal(err)
		}
		g, err := got.QueryRange(ctx, q.q, rangeStart, rangeEnd, rangeStep)
		if err != nil {
			t.Fatal(err)
		}
		check("range", q, g, w)
	}
	t.Logf("%s: compared %d answers (%d queries × %d instants + range), %d differ", gotName, compared, len(queries), len(federatedInstants(d)), failed)
	return compared
}

// TestFederatorEqualsReferencePrometheus: two clusters, each an HA pair of
// real collectors, behind a federator deduplicating on replica, answer the
// reference suite exactly as one Prometheus 3.9.1 holding the union.
func TestFederatorEqualsReferencePrometheus(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startFederatedSetup(t, ctx)
	queries := federatedQueries(s.d)
	if len(queries) < 100 {
		t.Fatalf("the suite has %d queries, want at least 100", len(queries))
	}

	// The test is worth something only if the answers hold data from
	// both clusters, deduplicated.
	for q, want := range map[string]string{
		`count(http_requests_total)`:                             "24",
		`count(rpc_latency_seconds)`:                             "4",
		`count(http_request_duration_seconds_bucket)`:            "66",
		`count(batch_last_success_timestamp_seconds offset 15m)`: "1",
	} {
		v, err := s.fed.API.Vector(ctx, q, s.d.end)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].V != want {
			t.Errorf("%s at the end of the data: %v, want %s", q, v, want)
		}
	}

	t.Run("PromQL", func(t *testing.T) {
		compareAPIs(t, ctx, s.d, queries, "federator", s.fed.API, s.ref.API)
	})

	// Without dedup the replicas show, each with its replica label.
	t.Run("dedup=false", func(t *testing.T) {
		r, err := s.fed.API.Do(ctx, false, "query", map[string][]string{"query": {`count by (cluster, replica) (up)`}, "time": {FormatTime(s.d.end)}, "dedup": {"false"}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(r.Data), `"replica":"a"`) || !strings.Contains(string(r.Data), `"replica":"b"`) || strings.Count(string(r.Data), `"metric"`) != 4 {
			t.Errorf("dedup=false: %s, want 4 series (2 clusters × replicas a and b)", r.Body)
		}
	})

	// promtool, as an operator would run it from a shell, prints the same
	// for the federator as for the reference.
	t.Run("promtool", func(t *testing.T) {
		promtool := RequireBinary(t, RefPromtoolPath)
		run := func(base string, args ...string) []string {
			t.Helper()
			args = append(args[:len(args)-1:len(args)-1], base, args[len(args)-1])
			out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			sort.Strings(lines)
			return lines
		}
		start, end := s.d.start.Add(5*time.Minute), s.d.end
		for _, q := range []string{
			`up`,
			`sum by (cluster) (rate(http_requests_total[5m]))`,
			`histogram_quantile(0.9, sum by (cluster, le) (rate(http_request_duration_seconds_bucket[5m])))`,
			`node_temperature_celsius{cluster="west"} - ignoring(cluster) node_temperature_celsius{cluster="east"}`,
		} {
			for _, args := range [][]string{
				{"query", "instant", "--time=" + s.d.end.UTC().Format(time.RFC3339), q},
				{"query", "range", "--start=" + start.UTC().Format(time.RFC3339), "--end=" + end.UTC().Format(time.RFC3339), "--step=1m", q},
			} {
				got, want := run(s.fed.URL, args...), run(s.ref.URL, args...)
				if len(want) == 0 || want[0] == "" {
					t.Errorf("promtool %s: the reference printed nothing", strings.Join(args, " "))
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("promtool %s against the federator:\n%s\nagainst the reference:\n%s", strings.Join(args, " "), trunc(strings.Join(got, "\n")), trunc(strings.Join(want, "\n")))
				}
			}
		}
	})
}
