#!/usr/bin/env bash
# NVRTC (the CUDA runtime compiler) from PyPI, for compiling our CUDA kernel
# sources to PTX on machines without a GPU or a CUDA toolkit (a
# syntax error must never wait for a GPU). nvidia-cuda-nvrtc 13.0.88, pinned
# by wheel sha256 (13.0 to match the lent GPUs' driver; newer PTX is refused
# there). Extracted into $VIDFLOW_NVRTC_CACHE (default .cache/nvrtc); prints
# the folder holding libnvrtc.so.13.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VIDFLOW_NVRTC_CACHE:-$PWD/.cache/nvrtc}"
WHEEL=nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
SHA=ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
LIB="$CACHE/nvidia/cu13/lib"
if [ -f "$LIB/libnvrtc.so.13" ] && [ -f "$LIB/libnvrtc-builtins.so.13.0" ]; then
  echo "$LIB"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -f "$CACHE/$WHEEL" ] || ! echo "$SHA  $CACHE/$WHEEL" | sha256sum -c --status; then
  python3 -m pip download -q --disable-pip-version-check --no-deps "nvidia-cuda-nvrtc==13.0.88" \
    --only-binary=:all: --platform manylinux_2_12_x86_64 -d "$CACHE" >&2
fi
echo "$SHA  $CACHE/$WHEEL" | sha256sum -c --status || { echo "setup-nvrtc: $WHEEL sha256 mismatch" >&2; exit 1; }
python3 - "$CACHE/$WHEEL" "$CACHE" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("nvidia/cu13/lib/") or "/licenses/" in n:
        z.extract(n, sys.argv[2])
PY
rm -f "$CACHE/$WHEEL"
echo "$LIB"
