#!/usr/bin/env bash
# make run: a collector on this machine scraping a real node-exporter and
# itself, until Ctrl-C. Data goes to ./data/.
set -euo pipefail
cd "$(dirname "$0")/.."
web="${PANORAMA_WEB:-127.0.0.1:9090}"
grpc="${PANORAMA_GRPC:-127.0.0.1:10901}"
ne="${PANORAMA_NODE_EXPORTER:-127.0.0.1:9100}"
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
for _ in $(seq 1 50); do
	curl -fs "http://${web}/-/ready" >/dev/null 2>&1 && break
	sleep 0.2
done
cat <<MSG

Panorama collector is running (cluster "local"), scraping node-exporter at ${ne} and itself.
  PromQL:   curl 'http://${web}/api/v1/query?query=up'
  promtool: .cache/bin/promtool query instant http://${web} 'rate(node_cpu_seconds_total[1m])'
  Targets:  http://${web}/api/v1/targets
  StoreAPI: ${grpc} (gRPC)
Ctrl-C stops it.
MSG
wait "${pids[@]}"
