//! DNS for the harness: the wire codec, a tiny table-driven server (the
//! upstreams), the query logs it writes, and one-shot queries to CoreDNS.

mod codec;
mod log;
mod server;

pub use codec::*;
pub use log::{LoggedQuery, QueryLog};
pub use server::{Action, ServerConfig, serve};

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// One UDP query; Err on timeout.
pub async fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Result<Reply> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let id: u16 = (SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos() & 0xFFFF) as u16;
    sock.send_to(&build_query(id, name, qtype), server).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .with_context(|| format!("no reply from {server} for {name} within {timeout:?}"))??;
    parse_reply(&buf[..n])
}
