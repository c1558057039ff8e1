#!/usr/bin/env bash
# Intake benchmark: jobs/s from RabbitMQ through `vidflow serve` (model
# stages replaced by a no-op) next to the raw lapin consume+ack rate, same
# broker, same prefetch, same run, with the state on local files and in
# PostgreSQL; then the commit alone on both. TENANTS=N spreads the jobs over
# N tenants (default 1). Starts the private broker and
# PostgreSQL if they are not running (and stops them again).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${JOBS:-5000}"
export VIDFLOW_AMQP_PORT="${VIDFLOW_AMQP_PORT:-5679}"
export VIDFLOW_AMQP_URL="amqp://vidflow:${VIDFLOW_BROKER_PASSWORD:-vidflow}@127.0.0.1:${VIDFLOW_AMQP_PORT}/%2f"
stop=()
if ! bash scripts/broker.sh status >/dev/null 2>&1; then
  bash scripts/broker.sh start
  stop+=("bash scripts/broker.sh stop")
fi
# A cluster of its own with fsync on: the local backend pays for its
# fsyncs, so the database must too.
export VIDFLOW_PG_PORT="${VIDFLOW_BENCH_PG_PORT:-55433}" VIDFLOW_PG_FSYNC=on
bash scripts/postgres.sh start
stop+=("bash scripts/postgres.sh stop")
trap 'for c in "${stop[@]}"; do $c; done' EXIT
VIDFLOW_BENCH_DATABASE_URL="$(bash scripts/postgres.sh url)"
export VIDFLOW_BENCH_DATABASE_URL
cargo build --release -p vidflow-benches >&2
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
echo "machine: $(uname -m) $cpu, $(nproc) threads; RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?'); PostgreSQL $(dpkg-query -W -f '${Version}' postgresql-15 2>/dev/null || echo '?'); date $(date -u +%F)"
"${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite intake --jobs "$jobs"
