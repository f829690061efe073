//! A tiny DNS server and client: enough to play the black-hole upstream, an
//! answering upstream (table of A/AAAA records) and to query CoreDNS directly.
//!
//! Table file format (re-read when it changes), one record per line:
//! `name A 1.2.3.4`, `name AAAA ::1`, `*.zone A 1.2.3.4` (wildcard),
//! `name NXDOMAIN`, `name SERVFAIL`, `name REFUSED`, `name DROP`; `#` comments.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Read and never answer (black hole).
    Drop,
    Nxdomain,
    Servfail,
    Refused,
}

#[derive(Clone, Debug)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

pub fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        13 => "HINFO".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        n => format!("TYPE{n}"),
    }
}

/// Reads a (possibly compressed) name at `pos`; returns it (lower-case,
/// trailing dot, "." for root) and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos).context("short name")? as usize;
        if len & 0xC0 == 0xC0 {
            let lo = *msg.get(pos + 1).context("short pointer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | lo;
            continue;
        }
        if len == 0 {
            let after = end.unwrap_or(pos + 1);
            let name = if labels.is_empty() {
                ".".to_string()
            } else {
                format!("{}.", labels.join("."))
            };
            return Ok((name, after));
        }
        let l = msg.get(pos + 1..pos + 1 + len).context("short label")?;
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        pos += 1 + len;
    }
    bail!("name loop")
}

pub fn parse_question(msg: &[u8]) -> Result<(u16, Question)> {
    if msg.len() < 12 {
        bail!("short message");
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd == 0 {
        bail!("no question");
    }
    let (name, p) = read_name(msg, 12)?;
    let qtype = u16::from_be_bytes([
        *msg.get(p).context("short")?,
        *msg.get(p + 1).context("short")?,
    ]);
    let qclass = u16::from_be_bytes([
        *msg.get(p + 2).context("short")?,
        *msg.get(p + 3).context("short")?,
    ]);
    Ok((
        id,
        Question {
            name,
            qtype,
            qclass,
        },
    ))
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

fn build_reply(query: &[u8], q: &Question, rcode: u8, answers: &[IpAddr]) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&query[0..2]);
    let rd = query[2] & 0x01;
    m.push(0x84 | rd | (query[2] & 0x78)); // QR, AA, opcode, RD
    m.push(0x80 | (rcode & 0x0F)); // RA
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    encode_name(&q.name, &mut m);
    m.extend_from_slice(&q.qtype.to_be_bytes());
    m.extend_from_slice(&q.qclass.to_be_bytes());
    for a in answers {
        m.extend_from_slice(&[0xC0, 0x0C]);
        match a {
            IpAddr::V4(v4) => {
                m.extend_from_slice(&TYPE_A.to_be_bytes());
                m.extend_from_slice(&1u16.to_be_bytes());
                m.extend_from_slice(&30u32.to_be_bytes());
                m.extend_from_slice(&4u16.to_be_bytes());
                m.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                m.extend_from_slice(&TYPE_AAAA.to_be_bytes());
                m.extend_from_slice(&1u16.to_be_bytes());
                m.extend_from_slice(&30u32.to_be_bytes());
                m.extend_from_slice(&16u16.to_be_bytes());
                m.extend_from_slice(&v6.octets());
            }
        }
    }
    m
}

/// Parsed reply: rcode and the A/AAAA addresses in the answer section.
#[derive(Clone, Debug)]
pub struct Reply {
    pub rcode: u8,
    pub question: String,
    pub addrs: Vec<IpAddr>,
    pub answer_names: Vec<String>,
}

pub fn parse_reply(msg: &[u8]) -> Result<Reply> {
    let (_, q) = parse_question(msg)?;
    let rcode = msg[3] & 0x0F;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let (_, mut p) = read_name(msg, 12)?;
    p += 4;
    let mut addrs = Vec::new();
    let mut answer_names = Vec::new();
    for _ in 0..an {
        let (n, np) = read_name(msg, p)?;
        let rr = msg.get(np..np + 10).context("short rr")?;
        let t = u16::from_be_bytes([rr[0], rr[1]]);
        let len = u16::from_be_bytes([rr[8], rr[9]]) as usize;
        let data = msg.get(np + 10..np + 10 + len).context("short rdata")?;
        match (t, len) {
            (TYPE_A, 4) => addrs.push(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
            (TYPE_AAAA, 16) => addrs.push(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
            _ => {}
        }
        answer_names.push(n);
        p = np + 10 + len;
    }
    Ok(Reply {
        rcode,
        question: q.name,
        addrs,
        answer_names,
    })
}

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

fn fqdn(n: &str) -> String {
    let n = n.trim().to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
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

/// One logged question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedQuery {
    pub unix_ms: u128,
    pub proto: String,
    pub qtype: String,
    /// Lower-case, with trailing dot.
    pub name: String,
    pub verdict: String,
}

/// A query log file written by a server; `mark()`/`since()` scope reads to a test step.
#[derive(Clone, Debug)]
pub struct QueryLog {
    pub path: PathBuf,
}

impl QueryLog {
    pub fn new(path: impl AsRef<Path>) -> Self {
        QueryLog {
            path: path.as_ref().to_path_buf(),
        }
    }
    fn parse(text: &str) -> Vec<LoggedQuery> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6).then(|| LoggedQuery {
                    unix_ms: f[0].parse().unwrap_or(0),
                    proto: f[1].into(),
                    qtype: f[3].into(),
                    name: f[4].into(),
                    verdict: f[5].into(),
                })
            })
            .collect()
    }
    pub fn all(&self) -> Vec<LoggedQuery> {
        self.since(0)
    }
    /// Current end of the log, for `since`.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
    /// Queries logged after `mark`.
    pub fn since(&self, mark: u64) -> Vec<LoggedQuery> {
        let s = std::fs::read(&self.path).unwrap_or_default();
        Self::parse(&String::from_utf8_lossy(
            s.get(mark as usize..).unwrap_or(&[]),
        ))
    }
    /// Names (deduplicated, in order) ending with `suffix` (dot-insensitive).
    pub fn names_ending_with(&self, mark: u64, suffix: &str) -> Vec<String> {
        let suf = fqdn(suffix);
        let mut out: Vec<String> = Vec::new();
        for q in self.since(mark) {
            if q.name.ends_with(&suf) && !out.contains(&q.name) {
                out.push(q.name);
            }
        }
        out
    }
}
