package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// ingestSource says where a server counts what it ingested and holds.
type ingestSource struct {
	samples []metricRef // the first one the server exposes is used
	series  []metricRef
}

type metricRef struct {
	name  string
	parts []string
}

func (r metricRef) String() string {
	if len(r.parts) == 0 {
		return r.name
	}
	return r.name + "{" + strings.Join(r.parts, ",") + "}"
}

var (
	tsdbSource = ingestSource{
		samples: []metricRef{{name: "prometheus_tsdb_head_samples_appended_total"}},
		series:  []metricRef{{name: "prometheus_tsdb_head_series"}},
	}
	// VictoriaMetrics 1.79: rows scraped and inserted, and the series
	// active in the current hour.
	vmSource = ingestSource{
		samples: []metricRef{
			{name: "vm_rows_inserted_total", parts: []string{`type="promscrape"`}},
			{name: "vm_rows_added_to_storage_total"},
		},
		series: []metricRef{
			{name: "vm_cache_entries", parts: []string{`type="storage/hour_metric_ids"`}},
		},
	}
)

// first reads the first of refs the server exposes.
func first(s *server, refs []metricRef) (float64, metricRef, error) {
	for _, r := range refs {
		v, ok, err := s.metric(r.name, r.parts...)
		if err != nil {
			return 0, r, err
		}
		if ok {
			return v, r, nil
		}
	}
	return 0, metricRef{}, fmt.Errorf("%s exposes none of %v", s.name, refs)
}

type ingestRun struct {
	srv *server
	src ingestSource

	cpu0, cpu1         float64
	samples0, samples1 float64
	samplesRef         metricRef
	seriesRef          metricRef
	rss                []float64
	anon, file         []float64 // the anonymous and file-backed parts of rss
	series             []float64
}

func (r *ingestRun) snapshot(b *testing.B) (cpu, samples float64) {
	b.Helper()
	r.srv.alive(b)
	cpu, err := r.srv.cpuSeconds()
	if err != nil {
		b.Fatal(err)
	}
	samples, r.samplesRef, err = first(r.srv, r.src.samples)
	if err != nil {
		b.Fatal(err)
	}
	return cpu, samples
}

func (r *ingestRun) sample(b *testing.B) {
	b.Helper()
	mem, err := r.srv.memStatus()
	if err != nil {
		b.Fatal(err)
	}
	series, ref, err := first(r.srv, r.src.series)
	if err != nil {
		b.Fatal(err)
	}
	r.seriesRef = ref
	r.rss = append(r.rss, mem.rss)
	r.anon = append(r.anon, mem.anon)
	r.file = append(r.file, mem.file)
	r.series = append(r.series, series)
}

func (r *ingestRun) cpuPerMillion() float64 {
	return (r.cpu1 - r.cpu0) / (r.samples1 - r.samples0) * 1e6
}

func (r *ingestRun) rssPerSeries() float64 { return mean(r.rss) / mean(r.series) }

// anonPerSeries leaves out the file-backed pages (the mapped executable,
// whose residency depends on its size and on how the kernel happens to map
// it): heap and stacks per series.
func (r *ingestRun) anonPerSeries() float64 { return mean(r.anon) / mean(r.series) }

// BenchmarkIngest scrapes the same synthetic targets (100 × 1,000 series
// every 5 s by default) with the collector, the reference Prometheus and
// VictoriaMetrics at once, and compares CPU seconds per million samples
// ingested and resident memory per active series. The whole comparison
// runs once whatever b.N is (make bench uses -benchtime 1x).
func BenchmarkIngest(b *testing.B) {
	var (
		nTargets = envInt(b, "PANORAMA_BENCH_TARGETS", 100)
		interval = envDuration(b, "PANORAMA_BENCH_INTERVAL", 5*time.Second)
		warmup   = envDuration(b, "PANORAMA_BENCH_WARMUP", 30*time.Second)
		window   = envDuration(b, "PANORAMA_BENCH_WINDOW", 2*time.Minute)
	)
	prometheusBinary(b) // skips (or fails in CI) before anything starts
	buildPanorama(b)
	vmBin := victoriaMetricsBinary()

	farm, err := StartFarm(nTargets, interval/2)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(farm.Close)
	cfg := writeConfig(b, interval, farm.Addrs)

	runs := []*ingestRun{
		{srv: startCollector(b, cfg), src: tsdbSource},
		{srv: startPrometheus(b, cfg, false), src: tsdbSource},
	}
	var vm, promSL *ingestRun
	if bin := prometheusSlicelabelsBinary(); bin != "" {
		promSL = &ingestRun{srv: startPrometheusBinary(b, "prometheus-slicelabels", bin, cfg, false), src: tsdbSource}
		runs = append(runs, promSL)
	} else {
		fmt.Println("bench: prometheus-slicelabels not found: the same-layout ratios are left out")
	}
	if vmBin != "" {
		vm = &ingestRun{srv: startVictoriaMetrics(b, vmBin, cfg), src: vmSource}
		runs = append(runs, vm)
	} else {
		fmt.Println("bench: victoria-metrics not found: the collector ÷ VictoriaMetrics ratios are left out")
	}

	// Wait until every server holds every target's series, then warm up.
	want := float64(nTargets * SeriesPerTarget)
	deadline := time.Now().Add(3*time.Minute + 3*interval)
	for _, r := range runs {
		for {
			r.srv.alive(b)
			v, _, err := first(r.srv, r.src.series)
			if err == nil && v >= want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s holds %.0f series after %s, want %.0f (err %v)\n%s", r.srv.name, v, 3*time.Minute, want, err, r.srv.logTail(4096))
			}
			time.Sleep(time.Second)
		}
	}
	fmt.Printf("bench: ingest: %d targets × %d series every %s; all servers hold them; warm-up %s, window %s\n",
		nTargets, SeriesPerTarget, interval, warmup, window)
	time.Sleep(warmup)

	b.ResetTimer()
	start := time.Now()
	for _, r := range runs {
		r.cpu0, r.samples0 = r.snapshot(b)
	}
	step := min(5*time.Second, window/10)
	for time.Since(start) < window {
		for _, r := range runs {
			r.sample(b)
		}
		time.Sleep(step)
	}
	for _, r := range runs {
		r.cpu1, r.samples1 = r.snapshot(b)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	expected := float64(nTargets) * SeriesPerTarget / interval.Seconds()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "server\tCPU s\tsamples\tsamples/s (targets expose %.0f/s)\tCPU s per 1M samples\tmean RSS MiB\tof it file-backed MiB\tactive series\tRSS bytes per series\tanonymous RSS bytes per series\t\n", expected)
	for _, r := range runs {
		dS := r.samples1 - r.samples0
		fmt.Fprintf(tw, "%s\t%.2f\t%.0f\t%.0f\t%.3f\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t\n", r.srv.name, r.cpu1-r.cpu0, dS, dS/elapsed.Seconds(),
			r.cpuPerMillion(), mean(r.rss)/(1<<20), mean(r.file)/(1<<20), mean(r.series), r.rssPerSeries(), r.anonPerSeries())
		if dS/elapsed.Seconds() < 0.9*expected {
			fmt.Printf("bench: WARNING: %s ingested %.0f samples/s, under 90%% of the %.0f/s the targets expose: it is falling behind or failing scrapes\n", r.srv.name, dS/elapsed.Seconds(), expected)
		}
	}
	tw.Flush()
	for _, r := range runs {
		fmt.Printf("bench: %s: samples from %s, series from %s, RSS from /proc/%d/status (mean of %d readings)\n",
			r.srv.name, r.samplesRef, r.seriesRef, r.srv.cmd.Process.Pid, len(r.rss))
	}

	col, prom := runs[0], runs[1]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(col.cpuPerMillion(), "collector-cpu-s/Msamples")
	b.ReportMetric(prom.cpuPerMillion(), "prometheus-cpu-s/Msamples")
	b.ReportMetric(col.rssPerSeries(), "collector-rss-B/series")
	b.ReportMetric(prom.rssPerSeries(), "prometheus-rss-B/series")
	cpuRatio, rssRatio := col.cpuPerMillion()/prom.cpuPerMillion(), col.rssPerSeries()/prom.rssPerSeries()
	b.ReportMetric(cpuRatio, "cpu-ratio-vs-prometheus")
	b.ReportMetric(rssRatio, "rss-ratio-vs-prometheus")
	fmt.Printf("bench: collector ÷ Prometheus: CPU per sample %.2f (target ≤ 1.0: %s), RSS per series %.2f (target ≤ 1.0: %s)\n",
		cpuRatio, verdict(cpuRatio <= 1), rssRatio, verdict(rssRatio <= 1))
	anonRatio := col.anonPerSeries() / prom.anonPerSeries()
	b.ReportMetric(col.anonPerSeries(), "collector-anon-rss-B/series")
	b.ReportMetric(prom.anonPerSeries(), "prometheus-anon-rss-B/series")
	b.ReportMetric(anonRatio, "anon-rss-ratio-vs-prometheus")
	fmt.Printf("bench: collector ÷ Prometheus: anonymous RSS (heap and stacks, without the mapped executable) per series %.2f\n", anonRatio)
	if promSL != nil {
		c, r := col.cpuPerMillion()/promSL.cpuPerMillion(), col.rssPerSeries()/promSL.rssPerSeries()
		b.ReportMetric(promSL.cpuPerMillion(), "prometheus-slicelabels-cpu-s/Msamples")
		b.ReportMetric(promSL.rssPerSeries(), "prometheus-slicelabels-rss-B/series")
		b.ReportMetric(c, "cpu-ratio-vs-prometheus-slicelabels")
		b.ReportMetric(r, "rss-ratio-vs-prometheus-slicelabels")
		a := col.anonPerSeries() / promSL.anonPerSeries()
		b.ReportMetric(a, "anon-rss-ratio-vs-prometheus-slicelabels")
		fmt.Printf("bench: collector ÷ Prometheus built with slicelabels (same labels layout): CPU per sample %.2f, RSS per series %.2f, anonymous RSS per series %.2f\n", c, r, a)
	}
	if vm != nil {
		b.ReportMetric(vm.cpuPerMillion(), "victoriametrics-cpu-s/Msamples")
		b.ReportMetric(vm.rssPerSeries(), "victoriametrics-rss-B/series")
		b.ReportMetric(col.cpuPerMillion()/vm.cpuPerMillion(), "cpu-ratio-vs-victoriametrics")
		b.ReportMetric(col.rssPerSeries()/vm.rssPerSeries(), "rss-ratio-vs-victoriametrics")
		fmt.Printf("bench: collector ÷ VictoriaMetrics: CPU per sample %.2f, RSS per series %.2f (reported, no target)\n",
			col.cpuPerMillion()/vm.cpuPerMillion(), col.rssPerSeries()/vm.rssPerSeries())
	}
	fmt.Printf("bench: the synthetic targets answered %d scrapes\n", farm.Scrapes())
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
