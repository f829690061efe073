//! Rollback that means what it says, on the real local cluster: the operator
//! judges only the rollout it started, from when it started it. A CoreDNS pod
//! failing after a good rollout, and a switch from `rollout: None` to
//! `Restart` long after the Corefile was written, roll nothing back.
//! (A Corefile CoreDNS refuses is rolled back: operator.rs.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env, process};

const BEGIN_MANAGED: &str = "# dnspolicy:begin";
const WAIT: Duration = Duration::from_secs(60);
/// `--rollout-deadline 5s` with 2 replicas: 25 s for a rollout.
const DEADLINE_ARGS: [&str; 2] = ["--rollout-deadline", "5s"];
const PAST_DEADLINE: Duration = Duration::from_secs(30);

fn failed_hash(c: &Cluster) -> Result<Option<String>> {
    let cm = get_json(c, &["-n", "kube-system", "configmap", "coredns"])?;
    Ok(cm["metadata"]["annotations"]["dnspolicy.dev/failed-hash"]
        .as_str()
        .map(str::to_string))
}

fn rollback_events(c: &Cluster) -> Result<usize> {
    let events = get_json(c, &["events", "-A", "--field-selector", "reason=Rollback"])?;
    Ok(events["items"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coredns_pod_failing_after_a_good_rollout_is_reported_not_rolled_back() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "late-crash", &DEADLINE_ARGS)?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;
    let rolled_back_before = rollback_events(&c)?;
    let live = corefile(&c)?;
    ensure!(live.contains(BEGIN_MANAGED));

    // Past the deadline, one pod crashes and keeps crashing (killed whenever
    // the pod runtime restarts it) for longer than a whole rollout may take.
    tokio::time::sleep(PAST_DEADLINE).await;
    let victim = c
        .coredns_pods()
        .await?
        .into_iter()
        .find(|p| p.ready && !p.terminating)
        .context("no ready CoreDNS pod")?
        .name;
    let mark = audit_mark(&c)?;
    let crash_until = Instant::now() + PAST_DEADLINE + Duration::from_secs(10);
    let mut kills = 0;
    let mut reported = None;
    while Instant::now() < crash_until {
        if let Some(pid) = c.coredns_pid(&victim) {
            process::signal(pid, libc::SIGKILL);
            kills += 1;
        }
        if reported.is_none() {
            let p = policy(&c, "tailnet")?;
            reported =
                condition(&p, "Ready").filter(|r| r.0 == "False" && r.1 == "CoreDNSUnavailable");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, _, message) = reported.with_context(|| {
        format!(
            "Ready never went False/CoreDNSUnavailable; log:\n{}",
            op.log_tail(40)
        )
    })?;
    println!("{kills} kills of {victim}; Ready=False: {message}");
    ensure!(kills >= 2, "the pod was killed only {kills} times");
    ensure!(
        message.contains("does not roll it back"),
        "the message does not say why nothing was rolled back: {message}"
    );
    // Nothing was written but status, the Corefile is the policy's, no rollback.
    let writes: Vec<String> = operator_writes_since(&c, mark)?
        .into_iter()
        .filter(|w| !w.ends_with("/status") && !w.contains(" events/"))
        .collect();
    ensure!(writes.is_empty(), "the operator wrote {writes:?}");
    ensure!(corefile(&c)? == live, "the Corefile changed");
    ensure!(
        failed_hash(&c)?.is_none(),
        "a good Corefile was marked failed"
    );
    ensure!(
        rollback_events(&c)? == rolled_back_before,
        "a Rollback event was published"
    );
    // The pod comes back: Ready again, on the same Corefile.
    op.ready(&c, "tailnet", WAIT).await?;
    ensure!(corefile(&c)? == live);
    op.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_rollout_none_to_restart_long_after_the_write_rolls_out() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let before = template_hash(&c)?;
    let mut op = Operator::start(&c, "none-to-restart", &DEADLINE_ARGS)?;
    let none = TAILSCALE.replace("spec:\n", "spec:\n  rollout: None\n");
    ensure!(none.contains("rollout: None"), "{none}");
    apply(&c, &none)?;
    op.ready(&c, "tailnet", WAIT).await?;
    ensure!(
        template_hash(&c)? == before,
        "rollout: None restarted CoreDNS"
    );
    // The Corefile was written well before the deadline's worth of time ago.
    tokio::time::sleep(PAST_DEADLINE).await;
    apply(&c, &TAILSCALE)?;
    let p = wait_for("a rollout onto the policy's Corefile", WAIT, || {
        let p = policy(&c, "tailnet")?;
        let hash = p["status"]["corefileHash"].as_str().map(str::to_string);
        Ok((is_ready(&p) && template_hash(&c)? == hash && hash.is_some()).then_some(p))
    })
    .await
    .with_context(|| op.log_tail(40))?;
    ensure!(
        failed_hash(&c)?.is_none(),
        "the switch rolled back a good Corefile: {:?}",
        condition(&p, "Ready")
    );
    ensure!(corefile(&c)?.contains(BEGIN_MANAGED));
    rolled(&c).await?;
    op.delete_policies_and_stop(&c)
}
