//! The two upstreams CoreDNS forwards to: the black hole (the seed's
//! unreachable resolver: reads, never answers) and the answering upstream
//! (table-driven); both `e2e-cluster dns-server` processes logging queries.

use anyhow::Result;
use std::path::Path;

use super::Layout;
use super::components::spawn;
use crate::env;

pub fn start(l: &Layout, self_bin: &Path) -> Result<()> {
    spawn(
        l,
        "blackhole",
        self_bin,
        &[
            "dns-server".into(),
            format!("--listen={}:53", env::BLACKHOLE_IP),
            format!("--log={}", l.blackhole_log().display()),
            "--default=drop".into(),
        ],
        &[],
    )?;
    spawn(
        l,
        "upstream",
        self_bin,
        &[
            "dns-server".into(),
            format!("--listen={}:53", env::UPSTREAM_IP),
            format!("--log={}", l.upstream_log().display()),
            format!("--table={}", l.upstream_table().display()),
            "--default=nxdomain".into(),
        ],
        &[],
    )?;
    Ok(())
}
