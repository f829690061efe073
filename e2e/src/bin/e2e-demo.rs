//! `just demo`: the seed's failure on the local real cluster, then the example
//! policy applied by the operator, then the same lookups again; last, the
//! same through a NodeLocal DNSCache that the operator covers.

use anyhow::{Result, bail};
use dnspolicy_e2e::cluster::node::{self, NodeOptions};
use dnspolicy_e2e::nodecache::NodeCache;
use dnspolicy_e2e::operator::{self, Operator};
use dnspolicy_e2e::seed_pods::{self, PodLookup};
use dnspolicy_e2e::{Cluster, DnsServer, Lookup, LookupSpec, Resolver, env, resolver};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const NS: &str = "video-management-system";
const NAME: &str = "frigate.video-management-system.svc.cluster.local";

fn show(tag: &str, l: &Lookup) {
    let verdict = if l.ok {
        format!("OK {:?}", l.addrs)
    } else {
        format!("FAILED ({})", l.output.trim())
    };
    println!("  {tag:<6} {:>7.3}s  {verdict}", l.elapsed.as_secs_f64());
}

async fn lookups(c: &Cluster, search: &[&str]) -> Result<()> {
    let bh = c.blackhole();
    let mark = bh.mark();
    let g = c.lookup(Resolver::Glibc, NAME, search, 5).await?;
    show("glibc", &g);
    let m = c.lookup(Resolver::Musl, NAME, search, 5).await?;
    show("musl", &m);
    print_leaked(&bh, mark);
    Ok(())
}

/// The same lookups with `nameserver` in the pod's resolv.conf.
async fn lookups_via(c: &Cluster, search: &[&str], nameserver: IpAddr) -> Result<()> {
    let bh = c.blackhole();
    let mark = bh.mark();
    for (tag, resolver) in [("glibc", Resolver::Glibc), ("musl", Resolver::Musl)] {
        let spec = LookupSpec::new(resolver, NAME, nameserver, search, 5);
        show(tag, &c.lookup_with(&spec).await?);
    }
    print_leaked(&bh, mark);
    Ok(())
}

fn print_leaked(bh: &dnspolicy_e2e::QueryLog, mark: u64) {
    let leaked = bh.names_ending_with(mark, env::NODE_SEARCH);
    println!(
        "  queries that reached the (black-holed) upstream: {}",
        if leaked.is_empty() {
            "none".into()
        } else {
            leaked.join(", ")
        }
    );
}

/// The seed's lookups from the real glibc and musl pods on the real node.
fn real_pod_lookups(c: &Cluster, blackhole: &DnsServer) {
    let mark = blackhole.log.mark();
    let (glibc, musl) = seed_pods::seed_lookups(c);
    for (tag, l) in [("glibc", &glibc), ("musl", &musl)] {
        show_pod(tag, l);
    }
    let leaked = blackhole.log.names_ending_with(mark, env::NODE_SEARCH);
    println!(
        "  queries that reached the node's (black-holed) nameserver {}: {}",
        node::HOST_IP,
        if leaked.is_empty() {
            "none".into()
        } else {
            leaked.join(", ")
        }
    );
}

fn show_pod(tag: &str, l: &PodLookup) {
    let out = l.output.trim();
    let verdict = if l.ok {
        // getent prints "IP STREAM name" lines, the musl probe "ADDR IP".
        let mut addrs: Vec<IpAddr> = out
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        addrs.dedup();
        format!("OK {addrs:?}")
    } else {
        format!("FAILED ({})", out.lines().last().unwrap_or_default().trim())
    };
    println!(
        "  {tag:<6} {:>7.3}s  {verdict}  (the kubectl exec round trip included)",
        l.secs
    );
}

/// The real node with real CoreDNS pods behind kube-dns and the two probe
/// pods, and a black hole on the node file's nameserver.
async fn start_real_pods(c: &Cluster) -> Result<DnsServer> {
    c.stop_node()?;
    let t0 = Instant::now();
    c.ensure_node(&NodeOptions::default())?;
    let blackhole = c.start_dns_server(
        format!("{}:53", node::HOST_IP).parse()?,
        "",
        dnspolicy_e2e::dns::Action::Drop,
    )?;
    seed_pods::start(c).await?;
    println!(
        "   node, 2 real CoreDNS pods ({}), a glibc and a musl pod Ready in {:.1}s",
        node::image("coredns")?,
        t0.elapsed().as_secs_f64()
    );
    let resolv = node::pod_resolv_conf(&c.layout, "default", seed_pods::GLIBC_POD)?;
    println!("   the glibc pod's /etc/resolv.conf, written by kubelet:");
    for l in resolv.lines() {
        println!("     {l}");
    }
    Ok(blackhole)
}

fn stop_real_pods(c: &Cluster) -> Result<()> {
    seed_pods::restore(c);
    c.stop_node()
}

const NODE_LOCAL: &str = "node-local-dns";
const ADDON: &str =
    include_str!("../../../dns/tests/fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");

/// NodeLocal DNSCache intercepting the kube-dns Service IP: it sends the
/// suffix upstream itself until the operator gives it a block per suffix.
async fn node_local_cache(c: &Cluster, search: &[&str], frigate: IpAddr) -> Result<()> {
    println!(
        "\n== 7. NodeLocal DNSCache in front of CoreDNS (the addon for iptables kube-proxy: it intercepts the kube-dns IP {}, so pods ask the cache)",
        env::DNS_SVC_IP
    );
    let corefile = ADDON
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", env::CLUSTER_DOMAIN)
        .replace("__PILLAR__DNS__SERVER__", env::DNS_SVC_IP);
    let indented: String = corefile.lines().map(|l| format!("    {l}\n")).collect();
    let config_map = |mode: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {NODE_LOCAL}\n  namespace: kube-system\n  labels: {{addonmanager.kubernetes.io/mode: {mode}}}\ndata:\n  Corefile: |\n{indented}"
        )
    };
    c.kubectl_stdin(&["apply", "-f", "-"], &config_map("Reconcile"))?;
    let cache = NodeCache::start(c, NODE_LOCAL, &env::coredns_kubeadm_version()).await?;
    let shown = async {
        cache.wait_answer(NAME, frigate, Duration::from_secs(60)).await?;
        println!(
            "   kube-system/{NODE_LOCAL} is labelled addonmanager.kubernetes.io/mode=Reconcile: the operator must not edit it"
        );
        let why = wait_jsonpath(
            c,
            "{.status.conditions[?(@.type=='Ready')].reason}",
            "NodeLocalNotCovered",
        )
        .await?;
        println!("   tailnet Ready=False {why}:");
        println!(
            "     {}",
            c.kubectl(&[
                "get",
                "cdp",
                "tailnet",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].message}",
            ])?
        );
        println!("   the seed's lookups through the cache:");
        lookups_via(c, search, cache.nameserver()).await?;
        println!(
            "   relabelled EnsureExists: the operator writes a block per suffix, the cache's reload plugin loads it"
        );
        c.kubectl(&[
            "-n",
            "kube-system",
            "label",
            "configmap",
            NODE_LOCAL,
            "addonmanager.kubernetes.io/mode=EnsureExists",
            "--overwrite",
        ])?;
        wait_jsonpath(c, "{.status.conditions[?(@.type=='Ready')].status}", "True").await?;
        println!(
            "   status.dnsPaths: {}",
            c.kubectl(&["get", "cdp", "tailnet", "-o", "jsonpath={.status.dnsPaths}"])?
        );
        println!("   the same lookups through the cache:");
        lookups_via(c, search, cache.nameserver()).await
    }
    .await;
    drop(cache);
    // Later suites share this cluster: leave no cache ConfigMap behind.
    c.kubectl(&["-n", "kube-system", "delete", "configmap", NODE_LOCAL])?;
    shown
}

/// Waits until the tailnet policy's `jsonpath` reads `want`.
async fn wait_jsonpath(c: &Cluster, jsonpath: &str, want: &str) -> Result<String> {
    let t0 = Instant::now();
    loop {
        let got = c.kubectl(&[
            "get",
            "cdp",
            "tailnet",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])?;
        if got.trim() == want {
            return Ok(got);
        }
        if t0.elapsed() > Duration::from_secs(90) {
            bail!("{jsonpath} is {got:?}, want {want}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Pods on a Tailscale node, by namespace, as the policy counts them: kubelet
/// wrote the tailnet suffix into their resolv.conf when they started.
const POLLUTED: [(&str, usize); 3] = [
    ("workflow-engine", 3),
    ("payments", 2),
    ("video-management-system", 1),
];

async fn polluted_pods(c: &Cluster) -> Result<()> {
    let total: usize = POLLUTED.iter().map(|(_, n)| n).sum();
    println!(
        "\n== 5. Which pods still carry the suffix: a Tailscale node (its node agent published `search {}`) runs {total} pods",
        env::NODE_SEARCH
    );
    c.add_node("tailnode", &[])?;
    c.kubectl(&[
        "annotate",
        "node",
        "tailnode",
        "--overwrite",
        &format!("dnspolicy.dev/host-search={}", env::NODE_SEARCH),
    ])?;
    start_pods(c, "app")?;
    wait_polluted(c, total as u64).await?;
    println!("{}", c.kubectl(&["get", "clusterdnspolicies"])?);
    println!("$ dnspolicy status\n{}", dnspolicy_status(c)?);

    println!(
        "== 6. The node is fixed (tailscale up --accept-dns=false) and the pods recreated: they start clean"
    );
    c.kubectl(&[
        "annotate",
        "node",
        "tailnode",
        "--overwrite",
        "dnspolicy.dev/host-search=",
    ])?;
    for (ns, _) in POLLUTED {
        c.kubectl(&[
            "-n",
            ns,
            "delete",
            "pod",
            "--all",
            "--wait=false",
            "--grace-period=0",
            "--force",
        ])?;
    }
    wait_polluted(c, 0).await?;
    println!("{}", c.kubectl(&["get", "clusterdnspolicies"])?);
    Ok(())
}

/// The demo's pods on the Tailscale node, named `<prefix>-<i>`.
fn start_pods(c: &Cluster, prefix: &str) -> Result<()> {
    for (ns, n) in POLLUTED {
        c.kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        )?;
        for i in 0..n {
            c.kubectl_stdin(
                &["apply", "-f", "-"],
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {prefix}-{i}, namespace: {ns}}}\nspec:\n  nodeName: tailnode\n  tolerations: [{{operator: Exists}}]\n  containers: [{{name: app, image: registry.invalid/app}}]\n"
                ),
            )?;
        }
    }
    Ok(())
}

async fn wait_polluted(c: &Cluster, want: u64) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let got = c.kubectl(&[
            "get",
            "cdp",
            "tailnet",
            "-o",
            "jsonpath={.status.pods.polluted}",
        ])?;
        if got.trim().parse::<u64>().ok() == Some(want) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("status.pods.polluted is {got:?}, want {want}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn dnspolicy_status(c: &Cluster) -> Result<String> {
    let out = std::process::Command::new(operator::cli_bin()?)
        .arg("status")
        .env("KUBECONFIG", c.kubeconfig())
        .output()?;
    if !out.status.success() {
        bail!("dnspolicy status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    if let Err(e) = rt.block_on(demo()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn demo() -> Result<()> {
    println!(
        "== 1. A local real cluster: etcd, kube-apiserver {}, kwok nodes, CoreDNS {}",
        env::K8S_VERSION,
        env::coredns_kubeadm_version()
    );
    let t0 = Instant::now();
    let c = Cluster::ensure().await?;
    println!(
        "   ready in {:.1}s; export KUBECONFIG={}",
        t0.elapsed().as_secs_f64(),
        c.kubeconfig().display()
    );
    let ip = c.deploy_frigate(NS, 1, "e2e-demo")?;
    println!("   Service {NS}/frigate has ClusterIP {ip}");

    let search = resolver::pod_search("default", &[env::NODE_SEARCH]);
    let search: Vec<&str> = search.iter().map(String::as_str).collect();
    println!(
        "\n== 2. The seed: a pod on a Tailscale node (search {}; ndots:5), upstream unreachable",
        search.join(" ")
    );
    lookups(&c, &search).await?;

    println!(
        "\n== 2b. The same from real pods: a real node (kubelet {}, containerd, CNI, kube-proxy in a netns), real CoreDNS pods behind the kube-dns Service IP {}, the node's nameserver black-holed",
        env::K8S_VERSION,
        env::DNS_SVC_IP
    );
    let real = match start_real_pods(&c).await {
        Ok(blackhole) => {
            real_pod_lookups(&c, &blackhole);
            blackhole
        }
        Err(e) => {
            let _ = stop_real_pods(&c);
            return Err(e);
        }
    };

    println!(
        "\n== 3. Apply the example policy (manifests/examples/tailscale.yaml) with the operator"
    );
    operator::install_crd(&c)?;
    // The harness's node-local cache loads an edit in seconds (see nodecache).
    let mut opproc = Operator::start(&c, "demo", &["--nodelocal-reload-window", "5s"])?;
    // The example's forwardToRef names a Tailscale DNSConfig, which needs a
    // tailnet; here the tailnet resolver is the harness's answering upstream
    // on 127.0.54.2, given as a literal forwardTo.
    let policy = operator::tailscale_forwarding_to(&env::UPSTREAM_IP.to_string());
    let before = c.coredns_template_hashes().await?;
    let t1 = Instant::now();
    c.kubectl_stdin(&["apply", "-f", "-"], &policy)?;
    let res = async {
        loop {
            let pods = c.coredns_pods().await?;
            let rolled = !pods.is_empty()
                && pods
                    .iter()
                    .all(|p| p.ready && !p.terminating && !before.contains(&p.pod_template_hash));
            if rolled {
                break;
            }
            if let Some(st) = opproc.exited() {
                bail!("operator exited ({st}); log {}", opproc.log.display());
            }
            if t1.elapsed() > Duration::from_secs(90) {
                bail!(
                    "CoreDNS did not roll within 90s; operator log {}",
                    opproc.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = res {
        opproc.kill();
        let _ = stop_real_pods(&c);
        return Err(e);
    }
    println!(
        "   CoreDNS rolled with the managed Corefile in {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    println!("\n== 4. The same lookups");
    lookups(&c, &search).await?;
    println!(
        "\n== 4b. The same from the real pods (the real CoreDNS pods restarted to read the managed Corefile: the operator rolls the cluster's CoreDNS Deployment, not this second one)"
    );
    let shown = seed_pods::restart_coredns(&c).await;
    if shown.is_ok() {
        real_pod_lookups(&c, &real);
    }
    drop(real);
    let stopped = stop_real_pods(&c);
    if let Err(e) = shown.and(stopped) {
        opproc.kill();
        return Err(e);
    }
    let st = c.kubectl(&["get", "clusterdnspolicies"])?;
    println!("\n{st}");

    let mut shown = polluted_pods(&c).await;
    if shown.is_ok() {
        shown = node_local_cache(&c, &search, ip).await;
    }
    opproc.kill();
    shown?;
    println!("The cluster stays up (KUBECONFIG above); `just down` stops it.");
    Ok(())
}
