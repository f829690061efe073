//! The rendered stanzas on a real CoreDNS: docs/design.md §3 cases 1 to 5 for both
//! actions, with and without forwardTo, on the binaries the e2e harness
//! builds (`~/.cache/dnspolicy-e2e/coredns/v<version>/coredns`, or
//! `$DNSPOLICY_COREDNS_DIR/v<version>/coredns`). A version whose binary is
//! missing fails the test (`just deps` builds it); nothing is faked.
//!
//! CoreDNS listens on 127.0.x.1:5300. `kubernetes` is replaced by `file`
//! serving cluster.local (authoritative, NXDOMAIN for unknown names, as
//! `kubernetes` is), so no apiserver is needed. Two stand-in resolvers (tests/kit)
//! stand for the node's upstream (127.0.x.2) and the forwardTo resolver
//! (127.0.x.3); each logs every name that reaches it.

mod kit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::corefile;
use dnspolicy_dns::corefile::ManagedText;
use dnspolicy_dns::policy::{MergedPolicies, SuffixRule};
use dnspolicy_dns::stanza::{RenderContext, RenderError, render};
use dnspolicy_dns::version::CoreDnsVersion;
use kit::{
    FRIGATE, PORT, Process, Seen, answering_resolver, e2e_policies, e2e_rule, query, scratch_dir,
    stock_coredns, write_cluster_zone,
};

// ---- one CoreDNS with the rendered stanzas ----

struct CoreDns {
    process: Process,
    server: SocketAddr,
    upstream: Seen,
    forward_to: Seen,
    dir: PathBuf,
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `base` with the stanzas `render` gives for `merged` on its `.` block,
/// edited exactly as the operator edits it; the Corefile and the stanzas.
fn edited(base: &str, merged: &MergedPolicies, version: CoreDnsVersion) -> (String, ManagedText) {
    let parsed = corefile::parse(base).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let text = render(merged, &ctx).unwrap();
    (corefile::render(base, &text).unwrap(), text)
}

fn start(bin: &Path, net: u8, rules: Vec<SuffixRule>, version: CoreDnsVersion) -> CoreDns {
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = scratch_dir("stanza", net);
    let db = write_cluster_zone(&dir);
    let merged = e2e_policies(rules);
    // kubeadm's `.` block, with `file` for `kubernetes` and loopback addresses.
    let base = format!(
        ".:{PORT} {{\n    bind {bind}\n    errors\n    file {db} cluster.local\n    forward . {up}:{PORT}\n    cache 30\n    loop\n    loadbalance\n}}\n",
        bind = ip(1),
        db = db.display(),
        up = ip(2),
    );
    let (corefile, text) = edited(&base, &merged, version);
    assert_eq!(corefile::strip(&corefile).unwrap(), base);
    if version.has_view() {
        // Nothing is added to the `.` block: other names pay nothing.
        assert_eq!(text.dot_block, "");
    }
    eprintln!("--- Corefile for CoreDNS {version}:\n{corefile}");
    let upstream = answering_resolver(&format!("{}:{PORT}", ip(2)), 2);
    let forward_to = answering_resolver(&format!("{}:{PORT}", ip(3)), 3);
    let server: SocketAddr = format!("{}:{PORT}", ip(1)).parse().unwrap();
    let mut process = Process::start(bin, &dir, "coredns", &corefile);
    process.wait_serving(server, &format!("{FRIGATE}."));
    CoreDns {
        process,
        server,
        upstream,
        forward_to,
        dir,
    }
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
        let reply = query(dns.server, &c.name, c.qtype, Duration::from_secs(3));
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
        e2e_rule(
            "eu-west-1.compute.internal",
            SuffixAction::NXDomain,
            1,
            &fwd,
        ),
        e2e_rule("lab.example", SuffixAction::NXDomain, 3, &[]),
        e2e_rule("openstacklocal", SuffixAction::NXDomain, 1, &[]),
        e2e_rule("reddog.microsoft.com", SuffixAction::Rewrite, 1, &[]),
        e2e_rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            if tail_forward { &fwd } else { &[] },
        ),
    ]
}

#[test]
fn current_coredns_keeps_cases_1_to_5() {
    let bin = stock_coredns("1.14.2");
    let net = 77;
    let mut all = rules(net, true);
    // Rewrite, forwardTo and 3 host labels: the view's `&& !(...)` expression.
    all.push(e2e_rule(
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
    let bin = stock_coredns("1.8.4");
    let net = 78;
    let version = CoreDnsVersion::new(1, 8, 4);
    let merged = e2e_policies(rules(net, true));
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
    let bin = stock_coredns("1.8.4");
    let version = CoreDnsVersion::new(1, 8, 4);
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = scratch_dir("servfail", net);
    let base = format!(
        ".:{PORT} {{\n    bind {bind}\n    errors\n    template ANY ANY ready.test {{\n        rcode NOERROR\n    }}\n    forward . {up}:{PORT} {{\n        max_fails 0\n    }}\n{cache}    loop\n}}\n",
        bind = ip(1),
        up = ip(9),
        cache = if cache { "    cache 30\n" } else { "" },
    );
    let merged = e2e_policies(vec![e2e_rule(
        "tailb45a71.ts.net",
        SuffixAction::Rewrite,
        1,
        &[],
    )]);
    let (corefile, _) = edited(&base, &merged, version);
    let server: SocketAddr = format!("{}:{PORT}", ip(1)).parse().unwrap();
    let mut process = Process::start(&bin, &dir, "coredns", &corefile);
    process.wait_serving(server, "ready.test.");
    let name = "api.github.com.tailb45a71.ts.net.";
    let reply = query(server, name, 1, Duration::from_secs(15));
    drop(process);
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
