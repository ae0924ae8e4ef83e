package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/panorama-obs/panorama/internal/testenv"
)

// BenchmarkTracingIngest runs `panorama tracing` (embedded store) and
// Jaeger v2 (Badger store) side by side and drives each in turn with
// telemetrygen over OTLP/gRPC. It reports, from each server's own counters
// and /proc/<pid>/stat: spans accepted per second and per CPU-second, the
// ratio Panorama ÷ Jaeger, disk bytes per span after a clean shutdown,
// trace-by-ID and search median latency over what was loaded, and (from a
// CPU profile) the share of Panorama's ingest CPU spent in the service graph
// and span metrics.
//
// The servers are driven one after the other, not at once: on two cores,
// concurrent load would make each server's CPU depend on how the scheduler
// splits the cores between both servers and two load generators.
func BenchmarkTracingIngest(b *testing.B) {
	jaeger := jaegerBinary(b)
	tg := telemetrygenBinary(b)
	var (
		clients = envInt(b, "PANORAMA_BENCH_TRACING_CLIENTS", 4)
		rate    = envInt(b, "PANORAMA_BENCH_TRACING_RATE", 5000)
		batch   = envInt(b, "PANORAMA_BENCH_TRACING_BATCH", 512)
		warmup  = envDuration(b, "PANORAMA_BENCH_TRACING_WARMUP", 10*time.Second)
		window  = envDuration(b, "PANORAMA_BENCH_TRACING_WINDOW", 60*time.Second)
		profile = envDurationOrZero(b, "PANORAMA_BENCH_TRACING_PROFILE", 20*time.Second)
		rounds  = envInt(b, "PANORAMA_BENCH_TRACING_ROUNDS", 25)
	)
	for b.Loop() {
		pano := startPanoramaTracing(b)
		jae := startJaeger(b, jaeger)
		peers := []*tracingPeer{pano, jae}

		results := make([]tracingIngest, len(peers))
		for i, p := range peers {
			fmt.Printf("bench: tracing: driving %s with %d telemetrygen processes (%d traces/s each, %d spans per request, %s warm-up, %s window)\n", p.srv.name, clients, rate, batch, warmup, window)
			results[i] = driveTracing(b, p, tg, clients, rate, batch, warmup, window, profile)
		}
		for _, p := range peers {
			waitStored(b, p, 5*time.Minute)
		}

		loaded := make([]float64, len(peers))
		for i, p := range peers {
			v, _, err := first(p.srv, p.stored)
			if err != nil {
				b.Fatal(err)
			}
			loaded[i] = v
		}
		end := time.Now().Add(time.Minute)
		window := fmt.Sprintf("&start=%d&end=%d", end.Add(-time.Hour).UnixMicro(), end.UnixMicro())
		ids := make([][]string, len(peers))
		for i, p := range peers {
			ids[i] = traceIDs(b, p, "/api/traces?service=telemetrygen&limit="+strconv.Itoa(rounds)+window)
			if len(ids[i]) == 0 {
				b.Fatalf("%s: no traces found", p.srv.name)
			}
		}
		lat := tracingQueries(b, peers, rounds, ids, []tracingSearch{
			{"search_service", "/api/traces?service=telemetrygen&limit=20" + window},
			{"search_operation_tag", "/api/traces?service=telemetrygen&operation=lets-go&limit=20&tags=" + url.QueryEscape(`{"span.kind":"client"}`) + window},
		})

		disk, tables := stopAndMeasureDisk(peers)
		queueLeft := dirBytes(filepath.Join(pano.srv.dir, "queue"))

		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "server\tspans/s\tspans per CPU-s\tCPU (cores)\tspans stored\tdisk B/span\ttables B/span\t")
		for i, p := range peers {
			r := results[i]
			fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.2f\t%.0f\t%.1f\t%.1f\t\n", p.srv.name, r.spansPerSec(), r.spansPerCPU(), r.cores(), loaded[i], float64(disk[i])/loaded[i], float64(tables[i])/loaded[i])
		}
		w.Flush()
		fmt.Printf("(Panorama's disk figure includes %d bytes of queue segments)\n", queueLeft)
		w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "query\tpanorama median ms\tjaeger median ms\tratio\t")
		for _, q := range lat {
			pm, jm := median(q.ms[0]), median(q.ms[1])
			fmt.Fprintf(w, "%s\t%.2f\t%.2f\t%.2f\t\n", q.name, pm, jm, pm/jm)
			b.ReportMetric(pm/jm, q.name+"_latency_ratio")
		}
		w.Flush()
		rate := results[0].spansPerSec() / results[1].spansPerSec()
		perCPU := results[0].spansPerCPU() / results[1].spansPerCPU()
		fmt.Printf("bench: tracing: Panorama ÷ Jaeger: spans/s %.2f, spans per CPU-second %.2f (target ≥ 1.0)\n", rate, perCPU)
		b.ReportMetric(perCPU, "spans_per_cpu_ratio")
		b.ReportMetric(rate, "spans_per_s_ratio")
		b.ReportMetric(results[0].spansPerCPU(), "panorama_spans_per_cpu_s")
		b.ReportMetric(results[1].spansPerCPU(), "jaeger_spans_per_cpu_s")
		b.ReportMetric(float64(disk[0])/loaded[0], "panorama_disk_B_per_span")
		b.ReportMetric(float64(disk[1])/loaded[1], "jaeger_disk_B_per_span")
		b.ReportMetric(float64(tables[0])/loaded[0], "panorama_tables_B_per_span")
		b.ReportMetric(float64(tables[1])/loaded[1], "jaeger_tables_B_per_span")
		if sh := results[0].shares; len(sh) > 0 {
			fmt.Printf("bench: tracing: share of Panorama's CPU profile under load (%s):", profile)
			for _, s := range sh {
				fmt.Printf(" %s %.1f%%", s.name, s.pct)
			}
			fmt.Println()
			b.ReportMetric(results[0].shares[0].pct, "servicegraph_cpu_pct")
		}
	}
}

// tracingPeer is a tracing server under test.
type tracingPeer struct {
	srv      *server // srv.addr serves /metrics
	otlp     string  // OTLP/gRPC host:port
	api      string  // base URL of the Jaeger query API
	accepted []metricRef
	stored   []metricRef
	dataDirs []string
	pprof    bool // /debug/pprof on srv.addr
}

func jaegerBinary(b *testing.B) string {
	b.Helper()
	p := os.Getenv("PANORAMA_JAEGER")
	if p == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		p = filepath.Join(root, ".cache", "bin", "jaeger")
	}
	if _, err := os.Stat(p); err != nil {
		missing(b, fmt.Sprintf("Jaeger v2 not found at %s (`make bench` builds it from tools/jaeger)", p))
	}
	return p
}

func telemetrygenBinary(b *testing.B) string {
	b.Helper()
	p := os.Getenv("PANORAMA_TELEMETRYGEN")
	if p == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			b.Fatal(err)
		}
		p = filepath.Join(root, ".cache", "bin", "telemetrygen")
	}
	if _, err := os.Stat(p); err != nil {
		missing(b, fmt.Sprintf("telemetrygen not found at %s (`make test-deps` installs it)", p))
	}
	return p
}

func startPanoramaTracing(b *testing.B) *tracingPeer {
	b.Helper()
	bin := buildPanorama(b)
	var otlp string
	srv := startServer(b, "panorama", bin, nil, "/-/ready", func(addr, dir string) []string {
		var err error
		if otlp, err = freeAddr(); err != nil {
			b.Fatal(err)
		}
		return []string{"tracing",
			"--web.listen-address=" + addr,
			"--otlp.grpc-address=" + otlp,
			"--otlp.http-address=",
			"--data.dir=" + dir,
		}
	})
	return &tracingPeer{
		srv:      srv,
		otlp:     otlp,
		api:      srv.url(""),
		accepted: []metricRef{{name: "panorama_tracing_spans_accepted_total"}},
		stored:   []metricRef{{name: "panorama_tracing_spans_stored_total"}},
		dataDirs: []string{srv.dir},
		pprof:    true,
	}
}

// jaegerConfig is cmd/jaeger/config-badger.yaml of Jaeger v1.76.0 reduced
// to what the benchmark uses, on loopback ports: the OTLP/gRPC receiver,
// the batch processor, Badger with its defaults (writes not synced), the
// query API, and the collector's own metrics in Prometheus format.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {{metrics_port}}
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: main_store
    http:
      endpoint: {{query_http}}
    grpc:
      endpoint: {{query_grpc}}
  jaeger_storage:
    backends:
      main_store:
        badger:
          directories:
            keys: {{dir}}/keys
            values: {{dir}}/values
          ephemeral: false
          ttl:
            spans: 48h
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {{otlp}}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: main_store
`

func startJaeger(b *testing.B, bin string) *tracingPeer {
	b.Helper()
	var otlp, query string
	srv := startServer(b, "jaeger", bin, nil, "/metrics", func(addr, dir string) []string {
		addrs := make([]string, 3)
		for i := range addrs {
			a, err := freeAddr()
			if err != nil {
				b.Fatal(err)
			}
			addrs[i] = a
		}
		otlp, query = addrs[0], addrs[1]
		_, port, _ := strings.Cut(addr, ":")
		cfg := strings.NewReplacer("{{metrics_port}}", port, "{{query_http}}", query, "{{query_grpc}}", addrs[2], "{{otlp}}", otlp, "{{dir}}", dir).Replace(jaegerConfig)
		path := filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-config.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
		return []string{"--config=" + path}
	})
	p := &tracingPeer{
		srv:  srv,
		otlp: otlp,
		api:  "http://" + query,
		// The collector's telemetry, OpenTelemetry names exported with
		// the Prometheus counter suffix.
		accepted: []metricRef{
			{name: "otelcol_receiver_accepted_spans_total", parts: []string{`receiver="otlp"`}},
			{name: "otelcol_receiver_accepted_spans", parts: []string{`receiver="otlp"`}},
		},
		stored: []metricRef{
			{name: "otelcol_exporter_sent_spans_total", parts: []string{`exporter="jaeger_storage_exporter"`}},
			{name: "otelcol_exporter_sent_spans", parts: []string{`exporter="jaeger_storage_exporter"`}},
		},
		dataDirs: []string{srv.dir},
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := getBody(p.api + "/api/services"); err == nil {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("jaeger query API not ready: %v\n%s", err, srv.logTail(4096))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return p
}

type tracingIngest struct {
	cpu0, cpu1, n0, n1 float64
	window             time.Duration
	shares             []cpuShare
}

func (r tracingIngest) spansPerSec() float64 { return (r.n1 - r.n0) / r.window.Seconds() }
func (r tracingIngest) spansPerCPU() float64 { return (r.n1 - r.n0) / (r.cpu1 - r.cpu0) }
func (r tracingIngest) cores() float64       { return (r.cpu1 - r.cpu0) / r.window.Seconds() }

type cpuShare struct {
	name string
	pct  float64
}

func (p *tracingPeer) snapshot(b *testing.B) (cpu, spans float64) {
	b.Helper()
	p.srv.alive(b)
	cpu, err := p.srv.cpuSeconds()
	if err != nil {
		b.Fatal(err)
	}
	spans, _, err = first(p.srv, p.accepted)
	if err != nil {
		b.Fatal(err)
	}
	return cpu, spans
}

// driveTracing runs clients telemetrygen processes (one worker each, rate
// traces per second, batch spans per OTLP request) against p for
// warmup+window(+profile), measuring over window; then, for a server with pprof, takes a CPU
// profile under the same load.
func driveTracing(b *testing.B, p *tracingPeer, tg string, clients, rate, batch int, warmup, window, profile time.Duration) tracingIngest {
	b.Helper()
	total := warmup + window
	if p.pprof && profile > 0 {
		total += profile + 2*time.Second
	}
	dir := benchDir(b, "telemetrygen-"+p.srv.name)
	var logs []string
	for c := range clients {
		logPath := filepath.Join(dir, fmt.Sprintf("telemetrygen-%d.log", c))
		logf, err := os.Create(logPath)
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, logPath)
		cmd := exec.Command(tg, "traces", "--otlp-insecure", "--otlp-endpoint", p.otlp,
			"--rate", strconv.Itoa(rate), "--workers", "1", "--batch-size", strconv.Itoa(batch),
			"--duration", total.String())
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait(); logf.Close() }()
		defer func() {
			select {
			case <-done:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
				<-done
			}
		}()
	}

	time.Sleep(warmup)
	var r tracingIngest
	r.cpu0, r.n0 = p.snapshot(b)
	start := time.Now()
	time.Sleep(window)
	r.cpu1, r.n1 = p.snapshot(b)
	r.window = time.Since(start)
	if r.n1 == r.n0 {
		b.Fatalf("%s accepted no spans in %s; telemetrygen:\n%s", p.srv.name, window, tail(logs[0]))
	}
	if p.pprof && profile > 0 {
		r.shares = profileShares(b, p, dir, profile)
	}
	return r
}

// profileShares takes a CPU profile of p and returns the share of samples
// with a frame in each part of the tracing role.
func profileShares(b *testing.B, p *tracingPeer, dir string, d time.Duration) []cpuShare {
	b.Helper()
	body, err := getBody(p.srv.url(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds()))))
	if err != nil {
		b.Logf("profile: %v", err)
		return nil
	}
	path := filepath.Join(dir, "panorama-cpu.pprof")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		b.Fatal(err)
	}
	parts := []struct{ name, focus string }{
		{"service graph + span metrics", `tracing/servicegraph\.`},
		{"receiver (OTLP decode, gRPC)", `tracing/receiver\.|google.golang.org/grpc`},
		{"queue", `tracing/queue\.`},
		{"embedded store", `tracing/store/embedded\.`},
		{"pebble", `cockroachdb/pebble`},
		{"GC", `runtime\.gcBgMarkWorker`},
	}
	re := regexp.MustCompile(`Showing nodes accounting for [^,]+, ([0-9.]+)% of`)
	var out []cpuShare
	for _, part := range parts {
		// Every node shown, none dropped: the total is that of the
		// samples with a frame matching the focus.
		cmd := exec.Command("go", "tool", "pprof", "-top", "-nodefraction=0", "-nodecount=1000000", "-focus="+part.focus, path)
		o, err := cmd.CombinedOutput()
		if err != nil {
			b.Logf("go tool pprof: %v\n%s", err, o)
			return out
		}
		pct := 0.0
		if m := re.FindSubmatch(o); m != nil {
			pct, _ = strconv.ParseFloat(string(m[1]), 64)
		}
		out = append(out, cpuShare{part.name, pct})
	}
	return out
}

// waitStored waits until everything p accepted is in its store.
func waitStored(b *testing.B, p *tracingPeer, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		acc, _, err := first(p.srv, p.accepted)
		if err != nil {
			b.Fatal(err)
		}
		st, _, err := first(p.srv, p.stored)
		if err != nil {
			b.Fatal(err)
		}
		if st >= acc {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %.0f of %.0f accepted spans stored after %s", p.srv.name, st, acc, timeout)
		}
		time.Sleep(time.Second)
	}
}

type queryTimes struct {
	name string
	ms   [2][]float64 // per peer
}

// tracingSearch is one timed search: a name and the query API path.
type tracingSearch struct{ name, path string }

// tracingQueries times, after 3 warm-up rounds, in rounds that alternate
// which server goes first, a trace by ID (peer i's round r asks for
// ids[i][r mod len(ids[i])], a different trace each round when there are
// enough IDs) and each search. A warm-up search that finds no trace fails
// the benchmark.
func tracingQueries(b *testing.B, peers []*tracingPeer, rounds int, ids [][]string, searches []tracingSearch) []queryTimes {
	b.Helper()
	out := []queryTimes{{name: "trace_by_id"}}
	for _, s := range searches {
		out = append(out, queryTimes{name: s.name})
	}
	for round := -3; round < rounds; round++ { // 3 warm-up rounds
		for k := range peers {
			i := (k + max(round, 0)) % len(peers)
			p := peers[i]
			paths := []string{"/api/traces/" + ids[i][max(round, 0)%len(ids[i])]}
			for _, s := range searches {
				paths = append(paths, s.path)
			}
			for q, path := range paths {
				t0 := time.Now()
				body, err := getBody(p.api + path)
				el := time.Since(t0)
				if err != nil {
					b.Fatalf("%s %s: %v", p.srv.name, path, err)
				}
				if round == -3 && q > 0 && !strings.Contains(string(body), `"traceID"`) {
					b.Fatalf("%s %s: no traces in %.200s", p.srv.name, path, body)
				}
				if round >= 0 {
					out[q].ms[i] = append(out[q].ms[i], float64(el.Microseconds())/1000)
				}
			}
		}
	}
	return out
}

// stopAndMeasureDisk stops every peer cleanly (which flushes both stores)
// and returns the disk each one's data directories take: every file, and
// the sorted tables (and Badger's value log) alone, without write-ahead
// logs, which Pebble keeps (recycled, a fixed few memtables' worth) and
// Badger does not.
func stopAndMeasureDisk(peers []*tracingPeer) (disk, tables []int64) {
	disk, tables = make([]int64, len(peers)), make([]int64, len(peers))
	for i, p := range peers {
		p.srv.stop()
		for _, d := range p.dataDirs {
			disk[i] += dirBytes(d)
			tables[i] += filesBytes(d, ".sst", ".vlog")
		}
	}
	return disk, tables
}

func traceIDs(b *testing.B, p *tracingPeer, path string) []string {
	b.Helper()
	body, err := getBody(p.api + path)
	if err != nil {
		b.Fatalf("%s: %v", p.srv.name, err)
	}
	var resp struct {
		Data []struct {
			TraceID string `json:"traceID"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		b.Fatalf("%s: %v: %.200s", p.srv.name, err, body)
	}
	var ids []string
	for _, t := range resp.Data {
		// Jaeger's JSON drops a trace ID's leading zeros; both servers
		// take the full 32 digits.
		id := t.TraceID
		if len(id) < 32 {
			id = strings.Repeat("0", 32-len(id)) + id
		}
		ids = append(ids, id)
	}
	return ids
}

func getBody(u string) ([]byte, error) {
	// Jaeger's Badger searches take seconds over millions of spans.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, body)
	}
	return body, nil
}

// dirBytes is the disk space the regular files under dir take (allocated
// blocks, as du counts: Badger preallocates sparse files).
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// filesBytes is the size of the files under dir whose names end in one of
// suffixes.
func filesBytes(dir string, suffixes ...string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		for _, s := range suffixes {
			if strings.HasSuffix(path, s) {
				n += fi.Size()
				break
			}
		}
		return nil
	})
	return n
}

func tail(path string) string {
	raw, _ := os.ReadFile(path)
	if len(raw) > 4096 {
		raw = raw[len(raw)-4096:]
	}
	return string(raw)
}
