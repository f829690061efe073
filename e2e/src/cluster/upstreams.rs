//! The two upstreams CoreDNS forwards to: the black hole (the seed's
//! unreachable resolver: reads, never answers) and the answering upstream
//! (table-driven); both `e2e-cluster dns-server` processes logging queries.

use anyhow::Result;
use std::path::Path;

use super::Layout;
use super::components::spawn;
use crate::env;

pub fn start(l: &Layout, self_bin: &Path) -> Result<()> {
    for (name, ip, log, table, default) in [
        (
            "blackhole",
            env::BLACKHOLE_IP,
            l.blackhole_log(),
            None,
            "drop",
        ),
        (
            "upstream",
            env::UPSTREAM_IP,
            l.upstream_log(),
            Some(l.upstream_table()),
            "nxdomain",
        ),
    ] {
        let mut args = vec![
            "dns-server".to_string(),
            format!("--listen={ip}:53"),
            format!("--log={}", log.display()),
        ];
        args.extend(table.map(|t| format!("--table={}", t.display())));
        args.push(format!("--default={default}"));
        spawn(l, name, self_bin, &args, &[])?;
    }
    Ok(())
}
