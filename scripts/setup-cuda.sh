#!/usr/bin/env bash
# A CUDA 13.0 build toolchain from PyPI wheels, for `--features cuda` on a
# machine with no system CUDA toolkit and no GPU. Prints the
# CUDA_HOME to build with; `scripts/build-cuda.sh` uses it.
#
# Pins: nvcc, nvvm and crt at 13.0.88 (an unpinned pip pulls 13.5, whose PTX
# the lent GPUs' driver 580 / CUDA 13.0 refuses); runtime, cccl, cublas,
# curand and nvrtc from the 13.0 line. Every wheel is checked by sha256.
#
# No wheel ships the driver library (libcuda), which only the GPU machine has:
# we link against a stub with soname libcuda.so.1 holding every driver
# function cudarc declares, so the binary binds the real one at load time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${VIDFLOW_CUDA_CACHE:-$PWD/.cache/cuda}"
HOME_DIR="$ROOT/nvidia/cu13"
STAMP="$ROOT/.complete-13.0.88-1"
if [ -f "$STAMP" ]; then
  echo "$HOME_DIR"
  exit 0
fi
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-nvvm==13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-crt==13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-cuda-runtime==13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl==13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
  "nvidia-cublas==13.0.2.14 0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
  "nvidia-curand==10.4.0.35 1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
  "nvidia-cuda-nvrtc==13.0.88 ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575"
)
DL="$ROOT/wheels"
mkdir -p "$DL"
for entry in "${WHEELS[@]}"; do
  spec="${entry% *}"
  sha="${entry#* }"
  name="${spec%%==*}"
  ver="${spec#*==}"
  file=$(ls "$DL"/"${name//-/_}"-"$ver"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$file" ] || ! echo "$sha  $file" | sha256sum -c --status; then
    rm -f "$DL"/"${name//-/_}"-"$ver"-*.whl
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
      --python-version 3.11 -d "$DL" "$spec" >&2
    file=$(ls "$DL"/"${name//-/_}"-"$ver"-*.whl | head -1)
  fi
  echo "$sha  $file" | sha256sum -c --status || { echo "setup-cuda: $file sha256 mismatch (want $sha)" >&2; exit 1; }
  python3 - "$file" "$ROOT" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for info in z.infolist():
    if info.filename.startswith("nvidia/"):
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
done
# The wheels ship binaries without the execute bit on some pip versions.
chmod +x "$HOME_DIR"/bin/* "$HOME_DIR"/nvvm/bin/* 2>/dev/null || true
# Unversioned names for the linker (the wheels carry only libX.so.N).
(cd "$HOME_DIR/lib" && for f in *.so.*; do base="${f%%.so.*}.so"; [ -e "$base" ] || ln -s "$f" "$base"; done)
# nvcc expects lib64 beside lib on Linux.
[ -e "$HOME_DIR/lib64" ] || ln -s lib "$HOME_DIR/lib64"
# The libcuda link stub: every cu* function cudarc's driver bindings declare.
mkdir -p "$HOME_DIR/lib/stubs"
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs 2>/dev/null | head -1 || true)
if [ -z "$SYS" ]; then
  cargo fetch --locked >&2
  SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)
fi
grep -oE '^ +fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^ +fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$ROOT/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib/stubs/libcuda.so" "$ROOT/libcuda_stub.c"
"$HOME_DIR/bin/nvcc" --version >&2
touch "$STAMP"
# The extracted tree is what builds use; the wheels (~700 MB) can go.
rm -rf "$DL"
echo "$HOME_DIR"
