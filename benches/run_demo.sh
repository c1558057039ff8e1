#!/usr/bin/env bash
# The demo model's default clip, vidflow (release build) next to diffusers on
# the same weights, same machine, back to back; prints both and the ratio.
# The PyTorch side needs $VENV with torch, diffusers and transformers
# (scripts/demo_model/train.sh makes .venv-train).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-$PWD/.venv-train}"
repeats="${REPEATS:-5}"
cargo build --release -p vidflow-benches >&2
out="${OUT_DIR:-target/bench}"
mkdir -p "$out"
"${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite demo --repeats "$repeats" > "$out/demo-rust.json"
# The same binary with candle's own SiLU/GELU/softmax (gpu/src/kernels/act.rs).
VIDFLOW_CANDLE_ACTIVATIONS=1 "${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --suite demo --repeats "$repeats" > "$out/demo-rust-candle-act.json"
"$venv/bin/python" benches/pytorch/bench_demo.py --repeats "$repeats" > "$out/demo-pytorch.json"
python3 - "$out/demo-rust.json" "$out/demo-pytorch.json" "$out/demo-rust-candle-act.json" <<'PY'
import json, sys, platform, datetime
r = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2])); c = json.load(open(sys.argv[3]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {platform.machine()} {cpu}; date {datetime.date.today()}")
print(f"clip: {r['width']}x{r['height']}, {r['frames']} frames, {r['steps']} steps, guidance {r['guidance']}")
print(f"vidflow   {r['generate_ms']:9.1f} ms  (runs {', '.join(f'{x:.0f}' for x in r['runs_ms'])})")
print(f"diffusers {p['generate_ms']:9.1f} ms  (runs {', '.join(f'{x:.0f}' for x in p['runs_ms'])}; torch {p['torch']}, {p['threads']} threads)")
print(f"vidflow, candle's activations {c['generate_ms']:9.1f} ms  (runs {', '.join(f'{x:.0f}' for x in c['runs_ms'])})")
print(f"diffusers / vidflow = {p['generate_ms'] / r['generate_ms']:.2f}; candle's activations / ours = {c['generate_ms'] / r['generate_ms']:.2f}")
PY
