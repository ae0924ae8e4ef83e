package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

const (
	loadStep    = 15 * time.Second
	loadSamples = 25 // 6 minutes at 15 s: a full 5m rate window before the query time
	loadBatch   = 5  // targets per remote-write request
)

// benchQueries are evaluated at the time of the last loaded sample. The
// core ones are the set, which the ≤ 1.1 × Prometheus target is
// about; the others are reported beside them.
var benchQueries = []struct {
	name, expr string
	core       bool
}{
	{"raw_selector", `http_requests_total{code="500"}`, true},
	{"sum_by_job_rate", `sum by (job) (rate(http_requests_total[5m]))`, true},
	{"histogram_quantile", `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`, true},
	{"topk_rate", `topk(10, rate(http_requests_total[5m]))`, true},
	// Every one of the 200k series.
	{"count_all", `count({job="synthetic"})`, false},
	// What a federator fanning a query for another cluster out to this
	// collector asks: the answer is empty on both servers.
	{"other_cluster", `sum(rate(http_requests_total{cluster="elsewhere"}[5m]))`, false},
}

// BenchmarkQuery loads the same 200k series (200 synthetic targets, 6
// minutes of samples at 15 s) into the collector and the reference
// Prometheus by remote write, checks that both answer every query alike,
// then times the instant queries alternately against both and compares the
// median latencies. The whole comparison runs once whatever b.N is.
func BenchmarkQuery(b *testing.B) {
	var (
		nTargets = envInt(b, "PANORAMA_BENCH_QUERY_TARGETS", 200)
		rounds   = envInt(b, "PANORAMA_BENCH_QUERY_ROUNDS", 25)
	)
	prometheusBinary(b)
	cfg := writeConfig(b, 15*time.Second, nil)
	servers := []*server{startCollector(b, cfg), startPrometheus(b, cfg, true)}
	if bin := prometheusSlicelabelsBinary(); bin != "" {
		servers = append(servers, startPrometheusBinary(b, "prometheus-slicelabels", bin, cfg, true))
	} else {
		fmt.Println("bench: prometheus-slicelabels not found: the same-layout ratios are left out")
	}

	end := time.Now().Add(-time.Minute).Truncate(time.Second)
	start := time.Now()
	if err := loadSeries(servers, nTargets, end); err != nil {
		b.Fatal(err)
	}
	want := float64(nTargets * SeriesPerTarget)
	for _, s := range servers {
		v, _, err := s.metric("prometheus_tsdb_head_series")
		if err != nil {
			b.Fatal(err)
		}
		if v != want {
			b.Fatalf("%s holds %.0f series after loading, want %.0f", s.name, v, want)
		}
	}
	fmt.Printf("bench: query: loaded %d series × %d samples into both servers in %s\n", nTargets*SeriesPerTarget, loadSamples, time.Since(start).Round(time.Second))

	client := &http.Client{Timeout: 2 * time.Minute}
	evalTime := strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)
	query := func(s *server, expr string) (time.Duration, []byte, error) {
		return s.timedQuery(client, expr, evalTime)
	}

	// Same data, same answers (the collector's carry its cluster label).
	for _, q := range benchQueries {
		var results []map[string]string
		for _, s := range servers {
			_, body, err := query(s, q.expr)
			if err != nil {
				b.Fatal(err)
			}
			res, err := parseVectorWith(body, "cluster") // only the collector attaches it
			if err != nil {
				b.Fatalf("%s: %q: %v", s.name, q.expr, err)
			}
			if len(res) == 0 && q.core {
				b.Fatalf("%s: %q: empty result", s.name, q.expr)
			}
			results = append(results, res)
		}
		for i := 1; i < len(results); i++ {
			if err := sameResults(results[0], results[i], strings.HasPrefix(q.name, "topk")); err != nil {
				b.Fatalf("%q: collector and %s disagree: %v", q.expr, servers[i].name, err)
			}
		}
		fmt.Printf("bench: query %-18s %6d result series, identical on all %d servers\n", q.name, len(results[0]), len(servers))
	}

	// Warm up, then interleave: each round runs every query against both,
	// the first server alternating, so drift and noise hit both alike.
	const warmupRounds = 3
	lat := make([][][]float64, len(benchQueries))
	cpu := make([][]float64, len(benchQueries)) // server CPU seconds over the measured rounds
	for qi := range benchQueries {
		lat[qi] = make([][]float64, len(servers))
		cpu[qi] = make([]float64, len(servers))
	}
	b.ResetTimer()
	for r := range warmupRounds + rounds {
		for qi, q := range benchQueries {
			// Rotate which server goes first.
			for k := range servers {
				si := (k + r + qi) % len(servers)
				c0, err := servers[si].cpuSeconds()
				if err != nil {
					b.Fatal(err)
				}
				d, _, err := query(servers[si], q.expr)
				if err != nil {
					b.Fatal(err)
				}
				c1, err := servers[si].cpuSeconds()
				if err != nil {
					b.Fatal(err)
				}
				if r >= warmupRounds {
					lat[qi][si] = append(lat[qi][si], d.Seconds()*1000)
					cpu[qi][si] += c1 - c0
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "query\tcollector median ms\tPrometheus median ms\tratio\tcollector p90 ms\tPrometheus p90 ms\tcollector CPU ms/query\tPrometheus CPU ms/query\tCPU ratio\t\n")
	var logRatio, worst float64
	core := 0
	for qi, q := range benchQueries {
		c, p := median(lat[qi][0]), median(lat[qi][1])
		cc, pc := cpu[qi][0]/float64(rounds)*1000, cpu[qi][1]/float64(rounds)*1000
		ratio := c / p
		name := q.name
		if q.core {
			logRatio += math.Log(ratio)
			worst = max(worst, ratio)
			core++
		} else {
			name += " (extra)"
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%.0f\t%.0f\t%.2f\t\n", name, c, p, ratio,
			quantile(lat[qi][0], 0.9), quantile(lat[qi][1], 0.9), cc, pc, cc/pc)
		b.ReportMetric(c, q.name+"-collector-ms")
		b.ReportMetric(p, q.name+"-prometheus-ms")
		b.ReportMetric(ratio, q.name+"-ratio")
	}
	tw.Flush()
	if len(servers) > 2 {
		// The same comparison against the reference built with the labels
		// layout the panorama binary must use: what remains is Panorama's
		// own code.
		var logSL float64
		for qi, q := range benchQueries {
			c, p := median(lat[qi][0]), median(lat[qi][2])
			cc, pc := cpu[qi][0]/float64(rounds)*1000, cpu[qi][2]/float64(rounds)*1000
			fmt.Printf("bench: %-18s collector ÷ prometheus-slicelabels: median %.2f (%.1f ÷ %.1f ms), CPU %.2f\n", q.name, c/p, c, p, cc/pc)
			b.ReportMetric(p, q.name+"-prometheus-slicelabels-ms")
			b.ReportMetric(c/p, q.name+"-ratio-vs-prometheus-slicelabels")
			if q.core {
				logSL += math.Log(c / p)
			}
		}
		b.ReportMetric(math.Exp(logSL/float64(core)), "core-geomean-ratio-vs-prometheus-slicelabels")
		fmt.Printf("bench: collector ÷ prometheus-slicelabels over the core queries: geometric mean %.2f\n", math.Exp(logSL/float64(core)))
	}
	geo := math.Exp(logRatio / float64(core))
	b.ReportMetric(geo, "core-geomean-ratio")
	b.ReportMetric(worst, "core-worst-ratio")
	fmt.Printf("bench: collector ÷ Prometheus median latency over the %d core queries: geometric mean %.2f, worst %.2f (target ≤ 1.1 each: %s); %d rounds, %d series\n",
		core, geo, worst, verdict(worst <= 1.1), rounds, nTargets*SeriesPerTarget)
}

func quantile(xs []float64, q float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// loadSeries writes nTargets synthetic targets' series, loadSamples
// samples each ending at end, into every server by remote write: the very
// same request bodies to each.
func loadSeries(servers []*server, nTargets int, end time.Time) error {
	client := &http.Client{Timeout: 5 * time.Minute}
	first := end.Add(-loadStep * (loadSamples - 1)).UnixMilli()
	for lo := 0; lo < nTargets; lo += loadBatch {
		var req prompb.WriteRequest
		for i := lo; i < min(lo+loadBatch, nTargets); i++ {
			req.Timeseries = append(req.Timeseries, targetTimeseries(i, first)...)
		}
		raw, err := req.Marshal()
		if err != nil {
			return err
		}
		body := snappy.Encode(nil, raw)
		var wg sync.WaitGroup
		errs := make([]error, len(servers))
		for si, s := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[si] = remoteWrite(client, s, body)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func targetTimeseries(i int, first int64) []prompb.TimeSeries {
	t := NewTarget(i)
	tl := append(TargetLabels(i), Label{"job", "synthetic"})
	tl = append(tl, Label{"instance", tl[1].Value + ":8080"}) // the pod's name
	out := make([]prompb.TimeSeries, 0, SeriesPerTarget)
	t.Series(func(name string, ls []Label, _ float64) {
		lbls := []prompb.Label{{Name: "__name__", Value: name}}
		for _, l := range ls {
			lbls = append(lbls, prompb.Label{Name: l.Name, Value: l.Value})
		}
		for _, l := range tl {
			lbls = append(lbls, prompb.Label{Name: l.Name, Value: l.Value})
		}
		slices.SortFunc(lbls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, prompb.TimeSeries{Labels: lbls, Samples: make([]prompb.Sample, 0, loadSamples)})
	})
	for k := range loadSamples {
		j := 0
		ts := first + int64(k)*loadStep.Milliseconds()
		t.Series(func(_ string, _ []Label, v float64) {
			out[j].Samples = append(out[j].Samples, prompb.Sample{Value: v, Timestamp: ts})
			j++
		})
		t.Advance()
	}
	return out
}

func remoteWrite(client *http.Client, s *server, body []byte) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.url("/api/v1/write"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: remote write: %s: %s", s.name, resp.Status, msg)
	}
	return nil
}

func sameResults(a, b map[string]string, valuesOnly bool) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d series vs %d", len(a), len(b))
	}
	if valuesOnly {
		va, vb := values(a), values(b)
		for i := range va {
			if !approxEqual(va[i], vb[i]) {
				return fmt.Errorf("values %v vs %v", va, vb)
			}
		}
		return nil
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok {
			return fmt.Errorf("series %s missing from Prometheus' answer", k)
		}
		x, _ := strconv.ParseFloat(v, 64)
		y, _ := strconv.ParseFloat(w, 64)
		if !approxEqual(x, y) {
			return fmt.Errorf("series %s: %s vs %s", k, v, w)
		}
	}
	return nil
}

func values(m map[string]string) []float64 {
	out := make([]float64, 0, len(m))
	for _, v := range m {
		f, _ := strconv.ParseFloat(v, 64)
		out = append(out, f)
	}
	sort.Float64s(out)
	return out
}

func approxEqual(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}
