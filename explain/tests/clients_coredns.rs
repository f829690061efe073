//! The serving model against real CoreDNS 1.8.4 and 1.14.2 where the client
//! matters: `acl` (a pod allowed, an outsider blocked, and the stripped name
//! coming back from CoreDNS itself after the Rewrite self-forward) and
//! `autopath` (the search walk inside CoreDNS, and what it answers with an
//! upstream that answers every name). Each query is asked of both, and the
//! rcode and the name answered must agree.
//!
//! The `kubernetes` plugin needs an API server, so the cluster zone is two
//! `template`s (the shape dnspolicy's own stanzas use), and autopath reads
//! its search path from a file (`autopath . FILE`), the pod's search list.

#[path = "../../dns/tests/kit/mod.rs"]
mod kit;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use dnspolicy_dns::corefile;
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_explain::serving::{Client, Outcome, QType, Reply, ServeContext, serve};
use kit::{FRIGATE, PORT};

const VERSIONS: [&str; 2] = ["1.8.4", "1.14.2"];
const SEARCH: &str =
    "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net";

/// The cluster zone: FRIGATE at 10.96.0.50, every other name NXDOMAIN.
const CLUSTER_ZONE: &str = "    template IN A cluster.local {
        match ^frigate[.]video-management-system[.]svc[.]cluster[.]local[.]$
        answer \"{{ .Name }} 5 IN A 10.96.0.50\"
        fallthrough
    }
    template ANY ANY cluster.local {
        rcode NXDOMAIN
    }
";

fn ip(net: u8, host: u8) -> String {
    format!("127.0.{net}.{host}")
}

/// The rcode real CoreDNS gives a query from `source`, and the target of a
/// CNAME in the answer (the name it resolved); `TIMEOUT` when silent.
fn real(source: &str, server: SocketAddr, name: &str) -> (String, Option<String>) {
    let socket = UdpSocket::bind((source, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut q = vec![0x4a, 0x21, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&q, server).unwrap();
    let mut buf = [0u8; 4096];
    let Ok(n) = socket.recv(&mut buf) else {
        return ("TIMEOUT".into(), None);
    };
    let m = &buf[..n];
    let rcode = match m[3] & 0x0f {
        0 if u16::from_be_bytes([m[6], m[7]]) == 0 => "NODATA",
        0 => "NOERROR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "OTHER",
    };
    // The first answer, after the question: a CNAME's target, or an A's owner.
    let cname = m.windows(4).position(|w| w == [0, 5, 0, 1]);
    let resolved = cname.map(|at| read_name(m, at + 10));
    (rcode.to_string(), resolved)
}

fn read_name(m: &[u8], mut off: usize) -> String {
    let mut labels = Vec::new();
    loop {
        let len = m[off] as usize;
        if len & 0xc0 == 0xc0 {
            off = ((len & 0x3f) << 8) | m[off + 1] as usize;
            continue;
        }
        if len == 0 {
            return labels.join(".") + ".";
        }
        labels.push(String::from_utf8_lossy(&m[off + 1..off + 1 + len]).into_owned());
        off += 1 + len;
    }
}

/// The model's rcode, and the name it resolved when that is not the name asked.
fn modelled(
    corefile: &str,
    name: &str,
    client: &str,
    version: &str,
    upstream: &dyn Fn(&str, QType) -> Outcome,
) -> (String, Option<String>, Vec<String>) {
    let parsed = corefile::parse(corefile).unwrap();
    let search: Vec<String> = SEARCH.split(' ').map(String::from).collect();
    let nobody = |_: &str| false;
    let ctx = ServeContext {
        client: Client {
            ip: client.parse::<IpAddr>().unwrap(),
            search: &search,
        },
        upstream,
        ..ServeContext::new(CoreDnsVersion::parse(version).unwrap(), &nobody)
    };
    let s = serve(&parsed, name, QType::A, &ctx);
    let outcome = match &s.reply {
        Reply::Local(o) => *o,
        Reply::Upstream { name, .. } => upstream(name, QType::A),
    };
    let rcode = match outcome {
        Outcome::Answer => "NOERROR",
        Outcome::NoData => "NODATA",
        Outcome::NxDomain => "NXDOMAIN",
        Outcome::ServFail => "SERVFAIL",
        Outcome::Refused => "REFUSED",
        Outcome::Timeout => "TIMEOUT",
    };
    let asked = format!("{}.", name.trim_end_matches('.'));
    let resolved = (s.resolved_name != asked).then_some(s.resolved_name);
    (rcode.to_string(), resolved, s.steps)
}

/// The stand-in upstream: every A query answered, `nx.*` NXDOMAIN.
fn answering(name: &str, _: QType) -> Outcome {
    if name.starts_with("nx.") {
        Outcome::NxDomain
    } else {
        Outcome::Answer
    }
}

fn agree(
    corefile: &str,
    server: SocketAddr,
    version: &str,
    cases: &[(&str, &str, &str)],
    upstream: &dyn Fn(&str, QType) -> Outcome,
    compare_resolved: bool,
) {
    for (source, name, want) in cases {
        let (rcode, resolved) = real(source, server, name);
        let (model, model_resolved, steps) = modelled(corefile, name, source, version, upstream);
        println!(
            "{version} {source} {name}: CoreDNS {rcode} {resolved:?}, model {model} {model_resolved:?}"
        );
        assert_eq!(
            rcode, *want,
            "CoreDNS {version}, {name} from {source}; model steps: {steps:#?}"
        );
        assert_eq!(
            model, rcode,
            "model and CoreDNS {version} disagree on {name} from {source}: {steps:#?}"
        );
        if compare_resolved {
            assert_eq!(
                model_resolved, resolved,
                "model and CoreDNS {version} resolve {name} to different names: {steps:#?}"
            );
        }
    }
}

#[test]
fn acl_agrees_with_coredns_for_pods_outsiders_and_the_self_forward() {
    for (i, version) in VERSIONS.iter().enumerate() {
        let net = 121 + i as u8;
        let dir = kit::scratch_dir("acl", net);
        let coredns = ip(net, 1);
        let pod = ip(net, 10);
        let outsider = ip(net, 20);
        let upstream = ip(net, 2);
        let _seen = kit::answering_resolver(&format!("{upstream}:{PORT}"), 7);
        let corefile = format!(
            ".:{PORT} {{
    bind {coredns}
    acl {{
        allow net {pod}/32
        block
    }}
{CLUSTER_ZONE}    forward . {upstream}:{PORT}
}}
tailb45a71.ts.net:{PORT} {{
    bind {coredns}
    rewrite stop name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {{1}}. answer auto
    forward . {coredns}:{PORT}
}}
"
        );
        let mut p = kit::Process::start(&kit::stock_coredns(version), &dir, "acl", &corefile);
        let server: SocketAddr = format!("{coredns}:{PORT}").parse().unwrap();
        // The kit's client asks from 127.0.0.1, which the acl blocks: wait
        // for the REFUSED that says CoreDNS serves.
        p.wait_serving(server, FRIGATE);
        let artifact = format!("{FRIGATE}.tailb45a71.ts.net");
        agree(
            &corefile,
            server,
            version,
            &[
                (pod.as_str(), FRIGATE, "NOERROR"),
                (pod.as_str(), "api.github.com", "NOERROR"),
                (outsider.as_str(), FRIGATE, "REFUSED"),
                // Issue 10 item 6: forwarded from CoreDNS to itself, the
                // stripped name comes from 127.0.0.1, which the acl blocks.
                (pod.as_str(), &artifact, "REFUSED"),
            ],
            &answering,
            false,
        );
        p.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn autopath_agrees_with_coredns_on_the_search_walk() {
    for (i, version) in VERSIONS.iter().enumerate() {
        let net = 123 + i as u8;
        let dir = kit::scratch_dir("autopath", net);
        let coredns = ip(net, 1);
        let upstream = ip(net, 2);
        let _seen = kit::answering_resolver(&format!("{upstream}:{PORT}"), 7);
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {coredns}\nsearch {SEARCH}\n")).unwrap();
        let corefile = format!(
            ".:{PORT} {{
    bind {coredns}
    autopath . {}
{CLUSTER_ZONE}    forward . {upstream}:{PORT}
}}
",
            resolv.display()
        );
        let mut p = kit::Process::start(&kit::stock_coredns(version), &dir, "autopath", &corefile);
        let server: SocketAddr = format!("{coredns}:{PORT}").parse().unwrap();
        p.wait_serving(server, FRIGATE);
        let source = "127.0.0.1";
        let first = format!("{FRIGATE}.workflow-engine.svc.cluster.local");
        agree(
            &corefile,
            server,
            version,
            &[
                // The service name on the first try: the walk reaches the
                // foreign suffix before the name itself, and the upstream
                // answers the artifact (issue 10 item 3).
                (source, &first, "NOERROR"),
                // A short name: found on the walk's second domain.
                (
                    source,
                    "frigate.video-management-system.workflow-engine.svc.cluster.local",
                    "NOERROR",
                ),
                // Nothing anywhere: the first reply goes back.
                (
                    source,
                    "nx.example.workflow-engine.svc.cluster.local",
                    "NXDOMAIN",
                ),
                // Not under the first search domain: no walk.
                (source, FRIGATE, "NOERROR"),
            ],
            &answering,
            true,
        );
        p.stop();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
