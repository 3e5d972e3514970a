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

VSXDS_TOOL=install-promtool
# shellcheck source=../../tools/go-build-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/go-build-env.sh"

if [[ -n "${VSXDS_PROMTOOL:-}" ]]; then
  "$VSXDS_PROMTOOL" --version >&2 || die "VSXDS_PROMTOOL=$VSXDS_PROMTOOL does not run"
  echo "$VSXDS_PROMTOOL"
  exit 0
fi

installed_ok() { [[ -x "$BIN" && -f "$TOOL_DIR/bin/.version" ]] && grep -qx "prometheus=$PROM_VERSION" "$TOOL_DIR/bin/.version"; }

vsxds_install_once "$TOOL_DIR" "$BIN" installed_ok
command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH"
vsxds_go_env "$CACHE_ROOT"

# v0.316.0 -> 3.16.0, what `promtool --version` of that release says.
minor="${PROM_VERSION#v0.3}"; minor="${minor%%.*}"; patch="${PROM_VERSION##*.}"
ldflags="-s -w -X github.com/prometheus/common/version.Version=3.$((10#$minor)).$patch"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"

vsxds_go_install_tool promtool "$TOOL_DIR" "prometheus=$PROM_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROM_VERSION" "$ldflags" --version
