//! Upstream load and answer under a black-holed resolver (issue 10, item 9
//! and "What to build" 3): how many queries reach each stand-in per client
//! query, and what rcode the client gets, for a real host under each suffix
//! action, on the CoreDNS builds of the e2e harness (1.8.4 and 1.14.2).
//!
//! What stands in, on 127.0.N.0/24 (N = 96 for 1.8.4, 97 for 1.14.2):
//! - CoreDNS on 127.0.N.1:5300, kubeadm's `.` block with `file` for
//!   `kubernetes`; its `forward` has `max_fails 0` (no health check of the
//!   node upstream), so every `. NS` that reaches the upstream is a health
//!   check of a forward dnspolicy wrote, passed on by the `.` block.
//! - The node upstream 127.0.N.2: silent (black-holed), for (a).
//! - A silent forwardTo target 127.0.N.3, for (b), and an answering one
//!   127.0.N.4, for (a) under suffixes with forwardTo.
//!
//! One client query per name (as a stub sends it once; its own retry after
//! its timeout is out of scope), all names at once, then the stand-ins' logs
//! are read once every forward loop has ended (CoreDNS's `forward` tries
//! until 5 s have passed, 2 s per try; a Rewrite artifact's inner lookup
//! starts at most 5 s in, so 13 s covers two nested loops). Durations are
//! printed, never asserted.

mod kit;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::corefile;
use dnspolicy_dns::policy::SuffixRule;
use dnspolicy_dns::stanza::{RenderContext, render};
use dnspolicy_dns::version::CoreDnsVersion;
use kit::{
    FRIGATE, PORT, Process, Seen, answering_resolver, e2e_policies, e2e_rule, query, scratch_dir,
    silent_resolver, stock_coredns, write_cluster_zone,
};

/// Long enough for the client to see CoreDNS's SERVFAIL (at most ~7 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the queries to reading the logs: two nested forward loops, or a
/// query sent once a target is marked down (about 6.5 s in; its one try
/// arrives at once).
const SETTLE: Duration = Duration::from_secs(13);

/// One client query and what it must cause.
struct Lookup {
    /// What the case is, for the printed table.
    what: &'static str,
    name: String,
    rcode: &'static str,
    /// The name (as it arrives) the stand-ins are counted for.
    sent_as: String,
    /// Asked again once the block's `forward` has marked its (silent) target
    /// down, with this many tries expected for that second query.
    when_down: Option<usize>,
    upstream: usize,
    dead_target: usize,
    live_target: usize,
}

#[allow(clippy::too_many_arguments)]
fn lookup(
    what: &'static str,
    name: &str,
    rcode: &'static str,
    sent_as: &str,
    upstream: usize,
    dead_target: usize,
    live_target: usize,
) -> Lookup {
    Lookup {
        what,
        name: format!("{name}."),
        rcode,
        sent_as: format!("{sent_as}. 1"),
        when_down: None,
        upstream,
        dead_target,
        live_target,
    }
}

fn rules(net: u8, version: CoreDnsVersion) -> Vec<SuffixRule> {
    let dead = vec![format!("127.0.{net}.3:{PORT}")];
    let live = vec![format!("127.0.{net}.4:{PORT}")];
    let mut rules = vec![
        e2e_rule("nx.example", SuffixAction::NXDomain, 1, &[]),
        e2e_rule("nxd.example", SuffixAction::NXDomain, 1, &dead),
        e2e_rule("nxf.example", SuffixAction::NXDomain, 1, &live),
        e2e_rule(
            "nxs.example",
            SuffixAction::NXDomain,
            1,
            &[format!("127.0.{net}.5:{PORT}")],
        ),
        e2e_rule("rw.example", SuffixAction::Rewrite, 1, &[]),
    ];
    if version.has_view() {
        rules.push(e2e_rule("rwd.example", SuffixAction::Rewrite, 1, &dead));
        rules.push(e2e_rule("rwf.example", SuffixAction::Rewrite, 1, &live));
    }
    rules
}

/// What each stand-in logged; the printed table; failures.
fn measure(version: CoreDnsVersion, net: u8, lookups: &[Lookup]) -> Vec<String> {
    let bin = stock_coredns(&version.to_string());
    let ip = |host: u8| format!("127.0.{net}.{host}");
    let dir = scratch_dir("upstream-load", net);
    let db = write_cluster_zone(&dir);
    let base = format!(
        ".:{PORT} {{\n    bind {bind}\n    errors\n    file {db} cluster.local\n    forward . {up}:{PORT} {{\n        max_fails 0\n    }}\n    cache 30\n    loop\n    loadbalance\n}}\n",
        bind = ip(1),
        db = db.display(),
        up = ip(2),
    );
    let parsed = corefile::parse(&base).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let text = render(&e2e_policies(rules(net, version)), &ctx).unwrap();
    let edited = corefile::render(&base, &text).unwrap();
    eprintln!("--- Corefile for CoreDNS {version}:\n{edited}");

    let upstream = silent_resolver(&format!("{}:{PORT}", ip(2)));
    let dead = silent_resolver(&format!("{}:{PORT}", ip(3)));
    let live = answering_resolver(&format!("{}:{PORT}", ip(4)), 4);
    // Silent too, asked only by `nxs.example`'s forward: its `. NS` health
    // checks show when that forward has marked it down.
    let sole = silent_resolver(&format!("{}:{PORT}", ip(5)));
    let server: SocketAddr = format!("{}:{PORT}", ip(1)).parse().unwrap();
    let mut process = Process::start(&bin, &dir, "coredns", &edited);
    process.wait_serving(server, &format!("{FRIGATE}."));
    for seen in [&upstream, &dead, &live, &sole] {
        seen.lock().unwrap().clear();
    }

    let started = Instant::now();
    let replies: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = lookups
            .iter()
            .map(|l| {
                s.spawn(|| {
                    let mut replies = vec![query(server, &l.name, 1, CLIENT_TIMEOUT)];
                    if l.when_down.is_some() {
                        marked_down(&sole);
                        replies.push(query(server, &l.name, 1, CLIENT_TIMEOUT));
                    }
                    replies
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::thread::sleep(SETTLE.saturating_sub(started.elapsed()));
    let count =
        |seen: &Seen, what: &str| seen.lock().unwrap().iter().filter(|q| *q == what).count();

    let mut failures = Vec::new();
    eprintln!("CoreDNS {version}: case | rcode after | upstream / dead target / live target");
    for (l, replies) in lookups.iter().zip(&replies) {
        let mut rcodes = Vec::new();
        let mut took = Vec::new();
        for reply in replies {
            let (rcode, t) = reply
                .as_ref()
                .map_or(("none", CLIENT_TIMEOUT), |r| (r.rcode, r.took));
            rcodes.push(rcode);
            took.push(format!("{:.2} s", t.as_secs_f64()));
            // A SERVFAIL too must carry the question as asked, or stubs drop it.
            if let Some(r) = reply.as_ref().filter(|r| r.question != l.name) {
                failures.push(format!("{}: question {:?}", l.name, r.question));
            }
        }
        let got = (
            count(&upstream, &l.sent_as),
            count(&dead, &l.sent_as) + count(&sole, &l.sent_as),
            count(&live, &l.sent_as),
        );
        let want = (
            l.upstream,
            l.dead_target + l.when_down.unwrap_or(0),
            l.live_target,
        );
        eprintln!(
            "  {} {} | {} after {} | {} / {} / {}",
            l.what,
            l.name,
            rcodes.join(", "),
            took.join(", "),
            got.0,
            got.1,
            got.2
        );
        if rcodes.iter().any(|r| *r != l.rcode) || got != want {
            failures.push(format!(
                "{} ({}): {rcodes:?} {got:?}, want {} {want:?}",
                l.what, l.name, l.rcode
            ));
        }
    }
    let probes = |seen: &Seen| count(seen, ". 2");
    eprintln!(
        "  `. NS` health checks in {:.0} s: upstream {}, dead targets {} and {}, live target {}",
        started.elapsed().as_secs_f64(),
        probes(&upstream),
        probes(&dead),
        probes(&sole),
        probes(&live)
    );
    if version >= CoreDnsVersion::VIEW_PLUGIN && probes(&upstream) != 0 {
        failures.push(format!(
            "the self-forward's health check reached the upstream {} times",
            probes(&upstream)
        ));
    }
    drop(process);
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// Until `forward` has marked the silent resolver `seen` down: it checks
/// health with `. NS` (1 s timeout, every 0.5 s while failing) and calls an
/// upstream down after more than `max_fails` (2) failed checks, so a fourth
/// check means the third has failed.
fn marked_down(seen: &Seen) {
    let started = Instant::now();
    while seen.lock().unwrap().iter().filter(|q| *q == ". 2").count() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no fourth health check within 20 s: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cases both versions share: the node upstream black-holed (a) for
/// Rewrite and NXDomain, a forwardTo target black-holed (b) and answering.
/// `tries` is how often `forward` asks the black-holed resolver for one
/// query to a block dnspolicy wrote.
fn shared(tries: usize) -> Vec<Lookup> {
    vec![
        // What the `.` block does without any policy: the user's forward.
        lookup(
            "no suffix (a)",
            "plain.test",
            "SERVFAIL",
            "plain.test",
            3,
            0,
            0,
        ),
        lookup(
            "in-cluster artifact",
            &format!("{FRIGATE}.rw.example"),
            "NOERROR",
            &format!("{FRIGATE}.rw.example"),
            0,
            0,
            0,
        ),
        lookup(
            "Rewrite real host (a)",
            "myhost.rw.example",
            "SERVFAIL",
            "myhost.rw.example",
            3,
            0,
            0,
        ),
        lookup(
            "NXDomain real host (a)",
            "myhost.nx.example",
            "SERVFAIL",
            "myhost.nx.example",
            3,
            0,
            0,
        ),
        lookup(
            "NXDomain+forwardTo real host (a)",
            "myhost.nxf.example",
            "NOERROR",
            "myhost.nxf.example",
            0,
            0,
            1,
        ),
        lookup(
            "NXDomain+forwardTo real host (b)",
            "myhost.nxd.example",
            "SERVFAIL",
            "myhost.nxd.example",
            0,
            tries,
            0,
        ),
        // Asked again once the target is marked down: `cache` never holds a
        // SERVFAIL that `forward` did not receive, so the query goes out again.
        Lookup {
            when_down: Some(1),
            ..lookup(
                "NXDomain+forwardTo real host (b), then again when marked down",
                "myhost.nxs.example",
                "SERVFAIL",
                "myhost.nxs.example",
                0,
                tries,
                0,
            )
        },
        lookup(
            "NXDomain artifact (a)",
            "api.github.com.nx.example",
            "NXDOMAIN",
            "api.github.com.nx.example",
            0,
            0,
            0,
        ),
    ]
}

#[test]
fn coredns_1_8_4_asks_a_black_holed_resolver_three_times_per_query() {
    let version = CoreDnsVersion::new(1, 8, 4);
    let mut lookups = shared(3);
    // The `.` block's rewrite hands the stripped name to the user's forward.
    lookups.push(lookup(
        "Rewrite artifact (a)",
        "api.github.com.rw.example",
        "SERVFAIL",
        "api.github.com",
        3,
        0,
        0,
    ));
    let failures = measure(version, 96, &lookups);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn coredns_1_14_2_asks_a_black_holed_resolver_once_per_query() {
    let version = CoreDnsVersion::new(1, 14, 2);
    let mut lookups = shared(1);
    lookups.extend([
        // The artifact block asks CoreDNS itself once: one inner lookup, so
        // the upstream sees what the stripped name alone would cause.
        lookup(
            "Rewrite artifact (a)",
            "api.github.com.rw.example",
            "SERVFAIL",
            "api.github.com",
            3,
            0,
            0,
        ),
        lookup(
            "Rewrite+forwardTo real host (a)",
            "myhost.rwf.example",
            "NOERROR",
            "myhost.rwf.example",
            0,
            0,
            1,
        ),
        lookup(
            "Rewrite+forwardTo real host (b)",
            "myhost.rwd.example",
            "SERVFAIL",
            "myhost.rwd.example",
            0,
            1,
            0,
        ),
    ]);
    let failures = measure(version, 97, &lookups);
    assert!(failures.is_empty(), "{failures:#?}");
}
