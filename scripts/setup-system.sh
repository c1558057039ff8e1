#!/usr/bin/env bash
# Installs the Debian/Ubuntu system packages the tests need, if missing:
#   ffmpeg  - provides ffprobe, which the MP4 output tests use to check videos
#   nasm    - assembler for the openh264 encoder's SIMD code (without it the
#             `openh264` crate silently builds a ~2x slower C-only encoder)
#   openssl - makes the test CA and certificates for the TLS tests (the
#             private broker's amqps listener, the gRPC API over TLS)
#   chromium, chromium-driver - the headless browser (and its WebDriver)
#             the web console's test drives; nothing is downloaded at test time
# Idempotent: does nothing (and touches no network) when all are present;
# runs `apt-get update` only when something must be installed.
# Needs root (or passwordless sudo) when something is missing.
set -euo pipefail

# package -> command it provides
declare -A PROVIDES=([ffmpeg]=ffprobe [nasm]=nasm [openssl]=openssl [chromium]=chromium [chromium-driver]=chromedriver)

missing=()
for pkg in ffmpeg nasm openssl chromium chromium-driver; do
  if command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1; then
    echo "setup-system: ${PROVIDES[$pkg]} present (package $pkg): nothing to do"
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "setup-system: missing package(s): ${missing[*]}; installing"

fail() {
  echo "setup-system: ERROR: $1" >&2
  echo "setup-system: install these packages by hand: ${missing[*]}" >&2
  exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
  fail "apt-get not found (not a Debian/Ubuntu system)"
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    fail "not root and no passwordless sudo"
  fi
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_apt() {
  # apt's own output goes to a log, shown only when the step fails
  if ! "${SUDO[@]}" apt-get "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "apt-get $* failed"
  fi
}
echo "setup-system: apt-get update"
run_apt update -q
echo "setup-system: apt-get install ${missing[*]} (a minute or two)"
run_apt install -y -q --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
  command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1 \
    || fail "${PROVIDES[$pkg]} still not found after installing $pkg"
  echo "setup-system: installed $pkg (${PROVIDES[$pkg]} at $(command -v "${PROVIDES[$pkg]}"))"
done
