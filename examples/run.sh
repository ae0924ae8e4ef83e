#!/usr/bin/env bash
# make run: Panorama on this machine until Ctrl-C: a collector scraping a
# real node-exporter, itself and the tracing role; a federator over the
# collector; the tracing role with its embedded store. Data goes to ./data/.
set -euo pipefail
cd "$(dirname "$0")/.."
web="${PANORAMA_WEB:-127.0.0.1:9090}"
grpc="${PANORAMA_GRPC:-127.0.0.1:10901}"
ne="${PANORAMA_NODE_EXPORTER:-127.0.0.1:9100}"
fed="${PANORAMA_FEDERATOR:-127.0.0.1:9091}"
fedgrpc="${PANORAMA_FEDERATOR_GRPC:-127.0.0.1:10902}"
tracing="${PANORAMA_TRACING:-127.0.0.1:16686}"
otlpgrpc="${PANORAMA_OTLP_GRPC:-127.0.0.1:4317}"
otlphttp="${PANORAMA_OTLP_HTTP:-127.0.0.1:4318}"
mkdir -p data/run/targets
cat > data/run/collector.yml <<YML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
  external_labels:
    cluster: local
scrape_configs:
  - job_name: node
    file_sd_configs:
      - files: [targets/*.json]
  - job_name: panorama
    static_configs:
      - targets: ["${web}"]
  - job_name: tracing
    static_configs:
      - targets: ["${tracing}"]
YML
echo "[{\"targets\": [\"${ne}\"], \"labels\": {\"node\": \"$(hostname)\"}}]" > data/run/targets/node.json

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
if ! curl -fs "http://${ne}/metrics" >/dev/null 2>&1; then
	prometheus-node-exporter --web.listen-address="${ne}" >data/run/node-exporter.log 2>&1 &
	pids+=($!)
fi
./panorama collector --config.file=data/run/collector.yml --web.listen-address="${web}" \
	--grpc-address="${grpc}" --storage.tsdb.path=data/run/tsdb &
pids+=($!)
./panorama tracing --web.listen-address="${tracing}" --otlp.grpc-address="${otlpgrpc}" \
	--otlp.http-address="${otlphttp}" --data.dir=data/run/tracing >data/run/tracing.log 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
	curl -fs "http://${web}/-/ready" >/dev/null 2>&1 && break
	sleep 0.2
done
./panorama federator --endpoint="${grpc}" --web.listen-address="${fed}" \
	--grpc-address="${fedgrpc}" >data/run/federator.log 2>&1 &
pids+=($!)
cat <<MSG

Panorama is running on this machine (cluster "local"):
  collector, scraping node-exporter at ${ne}, itself and the tracing role:
    PromQL:    curl 'http://${web}/api/v1/query?query=up'
    promtool:  .cache/bin/promtool query instant http://${web} 'rate(node_cpu_seconds_total[1m])'
    Targets:   http://${web}/api/v1/targets
    StoreAPI:  ${grpc} (gRPC)
  federator over the collector (add --endpoint=… for more clusters):
    PromQL:    curl 'http://${fed}/api/v1/query?query=sum by (cluster, job) (up)'
    Stores:    http://${fed}/api/v1/stores
  tracing, embedded store under data/run/tracing:
    OTLP:      grpc ${otlpgrpc}, http http://${otlphttp}/v1/traces
    Jaeger API: curl http://${tracing}/api/services
Logs of the federator and tracing: data/run/*.log. Ctrl-C stops everything.
MSG
wait "${pids[@]}"
