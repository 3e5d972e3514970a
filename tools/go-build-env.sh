# Sourced by the scripts that build test tools from Go modules (test/env/install-kube.sh,
# test/env/install-promtool.sh, deploy/hack/install-helm.sh): one module and build cache outside
# git, reproducible settings, and the steps they share.
# Usage: vsxds_go_env "$CACHE_ROOT"
vsxds_go_env() {
  export GOPATH="$1/go"
  export GOMODCACHE="$1/go/pkg/mod"
  export GOCACHE="$1/go-build"
  export GOFLAGS="-mod=mod -buildvcs=false"
  export GOTOOLCHAIN=local
  export CGO_ENABLED=0
  export GOMAXPROCS="${GOMAXPROCS:-2}"
  export GOWORK=off
  # The builds run from temp dirs; never let a caller's GOOS/GOARCH cross-compile by accident.
  unset GOOS GOARCH || true
  PAR="${VSXDS_GO_BUILD_P:-$GOMAXPROCS}"
}

# The shape every install script shares.

# Progress and errors on stderr (stdout is for the binary's path), prefixed with $VSXDS_TOOL.
log() { printf '[%s] %s\n' "${VSXDS_TOOL:-install}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${VSXDS_TOOL:-install}" "$*" >&2; exit 1; }
#
# vsxds_install_once DIR PRINT CHECK: when the function CHECK passes, prints PRINT and ends the
# script (exit 0); otherwise takes DIR's install lock, so that parallel test workers (or a
# developer and CI) never build at once, checks again, and returns holding the lock.
vsxds_install_once() {
  local dir=$1 print=$2 check=$3
  if "$check"; then echo "$print"; exit 0; fi
  mkdir -p "$dir"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.install.lock"
    log "waiting for install lock $dir/.install.lock"
    flock 9
    if "$check"; then echo "$print"; exit 0; fi
  fi
}

# vsxds_go_install_tool NAME DIR STAMP PACKAGE@VERSION LDFLAGS [ARGS...]: builds NAME with
# `go install` (after vsxds_go_env) into DIR/bin, runs it with ARGS (e.g. --version) to check
# it works, writes STAMP into DIR/bin/.version last (a half-written binary never passes for a
# good one), swaps the bin dir in whole, and prints the binary's path.
vsxds_go_install_tool() {
  local name=$1 dir=$2 stamp=$3 pkg=$4 ldflags=$5
  shift 5
  local start work out
  start=$(date +%s)
  work=$(mktemp -d "${TMPDIR:-/tmp}/vsxds-$name-build.XXXXXX")
  out=$(mktemp -d "$dir/bin.partial.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the locals are gone when the trap runs
  trap "rm -rf '$work' '$out'" EXIT
  log "go: $(go version); GOPROXY=$(go env GOPROXY) GOSUMDB=$(go env GOSUMDB)"
  log "building $pkg -> $dir/bin/$name (cold: minutes on 2 cores; warm build cache: seconds)"
  (cd "$work" && GOBIN="$out" go install -p "$PAR" -trimpath -ldflags="$ldflags" "$pkg") \
    || die "go install $pkg failed (a 404 from the checksum database means the proxy does not know that version; if the linker was killed, retry with VSXDS_GO_BUILD_P=1)"
  "$out/$name" "$@" >&2 || die "the freshly built $name does not run"
  echo "$stamp" >"$out/.version"
  chmod 0755 "$out" "$out/$name"
  rm -rf "$dir/bin.old"
  if [[ -e "$dir/bin" ]]; then mv "$dir/bin" "$dir/bin.old"; fi
  mv "$out" "$dir/bin"
  rm -rf "$dir/bin.old"
  log "built in $(( $(date +%s) - start ))s"
  echo "$dir/bin/$name"
}
