#!/usr/bin/env bash
# Idempotent setup of the PyTorch/diffusers peer benchmark environment.
# Creates /work/main/.venv-bench (override with VENV=...) and installs
# torch, diffusers, safetensors, numpy from PyPI.
#
# Only PyPI is reachable from the project machines, so there is no
# CPU-only torch index: the PyPI wheel for linux x86_64 pulls the CUDA
# runtime wheels (nvidia-*) as dependencies (a few GB). They are unused
# on CPU but torch will not import without them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-bench}"
PY="${PYTHON:-python3}"

TORCH_SPEC="${TORCH_SPEC:-torch==2.15.0}"        # version used by the golden cases
DIFFUSERS_SPEC="${DIFFUSERS_SPEC:-diffusers==0.42.1}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv at $VENV"
  "$PY" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip

# pip skips anything already satisfied, so re-running is cheap.
if ! "$VENV/bin/python" - "$TORCH_SPEC" "$DIFFUSERS_SPEC" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
want = {s.split("==")[0]: s.split("==")[1] for s in sys.argv[1:] if "==" in s}
for name in ("torch", "diffusers", "safetensors", "numpy"):
    v = version(name)
    if name in want and v.split("+")[0] != want[name]:
        raise SystemExit(1)
import torch, diffusers  # noqa: F401  (must actually import)
PYEOF
then
  echo "[setup] installing $TORCH_SPEC $DIFFUSERS_SPEC safetensors numpy"
  "$VENV/bin/python" -m pip install --disable-pip-version-check \
      --progress-bar off "$TORCH_SPEC" "$DIFFUSERS_SPEC" safetensors numpy
else
  echo "[setup] already installed"
fi

"$VENV/bin/python" - <<'PYEOF'
import sys, torch, diffusers, safetensors, numpy
print("python     ", sys.version.split()[0])
print("torch      ", torch.__version__, "(cuda available:", torch.cuda.is_available(), ")")
print("diffusers  ", diffusers.__version__)
print("safetensors", safetensors.__version__)
print("numpy      ", numpy.__version__)
print("threads    ", torch.get_num_threads())
PYEOF
