//! docs/design.md section 3 on the real cluster: real CoreDNS (kubeadm's release and
//! the oldest one supported), real glibc and musl lookups, the seeds'
//! black-holed upstream, and the real `dnspolicy run` applying policies with
//! kubectl. Each test walks a few cluster states and checks many names in
//! each; `--nocapture` prints every measured lookup.
//!
//! Two upstreams: the stock `forward . /etc/resolv.conf` goes to the black
//! hole (127.0.54.1, never answers), which is the seed's failure; outside
//! names need an upstream that answers, so the later states run the same
//! Corefile with `forward . 127.0.54.2`, the harness's table-driven upstream,
//! whose log then shows every name that left CoreDNS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

mod probe;
mod states;
mod world;

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, DnsServer, Flavor, Lookup, QueryLog, Resolver, dns, env};
use probe::*;
use states::*;
use world::*;

const TAILNET: &str = "tailb45a71.ts.net";
const OPENSTACK: &str = "openstacklocal";
const AWS: &str = "ap-northeast-2.compute.internal";
const NS: &str = "video-management-system";
const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const HEADLESS: &str = "frigate-db.video-management-system.svc.cluster.local";
const HEADLESS_POD: &str = "frigate-db-0.frigate-db.video-management-system.svc.cluster.local";
const POD_NAME: &str = "1-2-3-4.default.pod.cluster.local";
const MISSING: &str = "nosuch.video-management-system.svc.cluster.local";
const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";
/// The seed pod's search list (000_4443b9a4a5303fb0.txt).
const SEED_SEARCH: &[&str] = &[
    "workflow-engine.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    TAILNET,
];
/// A node with every foreign suffix of the seeds.
const CLOUD_SEARCH: &[&str] = &[
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    TAILNET,
    OPENSTACK,
    AWS,
];
/// Plays the tailnet's resolver: servers bind only loopback here.
const MAGICDNS: &str = "127.0.55.1";
const MYHOST: &str = "myhost.tailb45a71.ts.net";
const MYHOST_TAILNET: &str = "100.64.0.7";
/// What the upstream says about myhost: without forwardTo it keeps asking there.
const MYHOST_UPSTREAM: &str = "100.64.0.99";
/// Real hosts in the other suffixes, answered by the upstream before and after.
const OPENSTACK_HOST: &str = "db.openstacklocal";
const AWS_HOST: &str = "ip-10-0-1-23.ap-northeast-2.compute.internal";
const UPSTREAM_TABLE: &str = "\
api.github.com A 140.82.112.6
api.github.com AAAA 2606:50c0:8000::154
github.com A 140.82.112.3
example.org A 93.184.215.14
myhost.tailb45a71.ts.net A 100.64.0.99
db.openstacklocal A 10.0.0.5
ip-10-0-1-23.ap-northeast-2.compute.internal A 10.0.1.23
";
/// CoreDNS's forward gives up on an upstream after 2 s: a lookup faster than
/// that never waited on the black hole.
const FAST: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(90);
const A: u16 = dns::TYPE_A;
const AAAA: u16 = dns::TYPE_AAAA;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Rewrite,
    NXDomain,
}

/// The Tailscale example with its tailnet resolver on loopback, `action`, and forwardTo or not.
fn tailnet_policy(action: Action, forward_to: bool) -> Result<String> {
    // The example's forwardToRef (a Tailscale DNSConfig) as the literal
    // address it would resolve to: this suite is about the stanzas.
    let mut y = tailscale_forwarding_to(MAGICDNS);
    if action == Action::NXDomain {
        y = y.replace("action: Rewrite", "action: NXDomain");
        ensure!(
            y.contains("action: NXDomain"),
            "the Tailscale example has no action: Rewrite"
        );
    }
    if !forward_to {
        let line = format!("    forwardTo: [\"{MAGICDNS}\"]\n");
        ensure!(y.contains(&line), "no forwardTo line in\n{y}");
        y = y.replace(&line, "");
    }
    Ok(y)
}

/// One policy for the two cloud suffixes, beside the tailnet one.
fn cloud_policy(openstack: Action, aws: Action) -> String {
    format!(
        "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: cloud}}\nspec:\n  foreignSuffixes:\n  \
         - {{suffix: {OPENSTACK}, action: {openstack:?}, hostLabels: 1}}\n  \
         - {{suffix: {AWS}, action: {aws:?}, hostLabels: 1}}\n"
    )
}

/// The EKS addon's Corefile (operator/tests/fixtures/corefiles/eks-addon.Corefile)
/// with the harness's per-pod listen addresses, as the harness does for kubeadm's.
const EKS_COREFILE: &str = "\
.:53 {
    errors
    health {$POD_IP}:8080 {
        lameduck 5s
      }
    ready {$POD_IP}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    prometheus {$POD_IP}:9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    bind {$POD_IP}
}
";

/// One contract test's cluster: CoreDNS fresh as `flavor` installs
/// `version`, the workloads, the upstreams, an operator; and the lookups
/// measured on the way.
struct Contract {
    c: Cluster,
    _guard: dnspolicy_e2e::files::FileLock,
    t0: Instant,
    tag: String,
    stock: String,
    w: Workloads,
    up: Upstreams,
    op: Operator,
    f: Figures,
}

impl Contract {
    async fn begin(flavor: Flavor, version: &str, operator: &str) -> Result<Contract> {
        let c = Cluster::ensure().await?;
        let _guard = c.exclusive()?;
        let t0 = Instant::now();
        let tag = format!("{} {version}", format!("{flavor:?}").to_lowercase());
        let stock = fresh(&c, flavor, version).await?;
        let w = Workloads::create(&c).await?;
        let up = Upstreams::start(&c)?;
        let op = Operator::start(&c, operator, &[])?;
        Ok(Contract {
            c,
            _guard,
            t0,
            tag,
            stock,
            w,
            up,
            op,
            f: Figures::default(),
        })
    }

    /// The seed's lookups on the stock Corefile and the black hole.
    async fn seed_before(&mut self) -> Result<()> {
        let p = Probe::new(&self.c, &format!("{} black hole, no policy", self.tag)).await?;
        seed_before(&p, &mut self.f, &self.w).await
    }

    /// The seed's lookups again with the tailnet policy (`action`, forwardTo)
    /// in place; a failure is shown, and returned for the end of the test.
    async fn seed_after(&mut self, action: Action) -> Result<Result<()>> {
        let state = format!("{} black hole, {action:?}+forwardTo", self.tag);
        let p = Probe::new(&self.c, &state).await?;
        let seeded = seed_after(&p, &mut self.f, &self.w, &self.up, action).await;
        show_on_failure(&self.c, &seeded)?;
        Ok(seeded)
    }

    /// Prints the figures, deletes every policy (the operator restores the
    /// Corefile), stops the operator, puts the upstream's table back,
    /// deletes the workloads; then returns `result`.
    async fn end(self, result: Result<()>) -> Result<()> {
        let Contract {
            c,
            t0,
            tag,
            mut op,
            up,
            f,
            ..
        } = self;
        f.print(&tag);
        if result.is_err() {
            eprintln!("operator log:\n{}", op.log_text());
        }
        let cleared = clear_policies(&c);
        let stopped = op.stop();
        let restored = up.restore(&c);
        let deleted = Workloads::delete(&c);
        println!("{tag}: {:?}", t0.elapsed());
        result?;
        cleared?;
        stopped?;
        restored?;
        deleted
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_coredns_keeps_the_contract() -> Result<()> {
    let version = env::coredns_kubeadm_version();
    let mut k = Contract::begin(Flavor::Kubeadm, &version, "contract").await?;
    let result = kubeadm_states(&mut k).await;
    k.end(result).await
}

async fn kubeadm_states(k: &mut Contract) -> Result<()> {
    k.seed_before().await?;
    apply_ready(
        &k.c,
        &k.op,
        &tailnet_policy(Action::Rewrite, true)?,
        &["tailnet"],
    )
    .await?;
    let seeded = k.seed_after(Action::Rewrite).await?;
    // The EKS addon's shape for the answering-upstream states.
    ensure!(k.stock.contains("forward . /etc/resolv.conf"));
    let tag = format!("{} EKS shape", k.tag);
    outside_names(&k.c, &k.op, &mut k.f, &k.w, EKS_COREFILE, &tag).await?;
    seeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_coredns_keeps_the_contract_or_refuses() -> Result<()> {
    let version = env::coredns_old_version();
    let mut k = Contract::begin(Flavor::Kubeadm, &version, "contract-old").await?;
    let result = old_states(&mut k).await;
    k.end(result).await
}

async fn old_states(k: &mut Contract) -> Result<()> {
    k.seed_before().await?;
    refused_before_view(&k.c, &k.op, &k.stock).await?;
    // What the old CoreDNS can do: NXDomain with forwardTo.
    apply_ready(
        &k.c,
        &k.op,
        &tailnet_policy(Action::NXDomain, true)?,
        &["tailnet"],
    )
    .await?;
    let seeded = k.seed_after(Action::NXDomain).await?;
    let tag = format!("{} kubeadm shape", k.tag);
    outside_names(&k.c, &k.op, &mut k.f, &k.w, &k.stock, &tag).await?;
    seeded
}

/// Scenario 3's k3s shape: the policies go into `coredns-custom`, imported
/// by the stock Corefile; the seed is fixed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_coredns_keeps_the_contract() -> Result<()> {
    k3s_contract(&env::coredns_kubeadm_version(), Action::Rewrite).await
}

/// The same on the old CoreDNS: the Tailscale example refused, NXDomain with
/// forwardTo in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_old_coredns_keeps_the_contract_or_refuses() -> Result<()> {
    k3s_contract(&env::coredns_old_version(), Action::NXDomain).await
}

/// `tailnet` is the tailnet suffix's action with forwardTo; Rewrite is
/// expected to be refused first where it cannot be written.
async fn k3s_contract(version: &str, tailnet: Action) -> Result<()> {
    let mut k = Contract::begin(Flavor::K3s, version, "contract-k3s").await?;
    let result = k3s_states(&mut k, tailnet).await;
    k.end(result).await
}

async fn k3s_states(k: &mut Contract, tailnet: Action) -> Result<()> {
    let c = &k.c;
    // Before: the artifact reaches the black hole (no need to sit out its timeout).
    let p = Probe::new(c, &format!("{} black hole, no policy", k.tag)).await?;
    let bh = c.blackhole();
    let mark = bh.mark();
    let artifact = format!("{FRIGATE}.{TAILNET}");
    let quick = Duration::from_millis(300);
    ensure!(
        c.query(p.at, &artifact, A, quick).await.is_err(),
        "answered before the upstream timeout"
    );
    let t1 = Instant::now();
    while bh.names_ending_with(mark, TAILNET).is_empty() {
        ensure!(
            t1.elapsed() < Duration::from_secs(3),
            "the black hole never saw {artifact}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // CoreDNS's forward keeps retrying that query for up to 5 s; let it
    // give up so its retries are not counted against the policy below.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(t1.elapsed())).await;

    if tailnet == Action::NXDomain {
        refused_before_view(c, &k.op, &k.stock).await?;
    }
    tailnet_and_cloud(c, &k.op, tailnet, true, (Action::NXDomain, Action::Rewrite)).await?;
    ensure!(corefile(c)? == k.stock, "the k3s Corefile was edited");
    let keys = custom_keys(c)?;
    ensure!(
        keys.keys().any(|k| k.ends_with(".server")),
        "no .server key in coredns-custom: {keys:?}"
    );
    let p = Probe::new(c, &format!("{} black hole, {tailnet:?}+forwardTo", k.tag)).await?;
    let seeded = seed_after(&p, &mut k.f, &k.w, &k.up, tailnet).await;
    show_on_failure(c, &seeded)?;
    let mark = bh.mark();
    p.in_cluster(&k.w, OPENSTACK, Action::NXDomain).await?;
    p.in_cluster(&k.w, AWS, Action::Rewrite).await?;
    p.all_fast(&mut k.f, CLOUD_SEARCH, &frigate_lookups(&k.w))
        .await?;
    for suffix in [OPENSTACK, AWS] {
        let sent = bh.names_ending_with(mark, suffix);
        ensure!(
            sent.is_empty(),
            "artifacts of {suffix} reached the black hole: {sent:?}"
        );
    }
    seeded
}
