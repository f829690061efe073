//! forwardToRef to a Tailscale DNSConfig on the real local cluster: real
//! tailnet hosts resolve through it from real glibc and musl resolvers, a
//! changed address is followed, a black-holed target is reported in status,
//! Events and metrics, and a missing DNSConfig is named in Ready. The
//! references are read from the operator's watched caches: a policy that
//! exists before the operator starts is never reported unresolved while
//! those caches are still listing.
//!
//! Tailscale's published DNSConfig CRD is installed (copied out of the
//! tailscale.com Go module by `build-deps.sh tailscale-crd`). Tailscale's
//! operator itself needs a tailnet and cannot run here, so the test writes
//! the DNSConfig's status as that operator would (`status.nameserver.ip`,
//! through the status subresource), pointing at DNS servers the harness runs
//! on loopback.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, DnsServer, Flavor, Resolver, dns, env, net};

const TAILNET: &str = "tailb45a71.ts.net";
const MYHOST: &str = "myhost.tailb45a71.ts.net";
/// The first and the second nameserver address the DNSConfig publishes.
const NAMESERVER_A: &str = "127.0.55.21";
const NAMESERVER_B: &str = "127.0.55.22";
/// What each answers for myhost, so a lookup shows which one it reached.
const MYHOST_VIA_A: &str = "100.64.0.7";
const MYHOST_VIA_B: &str = "100.64.0.8";
const TAILSCALE_VERSION: &str = "v1.90.0";
/// The pod's search list on a Tailscale node (kubelet appends the host's).
const POD_SEARCH: [&str; 4] = [
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    TAILNET,
];
const WAIT: Duration = Duration::from_secs(60);

fn dnsconfig_crd() -> Result<PathBuf> {
    let path = env::cache_dir()
        .join("tailscale")
        .join(TAILSCALE_VERSION)
        .join("tailscale.com_dnsconfigs.yaml");
    if !path.is_file() {
        bail!(
            "{} is missing: run `bash e2e/scripts/build-deps.sh tailscale-crd` (copies Tailscale's DNSConfig CRD out of the tailscale.com {TAILSCALE_VERSION} Go module)",
            path.display()
        );
    }
    Ok(path)
}

/// A DNSConfig as a user writes it (Tailscale's operator then runs the
/// nameserver and fills in the status).
const DNSCONFIG: &str = "apiVersion: tailscale.com/v1alpha1
kind: DNSConfig
metadata:
  name: ts-dns
spec:
  nameserver: {}
";

/// Writes `status.nameserver.ip` as Tailscale's operator does.
fn publish_nameserver(c: &Cluster, ip: &str) -> Result<()> {
    let patch = format!(r#"{{"status":{{"nameserver":{{"ip":"{ip}"}}}}}}"#);
    c.kubectl(&[
        "patch",
        "dnsconfig",
        "ts-dns",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])?;
    Ok(())
}

fn start_nameserver(c: &Cluster, ip: &str, myhost: &str) -> Result<DnsServer> {
    c.start_dns_server(
        format!("{ip}:53").parse()?,
        &format!("{MYHOST} A {myhost}\n"),
        dns::Action::Nxdomain,
    )
}

/// myhost resolves to `want` from glibc and musl, as a pod on a Tailscale
/// node looks it up (search list with the tailnet, ndots 5).
async fn myhost_resolves(c: &Cluster, want: &str) -> Result<()> {
    let want: IpAddr = want.parse()?;
    for r in [Resolver::Glibc, Resolver::Musl] {
        let l = c.lookup(r, MYHOST, &POD_SEARCH, 5).await?;
        ensure!(
            l.ok && l.addrs == vec![want],
            "{r:?} {MYHOST}: want {want}, got {l:?}"
        );
        println!("{r:?} {MYHOST} -> {want} in {:?}", l.elapsed);
    }
    Ok(())
}

/// The `tailnet` policy's Warning Events with `reason`, as `note`s.
fn warning_notes(c: &Cluster, reason: &str) -> Result<Vec<String>> {
    policy_warning_notes(c, "tailnet", reason)
}

/// Policy `name`'s Warning Events with `reason`, as `note`s.
fn policy_warning_notes(c: &Cluster, name: &str, reason: &str) -> Result<Vec<String>> {
    let events = get_json(c, &["events.events.k8s.io", "-A"])?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["name"] == name && e["reason"] == reason && e["type"] == "Warning"
        })
        .filter_map(|e| e["note"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dnsconfig_reference_resolves_follows_and_reports() -> Result<()> {
    let crd = dnsconfig_crd()?;
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    c.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        crd.to_str().context("path")?,
    ])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/dnsconfigs.tailscale.com",
        "--timeout=30s",
    ])?;
    let _a = start_nameserver(&c, NAMESERVER_A, MYHOST_VIA_A)?;
    let _b = start_nameserver(&c, NAMESERVER_B, MYHOST_VIA_B)?;
    apply(&c, DNSCONFIG)?;
    publish_nameserver(&c, NAMESERVER_A)?;
    // The shipped example, unchanged: forwardToRef to the DNSConfig ts-dns.
    // It exists before the operator starts, so the first reconcile runs
    // while the DNSConfig cache is still listing.
    apply(&c, TAILSCALE_EXAMPLE)?;
    let mut op = Operator::start(&c, "forward-targets", &[])?;
    let p = op.ready(&c, "tailnet", WAIT).await?;
    let early = warning_notes(&c, "ForwardRefUnresolved")?;
    ensure!(
        early.is_empty(),
        "reported unresolved before the cache had listed: {early:?}"
    );
    let reachable = condition(&p, "ForwardTargetsReachable");
    ensure!(
        reachable
            .as_ref()
            .is_some_and(|(s, _, m)| s == "True" && m.contains(NAMESERVER_A)),
        "ForwardTargetsReachable: {reachable:?}"
    );
    ensure!(
        corefile(&c)?.contains(&format!("forward . {NAMESERVER_A}:53")),
        "the Corefile does not forward to the DNSConfig's nameserver:\n{}",
        corefile(&c)?
    );
    rolled(&c).await?;
    myhost_resolves(&c, MYHOST_VIA_A).await?;

    // Tailscale's nameserver moves: the Corefile follows without a spec change.
    let t0 = Instant::now();
    publish_nameserver(&c, NAMESERVER_B)?;
    let want = format!("forward . {NAMESERVER_B}:53");
    wait_for("the Corefile to follow the new address", WAIT, || {
        Ok(corefile(&c)?.contains(&want).then_some(()))
    })
    .await?;
    println!("address change -> Corefile in {:?}", t0.elapsed());
    op.ready(&c, "tailnet", WAIT).await?;
    rolled(&c).await?;
    println!("address change -> Ready again in {:?}", t0.elapsed());
    myhost_resolves(&c, MYHOST_VIA_B).await?;

    // The nameserver goes silent (the harness's black hole reads and never
    // answers): status, a Warning Event and the metric say so.
    let t0 = Instant::now();
    let blackhole = format!("{}:53", env::BLACKHOLE_IP);
    publish_nameserver(&c, &env::BLACKHOLE_IP.to_string())?;
    let p = wait_for("ForwardTargetsReachable=False", WAIT, || {
        let p = policy(&c, "tailnet")?;
        Ok(condition(&p, "ForwardTargetsReachable")
            .is_some_and(|(s, _, m)| s == "False" && m.contains(&blackhole))
            .then_some(p))
    })
    .await?;
    println!("black-holed target -> status in {:?}", t0.elapsed());
    let (_, reason, message) = condition(&p, "ForwardTargetsReachable").context("condition")?;
    ensure!(reason == "ForwardTargetUnreachable", "reason {reason}");
    ensure!(
        message.contains(TAILNET),
        "the message names no suffix: {message}"
    );
    let ready = condition(&p, "Ready");
    ensure!(
        ready
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == "ForwardTargetUnreachable"),
        "Ready: {ready:?}"
    );
    let notes = wait_for("a ForwardTargetUnreachable Warning Event", WAIT, || {
        let notes = warning_notes(&c, "ForwardTargetUnreachable")?;
        Ok(notes
            .iter()
            .any(|n| n.contains(&blackhole) && n.contains(TAILNET))
            .then_some(notes))
    })
    .await?;
    println!("Warning Event: {notes:?}");
    let series = format!(
        "dnspolicy_forward_target_reachable{{policy=\"tailnet\",suffix=\"{TAILNET}\",target=\"{blackhole}\"}} 0"
    );
    wait_for("the metric to show the silent target", WAIT, || {
        let m = net::http_get(&op.metrics, "/metrics")?;
        Ok(m.contains(&series).then_some(()))
    })
    .await?;
    println!(
        "black-holed target -> status, Event and metric in {:?}",
        t0.elapsed()
    );

    // The DNSConfig goes away: Ready=False names the reference.
    c.kubectl(&["delete", "dnsconfig", "ts-dns", "--wait=true"])?;
    let p = wait_for("Ready=False with ForwardRefUnresolved", WAIT, || {
        let p = policy(&c, "tailnet")?;
        Ok(condition(&p, "Ready")
            .is_some_and(|(s, r, _)| s == "False" && r == "ForwardRefUnresolved")
            .then_some(p))
    })
    .await?;
    let (_, _, message) = condition(&p, "Ready").context("Ready")?;
    ensure!(
        message.contains("DNSConfig ts-dns") && message.contains("forwardToRef"),
        "Ready's message does not name the reference: {message}"
    );
    println!("missing DNSConfig: {message}");

    op.delete_policies_and_stop(&c)?;
    delete_dnsconfig_crd(&c)?;
    Ok(())
}

/// Removes Tailscale's DNSConfig CRD (and so every DNSConfig), if installed.
fn delete_dnsconfig_crd(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "delete",
        "crd",
        "dnsconfigs.tailscale.com",
        "--ignore-not-found",
    ])?;
    Ok(())
}

/// A Service reference needing port 53, as a user writes it.
const CORP_POLICY: &str = "apiVersion: dnspolicy.dev/v1alpha1
kind: ClusterDNSPolicy
metadata:
  name: corp
spec:
  foreignSuffixes:
  - suffix: corp.example
    forwardToRef: {kind: Service, namespace: dns, name: corp-dns}
";

/// The corp-dns Service, declaring `port`.
fn corp_service(port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: corp-dns
  namespace: dns
spec:
  ports:
  - {{name: dns, port: {port}, protocol: UDP}}
"
    )
}

/// Waits for policy `name` to be Ready=False ForwardRefUnresolved with a
/// message that contains `want`; returns the message.
async fn unresolved_with(c: &Cluster, name: &str, want: &str) -> Result<String> {
    let p = wait_for(
        &format!("{name}: Ready=False ForwardRefUnresolved saying {want:?}"),
        WAIT,
        || {
            let p = policy(c, name)?;
            Ok(condition(&p, "Ready")
                .filter(|(s, r, m)| s == "False" && r == "ForwardRefUnresolved" && m.contains(want))
                .map(|(_, _, m)| m))
        },
    )
    .await?;
    println!("{name}: {p}");
    Ok(p)
}

/// A Service reference and a DNSConfig reference without the DNSConfig CRD,
/// read from the operator's watched caches: each state of the Service
/// (missing, created without port 53, deleted, recreated headless) reaches
/// Ready's message through the Service watch alone, with no spec change.
/// The Service's ClusterIP itself is not forwarded to here: the operator
/// would probe it, and the harness dials nothing outside 127.0.0.0/8 (a
/// resolved Service's address is unit-tested in
/// operator/src/controller/references.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reference_and_a_dnsconfig_without_its_crd_are_named_in_ready() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    delete_dnsconfig_crd(&c)?;
    c.kubectl(&["create", "namespace", "dns"])
        .or_else(|_| c.kubectl(&["get", "namespace", "dns"]))?;
    c.kubectl(&[
        "delete",
        "service",
        "-n",
        "dns",
        "corp-dns",
        "--ignore-not-found",
    ])?;
    let mut op = Operator::start(&c, "service-ref", &[])?;

    apply(&c, TAILSCALE_EXAMPLE)?;
    let message = unresolved_with(&c, "tailnet", "DNSConfig CRD").await?;
    ensure!(
        message.contains("not served") && message.contains("forwardToRef (DNSConfig ts-dns)"),
        "the message does not say the CRD is not served: {message}"
    );

    apply(&c, CORP_POLICY)?;
    unresolved_with(&c, "corp", "Service dns/corp-dns does not exist").await?;
    apply(&c, &corp_service(5353))?;
    unresolved_with(&c, "corp", "Service dns/corp-dns declares no port 53").await?;
    c.kubectl(&["delete", "service", "-n", "dns", "corp-dns", "--wait=true"])?;
    unresolved_with(&c, "corp", "Service dns/corp-dns does not exist").await?;
    // Recreated headless: port 53, but no single address.
    apply(
        &c,
        &corp_service(53).replace("spec:\n", "spec:\n  clusterIP: None\n"),
    )?;
    unresolved_with(&c, "corp", "Service dns/corp-dns has no ClusterIP").await?;
    // One Warning Event per change of message. kube-runtime's Recorder
    // keys an Event by (type, reason, action, regarding), not by note, so the
    // changes after the first show as the series count of that one Event.
    let events = get_json(&c, &["events.events.k8s.io", "-A"])?;
    let unresolved: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["name"] == "corp"
                && e["reason"] == "ForwardRefUnresolved"
                && e["type"] == "Warning"
        })
        .collect();
    let published: u64 = unresolved
        .iter()
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum();
    ensure!(
        published >= 4
            && unresolved.iter().any(|e| e["note"]
                .as_str()
                .is_some_and(|n| n.contains("does not exist"))),
        "a Warning Event per change (4: missing, no port 53, missing, no ClusterIP): {unresolved:?}"
    );
    op.delete_policies_and_stop(&c)?;
    c.kubectl(&["delete", "namespace", "dns", "--wait=false"])?;
    Ok(())
}

/// The CRD's CEL rules on the real apiserver: a suffix takes forwardTo or
/// forwardToRef, not both, and a Service reference needs its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_refuses_both_forward_fields_and_a_service_without_namespace() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    install_crd(&c)?;
    let policy = |name: &str, suffix: &str| {
        format!(
            "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: {name}}}\nspec:\n  foreignSuffixes:\n  - {suffix}\n"
        )
    };
    for (name, suffix, refusal) in [
        (
            "both",
            "{suffix: corp.example, forwardTo: ['10.20.0.53'], forwardToRef: {kind: DNSConfig, name: ts-dns}}",
            "forwardTo (literal addresses) or forwardToRef",
        ),
        (
            "no-namespace",
            "{suffix: corp.example, forwardToRef: {kind: Service, name: corp-dns}}",
            "a Service reference needs a namespace",
        ),
        (
            "dnsconfig-namespace",
            "{suffix: corp.example, forwardToRef: {kind: DNSConfig, namespace: x, name: ts-dns}}",
            "a DNSConfig (cluster-scoped) takes none",
        ),
    ] {
        let r = c.kubectl_stdin(&["apply", "-f", "-"], &policy(name, suffix));
        let e = match r {
            Ok(out) => bail!("{name}: admitted, should be refused: {out}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            e.contains(refusal),
            "{name}: refused, but not by the CEL rule: {e}"
        );
    }
    // Each alone is admitted.
    for (name, suffix) in [
        (
            "ref-service",
            "{suffix: corp.example, forwardToRef: {kind: Service, namespace: dns, name: corp-dns, port: 53}}",
        ),
        (
            "ref-dnsconfig",
            "{suffix: corp.example, forwardToRef: {kind: DNSConfig, name: ts-dns}}",
        ),
    ] {
        c.kubectl_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            &policy(name, suffix),
        )?;
    }
    Ok(())
}
