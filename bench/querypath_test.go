package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/panorama-obs/panorama/collector"
)

// BenchmarkQueryPath isolates the collector's own query path from
// everything else that differs between the panorama binary and the
// reference Prometheus (labels build tag, GOGC, HTTP and JSON): in one
// process, with one PromQL engine (the collector's), it evaluates each query
// of BenchmarkQuery over the collector's queryable (the TSDB with the
// external labels attached) and over a plain TSDB holding the same series.
// The difference between the two sub-benchmarks of a query is what the
// external-label layer costs. Run it with -cpuprofile to see where.
func BenchmarkQueryPath(b *testing.B) {
	nTargets := envInt(b, "PANORAMA_BENCH_QUERY_TARGETS", 200)
	dir := benchDir(b, "querypath")
	end := time.Now().Add(-time.Minute).Truncate(time.Second)
	first := end.Add(-loadStep * (loadSamples - 1)).UnixMilli()

	// The same series twice: one TSDB for the collector to open (it
	// replays the WAL), one kept open here as the plain reference.
	fill := func(path string) *tsdb.DB {
		opts := tsdb.DefaultOptions()
		db, err := tsdb.Open(path, slog.New(slog.DiscardHandler), nil, opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range nTargets {
			app := db.Appender(context.Background())
			for _, ts := range targetTimeseries(i, first) {
				sb := labels.NewScratchBuilder(len(ts.Labels))
				for _, l := range ts.Labels {
					sb.Add(l.Name, l.Value)
				}
				lset := sb.Labels()
				var ref storage.SeriesRef
				for _, s := range ts.Samples {
					var err error
					if ref, err = app.Append(ref, lset, s.Timestamp, s.Value); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		return db
	}
	start := time.Now()
	colDir, plainDir := filepath.Join(dir, "collector"), filepath.Join(dir, "plain")
	if err := fill(colDir).Close(); err != nil {
		b.Fatal(err)
	}
	plain := fill(plainDir)
	b.Cleanup(func() { plain.Close() })

	cfg := filepath.Join(dir, "collector.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  external_labels:\n    cluster: bench\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c, err := collector.New(slog.New(slog.DiscardHandler), reg, reg, collector.Options{
		ConfigFile:          cfg,
		TSDBPath:            colDir,
		Retention:           model.Duration(15 * 24 * time.Hour),
		QueryMaxSamples:     50000000,
		QueryTimeout:        2 * time.Minute,
		QueryMaxConcurrency: 20,
		LookbackDelta:       5 * time.Minute,
		RemoteFlushDeadline: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	// The collector closes its TSDB when its run group stops.
	var g run.Group
	c.Register(&g)
	stop := make(chan struct{})
	g.Add(func() error { <-stop; return nil }, func(error) {})
	done := make(chan struct{})
	go func() { _ = g.Run(); close(done) }()
	b.Cleanup(func() { close(stop); <-done })
	fmt.Printf("bench: query path: %d series in two TSDBs, collector open, in %s\n", nTargets*SeriesPerTarget, time.Since(start).Round(time.Second))

	engine := c.Engine()
	variants := []struct {
		name string
		q    storage.Queryable
	}{
		{"plain", plain},
		{"collector", c.Queryable()},
	}
	for _, q := range benchQueries {
		for _, v := range variants {
			b.Run(q.name+"/"+v.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					qry, err := engine.NewInstantQuery(context.Background(), v.q, nil, q.expr, end)
					if err != nil {
						b.Fatal(err)
					}
					res := qry.Exec(context.Background())
					if res.Err != nil {
						b.Fatal(res.Err)
					}
					qry.Close()
				}
			})
		}
	}
}
