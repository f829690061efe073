//! Flux for real: source-controller and kustomize-controller (built from the
//! Go module proxy) apply ClusterDNSPolicies from a git repository served on
//! 127.0.0.1, and the Kustomization's health (`wait: true`, which is kstatus
//! on every applied object) follows the operator's status: Ready when the
//! policy is, not Ready while a policy is Stalled, and a spec change pushed
//! to git reaches CoreDNS. kstatus itself (sigs.k8s.io/cli-utils) and Argo
//! CD's own health code (argo-cd/v3 util/lua with our health.lua, through
//! gitops-engine's GetResourceHealth) judge the same objects, and every other
//! state a policy goes through: generation not yet observed, rolled back,
//! terminating.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::gitops::argocd::{self, argocd_health};
use dnspolicy_e2e::gitops::flux::{self, Flux};
use dnspolicy_e2e::gitops::git_server::{GitRepo, GitServer};
use dnspolicy_e2e::gitops::kstatus::kstatus;
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
/// Conflicts with TAILSCALE's suffix: the operator stalls it (Conflict).
const ROGUE: &str = "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {name: zz-rogue}\nspec:\n  foreignSuffixes:\n  - {suffix: tailb45a71.ts.net, action: NXDomain}\n";
/// The same policy changed in git to a suffix of its own.
const ROGUE_FIXED: &str = "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {name: zz-rogue}\nspec:\n  foreignSuffixes:\n  - {suffix: corp.example.org, action: NXDomain}\n";

fn kustomization(c: &Cluster, name: &str) -> Result<Value> {
    get_json(c, &["-n", flux::NAMESPACE, "kustomization", name])
}

/// The Kustomization's Ready condition once it has applied `revision`
/// (`main@sha1:<commit>`) and `ready` is what `want` says.
async fn wait_kustomization(
    c: &Cluster,
    flux: &mut Flux,
    revision: &str,
    want: &str,
) -> Result<(String, String, String)> {
    let what = format!("Kustomization at {revision} with Ready={want}");
    wait_for(&what, WAIT, || {
        flux.check_alive()?;
        let k = kustomization(c, "policies")?;
        let at = k["status"]["lastAttemptedRevision"] == revision;
        let ready = condition(&k, "Ready");
        Ok(ready.filter(|r| at && r.0 == want && r.1 != "Progressing"))
    })
    .await
    .with_context(|| flux.log_tails(40))
}

/// kstatus says `status`, and Argo CD's application controller `argo`
/// (health.lua's own answer is checked against its fixtures). Returns
/// kstatus's message and Argo CD's.
fn expect_health(p: &Value, status: &str, argo: &str) -> Result<(String, String)> {
    let v = kstatus(p)?;
    let name = &p["metadata"]["name"];
    ensure!(
        v.status == status,
        "kstatus says {v:?} for {name}, want {status}; status: {}",
        p["status"]
    );
    let a = argocd_health(p)?;
    ensure!(
        a.status == argo,
        "Argo CD says {a:?} for {name}, want {argo}; status: {}",
        p["status"]
    );
    println!(
        "{name}: kstatus {} {:?}; Argo CD {} {:?} (Lua: {} {:?})",
        v.status, v.message, a.status, a.message, a.lua_status, a.lua_message
    );
    Ok((v.message, a.message))
}

#[test]
fn argo_cd_passes_the_health_check_fixtures() -> Result<()> {
    println!("{}", argocd::run_fixtures()?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_kustomization_reports_the_policy_health_from_git() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "flux", &[])?;
    let mut flux = Flux::start(&c)?;
    let git = GitServer::start(&c.layout.dir.join("git"))?;
    let repo = GitRepo::create(&git, "policies.git", &c.layout.dir.join("git-work"))?;

    // 1. A policy in git: the Kustomization is Ready once the policy is.
    let first = repo.commit_and_push("tailnet", &[("policies/tailnet.yaml", &TAILSCALE)])?;
    apply(
        &c,
        &flux::source_and_kustomization("policies", &git.url("policies.git"), "./policies"),
    )?;
    let ready = wait_kustomization(&c, &mut flux, &format!("main@sha1:{first}"), "True").await?;
    println!("Kustomization Ready: {ready:?}");
    let tailnet = op.ready(&c, "tailnet", WAIT).await?;
    let (_, healthy) = expect_health(&tailnet, "Current", "Healthy")?;
    ensure!(
        Some(healthy.as_str()) == condition(&tailnet, "Ready").map(|r| r.2).as_deref(),
        "Argo CD's message is not the Ready condition's: {healthy}"
    );
    rolled(&c).await?;

    // 2. A conflicting policy pushed: it is Stalled, and the Kustomization
    //    is not Ready and says which object and why.
    let second = repo.commit_and_push("a rogue policy", &[("policies/zz-rogue.yaml", ROGUE)])?;
    flux::request_reconcile(&c, "gitrepository", "policies")?;
    let failed = wait_kustomization(&c, &mut flux, &format!("main@sha1:{second}"), "False").await?;
    println!("Kustomization not Ready: {failed:?}");
    let rogue = policy(&c, "zz-rogue")?;
    let stalled = condition(&rogue, "Stalled").context("zz-rogue has no Stalled condition")?;
    ensure!(
        stalled.0 == "True" && stalled.1 == "Conflict",
        "zz-rogue: {stalled:?}"
    );
    ensure!(
        failed.2.contains("ClusterDNSPolicy/zz-rogue"),
        "the Kustomization's message does not name the stalled policy: {}",
        failed.2
    );
    let (failed_msg, degraded) = expect_health(&rogue, "Failed", "Degraded")?;
    ensure!(
        failed_msg == stalled.2 && degraded == format!("Conflict: {}", stalled.2),
        "kstatus's {failed_msg:?} / Argo CD's {degraded:?} do not carry the operator's {:?}",
        stalled.2
    );
    // It stays not Ready: a reconcile the controller has handled still fails.
    let token = flux::request_reconcile(&c, "kustomization", "policies")?;
    let again = wait_for("the Kustomization to handle the request", WAIT, || {
        let k = kustomization(&c, "policies")?;
        let handled = k["status"]["lastHandledReconcileAt"] == token.as_str();
        Ok(condition(&k, "Ready").filter(|r| handled && r.1 != "Progressing"))
    })
    .await
    .with_context(|| flux.log_tails(40))?;
    ensure!(
        again.0 == "False",
        "Ready while zz-rogue is Stalled: {again:?}"
    );

    // 3. The spec fixed in git: Ready again, and CoreDNS serves the new suffix.
    let third = repo.commit_and_push(
        "zz-rogue: a suffix of its own",
        &[("policies/zz-rogue.yaml", ROGUE_FIXED)],
    )?;
    flux::request_reconcile(&c, "gitrepository", "policies")?;
    wait_kustomization(&c, &mut flux, &format!("main@sha1:{third}"), "True").await?;
    let fixed = wait_ready(&c, "zz-rogue", WAIT).await?;
    expect_health(&fixed, "Current", "Healthy")?;
    let now = corefile(&c)?;
    ensure!(
        now.contains("corp[.]example[.]org") || now.contains("corp.example.org"),
        "the Corefile does not have the suffix pushed to git:\n{now}"
    );

    // 4. Removed from git: pruned, and the operator takes its stanzas out.
    let fourth = {
        std::fs::remove_file(repo.work.join("policies/zz-rogue.yaml"))?;
        repo.commit_and_push("drop zz-rogue", &[])?
    };
    flux::request_reconcile(&c, "gitrepository", "policies")?;
    wait_kustomization(&c, &mut flux, &format!("main@sha1:{fourth}"), "True").await?;
    wait_for("zz-rogue pruned", WAIT, || {
        let left = c.kubectl(&["get", "cdp", "zz-rogue", "--ignore-not-found", "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    })
    .await?;
    let pruned = corefile(&c)?;
    ensure!(
        !pruned.contains("corp[.]example[.]org") && !pruned.contains("corp.example.org"),
        "the pruned policy's suffix is still in the Corefile:\n{pruned}"
    );

    c.kubectl(&[
        "-n",
        flux::NAMESPACE,
        "delete",
        "kustomization,gitrepository",
        "--all",
        "--wait=true",
        "--timeout=60s",
    ])?;
    op.delete_policies_and_stop(&c)
}

/// kstatus and Argo CD on the states the Flux test does not reach: a generation the
/// operator has not observed yet, a rollback (Stalled=RolloutFailed),
/// terminating behind the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kstatus_and_argo_cd_read_every_policy_state() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let old = env::coredns_old_version();
    fresh(&c, Flavor::Kubeadm, &old).await?;

    // Not yet observed: no operator running.
    apply(&c, &TAILSCALE)?;
    expect_health(&policy(&c, "tailnet")?, "InProgress", "Progressing")?;

    // Rolled back: told the wrong version, the operator writes a Corefile
    // the old CoreDNS refuses, and rolls it back (see tests/operator.rs).
    let mut op = Operator::start(
        &c,
        "kstatus",
        &["--coredns-version", "1.14.2", "--rollout-deadline", "15s"],
    )?;
    let rolled_back = wait_for("Stalled=RolloutFailed", WAIT, || {
        let p = policy(&c, "tailnet")?;
        Ok(condition(&p, "Stalled")
            .filter(|s| s.0 == "True" && s.1 == "RolloutFailed")
            .map(|s| (s, p)))
    })
    .await
    .with_context(|| op.log_text())?;
    let (failed_msg, degraded) = expect_health(&rolled_back.1, "Failed", "Degraded")?;
    ensure!(
        failed_msg == rolled_back.0.2 && degraded == format!("RolloutFailed: {}", rolled_back.0.2),
        "kstatus's {failed_msg:?} / Argo CD's {degraded:?} do not carry the operator's {:?}",
        rolled_back.0.2
    );
    op.stop()?;

    // A spec change the stopped operator has not seen: InProgress.
    c.kubectl(&[
        "patch",
        "cdp",
        "tailnet",
        "--type=merge",
        "-p",
        r#"{"spec":{"foreignSuffixes":[{"suffix":"tailb45a71.ts.net","action":"NXDomain"}]}}"#,
    ])?;
    expect_health(&policy(&c, "tailnet")?, "InProgress", "Progressing")?;

    // Terminating: deleted, held by the operator's finalizer while it is down.
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=false"])?;
    let p = policy(&c, "tailnet")?;
    ensure!(
        p["metadata"]["deletionTimestamp"].is_string(),
        "tailnet has no deletionTimestamp (no finalizer?): {}",
        p["metadata"]
    );
    expect_health(&p, "Terminating", "Progressing")?;
    let lua = argocd_health(&p)?;
    ensure!(
        lua.lua_status == "Progressing" && lua.lua_message.starts_with("Deleting"),
        "health.lua on a terminating policy: {lua:?}"
    );

    // The operator back: it restores the Corefile and lets the policy go.
    let mut op = Operator::start(&c, "kstatus-cleanup", &[])?;
    wait_for("tailnet deleted", WAIT, || {
        let left = c.kubectl(&["get", "cdp", "tailnet", "--ignore-not-found", "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    })
    .await
    .with_context(|| op.log_text())?;
    op.stop()
}
