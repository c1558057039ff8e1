#!/usr/bin/env bash
# The Python packages the tests use, in a private virtualenv at .venv-test:
# the readers the analytics tests check our Parquet files with (DuckDB and
# pyarrow), and the `openai` client whose videos resource
# tests/openai_client.rs points at the HTTP API (pinned: 2.8.1 has it).
# Idempotent: does nothing when all import. Prints the venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-test
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c "import duckdb, pyarrow, openai; assert openai.__version__ == '2.8.1'" >/dev/null 2>&1; then
  echo "$PWD/$PY"
  exit 0
fi
if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
  echo "setup-python: python3 -m venv failed; installing python3-venv" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
  python3 -m venv "$VENV" >&2
fi
"$PY" -m pip install -q --disable-pip-version-check "duckdb==1.4.2" "pyarrow==22.0.0" "openai==2.8.1" >&2
"$PY" -c "import duckdb, pyarrow, openai" >&2
echo "$PWD/$PY"
