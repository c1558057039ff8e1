#!/usr/bin/env bash
# One command for the lent GPU machine: kernel checks, golden
# parity, attention and LTX-2B step benchmarks, VAE decode, then the
# diffusers/PyTorch peer on the same GPU in the same run. Expects what
# `benches/gpu/prepare.sh` put in .devcarry/ (the CUDA binary, the golden
# cases, the diffusers wheel). Results: $OUT/*.jsonl and a summary table.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/vidflow-gpu-out}"
mkdir -p "$OUT"
C=.devcarry
VAE_ARGS="${VAE_ARGS:-}"
# cuBLAS, cuRAND and NVRTC of CUDA 13 from the machine's own install.
for lib in libcublas.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  p=$(find /usr/local/cuda*/ /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
  [ -n "$p" ] && LD_LIBRARY_PATH="$(dirname "$p")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
BIN=/tmp/vidflow-gpu-bench
python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$C/vidflow-gpu-bench.xz" "$BIN"
chmod +x "$BIN"
ldd "$BIN" | grep -i "not found" && echo "missing libraries above"
step() { echo "== $*"; timeout "$1" "${@:2}"; echo "rc=$?"; }
# Most important first: the call's own limit may cut the tail.
step 60 "$BIN" nvrtc 2>&1 | tee "$OUT/nvrtc.jsonl"
step 90 "$BIN" check 2>&1 | tee "$OUT/check.jsonl"
step 120 "$BIN" golden --dir "$C/golden" 2>&1 | tee "$OUT/golden.jsonl"
step 60 "$BIN" attention 2>&1 | tee "$OUT/attention.jsonl"
step 120 "$BIN" step 2>&1 | tee "$OUT/step.jsonl"
if [ "${SKIP_PEER:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$C"/*.whl
  PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 step 200 python3 benches/gpu/bench_diffusers.py 2>&1 | tee "$OUT/diffusers.jsonl"
fi
step 120 "$BIN" vae $VAE_ARGS 2>&1 | tee "$OUT/vae.jsonl"
step 120 "$BIN" vae --whole $VAE_ARGS 2>&1 | tee -a "$OUT/vae.jsonl"
python3 benches/gpu/summarize.py "$OUT" | tee "$OUT/summary.txt"
