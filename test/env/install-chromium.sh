#!/usr/bin/env bash
# install-chromium.sh: provide a headless Chromium for test/status-page.test.ts (Debian's
# `chromium` package: the test loads the admin status page in it, reads the rendered DOM with
# --dump-dom and keeps a --screenshot).
#
# Usage:   test/env/install-chromium.sh   -> prints the path of the browser as the LAST line of
#          stdout (progress goes to stderr)
#
# How:     apt-get install chromium (as root; a browser build downloaded by a test tool is not
#          reachable from CI, Debian's package is). Already installed: milliseconds. First
#          install: about a minute (apt-get update plus ~100 MB of packages).
#
# Knobs:   VSXDS_CHROMIUM: use this browser binary instead (only checked to run).
set -euo pipefail

log() { printf '[install-chromium] %s\n' "$*" >&2; }
die() { printf '[install-chromium] ERROR: %s\n' "$*" >&2; exit 1; }

BIN="${VSXDS_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
[[ -z "${VSXDS_CHROMIUM:-}" ]] || die "VSXDS_CHROMIUM=$VSXDS_CHROMIUM is not an executable"
[[ "$(id -u)" == "0" ]] || die "Chromium is not installed and this is not root: run 'sudo apt-get install -y chromium' (Debian) or set VSXDS_CHROMIUM"
command -v apt-get >/dev/null 2>&1 || die "Chromium is not installed and there is no apt-get: install a Chromium and set VSXDS_CHROMIUM"

# Two test files or a developer and CI must not run dpkg at once.
exec 9>/tmp/vsxds-install-chromium.lock
flock 9
if [[ ! -x "$BIN" ]]; then
  START_TS=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  log "apt-get install chromium"
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 || die "apt-get install chromium failed"
  log "installed in $(( $(date +%s) - START_TS ))s"
fi
"$BIN" --version >&2 || die "$BIN does not run"
echo "$BIN"
