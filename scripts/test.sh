#!/usr/bin/env bash
# The project's test command (README, .ci/run). Sets up what the tests need,
# then runs every test in the workspace. Golden cases are read from
# ../shared/golden/ltx; the tests fail (never skip) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
bash scripts/setup-system.sh
cargo test --workspace --locked "$@"
