package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// BenchmarkTracingQuery loads the same PANORAMA_BENCH_TRACING_STORED spans
// (10M by default; see spanSet) into `panorama tracing` (embedded store)
// and Jaeger v2 (Badger), one server after the other, with the
// benchmark's own OTLP/gRPC loader as fast as each server takes them, waits
// until each has stored everything it accepted, and then times trace-by-ID
// and search queries against both (median and p90). It also reports the
// rate each server sustained while loading (to stored, from its own
// counters), spans per CPU-second, and disk bytes per span after a clean
// shutdown.
func BenchmarkTracingQuery(b *testing.B) {
	jaeger := jaegerBinary(b)
	var (
		n       = envInt(b, "PANORAMA_BENCH_TRACING_STORED", 10_000_000)
		streams = envInt(b, "PANORAMA_BENCH_TRACING_STREAMS", 4)
		batch   = envInt(b, "PANORAMA_BENCH_TRACING_LOAD_BATCH", 1000)
		seed    = envInt(b, "PANORAMA_BENCH_TRACING_SEED", 1)
		rounds  = envInt(b, "PANORAMA_BENCH_TRACING_QUERY_ROUNDS", 15)
		drain   = envDuration(b, "PANORAMA_BENCH_TRACING_DRAIN", 30*time.Minute)
	)
	for b.Loop() {
		// The spans start over the hour before the benchmark started.
		now := time.Now().Truncate(time.Second)
		set := newSpanSet(uint64(seed), n, batch, now.Add(-time.Hour), time.Hour)
		fmt.Printf("bench: tracing query: %d spans (about %.0f traces, %d services), %d spans per request, %d concurrent requests\n",
			n, set.expected, len(set.services), batch, streams)

		pano := startPanoramaTracing(b)
		jae := startJaeger(b, jaeger)
		peers := []*tracingPeer{pano, jae}

		loads := make([]tracingLoad, len(peers))
		for i, p := range peers {
			loads[i] = loadTracing(b, p, set, streams, drain)
		}

		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "server\tspans stored\taccepted in s\tstored in s\taccepted spans/s\tstored spans/s\tspans per CPU-s\tCPU (cores)\tretries\t")
		for i, p := range peers {
			l := loads[i]
			fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%d\t\n", p.srv.name, l.stored, l.accept.Seconds(), l.total.Seconds(),
				l.stored/l.accept.Seconds(), l.stored/l.total.Seconds(), l.stored/l.cpu, l.cpu/l.total.Seconds(), l.retries)
		}
		w.Flush()

		lat := tracingQueryLatencies(b, peers, set, rounds)
		disk, tables := stopAndMeasureDisk(peers)
		queueLeft := dirBytes(filepath.Join(pano.srv.dir, "queue"))

		w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "server\tdisk B/span\ttables B/span\t")
		for i, p := range peers {
			fmt.Fprintf(w, "%s\t%.1f\t%.1f\t\n", p.srv.name, float64(disk[i])/loads[i].stored, float64(tables[i])/loads[i].stored)
		}
		w.Flush()
		fmt.Printf("(Panorama's disk figure includes %d bytes of queue segments)\n", queueLeft)

		w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "query\tpanorama median ms\tpanorama p90 ms\tjaeger median ms\tjaeger p90 ms\tmedian ratio\t")
		for _, q := range lat {
			pm, jm := median(q.ms[0]), median(q.ms[1])
			fmt.Fprintf(w, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", q.name, pm, quantile(q.ms[0], 0.9), jm, quantile(q.ms[1], 0.9), pm/jm)
			b.ReportMetric(pm/jm, q.name+"_latency_ratio")
		}
		w.Flush()
		for i, p := range peers {
			b.ReportMetric(loads[i].stored/loads[i].total.Seconds(), p.srv.name+"_stored_spans_per_s")
			b.ReportMetric(loads[i].stored/loads[i].cpu, p.srv.name+"_spans_per_cpu_s")
			b.ReportMetric(float64(disk[i])/loads[i].stored, p.srv.name+"_disk_B_per_span")
		}
	}
}

// tracingLoad is what loading the span set into one server took.
type tracingLoad struct {
	stored  float64       // the server's stored counter at the end
	accept  time.Duration // until the loader's last request was accepted
	total   time.Duration // until every accepted span was stored
	cpu     float64       // the server's CPU seconds over total
	retries int64
}

// loadTracing sends the span set to p and waits until p has stored all of
// it, by its own counters.
func loadTracing(b *testing.B, p *tracingPeer, set *spanSet, streams int, drain time.Duration) tracingLoad {
	b.Helper()
	// A fresh server: nothing accepted yet (Jaeger exposes its counter
	// only from the first span on).
	p.srv.alive(b)
	cpu0, err := p.srv.cpuSeconds()
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("bench: tracing query: loading %d spans into %s\n", set.n, p.srv.name)
	start := time.Now()
	res, err := loadSpans(context.Background(), p.otlp, set, streams, func(spans int64, el time.Duration) {
		if int(el.Seconds())%60 < 10 {
			fmt.Printf("bench: tracing query: %s: %d spans accepted in %s (%.0f/s)\n", p.srv.name, spans, el.Round(time.Second), float64(spans)/el.Seconds())
		}
	})
	if err != nil {
		p.srv.alive(b)
		b.Fatalf("loading %s: %v (%d spans accepted, %d retries)", p.srv.name, err, res.spans, res.retries)
	}
	fmt.Printf("bench: tracing query: %s accepted %d spans in %s (%d requests, %d retries); waiting until they are stored\n",
		p.srv.name, res.spans, res.elapsed.Round(time.Second), res.requests, res.retries)
	waitStored(b, p, drain)
	l := tracingLoad{accept: res.elapsed, total: time.Since(start), retries: res.retries}
	cpu1, acc := p.snapshot(b)
	l.cpu = cpu1 - cpu0
	if got := acc; got != float64(set.n) {
		b.Fatalf("%s counted %.0f spans accepted, the loader sent %d", p.srv.name, got, set.n)
	}
	st, _, err := first(p.srv, p.stored)
	if err != nil {
		b.Fatal(err)
	}
	l.stored = st
	fmt.Printf("bench: tracing query: %s stored %.0f spans in %s\n", p.srv.name, st, l.total.Round(time.Second))
	return l
}

// The service and operation the searches use. checkout is a middle-tier
// service with about 4 % of the spans. A trace's customer.id (one of
// 5,000) is on each of its server spans, so a search for one with an
// operation means the same whether the server matches tags and operation on one span
// (Panorama) or anywhere in the service's spans of the trace (Jaeger's
// Badger store joins its indexes by trace ID); the http.status_code search
// shows that difference.
const (
	querySvc = "checkout"
	queryOp  = "POST /checkout/orders"
)

// tracingQueryLatencies checks that both servers hold the same traces and
// times trace by ID and three searches over the loaded time range.
func tracingQueryLatencies(b *testing.B, peers []*tracingPeer, set *spanSet, rounds int) []queryTimes {
	b.Helper()
	window := fmt.Sprintf("&start=%d&end=%d", set.start.UnixMicro(), set.end().UnixMicro())
	// A customer of one of the last traces that call the operation.
	queryCustomer := set.customerWith(querySvc, queryOp)
	searches := []tracingSearch{
		{"search_service", "/api/traces?service=" + querySvc + "&limit=20" + window},
		{"search_operation_tag", "/api/traces?service=" + querySvc + "&operation=" + url.QueryEscape(queryOp) + "&limit=20&tags=" + url.QueryEscape(`{"customer.id":"`+queryCustomer+`"}`) + window},
		{"search_operation_error", "/api/traces?service=" + querySvc + "&operation=" + url.QueryEscape(queryOp) + "&limit=20&tags=" + url.QueryEscape(`{"http.status_code":"500"}`) + window},
		{"search_min_duration", "/api/traces?service=" + querySvc + "&minDuration=500ms&limit=20" + window},
	}
	// Trace IDs from each server's search by service, alternately, so
	// that each round asks both servers for the same, different trace.
	var per [][]string
	for _, p := range peers {
		ids := traceIDs(b, p, "/api/traces?service="+querySvc+"&limit="+strconv.Itoa(rounds)+window)
		if len(ids) == 0 {
			b.Fatalf("%s: no traces found", p.srv.name)
		}
		per = append(per, ids)
	}
	var ids []string
	seen := map[string]bool{}
	for k := 0; len(ids) < rounds && k < rounds; k++ {
		for _, l := range per {
			if k < len(l) && !seen[l[k]] {
				seen[l[k]] = true
				ids = append(ids, l[k])
			}
		}
	}
	// Sanity: every server returns each trace with the same spans.
	for _, id := range ids {
		var counts []int
		for _, p := range peers {
			counts = append(counts, traceSpanCount(b, p, id))
		}
		for i := range counts {
			if counts[i] != counts[0] {
				b.Errorf("trace %s: %s returns %d spans, %s %d", id, peers[0].srv.name, counts[0], peers[i].srv.name, counts[i])
			}
		}
	}
	fmt.Printf("bench: tracing query: %d traces by ID agree on both servers (span counts)\n", len(ids))
	// Each search finds as many traces on every server.
	for _, s := range searches {
		var found []string
		for _, p := range peers {
			found = append(found, fmt.Sprintf("%s %d", p.srv.name, len(traceIDs(b, p, s.path))))
		}
		fmt.Printf("bench: tracing query: %s finds: %s\n", s.name, strings.Join(found, ", "))
	}
	same := make([][]string, len(peers))
	for i := range same {
		same[i] = ids
	}
	return tracingQueries(b, peers, rounds, same, searches)
}

// traceSpanCount is the number of spans p returns for trace id.
func traceSpanCount(b *testing.B, p *tracingPeer, id string) int {
	b.Helper()
	body, err := getBody(p.api + "/api/traces/" + id)
	if err != nil {
		b.Fatalf("%s: trace %s: %v", p.srv.name, id, err)
	}
	var resp struct {
		Data []struct {
			Spans []json.RawMessage `json:"spans"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		b.Fatalf("%s: %v: %.200s", p.srv.name, err, body)
	}
	n := 0
	for _, t := range resp.Data {
		n += len(t.Spans)
	}
	return n
}
