#!/usr/bin/env bash
# install-promtool.sh: provide Prometheus's `promtool` for test/monitoring.test.ts (`promtool
# check rules`, `promtool test rules` over deploy/monitoring/).
#
# Usage:   test/env/install-promtool.sh    -> prints the path of promtool as the LAST line of
#          stdout (progress goes to stderr)
#
# Where:   ${VSXDS_CACHE:-$HOME/.cache/vsxds}/promtool/<version>/bin/promtool   (outside git);
#          Go module and build caches shared with install-kube.sh and install-helm.sh.
#
# How:     built with `go install github.com/prometheus/prometheus/cmd/promtool@<version>` from
#          the Go module proxy (Prometheus 3.N.x is published as the Go module version v0.3NN.x).
#          Cold: a few minutes on 2 cores; binary present: milliseconds.
#
# Knobs:   VSXDS_CACHE, VSXDS_PROMTOOL_VERSION (default below), VSXDS_PROMTOOL (use this binary
#          instead; only checked to run), GOMAXPROCS, VSXDS_GO_BUILD_P, GOPROXY/GOSUMDB.
set -euo pipefail

PROM_VERSION="${VSXDS_PROMTOOL_VERSION:-v0.316.0}"
CACHE_ROOT="${VSXDS_CACHE:-$HOME/.cache/vsxds}"
TOOL_DIR="$CACHE_ROOT/promtool/$PROM_VERSION"
BIN="$TOOL_DIR/bin/promtool"

log() { printf '[install-promtool] %s\n' "$*" >&2; }
die() { printf '[install-promtool] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${VSXDS_PROMTOOL:-}" ]]; then
  "$VSXDS_PROMTOOL" --version >&2 || die "VSXDS_PROMTOOL=$VSXDS_PROMTOOL does not run"
  echo "$VSXDS_PROMTOOL"
  exit 0
fi

# The stamp is written last, so a half-written binary never passes for a good one.
installed_ok() { [[ -x "$BIN" && -f "$TOOL_DIR/bin/.version" ]] && grep -qx "prometheus=$PROM_VERSION" "$TOOL_DIR/bin/.version"; }

if installed_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$TOOL_DIR"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOL_DIR/.install.lock"
  log "waiting for install lock $TOOL_DIR/.install.lock"
  flock 9
  if installed_ok; then
    echo "$BIN"
    exit 0
  fi
fi

command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH"
START_TS=$(date +%s)

# shellcheck source=../../tools/go-build-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/go-build-env.sh"
vsxds_go_env "$CACHE_ROOT"

log "go: $(go version); GOPROXY=$(go env GOPROXY) GOSUMDB=$(go env GOSUMDB)"
log "promtool from github.com/prometheus/prometheus@$PROM_VERSION -> $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsxds-promtool-build.XXXXXX")
OUT=$(mktemp -d "$TOOL_DIR/bin.partial.XXXXXX")
cleanup() { rm -rf "$WORK" "$OUT"; }
trap cleanup EXIT

# v0.316.0 -> 3.16.0, what `promtool --version` of that release says.
minor="${PROM_VERSION#v0.3}"; minor="${minor%%.*}"; patch="${PROM_VERSION##*.}"
ldflags="-s -w -X github.com/prometheus/common/version.Version=3.$((10#$minor)).$patch"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"

log "building (cold: a few minutes on 2 cores; warm build cache: seconds)"
(cd "$WORK" && GOBIN="$OUT" go install -p "$PAR" -trimpath -ldflags="$ldflags" "github.com/prometheus/prometheus/cmd/promtool@$PROM_VERSION") \
  || die "go install github.com/prometheus/prometheus/cmd/promtool@$PROM_VERSION failed (a 404 from the checksum database means the proxy does not know that version; if the linker was killed, retry with VSXDS_GO_BUILD_P=1)"
"$OUT/promtool" --version >&2 || die "the freshly built promtool does not run"

echo "prometheus=$PROM_VERSION" >"$OUT/.version"
chmod 0755 "$OUT" "$OUT/promtool"
rm -rf "$TOOL_DIR/bin.old"
[[ -e "$TOOL_DIR/bin" ]] && mv "$TOOL_DIR/bin" "$TOOL_DIR/bin.old"
mv "$OUT" "$TOOL_DIR/bin"
rm -rf "$TOOL_DIR/bin.old"

log "built in $(( $(date +%s) - START_TS ))s"
echo "$BIN"
