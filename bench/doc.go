// Package bench compares the collector with the reference Prometheus (and,
// for ingestion, Debian's VictoriaMetrics) on the same synthetic targets.
//
// The figures live only here, in benchmarks run by `make bench`; unit tests
// carry no timing thresholds. See docs/benchmarks.md for what is measured,
// how, and the last results.
//
// Settings (environment variables, all optional):
//
//	PANORAMA_BENCH_TARGETS         ingest: targets, 1,000 series each (100)
//	PANORAMA_BENCH_INTERVAL        ingest: scrape interval (5s)
//	PANORAMA_BENCH_WARMUP          ingest: time after every server holds all series, before measuring (30s)
//	PANORAMA_BENCH_WINDOW          ingest: measured window (2m)
//	PANORAMA_BENCH_QUERY_TARGETS   query: targets of 1,000 series loaded by remote write (200)
//	PANORAMA_BENCH_QUERY_ROUNDS    query: measured rounds, each query once against each server (25)
//	PANORAMA_BENCH_FED_LEAVES      federator: collectors (leaves) (10)
//	PANORAMA_BENCH_FED_TARGETS_PER_LEAF federator: targets of 1,000 series per leaf (20)
//	PANORAMA_BENCH_FED_ROUNDS      federator: measured rounds, each query once against each server (15)
//	PANORAMA_BENCH_FED_HOLD        federator: keep every server up this long after loading, for profiling by hand (0)
//	PANORAMA_THANOS                Thanos binary for the Thanos Querier (<repo>/.cache/bin/thanos)
//	PANORAMA_BENCH_TRACING_CLIENTS tracing: telemetrygen processes driving a server (4)
//	PANORAMA_BENCH_TRACING_RATE    tracing: traces/s per telemetrygen process (5000)
//	PANORAMA_BENCH_TRACING_BATCH   tracing: spans per OTLP request (512)
//	PANORAMA_BENCH_TRACING_WARMUP  tracing: load before measuring (10s)
//	PANORAMA_BENCH_TRACING_WINDOW  tracing: measured window (60s)
//	PANORAMA_BENCH_TRACING_PROFILE tracing: CPU profile of Panorama under load after the window (20s; 0 skips it)
//	PANORAMA_BENCH_TRACING_ROUNDS  tracing: measured query rounds (25)
//	PANORAMA_BENCH_TRACING_STORED  tracing query: spans loaded into each server before the queries (10000000)
//	PANORAMA_BENCH_TRACING_STREAMS tracing query: concurrent OTLP/gRPC requests of the loader (4)
//	PANORAMA_BENCH_TRACING_LOAD_BATCH tracing query: spans per OTLP request of the loader (1000)
//	PANORAMA_BENCH_TRACING_SEED    tracing query: seed of the generated span set (1)
//	PANORAMA_BENCH_TRACING_QUERY_ROUNDS tracing query: measured query rounds (15)
//	PANORAMA_BENCH_TRACING_DRAIN   tracing query: longest wait, after loading, until a server has stored everything (30m)
//	PANORAMA_JAEGER                Jaeger v2 binary (<repo>/.cache/bin/jaeger)
//	PANORAMA_TELEMETRYGEN          telemetrygen binary (<repo>/.cache/bin/telemetrygen)
//	PANORAMA_BENCH_BINARY          a panorama binary to use instead of building ./cmd/panorama
//	PANORAMA_BENCH_COLLECTOR_ENV   extra environment of the collector process, e.g. GOGC=75
//	PANORAMA_PROMETHEUS            reference Prometheus binary (<repo>/.cache/bin/prometheus)
//	PANORAMA_PROMETHEUS_SLICELABELS the same built with -tags slicelabels (<repo>/.cache/bin/prometheus-slicelabels; optional)
//	PANORAMA_VICTORIAMETRICS       VictoriaMetrics binary (victoria-metrics in $PATH, else /usr/bin/victoria-metrics)
//	PANORAMA_BENCH_KEEP            keep the working directory (data, logs, configuration) when set to 1
package bench
