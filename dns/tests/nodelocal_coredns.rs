//! NodeLocal DNSCache in front of CoreDNS, both real processes, before and
//! after a policy: the polluted in-cluster name that the cache used to send
//! to the (black-holed) upstream itself is answered through CoreDNS, nothing
//! with the suffix reaches the upstream, and a real host in the suffix still
//! resolves through the policy's forwardTo. The cache runs on the stock
//! CoreDNS and on a CoreDNS linked with node-cache's plugins only
//! (`~/.cache/dnspolicy-e2e/coredns-nodecache/v<version>/coredns`, built by
//! `bash e2e/scripts/build-deps.sh coredns-nodecache`), which also shows that
//! the CoreDNS stanzas (`view`) would not start there. A missing binary fails
//! the test; nothing is faked.
//!
//! What stands in for the cluster, all on 127.0.N.0/24:
//! - CoreDNS (127.0.N.1:5300) runs kubeadm's Corefile with dnspolicy's
//!   stanzas (`plan::desired`, as the operator writes them). Its `kubernetes`
//!   plugin is replaced by `file` serving cluster.local (authoritative,
//!   NXDOMAIN for unknown names, as `kubernetes` is), so no apiserver is
//!   needed; `health` and `ready` are dropped and `prometheus` bound to its
//!   address, so it listens on nothing but 127.0.N.1.
//! - The cache runs a fixture as the cluster holds it (the addon filled in
//!   by its instructions for iptables kube-proxy: listening on the link-local
//!   address and the kube-dns Service IP; Kubespray's as rendered: link-local
//!   only), edited by `nodelocal::render`, then with node-cache's start-up
//!   substitution (`__PILLAR__CLUSTER__DNS__` -> CoreDNS,
//!   `__PILLAR__UPSTREAM__SERVERS__` -> the upstream, `__PILLAR__DNS__SERVER__`
//!   deleted) and the node's addresses mapped to loopback ones: 169.254.x.y ->
//!   127.0.N.10, the kube-dns IP -> 127.0.N.11, port 53 -> 5300.
//! - Both `reload` lines become `reload 2s` (the plugin's minimum) so the
//!   test waits seconds, not half a minute, for CoreDNS to pick up the edit.
//! - The node's upstream (127.0.N.2) is a socket that logs and never answers;
//!   the forwardTo resolver (127.0.N.3) answers every A query with 198.51.100.3.

mod kit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::nodelocal;
use dnspolicy_dns::plan;
use dnspolicy_dns::policy::MergedPolicies;
use dnspolicy_dns::version::CoreDnsVersion;
use kit::{
    FRIGATE, PORT, Process, Seen, answering_resolver, built_coredns, e2e_policies, e2e_rule, query,
    scratch_dir, silent_resolver, write_cluster_zone,
};

const VERSION: &str = "1.14.2";
const TAILNET: &str = "tailb45a71.ts.net";
const KUBEADM: &str = include_str!("fixtures/corefiles/kubeadm-v1.36.3.Corefile");
const ADDON: &str = include_str!("fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");
const KUBESPRAY: &str = include_str!("fixtures/corefiles/nodelocaldns-kubespray-46dbdd39.Corefile");

/// `go install github.com/coredns/coredns`.
const STOCK: &str = "stock";
/// Linked with node-cache's plugins only.
const NODE_CACHE: &str = "node-cache's plugins";

/// The CoreDNS build `kind` of [`VERSION`].
fn binary(kind: &str) -> PathBuf {
    match kind {
        STOCK => built_coredns("coredns", "DNSPOLICY_COREDNS_DIR", VERSION),
        NODE_CACHE => built_coredns(
            "coredns-nodecache",
            "DNSPOLICY_COREDNS_NODECACHE_DIR",
            VERSION,
        ),
        other => panic!("no CoreDNS build called {other:?}"),
    }
}

/// The replacement must apply, or the stand-in silently differs from the fixture.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found in:\n{text}");
    text.replacen(from, to, 1)
}

struct Net(u8);

impl Net {
    fn ip(&self, host: u8) -> String {
        format!("127.0.{}.{host}", self.0)
    }
    fn addr(&self, host: u8) -> String {
        format!("{}:{PORT}", self.ip(host))
    }
    fn socket(&self, host: u8) -> SocketAddr {
        self.addr(host).parse().unwrap()
    }
}

fn policies(net: &Net) -> MergedPolicies {
    e2e_policies(vec![
        e2e_rule("openstacklocal", SuffixAction::NXDomain, 1, &[]),
        e2e_rule(TAILNET, SuffixAction::Rewrite, 1, &[net.addr(3)]),
    ])
}

// ---- the cluster DNS ----

/// kubeadm's Corefile with `file` for `kubernetes`, on 127.0.N.1 only.
fn coredns_base(net: &Net, db: &Path) -> String {
    let text = replace_once(
        KUBEADM,
        ".:53 {\n",
        &format!(".:{PORT} {{\n    bind {}\n", net.ip(1)),
    );
    let text = replace_once(
        &text,
        "    health {\n       lameduck 5s\n    }\n    ready\n",
        "",
    );
    let text = replace_once(
        &text,
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n",
        &format!("    file {} cluster.local\n", db.display()),
    );
    let text = replace_once(
        &text,
        "prometheus :9153",
        &format!("prometheus {}:9153", net.ip(1)),
    );
    let text = replace_once(
        &text,
        "forward . /etc/resolv.conf {",
        &format!("forward . {} {{", net.addr(2)),
    );
    replace_once(&text, "    reload\n", "    reload 2s\n")
}

// ---- the node-local cache ----

#[derive(Clone, Copy, Debug)]
enum Cache {
    /// The upstream addon, filled in for iptables kube-proxy: bound to the
    /// link-local address and the kube-dns Service IP.
    AddonIntercepting,
    /// Kubespray's rendering: link-local only, addresses already in.
    KubesprayLinkLocal,
}

impl Cache {
    /// The Corefile as the cluster's ConfigMap holds it.
    fn config_map(self) -> String {
        let text = match self {
            Cache::AddonIntercepting => ADDON
                .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
                .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
                .replace("__PILLAR__DNS__SERVER__", "10.96.0.10"),
            Cache::KubesprayLinkLocal => KUBESPRAY.to_string(),
        };
        text.replace("    reload\n", "    reload 2s\n")
    }

    /// Where pods reach the cache.
    fn listeners(self, net: &Net) -> Vec<SocketAddr> {
        match self {
            Cache::AddonIntercepting => vec![net.socket(10), net.socket(11)],
            Cache::KubesprayLinkLocal => vec![net.socket(10)],
        }
    }
}

/// What node-cache runs for a ConfigMap Corefile: its start-up substitution
/// (app/configmap.go), then the node's addresses mapped to loopback ones.
fn as_node_cache_runs_it(config_map: &str, net: &Net) -> String {
    let text = config_map
        .replace("__PILLAR__CLUSTER__DNS__", &net.addr(1))
        .replace("__PILLAR__UPSTREAM__SERVERS__", &net.addr(2))
        .replace("__PILLAR__DNS__SERVER__", "");
    text.replace("169.254.20.10", &net.ip(10))
        .replace("169.254.25.10", &net.ip(10))
        .replace("10.96.0.10", &net.ip(11))
        .replace("10.233.0.3", &net.addr(1))
        .replace(
            "forward . /etc/resolv.conf",
            &format!("forward . {}", net.addr(2)),
        )
        .replace(":53 {", &format!(":{PORT} {{"))
        .replace(
            "prometheus :9253",
            &format!("prometheus {}:9253", net.ip(10)),
        )
}

// ---- what reached the upstream ----

fn suffixed(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|q| q.contains(&format!(".{TAILNET}. ")) || q.contains(".openstacklocal. "))
        .cloned()
        .collect()
}

// ---- the scenario ----

/// One cache in front of one CoreDNS: before the policy, the reload, after
/// it, and a fresh start of the edited cache. Prints what it measured.
fn cache_in_front_of_coredns(kind: &str, cache: Cache, net: Net) {
    let cache_bin = binary(kind);
    let label = format!("{cache:?} on {kind}");
    let stock = binary(STOCK);
    let dir = scratch_dir("nodelocal", net.0);
    let db = write_cluster_zone(&dir);
    // the node's upstream, unreachable; the forwardTo resolver answers with 198.51.100.3
    let upstream = silent_resolver(&net.addr(2));
    let forward_to = answering_resolver(&net.addr(3), 3);
    let merged = policies(&net);
    let version = CoreDnsVersion::parse(VERSION).unwrap();

    // Before: no policy anywhere.
    let coredns_before = coredns_base(&net, &db);
    let cache_before = cache.config_map();
    let mut coredns = Process::start(&stock, &dir, "coredns", &coredns_before);
    coredns.wait_serving(net.socket(1), FRIGATE);
    let mut node_cache = Process::start(
        &cache_bin,
        &dir,
        "node-cache",
        &as_node_cache_runs_it(&cache_before, &net),
    );
    let listeners = cache.listeners(&net);
    for l in &listeners {
        node_cache.wait_serving(*l, FRIGATE);
    }
    let polluted = format!("{FRIGATE}.{TAILNET}");
    let before = query(listeners[0], &polluted, 1, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let leaked = suffixed(&upstream);
    eprintln!(
        "[{label}] before: {polluted} A -> {before:?} (the client gave up after 2 s); reached the upstream: {leaked:?}"
    );
    assert!(
        before.as_ref().is_none_or(|r| r.rcode != "NOERROR"),
        "{before:?}"
    );
    assert!(
        leaked.contains(&format!("{polluted}. 1")),
        "the cache did not send {polluted} upstream before the policy: {leaked:?}"
    );
    let before_sent = Instant::now();

    // The operator's edit of both ConfigMaps, loaded by `reload`.
    let coredns_after = plan::desired(
        &coredns_before,
        &merged,
        Ok(version),
        &plan::ClusterDns::default(),
    )
    .unwrap()
    .corefile;
    let cache_after = nodelocal::render(&cache_before, &merged).unwrap();
    assert!(!cache_after.contains("view"), "{cache_after}");
    eprintln!("--- node-local ConfigMap after the edit:\n{cache_after}");
    let running = as_node_cache_runs_it(&cache_after, &net);
    let coredns_reload = coredns.reload(&coredns_after);
    let cache_reload = node_cache.reload(&running);
    eprintln!(
        "[{label}] reload picked up the edit: CoreDNS after {coredns_reload:?}, the cache after {cache_reload:?}"
    );
    // CoreDNS's forward gives up on the black hole after 5 s: let the
    // before-query's retries end before counting what reaches the upstream.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(before_sent.elapsed()));
    upstream.lock().unwrap().clear();
    forward_to.lock().unwrap().clear();
    // (each listener asks for its own real host: the cache would answer a second ask)
    for (l, host) in listeners.iter().zip(["myhost", "otherhost"]) {
        after(
            &format!("{cache:?} reloaded"),
            *l,
            host,
            &upstream,
            &forward_to,
        );
    }

    // A fresh start of the edited cache (a node reboots, the DaemonSet rolls).
    drop(node_cache);
    let mut node_cache = Process::start(&cache_bin, &dir, "node-cache", &running);
    let startup = node_cache.wait_serving(listeners[0], FRIGATE);
    eprintln!("[{label}] the edited cache started in {startup:?}");
    std::thread::sleep(Duration::from_secs(1));
    upstream.lock().unwrap().clear();
    forward_to.lock().unwrap().clear();
    after(
        &format!("{label}, fresh start"),
        listeners[0],
        // not asked before: CoreDNS caches forwardTo's answers too
        "freshhost",
        &upstream,
        &forward_to,
    );
    drop(node_cache);
    drop(coredns);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One query after the policy and what it must get.
struct Case {
    name: String,
    qtype: u16,
    rcode: &'static str,
    answers: Vec<String>,
    /// The names (with type) that must reach the forwardTo resolver.
    forward_to: Vec<String>,
}

fn case(
    name: String,
    qtype: u16,
    rcode: &'static str,
    answers: &[String],
    forward_to: &[String],
) -> Case {
    Case {
        name,
        qtype,
        rcode,
        answers: answers.to_vec(),
        forward_to: forward_to.to_vec(),
    }
}

/// After the policy, through one cache listener.
fn after(label: &str, cache: SocketAddr, host: &str, upstream: &Seen, forward_to: &Seen) {
    let f = format!("{FRIGATE}.");
    let cases = [
        // the seed: answered via CoreDNS, the suffix mapped back
        case(
            format!("{FRIGATE}.{TAILNET}"),
            1,
            "NOERROR",
            &[format!("{f}{TAILNET}. A 10.96.0.50")],
            &[],
        ),
        case(format!("{FRIGATE}.{TAILNET}"), 28, "NOERROR", &[], &[]),
        case(
            format!("nosuch.default.svc.cluster.local.{TAILNET}"),
            1,
            "NXDOMAIN",
            &[],
            &[],
        ),
        case(format!("{FRIGATE}.openstacklocal"), 1, "NXDOMAIN", &[], &[]),
        case(
            "api.github.com.openstacklocal".into(),
            1,
            "NXDOMAIN",
            &[],
            &[],
        ),
        // a real host of the tailnet: through CoreDNS to forwardTo
        case(
            format!("{host}.{TAILNET}"),
            1,
            "NOERROR",
            &[format!("{host}.{TAILNET}. A 198.51.100.3")],
            &[format!("{host}.{TAILNET}. 1")],
        ),
        // names without a suffix take the cache's own paths, as before
        case(
            FRIGATE.into(),
            1,
            "NOERROR",
            &[format!("{f} A 10.96.0.50")],
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for c in cases {
        forward_to.lock().unwrap().clear();
        let reply = query(cache, &c.name, c.qtype, Duration::from_secs(3));
        let reached = forward_to.lock().unwrap().clone();
        eprintln!(
            "[{label}] {} {} via {cache} -> {reply:?} in {:?}; forwardTo={reached:?}",
            c.name,
            c.qtype,
            reply.as_ref().map(|r| r.took)
        );
        let ok = reply.as_ref().is_some_and(|r| {
            r.rcode == c.rcode
                && r.question.eq_ignore_ascii_case(&format!("{}.", c.name))
                && r.answers == c.answers
        }) && reached == c.forward_to;
        if !ok {
            failures.push(format!(
                "{} {}: {reply:?} forwardTo={reached:?}",
                c.name, c.qtype
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let leaked = suffixed(upstream);
    assert!(
        failures.is_empty() && leaked.is_empty(),
        "[{label}] failed: {failures:#?}; names with a suffix that reached the upstream: {leaked:?}"
    );
}

#[test]
fn the_stock_coredns_as_the_cache_sends_each_suffix_to_coredns() {
    cache_in_front_of_coredns(STOCK, Cache::AddonIntercepting, Net(81));
    cache_in_front_of_coredns(STOCK, Cache::KubesprayLinkLocal, Net(82));
}

#[test]
fn node_caches_plugins_run_the_edit() {
    cache_in_front_of_coredns(NODE_CACHE, Cache::AddonIntercepting, Net(83));
    cache_in_front_of_coredns(NODE_CACHE, Cache::KubesprayLinkLocal, Net(84));
}

/// What `render` wrote before it knew the cache (CoreDNS's `view` stanzas)
/// starts on the stock CoreDNS but not with node-cache's plugins.
#[test]
fn the_coredns_stanzas_do_not_start_with_node_caches_plugins() {
    let net = Net(85);
    let dir = scratch_dir("nodelocal", net.0);
    let mut openstack = policies(&net);
    openstack.rules.retain(|r| r.suffix == "openstacklocal");
    let version = CoreDnsVersion::parse(VERSION).unwrap();
    let stanzas = plan::desired(
        &Cache::KubesprayLinkLocal.config_map(),
        &openstack,
        Ok(version),
        &plan::ClusterDns::default(),
    )
    .unwrap()
    .corefile;
    assert!(stanzas.contains("    view "), "{stanzas}");
    let corefile = as_node_cache_runs_it(&stanzas, &net);

    let mut refused = Process::start(&binary(NODE_CACHE), &dir, "node-cache", &corefile);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node-cache's plugins took a Corefile with `view`:\n{}",
            refused.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = refused.log();
    eprintln!("node-cache's plugins: {status}: {log}");
    assert!(!status.success());
    assert!(log.contains("view"), "{log}");
    drop(refused);

    let mut stock = Process::start(&binary(STOCK), &dir, "stock", &corefile);
    let started = Instant::now();
    while !stock.log().contains("Running configuration SHA512") {
        assert!(
            stock.child.try_wait().unwrap().is_none(),
            "the stock CoreDNS refused it too:\n{}",
            stock.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            stock.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stock);
    let _ = std::fs::remove_dir_all(&dir);
}
