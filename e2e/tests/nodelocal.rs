//! A NodeLocal DNSCache beside CoreDNS is a second DNS path: it sends the
//! suffixes' names straight to the node's upstream. The operator must not
//! report Ready while that path is uncovered, and must say which ConfigMap
//! and what to do; once the cache's Corefile holds the blocks `dnspolicy
//! render` prints, the policy is Ready. (The cache's behaviour itself, before
//! and after those blocks, is proven on real CoreDNS in
//! dns/tests/nodelocal_coredns.rs; no cache process runs here.)

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env};

const WAIT: Duration = Duration::from_secs(60);
const ADDON: &str =
    include_str!("../../dns/tests/fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");

fn node_local_config_map(corefile: &str, mode: &str) -> String {
    let indented: String = corefile.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: node-local-dns\n  namespace: kube-system\n  labels: {{addonmanager.kubernetes.io/mode: {mode}}}\ndata:\n  Corefile: |\n{indented}"
    )
}

async fn wait_reason(c: &Cluster, name: &str, reason: &str) -> Result<serde_json::Value> {
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
async fn an_uncovered_node_local_cache_keeps_the_policy_not_ready() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    // The addon's ConfigMap, as the addon manager keeps it (Reconcile).
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &node_local_config_map(ADDON, "Reconcile"),
    )?;
    let mut op = Operator::start(&c, "nodelocal", &[])?;
    apply(&c, OPENSTACK)?;
    let p = wait_reason(&c, "openstack", "NodeLocalNotCovered")
        .await
        .with_context(|| op.log_text())?;
    let (_, _, message) = condition(&p, "Ready").unwrap();
    ensure!(
        message.contains("kube-system/node-local-dns") && message.contains("Reconcile"),
        "the message names neither the ConfigMap nor the addon manager: {message}"
    );
    // CoreDNS itself got its stanzas; only the other path is missing.
    ensure!(
        condition(&p, "CorefileApplied").map(|c| c.0).as_deref() == Some("True"),
        "CorefileApplied: {:?}",
        condition(&p, "CorefileApplied")
    );

    // The blocks `dnspolicy render` prints for the cache, applied by hand
    // (EnsureExists, so the addon manager leaves them): covered, Ready.
    let dir = c.layout.dir.join("nodelocal-test");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("Corefile"), ADDON)?;
    std::fs::write(dir.join("policy.yaml"), OPENSTACK)?;
    let rendered = std::process::Command::new(cli_bin()?)
        .args(["render", "--corefile"])
        .arg(dir.join("Corefile"))
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .output()?;
    ensure!(
        rendered.status.success(),
        "dnspolicy render: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let edited = String::from_utf8(rendered.stdout)?;
    ensure!(
        edited.contains("openstacklocal:53"),
        "no block for the suffix:\n{edited}"
    );
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &node_local_config_map(&edited, "EnsureExists"),
    )?;
    op.ready(&c, "openstack", WAIT).await?;

    c.kubectl(&["delete", "cdp", "openstack", "--wait=true", "--timeout=60s"])?;
    c.kubectl(&["-n", "kube-system", "delete", "configmap", "node-local-dns"])?;
    op.stop()?;
    Ok(())
}
