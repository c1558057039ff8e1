#!/usr/bin/env bash
# Installs a Debian package that ships a system service without letting the
# package start that service (scripts/broker.sh and scripts/postgres.sh run
# private servers of their own on loopback instead):
#
#   bash scripts/install-service-package.sh NAME PACKAGE
#
# NAME prefixes the messages. On failure apt's output is printed and the
# script exits 1. Uses `sudo -n` when not root.
set -euo pipefail
name="$1" pkg="$2"
echo "$name: installing $pkg (Debian package)" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
# policy-rc.d exiting 101 tells invoke-rc.d not to start anything.
printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
$sudo chmod +x /usr/sbin/policy-rc.d
trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
log="$(mktemp)"
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "$name: could not install $pkg" >&2
  exit 1
fi
