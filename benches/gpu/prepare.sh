#!/usr/bin/env bash
# Here, before the device call: builds the CUDA bench binary and gathers what
# benches/gpu/run.sh needs into .devcarry/ (git-ignored; carried by the
# device tool): the stripped binary, the golden cases, the diffusers wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/build-cuda.sh -p vidflow-gpu-bench
mkdir -p .devcarry
# Stripped and xz-compressed: candle's embedded PTX makes the binary ~67 MB,
# over what one device call carries; it compresses to ~9 MB.
rm -f .devcarry/vidflow-gpu-bench .devcarry/vidflow-gpu-bench.xz
cp "${VIDFLOW_CUDA_TARGET_DIR:-target/cuda}/release/vidflow-gpu-bench" .devcarry/
strip .devcarry/vidflow-gpu-bench
xz -T2 -6 .devcarry/vidflow-gpu-bench
rm -rf .devcarry/golden && cp -r ../shared/golden/ltx .devcarry/golden
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 -d .devcarry \
  diffusers==0.42.1 importlib_metadata==10.2.0
du -sh .devcarry
