#!/usr/bin/env bash
# Intake benchmark: jobs/s from RabbitMQ through `vidflow serve` (model
# stages replaced by a no-op) next to the raw lapin consume+ack rate, same
# broker, same prefetch, same run. Starts the private broker if it is not
# running (and stops it again).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${JOBS:-5000}"
export VIDFLOW_AMQP_PORT="${VIDFLOW_AMQP_PORT:-5679}"
export VIDFLOW_AMQP_URL="amqp://vidflow:${VIDFLOW_BROKER_PASSWORD:-vidflow}@127.0.0.1:${VIDFLOW_AMQP_PORT}/%2f"
if ! bash scripts/broker.sh status >/dev/null 2>&1; then
  bash scripts/broker.sh start
  trap 'bash scripts/broker.sh stop' EXIT
fi
cargo build --release -p vidflow-benches >&2
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
echo "machine: $(uname -m) $cpu, $(nproc) threads; RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?'); date $(date -u +%F)"
"${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite intake --jobs "$jobs"
