//! The kit the real-CoreDNS tests share: the CoreDNS builds of the e2e
//! harness, CoreDNS processes, a DNS client, and stand-in resolvers that log
//! every name reaching them. Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::policy::{MergedPolicies, SuffixRule};

/// Every CoreDNS in these tests listens on this port of its own address.
pub const PORT: u16 = 5300;
/// An in-cluster name the cluster zone answers (10.96.0.50).
pub const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";

/// A CoreDNS the e2e harness built, `v<version>/coredns` below `$<env>` or
/// `~/.cache/dnspolicy-e2e/<build>`; missing, the test fails and says how to
/// build it (it is never skipped).
pub fn built_coredns(build: &str, env: &str, version: &str) -> PathBuf {
    let base = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/dnspolicy-e2e").join(build))
        })
        .unwrap_or_else(|| panic!("HOME or {env}"));
    let path = base.join(format!("v{version}")).join("coredns");
    assert!(
        path.exists(),
        "{} is missing: run `bash e2e/scripts/build-deps.sh {build}` (or `just deps`) to build CoreDNS {version}",
        path.display()
    );
    path
}

/// The stock CoreDNS (`go install github.com/coredns/coredns`) of `version`.
pub fn stock_coredns(version: &str) -> PathBuf {
    built_coredns("coredns", "DNSPOLICY_COREDNS_DIR", version)
}

/// A fresh directory for one test's files, named by `what` and its network.
pub fn scratch_dir(what: &str, net: u8) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnspolicy-{what}-{net}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the cluster zone CoreDNS's `file` plugin serves in place of
/// `kubernetes` (authoritative, NXDOMAIN for unknown names, [`FRIGATE`] at
/// 10.96.0.50) into `dir`; its path.
pub fn write_cluster_zone(dir: &Path) -> PathBuf {
    let db = dir.join("cluster.local.db");
    std::fs::write(
        &db,
        "$ORIGIN cluster.local.\n\
         @ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ 30 IN NS ns.dns.cluster.local.\n\
         ns.dns 30 IN A 10.96.0.10\n\
         frigate.video-management-system.svc 5 IN A 10.96.0.50\n",
    )
    .unwrap();
    db
}

/// A rule of the policy `e2e`; `forward_to` must parse.
pub fn e2e_rule(
    suffix: &str,
    action: SuffixAction,
    host_labels: u8,
    forward_to: &[String],
) -> SuffixRule {
    SuffixRule::new("e2e", suffix, action, host_labels, forward_to).unwrap()
}

/// `rules` (sorted by suffix) as the policy `e2e` alone merges them in cluster.local.
pub fn e2e_policies(rules: Vec<SuffixRule>) -> MergedPolicies {
    MergedPolicies::of_one_policy("cluster.local", "e2e", rules)
}

// ---- CoreDNS processes ----

/// A running CoreDNS, its output kept in `<name>.log`; killed when dropped.
pub struct Process {
    pub child: Child,
    corefile: PathBuf,
    log: PathBuf,
}

impl Process {
    /// Runs `bin` on `corefile`, written to `dir/<name>.Corefile`.
    pub fn start(bin: &Path, dir: &Path, name: &str, corefile: &str) -> Process {
        Self::start_with_args(bin, dir, name, corefile, &[])
    }

    /// `start` with more command-line arguments (`-dns.port 5353`).
    pub fn start_with_args(
        bin: &Path,
        dir: &Path,
        name: &str,
        corefile: &str,
        args: &[String],
    ) -> Process {
        let path = dir.join(format!("{name}.Corefile"));
        write_atomically(&path, corefile);
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("-conf")
            .arg(&path)
            .args(args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Process {
            child,
            corefile: path,
            log,
        }
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until `probe` answers through this process; how long that took.
    pub fn wait_serving(&mut self, server: SocketAddr, probe: &str) -> Duration {
        let started = Instant::now();
        while query(server, probe, 1, Duration::from_millis(500)).is_none() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("CoreDNS exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no answer from {server} for {probe}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// Replaces the Corefile as kubelet swaps a ConfigMap volume, and waits
    /// until the `reload` plugin has loaded it.
    pub fn reload(&mut self, corefile: &str) -> Duration {
        let runs = |log: &str| log.matches("Running configuration SHA512").count();
        let before = runs(&self.log());
        let started = Instant::now();
        write_atomically(&self.corefile, corefile);
        loop {
            let log = self.log();
            assert!(
                !log.contains("reload failed"),
                "CoreDNS refused the new Corefile:\n{log}\n--- Corefile:\n{corefile}"
            );
            if runs(&log) > before {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the reload plugin did not load the new Corefile within 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---- DNS wire format, just enough for A, AAAA and CNAME ----

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// The name at `off` (compression followed), with a trailing dot; the offset
/// after it.
fn read_name(msg: &[u8], mut off: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    loop {
        let len = msg[off] as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(off + 2);
            off = ((len & 0x3f) << 8) | msg[off + 1] as usize;
            continue;
        }
        off += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(&msg[off..off + len]).into_owned());
        off += len;
    }
    (labels.join(".") + ".", end.unwrap_or(off))
}

fn rr(name: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&60u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

// ---- the client ----

#[derive(Debug)]
pub struct Reply {
    pub rcode: &'static str,
    pub question: String,
    /// `name A address` or `name CNAME target`.
    pub answers: Vec<String>,
    pub took: Duration,
}

/// One query over UDP; `None` when no reply came within `timeout`.
pub fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Option<Reply> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&encode_name(name));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let started = Instant::now();
    socket.send_to(&q, server).unwrap();
    let mut buf = [0u8; 4096];
    let m = loop {
        let n = socket.recv(&mut buf).ok()?;
        if buf[..2] == id.to_be_bytes() {
            break &buf[..n];
        }
    };
    let took = started.elapsed();
    let rcode = match m[3] & 0x0f {
        0 => "NOERROR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "OTHER",
    };
    let (question, mut off) = read_name(m, 12);
    off += 4;
    let mut answers = Vec::new();
    for _ in 0..u16::from_be_bytes([m[6], m[7]]) {
        let (owner, o) = read_name(m, off);
        let rtype = u16::from_be_bytes([m[o], m[o + 1]]);
        let len = u16::from_be_bytes([m[o + 8], m[o + 9]]) as usize;
        let d = o + 10;
        answers.push(match rtype {
            1 => format!("{owner} A {}.{}.{}.{}", m[d], m[d + 1], m[d + 2], m[d + 3]),
            5 => format!("{owner} CNAME {}", read_name(m, d).0),
            t => format!("{owner} TYPE{t}"),
        });
        off = d + len;
    }
    Some(Reply {
        rcode,
        question,
        answers,
        took,
    })
}

// ---- stand-in resolvers ----

/// Every name (as `name type`) that reached a stand-in resolver.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// A resolver that logs every query and never answers (an unreachable
/// upstream).
pub fn silent_resolver(addr: &str) -> Seen {
    serve(addr, None)
}

/// A resolver that answers every A query with 198.51.100.<octet>, TXT with
/// `answered by <octet>`, MX with `10 mail.<name>`; `nx.*` is NXDOMAIN,
/// `www.cname.test` a CNAME to `edge.cdn.test`.
pub fn answering_resolver(addr: &str, octet: u8) -> Seen {
    serve(addr, Some(octet))
}

/// Over UDP and TCP: CoreDNS forwards a query with the transport it came in
/// on, and the node-local cache sends the cluster's names with `force_tcp`.
fn serve(addr: &str, octet: Option<u8>) -> Seen {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let udp = UdpSocket::bind(addr).unwrap();
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            if let Some(reply) = respond(&buf[..n], octet, &log) {
                let _ = udp.send_to(&reply, peer);
            }
        }
    });
    let tcp = TcpListener::bind(addr).unwrap();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in tcp.incoming() {
            let Ok(mut stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut len = [0u8; 2];
                while stream.read_exact(&mut len).is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut q).is_err() {
                        return;
                    }
                    if let Some(reply) = respond(&q, octet, &log) {
                        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        let _ = stream.write_all(&framed);
                    }
                }
            });
        }
    });
    seen
}

/// Logs the question (not the `loop` plugin's HINFO probe); the reply, when
/// this resolver answers at all.
fn respond(q: &[u8], octet: Option<u8>, log: &Seen) -> Option<Vec<u8>> {
    let (name, off) = read_name(q, 12);
    let qtype = u16::from_be_bytes([q[off], q[off + 1]]);
    if qtype == 13 {
        return None;
    }
    log.lock().unwrap().push(format!("{name} {qtype}"));
    let octet = octet?;
    let mut answers = Vec::new();
    let mut rcode = 0u16;
    if name.starts_with("nx.") {
        rcode = 3;
    } else if name == "www.cname.test." && qtype == 1 {
        answers.push(rr(&[0xc0, 12], 5, &encode_name("edge.cdn.test.")));
        answers.push(rr(
            &encode_name("edge.cdn.test."),
            1,
            &[198, 51, 100, octet],
        ));
    } else if qtype == 1 {
        answers.push(rr(&[0xc0, 12], 1, &[198, 51, 100, octet]));
    } else if qtype == 16 {
        let text = format!("answered by {octet}");
        let mut rdata = vec![text.len() as u8];
        rdata.extend_from_slice(text.as_bytes());
        answers.push(rr(&[0xc0, 12], 16, &rdata));
    } else if qtype == 15 {
        // An MX target under the asked name: what a Rewrite client reads back.
        let mut rdata = 10u16.to_be_bytes().to_vec();
        rdata.extend_from_slice(&encode_name(&format!("mail.{name}")));
        answers.push(rr(&[0xc0, 12], 15, &rdata));
    }
    // A query with EDNS DO gets what a validating resolver gives: AD set, DO
    // echoed in an OPT record.
    let opt = off + 4;
    let dnssec_ok = u16::from_be_bytes([q[10], q[11]]) > 0
        && q.len() >= opt + 11
        && q[opt] == 0
        && q[opt + 1..opt + 3] == [0, 41]
        && q[opt + 7] & 0x80 != 0;
    let ad = if dnssec_ok { 0x0020 } else { 0 };
    let flags = 0x8000 | (u16::from_be_bytes([q[2], q[3]]) & 0x0100) | 0x0080 | ad | rcode;
    let mut reply = q[..2].to_vec();
    for v in [flags, 1, answers.len() as u16, 0, u16::from(dnssec_ok)] {
        reply.extend_from_slice(&v.to_be_bytes());
    }
    reply.extend_from_slice(&q[12..off + 4]);
    answers.iter().for_each(|a| reply.extend_from_slice(a));
    if dnssec_ok {
        reply.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
    Some(reply)
}

// ---- a fuller client: any type, UDP or TCP, EDNS with DO, a chosen source ----

/// One question as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub name: String,
    pub qtype: u16,
    pub tcp: bool,
    /// An OPT record with the DO bit (EDNS, 1232-byte buffer).
    pub dnssec_ok: bool,
    /// The client's address (port chosen by the kernel).
    pub source: std::net::IpAddr,
}

impl Ask {
    pub fn new(name: &str, qtype: u16) -> Self {
        Ask {
            name: name.into(),
            qtype,
            tcp: false,
            dnssec_ok: false,
            source: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

/// A reply as a client reads it: every answer record rendered
/// `owner TYPE rdata` (names absolute, lower-case), TTLs left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: &'static str,
    /// The question section's name, as the server wrote it.
    pub question: String,
    pub answers: Vec<String>,
    /// The AD (authentic data) header bit.
    pub authentic_data: bool,
    /// An OPT record came back, and whether its DO bit was set.
    pub opt_do: Option<bool>,
}

/// One query; `None` when no reply came within `timeout`.
pub fn ask(server: SocketAddr, q: &Ask, timeout: Duration) -> Option<Answer> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0x4000);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut msg = id.to_be_bytes().to_vec();
    let additional: u16 = q.dnssec_ok.into();
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0]);
    msg.extend_from_slice(&additional.to_be_bytes());
    msg.extend_from_slice(&encode_name(&q.name));
    msg.extend_from_slice(&q.qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    if q.dnssec_ok {
        // Root owner, OPT, 1232-byte payload, extended rcode 0, version 0, DO.
        msg.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
    let reply = if q.tcp {
        // std connects from an address the kernel picks: 127.0.0.1 on loopback.
        assert!(
            q.source == std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            "TCP queries come from 127.0.0.1, not {}",
            q.source
        );
        let mut stream = std::net::TcpStream::connect_timeout(&server, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        stream.write_all(&framed).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).ok()?;
        buf
    } else {
        let socket = UdpSocket::bind(SocketAddr::new(q.source, 0)).unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        socket.send_to(&msg, server).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).ok()?;
            if buf[..2] == id.to_be_bytes() {
                break buf[..n].to_vec();
            }
        }
    };
    Some(parse_answer(&reply))
}

fn parse_answer(m: &[u8]) -> Answer {
    let rcode = match m[3] & 0x0f {
        0 => "NOERROR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "OTHER",
    };
    let count = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let (question, mut off) = read_name(m, 12);
    off += 4;
    let mut answers = Vec::new();
    let mut opt_do = None;
    for section in 0..3 {
        for _ in 0..count(6 + 2 * section) {
            let (owner, o) = read_name(m, off);
            let owner = owner.to_ascii_lowercase();
            let rtype = count(o);
            let len = count(o + 8) as usize;
            let d = o + 10;
            off = d + len;
            if rtype == 41 {
                opt_do = Some(m[o + 6] & 0x80 != 0);
                continue;
            }
            if section != 0 {
                continue;
            }
            let name_at = |at: usize| read_name(m, at).0.to_ascii_lowercase();
            answers.push(match rtype {
                1 => format!("{owner} A {}.{}.{}.{}", m[d], m[d + 1], m[d + 2], m[d + 3]),
                28 => format!("{owner} AAAA {:02x?}", &m[d..d + 16]),
                5 => format!("{owner} CNAME {}", name_at(d)),
                12 => format!("{owner} PTR {}", name_at(d)),
                15 => format!("{owner} MX {} {}", count(d), name_at(d + 2)),
                33 => format!(
                    "{owner} SRV {} {} {} {}",
                    count(d),
                    count(d + 2),
                    count(d + 4),
                    name_at(d + 6)
                ),
                16 => format!(
                    "{owner} TXT {:?}",
                    String::from_utf8_lossy(&m[d + 1..d + 1 + m[d] as usize])
                ),
                t => format!("{owner} TYPE{t}"),
            });
        }
    }
    answers.sort();
    Answer {
        rcode,
        question,
        answers,
        authentic_data: m[3] & 0x20 != 0,
        opt_do,
    }
}
