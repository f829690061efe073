//! Share, or stand down: when a GitOps tool keeps the coredns ConfigMap in
//! Git, dnspolicy puts its stanzas back once, then stops writing and says who
//! owns the Corefile and how to hand it over. Flux (server-side apply as
//! `kustomize-controller`) and Argo CD (client-side apply as
//! `argocd-controller`) are scripted here by their field managers and their
//! kind of apply; the real Flux controllers run in the gitops suites.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env};

const WAIT: Duration = Duration::from_secs(60);
/// How long the GitOps tool keeps syncing, every `SYNC_EVERY`:
/// DNSPOLICY_OWNERSHIP_MINUTES (whole minutes), 1 unless set. The issue's
/// "no flip-flop over 5 minutes" is `DNSPOLICY_OWNERSHIP_MINUTES=5`.
fn syncing() -> Result<Duration> {
    match std::env::var("DNSPOLICY_OWNERSHIP_MINUTES") {
        Ok(m) => m
            .parse::<u64>()
            .map(|m| Duration::from_secs(m * 60))
            .with_context(|| format!("DNSPOLICY_OWNERSHIP_MINUTES={m:?} is not whole minutes")),
        Err(_) => Ok(Duration::from_secs(60)),
    }
}
const SYNC_EVERY: Duration = Duration::from_secs(5);

fn config_map(corefile: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": corefile}
    })
    .to_string()
}

/// Patches of the coredns ConfigMap by the operator since `mark`.
fn corefile_writes(c: &Cluster, mark: u64) -> Result<usize> {
    Ok(operator_writes_since(c, mark)?
        .iter()
        .filter(|w| w.ends_with("configmaps/coredns"))
        .count())
}

/// `sync` puts Git's Corefile back every few seconds for a minute. dnspolicy
/// writes at most once after the first sync, then stands down.
async fn gitops_tool_keeps_the_corefile(
    manager: &str,
    sync: impl Fn(&Cluster, &str) -> Result<()>,
) -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let git = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, manager, &[])?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;

    let mark = audit_mark(&c)?;
    let until = Instant::now() + syncing()?;
    let mut syncs = 0;
    let mut stood_down = None;
    while Instant::now() < until {
        sync(&c, &git)?;
        syncs += 1;
        tokio::time::sleep(SYNC_EVERY).await;
        let p = policy(&c, "tailnet")?;
        if stood_down.is_none() {
            stood_down =
                condition(&p, "Stalled").filter(|s| s.0 == "True" && s.1 == "ForeignOwner");
        }
    }
    let (_, _, message) = stood_down.with_context(|| {
        format!(
            "never Stalled/ForeignOwner after {syncs} syncs; log:\n{}",
            op.log_tail(30)
        )
    })?;
    let writes = corefile_writes(&c, mark)?;
    println!("{manager}: {syncs} syncs, {writes} Corefile writes by dnspolicy; {message}");
    ensure!(
        writes <= 1,
        "dnspolicy wrote the Corefile {writes} times against {manager}"
    );
    ensure!(
        message.contains(manager) && message.contains("hand it over"),
        "the message names neither the owner nor the way out: {message}"
    );
    ensure!(corefile(&c)? == git, "Git's Corefile is not what is live");
    let p = policy(&c, "tailnet")?;
    ensure!(!is_ready(&p), "Ready while the stanzas are gone");

    op.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_server_side_apply_makes_dnspolicy_stand_down() -> Result<()> {
    gitops_tool_keeps_the_corefile("kustomize-controller", |c, git| {
        c.apply_as("kustomize-controller", &config_map(git))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_client_side_apply_makes_dnspolicy_stand_down() -> Result<()> {
    gitops_tool_keeps_the_corefile("argocd-controller", |c, git| {
        c.kubectl_stdin(
            &["apply", "--field-manager=argocd-controller", "-f", "-"],
            &config_map(git),
        )
        .map(drop)
    })
    .await
}
