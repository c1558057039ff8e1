#!/usr/bin/env bash
# A private PostgreSQL cluster for tests and local use, on 127.0.0.1 with its
# own data dir, so it never touches a system cluster.
#
#   bash scripts/postgres.sh start    # install postgresql-15 if missing, initdb once, start, wait
#   bash scripts/postgres.sh stop
#   bash scripts/postgres.sh status
#   bash scripts/postgres.sh url      # the connection URL (database `vidflow`)
#
# Env: VIDFLOW_PG_PORT (default 55432), VIDFLOW_PG_DIR (default
# ${TMPDIR:-/tmp}/vidflow-postgres-$PORT). PostgreSQL refuses to run as root,
# so as root the server runs as the `postgres` user (the package makes it).
# Trust authentication on loopback only and fsync off (VIDFLOW_PG_FSYNC=on
# for benchmarks that must pay for durability): a test cluster, never
# production.
set -euo pipefail
cmd="${1:-status}"
PORT="${VIDFLOW_PG_PORT:-55432}"
DIR="${VIDFLOW_PG_DIR:-${TMPDIR:-/tmp}/vidflow-postgres-$PORT}"
BIN=/usr/lib/postgresql/15/bin
URL="postgresql://vidflow@127.0.0.1:$PORT/vidflow"

install_if_missing() {
  [ -x "$BIN/pg_ctl" ] && return 0
  bash "$(dirname "$0")/install-service-package.sh" postgres postgresql-15
}

# Runs a server binary as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ready() { as_owner "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" >/dev/null 2>&1; }

case "$cmd" in
  start)
    install_if_missing
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    if ready; then echo "postgres: already running ($URL)"; exit 0; fi
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      as_owner "$BIN/initdb" -D "$DIR/data" -U vidflow --auth=trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=${VIDFLOW_PG_FSYNC:-off} -c max_connections=200" start >/dev/null; then
      tail -20 "$DIR/server.log" >&2 || true
      echo "postgres: did not start; see $DIR/server.log" >&2
      exit 1
    fi
    if ! psql -q "postgresql://vidflow@127.0.0.1:$PORT/postgres" -tAc "select 1 from pg_database where datname = 'vidflow'" | grep -q 1; then
      psql -q "postgresql://vidflow@127.0.0.1:$PORT/postgres" -c "create database vidflow" >/dev/null
    fi
    echo "postgres: ready ($URL, data $DIR)"
    ;;
  stop)
    if [ -f "$DIR/data/PG_VERSION" ] && ready; then
      as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null || true
    fi
    echo "postgres: stopped"
    ;;
  status)
    if ready; then echo "postgres: running ($URL)"; else echo "postgres: not running"; exit 1; fi
    ;;
  url)
    echo "$URL"
    ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
