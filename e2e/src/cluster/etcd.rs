//! etcd: one member, no fsync (the state dir is thrown away with the cluster).

use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;

use super::Layout;
use super::components::{spawn, wait_component};
use crate::env::{self, CONTROL_IP};
use crate::net;

/// The client URL the apiserver uses.
pub fn client_url() -> String {
    format!("http://{CONTROL_IP}:{}", env::ETCD_CLIENT_PORT)
}

/// Start etcd and wait until `/health` answers 200.
pub fn start(l: &Layout) -> Result<()> {
    let url = client_url();
    let peer_url = format!("http://{CONTROL_IP}:{}", env::ETCD_PEER_PORT);
    spawn(
        l,
        "etcd",
        &env::etcd_bin(),
        &[
            "--name=e2e".into(),
            format!("--data-dir={}", l.dir.join("etcd").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=e2e={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &[],
    )?;
    let addr = SocketAddr::new(CONTROL_IP.into(), env::ETCD_CLIENT_PORT);
    wait_component(l, "etcd", Duration::from_secs(30), || {
        net::http_get_status(addr, "/health", Duration::from_secs(1)).is_ok_and(|c| c == 200)
    })
}
