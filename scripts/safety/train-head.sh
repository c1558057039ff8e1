#!/usr/bin/env bash
# Retrains the prompt policy's learned head from the corpus:
#   embeds the train and val splits with the shipped MiniLM (every reading,
#   as `vidflow safety check` reads prompts), then fits the head and picks
#   its thresholds on val (scripts/safety/train_head.py). Never reads test.
# Writes configs/safety/head.json; pin its new sha256 in configs/safety.toml
# ([head] sha256) and bump the policy version.
#   bash scripts/safety/train-head.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-configs/safety/head.json}"
PY="$(bash scripts/setup-python.sh)"
bash scripts/setup-models.sh >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --release -q --bin vidflow
BIN="${CARGO_TARGET_DIR:-target}/release/vidflow"
for s in train val; do
  "$BIN" safety embed "tests/data/safety_corpus/$s.jsonl" "$tmp/$s.jsonl"
done
"$PY" scripts/safety/train_head.py "$tmp" "$OUT"
sha256sum "$OUT"
