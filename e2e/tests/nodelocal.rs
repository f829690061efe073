//! NodeLocal DNSCache beside CoreDNS, as a real running cache: the CoreDNS
//! build with node-cache's plugins only, intercepting the kube-dns Service IP
//! (the addon filled in for iptables kube-proxy, as seed 001 runs it), its
//! Corefile kept in step with `kube-system/node-local-dns` by the harness
//! (`dnspolicy_e2e::nodecache`). Pods' resolv.conf names the intercepted IP.
//!
//! One scenario, in order:
//! 1. Before any policy, the cache sends the polluted name straight to the
//!    node's (black-holed) upstream: musl fails, glibc only answers after
//!    its search list's queries time out there.
//! 2. With the ConfigMap labelled `addonmanager.kubernetes.io/mode=Reconcile`
//!    the operator refuses to write it: Ready=False NodeLocalNotCovered,
//!    saying to set EnsureExists, an Event, and the ConfigMap untouched.
//! 3. Labelled EnsureExists, the operator writes the blocks itself; the cache's
//!    reload loads them; Ready=True with both paths covered in
//!    `.status.dnsPaths`; glibc and musl answer through the cache and
//!    nothing suffixed reaches the upstream.
//! 4. Deleting the policy restores the ConfigMap's Corefile byte for byte and
//!    drops dnspolicy's annotation.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::nodecache::{INTERCEPTED, NodeCache};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::resolver::pod_search;
use dnspolicy_e2e::{Cluster, Flavor, LookupSpec, Resolver, dns, env};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const RELOAD_WINDOW: &str = "15s";
const CM: &str = "node-local-dns";
const NS: &str = "video-management-system";
const SVC_FQDN: &str = "frigate.video-management-system.svc.cluster.local";
const ADDON: &str =
    include_str!("../../dns/tests/fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");

/// The addon's Corefile as its instructions fill it in for iptables
/// kube-proxy: listening on 169.254.20.10 and the kube-dns Service IP.
fn intercepting() -> String {
    ADDON
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", env::CLUSTER_DOMAIN)
        .replace("__PILLAR__DNS__SERVER__", env::DNS_SVC_IP)
}

fn node_local_config_map(corefile: &str, mode: &str) -> String {
    let indented: String = corefile.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {CM}\n  namespace: kube-system\n  labels: {{addonmanager.kubernetes.io/mode: {mode}}}\ndata:\n  Corefile: |\n{indented}"
    )
}

fn node_local(c: &Cluster) -> Result<Value> {
    get_json(c, &["-n", "kube-system", "configmap", CM])
}

fn node_local_corefile(c: &Cluster) -> Result<String> {
    node_local(c)?["data"]["Corefile"]
        .as_str()
        .map(str::to_string)
        .context("node-local-dns has no Corefile")
}

/// The seed's lookup as a pod in `NS` on the polluted node makes it,
/// through the cache.
async fn lookup_through_cache(c: &Cluster, resolver: Resolver) -> Result<dnspolicy_e2e::Lookup> {
    let search = pod_search(NS, &[env::NODE_SEARCH]);
    let search: Vec<&str> = search.iter().map(String::as_str).collect();
    let spec = LookupSpec::new(
        resolver,
        SVC_FQDN,
        std::net::IpAddr::V4(INTERCEPTED),
        &search,
        5,
    );
    c.lookup_with(&spec).await
}

async fn wait_reason(c: &Cluster, name: &str, reason: &str) -> Result<Value> {
    wait_for(&format!("{name} Ready=False {reason}"), WAIT, || {
        let p = policy(c, name)?;
        Ok(match condition(&p, "Ready") {
            Some((status, r, _)) if status == "False" && r == reason => Some(p),
            _ => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_covers_a_running_node_local_cache_and_restores_it() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let version = env::coredns_kubeadm_version();
    fresh(&c, Flavor::Kubeadm, &version).await?;
    let frigate_ip = c.deploy_frigate(NS, 1, "e2e-test")?;
    c.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "configmap",
        CM,
        "--ignore-not-found",
    ])?;
    // As the addon manager keeps it: client-side apply, Reconcile.
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &node_local_config_map(&intercepting(), "Reconcile"),
    )?;
    let original = node_local_corefile(&c)?;
    let cache = NodeCache::start(&c, CM, &version).await?;
    let mut op = None;
    let result = scenario(&c, &cache, &mut op, &original, frigate_ip).await;
    let log = op.as_ref().map(Operator::log_text).unwrap_or_default();
    // Whatever happened, leave no cache ConfigMap for the next suite.
    let _ = c.kubectl(&[
        "delete",
        "cdp",
        "tailnet",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=60s",
    ]);
    if let Some(mut op) = op {
        op.stop()?;
    }
    c.kubectl(&["-n", "kube-system", "delete", "configmap", CM])?;
    let cache_log = cache.log_tail();
    drop(cache);
    result.with_context(|| format!("node-cache log:\n{cache_log}\noperator log:\n{log}"))
}

async fn scenario(
    c: &Cluster,
    cache: &NodeCache,
    op: &mut Option<Operator>,
    original: &str,
    frigate_ip: std::net::IpAddr,
) -> Result<()> {
    // The cache answers the cluster domain through CoreDNS.
    let cache_addr = SocketAddr::new(cache.nameserver(), 53);
    cache.wait_answer(SVC_FQDN, frigate_ip, WAIT).await?;

    // 1. before: the polluted name goes from the cache to the black hole
    let bh = c.blackhole();
    let mark = bh.mark();
    let musl = lookup_through_cache(c, Resolver::Musl).await?;
    let glibc = lookup_through_cache(c, Resolver::Glibc).await?;
    eprintln!(
        "before, through the cache: musl ok={} in {:?} ({}); glibc ok={} in {:?} {:?}",
        musl.ok,
        musl.elapsed,
        musl.output.trim(),
        glibc.ok,
        glibc.elapsed,
        glibc.addrs
    );
    ensure!(!musl.ok, "musl resolved before the policy: {musl:?}");
    let leaked = bh.names_ending_with(mark, env::NODE_SEARCH);
    ensure!(
        leaked.contains(&format!("{SVC_FQDN}.{}.", env::NODE_SEARCH)),
        "the cache did not send the polluted name upstream: {leaked:?}"
    );

    // 2. Reconcile mode: refused, nothing written, an Event
    // The harness's cache loads a write within ~3.5 s (300 ms sync, `reload 2s`
    // plus its jitter); a node's takes up to the default 120 s.
    *op = Some(Operator::start(
        c,
        "nodelocal",
        &["--nodelocal-reload-window", RELOAD_WINDOW],
    )?);
    apply(c, &TAILSCALE)?;
    let p = wait_reason(c, "tailnet", "NodeLocalNotCovered").await?;
    let (_, _, message) = condition(&p, "Ready").unwrap();
    ensure!(
        message.contains("kube-system/node-local-dns") && message.contains("EnsureExists"),
        "the message names neither the ConfigMap nor the fix: {message}"
    );
    ensure!(
        condition(&p, "CorefileApplied").map(|c| c.0).as_deref() == Some("True"),
        "CoreDNS itself did not get its stanzas: {:?}",
        condition(&p, "CorefileApplied")
    );
    let cache_path = &p["status"]["dnsPaths"][1];
    ensure!(
        cache_path["kind"] == "NodeLocalDNSCache" && cache_path["covered"] == false,
        "dnsPaths: {}",
        p["status"]["dnsPaths"]
    );
    ensure!(
        node_local_corefile(c)? == original,
        "the operator wrote a Reconcile-mode ConfigMap"
    );
    wait_for("a NodeLocalNotCovered Event", WAIT, || {
        let events = get_json(c, &["events", "-A"])?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["reason"] == "NodeLocalNotCovered")
            .cloned())
    })
    .await?;

    // 3. EnsureExists: the operator writes the blocks, the cache reloads
    c.kubectl(&[
        "-n",
        "kube-system",
        "label",
        "configmap",
        CM,
        "addonmanager.kubernetes.io/mode=EnsureExists",
        "--overwrite",
    ])?;
    // Written, but not Ready until every cache had the reload window.
    let loading = wait_for("the cache path written and loading", WAIT, || {
        let p = policy(c, "tailnet")?;
        let path = &p["status"]["dnsPaths"][1];
        let loading = path["covered"] == false
            && path["message"]
                .as_str()
                .is_some_and(|m| m.contains("reload window"));
        Ok(loading.then_some(p))
    })
    .await?;
    ensure!(
        condition(&loading, "Ready").map(|c| (c.0, c.1))
            == Some(("False".into(), "Progressing".into())),
        "Ready while the caches load: {:?}",
        condition(&loading, "Ready")
    );
    let p = op.as_ref().unwrap().ready(c, "tailnet", WAIT).await?;
    // Ready means the cache answers now: one query, no waiting.
    let polluted = format!("{SVC_FQDN}.{}", env::NODE_SEARCH);
    let reply = dns::query(cache_addr, &polluted, dns::TYPE_A, Duration::from_secs(2)).await;
    ensure!(
        reply.as_ref().is_ok_and(|r| r.addrs == vec![frigate_ip]),
        "Ready, but the cache answers {polluted}: {reply:?}"
    );
    let paths = &p["status"]["dnsPaths"];
    eprintln!("status.dnsPaths: {paths}");
    ensure!(
        paths[0]["kind"] == "CoreDNS" && paths[0]["covered"] == true,
        "dnsPaths: {paths}"
    );
    ensure!(
        paths[1]["kind"] == "NodeLocalDNSCache"
            && paths[1]["configMap"] == "kube-system/node-local-dns"
            && paths[1]["mode"] == "Interception"
            && paths[1]["covered"] == true
            && paths[1]["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == env::DNS_SVC_IP)),
        "dnsPaths: {paths}"
    );
    let edited = node_local_corefile(c)?;
    ensure!(
        edited.contains(&format!("{}:53 {{", env::NODE_SEARCH))
            && edited.starts_with(original.trim_end()),
        "the ConfigMap lacks the block, or its own text changed:\n{edited}"
    );
    let mark = bh.mark();
    for resolver in [Resolver::Glibc, Resolver::Musl] {
        let l = lookup_through_cache(c, resolver).await?;
        eprintln!(
            "after, through the cache: {resolver:?} ok={} in {:?} {:?}",
            l.ok, l.elapsed, l.addrs
        );
        ensure!(
            l.ok && l.addrs.contains(&frigate_ip),
            "{resolver:?} through the cache: {l:?}"
        );
    }
    let leaked = bh.names_ending_with(mark, env::NODE_SEARCH);
    ensure!(
        leaked.is_empty(),
        "suffixed names reached the upstream: {leaked:?}"
    );

    // 4. delete: the original back, byte for byte
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    let cm = node_local(c)?;
    ensure!(
        cm["data"]["Corefile"].as_str() == Some(original),
        "the Corefile was not restored byte for byte:\n{}",
        cm["data"]["Corefile"]
    );
    let left = dnspolicy_annotation_keys(&cm);
    ensure!(left.is_empty(), "dnspolicy's annotations left: {left:?}");
    Ok(())
}
