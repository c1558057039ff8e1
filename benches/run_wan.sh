#!/usr/bin/env bash
# The Wan 2.1 transformer on the CPU next to diffusers: a one-layer model at
# the 1.3B widths on 3,120 video and 512 text tokens, both sides in one run
# on the same machine, and their ratio. VENV: a Python with torch and
# diffusers (benches/pytorch/setup.sh makes .venv-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${REPEATS:-3}"
venv="${VENV:-$PWD/.venv-bench}"
[ -x "$venv/bin/python" ] || VENV="$venv" bash benches/pytorch/setup.sh >&2
cargo build --release -p vidflow-benches >&2
rust=$("${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite wan --repeats "$repeats")
torch=$("$venv/bin/python" benches/pytorch/bench_wan.py "$repeats")
python3 - "$rust" "$torch" <<'PY'
import json, sys, platform, datetime
r = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {platform.machine()} {cpu}, threads {r['threads']}/{p['threads']}; date {datetime.date.today()}")
print(f"vidflow {r['median_ms']:.0f} ms, diffusers {p['median_ms']:.0f} ms, diffusers/vidflow {p['median_ms'] / r['median_ms']:.2f}")
PY
