//! The controller on the real local cluster: apply, change, re-apply,
//! delete, merge and conflict, drift, the k3s channel, rollback of a
//! Corefile real CoreDNS refuses, crash safety.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::{Cluster, Flavor, env};
use support::*;

const BEGIN_DOT: &str = "# dnspolicy:begin dot-block";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_change_reapply_and_delete() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "lifecycle", &[])?;

    // Apply: managed stanzas in the ConfigMap, CoreDNS rolled, Ready for this generation.
    let t0 = Instant::now();
    apply(&c, TAILSCALE)?;
    let p = wait_ready(&c, "tailnet", WAIT).await.with_context(|| op.log_text())?;
    println!("apply -> Ready=True in {:?}", t0.elapsed());
    let applied = corefile(&c)?;
    ensure!(applied.contains(BEGIN_DOT), "no managed region:\n{applied}");
    ensure!(applied.contains("tailb45a71[.]ts[.]net"), "no rewrite for the suffix:\n{applied}");
    let hash = p["status"]["corefileHash"].as_str().context("no corefileHash")?.to_string();
    ensure!(template_hash(&c)? == Some(hash.clone()), "Deployment not rolled to {hash}");
    ensure!(p["status"]["observedGeneration"] == p["metadata"]["generation"]);
    for (t, want) in [("Reconciling", "False"), ("Stalled", "False"), ("CorefileApplied", "True"), ("RolledOut", "True")] {
        let got = condition(&p, t).map(|c| c.0);
        ensure!(got.as_deref() == Some(want), "{t} is {got:?}, want {want}");
    }
    rolled(&c).await?;

    // Change: one more rollout to a new hash.
    apply(&c, &TAILSCALE.replace("action: Rewrite", "action: NXDomain"))?;
    let p = wait_for("the changed policy to roll out", WAIT, || {
        let p = policy(&c, "tailnet")?;
        Ok((is_ready(&p) && p["status"]["corefileHash"].as_str() != Some(&hash)).then_some(p))
    })
    .await?;
    let changed_hash = p["status"]["corefileHash"].as_str().unwrap().to_string();
    ensure!(template_hash(&c)? == Some(changed_hash.clone()));
    ensure!(corefile(&c)?.contains("rcode NXDOMAIN"));
    rolled(&c).await?;

    // Apply the same spec again: no write at all, counted in the audit log.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mark = audit_mark(&c)?;
    apply(&c, &TAILSCALE.replace("action: Rewrite", "action: NXDomain"))?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let writes = operator_writes_since(&c, mark)?;
    ensure!(writes.is_empty(), "re-applying the same spec wrote: {writes:?}");
    println!("re-apply of the same spec: 0 operator writes in 15 s");

    // Delete: the Corefile is byte for byte the original, CoreDNS rolled back.
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    let restored = corefile(&c)?;
    ensure!(restored == original, "Corefile not restored byte for byte:\n--- original\n{original}\n--- now\n{restored}");
    let stock_hash = dnspolicy::corefile::corefile_hash(&original);
    ensure!(template_hash(&c)? == Some(stock_hash.clone()), "Deployment not rolled back to {stock_hash}");
    rolled(&c).await?;
    let cm = get_json(&c, &["-n", "kube-system", "configmap", "coredns"])?;
    let leftovers: Vec<&String> = cm["metadata"]["annotations"]
        .as_object()
        .map(|a| a.keys().filter(|k| k.starts_with("dnspolicy.dev/")).collect())
        .unwrap_or_default();
    ensure!(leftovers.is_empty(), "dnspolicy annotations left on the ConfigMap: {leftovers:?}");
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_merge_conflicts_stall_and_hand_edits() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "merge", &[])?;

    apply(&c, TAILSCALE)?;
    apply(&c, OPENSTACK)?;
    wait_ready(&c, "tailnet", WAIT).await.with_context(|| op.log_text())?;
    let openstack = wait_ready(&c, "openstack", WAIT).await?;
    let merged = corefile(&c)?;
    ensure!(merged.contains("tailb45a71[.]ts[.]net") && merged.contains("openstacklocal"), "not merged:\n{merged}");
    let hash = openstack["status"]["corefileHash"].clone();
    rolled(&c).await?;

    // A third policy contradicting the first: Stalled=Conflict, the others untouched.
    let mark = audit_mark(&c)?;
    apply(
        &c,
        "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {name: zz-rogue}\nspec:\n  foreignSuffixes:\n  - {suffix: tailb45a71.ts.net, action: NXDomain}\n",
    )?;
    let rogue = wait_for("zz-rogue Stalled", WAIT, || {
        let p = policy(&c, "zz-rogue")?;
        Ok(condition(&p, "Stalled").filter(|s| s.0 == "True").map(|s| (s, p)))
    })
    .await?;
    ensure!(rogue.0.1 == "Conflict", "reason {:?}", rogue.0);
    ensure!(rogue.0.2.contains("tailnet"), "message does not name the winner: {}", rogue.0.2);
    ensure!(corefile(&c)? == merged, "the conflict changed the Corefile");
    let writes = operator_writes_since(&c, mark)?;
    ensure!(
        writes.iter().all(|w| w.contains("clusterdnspolicies/zz-rogue") || w.contains("events/zz-rogue.")),
        "the conflict wrote more than the rogue's own status: {writes:?}"
    );
    ensure!(policy(&c, "openstack")?["status"]["corefileHash"] == hash);

    // Hand edits: inside the managed region reverted, outside kept.
    let inside = merged.replace("rcode NXDOMAIN", "rcode REFUSED");
    ensure!(inside != merged);
    let outside = inside.replace("    cache 30 {", "    # tuned by hand\n    cache 30 {");
    ensure!(outside != inside, "kubeadm fixture changed shape");
    c.set_corefile(&outside)?;
    let fixed = wait_for("the managed region to be put back", WAIT, || {
        let now = corefile(&c)?;
        Ok((!now.contains("rcode REFUSED")).then_some(now))
    })
    .await?;
    ensure!(fixed.contains("# tuned by hand"), "the hand edit outside the region was lost:\n{fixed}");
    ensure!(fixed.contains("rcode NXDOMAIN"));
    let events = c.kubectl(&["get", "events", "-A", "--field-selector", "reason=DriftCorrected", "-o", "name"])?;
    ensure!(!events.trim().is_empty(), "no DriftCorrected event");

    c.kubectl(&["delete", "cdp", "--all", "--wait=true", "--timeout=60s"])?;
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_corefile_gets_coredns_custom_keys_and_stays_unchanged() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::K3s, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "k3s", &[])?;
    apply(&c, TAILSCALE)?;
    wait_ready(&c, "tailnet", WAIT).await.with_context(|| op.log_text())?;
    ensure!(corefile(&c)? == original, "the k3s main Corefile was edited");
    let custom = get_json(&c, &["-n", "kube-system", "configmap", "coredns-custom"])?;
    let data = custom["data"].as_object().context("coredns-custom has no data")?;
    let keys: Vec<&String> = data.keys().collect();
    ensure!(keys.iter().any(|k| k.ends_with(".override")), "no .override key: {keys:?}");
    ensure!(keys.iter().any(|k| k.ends_with(".server")), "no .server key: {keys:?}");
    rolled(&c).await?;
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    ensure!(corefile(&c)? == original);
    let custom = get_json(&c, &["-n", "kube-system", "configmap", "coredns-custom"])?;
    let left: Vec<String> = custom["data"]
        .as_object()
        .map(|d| d.keys().filter(|k| k.starts_with("dnspolicy")).cloned().collect())
        .unwrap_or_default();
    ensure!(left.is_empty(), "dnspolicy keys left in coredns-custom: {left:?}");
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corefile_coredns_refuses_is_rolled_back() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let old = env::coredns_old_version();
    let original = fresh(&c, Flavor::Kubeadm, &old).await?;
    // Told the wrong version, the operator writes a `view` block the old CoreDNS does not know.
    let mut op = Operator::start(&c, "rollback", &["--coredns-version", "1.14.2", "--rollout-deadline", "15s"])?;
    apply(&c, TAILSCALE)?;
    let stalled = wait_for("Stalled=RolloutFailed", Duration::from_secs(90), || {
        let p = policy(&c, "tailnet")?;
        Ok(condition(&p, "Stalled").filter(|s| s.0 == "True" && s.1 == "RolloutFailed"))
    })
    .await
    .with_context(|| op.log_text())?;
    println!("Stalled: {}", stalled.2);
    let now = corefile(&c)?;
    ensure!(now == original, "the refused Corefile is still live:\n{now}");
    let addrs = rolled(&c).await?;
    let reply = c
        .query(addrs[0], "kubernetes.default.svc.cluster.local", 1, Duration::from_secs(2))
        .await?;
    ensure!(reply.rcode == 0 && !reply.addrs.is_empty(), "CoreDNS does not answer after the rollback: {reply:?}");
    // It stays put: no retry loop while the spec is unchanged.
    let mark = audit_mark(&c)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = operator_writes_since(&c, mark)?;
    ensure!(writes.is_empty(), "the operator kept writing after the rollback: {writes:?}");
    c.kubectl(&["delete", "cdp", "--all", "--wait=true", "--timeout=60s"])?;
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_corefile_write_and_rollout_converges() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let before = template_hash(&c)?;
    let mut op = Operator::start_with(&c, "crash", &[], &[("DNSPOLICY_FAILPOINT", "exit-after-configmap-write")], None)?;
    apply(&c, TAILSCALE)?;
    let status = wait_for("the operator to die after the ConfigMap write", WAIT, || Ok(op.exited())).await?;
    ensure!(status.code() == Some(86), "exited {status:?}; log:\n{}", op.log_text());
    ensure!(corefile(&c)?.contains(BEGIN_DOT), "the ConfigMap write did not happen");
    ensure!(template_hash(&c)? == before, "the rollout happened before the crash");
    let mut op = Operator::start(&c, "crash", &[])?;
    let p = wait_ready(&c, "tailnet", WAIT).await.with_context(|| op.log_text())?;
    ensure!(template_hash(&c)?.as_deref() == p["status"]["corefileHash"].as_str());
    rolled(&c).await?;
    c.kubectl(&["delete", "cdp", "--all", "--wait=true", "--timeout=60s"])?;
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_at_admission_naming_the_field() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    c.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd_path().to_str().unwrap()])?;
    c.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd/clusterdnspolicies.dnspolicy.dev"])?;
    for (spec, field) in [
        ("foreignSuffixes: [{suffix: \"x }\\nforward . 6.6.6.6\"}]", "spec.foreignSuffixes[0].suffix"),
        ("foreignSuffixes: [{suffix: svc.cluster.local}]", "spec.foreignSuffixes"),
        ("foreignSuffixes: []", "spec.foreignSuffixes"),
        ("foreignSuffixes: [{suffix: a.example}, {suffix: a.example}]", "spec.foreignSuffixes"),
    ] {
        let yaml = format!("apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: bad}}\nspec:\n  {spec}\n");
        let err = c.kubectl_stdin(&["apply", "-f", "-"], &yaml).err().context(format!("accepted: {spec}"))?;
        ensure!(format!("{err:#}").contains(field), "error for {spec} does not name {field}: {err:#}");
    }
    Ok(())
}
