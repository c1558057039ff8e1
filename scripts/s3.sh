#!/usr/bin/env bash
# A private S3-compatible server for tests and local use: s3s-fs (the S3
# protocol layer RustFS builds on, over a directory) on 127.0.0.1 with its
# own data dir and a bucket `vidflow`.
#
#   bash scripts/s3.sh start    # build s3s-fs once if missing (cached), start, wait until it answers
#   bash scripts/s3.sh stop
#   bash scripts/s3.sh status
#   bash scripts/s3.sh env      # VIDFLOW_S3_* lines for the environment ([store] overrides)
#
# Env: VIDFLOW_S3_PORT (default 8014), VIDFLOW_S3_DIR (default
# ${TMPDIR:-/tmp}/vidflow-s3-$PORT), VIDFLOW_TOOLS_CACHE (where the built
# binary is kept, default ~/.cache/vidflow/tools: like the target dir, a
# cache, so CI builds it once). 0.14.1 is the last s3s-fs that builds with
# the project's Rust. The keys are fixed test values: loopback only, never
# production. Its conditional PUT is not atomic, so nothing here relies on
# one (the database decides who commits).
set -euo pipefail
cmd="${1:-status}"
PORT="${VIDFLOW_S3_PORT:-8014}"
DIR="${VIDFLOW_S3_DIR:-${TMPDIR:-/tmp}/vidflow-s3-$PORT}"
TOOLS="${VIDFLOW_TOOLS_CACHE:-$HOME/.cache/vidflow/tools}"
BIN="$TOOLS/bin/s3s-fs"
ACCESS=vidflow-test
SECRET=vidflow-test-secret
BUCKET=vidflow

install_if_missing() {
  [ -x "$BIN" ] && return 0
  echo "s3: building s3s-fs 0.14.1 into $TOOLS (once; a few minutes)" >&2
  local log; log="$(mktemp)"
  if ! CARGO_TARGET_DIR="$TOOLS/target" cargo install s3s-fs --version 0.14.1 \
      --features binary --locked --root "$TOOLS" >"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "s3: could not build s3s-fs" >&2
    exit 1
  fi
  rm -rf "$TOOLS/target"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

case "$cmd" in
  start)
    install_if_missing
    mkdir -p "$DIR/data/$BUCKET"
    if listening; then echo "s3: already running on 127.0.0.1:$PORT"; exit 0; fi
    nohup "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$ACCESS" --secret-key "$SECRET" \
      "$DIR/data" >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/pid"
    for _ in $(seq 1 100); do
      if listening; then
        echo "s3: ready on http://127.0.0.1:$PORT (bucket $BUCKET, data $DIR)"
        exit 0
      fi
      sleep 0.1
    done
    tail -20 "$DIR/server.log" >&2 || true
    echo "s3: did not start; see $DIR/server.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$DIR/pid" ]; then
      kill "$(cat "$DIR/pid")" 2>/dev/null || true
      rm -f "$DIR/pid"
    fi
    echo "s3: stopped"
    ;;
  status)
    if listening; then echo "s3: running on 127.0.0.1:$PORT"; else echo "s3: not running"; exit 1; fi
    ;;
  env)
    # The names `[store]` reads (endpoint, key id, secret); the bucket goes
    # in the config. The tests read the VIDFLOW_TEST_S3_* copies.
    echo "VIDFLOW_S3_ENDPOINT=http://127.0.0.1:$PORT"
    echo "VIDFLOW_S3_BUCKET=$BUCKET"
    echo "VIDFLOW_S3_ACCESS_KEY_ID=$ACCESS"
    echo "VIDFLOW_S3_SECRET_ACCESS_KEY=$SECRET"
    ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
