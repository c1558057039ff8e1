#!/usr/bin/env bash
# Retrains the prompt policy's learned head from the corpus:
#   embeds the train and val splits with the shipped MiniLM (every reading,
#   as `vidflow safety check` reads prompts) of the template corpus and of the
#   hand-written one's train file (80/20), adds tests/data/safety_extra
#   and safety_benign_extra to train, then fits the head and picks its
#   thresholds on val (scripts/safety/train_head.py). Never reads the test
#   splits or the public set.
# Writes configs/safety/head.json; pin its new sha256 in configs/safety.toml
# ([head] sha256) and bump the policy version.
#   [EMB_DIR=DIR] bash scripts/safety/train-head.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-configs/safety/head.json}"
PY="$(bash scripts/setup-python.sh)"
bash scripts/setup-models.sh >/dev/null
# EMB_DIR keeps the embedded splits there, to rerun train_head.py alone
# with other settings (`python scripts/safety/train_head.py "$EMB_DIR" OUT`).
if [ -n "${EMB_DIR:-}" ]; then
  tmp="$EMB_DIR"
  rm -rf "$tmp" && mkdir -p "$tmp"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
fi
cargo build --release -q --bin vidflow
BIN="${CARGO_TARGET_DIR:-target}/release/vidflow"
for s in train val; do
  "$BIN" safety embed "tests/data/safety_corpus/$s.jsonl" "$tmp/$s.jsonl"
done
# The hand-written corpus's train file, 80/20 into train and val by a hash of
# each prompt (its test file is frozen and never read here).
"$PY" - "$tmp" <<'SPLIT'
import hashlib, sys
out = sys.argv[1]
with open("tests/data/safety_hand/train.jsonl") as f, \
        open(f"{out}/hand-train.jsonl", "w") as tr, open(f"{out}/hand-val.jsonl", "w") as va:
    for line in f:
        h = int(hashlib.sha256(line.encode()).hexdigest()[:8], 16)
        (va if h % 5 == 0 else tr).write(line)
SPLIT
for s in train val; do
  "$BIN" safety embed "$tmp/hand-$s.jsonl" "$tmp/hand-$s.emb.jsonl"
  cat "$tmp/hand-$s.emb.jsonl" >> "$tmp/$s.jsonl"
done
# Our two hand-written sets train the head too (never the public set).
for s in safety_extra safety_benign_extra; do
  "$BIN" safety embed "tests/data/$s.jsonl" "$tmp/$s.jsonl"
  cat "$tmp/$s.jsonl" >> "$tmp/train.jsonl"
done
"$PY" scripts/safety/train_head.py "$tmp" "$OUT"
sha256sum "$OUT"
