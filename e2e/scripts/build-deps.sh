#!/usr/bin/env bash
# Build (once) every upstream binary the e2e harness runs, cached by version
# outside the repo. Idempotent: a component whose binaries exist is skipped.
# Usage: build-deps.sh [k8s|etcd|kwok|coredns|musl|all]...   (default: all)
set -euo pipefail

CACHE="${DNSPOLICY_E2E_CACHE:-$HOME/.cache/dnspolicy-e2e}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
# Oldest CoreDNS in 1.8.4..1.10.x that builds with this Go (see e2e/README.md).
COREDNS_OLD_VERSION="${COREDNS_OLD_VERSION:-v1.8.4}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
export CGO_ENABLED=0
LOG="$CACHE/build-times.log"
mkdir -p "$CACHE"

say() { echo "[build-deps] $*" >&2; }

# timed NAME CMD...: runs CMD, logs the wall time to $LOG.
timed() {
  local name=$1; shift
  local t0=$SECONDS
  say "building $name ..."
  "$@"
  local dt=$((SECONDS - t0))
  say "built $name in ${dt}s"
  echo "$(date -u +%FT%TZ) $name ${dt}s" >>"$LOG"
}

build_k8s() {
  local out="$CACHE/k8s/$K8S_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=0
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then say "k8s $K8S_VERSION present"; return; fi
  local w="$CACHE/src/k8s-$K8S_VERSION"
  rm -rf "$w"; mkdir -p "$w" "$out"
  # The staging replace list changes between minors: derive it from that
  # version's own go.mod (./staging/src/k8s.io/X => published v0.<minor>.<patch>).
  local modfile
  modfile="$(cd "$w" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  local staging_ver="v0.${K8S_VERSION#v1.}"
  {
    echo "module dnspolicy.local/k8s-wrapper"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$modfile" | awk -v v="$staging_ver" '{print "replace " $1 " => " $1 " " v}'
  } >"$w/go.mod"
  local ldflags="-s -w"
  local commit; commit="$(echo "$K8S_VERSION" | sha1sum | cut -c1-40)"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.gitCommit=$commit"
  done
  (
    cd "$w"
    for b in "${bins[@]}"; do
      go get "k8s.io/kubernetes/cmd/$b@$K8S_VERSION"
    done
    for b in "${bins[@]}"; do
      [[ -x "$out/$b" ]] && continue
      timed "$b-$K8S_VERSION" go build -ldflags "$ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$out/$b.tmp" "$out/$b"
    done
  )
}

main() {
  local what=("$@")
  [[ ${#what[@]} == 0 ]] && what=(all)
  local t0=$SECONDS
  for c in "${what[@]}"; do
    case $c in
      k8s) build_k8s ;;
      etcd) build_etcd ;;
      kwok) build_kwok ;;
      coredns) build_coredns ;;
      musl) build_musl ;;
      all) build_k8s; build_etcd; build_kwok; build_coredns; build_musl ;;
      *) say "unknown component $c"; exit 2 ;;
    esac
  done
  say "done in $((SECONDS - t0))s (cache: $CACHE)"
}
main "$@"
