#!/usr/bin/env bash
# install-kube.sh: provide kube-apiserver, kubectl and etcd for vsxds integration tests
# (envtest style: a real API server backed by a real etcd, no kubelet, no nodes).
#
# Usage:   test/env/install-kube.sh            -> prints the bin dir as the LAST line of stdout
#          (all progress output goes to stderr)
#
# Where:   ${VSXDS_CACHE:-$HOME/.cache/vsxds}/kube/<k8s-version>/bin   (outside git)
#          Go module cache / build cache:  ${VSXDS_CACHE}/go and ${VSXDS_CACHE}/go-build
#
# How:     Nothing is downloaded from GitHub, dl.k8s.io or container registries; only the Go
#          module proxy (and, for etcd, optionally Debian apt) is used.
#            * kube-apiserver, kubectl: built from the Go module k8s.io/kubernetes@K8S_VERSION in
#              a throw-away module whose `replace` directives (generated from k8s.io/kubernetes's
#              own go.mod) pin every k8s.io/* staging module to the matching v0.N.x release.
#            * etcd: Debian's etcd-server package if apt offers a version >= 3.5 (bookworm only
#              has 3.4.23, which is too old for Kubernetes 1.34); otherwise built from
#              go.etcd.io/etcd/server/v3@ETCD_VERSION through a three-line main calling etcdmain.Main.
#          Module checksums are verified against sum.golang.org (reached through the module
#          proxy's /sumdb endpoint). The default versions were chosen because the proxy's sumdb
#          mirror here knows them; if you pick a version it does not know, the build fails with
#          "verifying ...: 404 Not Found": choose another version or (knowingly) export GOSUMDB=off.
#
# Cost:    measured on this machine (2 cores, 24 GiB, Go 1.26.8, k8s v1.34.10, etcd v3.6.16):
#            cold build, empty cache: 4 min 52 s wall (kube-apiserver + kubectl incl. module
#              downloads ~4 min 5 s, etcd ~35 s); peak RSS 1.7 GiB (the linker), 6.3 min CPU.
#            rebuild after deleting only kube/<ver>/bin (warm build cache): ~10 s.
#            fast path (binaries present): ~5 ms.
#          Cache on disk afterwards: ~3.6 GiB = Go build cache 2.6 GiB + module cache 0.85 GiB +
#          binaries 183 MiB (kube-apiserver 98 MiB, kubectl 59 MiB, etcd 26 MiB). Only the
#          kube/<ver>/bin dir is needed at test time; ${VSXDS_CACHE}/go-build may be deleted
#          to save space (a later version bump then needs a full ~5 min build again).
#
# Knobs:   VSXDS_CACHE          cache root (default $HOME/.cache/vsxds)
#          VSXDS_K8S_VERSION    k8s.io/kubernetes version (default below)
#          VSXDS_ETCD_VERSION   go.etcd.io/etcd/server/v3 version (default below)
#          VSXDS_ETCD_FROM_APT  "0" to never use apt for etcd (default: use it if new enough)
#          GOMAXPROCS           compile parallelism (default 2)
#          VSXDS_GO_BUILD_P     go build -p (default $GOMAXPROCS; use 1 if the linker gets OOM-killed)
#          GOPROXY / GOSUMDB    honoured as usual by the go command
set -euo pipefail

K8S_VERSION="${VSXDS_K8S_VERSION:-v1.34.10}"
ETCD_VERSION="${VSXDS_ETCD_VERSION:-v3.6.16}"
MIN_ETCD_FROM_APT="3.5.0"

CACHE_ROOT="${VSXDS_CACHE:-$HOME/.cache/vsxds}"
KUBE_DIR="$CACHE_ROOT/kube/$K8S_VERSION"
BIN_DIR="$KUBE_DIR/bin"
STAMP="$BIN_DIR/.versions"

VSXDS_TOOL=install-kube
# shellcheck source=../../tools/go-build-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tools/go-build-env.sh"

# The etcd line of the stamp is filled in at the end ("etcd=<version>" or "etcd=apt:<version>").
installed_ok() {
  local b
  for b in kube-apiserver kubectl etcd; do
    [[ -x "$BIN_DIR/$b" ]] || return 1
  done
  [[ -f "$STAMP" ]] && grep -qx "k8s=$K8S_VERSION" "$STAMP" \
    && { grep -qx "etcd=$ETCD_VERSION" "$STAMP" || grep -q '^etcd=apt:' "$STAMP"; }
}

# Fast path, then serialise concurrent installs (e.g. several vitest workers).
vsxds_install_once "$KUBE_DIR" "$BIN_DIR" installed_ok

START_TS=$(date +%s)
command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (need Go >= 1.25 for k8s $K8S_VERSION)"
vsxds_go_env "$CACHE_ROOT"

log "go: $(go version); GOPROXY=$(go env GOPROXY) GOSUMDB=$(go env GOSUMDB)"
log "k8s $K8S_VERSION, etcd $ETCD_VERSION -> $BIN_DIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsxds-kube-build.XXXXXX")
# Binaries are assembled next to the final bin dir so that the final rename is atomic.
OUT=$(mktemp -d "$KUBE_DIR/bin.partial.XXXXXX")
cleanup() { rm -rf "$WORK" "$OUT"; }
trap cleanup EXIT

go_build_hint() {
  die "$1 failed. If the error says 'verifying ...: 404 Not Found' the module proxy's checksum
database does not know that version: pick another VSXDS_K8S_VERSION/VSXDS_ETCD_VERSION or export GOSUMDB=off.
If the linker was killed (out of memory) retry with VSXDS_GO_BUILD_P=1."
}

# ---- kube-apiserver + kubectl -------------------------------------------------------------
build_kube() {
  local mod="$WORK/kube"
  mkdir -p "$mod"
  local t0; t0=$(date +%s)

  log "fetching k8s.io/kubernetes@$K8S_VERSION go.mod"
  local info gomod_file info_file
  info=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") \
    || { printf '%s\n' "$info" >&2; go_build_hint "go mod download k8s.io/kubernetes@$K8S_VERSION"; }
  gomod_file=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
  info_file=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Info":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$gomod_file" ]] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION (got '$gomod_file')"

  # v1.34.10 -> v0.34.10 (the staging modules are published as v0.<minor>.<patch>)
  local staging_version="v0.${K8S_VERSION#v1.}"
  local go_line
  go_line=$(sed -n 's/^go[[:space:]]\{1,\}\([0-9.]*\)[[:space:]]*$/\1/p' "$gomod_file" | head -n1)
  [[ -n "$go_line" ]] || go_line=1.24

  {
    echo "module vsxds.local/kube-build"
    echo
    echo "go $go_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # Both the block form "    k8s.io/x => ./staging/src/k8s.io/x" and the single-line
    # form "replace k8s.io/x => ./staging/src/k8s.io/x" are handled.
    sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[A-Za-z0-9._/-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*$#replace \2 => \2 '"$staging_version"'#p' "$gomod_file"
  } >"$mod/go.mod"
  local n_repl
  n_repl=$(grep -c '^replace ' "$mod/go.mod" || true)
  [[ "$n_repl" -ge 10 ]] || die "expected the k8s.io/kubernetes go.mod to replace the staging modules, found only $n_repl replace directives"
  log "generated $n_repl replace directives (staging modules -> $staging_version)"

  # Version stamping, mirroring hack/lib/version.sh (both client-go and component-base).
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local build_date="1970-01-01T00:00:00Z" commit=""
  if [[ -f "$info_file" ]]; then
    build_date=$(sed -n 's/.*"Time"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$info_file" | head -n1)
    build_date="${build_date:-1970-01-01T00:00:00Z}"
    commit=$(sed -n 's/.*"Hash"[[:space:]]*:[[:space:]]*"\([0-9a-f]\{40\}\)".*/\1/p' "$info_file" | head -n1)
  fi
  local ldflags="-s -w" pkg kv
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for kv in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" \
              "gitTreeState=clean" "buildDate=$build_date" "gitCommit=$commit"; do
      ldflags+=" -X $pkg.$kv"
    done
  done

  log "building kube-apiserver and kubectl (the slow part: ~4-5 min cold on 2 cores)"
  (cd "$mod" && go build -p "$PAR" -trimpath -ldflags="$ldflags" -o "$OUT/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl) \
    || go_build_hint "go build of kube-apiserver/kubectl"
  "$OUT/kube-apiserver" --version >&2 || die "the freshly built kube-apiserver does not run"
  log "kube-apiserver + kubectl built in $(( $(date +%s) - t0 ))s"
}

# ---- etcd ---------------------------------------------------------------------------------
ETCD_ORIGIN=""
etcd_from_apt() {
  [[ "${VSXDS_ETCD_FROM_APT:-1}" != "0" ]] || return 1
  command -v apt-cache >/dev/null 2>&1 || return 1
  local cand
  cand=$(apt-cache policy etcd-server 2>/dev/null | sed -n 's/^[[:space:]]*Candidate:[[:space:]]*//p' | head -n1)
  if [[ -z "$cand" || "$cand" == "(none)" ]]; then
    log "apt: no etcd-server candidate; building etcd from Go modules"
    return 1
  fi
  if ! dpkg --compare-versions "$cand" ge "$MIN_ETCD_FROM_APT"; then
    log "apt: etcd-server $cand is older than $MIN_ETCD_FROM_APT; building etcd $ETCD_VERSION from Go modules"
    return 1
  fi
  if [[ ! -x /usr/bin/etcd ]]; then
    [[ "$(id -u)" == "0" ]] || { log "apt: etcd-server $cand available but not root; building instead"; return 1; }
    log "apt: installing etcd-server $cand"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >&2 || return 1
  fi
  cp /usr/bin/etcd "$OUT/etcd"
  ETCD_ORIGIN="apt:$cand"
}

build_etcd() {
  local mod="$WORK/etcd"
  mkdir -p "$mod"
  local t0; t0=$(date +%s)
  cat >"$mod/go.mod" <<EOF
module vsxds.local/etcd-build

go 1.22

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$mod/main.go" <<'EOF'
// Command etcd is the stock etcd server entry point (go.etcd.io/etcd/server/v3/etcdmain).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  log "building etcd $ETCD_VERSION"
  (cd "$mod" && go mod tidy >&2) || go_build_hint "go mod tidy for etcd $ETCD_VERSION"
  (cd "$mod" && go build -p "$PAR" -trimpath \
      -ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$OUT/etcd" .) \
    || go_build_hint "go build of etcd $ETCD_VERSION"
  ETCD_ORIGIN="$ETCD_VERSION"
  log "etcd built in $(( $(date +%s) - t0 ))s"
}

build_kube
etcd_from_apt || build_etcd
"$OUT/etcd" --version >&2 || die "the etcd binary does not run"

# ---- publish atomically ------------------------------------------------------------------
{
  echo "k8s=$K8S_VERSION"
  echo "etcd=$ETCD_ORIGIN"
  echo "go=$(go env GOVERSION)"
} >"$OUT/.versions"
chmod 0755 "$OUT" "$OUT"/kube-apiserver "$OUT"/kubectl "$OUT"/etcd
rm -rf "$BIN_DIR.old"
[[ -e "$BIN_DIR" ]] && mv "$BIN_DIR" "$BIN_DIR.old"
mv "$OUT" "$BIN_DIR"
rm -rf "$BIN_DIR.old"

log "done in $(( $(date +%s) - START_TS ))s; cache size: $(du -sh "$CACHE_ROOT" 2>/dev/null | cut -f1)"
echo "$BIN_DIR"
