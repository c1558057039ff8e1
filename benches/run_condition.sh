#!/usr/bin/env bash
# A conditioned denoising step next to an unconditioned one (demo model,
# release build, interleaved in one process): prints the medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${REPEATS:-5}"
cargo build --release -p vidflow-benches >&2
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "machine: $(uname -m) $cpu; date $(date -u +%F)"
"${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite condition --repeats "$repeats"
