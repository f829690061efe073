//! Issue 10, "Done when": `explain` agrees with real CoreDNS on the matrix.
//! Every cell of the real-CoreDNS matrix (dns/tests/coredns_matrix.rs, the
//! layouts and policy of dns/tests/kit/matrix.rs) that `plan::desired` does
//! not refuse and that exists on its version: the edited Corefile is served
//! by real CoreDNS and by explain's serving model, and for each query the
//! model can express the two must agree on
//! - the rcode (NODATA for NOERROR without answers),
//! - the A addresses and CNAME targets answered (the model's: the zone's
//!   address for an in-cluster name, 198.51.100.<host> of the stand-in
//!   resolver its forward hop reaches),
//! - whether the reply's question is the name asked,
//! - which stand-in resolver saw which name (the model's forward hop vs the
//!   stand-ins' logs; none when the model answers inside CoreDNS).
//!
//! The model reads the edited Corefile with the `kubernetes` plugin (told
//! which in-cluster names exist); CoreDNS runs it with `file` zones in its
//! place, as the matrix does. Disagreements not in `KNOWN_DISAGREEMENTS`
//! fail the test, and so does an entry there that no longer disagrees.
//!
//! Addresses: per version 127.0.N.0/24, N = 131..134 (stand-in resolvers
//! 127.0.N.2-4:5300), CoreDNS on 127.0.0.1 / 127.0.N.1, ports 5500 + 20 *
//! version + layout: none shared with the matrix, so both can run at once.

#[path = "../../dns/tests/kit/mod.rs"]
mod kit;
#[path = "../../dns/tests/kit/matrix.rs"]
mod matrix;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use dnspolicy_dns::corefile;
use dnspolicy_dns::plan::{ClusterDns, desired};
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_explain::serving::{Client, Outcome, QType, Reply, ServeContext, serve};
use kit::{Answer, Ask, FRIGATE, Process, Seen, answering_resolver, ask};
use matrix::{
    Cell, FORWARD_TO, LAYOUTS, Layout, NXDOMAIN, REWRITE, VERSIONS, every_cell, policy, runnable,
    write_zones,
};

/// (version, layout name, query) where the model is known to disagree with
/// real CoreDNS; empty means it agrees everywhere it was asked.
const KNOWN_DISAGREEMENTS: &[(&str, &str, &str)] = &[];

/// The names the `file` zones standing for `kubernetes` hold, and the A
/// address of each that has one.
const IN_CLUSTER: [(&str, Option<&str>); 3] = [
    (FRIGATE, Some("10.96.0.50")),
    (
        "_http._tcp.frigate.video-management-system.svc.cluster.local",
        None,
    ),
    ("50.0.96.10.in-addr.arpa", None),
];

struct Query {
    what: &'static str,
    ask: Ask,
}

fn queries(layout: Layout, cell: &Cell) -> Vec<Query> {
    let q = |what, name: String, qtype| Query {
        what,
        ask: Ask::new(&name, qtype),
    };
    let f = FRIGATE;
    let mut qs = vec![
        q("in-cluster Service", f.into(), 1),
        q(
            "in-cluster Service + Rewrite suffix",
            format!("{f}.{REWRITE}"),
            1,
        ),
        q(
            "in-cluster Service + Rewrite suffix, mixed case",
            "FriGate.Video-Management-System.SVC.Cluster.Local.TailB45A71.TS.net".into(),
            1,
        ),
        q(
            "missing in-cluster name + Rewrite suffix",
            format!("nosuch.default.svc.cluster.local.{REWRITE}"),
            1,
        ),
        q(
            "missing in-cluster name",
            "nosuch.default.svc.cluster.local".into(),
            1,
        ),
        q(
            "in-cluster SRV + Rewrite suffix",
            format!("_http._tcp.{f}.{REWRITE}"),
            33,
        ),
        q(
            "in-cluster PTR + Rewrite suffix",
            format!("50.0.96.10.in-addr.arpa.{REWRITE}"),
            12,
        ),
        q("real host (Rewrite)", format!("myhost.{REWRITE}"), 1),
        q("real host (NXDomain)", format!("myhost.{NXDOMAIN}"), 1),
        q(
            "real host (NXDomain+forwardTo)",
            format!("ip-10-0-0-1.{FORWARD_TO}"),
            1,
        ),
        q("artifact (NXDomain)", format!("{f}.{NXDOMAIN}"), 1),
        q(
            "artifact (NXDomain+forwardTo)",
            format!("{f}.{FORWARD_TO}"),
            1,
        ),
        q(
            "outside artifact + Rewrite suffix",
            format!("www.github.com.{REWRITE}"),
            1,
        ),
        q("outside name", "api.github.com".into(), 1),
        q("outside TXT", "txt.example.org".into(), 16),
        q("outside MX", "example.com".into(), 15),
        q("outside NXDOMAIN", "nx.example.org".into(), 1),
        q("outside AAAA", "v6.example.org".into(), 28),
        q("in-cluster AAAA", f.into(), 28),
        q(
            "in-cluster AAAA + Rewrite suffix",
            format!("{f}.{REWRITE}"),
            28,
        ),
        Query {
            what: "real host (Rewrite) over TCP",
            ask: Ask {
                tcp: true,
                ..Ask::new(&format!("tcphost.{REWRITE}"), 1)
            },
        },
        Query {
            what: "outside artifact + NXDomain suffix over TCP",
            ask: Ask {
                tcp: true,
                ..Ask::new(&format!("api.github.com.{NXDOMAIN}"), 1)
            },
        },
    ];
    match layout {
        Layout::StubDomain | Layout::StubInDot => qs.extend([
            q("stub domain name", "db.corp.example".into(), 1),
            q(
                "stub domain name + Rewrite suffix",
                format!("db2.corp.example.{REWRITE}"),
                1,
            ),
        ]),
        Layout::UserRewrite => qs.extend([
            q("user-rewritten name", "host.old.example".into(), 1),
            q(
                "user-rewritten name + Rewrite suffix",
                format!("host2.old.example.{REWRITE}"),
                1,
            ),
        ]),
        Layout::Acl => {
            let from = |a: Ask| Ask {
                source: cell.blocked_client(),
                ..a
            };
            qs.extend([
                Query {
                    what: "blocked client, in-cluster Service",
                    ask: from(Ask::new(f, 1)),
                },
                Query {
                    what: "blocked client, Rewrite suffix",
                    ask: from(Ask::new(&format!("{f}.{REWRITE}"), 1)),
                },
            ]);
        }
        _ => {}
    }
    qs
}

/// What one query got, in terms both sides can state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    rcode: String,
    /// A addresses and CNAME targets, sorted.
    data: Vec<String>,
    question_is_asked: bool,
    /// (resolver host octet, "name type") of every query a stand-in saw.
    resolvers: BTreeSet<(u8, String)>,
}

/// `None`: no reply within the client's timeout.
fn real_verdict(reply: Option<&Answer>, asked: &str, seen: [Vec<String>; 3]) -> Verdict {
    let rcode = match reply {
        None => "TIMEOUT".to_string(),
        Some(a) if a.rcode == "NOERROR" && a.answers.is_empty() => "NODATA".to_string(),
        Some(a) => a.rcode.to_string(),
    };
    let data = reply
        .iter()
        .flat_map(|a| &a.answers)
        .filter_map(|r| {
            let mut parts = r.split(' ');
            let _owner = parts.next();
            match parts.next() {
                Some("A") => Some(format!("A {}", parts.next()?)),
                Some("CNAME") => Some(format!("CNAME {}", parts.next()?)),
                _ => None,
            }
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let resolvers = seen
        .iter()
        .zip(2u8..)
        .flat_map(|(names, host)| names.iter().map(move |n| (host, n.to_ascii_lowercase())))
        .collect();
    Verdict {
        rcode,
        data,
        question_is_asked: reply.is_none_or(|a| a.question.eq_ignore_ascii_case(&absolute(asked))),
        resolvers,
    }
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// What a stand-in resolver (kit::answering_resolver) answers.
fn stand_in(name: &str, qtype: QType) -> Outcome {
    match qtype {
        _ if name.starts_with("nx.") => Outcome::NxDomain,
        QType::A | QType::Txt | QType::Mx => Outcome::Answer,
        _ => Outcome::NoData,
    }
}

fn model_verdict(
    parsed: &corefile::Corefile,
    version: CoreDnsVersion,
    dns_port: Option<u16>,
    cell: &Cell,
    q: &Ask,
) -> (Verdict, Vec<String>) {
    let in_cluster = |n: &str| IN_CLUSTER.iter().any(|(c, _)| absolute(c) == n);
    let qtype = QType::Other(q.qtype);
    let qtype = match q.qtype {
        1 => QType::A,
        12 => QType::Ptr,
        28 => QType::Aaaa,
        15 => QType::Mx,
        16 => QType::Txt,
        33 => QType::Srv,
        _ => qtype,
    };
    let ctx = ServeContext {
        port: Some(cell.port),
        dns_port,
        client: Client {
            ip: q.source,
            search: &[],
        },
        upstream: &stand_in,
        ..ServeContext::new(version, &in_cluster)
    };
    let served = serve(parsed, &q.name, qtype, &ctx);
    let mut resolvers = BTreeSet::new();
    let mut data = Vec::new();
    let outcome = match &served.reply {
        Reply::Local(o) => {
            if *o == Outcome::Answer && qtype == QType::A {
                let address = IN_CLUSTER
                    .iter()
                    .find(|(c, _)| absolute(c) == served.resolved_name)
                    .and_then(|(_, a)| *a);
                data.extend(address.map(|a| format!("A {a}")));
            }
            *o
        }
        Reply::Upstream { targets, name } => {
            let target = targets.first().map(String::as_str).unwrap_or_default();
            let host = target
                .split(':')
                .next()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .and_then(|ip| match ip {
                    IpAddr::V4(v4) if v4.octets()[2] == cell.net => Some(v4.octets()[3]),
                    _ => None,
                })
                .unwrap_or(0);
            resolvers.insert((host, format!("{} {}", name.to_ascii_lowercase(), q.qtype)));
            let o = stand_in(name, qtype);
            if o == Outcome::Answer && qtype == QType::A {
                data.push(format!("A 198.51.100.{host}"));
            }
            o
        }
    };
    let rcode = match outcome {
        Outcome::Answer => "NOERROR",
        Outcome::NoData => "NODATA",
        Outcome::NxDomain => "NXDOMAIN",
        Outcome::ServFail => "SERVFAIL",
        Outcome::Refused => "REFUSED",
        Outcome::Timeout => "TIMEOUT",
    };
    let verdict = Verdict {
        rcode: rcode.into(),
        data,
        question_is_asked: served.question_matches,
        resolvers,
    };
    (verdict, served.steps)
}

/// The stand-in resolvers of one version's network.
struct Resolvers([Seen; 3]);

impl Resolvers {
    fn clear(&self) {
        self.0.iter().for_each(|s| s.lock().unwrap().clear());
    }
    /// (upstream, forwardTo, stub) logs, after a moment for late arrivals.
    fn seen(&self) -> [Vec<String>; 3] {
        std::thread::sleep(Duration::from_millis(20));
        std::array::from_fn(|i| self.0[i].lock().unwrap().clone())
    }
}

/// One cell's comparisons.
struct CellResult {
    compared: usize,
    disagreements: Vec<((String, String, String), String)>,
}

fn start(
    bin: &Path,
    dir: &Path,
    name: &str,
    corefile: &str,
    dns_port: Option<u16>,
    server: SocketAddr,
) -> Process {
    let args: Vec<String> = dns_port
        .map(|p| vec!["-dns.port".into(), p.to_string()])
        .unwrap_or_default();
    let mut process = Process::start_with_args(bin, dir, name, corefile, &args);
    let started = Instant::now();
    let probe = Ask::new("probe.example", 1);
    while ask(server, &probe, Duration::from_millis(300)).is_none() {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("CoreDNS {name} exited ({status}): {}", process.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "CoreDNS {name} did not answer on {server}: {}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

fn run_cell(
    bin: &Path,
    version: CoreDnsVersion,
    layout: Layout,
    cell: &Cell,
    resolvers: &Resolvers,
    dir: &Path,
) -> Option<CellResult> {
    // `None`: the layout cannot exist on this version, or the plan refuses it.
    if layout.absent_on(version).is_some() {
        return None;
    }
    let (base, dns_port) = layout.corefile(cell);
    let cluster = ClusterDns {
        service_ips: vec![],
        dns_port,
    };
    let edited = desired(&base, &policy(cell), Ok(version), &cluster)
        .ok()?
        .corefile;
    let parsed = corefile::parse(&edited).expect("the plan's Corefile parses");
    let (db, reverse) = write_zones(dir);
    let server = layout.server(cell);
    let name = format!("{version}-{layout:?}");
    let run = start(
        bin,
        dir,
        &name,
        &runnable(&edited, &db, &reverse),
        dns_port,
        server,
    );
    let mut result = CellResult {
        compared: 0,
        disagreements: Vec::new(),
    };
    for q in queries(layout, cell) {
        resolvers.clear();
        let reply = ask(server, &q.ask, Duration::from_secs(3));
        let seen = resolvers.seen();
        let real = real_verdict(reply.as_ref(), &q.ask.name, seen);
        let (model, steps) = model_verdict(&parsed, version, dns_port, cell, &q.ask);
        result.compared += 1;
        if model != real {
            result.disagreements.push((
                (version.to_string(), layout.name().to_string(), q.what.to_string()),
                format!(
                    "CoreDNS {version}, {}, {} ({} type {} from {}):\n  model: {model:?}\n  real:  {real:?}\n  model steps: {steps:#?}\n--- edited Corefile:\n{edited}",
                    layout.name(),
                    q.what,
                    q.ask.name,
                    q.ask.qtype,
                    q.ask.source
                ),
            ));
        }
    }
    drop(run);
    Some(result)
}

#[test]
fn explain_agrees_with_real_coredns_on_every_matrix_cell_the_plan_writes() {
    let rows: Vec<Vec<Option<CellResult>>> = every_cell(
        "agreement",
        131,
        5500,
        |net| {
            let ip = |h: u8| format!("127.0.{net}.{h}:5300");
            Resolvers([
                answering_resolver(&ip(2), 2),
                answering_resolver(&ip(3), 3),
                answering_resolver(&ip(4), 4),
            ])
        },
        run_cell,
    );
    let cells: Vec<&CellResult> = rows.iter().flatten().flatten().collect();
    let compared: usize = cells.iter().map(|c| c.compared).sum();
    let disagreements: Vec<_> = cells.iter().flat_map(|c| &c.disagreements).collect();
    let found: BTreeSet<(String, String, String)> =
        disagreements.iter().map(|(k, _)| k.clone()).collect();
    let known: BTreeSet<(String, String, String)> = KNOWN_DISAGREEMENTS
        .iter()
        .map(|(v, l, q)| (v.to_string(), l.to_string(), q.to_string()))
        .collect();
    eprintln!(
        "compared {compared} queries in {} cells ({} refused or n/a); known disagreements: {known:?}",
        cells.len(),
        VERSIONS.len() * LAYOUTS.len() - cells.len()
    );
    assert!(compared > 0, "no matrix cell was compared");
    let new: Vec<&String> = disagreements
        .iter()
        .filter(|(k, _)| !known.contains(k))
        .map(|(_, why)| why)
        .collect();
    let fixed: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty() && fixed.is_empty(),
        "model and real CoreDNS disagree ({} new):\n\n{}\n\nknown disagreements that now agree (remove them from KNOWN_DISAGREEMENTS): {fixed:?}",
        new.len(),
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
