//! A table-driven DNS server on UDP and TCP: the black-hole upstream, the
//! answering upstream, extra resolvers a test starts (MagicDNS). It logs
//! every question it reads.
//!
//! Table file format (re-read when it changes), one record per line:
//! `name A 1.2.3.4`, `name AAAA ::1`, `*.zone A 1.2.3.4` (wildcard),
//! `name NXDOMAIN`, `name SERVFAIL`, `name REFUSED`, `name DROP`; `#` comments.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::codec::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Read and never answer (black hole).
    Drop,
    Nxdomain,
    Servfail,
    Refused,
}

#[derive(Clone, Debug)]
enum Entry {
    Addrs(Vec<IpAddr>),
    Rcode(Action),
}

#[derive(Default)]
struct Table {
    exact: HashMap<String, Entry>,
    wild: Vec<(String, Entry)>,
    mtime: Option<SystemTime>,
}

fn parse_table(s: &str) -> Table {
    let mut t = Table::default();
    for line in s.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            continue;
        }
        let e = match f[1].to_ascii_uppercase().as_str() {
            "A" | "AAAA" => {
                let ips: Vec<IpAddr> = f[2..].iter().filter_map(|s| s.parse().ok()).collect();
                Entry::Addrs(ips)
            }
            "NXDOMAIN" => Entry::Rcode(Action::Nxdomain),
            "SERVFAIL" => Entry::Rcode(Action::Servfail),
            "REFUSED" => Entry::Rcode(Action::Refused),
            "DROP" => Entry::Rcode(Action::Drop),
            _ => continue,
        };
        let name = fqdn(f[0]);
        let slot = if let Some(rest) = name.strip_prefix("*.") {
            t.wild.push((format!(".{rest}"), e.clone()));
            continue;
        } else {
            t.exact.entry(name).or_insert(Entry::Addrs(vec![]))
        };
        match (slot, e) {
            (Entry::Addrs(v), Entry::Addrs(more)) => v.extend(more),
            (slot, e) => *slot = e,
        }
    }
    t
}

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub log: PathBuf,
    pub table: Option<PathBuf>,
    pub default: Action,
}

struct Shared {
    cfg: ServerConfig,
    table: Mutex<Table>,
    log: Mutex<std::fs::File>,
}

impl Shared {
    fn refresh(&self) {
        let Some(p) = &self.cfg.table else { return };
        let m = std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut t = self.table.lock().unwrap();
        if m != t.mtime {
            let mut nt = parse_table(&std::fs::read_to_string(p).unwrap_or_default());
            nt.mtime = m;
            *t = nt;
        }
    }

    /// Decide the reply (None = stay silent) and log the question.
    fn answer(&self, proto: &str, from: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        let (_, q) = parse_question(msg).ok()?;
        self.refresh();
        let entry = {
            let t = self.table.lock().unwrap();
            t.exact.get(&q.name).cloned().or_else(|| {
                t.wild
                    .iter()
                    .find(|(suf, _)| q.name.ends_with(suf.as_str()))
                    .map(|(_, e)| e.clone())
            })
        };
        let (verdict, reply) = match entry {
            Some(Entry::Addrs(ips)) => {
                let want: Vec<IpAddr> = ips
                    .into_iter()
                    .filter(|ip| match q.qtype {
                        TYPE_A => ip.is_ipv4(),
                        TYPE_AAAA => ip.is_ipv6(),
                        _ => false,
                    })
                    .collect();
                ("answer", Some(build_reply(msg, &q, RCODE_NOERROR, &want)))
            }
            Some(Entry::Rcode(a)) => rcode_reply(a, msg, &q),
            None => rcode_reply(self.cfg.default, msg, &q),
        };
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let mut f = self.log.lock().unwrap();
        let _ = writeln!(
            f,
            "{ms} {proto} {from} {} {} {verdict}",
            qtype_name(q.qtype),
            q.name
        );
        reply
    }
}

fn rcode_reply(a: Action, msg: &[u8], q: &Question) -> (&'static str, Option<Vec<u8>>) {
    match a {
        Action::Drop => ("drop", None),
        Action::Nxdomain => ("nxdomain", Some(build_reply(msg, q, RCODE_NXDOMAIN, &[]))),
        Action::Servfail => ("servfail", Some(build_reply(msg, q, RCODE_SERVFAIL, &[]))),
        Action::Refused => ("refused", Some(build_reply(msg, q, RCODE_REFUSED, &[]))),
    }
}

/// Serve UDP and TCP on `cfg.listen` until the process ends.
pub async fn serve(cfg: ServerConfig) -> Result<()> {
    let udp = Arc::new(
        UdpSocket::bind(cfg.listen)
            .await
            .with_context(|| format!("bind udp {}", cfg.listen))?,
    );
    let tcp = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("bind tcp {}", cfg.listen))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.log)?;
    let shared = Arc::new(Shared {
        cfg,
        table: Mutex::new(Table::default()),
        log: Mutex::new(log),
    });
    let s2 = shared.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, from)) = tcp.accept().await else {
                continue;
            };
            let s = s2.clone();
            tokio::spawn(async move {
                // Read length-prefixed queries; a black hole keeps the connection open, silent.
                loop {
                    let mut lb = [0u8; 2];
                    if conn.read_exact(&mut lb).await.is_err() {
                        return;
                    }
                    let mut msg = vec![0u8; u16::from_be_bytes(lb) as usize];
                    if conn.read_exact(&mut msg).await.is_err() {
                        return;
                    }
                    if let Some(r) = s.answer("tcp", from, &msg) {
                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&r);
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        if let Some(r) = shared.answer("udp", from, &buf[..n]) {
            let _ = udp.send_to(&r, from).await;
        }
    }
}
