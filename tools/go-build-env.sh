# Sourced by the scripts that build test tools from Go modules (test/env/install-kube.sh,
# deploy/hack/install-helm.sh): one module and build cache outside git, reproducible settings.
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
