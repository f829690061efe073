#!/usr/bin/env bash
# Build (once) every upstream binary the e2e harness runs, cached by version
# outside the repo. Idempotent: a component whose binaries exist is skipped.
# Usage: build-deps.sh [k8s|etcd|kwok|coredns|coredns-matrix|coredns-nodecache|musl|musl-canon|helm|promtool|tailscale-crd|k8s-node|containerd|node-images|dnspolicy-image|flux|kstatus|argocd|all]...   (default: all)
set -euo pipefail

CACHE="${DNSPOLICY_E2E_CACHE:-$HOME/.cache/dnspolicy-e2e}"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
# Prometheus 3.16 (its Go module is tagged v0.316.0).
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
# Tailscale's DNSConfig CRD ships in its Go module; newer versions want a newer Go.
TAILSCALE_VERSION="${TAILSCALE_VERSION:-v1.90.0}"
# Oldest CoreDNS in 1.8.4..1.10.x that builds with this Go (see e2e/README.md).
COREDNS_OLD_VERSION="${COREDNS_OLD_VERSION:-v1.8.4}"
# Flux controllers (Flux 2.9): 1.10.x asks for go 1.27. source-controller
# 1.9.5/1.9.6 need github.com/fluxcd/pkg/artifact v0.18.3, which the module
# proxy does not serve (403); 1.9.0 needs v0.18.0, which it does. 1.9.0 is
# also the source API kustomize-controller 1.9.6 itself requires.
FLUX_SOURCE_VERSION="${FLUX_SOURCE_VERSION:-v1.9.0}"
FLUX_KUSTOMIZE_VERSION="${FLUX_KUSTOMIZE_VERSION:-v1.9.6}"
# kstatus (sigs.k8s.io/cli-utils), the status library Flux's health checks use.
KSTATUS_VERSION="${KSTATUS_VERSION:-v0.37.2}"
# Argo CD's health code (util/lua). 3.4 and later replace gitops-engine with
# a ./gitops-engine directory the module zip leaves out and whose
# pseudo-version the proxy does not serve; 3.2.x still requires the separate
# github.com/argoproj/gitops-engine module, which resolves.
ARGOCD_VERSION="${ARGOCD_VERSION:-v3.2.12}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
export CGO_ENABLED=0
LOG="$CACHE/build-times.log"
mkdir -p "$CACHE"; touch "$LOG"

say() { echo "[build-deps] $*" >&2; }

# timed NAME CMD...: runs CMD, logs the wall time to $LOG; CMD's failure is
# returned (also where the caller tests it, e.g. `if timed ...`, which turns
# `set -e` off inside the function).
timed() {
  local name=$1; shift
  local t0=$SECONDS rc=0
  say "building $name ..."
  "$@" || rc=$?
  local dt=$((SECONDS - t0))
  if [[ $rc != 0 ]]; then say "building $name failed (exit $rc) after ${dt}s"; return "$rc"; fi
  say "built $name in ${dt}s"
  echo "$(date -u +%FT%TZ) $name ${dt}s" >>"$LOG"
}

build_k8s() { build_k8s_cmds kube-apiserver kube-controller-manager kube-scheduler kubectl; }

# build_k8s_cmds CMD...: k8s.io/kubernetes/cmd/CMD from one wrapper module
# with the staging replaces, stamped with the version, into $CACHE/k8s/VERSION.
build_k8s_cmds() {
  local out="$CACHE/k8s/$K8S_VERSION"
  local bins=("$@")
  local missing=0
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then say "k8s $K8S_VERSION ${bins[*]} present"; return; fi
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

build_etcd() {
  local out="$CACHE/etcd/$ETCD_VERSION"
  if [[ -x "$out/etcd" ]]; then say "etcd $ETCD_VERSION present"; return; fi
  local w="$CACHE/src/etcd-$ETCD_VERSION"
  rm -rf "$w"; mkdir -p "$w" "$out"
  # etcd's root module is not on the proxy and server/v3 carries relative
  # replaces, so wrap etcdmain in a module of our own (what etcd's main.go does).
  cat >"$w/go.mod" <<EOM
module dnspolicy.local/etcd-wrapper

go 1.26
EOM
  cat >"$w/main.go" <<'EOM'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOM
  (
    cd "$w"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/api/v3@$ETCD_VERSION" \
      "go.etcd.io/etcd/client/pkg/v3@$ETCD_VERSION" "go.etcd.io/etcd/client/v3@$ETCD_VERSION" \
      "go.etcd.io/etcd/pkg/v3@$ETCD_VERSION"
    go mod tidy
    timed "etcd-$ETCD_VERSION" go build -ldflags "-s -w" -o "$out/etcd.tmp" .
    mv "$out/etcd.tmp" "$out/etcd"
  )
}

build_kwok() {
  local out="$CACHE/kwok/$KWOK_VERSION"
  if [[ -x "$out/kwok" && -d "$out/stage" ]]; then say "kwok $KWOK_VERSION present"; return; fi
  mkdir -p "$out"
  timed "kwok-$KWOK_VERSION" env GOBIN="$out/.bin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local dir
  dir="$(cd "$out" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  # Stage files ship in the module; keep a copy next to the binary.
  rm -rf "$out/stage"; cp -r "$dir/kustomize/stage" "$out/stage"; chmod -R u+w "$out/stage"
  mv "$out/.bin/kwok" "$out/kwok"; rmdir "$out/.bin"
}

coredns_kubeadm_version() {
  local dir
  dir="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  sed -n 's/^\s*CoreDNSVersion = "\(v[0-9.]*\)"/\1/p' "$dir/cmd/kubeadm/app/constants/constants.go"
}

# build_one_coredns VERSION: go install first; releases whose
# golang.org/x/net reaches syscall.recvmsg by linkname (1.9.x, 1.10.x: the Go
# linker refuses that since 1.23) with the linker's check off; else a wrapper
# module that bumps dependencies which no longer compile with this Go. Each
# result must say it is VERSION (`coredns -version`), or it is thrown away.
build_one_coredns() {
  local v=$1 out="$CACHE/coredns/$1"
  if [[ -x "$out/coredns" ]]; then say "coredns $v present"; return 0; fi
  mkdir -p "$out"
  if timed "coredns-$v" env GOBIN="$out/.bin" go install -ldflags "-s -w" "github.com/coredns/coredns@$v" \
    && keep_coredns "$v" "go install"; then return 0; fi
  say "go install coredns@$v failed; trying again with -ldflags -checklinkname=0"
  if timed "coredns-$v(checklinkname=0)" env GOBIN="$out/.bin" go install -ldflags "-s -w -checklinkname=0" "github.com/coredns/coredns@$v" \
    && keep_coredns "$v" "go install -ldflags '-s -w -checklinkname=0' (its golang.org/x/net links syscall.recvmsg by name)"; then return 0; fi
  say "trying a wrapper module with bumped golang.org/x deps"
  local w="$CACHE/src/coredns-$v"
  rm -rf "$w"; mkdir -p "$w"
  cat >"$w/go.mod" <<EOM
module dnspolicy.local/coredns-wrapper

go 1.26
EOM
  cat >"$w/main.go" <<'EOM'
package main

import (
	_ "github.com/coredns/coredns/core/plugin"
	"github.com/coredns/coredns/coremain"
)

// Same as coredns' own main.go.
func main() { coremain.Run() }
EOM
  # `&&` throughout: callers test this function, which turns `set -e` off,
  # and a failed `go get` would let `go mod tidy` pick the newest CoreDNS.
  (
    cd "$w" \
      && go get "github.com/coredns/coredns@$v" \
      && go get golang.org/x/sys@latest golang.org/x/net@latest \
      && go mod tidy \
      && timed "coredns-$v(wrapper)" go build -ldflags "-s -w" -o "$out/.bin/coredns" .
  ) && keep_coredns "$v" "wrapper module, bumped golang.org/x/sys,net"
}

# keep_coredns VERSION HOW: moves the build from .bin into place if it reports
# VERSION, records HOW; fails (and removes it) otherwise.
keep_coredns() {
  local v=$1 how=$2 out="$CACHE/coredns/$1"
  local said; said="$("$out/.bin/coredns" -version 2>/dev/null | head -1)"
  if [[ "$said" != "CoreDNS-${v#v}" ]]; then
    say "the build for coredns $v reports ${said:-nothing}; discarded"
    rm -rf "$out/.bin"; return 1
  fi
  mv "$out/.bin/coredns" "$out/coredns" && rmdir "$out/.bin" && echo "$how" >"$out/HOW"
}

build_coredns() {
  local kv; kv="$(coredns_kubeadm_version)"
  [[ -n "$kv" ]] || { say "cannot read CoreDNSVersion from kubeadm $K8S_VERSION"; return 1; }
  build_one_coredns "$kv"
  echo "$kv" >"$CACHE/coredns/kubeadm-version"
  # Old release: first that builds, from COREDNS_OLD_VERSION upwards.
  if [[ -f "$CACHE/coredns/old-version" && -x "$CACHE/coredns/$(cat "$CACHE/coredns/old-version")/coredns" ]]; then
    say "coredns old $(cat "$CACHE/coredns/old-version") present"; return 0
  fi
  local v
  for v in $COREDNS_OLD_VERSION v1.8.5 v1.8.6 v1.8.7 v1.9.0 v1.9.1 v1.9.2 v1.9.3 v1.9.4 v1.10.0 v1.10.1; do
    if [[ "$(printf '%s\n%s\n' "$COREDNS_OLD_VERSION" "$v" | sort -V | head -1)" != "$COREDNS_OLD_VERSION" ]]; then continue; fi
    if build_one_coredns "$v"; then echo "$v" >"$CACHE/coredns/old-version"; return 0; fi
    say "coredns $v does not build with $(go version)"
    rm -rf "$CACHE/coredns/$v"
  done
  say "no CoreDNS 1.8.4..1.10.x builds"; return 1
}

# The CoreDNS versions the real-CoreDNS matrix (dns/tests/coredns_matrix.rs)
# runs besides the kubeadm and old ones: the last release without the `view`
# plugin and the first with it (dns/src/version.rs: view from 1.10.0).
COREDNS_MATRIX_VERSIONS=(v1.9.4 v1.10.0)

build_coredns_matrix() {
  local v
  for v in "${COREDNS_MATRIX_VERSIONS[@]}"; do
    build_one_coredns "$v" || { say "coredns $v does not build with $(go version)"; return 1; }
  done
}

# The plugins NodeLocal DNSCache's node-cache links (k8s.io/dns
# cmd/node-cache/main.go, release 1.26.7, 2025-10; master adds timeouts).
# k8s.io/dns is not on the module proxy, so the list is copied here.
NODECACHE_PLUGINS=(bind bufsize cache debug dns64 errors forward health hosts loadbalance log loop
  metrics pprof reload rewrite template trace whoami)

# build_coredns_nodecache: CoreDNS linked with node-cache's plugins and no
# others, so a Corefile node-cache would refuse (view, kubernetes, file, ...)
# is refused here too. Like node-cache's main.go it imports the plugins and
# leaves dnsserver.Directives (the order) as CoreDNS has it: an unlinked
# plugin's directive then fails at start-up ("no action found for directive").
# The kubeadm version by default (node-cache 1.26.7 itself carries CoreDNS 1.13.1).
build_coredns_nodecache() {
  local v="${COREDNS_NODECACHE_VERSION:-$(coredns_kubeadm_version)}"
  [[ -n "$v" ]] || { say "cannot read CoreDNSVersion from kubeadm $K8S_VERSION"; return 1; }
  local out="$CACHE/coredns-nodecache/$v"
  if [[ -x "$out/coredns" ]]; then say "coredns-nodecache $v present"; return 0; fi
  local w="$CACHE/src/coredns-nodecache-$v"
  rm -rf "$w"; mkdir -p "$w" "$out"
  cat >"$w/go.mod" <<EOM
module dnspolicy.local/coredns-nodecache

go 1.26
EOM
  {
    echo '// CoreDNS with only the plugins node-cache (k8s.io/dns cmd/node-cache) links.'
    echo 'package main'
    echo
    echo 'import ('
    echo '	"github.com/coredns/coredns/coremain"'
    echo
    local p
    for p in "${NODECACHE_PLUGINS[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ')'
    echo
    echo 'func main() { coremain.Run() }'
  } >"$w/main.go"
  (
    cd "$w"
    go get "github.com/coredns/coredns@$v"
    go mod tidy
    timed "coredns-nodecache-$v" go build -ldflags "-s -w" -o "$out/coredns.tmp" .
  ) || return 1
  mv "$out/coredns.tmp" "$out/coredns"
  echo "wrapper module: coremain and node-cache's plugins: ${NODECACHE_PLUGINS[*]}" >"$out/HOW"
}

build_musl() {
  local src="$HERE/../probe/musl-probe.c"
  local h; h="$(sha256sum "$src" | cut -c1-12)"
  local out="$CACHE/musl-probe/$h"
  if [[ -x "$out/musl-probe" ]]; then say "musl-probe $h present"; return; fi
  command -v musl-gcc >/dev/null || "$HERE/deps.sh"
  mkdir -p "$out"
  timed "musl-probe" musl-gcc -static -O2 -o "$out/musl-probe.tmp" "$src"
  mv "$out/musl-probe.tmp" "$out/musl-probe"
}

# The canonical-name probe (getaddrinfo with AI_CANONNAME), cached like the
# probe by its source's hash: dns/tests/rewrite_readback.rs.
build_musl_canon() {
  local src="$HERE/../probe/musl-canon.c"
  local h; h="$(sha256sum "$src" | cut -c1-12)"
  local out="$CACHE/musl-canon/$h"
  if [[ -x "$out/musl-canon" ]]; then say "musl-canon $h present"; return; fi
  command -v musl-gcc >/dev/null || "$HERE/deps.sh"
  mkdir -p "$out"
  timed "musl-canon" musl-gcc -static -O2 -o "$out/musl-canon.tmp" "$src"
  mv "$out/musl-canon.tmp" "$out/musl-canon"
}

# helm (chart lint, template and install tests): `go install` of helm's own
# command, with the version stamped the way helm's Makefile stamps it.
build_helm() {
  local out="$CACHE/helm/$HELM_VERSION"
  if [[ -x "$out/helm" ]]; then say "helm $HELM_VERSION present"; return; fi
  local major="${HELM_VERSION%%.*}"
  mkdir -p "$out"
  timed "helm-$HELM_VERSION" env GOBIN="$out/.bin" go install \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$major/internal/version.gitTreeState=clean" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  mv "$out/.bin/helm" "$out/helm"; rmdir "$out/.bin"
}

# promtool (`promtool test rules` on the shipped alerts): `go install` with
# remove_all_sd, Prometheus's own tag that leaves out the cloud service
# discovery plugins promtool does not need.
build_promtool() {
  local out="$CACHE/promtool/$PROMTOOL_VERSION"
  if [[ -x "$out/promtool" ]]; then say "promtool $PROMTOOL_VERSION present"; return; fi
  mkdir -p "$out"
  timed "promtool-$PROMTOOL_VERSION" env GOBIN="$out/.bin" go install -tags remove_all_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  mv "$out/.bin/promtool" "$out/promtool"; rmdir "$out/.bin"
}

# Tailscale's published DNSConfig CRD (forwardToRef's e2e): nothing is built;
# the file is copied out of the tailscale.com module as the module proxy
# serves it. Tailscale's operator itself needs a tailnet and is not run.
build_tailscale_crd() {
  local out="$CACHE/tailscale/$TAILSCALE_VERSION"
  if [[ -f "$out/tailscale.com_dnsconfigs.yaml" ]]; then say "tailscale CRDs $TAILSCALE_VERSION present"; return; fi
  mkdir -p "$out"
  local dir
  dir="$(cd /tmp && go mod download -json "tailscale.com@$TAILSCALE_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  cp "$dir/cmd/k8s-operator/deploy/crds/tailscale.com_dnsconfigs.yaml" "$out/.dnsconfigs.yaml"
  mv "$out/.dnsconfigs.yaml" "$out/tailscale.com_dnsconfigs.yaml"
  echo "$(date -u +%FT%TZ) tailscale-crd-$TAILSCALE_VERSION 0s (copied from the module cache)" >>"$LOG"
}

# The real node's Kubernetes half: kubelet and kube-proxy, same module and
# stamping as the control plane (build_k8s_cmds).
build_k8s_node() { build_k8s_cmds kubelet kube-proxy; build_pause; }

# pause, the pod sandbox's process: Kubernetes' own build/pause/linux/pause.c
# from the k8s.io/kubernetes module, static with musl-gcc.
build_pause() {
  local out="$CACHE/k8s/$K8S_VERSION"
  if [[ -x "$out/pause" ]]; then say "pause $K8S_VERSION present"; return; fi
  command -v musl-gcc >/dev/null || "$HERE/deps.sh"
  local dir
  dir="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  mkdir -p "$out"
  timed "pause-$K8S_VERSION" musl-gcc -static -Os -DVERSION="$K8S_VERSION" -o "$out/pause.tmp" "$dir/build/pause/linux/pause.c"
  mv "$out/pause.tmp" "$out/pause"
}

# node_image NAME REF ENTRYPOINT USER FILE:DEST...  (IMAGE_CMD="a b": its CMD): an OCI image built with
# umoci (Debian's; a real tool rather than a hand-written tar) holding FILEs,
# tagged with the fully qualified REF (a short tag makes `ctr import` invent
# an `import-<date>` name the CRI cannot resolve). Written as
# $CACHE/node-images/NAME.tar with NAME.ref; rebuilt when an input changes.
node_image() {
  local name=$1 ref=$2 entry=$3 user=$4; shift 4
  local out="$CACHE/node-images" key f
  key="$(for f in "$@"; do sha256sum "${f%%:*}" | cut -c1-64; echo "${f#*:}"; done; echo "$ref $entry $user ${IMAGE_CMD:-}")"
  key="$(echo "$key" | sha256sum | cut -c1-16)"
  if [[ -f "$out/$name.tar" && "$(cat "$out/$name.key" 2>/dev/null)" == "$key" ]]; then
    say "image $ref present"; return
  fi
  command -v umoci >/dev/null || "$HERE/deps.sh"
  mkdir -p "$out"
  local w; w="$(mktemp -d "$out/.build-$name.XXXX")"
  (
    set -e
    cd "$w"
    umoci init --layout oci
    umoci new --image "oci:$ref"
    umoci unpack --image "oci:$ref" bundle >/dev/null
    for f in "$@"; do
      install -D -m 0755 "${f%%:*}" "bundle/rootfs${f#*:}"
    done
    umoci repack --image "oci:$ref" bundle
    local cmd=() a
    for a in ${IMAGE_CMD:-}; do cmd+=(--config.cmd "$a"); done
    umoci config --image "oci:$ref" --config.entrypoint "$entry" --config.user "$user" "${cmd[@]}" \
      --architecture amd64 --os linux
    umoci gc --layout oci
    tar -C oci -cf "$out/$name.tar.tmp" .
  )
  rm -rf "$w"
  mv "$out/$name.tar.tmp" "$out/$name.tar"
  echo "$ref" >"$out/$name.ref"; echo "$key" >"$out/$name.key"
}

# The real node's images: pause (the sandbox); busybox (Debian's static
# build: a glibc binary that prints files and sleeps in test pods); CoreDNS
# (kubeadm's version, the binary built above, user 65532 as upstream's
# image); the glibc probe (Debian's getent with its libc and loader, and
# `hosts: files dns`) and the musl probe (e2e/probe/musl-probe.c), each with
# busybox to sleep on.
build_node_images() {
  build_pause
  local t0=$SECONDS
  node_image pause "localhost/pause:$K8S_VERSION" /pause 65535:65535 "$CACHE/k8s/$K8S_VERSION/pause:/pause"
  command -v busybox >/dev/null || "$HERE/deps.sh"
  local bb; bb="$(dpkg-query -W -f '${Version}' busybox-static | tr ':+~' '---')"
  local busybox; busybox="$(command -v busybox)"
  node_image busybox "localhost/busybox:$bb" /bin/busybox 0:0 "$busybox:/bin/busybox"
  local kv; kv="$(cat "$CACHE/coredns/kubeadm-version" 2>/dev/null || true)"
  [[ -n "$kv" && -x "$CACHE/coredns/$kv/coredns" ]] || build_coredns
  kv="$(cat "$CACHE/coredns/kubeadm-version")"
  node_image coredns "localhost/coredns:$kv" /coredns 65532:65532 "$CACHE/coredns/$kv/coredns:/coredns"
  local libc ld nss="$CACHE/node-images/nsswitch.conf"
  libc="$(readlink -f /lib/x86_64-linux-gnu/libc.so.6)"; ld="$(readlink -f /lib64/ld-linux-x86-64.so.2)"
  printf 'hosts: files dns\n' >"$nss"
  local gv; gv="$(dpkg-query -W -f '${Version}' libc-bin | tr ':+~' '---')"
  node_image glibc-probe "localhost/glibc-probe:$gv" /bin/busybox 65534:65534 "$busybox:/bin/busybox" \
    /usr/bin/getent:/usr/bin/getent "$libc:/lib/x86_64-linux-gnu/libc.so.6" "$ld:/lib64/ld-linux-x86-64.so.2" \
    "$nss:/etc/nsswitch.conf"
  build_musl
  local h; h="$(sha256sum "$HERE/../probe/musl-probe.c" | cut -c1-12)"
  node_image musl-probe "localhost/musl-probe:$h" /bin/busybox 65534:65534 "$busybox:/bin/busybox" \
    "$CACHE/musl-probe/$h/musl-probe:/usr/bin/musl-probe"
  say "node images in $((SECONDS - t0))s"
}

# The dnspolicy image, locally: what the Dockerfile's final stage holds (the
# one list of its contents: every COPY --from=build of a cargo-built binary,
# USER, ENTRYPOINT, CMD), from DNSPOLICY_BIN_DIR (default target/debug) instead
# of the build stage's target/release, plus the shared libraries `ldd` says
# the binary needs (the distroless cc base provides them in the Dockerfile's
# image). Any other instruction in that stage is an error here, so the two
# cannot drift. Tagged localhost/dnspolicy:dev-<hash of the binaries>, so a
# rebuilt binary is a new image.
build_dnspolicy_image() {
  local dockerfile="$HERE/../../Dockerfile"
  local bindir="${DNSPOLICY_BIN_DIR:-$HERE/../../target/debug}"
  local stage; stage="$(awk '/^FROM /{n=NR} {l[NR]=$0} END{for (i = n; i <= NR; i++) print l[i]}' "$dockerfile")"
  local files=() entry="" user="" cmd="" line src dest bin hash=""
  # json_words '["a", "b"]' -> a b (the exec form of ENTRYPOINT/CMD; no spaces inside items).
  json_words() { sed -e 's/^\[//' -e 's/\]$//' -e 's/"//g' -e 's/,/ /g' <<<"$1" | xargs; }
  while IFS= read -r line; do
    case "$line" in
      ''|'#'*|FROM\ *) ;;
      COPY\ --from=build\ /src/target/release/*)
        read -r _ _ src dest <<<"$line"
        bin="$bindir/$(basename "$src")"
        [[ -x "$bin" ]] || { say "$bin is missing: cargo build -p dnspolicy-operator"; return 1; }
        files+=("$bin:$dest"); hash+="$(sha256sum "$bin" | cut -c1-64)" ;;
      USER\ *) user="${line#USER }" ;;
      ENTRYPOINT\ \[*) entry="$(json_words "${line#ENTRYPOINT }")" ;;
      CMD\ \[*) cmd="$(json_words "${line#CMD }")" ;;
      *) say "Dockerfile final stage: no local equivalent for \"$line\"; teach build_dnspolicy_image it"; return 1 ;;
    esac
  done <<<"$stage"
  [[ ${#files[@]} -gt 0 && -n "$entry" && -n "$user" ]] || { say "Dockerfile final stage: need COPY --from=build, USER and ENTRYPOINT"; return 1; }
  [[ "$entry" != *" "* ]] || { say "Dockerfile ENTRYPOINT with arguments: put them in CMD"; return 1; }
  # The libraries the binaries load (the base image's share of the contents).
  local f lib
  for f in "${files[@]}"; do
    for lib in $(ldd "${f%%:*}" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}'); do
      files+=("$(readlink -f "$lib"):$lib")
    done
  done
  local tag; tag="dev-$(sha256sum <<<"$hash" | cut -c1-12)"
  IMAGE_CMD="$cmd" node_image dnspolicy "localhost/dnspolicy:$tag" "$entry" "$user" $(printf '%s\n' "${files[@]}" | sort -u)
}

# containerd for the real node (Debian's 1.6 is too old for kubelet 1.36):
# the daemon, its runc shim and ctr (image import), plain go install.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
build_containerd() {
  local out="$CACHE/containerd/$CONTAINERD_VERSION"
  local bins=(containerd containerd-shim-runc-v2 ctr) b
  local missing=0
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then say "containerd $CONTAINERD_VERSION present"; return; fi
  mkdir -p "$out"
  local ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for b in "${bins[@]}"; do
    [[ -x "$out/$b" ]] && continue
    timed "$b-$CONTAINERD_VERSION" env GOBIN="$out/.bin" go install -ldflags "$ldflags" \
      "github.com/containerd/containerd/v2/cmd/$b@$CONTAINERD_VERSION"
    mv "$out/.bin/$b" "$out/$b"
  done
  rmdir "$out/.bin"
}

# build_one_flux NAME VERSION: a Flux controller (its main package is the
# module root). Its go.mod replaces <module>/api => ./api, a directory the
# module zip leaves out, so build a copy whose go.mod points that replace at
# the published api module of the same version (what the ./api holds at the tag).
build_one_flux() {
  local name=$1 v=$2 out="$CACHE/flux/$1/$2"
  if [[ -x "$out/$name" && -d "$out/crd" ]]; then say "flux $name $v present"; return; fi
  local mod="github.com/fluxcd/$name"
  local dir
  dir="$(cd /tmp && go mod download -json "$mod@$v" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  [[ -n "$dir" ]] || { say "cannot download $mod@$v"; return 1; }
  local w="$CACHE/src/flux-$name-$v"
  rm -rf "$w"; mkdir -p "$(dirname "$w")" "$out"
  cp -r "$dir" "$w"; chmod -R u+w "$w"
  sed -i "s#^replace $mod/api => ./api\$#replace $mod/api => $mod/api $v#" "$w/go.mod"
  (
    cd "$w"
    go mod download "$mod/api@$v"
    timed "flux-$name-$v" go build -mod=mod -ldflags "-s -w" -o "$out/$name.tmp" .
  ) || return 1
  rm -rf "$out/crd"; cp -r "$dir/config/crd/bases" "$out/crd"; chmod -R u+w "$out/crd"
  mv "$out/$name.tmp" "$out/$name"
}

# build_flux: source-controller (GitRepository) and kustomize-controller
# (Kustomization), plus their CRDs from the modules' config/crd/bases.
build_flux() {
  build_one_flux source-controller "$FLUX_SOURCE_VERSION"
  build_one_flux kustomize-controller "$FLUX_KUSTOMIZE_VERSION"
}

# build_kstatus: e2e/kstatus (a few lines of Go around kstatus's status.Compute),
# cached by the hash of its source.
build_kstatus() {
  local src="$HERE/../kstatus"
  local h; h="$(cat "$src/main.go" "$src/go.mod" | sha256sum | cut -c1-12)"
  local out="$CACHE/kstatus/$KSTATUS_VERSION-$h"
  if [[ -x "$out/kstatus" ]]; then say "kstatus $KSTATUS_VERSION-$h present"; return; fi
  local w="$CACHE/src/kstatus-$h"
  rm -rf "$w"; mkdir -p "$w" "$out"
  cp "$src/main.go" "$src/go.mod" "$w/"
  (
    cd "$w"
    go get "sigs.k8s.io/cli-utils@$KSTATUS_VERSION"
    go mod tidy
    timed "kstatus-$KSTATUS_VERSION" go build -ldflags "-s -w" -o "$out/kstatus.tmp" .
  ) || return 1
  mv "$out/kstatus.tmp" "$out/kstatus"
}

# build_argocd: e2e/argocd-health (Argo CD's Lua health code and
# gitops-engine's GetResourceHealth around dnspolicy's health.lua), in a
# module that takes Argo CD's own replace directives (they only apply in
# the main module), cached by version and the hash of its source.
build_argocd() {
  local src="$HERE/../argocd-health"
  local h; h="$(cat "$src/main.go" "$src/go.mod" | sha256sum | cut -c1-12)"
  local out="$CACHE/argocd-health/$ARGOCD_VERSION-$h"
  if [[ -x "$out/argocd-health" ]]; then say "argocd-health $ARGOCD_VERSION-$h present"; return; fi
  local w="$CACHE/src/argocd-health-$h"
  rm -rf "$w"; mkdir -p "$w" "$out"
  cp "$src/main.go" "$src/go.mod" "$w/"
  local modfile
  modfile="$(cd /tmp && go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  {
    echo
    echo "require github.com/argoproj/argo-cd/v3 $ARGOCD_VERSION"
    echo
    awk '/^replace \(/{b=1} b{print} b&&/^\)/{b=0} /^replace [^(]/{print}' "$modfile" | grep -v '=> \./'
  } >>"$w/go.mod"
  (
    cd "$w"
    timed "argocd-health-$ARGOCD_VERSION" go build -mod=mod -ldflags "-s -w" -o "$out/argocd-health.tmp" .
  ) || return 1
  mv "$out/argocd-health.tmp" "$out/argocd-health"
}

main() {
  local what=("$@")
  [[ ${#what[@]} == 0 ]] && what=(all)
  local t0=$SECONDS
  [[ " ${what[*]} " == *" all "* ]] && what=(k8s etcd kwok coredns coredns-matrix coredns-nodecache musl musl-canon helm promtool tailscale-crd k8s-node containerd node-images flux kstatus argocd)
  for c in "${what[@]}"; do
    local c0=$SECONDS n0
    n0=$(wc -l <"$LOG" 2>/dev/null || echo 0)
    case $c in
      k8s) build_k8s ;;
      etcd) build_etcd ;;
      kwok) build_kwok ;;
      coredns) build_coredns ;;
      coredns-matrix) build_coredns_matrix ;;
      coredns-nodecache) build_coredns_nodecache ;;
      musl) build_musl ;;
      musl-canon) build_musl_canon ;;
      helm) build_helm ;;
      promtool) build_promtool ;;
      tailscale-crd) build_tailscale_crd ;;
      k8s-node) build_k8s_node ;;
      containerd) build_containerd ;;
      node-images) build_node_images ;;
      dnspolicy-image) build_dnspolicy_image ;;
      flux) build_flux ;;
      kstatus) build_kstatus ;;
      argocd) build_argocd ;;
      *) say "unknown component $c"; exit 2 ;;
    esac
    # Wall time including module downloads, when something was built.
    if [[ $(wc -l <"$LOG" 2>/dev/null || echo 0) != "$n0" ]]; then
      say "component $c: $((SECONDS - c0))s wall (downloads included)"
      echo "$(date -u +%FT%TZ) component:$c $((SECONDS - c0))s" >>"$LOG"
    fi
  done
  say "done in $((SECONDS - t0))s (cache: $CACHE)"
}
main "$@"
