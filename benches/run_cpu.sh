#!/usr/bin/env bash
# One command for the CPU benchmark: the Rust runtime and the PyTorch peer on
# the same shapes, same machine, back to back, and the ratio of the two.
# Needs idle cores: other load skews both sides (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${REPEATS:-3}"
# The PyTorch side runs from the environment setup.sh made: its VENV when
# given, else .venv-bench (setup.sh's default).
venv="${VENV:-$PWD/.venv-bench}"
VENV="$venv" bash benches/pytorch/setup.sh >&2
cargo build --release -p vidflow-benches >&2
out="${OUT_DIR:-target/bench}"
mkdir -p "$out"
"${CARGO_TARGET_DIR:-target}/release/vidflow-bench" --config all --repeats "$repeats" > "$out/rust.json"
"$venv/bin/python" benches/pytorch/bench_ltx.py --config all --repeats "$repeats" > "$out/pytorch.json"
python3 - "$out/rust.json" "$out/pytorch.json" <<'PY'
import json, sys, platform, datetime
r = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {platform.machine()} {cpu}, {r['threads']} threads; date {datetime.date.today()}")
print(f"{'config':<6} {'what':<28} {'vidflow ms':>12} {'pytorch ms':>12} {'pytorch/vidflow':>16}")
for c in ("tiny", "mid"):
    pc = p.get(c) or p.get("configs", {}).get(c)
    if c not in r or pc is None:
        continue
    for what, rk, pk in (("denoise step (CFG b=2)", "step_ms", "step_ms"),
                         ("step incl. text projection", "step_with_text_projection_ms", "step_ms"),
                         ("VAE decode", "decode_ms", "decode_ms")):
        a, b = r[c][rk], pc[pk]
        print(f"{c:<6} {what:<28} {a:>12.2f} {b:>12.2f} {b / a:>16.2f}")
PY
