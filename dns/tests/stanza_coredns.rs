//! The rendered stanzas on a real CoreDNS: DESIGN 3 cases 1 to 5 for both
//! actions, with and without forwardTo, on the binaries the e2e harness
//! builds (`~/.cache/dnspolicy-e2e/coredns/v<version>/coredns`, or
//! `$DNSPOLICY_COREDNS_DIR/v<version>/coredns`). A version whose binary is
//! missing fails the test (`just deps` builds it); nothing is faked.
//!
//! CoreDNS listens on 127.0.x.1:5300. `kubernetes` is replaced by `file`
//! serving cluster.local (authoritative, NXDOMAIN for unknown names, as
//! `kubernetes` is), so no apiserver is needed. Two responders written here
//! stand for the node's upstream (127.0.x.2) and the forwardTo resolver
//! (127.0.x.3); each logs every name that reaches it.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::corefile;
use dnspolicy_dns::policy::{MergedPolicies, SuffixRule, parse_forward_target};
use dnspolicy_dns::stanza::{RenderContext, RenderError, render};
use dnspolicy_dns::version::CoreDnsVersion;

const PORT: u16 = 5300;
const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";

/// The real CoreDNS the e2e harness built; a missing binary fails the test
/// (`just deps` builds it), it is never skipped.
fn binary(version: &str) -> PathBuf {
    let dir = std::env::var_os("DNSPOLICY_COREDNS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dnspolicy-e2e/coredns"))
        })
        .expect("HOME or DNSPOLICY_COREDNS_DIR");
    let path = dir.join(format!("v{version}")).join("coredns");
    assert!(
        path.exists(),
        "{} is missing: run `just deps` to build CoreDNS {version}",
        path.display()
    );
    path
}

fn rule(suffix: &str, action: SuffixAction, host_labels: u8, forward_to: &[String]) -> SuffixRule {
    SuffixRule {
        suffix: suffix.into(),
        action,
        host_labels,
        forward_to: forward_to
            .iter()
            .map(|t| parse_forward_target(t).unwrap())
            .collect(),
        policy: "e2e".into(),
    }
}

// ---- a DNS responder and client, just enough for A/AAAA/CNAME ----

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

/// Answers every A query with 198.51.100.<octet>; `nx.*` is NXDOMAIN;
/// `www.cname.test` is a CNAME to `edge.cdn.test`. Logs `name type`.
fn responder(addr: &str, octet: u8) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let socket = UdpSocket::bind(addr).unwrap();
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            let (name, off) = read_name(q, 12);
            let qtype = u16::from_be_bytes([q[off], q[off + 1]]);
            if qtype == 13 {
                continue; // the loop plugin's probe
            }
            seen.lock().unwrap().push(format!("{name} {qtype}"));
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
            }
            let flags = 0x8000 | (u16::from_be_bytes([q[2], q[3]]) & 0x0100) | 0x0080 | rcode;
            let mut reply = q[..2].to_vec();
            for v in [flags, 1, answers.len() as u16, 0, 0] {
                reply.extend_from_slice(&v.to_be_bytes());
            }
            reply.extend_from_slice(&q[12..off + 4]);
            answers.iter().for_each(|a| reply.extend_from_slice(a));
            let _ = socket.send_to(&reply, peer);
        }
    });
    log
}

#[derive(Debug)]
struct Reply {
    rcode: &'static str,
    question: String,
    /// `name TYPE data`, data an IPv4 address or a CNAME target.
    answers: Vec<String>,
}

fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<Reply> {
    query_within(server, name, qtype, Duration::from_secs(3))
}

fn query_within(server: SocketAddr, name: &str, qtype: u16, wait: Duration) -> Option<Reply> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&encode_name(name));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    socket.send_to(&q, server).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    let m = &buf[..n];
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
        let rdata = o + 10;
        answers.push(match rtype {
            1 => format!(
                "{owner} A {}.{}.{}.{}",
                m[rdata],
                m[rdata + 1],
                m[rdata + 2],
                m[rdata + 3]
            ),
            5 => format!("{owner} CNAME {}", read_name(m, rdata).0),
            t => format!("{owner} TYPE{t}"),
        });
        off = rdata + len;
    }
    Some(Reply {
        rcode,
        question,
        answers,
    })
}

// ---- one CoreDNS with the rendered stanzas ----

struct CoreDns {
    child: Child,
    server: SocketAddr,
    upstream: Arc<Mutex<Vec<String>>>,
    forward_to: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bin: &PathBuf, net: u8, rules: Vec<SuffixRule>, version: CoreDnsVersion) -> CoreDns {
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = std::env::temp_dir().join(format!("dnspolicy-stanza-{net}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cluster.local.db"),
        "$ORIGIN cluster.local.\n\
         @ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ 30 IN NS ns.dns.cluster.local.\n\
         ns.dns 30 IN A 10.96.0.10\n\
         frigate.video-management-system.svc 5 IN A 10.96.0.50\n",
    )
    .unwrap();
    let merged = MergedPolicies {
        cluster_domain: "cluster.local".into(),
        rules,
        applied: vec!["e2e".into()],
        conflicts: vec![],
    };
    // kubeadm's `.` block, with `file` for `kubernetes` and loopback addresses,
    // edited exactly as the operator edits it.
    let base = format!(
        ".:{PORT} {{\n    bind {bind}\n    errors\n    file {db} cluster.local\n    forward . {up}:{PORT}\n    cache 30\n    loop\n    loadbalance\n}}\n",
        bind = ip(1),
        db = dir.join("cluster.local.db").display(),
        up = ip(2),
    );
    let parsed = corefile::parse(&base).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let text = render(&merged, &ctx).unwrap();
    let corefile = corefile::render(&base, &text).unwrap();
    assert_eq!(corefile::strip(&corefile).unwrap(), base);
    if version.has_view() {
        // Nothing is added to the `.` block: other names pay nothing.
        assert_eq!(text.dot_block, "");
    }
    std::fs::write(dir.join("Corefile"), &corefile).unwrap();
    eprintln!("--- Corefile for CoreDNS {version}:\n{corefile}");
    let upstream = responder(&format!("{}:{PORT}", ip(2)), 2);
    let forward_to = responder(&format!("{}:{PORT}", ip(3)), 3);
    let server: SocketAddr = format!("{}:{PORT}", ip(1)).parse().unwrap();
    let child = spawn(bin, &dir, server, &format!("{FRIGATE}."), &corefile);
    CoreDns {
        child,
        server,
        upstream,
        forward_to,
        dir,
    }
}

/// Runs CoreDNS on `dir/Corefile` and waits until `probe` gets a reply.
fn spawn(
    bin: &PathBuf,
    dir: &std::path::Path,
    server: SocketAddr,
    probe: &str,
    corefile: &str,
) -> Child {
    let child = Command::new(bin)
        .arg("-conf")
        .arg(dir.join("Corefile"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while query(server, probe, 1).is_none() {
        assert!(
            Instant::now() < deadline,
            "CoreDNS did not start with:\n{corefile}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// What one query must get: rcode, answers, and the names (with type) that
/// reach the upstream and the forwardTo resolver.
struct Case {
    name: String,
    qtype: u16,
    rcode: &'static str,
    answers: Vec<String>,
    upstream: Vec<String>,
    forward_to: Vec<String>,
}

fn case(
    name: &str,
    qtype: u16,
    rcode: &'static str,
    answers: &[&str],
    upstream: &[&str],
    forward_to: &[&str],
) -> Case {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    Case {
        name: name.into(),
        qtype,
        rcode,
        answers: s(answers),
        upstream: s(upstream),
        forward_to: s(forward_to),
    }
}

fn check(dns: &CoreDns, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        dns.upstream.lock().unwrap().clear();
        dns.forward_to.lock().unwrap().clear();
        let reply = query(dns.server, &c.name, c.qtype);
        std::thread::sleep(Duration::from_millis(20));
        let up = dns.upstream.lock().unwrap().clone();
        let fw = dns.forward_to.lock().unwrap().clone();
        let ok = reply.as_ref().is_some_and(|r| {
            r.rcode == c.rcode
                && r.question
                    .eq_ignore_ascii_case(&format!("{}.", c.name.trim_end_matches('.')))
                && r.answers == c.answers
        }) && up == c.upstream
            && fw == c.forward_to;
        eprintln!(
            "{} {} -> {reply:?} upstream={up:?} forwardTo={fw:?}",
            c.name, c.qtype
        );
        if !ok {
            failures.push(c.name.clone());
        }
    }
    assert!(failures.is_empty(), "failed: {failures:?}");
}

fn ts(name: &str) -> String {
    format!("{name}.tailb45a71.ts.net")
}

/// Cases 1, 2, 3 and 5 for the four kinds of rule, shared by both versions.
fn common_cases(tail_forward: bool) -> Vec<Case> {
    let f = format!("{FRIGATE}.");
    let mut cases = vec![
        // Case 5: names without a suffix are untouched.
        case(
            FRIGATE,
            1,
            "NOERROR",
            &[&format!("{f} A 10.96.0.50")],
            &[],
            &[],
        ),
        case("nosuch.svc.cluster.local", 1, "NXDOMAIN", &[], &[], &[]),
        case(
            "api.github.com",
            1,
            "NOERROR",
            &["api.github.com. A 198.51.100.2"],
            &["api.github.com. 1"],
            &[],
        ),
        // Rewrite without forwardTo (reddog.microsoft.com).
        case(
            &format!("{FRIGATE}.reddog.microsoft.com"),
            1,
            "NOERROR",
            &[&format!("{f}reddog.microsoft.com. A 10.96.0.50")],
            &[],
            &[],
        ),
        case(
            &format!("{FRIGATE}.reddog.microsoft.com"),
            28,
            "NOERROR",
            &[],
            &[],
            &[],
        ),
        case(
            "nosuch.default.svc.cluster.local.reddog.microsoft.com",
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "www.cname.test.reddog.microsoft.com",
            1,
            "NOERROR",
            &[
                "www.cname.test.reddog.microsoft.com. CNAME edge.cdn.test.",
                "edge.cdn.test. A 198.51.100.2",
            ],
            &["www.cname.test. 1"],
            &[],
        ),
        case(
            "nx.example.com.reddog.microsoft.com",
            1,
            "NXDOMAIN",
            &[],
            &["nx.example.com. 1"],
            &[],
        ),
        case(
            "myhost.reddog.microsoft.com",
            1,
            "NOERROR",
            &["myhost.reddog.microsoft.com. A 198.51.100.2"],
            &["myhost.reddog.microsoft.com. 1"],
            &[],
        ),
        // NXDomain without forwardTo (openstacklocal).
        case(
            &format!("{FRIGATE}.openstacklocal"),
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "api.github.com.openstacklocal",
            28,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "myhost.openstacklocal",
            1,
            "NOERROR",
            &["myhost.openstacklocal. A 198.51.100.2"],
            &["myhost.openstacklocal. 1"],
            &[],
        ),
        // NXDomain with forwardTo (eu-west-1.compute.internal).
        case(
            &format!("{FRIGATE}.eu-west-1.compute.internal"),
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "api.github.com.eu-west-1.compute.internal",
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "ip-10-0-0-1.eu-west-1.compute.internal",
            1,
            "NOERROR",
            &["ip-10-0-0-1.eu-west-1.compute.internal. A 198.51.100.3"],
            &[],
            &["ip-10-0-0-1.eu-west-1.compute.internal. 1"],
        ),
        // NXDomain with 3 host labels (lab.example): the cluster-domain regex.
        case(
            "nosuch.cluster.local.lab.example",
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case("a.b.c.d.lab.example", 1, "NXDOMAIN", &[], &[], &[]),
        case(
            "a.b.c.lab.example",
            1,
            "NOERROR",
            &["a.b.c.lab.example. A 198.51.100.2"],
            &["a.b.c.lab.example. 1"],
            &[],
        ),
        // Rewrite of the tailnet: cases 1 and 2 whatever forwardTo says.
        case(
            &ts(FRIGATE),
            1,
            "NOERROR",
            &[&format!("{f}tailb45a71.ts.net. A 10.96.0.50")],
            &[],
            &[],
        ),
        // (A name not asked before: from 1.10 the stripped name is answered by
        // the `.` block, whose cache may already hold it.)
        case(
            &ts("api.gitlab.com"),
            1,
            "NOERROR",
            &["api.gitlab.com.tailb45a71.ts.net. A 198.51.100.2"],
            &["api.gitlab.com. 1"],
            &[],
        ),
        case(
            &ts("api.github.com"),
            28,
            "NOERROR",
            &[],
            &["api.github.com. 28"],
            &[],
        ),
    ];
    // Case 3: the tailnet's real hosts.
    if tail_forward {
        cases.push(case(
            &ts("myhost"),
            1,
            "NOERROR",
            &["myhost.tailb45a71.ts.net. A 198.51.100.3"],
            &[],
            &["myhost.tailb45a71.ts.net. 1"],
        ));
        cases.push(case(
            "tailb45a71.ts.net",
            1,
            "NOERROR",
            &["tailb45a71.ts.net. A 198.51.100.3"],
            &[],
            &["tailb45a71.ts.net. 1"],
        ));
    } else {
        cases.push(case(
            &ts("myhost"),
            1,
            "NOERROR",
            &["myhost.tailb45a71.ts.net. A 198.51.100.2"],
            &["myhost.tailb45a71.ts.net. 1"],
            &[],
        ));
    }
    cases
}

fn rules(net: u8, tail_forward: bool) -> Vec<SuffixRule> {
    let fwd = vec![format!("127.0.{net}.3:{PORT}")];
    vec![
        rule(
            "eu-west-1.compute.internal",
            SuffixAction::NXDomain,
            1,
            &fwd,
        ),
        rule("lab.example", SuffixAction::NXDomain, 3, &[]),
        rule("openstacklocal", SuffixAction::NXDomain, 1, &[]),
        rule("reddog.microsoft.com", SuffixAction::Rewrite, 1, &[]),
        rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            if tail_forward { &fwd } else { &[] },
        ),
    ]
}

#[test]
fn current_coredns_keeps_cases_1_to_5() {
    let bin = binary("1.14.2");
    let net = 77;
    let mut all = rules(net, true);
    // Rewrite, forwardTo and 3 host labels: the view's `&& !(...)` expression.
    all.push(rule(
        "corp.example",
        SuffixAction::Rewrite,
        3,
        &[format!("127.0.{net}.3:{PORT}")],
    ));
    all.sort_by(|a, b| a.suffix.cmp(&b.suffix));
    let dns = start(&bin, net, all, CoreDnsVersion::new(1, 14, 2));
    let mut cases = common_cases(true);
    cases.extend([
        case(
            &format!("{FRIGATE}.corp.example"),
            1,
            "NOERROR",
            &[&format!("{FRIGATE}.corp.example. A 10.96.0.50")],
            &[],
            &[],
        ),
        case(
            "nosuch.cluster.local.corp.example",
            1,
            "NXDOMAIN",
            &[],
            &[],
            &[],
        ),
        case(
            "a.b.c.corp.example",
            1,
            "NOERROR",
            &["a.b.c.corp.example. A 198.51.100.3"],
            &[],
            &["a.b.c.corp.example. 1"],
        ),
        case(
            "a.b.c.d.corp.example",
            1,
            "NOERROR",
            &["a.b.c.d.corp.example. A 198.51.100.2"],
            &["a.b.c.d. 1"],
            &[],
        ),
    ]);
    check(&dns, &cases);
}

#[test]
fn coredns_1_8_4_keeps_cases_1_to_5_and_refuses_rewrite_with_forward_to() {
    let bin = binary("1.8.4");
    let net = 78;
    let version = CoreDnsVersion::new(1, 8, 4);
    let merged = MergedPolicies {
        cluster_domain: "cluster.local".into(),
        rules: rules(net, true),
        applied: vec!["e2e".into()],
        conflicts: vec![],
    };
    assert!(matches!(
        render(&merged, &RenderContext::new(version)),
        Err(RenderError::NeedsNewerCoreDns { .. })
    ));
    let dns = start(&bin, net, rules(net, false), version);
    check(&dns, &common_cases(false));
}

/// The reply to a search artifact whose upstream fails, on CoreDNS 1.8.4
/// with the `.` block's rewrite rule, with and without `cache` in the block:
/// what `plan::desired`'s warning says. The upstream is a loopback address
/// where nothing listens.
fn servfail_question_on_1_8_4(net: u8, cache: bool) -> (&'static str, String) {
    let bin = binary("1.8.4");
    let version = CoreDnsVersion::new(1, 8, 4);
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = std::env::temp_dir().join(format!("dnspolicy-servfail-{net}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = format!(
        ".:{PORT} {{\n    bind {bind}\n    errors\n    template ANY ANY ready.test {{\n        rcode NOERROR\n    }}\n    forward . {up}:{PORT} {{\n        max_fails 0\n    }}\n{cache}    loop\n}}\n",
        bind = ip(1),
        up = ip(9),
        cache = if cache { "    cache 30\n" } else { "" },
    );
    let merged = MergedPolicies {
        cluster_domain: "cluster.local".into(),
        rules: vec![rule("tailb45a71.ts.net", SuffixAction::Rewrite, 1, &[])],
        applied: vec!["e2e".into()],
        conflicts: vec![],
    };
    let parsed = corefile::parse(&base).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let text = render(&merged, &ctx).unwrap();
    let corefile = corefile::render(&base, &text).unwrap();
    std::fs::write(dir.join("Corefile"), &corefile).unwrap();
    let server: SocketAddr = format!("{}:{PORT}", ip(1)).parse().unwrap();
    let mut child = spawn(&bin, &dir, server, "ready.test.", &corefile);
    let name = "api.github.com.tailb45a71.ts.net.";
    let reply = query_within(server, name, 1, Duration::from_secs(15));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let reply = reply.expect("a reply");
    (reply.rcode, reply.question)
}

#[test]
fn coredns_1_8_4_servfail_keeps_the_question_only_with_cache() {
    let (rcode, question) = servfail_question_on_1_8_4(81, true);
    assert_eq!(rcode, "SERVFAIL");
    assert_eq!(question, "api.github.com.tailb45a71.ts.net.", "with cache");
    let (rcode, question) = servfail_question_on_1_8_4(82, false);
    assert_eq!(rcode, "SERVFAIL");
    assert_eq!(question, "api.github.com.", "without cache");
}
