#!/usr/bin/env bash
# Builds the CUDA binaries without a system CUDA toolkit: the
# toolchain comes from PyPI wheels (scripts/setup-cuda.sh). The result needs
# the driver library (libcuda.so.1) at load time, so it is a separate build
# from the default CPU one, in its own target dir (target/cuda by default).
#
#   bash scripts/build-cuda.sh            # vidflow-gpu-bench, release, sm_90
#   bash scripts/build-cuda.sh --bin vidflow   # any cargo build arguments
#
# The first build compiles candle's CUDA kernels: about 7 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME="$(bash scripts/setup-cuda.sh)"
export CUDA_HOME CUDA_PATH="$CUDA_HOME"
export PATH="$CUDA_HOME/bin:$PATH"
# H100/H200 (Hopper). candle-kernels reads this instead of asking a GPU.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="${VIDFLOW_CUDA_TARGET_DIR:-$PWD/target/cuda}"
if [ $# -eq 0 ]; then
  set -- -p vidflow-gpu-bench
fi
cargo build --release --locked --features cuda "$@"
