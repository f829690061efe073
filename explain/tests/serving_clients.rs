//! The serving model where the client matters: `acl`, `autopath`, which
//! forward targets are CoreDNS itself, and how long a chain of forwards to
//! itself may run. Real Corefiles, parsed. (The same on real CoreDNS:
//! clients_coredns.rs.)

use std::net::IpAddr;

use dnspolicy_dns::corefile;
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_explain::serving::{Client, Outcome, QType, Reply, ServeContext, Served, serve};

const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local.";
const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);
const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);

fn frigate(name: &str) -> bool {
    name == FRIGATE
}

fn search() -> Vec<String> {
    "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net"
        .split(' ')
        .map(String::from)
        .collect()
}

fn ask(corefile: &str, name: &str, ctx: &ServeContext<'_>) -> Served {
    serve(&corefile::parse(corefile).unwrap(), name, QType::A, ctx)
}

fn from(ip: &str, version: CoreDnsVersion) -> ServeContext<'static> {
    ServeContext {
        client: Client {
            ip: ip.parse().unwrap(),
            search: &[],
        },
        ..ServeContext::new(version, &frigate)
    }
}

const ACL: &str = "\
.:53 {
    errors
    acl {
        allow net 10.244.0.0/16
        block
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    loop
}
tailb45a71.ts.net:53 {
    rewrite stop name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto
    forward . 127.0.0.1:53
}
";

#[test]
fn acl_judges_the_pod_and_sees_coredns_itself_after_a_self_forward() {
    for version in [V1_8, V1_14] {
        let pod = ask(ACL, FRIGATE, &from("10.244.3.7", version));
        assert_eq!(pod.reply, Reply::Local(Outcome::Answer), "{:?}", pod.steps);
        assert!(pod.steps[0].contains("allows"), "{:?}", pod.steps);

        let outsider = ask(ACL, FRIGATE, &from("192.168.1.5", version));
        assert_eq!(outsider.reply, Reply::Local(Outcome::Refused));
        assert_eq!(outsider.plugin, "acl");

        // Issue 10 item 6: the stripped name comes back from 127.0.0.1.
        let artifact = format!("{FRIGATE}tailb45a71.ts.net.");
        let s = ask(ACL, &artifact, &from("10.244.3.7", version));
        assert_eq!(s.reply, Reply::Local(Outcome::Refused), "{:?}", s.steps);
        assert!(
            s.steps
                .iter()
                .any(|l| l.contains("blocks") && l.contains("127.0.0.1")),
            "{:?}",
            s.steps
        );
    }
}

#[test]
fn acl_types_filter_and_rules_without_a_match_pass_on() {
    let corefile = "\
.:53 {
    acl cluster.local {
        filter type AAAA net *
        block type A net 10.0.0.0/8
    }
    acl {
        block type TXT
    }
    kubernetes cluster.local
    forward . /etc/resolv.conf
}
";
    let ctx = from("10.244.3.7", V1_14);
    let parsed = corefile::parse(corefile).unwrap();
    let aaaa = serve(&parsed, FRIGATE, QType::Aaaa, &ctx);
    assert_eq!(aaaa.reply, Reply::Local(Outcome::NoData));
    let a = serve(&parsed, FRIGATE, QType::A, &ctx);
    assert_eq!(a.reply, Reply::Local(Outcome::Refused));
    // Outside the first rule's zone, and no policy of the second for A.
    let outside = serve(&parsed, "api.github.com", QType::A, &ctx);
    assert!(
        matches!(outside.reply, Reply::Upstream { .. }),
        "{outside:?}"
    );
    let txt = serve(&parsed, "api.github.com", QType::Txt, &ctx);
    assert_eq!(txt.reply, Reply::Local(Outcome::Refused));
}

/// A forward target is CoreDNS only where the Corefile listens.
#[test]
fn self_addresses_are_the_corefiles_own_listeners() {
    let served_by = |corefile: &str, cluster_dns: &[IpAddr]| {
        let ctx = ServeContext {
            cluster_dns_ips: cluster_dns,
            ..ServeContext::new(V1_14, &frigate)
        };
        let s = ask(corefile, "a.corp.example", &ctx);
        (s.reply, s.steps)
    };
    let corp = |bind: &str, target: &str| {
        format!(
            ".:53 {{\n    {bind}\n    hosts {{\n        10.1.2.3 a.corp.internal\n    }}\n}}\ncorp.example:53 {{\n    {bind}\n    rewrite stop name suffix .corp.example. .corp.internal. answer auto\n    forward . {target}\n}}\n"
        )
    };
    let itself = Reply::Local(Outcome::Answer);
    let upstream = |t: &str| Reply::Upstream {
        targets: vec![t.into()],
        name: "a.corp.internal.".into(),
    };
    // Listening everywhere: every local address on the port.
    for target in ["127.0.0.1", "127.0.0.53:53", "[::1]:53", "0.0.0.0"] {
        let (reply, steps) = served_by(&corp("", target), &[]);
        assert_eq!(reply, itself, "{target}: {steps:?}");
    }
    // Bound to the pod address: loopback is someone else (a sidecar).
    let (reply, _) = served_by(&corp("bind {$POD_IP}", "127.0.0.1"), &[]);
    assert_eq!(reply, upstream("127.0.0.1"));
    let (reply, _) = served_by(&corp("bind {$POD_IP}", "{$POD_IP}:53"), &[]);
    assert_eq!(reply, itself);
    // `bind lo` is 127.0.0.1 and ::1, not all of 127/8.
    let (reply, _) = served_by(&corp("bind lo", "127.0.0.1:53"), &[]);
    assert_eq!(reply, itself);
    let (reply, _) = served_by(&corp("bind lo", "127.0.0.53"), &[]);
    assert_eq!(reply, upstream("127.0.0.53"));
    let (reply, _) = served_by(&corp("bind 10.244.0.5", "10.244.0.5:53"), &[]);
    assert_eq!(reply, itself);
    // Another port where nothing listens is somebody else.
    let (reply, _) = served_by(&corp("", "127.0.0.1:5353"), &[]);
    assert_eq!(reply, upstream("127.0.0.1:5353"));
    // The kube-dns Service IP reaches the cluster listener.
    let service: IpAddr = "10.96.0.10".parse().unwrap();
    let (reply, _) = served_by(&corp("bind {$POD_IP}", "10.96.0.10"), &[service]);
    assert_eq!(reply, itself);
    let (reply, _) = served_by(&corp("bind {$POD_IP}", "10.96.0.10"), &[]);
    assert_eq!(reply, upstream("10.96.0.10"));
}

/// A forward to another listener of the same Corefile is served on its port.
#[test]
fn a_forward_to_another_port_of_coredns_is_served_there() {
    let corefile = "\
.:53 {
    forward corp.example 127.0.0.1:5353
    forward . /etc/resolv.conf
}
.:5353 {
    hosts {
        10.1.2.3 a.corp.example
    }
}
";
    let s = ask(
        corefile,
        "a.corp.example",
        &ServeContext::new(V1_14, &frigate),
    );
    assert_eq!(s.reply, Reply::Local(Outcome::Answer), "{:?}", s.steps);
}

/// Forwards to itself end at a repeat, or past the Corefile's block count.
#[test]
fn self_forward_chains_are_bounded_by_the_corefile() {
    // Each pass adds a label, so no (block, name) repeats.
    let growing = "\
.:53 {
    forward . /etc/resolv.conf
}
corp.example:53 {
    rewrite name regex ^(.*)[.]corp[.]example[.]$ x.{1}.corp.example.
    forward . 127.0.0.1
}
";
    let s = ask(
        growing,
        "a.corp.example",
        &ServeContext::new(V1_14, &frigate),
    );
    assert_eq!(s.reply, Reply::Local(Outcome::ServFail));
    let all = s.steps.join("\n");
    assert!(
        all.contains("more forwards to itself than the Corefile has server blocks (2)"),
        "{all}"
    );
    // Two blocks that hand a name to each other through a rewrite and back.
    let chain = "\
.:53 {
    forward . /etc/resolv.conf
}
a.example:53 {
    rewrite name suffix .a.example. .b.example.
    forward . 127.0.0.1
}
b.example:53 {
    hosts {
        10.1.2.3 x.b.example
        fallthrough
    }
    forward . 127.0.0.1
}
";
    let s = ask(chain, "x.a.example", &ServeContext::new(V1_14, &frigate));
    assert_eq!(s.reply, Reply::Local(Outcome::Answer), "{:?}", s.steps);
    let s = ask(chain, "y.b.example", &ServeContext::new(V1_14, &frigate));
    assert_eq!(s.reply, Reply::Local(Outcome::ServFail));
    assert!(s.steps.join("\n").contains("again"), "{:?}", s.steps);
}

const AUTOPATH: &str = "\
.:53 {
    errors
    autopath @kubernetes
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods verified
       fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
";

fn pod_asking<'a>(
    search: &'a [String],
    upstream: &'a dyn Fn(&str, QType) -> Outcome,
) -> ServeContext<'a> {
    ServeContext {
        client: Client {
            ip: "10.244.3.7".parse().unwrap(),
            search,
        },
        upstream,
        ..ServeContext::new(V1_14, &frigate)
    }
}

/// Issue 10 item 3: autopath walks the search list inside CoreDNS, the
/// foreign suffix included, before any block for the suffix could see it.
#[test]
fn autopath_walks_the_search_list_inside_coredns() {
    let search = search();
    let first = format!("{FRIGATE}workflow-engine.svc.cluster.local.");
    // A working upstream: the artifact under the suffix is NXDOMAIN, the
    // walk goes on to the name itself.
    let nx = |_: &str, _: QType| Outcome::NxDomain;
    let s = ask(AUTOPATH, &first, &pod_asking(&search, &nx));
    assert_eq!(s.reply, Reply::Local(Outcome::Answer), "{:?}", s.steps);
    assert_eq!(s.resolved_name, FRIGATE);
    assert_eq!(s.plugin, "autopath > kubernetes");
    let all = s.steps.join("\n");
    assert!(
        all.contains(&format!(
            "sends {FRIGATE}tailb45a71.ts.net. to /etc/resolv.conf"
        )),
        "{all}"
    );
    // A black-holed upstream holds the walk past the resolver's timeout.
    let silent = |_: &str, _: QType| Outcome::Timeout;
    let s = ask(AUTOPATH, &first, &pod_asking(&search, &silent));
    assert_eq!(s.reply, Reply::Local(Outcome::Timeout), "{:?}", s.steps);
    // An upstream that answers every name hijacks the lookup.
    let any = |_: &str, _: QType| Outcome::Answer;
    let s = ask(AUTOPATH, &first, &pod_asking(&search, &any));
    assert_eq!(
        s.resolved_name,
        format!("{FRIGATE}tailb45a71.ts.net."),
        "{:?}",
        s.steps
    );
    // A name that does not end in the pod's namespace domain is not walked.
    let s = ask(AUTOPATH, FRIGATE, &pod_asking(&search, &nx));
    assert_eq!(s.plugin, "kubernetes");
    // A short name resolves on the server's second try.
    let short = "frigate.video-management-system.workflow-engine.svc.cluster.local.";
    let s = ask(AUTOPATH, short, &pod_asking(&search, &nx));
    assert_eq!(s.reply, Reply::Local(Outcome::Answer));
    assert_eq!(s.resolved_name, FRIGATE);
}

#[test]
fn autopath_needs_pods_verified_and_a_pod_search_list() {
    let search = search();
    let nx = |_: &str, _: QType| Outcome::NxDomain;
    let first = format!("{FRIGATE}workflow-engine.svc.cluster.local.");
    let insecure = AUTOPATH.replace("pods verified", "pods insecure");
    let s = ask(&insecure, &first, &pod_asking(&search, &nx));
    assert_eq!(s.reply, Reply::Local(Outcome::NxDomain));
    assert_eq!(s.plugin, "kubernetes");
    // Every try fails: the first reply goes back as it was.
    let nothing = "nosuch.workflow-engine.svc.cluster.local.";
    let s = ask(AUTOPATH, nothing, &pod_asking(&search, &nx));
    assert_eq!(s.reply, Reply::Local(Outcome::NxDomain), "{:?}", s.steps);
    assert_eq!(s.resolved_name, nothing);
    // No search list known for the client: nothing to walk.
    let s = ask(AUTOPATH, &first, &pod_asking(&[], &nx));
    assert_eq!(s.plugin, "kubernetes");
}
