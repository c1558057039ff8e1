#!/usr/bin/env bash
# A private RabbitMQ broker for tests and local use, bound to 127.0.0.1 with
# its own data dir, so it never touches a system broker.
#
#   bash scripts/broker.sh start    # install rabbitmq-server if missing, start, wait until ready
#   bash scripts/broker.sh stop
#   bash scripts/broker.sh status
#   bash scripts/broker.sh ctl ARGS...   # rabbitmqctl against this broker (e.g. list_queues)
#   bash scripts/broker.sh ca-path       # the CA that signs the amqps listener's certificate
#
# Besides amqp:// on PORT the broker listens for amqps:// (TLS) on PORT+1,
# with a certificate from a throwaway CA made at start (scripts/make-test-ca.sh,
# kept in DIR/tls while valid).
#
# `start` also makes the service's own broker user, `vidflow` (password
# $VIDFLOW_BROKER_PASSWORD, default `vidflow`: a development broker on
# loopback), with every permission on the vhost: vidflow serve, the API and
# operators' `vidflow submit` connect as it (`[amqp] service_users`).
# Tenants get their own restricted users from `vidflow tenant add NAME
# --rabbitmqctl "bash scripts/broker.sh ctl"` (docs/SECURITY.md).
#
# Env: VIDFLOW_AMQP_PORT (default 5679), VIDFLOW_BROKER_DIR (default
# ${TMPDIR:-/tmp}/vidflow-rabbitmq-$PORT). The Erlang distribution port is
# pinned to PORT+20000 and the CLI tools' ports to PORT+20001..+20010, all on
# loopback. The scripts in /usr/lib/rabbitmq/bin are run directly (the
# /usr/sbin wrappers switch users and use the system node's settings).
set -euo pipefail
cmd="${1:-status}"
PORT="${VIDFLOW_AMQP_PORT:-5679}"
DIR="${VIDFLOW_BROKER_DIR:-${TMPDIR:-/tmp}/vidflow-rabbitmq-$PORT}"
BIN=/usr/lib/rabbitmq/bin

install_if_missing() {
  [ -x "$BIN/rabbitmq-server" ] && return 0
  bash "$(dirname "$0")/install-service-package.sh" broker rabbitmq-server
}

setup_env() {
  mkdir -p "$DIR/mnesia" "$DIR/log"
  export HOME="$DIR"   # the Erlang cookie lives here
  export RABBITMQ_NODENAME="vidflow$PORT@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$PORT"
  export RABBITMQ_DIST_PORT=$((PORT + 20000))
  export RABBITMQ_CTL_DIST_PORT_MIN=$((PORT + 20001))
  export RABBITMQ_CTL_DIST_PORT_MAX=$((PORT + 20010))
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Erlang distribution on loopback too (it binds every interface by default).
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
  export RABBITMQ_LOG_BASE="$DIR/log"
  export RABBITMQ_PID_FILE="$DIR/rabbitmq.pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
  [ -f "$DIR/enabled_plugins" ] || echo "[]." > "$DIR/enabled_plugins"
  # Long generations hold a delivery unacked for minutes: raise the consumer
  # acknowledgement timeout (30 min default; 3.10 has no per-queue override).
  cat > "$DIR/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$PORT
listeners.ssl.1 = 127.0.0.1:$((PORT + 1))
ssl_options.cacertfile = $DIR/tls/ca.pem
ssl_options.certfile = $DIR/tls/server.pem
ssl_options.keyfile = $DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
consumer_timeout = 7200000
CONF
}

ready() { "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" status >/dev/null 2>&1; }

# The amqps listener's certificates: made once, remade when under a day of
# validity is left.
tls_certs() {
  if [ -f "$DIR/tls/server.pem" ] && openssl x509 -checkend 86400 -noout -in "$DIR/tls/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  bash "$(dirname "$0")/make-test-ca.sh" "$DIR/tls"
}

# The service user, made or reset (idempotent).
service_user() {
  local ctl=("$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME")
  local pw="${VIDFLOW_BROKER_PASSWORD:-vidflow}"
  if ! "${ctl[@]}" list_users 2>/dev/null | awk '{print $1}' | grep -qx vidflow; then
    printf '%s\n' "$pw" | "${ctl[@]}" add_user vidflow >/dev/null
  else
    printf '%s\n' "$pw" | "${ctl[@]}" change_password vidflow >/dev/null
  fi
  "${ctl[@]}" set_permissions -p / vidflow '.*' '.*' '.*' >/dev/null
}

case "$cmd" in
  start)
    install_if_missing
    setup_env
    tls_certs
    if ready; then service_user; echo "broker: already running on 127.0.0.1:$PORT"; exit 0; fi
    "$BIN/rabbitmq-server" >"$DIR/log/console.log" 2>&1 &
    for _ in $(seq 1 60); do
      if "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" await_startup --timeout 2 >/dev/null 2>&1 \
         && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        service_user
        echo "broker: ready on amqp://vidflow:***@127.0.0.1:$PORT (data $DIR)"
        exit 0
      fi
      sleep 1
    done
    echo "broker: did not start within 60 s; see $DIR/log" >&2
    tail -20 "$DIR/log/console.log" >&2 || true
    exit 1
    ;;
  stop)
    setup_env
    if ready; then "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true; fi
    echo "broker: stopped"
    ;;
  status)
    setup_env
    if ready; then echo "broker: running on 127.0.0.1:$PORT"; else echo "broker: not running"; exit 1; fi
    ;;
  ca-path)
    setup_env
    echo "$DIR/tls/ca.pem"
    ;;
  ctl)
    setup_env
    shift
    exec "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@"
    ;;
  *) echo "usage: $0 start|stop|status|ca-path|ctl ARGS..." >&2; exit 2 ;;
esac
