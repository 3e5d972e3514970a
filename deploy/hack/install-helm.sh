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

VSXDS_TOOL=install-helm
# shellcheck source=../../tools/go-build-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/go-build-env.sh"

if [[ -n "${VSXDS_HELM:-}" ]]; then
  "$VSXDS_HELM" version --short >&2 || die "VSXDS_HELM=$VSXDS_HELM does not run"
  echo "$VSXDS_HELM"
  exit 0
fi

installed_ok() { [[ -x "$BIN" && -f "$HELM_DIR/bin/.version" ]] && grep -qx "helm=$HELM_VERSION" "$HELM_DIR/bin/.version"; }

vsxds_install_once "$HELM_DIR" "$BIN" installed_ok
command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (Helm $HELM_VERSION needs a recent Go)"
vsxds_go_env "$CACHE_ROOT"

MODDIR=$(mktemp -d "${TMPDIR:-/tmp}/vsxds-helm-mod.XXXXXX")
info=$(cd "$MODDIR" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION") \
  || { printf '%s\n' "${info:-}" >&2; die "go mod download helm.sh/helm/v3@$HELM_VERSION failed (a 404 from the checksum database means the proxy does not know that version)"; }
rm -rf "$MODDIR"
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

vsxds_go_install_tool helm "$HELM_DIR" "helm=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$ldflags" version --short
