//! Fixed addresses, versions and paths of the local cluster.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub const K8S_VERSION: &str = "v1.36.3";
pub const ETCD_VERSION: &str = "v3.6.16";
pub const KWOK_VERSION: &str = "v0.8.0";

/// Control plane: everything on one dedicated loopback address.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 1);
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const APISERVER_PORT: u16 = 6443;
pub const KCM_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
pub const KWOK_PORT: u16 = 10247;
/// CoreDNS pods get 127.0.53.N (N = 1..=254), as if each had its own netns.
pub const COREDNS_NET: [u8; 3] = [127, 0, 53];
/// Black-hole upstream: reads, never answers (the unreachable 8.8.8.8 of the seeds).
pub const BLACKHOLE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 54, 1);
/// Answering upstream (real upstream / tailnet resolver stand-in), table-driven.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 54, 2);

pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const KUBERNETES_SVC_IP: &str = "10.96.0.1";
pub const DNS_SVC_IP: &str = "10.96.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The host search domain the fake nodes carry (Tailscale MagicDNS, seed 000).
pub const NODE_SEARCH: &str = "tailb45a71.ts.net";

pub const ANN_ADDRESS: &str = "e2e.dnspolicy.dev/address";
pub const ANN_READY: &str = "e2e.dnspolicy.dev/ready";
pub const ANN_RESTARTS: &str = "e2e.dnspolicy.dev/restarts";
pub const ANN_LAST_ERROR: &str = "e2e.dnspolicy.dev/last-error";

pub fn apiserver_addr() -> SocketAddr {
    SocketAddr::new(CONTROL_IP.into(), APISERVER_PORT)
}

/// State of the running cluster (pki, logs, pids, etcd data). `DNSPOLICY_E2E_DIR`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("DNSPOLICY_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/dnspolicy-e2e"))
}

/// Built binaries, by version. `DNSPOLICY_E2E_CACHE`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DNSPOLICY_E2E_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/dnspolicy-e2e")
}

pub fn k8s_bin(name: &str) -> PathBuf {
    cache_dir().join("k8s").join(K8S_VERSION).join(name)
}
pub fn kubectl_bin() -> PathBuf {
    k8s_bin("kubectl")
}
pub fn etcd_bin() -> PathBuf {
    cache_dir().join("etcd").join(ETCD_VERSION).join("etcd")
}
pub fn kwok_bin() -> PathBuf {
    cache_dir().join("kwok").join(KWOK_VERSION).join("kwok")
}
pub const CONTAINERD_VERSION: &str = "v2.4.2";
/// containerd, containerd-shim-runc-v2 or ctr (the real node).
pub fn containerd_bin(name: &str) -> PathBuf {
    cache_dir()
        .join("containerd")
        .join(CONTAINERD_VERSION)
        .join(name)
}
/// An OCI image archive built by build-deps.sh `node-images` (`<name>.ref` beside it holds its name).
pub fn node_image_tar(name: &str) -> PathBuf {
    cache_dir().join("node-images").join(format!("{name}.tar"))
}
pub fn kwok_stage_dir() -> PathBuf {
    cache_dir().join("kwok").join(KWOK_VERSION).join("stage")
}
/// CoreDNS binary for an image tag version like `v1.14.2`.
pub fn coredns_bin(version: &str) -> PathBuf {
    cache_dir().join("coredns").join(version).join("coredns")
}
fn read_trimmed(p: PathBuf) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
/// The CoreDNS version kubeadm ships for K8S_VERSION (recorded by build-deps.sh).
pub fn coredns_kubeadm_version() -> String {
    read_trimmed(cache_dir().join("coredns/kubeadm-version")).unwrap_or_else(|| "v1.14.2".into())
}
/// The oldest CoreDNS (1.8.4..1.10.x) that built with this Go (recorded by build-deps.sh).
pub fn coredns_old_version() -> String {
    read_trimmed(cache_dir().join("coredns/old-version")).unwrap_or_else(|| "v1.8.4".into())
}
/// musl probe: the newest build of e2e/probe/musl-probe.c.
pub fn musl_probe_bin() -> PathBuf {
    let src = std::fs::read(probe_source()).unwrap_or_default();
    let h = crate::files::sha256_hex(&src);
    cache_dir()
        .join("musl-probe")
        .join(&h[..12])
        .join("musl-probe")
}
pub fn probe_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("probe/musl-probe.c")
}
pub fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-deps.sh")
}
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
}
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
