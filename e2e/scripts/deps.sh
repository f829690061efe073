#!/usr/bin/env bash
# Debian packages the e2e harness needs. Idempotent; fast when present.
set -euo pipefail
need=()
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v dig >/dev/null || need+=(dnsutils)
command -v unshare >/dev/null || need+=(util-linux)
command -v getent >/dev/null || need+=(libc-bin)
# The HTTPS client of the /metrics access tests (e2e/tests/metrics_auth.rs).
command -v curl >/dev/null || need+=(curl)
# The real node (e2e/src/cluster/node): runtime, pod network, kube-proxy's
# iptables, image building (umoci) and the probe images' busybox.
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v umoci >/dev/null || need+=(umoci)
command -v busybox >/dev/null || need+=(busybox-static)
command -v go >/dev/null || { echo "deps.sh: go is required (Go >= 1.26)" >&2; exit 1; }
if ((${#need[@]})); then
  echo "[deps] apt-get install ${need[*]}" >&2
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
