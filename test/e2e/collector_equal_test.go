package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/proto"
)

// dataset is a fixed set of samples that both the collector and the
// reference Prometheus ingest, so that their answers must be identical.
type dataset struct {
	start, end time.Time // first and last scrape
	step       time.Duration
	series     []prompb.TimeSeries
	samples    int
}

func lbls(kv ...string) []prompb.Label {
	out := make([]prompb.Label, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	// Remote write wants labels sorted by name.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Name < out[j-1].Name; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// buildDataset makes 30 minutes of 15 s "scrapes" ending at end: counters
// with a reset, classic and native histograms, gauges, an up series that
// goes down, and a series that ends with a staleness marker. Each instance
// has its own millisecond offset, as real scrapes do.
func buildDataset(end time.Time) *dataset {
	const points = 121
	step := 15 * time.Second
	start := end.Add(-time.Duration(points-1) * step)
	rnd := rand.New(rand.NewPCG(42, 7))
	d := &dataset{start: start, end: end, step: step}
	ts := func(i int, offsetMs int64) int64 { return start.Add(time.Duration(i)*step).UnixMilli() + offsetMs }
	add := func(s prompb.TimeSeries) {
		d.series = append(d.series, s)
		d.samples += len(s.Samples) + len(s.Histograms)
	}

	instances := []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}
	offsets := []int64{137, 511, 902}
	const resetAt = 70 // instance 3 restarts here

	// Counters.
	for ii, inst := range instances {
		for _, method := range []string{"GET", "POST"} {
			for _, code := range []string{"200", "500"} {
				s := prompb.TimeSeries{Labels: lbls("__name__", "http_requests_total", "job", "api", "instance", inst, "method", method, "code", code)}
				v := rnd.Float64() * 1000
				for i := 0; i < points; i++ {
					if ii == 2 && i == resetAt {
						v = 0
					}
					inc := rnd.Float64() * 40
					if code == "500" {
						inc /= 13
					}
					v += math.Round(inc*1000) / 1000
					s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(i, offsets[ii]), Value: v})
				}
				add(s)
			}
		}
	}

	// Classic histograms.
	les := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	for ii, inst := range instances {
		counts := make([]float64, len(les)+1) // last is +Inf
		var sum float64
		buckets := make([]prompb.TimeSeries, len(les)+1)
		for b := range buckets {
			le := "+Inf"
			if b < len(les) {
				le = fmt.Sprint(les[b])
			}
			buckets[b] = prompb.TimeSeries{Labels: lbls("__name__", "http_request_duration_seconds_bucket", "job", "api", "instance", inst, "le", le)}
		}
		sumS := prompb.TimeSeries{Labels: lbls("__name__", "http_request_duration_seconds_sum", "job", "api", "instance", inst)}
		countS := prompb.TimeSeries{Labels: lbls("__name__", "http_request_duration_seconds_count", "job", "api", "instance", inst)}
		scale := []float64{0.03, 0.12, 0.6}[ii]
		for i := 0; i < points; i++ {
			if ii == 2 && i == resetAt {
				clear(counts)
				sum = 0
			}
			n := 20 + rnd.IntN(60)
			for k := 0; k < n; k++ {
				obs := rnd.ExpFloat64() * scale
				sum += obs
				for b := range counts {
					if b == len(les) || obs <= les[b] {
						counts[b]++
					}
				}
			}
			t := ts(i, offsets[ii])
			for b := range buckets {
				buckets[b].Samples = append(buckets[b].Samples, prompb.Sample{Timestamp: t, Value: counts[b]})
			}
			sumS.Samples = append(sumS.Samples, prompb.Sample{Timestamp: t, Value: sum})
			countS.Samples = append(countS.Samples, prompb.Sample{Timestamp: t, Value: counts[len(les)]})
		}
		for _, b := range buckets {
			add(b)
		}
		add(sumS)
		add(countS)
	}

	// Native histograms (integer counters, schema 0: bucket i is (2^(i-1), 2^i]).
	for ii, inst := range instances[:2] {
		s := prompb.TimeSeries{Labels: lbls("__name__", "rpc_latency_seconds", "job", "api", "instance", inst)}
		const offset, nb = -8, 12
		counts := make([]int64, nb)
		var zero uint64
		var sum float64
		for i := 0; i < points; i++ {
			for k := 0; k < 30+rnd.IntN(40); k++ {
				obs := rnd.ExpFloat64() * []float64{0.05, 0.4}[ii]
				sum += obs
				if obs <= 1e-3 {
					zero++
					continue
				}
				idx := int(math.Ceil(math.Log2(obs))) - offset
				idx = min(max(idx, 0), nb-1)
				counts[idx]++
			}
			deltas := make([]int64, nb)
			var prev, total int64
			for b, c := range counts {
				deltas[b] = c - prev
				prev = c
				total += c
			}
			h := &histogram.Histogram{
				CounterResetHint: histogram.UnknownCounterReset,
				Schema:           0,
				ZeroThreshold:    1e-3,
				ZeroCount:        zero,
				Count:            uint64(total) + zero,
				Sum:              sum,
				PositiveSpans:    []histogram.Span{{Offset: offset, Length: nb}},
				PositiveBuckets:  deltas,
			}
			s.Histograms = append(s.Histograms, prompb.FromIntHistogram(ts(i, offsets[ii]), h))
		}
		add(s)
	}

	// Gauges.
	for hi, host := range []string{"host-a", "host-b"} {
		for si, sensor := range []string{"cpu", "gpu"} {
			s := prompb.TimeSeries{Labels: lbls("__name__", "node_temperature_celsius", "job", "node", "instance", host, "sensor", sensor, "région", "île-de-France")}
			for i := 0; i < points; i++ {
				v := 40 + 5*float64(hi+si) + 6*math.Sin(float64(i)/9+float64(si)) + rnd.NormFloat64()*0.7
				s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(i, int64(hi*250+si*3)), Value: v})
			}
			add(s)
		}
	}

	// up: instance 2 is down for ten scrapes.
	for ii, inst := range instances {
		s := prompb.TimeSeries{Labels: lbls("__name__", "up", "job", "api", "instance", inst)}
		for i := 0; i < points; i++ {
			v := 1.0
			if ii == 1 && i >= 90 && i < 100 {
				v = 0
			}
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(i, offsets[ii]), Value: v})
		}
		add(s)
	}
	for hi, host := range []string{"host-a", "host-b"} {
		s := prompb.TimeSeries{Labels: lbls("__name__", "up", "job", "node", "instance", host)}
		for i := 0; i < points; i++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(i, int64(hi*250)), Value: 1})
		}
		add(s)
	}

	// A series whose target went away at scrape 80: a staleness marker.
	{
		s := prompb.TimeSeries{Labels: lbls("__name__", "batch_last_success_timestamp_seconds", "job", "batch", "instance", "cron-1")}
		for i := 0; i < 80; i++ {
			s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(i, 42), Value: float64(start.Unix() + int64(i/10*150))})
		}
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: ts(80, 42), Value: math.Float64frombits(value.StaleNaN)})
		add(s)
	}
	return d
}

// ingest remote-writes the dataset to url in a few requests, in time order.
func (d *dataset) ingest(ctx context.Context, t testing.TB, url string) {
	t.Helper()
	res, err := RemoteWrite(ctx, http.DefaultClient, url, d.series)
	if err != nil {
		t.Fatalf("remote write to %s: %v", url, err)
	}
	if res.Status/100 != 2 {
		t.Fatalf("remote write to %s: HTTP %d: %s", url, res.Status, res.Body)
	}
}

type equalQuery struct {
	q string
	// ref, when set, is the reference's equivalent of q (for queries
	// naming the collector's external label).
	ref string
	// keepsCluster: every series of the collector's answer must carry
	// cluster (the expression keeps the selected series' labels).
	keepsCluster bool
	// ordered: the order of the answer is part of it (sort functions).
	ordered bool
	// instantOnly: not run as a range query.
	instantOnly bool
}

// TestCollectorEqualsReferencePrometheus remote-writes the same samples into
// a collector and the reference Prometheus 3.9.1, then asks both the same
// PromQL at fixed timestamps: every answer must be identical (values,
// timestamps, annotations), once the collector's external label is dropped.
func TestCollectorEqualsReferencePrometheus(t *testing.T) {
	t.Parallel()
	const cluster = "eq-test"
	cfg := `
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  external_labels:
    cluster: ` + cluster + `
scrape_configs: []
`
	ref := StartReferencePrometheus(t, cfg)
	col := StartCollector(t, cfg, CollectorOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := buildDataset(time.Now().Truncate(time.Second).Add(-30 * time.Second))
	d.ingest(ctx, t, ref.URL+"/api/v1/write")
	d.ingest(ctx, t, col.URL+"/api/v1/write")
	t.Logf("ingested %d series, %d samples from %s to %s into both", len(d.series), d.samples, d.start.Format(time.RFC3339), d.end.Format(time.RFC3339))

	at := func(off time.Duration) string { return FormatTime(d.start.Add(off)) }
	queries := []equalQuery{
		// Rates and counters.
		{q: `rate(http_requests_total[1m])`, keepsCluster: true},
		{q: `rate(http_requests_total[5m])`, keepsCluster: true},
		{q: `irate(http_requests_total[2m])`, keepsCluster: true},
		{q: `increase(http_requests_total{code="500"}[10m])`, keepsCluster: true},
		{q: `resets(http_requests_total[30m])`, keepsCluster: true},
		{q: `rate(node_temperature_celsius[5m])`, keepsCluster: true}, // an info annotation: not a counter
		// Aggregations.
		{q: `sum by (code) (rate(http_requests_total[10m]))`},
		{q: `sum by (method) (rate(http_requests_total[5m]))`},
		{q: `sum without (instance, code) (rate(http_requests_total[5m]))`, keepsCluster: true},
		{q: `count(http_requests_total)`},
		{q: `count by (__name__) ({job="api"})`},
		{q: `count_values("v", up)`},
		{q: `stddev by (sensor) (node_temperature_celsius)`},
		{q: `quantile(0.75, node_temperature_celsius)`},
		{q: `avg without (sensor) (node_temperature_celsius)`, keepsCluster: true},
		{q: `topk(3, http_requests_total)`, keepsCluster: true},
		{q: `bottomk(2, rate(http_requests_total[5m]))`, keepsCluster: true},
		{q: `sort_desc(sum by (instance) (rate(http_requests_total[5m])))`, ordered: true, instantOnly: true},
		// Classic and native histograms.
		{q: `histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`},
		{q: `histogram_quantile(0.5, sum by (le, instance) (rate(http_request_duration_seconds_bucket[2m])))`},
		{q: `histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m]))`, keepsCluster: true},
		{q: `rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])`, keepsCluster: true},
		{q: `histogram_quantile(0.9, sum by (job) (rate(rpc_latency_seconds[5m])))`},
		{q: `histogram_count(rate(rpc_latency_seconds[5m]))`, keepsCluster: true},
		{q: `histogram_sum(rpc_latency_seconds)`, keepsCluster: true},
		{q: `histogram_fraction(0, 0.1, rate(rpc_latency_seconds[5m]))`, keepsCluster: true},
		{q: `rpc_latency_seconds`, keepsCluster: true},
		// Label functions.
		{q: `label_replace(up, "x", "$1", "job", "(.*)")`, keepsCluster: true},
		{q: `label_join(up, "endpoint", "/", "job", "instance")`, keepsCluster: true},
		// offset and @.
		{q: `node_temperature_celsius offset 5m`, keepsCluster: true},
		{q: `node_temperature_celsius offset -2m`, keepsCluster: true},
		{q: `http_requests_total @ ` + at(10*time.Minute+500*time.Millisecond), keepsCluster: true},
		{q: `rate(http_requests_total[5m] @ ` + at(15*time.Minute) + `)`, keepsCluster: true},
		{q: `node_temperature_celsius @ start()`, keepsCluster: true},
		{q: `rate(http_requests_total[5m] @ end())`, keepsCluster: true},
		// Subqueries (one with the default step: the evaluation interval).
		{q: `max_over_time(rate(http_requests_total[1m])[10m:45s])`, keepsCluster: true},
		{q: `avg_over_time(node_temperature_celsius[10m:])`, keepsCluster: true},
		{q: `min_over_time(deriv(node_temperature_celsius[5m])[10m:1m] offset 1m)`, keepsCluster: true},
		// Over-time functions, staleness and absence.
		{q: `quantile_over_time(0.9, node_temperature_celsius[10m])`, keepsCluster: true},
		{q: `predict_linear(node_temperature_celsius[10m], 3600)`, keepsCluster: true},
		{q: `delta(node_temperature_celsius[5m])`, keepsCluster: true},
		{q: `changes(up[30m])`, keepsCluster: true},
		{q: `batch_last_success_timestamp_seconds`, keepsCluster: true},
		{q: `timestamp(batch_last_success_timestamp_seconds)`, keepsCluster: true},
		{q: `absent_over_time(batch_last_success_timestamp_seconds[1m])`},
		{q: `absent(nonexistent)`},
		{q: `absent(nonexistent{job="x"})`},
		// Binary operations.
		{q: `up == 0`, keepsCluster: true},
		{q: `up{job="api"} > bool 0`, keepsCluster: true},
		{q: `sum by (instance) (rate(http_requests_total{code="500"}[5m])) / ignoring(code) sum by (instance) (rate(http_requests_total[5m]))`},
		{q: `rate(http_requests_total[5m]) / on(instance) group_left up{job="api"}`, keepsCluster: true},
		{q: `http_requests_total and on(instance) (up == 1)`, keepsCluster: true},
		{q: `http_requests_total unless on(instance) (up == 0)`, keepsCluster: true},
		{q: `scalar(sum(up)) * 2`},
		{q: `vector(time())`},
		{q: `clamp(node_temperature_celsius, 42, 48)`, keepsCluster: true},
		{q: `round(node_temperature_celsius, 0.1)`, keepsCluster: true},
		{q: `{__name__=~"http_.*_count|up", instance="10.0.0.1:8080"}`, keepsCluster: true},
		// Matchers on the external label: the collector has it, the
		// reference answers the same without it.
		{q: `sum(rate(http_requests_total{cluster="` + cluster + `"}[5m]))`, ref: `sum(rate(http_requests_total[5m]))`},
		{q: `count({cluster="` + cluster + `"})`, ref: `count({__name__=~".+"})`},
		{q: `count(up{cluster!="` + cluster + `"})`, ref: `count(nonexistent)`},
		{q: `count by (cluster) (up)`, ref: `count(up)`},
		// Errors must match too.
		{q: `rate(http_requests_total)`},
		{q: `http_requests_total[5m]`, keepsCluster: true, instantOnly: true},
	}

	type evalAt struct {
		name string
		ts   time.Time
	}
	instants := []evalAt{
		{"mid", d.start.Add(17*time.Minute + 17500*time.Millisecond)},
		{"end", d.end},
		{"after-end", d.end.Add(2*time.Minute + 3*time.Second)},
		{"on-staleness", d.start.Add(80*d.step + 42*time.Millisecond)},
	}
	rangeStart, rangeEnd, rangeStep := d.start.Add(5*time.Minute+250*time.Millisecond), d.end.Add(time.Minute), 37*time.Second

	t.Run("PromQL", func(t *testing.T) {
		compared, failed := 0, 0
		check := func(kind string, q equalQuery, got, want *Response) {
			compared++
			diff, present := resultDiff(got, want, cluster, q.ordered)
			if diff == "" && q.keepsCluster {
				for i, p := range present {
					if !p {
						diff = fmt.Sprintf("series %d of the collector's answer lacks cluster=%q", i, cluster)
						break
					}
				}
			}
			if diff == "" && !q.keepsCluster && q.ref == "" {
				for i, p := range present {
					if p {
						diff = fmt.Sprintf("series %d of the collector's answer carries cluster=%q, which the expression drops", i, cluster)
						break
					}
				}
			}
			if diff != "" {
				failed++
				t.Errorf("%s %s: collector differs from the reference Prometheus:\n%s", kind, q.q, diff)
			}
		}
		for _, q := range queries {
			refQ := q.q
			if q.ref != "" {
				refQ = q.ref
			}
			for _, at := range instants {
				want, err := ref.API.Query(ctx, refQ, at.ts)
				if err != nil {
					t.Fatal(err)
				}
				got, err := col.API.Query(ctx, q.q, at.ts)
				if err != nil {
					t.Fatal(err)
				}
				check("instant@"+at.name, q, got, want)
			}
			if q.instantOnly {
				continue
			}
			want, err := ref.API.QueryRange(ctx, refQ, rangeStart, rangeEnd, rangeStep)
			if err != nil {
				t.Fatal(err)
			}
			got, err := col.API.QueryRange(ctx, q.q, rangeStart, rangeEnd, rangeStep)
			if err != nil {
				t.Fatal(err)
			}
			check("range", q, got, want)
		}
		t.Logf("compared %d answers (%d queries × %d instants + range), %d differ", compared, len(queries), len(instants), failed)
	})

	// /federate gives the same newest samples (both attach cluster).
	t.Run("federate text", func(t *testing.T) {
		for _, match := range []string{`{job="api"}`, `{job=~"node|batch"}`, `{__name__=~"up|rpc_latency_seconds"}`} {
			got, want := federate(t, col.URL, match), federate(t, ref.URL, match)
			if len(want) == 0 {
				t.Errorf("/federate?match[]=%s: the reference answers nothing", match)
			}
			if !slices.Equal(got, want) {
				t.Errorf("/federate?match[]=%s differs:\n  collector %d samples %v\n  reference %d samples %v", match, len(got), trunc(fmt.Sprint(got)), len(want), trunc(fmt.Sprint(want)))
			}
		}
	})

	// In the protobuf format Prometheus federates native histograms too
	// (a Prometheus 3 with scrape_native_histograms asks for protobuf).
	t.Run("federate protobuf", func(t *testing.T) {
		for _, match := range []string{`{__name__="rpc_latency_seconds"}`, `{job="api"}`} {
			got, want := federateProto(t, col.URL, match), federateProto(t, ref.URL, match)
			if len(want) == 0 {
				t.Errorf("/federate?match[]=%s (protobuf): the reference answers nothing", match)
			}
			if !slices.Equal(got, want) {
				t.Errorf("/federate?match[]=%s (protobuf) differs:\n  collector %d samples %v\n  reference %d samples %v", match, len(got), trunc(fmt.Sprint(got)), len(want), trunc(fmt.Sprint(want)))
			}
		}
	})

	// The test is worth something only if the answers hold data.
	for _, q := range []string{`count(http_requests_total)`, `count(rpc_latency_seconds)`, `count(http_request_duration_seconds_bucket)`} {
		v, err := col.API.Vector(ctx, q, d.end)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 1 || v[0].V == "0" {
			t.Errorf("%s at the end of the data: %v, want a non-empty answer", q, v)
		}
	}
}

// federate scrapes base's /federate in the text format and returns one
// canonical line per sample (name, sorted labels, value, timestamp).
func federate(t testing.TB, base, match string) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/federate?"+url.Values{"match[]": {match}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/federate: HTTP %d: %s", base, resp.StatusCode, readAll(t, resp))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/federate: %v", base, err)
	}
	var out []string
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			out = append(out, fmt.Sprintf("%s %s{%s} %v @%d", f.GetType(), name, strings.Join(ls, ","), m.GetUntyped().GetValue(), m.GetTimestampMs()))
		}
	}
	sort.Strings(out)
	return out
}

// federateProto scrapes base's /federate in the delimited protobuf format
// and returns one canonical line per sample.
func federateProto(t testing.TB, base, match string) []string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/federate?"+url.Values{"match[]": {match}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/federate: HTTP %d: %s", base, resp.StatusCode, readAll(t, resp))
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.NewFormat(expfmt.TypeProtoDelim))
	var out []string
	for {
		var f dto.MetricFamily
		if err := dec.Decode(&f); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s/federate (protobuf): %v", base, err)
		}
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			val := fmt.Sprint(m.GetUntyped().GetValue())
			if h := m.GetHistogram(); h != nil {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
				if err != nil {
					t.Fatal(err)
				}
				val = fmt.Sprintf("histogram(count=%d/%v sum=%v schema=%d sha256=%x)", h.GetSampleCount(), h.GetSampleCountFloat(), h.GetSampleSum(), h.GetSchema(), sha256.Sum256(b))
			}
			out = append(out, fmt.Sprintf("%s %s{%s} %s @%d", f.GetType(), f.GetName(), strings.Join(ls, ","), val, m.GetTimestampMs()))
		}
	}
	sort.Strings(out)
	return out
}
