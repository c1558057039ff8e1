#!/usr/bin/env bash
# Runs every CUDA kernel under gpu/kernels/ on the CPU (gpu/kernels/host/:
# one fiber per GPU thread, the few PTX instructions written from the PTX
# ISA) against float64 references, under three thread schedules. No GPU and
# no CUDA toolkit: just the C++ compiler the Rust build already needs.
# Exit 1 on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${CARGO_TARGET_DIR:-target}/kernel-host"
mkdir -p "$OUT"
c++ -std=c++17 -O2 -fno-strict-aliasing -Wall -Wextra -Werror -Wno-unknown-pragmas \
  -o "$OUT/kernel_check" gpu/kernels/host/kernel_check.cpp
"$OUT/kernel_check"
