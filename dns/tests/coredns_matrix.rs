//! Issue 10 part 6: the real-CoreDNS matrix. Every Corefile layout of the
//! list below, on every CoreDNS version of `VERSIONS`, with one policy
//! (a Rewrite suffix, an NXDomain suffix, an NXDomain suffix with forwardTo),
//! is either refused by `plan::desired` with the reason the layout expects,
//! or runs on a real CoreDNS and answers every query as the unedited Corefile
//! answers the name without the suffix, with no suffixed search artifact
//! reaching any stand-in resolver. Anything else fails the test.
//!
//! The test writes the table of results as markdown and compares it with
//! `docs/coredns-matrix.md`; `DNSPOLICY_BLESS=1` rewrites the file.
//!
//! What stands in for the cluster, per version on 127.0.N.0/24 (N = 91..94):
//! - CoreDNS (the e2e harness's builds, `build-deps.sh coredns coredns-matrix`)
//!   on port 5400 + 20 * version + layout, its own for each cell: 127.0.0.1
//!   where the layout binds nothing (added to the run, see `loopback_only`)
//!   or binds `lo`, else 127.0.N.1.
//! - `kubernetes` needs an apiserver; like tests/stanza_coredns.rs the run
//!   replaces it with `file` zones standing for it (cluster.local and
//!   0.96.10.in-addr.arpa, authoritative, NXDOMAIN for unknown names) after
//!   `plan::desired` has read the Corefile with the `kubernetes` plugin in it.
//! - Stand-in resolvers that log every name: the node's upstream 127.0.N.2,
//!   the forwardTo resolver 127.0.N.3, a stub domain's resolver 127.0.N.4
//!   (all :5300, answering A with 198.51.100.<host>).
//! - `health`, `ready` and `prometheus` are left out of kubeadm's Corefile:
//!   their fixed ports belong to the e2e cluster.

mod kit;
#[path = "kit/matrix.rs"]
mod matrix;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use dnspolicy_crd::vocabulary::Reason;
use dnspolicy_dns::plan::{ClusterDns, desired};
use dnspolicy_dns::version::CoreDnsVersion;
use kit::{Answer, Ask, FRIGATE, Process, Seen, answering_resolver, ask};
use matrix::{
    Cell, FORWARD_TO, LAYOUTS, Layout, NXDOMAIN, REWRITE, SUFFIXES, VERSIONS, every_cell, policy,
    runnable, write_zones,
};

const DOC: &str = "docs/coredns-matrix.md";

// ---- queries ----

/// What one query must get on the edited Corefile.
#[derive(Clone, Debug)]
enum Expect {
    /// A search artifact under the Rewrite suffix: the unedited Corefile's
    /// reply to `clean` (owner names with the suffix read without it).
    AsClean(Ask),
    /// An artifact under an NXDomain suffix: NXDOMAIN, nothing upstream.
    NxDomain,
    /// Not an artifact: what the unedited Corefile answers, resolved where
    /// it resolved it (the same query reaches the same resolver).
    Unchanged,
    /// A real host of the forwardTo suffix: answered by the forwardTo
    /// resolver alone.
    ForwardTo,
}

struct Query {
    what: &'static str,
    ask: Ask,
    expect: Expect,
}

fn polluted(name: &str) -> String {
    format!("{name}.{REWRITE}")
}

fn queries(layout: Layout, cell: &Cell) -> Vec<Query> {
    let f = FRIGATE;
    let twin = |what, name: &str, qtype| Query {
        what,
        ask: Ask::new(&polluted(name), qtype),
        expect: Expect::AsClean(Ask::new(name, qtype)),
    };
    let mut qs = vec![
        twin("A", f, 1),
        twin("AAAA", f, 28),
        twin(
            "SRV",
            "_http._tcp.frigate.video-management-system.svc.cluster.local",
            33,
        ),
        twin("PTR", "50.0.96.10.in-addr.arpa", 12),
        twin("TXT (upstream)", "api.github.com", 16),
        twin("MX (upstream)", "example.com", 15),
        twin("MX target as read back", "mail.example.com", 1),
        twin("ExternalName CNAME", "ext.default.svc.cluster.local", 1),
        twin(
            "CNAME to a name below it",
            "in.default.svc.cluster.local",
            1,
        ),
    ];
    let mixed = "FriGate.Video-Management-System.SVC.Cluster.Local";
    qs.push(Query {
        what: "mixed case",
        ask: Ask::new(&format!("{mixed}.TailB45A71.TS.net"), 1),
        expect: Expect::AsClean(Ask::new(mixed, 1)),
    });
    let tcp = |a: Ask| Ask { tcp: true, ..a };
    let dnssec = |a: Ask| Ask {
        dnssec_ok: true,
        ..a
    };
    qs.push(Query {
        what: "TCP",
        ask: tcp(Ask::new(&polluted(f), 1)),
        expect: Expect::AsClean(tcp(Ask::new(f, 1))),
    });
    qs.push(Query {
        what: "EDNS DO",
        ask: dnssec(Ask::new(&polluted("docs.example.org"), 1)),
        expect: Expect::AsClean(dnssec(Ask::new("docs.example.org", 1))),
    });
    let plain = |what, name: &str, qtype, expect| Query {
        what,
        ask: Ask::new(name, qtype),
        expect,
    };
    qs.extend([
        plain(
            "real host (Rewrite suffix)",
            "myhost.tailb45a71.ts.net",
            1,
            Expect::Unchanged,
        ),
        plain(
            "NXDomain A",
            &format!("{f}.{NXDOMAIN}"),
            1,
            Expect::NxDomain,
        ),
        Query {
            what: "NXDomain AAAA over TCP",
            ask: tcp(Ask::new(&format!("api.github.com.{NXDOMAIN}"), 28)),
            expect: Expect::NxDomain,
        },
        plain(
            "real host (NXDomain suffix)",
            "myhost.openstacklocal",
            1,
            Expect::Unchanged,
        ),
        Query {
            what: "forwardTo suffix artifact, EDNS DO",
            ask: dnssec(Ask::new(&format!("{f}.{FORWARD_TO}"), 16)),
            expect: Expect::NxDomain,
        },
        plain(
            "real host (forwardTo suffix)",
            &format!("ip-10-0-0-1.{FORWARD_TO}"),
            1,
            Expect::ForwardTo,
        ),
        plain("in-cluster name", f, 1, Expect::Unchanged),
        plain(
            "unknown in-cluster name",
            "nosuch.default.svc.cluster.local",
            1,
            Expect::Unchanged,
        ),
        plain("outside name", "api.github.com", 1, Expect::Unchanged),
    ]);
    match layout {
        Layout::StubDomain | Layout::StubInDot => qs.extend([
            twin("stub domain name", "db.corp.example", 1),
            plain("stub domain name", "db.corp.example", 1, Expect::Unchanged),
        ]),
        Layout::UserRewrite => qs.extend([
            twin("user-rewritten name", "host.old.example", 1),
            plain(
                "user-rewritten name",
                "host.old.example",
                1,
                Expect::Unchanged,
            ),
        ]),
        Layout::Acl => {
            let from = |a: Ask| Ask {
                source: cell.blocked_client(),
                ..a
            };
            qs.push(Query {
                what: "blocked client",
                ask: from(Ask::new(&polluted(f), 1)),
                expect: Expect::AsClean(from(Ask::new(f, 1))),
            });
        }
        _ => {}
    }
    qs
}

// ---- one cell ----

/// The stand-in resolvers of one version's network.
struct Resolvers {
    upstream: Seen,
    forward_to: Seen,
    stub: Seen,
}

impl Resolvers {
    fn clear(&self) {
        for s in [&self.upstream, &self.forward_to, &self.stub] {
            s.lock().unwrap().clear();
        }
    }
    /// (upstream, forwardTo, stub) logs, after a moment for late arrivals.
    fn seen(&self) -> [Vec<String>; 3] {
        std::thread::sleep(Duration::from_millis(20));
        [&self.upstream, &self.forward_to, &self.stub].map(|s| s.lock().unwrap().clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused(Reason),
    NotApplicable(String),
    Failed(String),
}

fn ask_once(server: SocketAddr, q: &Ask) -> Result<Answer, String> {
    ask(server, q, Duration::from_secs(3)).ok_or_else(|| format!("no reply to {q:?}"))
}

/// The reply as read without the Rewrite suffix: CoreDNS's `answer auto`
/// gives it back to every name at or below the name asked upstream (`clean`),
/// owner or target (docs/design.md, "What a Rewrite client reads back").
fn unsuffixed(mut a: Answer, clean: &str) -> Answer {
    let tail = format!(".{REWRITE}.");
    let clean = format!("{}.", clean.trim_end_matches('.').to_ascii_lowercase());
    let strip = |token: &str| match token.strip_suffix(&tail) {
        Some(t) if format!("{t}.") == clean || format!("{t}.").ends_with(&format!(".{clean}")) => {
            format!("{t}.")
        }
        _ => token.to_string(),
    };
    a.answers = a
        .answers
        .iter()
        .map(|r| r.split(' ').map(strip).collect::<Vec<_>>().join(" "))
        .collect();
    a.answers.sort();
    a.question = String::new();
    a
}

fn comparable(mut a: Answer) -> Answer {
    a.question = String::new();
    a
}

fn suffixed_names(seen: &[Vec<String>; 3]) -> Vec<String> {
    seen.iter()
        .flatten()
        .filter(|n| {
            let name = n.split(' ').next().unwrap().to_ascii_lowercase();
            SUFFIXES.iter().any(|s| name.ends_with(&format!(".{s}.")))
        })
        .cloned()
        .collect()
}

/// CoreDNS on `corefile`, once it answers on `server`.
fn start(
    bin: &Path,
    dir: &Path,
    name: &str,
    corefile: &str,
    dns_port: Option<u16>,
    server: SocketAddr,
) -> Result<Process, String> {
    let args: Vec<String> = dns_port
        .map(|p| vec!["-dns.port".into(), p.to_string()])
        .unwrap_or_default();
    let mut process = Process::start_with_args(bin, dir, name, corefile, &args);
    let started = Instant::now();
    let probe = Ask::new(FRIGATE, 1);
    while ask(server, &probe, Duration::from_millis(300)).is_none() {
        if let Some(status) = process.child.try_wait().unwrap() {
            return Err(format!("CoreDNS exited ({status}): {}", process.log()));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "CoreDNS did not answer on {server}: {}",
                process.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(process)
}

fn run_cell(
    bin: &Path,
    version: CoreDnsVersion,
    layout: Layout,
    cell: &Cell,
    resolvers: &Resolvers,
    dir: &Path,
) -> Outcome {
    let (base, dns_port) = layout.corefile(cell);
    let (db, reverse) = write_zones(dir);
    let name = format!("{}-{:?}", version, layout);
    if let Some((why, says)) = layout.absent_on(version) {
        // Shown, not assumed: this CoreDNS refuses the Corefile.
        let mut p = Process::start(bin, dir, &name, &runnable(&base, &db, &reverse));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Outcome::Failed(format!("CoreDNS {version} kept running ({why})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = p.log();
        return if !status.success() && log.contains(says) {
            Outcome::NotApplicable(why.into())
        } else {
            Outcome::Failed(format!("CoreDNS {version} ({why}?): {status}: {log}"))
        };
    }
    let cluster = ClusterDns {
        service_ips: vec![],
        dns_port,
    };
    let edited = match desired(&base, &policy(cell), Ok(version), &cluster) {
        Err(refusal) => {
            return match layout.expected_refusal(version) {
                Some(reason) if reason == refusal.reason => Outcome::Refused(reason),
                _ => Outcome::Failed(format!(
                    "refused unexpectedly: {}: {}",
                    refusal.reason, refusal.message
                )),
            };
        }
        Ok(d) => d.corefile,
    };
    if let Some(reason) = layout.expected_refusal(version) {
        return Outcome::Failed(format!("not refused (expected {reason}):\n{edited}"));
    }
    let server = layout.server(cell);
    let queries = queries(layout, cell);

    // The unedited Corefile: what each name without the suffix gets.
    let mut baseline = Vec::new();
    {
        let run = start(
            bin,
            dir,
            &format!("{name}-base"),
            &runnable(&base, &db, &reverse),
            dns_port,
            server,
        );
        let run = match run {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("unedited Corefile: {e}")),
        };
        for q in &queries {
            let clean = match &q.expect {
                Expect::AsClean(clean) => clean,
                _ => &q.ask,
            };
            resolvers.clear();
            match ask_once(server, clean) {
                // The stand-in upstream validates: without AD here the EDNS DO
                // comparison would prove nothing about AD.
                Ok(a) if clean.dnssec_ok && !(a.authentic_data && a.opt_do == Some(true)) => {
                    return Outcome::Failed(format!("no AD or DO echo from upstream: {a:?}"));
                }
                Ok(a) => baseline.push((a, resolvers.seen())),
                Err(e) => return Outcome::Failed(format!("unedited Corefile: {e}")),
            }
        }
        drop(run);
    }

    // The edited Corefile, restarted on the same address.
    let run = match start(
        bin,
        dir,
        &format!("{name}-edited"),
        &runnable(&edited, &db, &reverse),
        dns_port,
        server,
    ) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("edited Corefile: {e}\n{edited}")),
    };
    let mut failures = Vec::new();
    for (q, (clean, clean_seen)) in queries.iter().zip(baseline) {
        resolvers.clear();
        let reply = match ask_once(server, &q.ask) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{}: {e}", q.what));
                continue;
            }
        };
        let seen = resolvers.seen();
        let leaked = suffixed_names(&seen);
        let ok = match &q.expect {
            Expect::AsClean(c) => {
                unsuffixed(reply.clone(), &c.name) == comparable(clean.clone()) && leaked.is_empty()
            }
            Expect::NxDomain => {
                reply.rcode == "NXDOMAIN"
                    && reply.answers.is_empty()
                    && seen.iter().all(Vec::is_empty)
            }
            // The same resolvers asked, or none (a cache answered); where the
            // unedited run's cache answered, any name but a suffixed one,
            // anywhere but the forwardTo resolver.
            Expect::Unchanged => {
                comparable(reply.clone()) == comparable(clean.clone())
                    && (seen == clean_seen
                        || seen.iter().all(Vec::is_empty)
                        || (clean_seen.iter().all(Vec::is_empty)
                            && seen[1].is_empty()
                            && leaked.is_empty()))
            }
            Expect::ForwardTo => {
                reply.rcode == "NOERROR"
                    && reply.answers.len() == 1
                    && reply.answers[0].ends_with(" A 198.51.100.3")
                    && seen[0].is_empty()
                    && seen[1] == [format!("{}. 1", q.ask.name)]
            }
        };
        if !ok {
            failures.push(format!(
                "{} {:?}: got {reply:?} (resolvers saw {seen:?}), unedited {clean:?} (saw {clean_seen:?})",
                q.what, q.ask.name
            ));
        }
    }
    drop(run);
    if failures.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed(format!(
            "{}\n--- edited Corefile:\n{edited}",
            failures.join("\n")
        ))
    }
}

// ---- the table ----

fn cell_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Refused(r) => format!("refused: {r}"),
        Outcome::NotApplicable(why) => format!("n/a: {why}"),
        Outcome::Failed(_) => "FAILED".into(),
    }
}

fn table(results: &[Vec<Outcome>]) -> String {
    let mut md = String::new();
    md.push_str("# The real-CoreDNS matrix\n\n");
    md.push_str("Generated by `dns/tests/coredns_matrix.rs`; do not edit. Regenerate with\n`DNSPOLICY_BLESS=1 cargo test -p dnspolicy-dns --test coredns_matrix`.\n\n");
    md.push_str("Each cell is one CoreDNS version (rows: Corefile layouts) running the layout\nedited by `plan::desired` for one policy: `tailb45a71.ts.net` Rewrite,\n`openstacklocal` NXDomain, `eu-west-1.compute.internal` NXDomain with forwardTo.\n\n");
    md.push_str("- `ok`: every query below answered as the unedited Corefile answers the name\n  without the suffix (rcode, records, AD bit, EDNS DO echo; TTLs aside; names\n  at or below that name carry the suffix, see docs/design.md \"What a Rewrite\n  client reads back\"), and no stand-in resolver (upstream, forwardTo, stub)\n  saw a suffixed search artifact.\n");
    md.push_str("- `refused: <Reason>`: `plan::desired` (the controller and `dnspolicy render`)\n  refused the layout with that condition reason; nothing is written.\n");
    md.push_str("- `n/a`: the layout cannot exist on that version (CoreDNS itself rejects the\n  Corefile at start-up, checked).\n\n");
    md.push_str("Real CoreDNS processes (the e2e harness's builds). The cluster's names need the\n`kubernetes` plugin, which needs an apiserver: as in `dns/tests/stanza_coredns.rs`,\nthe plan reads the Corefile with `kubernetes`, and the run serves `file` zones in\nits place (cluster.local and 0.96.10.in-addr.arpa: a Service, its SRV record, an\nExternalName CNAME, the Service IP's PTR). `health`, `ready` and `prometheus` are\nleft out (their ports belong to the e2e cluster). Clients and stand-in resolvers\nuse loopback addresses only; a block without `bind` is run with `bind 127.0.0.1`\n(the plan read it unbound; its self-forward goes to 127.0.0.1), on a port of its own.\n\n");
    md.push_str("| layout |");
    for v in VERSIONS {
        let _ = write!(md, " {v} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(VERSIONS.len()));
    md.push('\n');
    for (li, layout) in LAYOUTS.iter().enumerate() {
        let _ = write!(md, "| {} |", layout.name());
        for row in results {
            let _ = write!(md, " {} |", cell_text(&row[li]));
        }
        md.push('\n');
    }
    md.push_str("\n## Layouts\n\nEach is kubeadm's Corefile (kubernetes, forward with max_concurrent, cache 30,\nloop, reload, loadbalance) on its own port, with one change:\n\n");
    for layout in LAYOUTS {
        let _ = writeln!(md, "- {}: {}.", layout.name(), layout.change());
    }
    md.push_str("\n## Queries in every `ok` cell\n\n");
    let sample = Cell { net: 0, port: 0 };
    for q in queries(Layout::Kubeadm, &sample) {
        let how = match (&q.expect, q.ask.tcp, q.ask.dnssec_ok) {
            (_, true, _) => " over TCP",
            (_, _, true) => " with EDNS DO",
            _ => "",
        };
        let expect = match &q.expect {
            Expect::AsClean(c) => format!("as `{}` unedited", c.name),
            Expect::NxDomain => "NXDOMAIN, no resolver asked".into(),
            Expect::Unchanged => "as unedited, same resolver asked (or a cache answered)".into(),
            Expect::ForwardTo => "answered by the forwardTo resolver alone".into(),
        };
        let _ = writeln!(
            md,
            "- {}: `{}` type {}{how} — {expect}",
            q.what, q.ask.name, q.ask.qtype
        );
    }
    md.push_str("- plus, in their layouts: a stub domain's name with and without the\n  Rewrite suffix; the user-rewritten name with and without it; the same\n  query from the client the `acl` blocks (REFUSED both ways).\n");
    md
}

#[test]
fn every_layout_on_every_version_is_ok_or_refused_with_its_reason() {
    let results: Vec<Vec<Outcome>> = every_cell(
        "matrix",
        91,
        5400,
        |net| {
            let ip = |h: u8| format!("127.0.{net}.{h}:5300");
            Resolvers {
                upstream: answering_resolver(&ip(2), 2),
                forward_to: answering_resolver(&ip(3), 3),
                stub: answering_resolver(&ip(4), 4),
            }
        },
        run_cell,
    );
    let failures: Vec<String> = results
        .iter()
        .zip(VERSIONS)
        .flat_map(|(row, v)| {
            row.iter().zip(LAYOUTS).filter_map(move |(o, l)| match o {
                Outcome::Failed(why) => Some(format!("== CoreDNS {v}, {}:\n{why}", l.name())),
                _ => None,
            })
        })
        .collect();
    let text = table(&results);
    eprintln!("{text}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DOC);
    if std::env::var_os("DNSPOLICY_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{DOC} differs from the matrix this run produced; regenerate it with\n  DNSPOLICY_BLESS=1 cargo test -p dnspolicy-dns --test coredns_matrix"
    );
}
