#!/usr/bin/env bash
# install-helm.sh: provide a `helm` binary for test/deploy.test.ts (helm template / lint).
#
# Usage:   deploy/hack/install-helm.sh        -> prints the path of the helm binary as the LAST
#          line of stdout (progress goes to stderr)
#
# Where:   ${VSXDS_CACHE:-$HOME/.cache/vsxds}/helm/<version>/bin/helm   (outside git)
#          Go module and build caches are shared with test/env/install-kube.sh:
#          ${VSXDS_CACHE}/go and ${VSXDS_CACHE}/go-build.
#
# How:     GitHub release downloads and get.helm.sh are not reachable from CI, the Go module
#          proxy is; so Helm is built from helm.sh/helm/v3/cmd/helm with `go install
#          module@version`, stamped with the same -X flags as Helm's own Makefile (so `helm
#          version` and the default .Capabilities.KubeVersion are what a release binary reports).
#
# Knobs:   VSXDS_CACHE, VSXDS_HELM_VERSION (default below), VSXDS_HELM (use this binary instead,
#          e.g. a packaged helm; only checked to run), GOMAXPROCS, VSXDS_GO_BUILD_P, GOPROXY/GOSUMDB.
set -euo pipefail

HELM_VERSION="${VSXDS_HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${VSXDS_CACHE:-$HOME/.cache/vsxds}"
HELM_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
BIN="$HELM_DIR/bin/helm"

log() { printf '[install-helm] %s\n' "$*" >&2; }
die() { printf '[install-helm] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${VSXDS_HELM:-}" ]]; then
  "$VSXDS_HELM" version --short >&2 || die "VSXDS_HELM=$VSXDS_HELM does not run"
  echo "$VSXDS_HELM"
  exit 0
fi

# A half-written binary must never pass for a good one: the stamp is written last.
installed_ok() { [[ -x "$BIN" && -f "$HELM_DIR/bin/.version" ]] && grep -qx "helm=$HELM_VERSION" "$HELM_DIR/bin/.version"; }

if installed_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$HELM_DIR"
# Parallel vitest workers (or a developer running the test twice) must not build twice at once.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$HELM_DIR/.install.lock"
  log "waiting for install lock $HELM_DIR/.install.lock"
  flock 9
  if installed_ok; then
    echo "$BIN"
    exit 0
  fi
fi

command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (Helm $HELM_VERSION needs a recent Go)"
START_TS=$(date +%s)

# shellcheck source=../../tools/go-build-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/go-build-env.sh"
vsxds_go_env "$CACHE_ROOT"

log "go: $(go version); GOPROXY=$(go env GOPROXY) GOSUMDB=$(go env GOSUMDB)"
log "helm $HELM_VERSION -> $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsxds-helm-build.XXXXXX")
OUT=$(mktemp -d "$HELM_DIR/bin.partial.XXXXXX")
cleanup() { rm -rf "$WORK" "$OUT"; }
trap cleanup EXIT

info=$(cd "$WORK" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION") \
  || { printf '%s\n' "${info:-}" >&2; die "go mod download helm.sh/helm/v3@$HELM_VERSION failed (a 404 from the checksum database means the proxy does not know that version)"; }
gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
[[ -f "$gomod" ]] || die "could not locate go.mod of helm.sh/helm/v3@$HELM_VERSION"

# Helm's Makefile derives the default Kubernetes version of `helm template` from the client-go
# it is built with (v0.N.x -> 1.N); without this it would claim an old default.
client_go=$(sed -n 's/^[[:space:]]*k8s\.io\/client-go[[:space:]]\{1,\}v0\.\([0-9]\{1,\}\)\..*$/\1/p' "$gomod" | head -n1)
[[ -n "$client_go" ]] || die "k8s.io/client-go not found in Helm's go.mod"

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
done

log "building (cold: a few minutes on 2 cores; warm build cache: seconds)"
(cd "$WORK" && GOBIN="$OUT" go install -p "$PAR" -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") \
  || die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed (if the linker was killed, retry with VSXDS_GO_BUILD_P=1)"
"$OUT/helm" version --short >&2 || die "the freshly built helm does not run"

echo "helm=$HELM_VERSION" >"$OUT/.version"
chmod 0755 "$OUT" "$OUT/helm"
rm -rf "$HELM_DIR/bin.old"
[[ -e "$HELM_DIR/bin" ]] && mv "$HELM_DIR/bin" "$HELM_DIR/bin.old"
mv "$OUT" "$HELM_DIR/bin"
rm -rf "$HELM_DIR/bin.old"

log "built in $(( $(date +%s) - START_TS ))s"
echo "$BIN"
