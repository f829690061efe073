//! The fault suite (issue 12): the operator killed at each step of a
//! reconcile, the apiserver restarted mid-rollout, the operator partitioned
//! from the apiserver for 2 minutes, and 100 policy edits a minute. After
//! each the same checks: CoreDNS answers under the Corefile, the backup of
//! the original is intact, the Corefile is exactly what `dnspolicy render`
//! gives for the policy's current spec (no lost or doubled stanza), and the
//! policy is Ready for its current generation. The figures are printed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, dns, env, net};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(60);
const BEGIN_MANAGED: &str = "# dnspolicy:begin";
const ORIGINAL_COREFILE: &str = "dnspolicy.dev/original-corefile";
/// A name every Corefile answers, and the same name with the tailnet suffix
/// a pod's search list appends (the policy rewrites or refuses it).
const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";

/// The Tailscale policy with `action` for its suffix.
fn tailnet(action: &str) -> String {
    TAILSCALE.replace("action: Rewrite", &format!("action: {action}"))
}

/// `dnspolicy render` of `policy` over the stock Corefile: what the operator
/// must have written.
fn rendered(stock: &str, policy: &str) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("dnspolicy-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (corefile, policy_file) = (dir.join("Corefile"), dir.join("policy.yaml"));
    std::fs::write(&corefile, stock)?;
    std::fs::write(&policy_file, policy)?;
    let version = env::coredns_kubeadm_version();
    let out = std::process::Command::new(cli_bin()?)
        .args(["render", "--corefile"])
        .arg(&corefile)
        .arg("--policy")
        .arg(&policy_file)
        .args(["--coredns-version", version.trim_start_matches('v')])
        .output()?;
    ensure!(
        out.status.success(),
        "dnspolicy render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Every check of the suite, once the operator says Ready for `policy`'s
/// generation: the Corefile is `render`'s for `policy`, one managed region,
/// the backup is the stock Corefile, CoreDNS rolled to it and every replica
/// answers as `action` says. Returns the time to get there.
async fn converged(
    c: &Cluster,
    op: &Operator,
    stock: &str,
    policy: &str,
    action: &str,
) -> Result<Duration> {
    let t0 = Instant::now();
    let want = rendered(stock, policy)?;
    let p = wait_for("Ready with the Corefile render gives", WAIT, || {
        let p = dnspolicy_e2e::operator::policy(c, "tailnet")?;
        Ok((is_ready(&p) && corefile(c)? == want).then_some(p))
    })
    .await
    .with_context(|| {
        format!(
            "want Corefile:\n{want}\nhave:\n{}\noperator log tail:\n{}",
            corefile(c).unwrap_or_default(),
            op.log_tail(40)
        )
    })?;
    let took = t0.elapsed();
    ensure!(
        p["status"]["observedGeneration"] == p["metadata"]["generation"],
        "status is for generation {}, the policy is at {}",
        p["status"]["observedGeneration"],
        p["metadata"]["generation"]
    );
    let live = corefile(c)?;
    ensure!(
        live.matches(BEGIN_MANAGED).count() == 1,
        "not exactly one managed region:\n{live}"
    );
    let cm = get_json(c, &["-n", "kube-system", "configmap", "coredns"])?;
    ensure!(
        cm["metadata"]["annotations"][ORIGINAL_COREFILE].as_str() == Some(stock),
        "the backup of the original Corefile changed: {}",
        cm["metadata"]["annotations"][ORIGINAL_COREFILE]
    );
    ensure!(template_hash(c)?.as_deref() == p["status"]["corefileHash"].as_str());
    let replicas = rolled(c).await?;
    let polluted = format!("{KUBERNETES}.{}", env::NODE_SEARCH);
    for ip in replicas {
        let plain = c.query_a(ip, KUBERNETES).await?;
        ensure!(
            plain.answer() == (dns::RCODE_NOERROR, vec![env::KUBERNETES_SVC_IP.parse()?]),
            "CoreDNS {ip} answers {KUBERNETES}: {plain:?}"
        );
        let reply = c.query_a(ip, &polluted).await?;
        let ok = match action {
            "NXDomain" => reply.rcode == dns::RCODE_NXDOMAIN,
            _ => reply.rcode == dns::RCODE_NOERROR && !reply.addrs.is_empty(),
        };
        ensure!(ok, "CoreDNS {ip} answers {polluted} ({action}): {reply:?}");
    }
    Ok(took)
}

async fn exit_code(op: &mut Operator, step: &str) -> Result<i32> {
    let status = wait_for(&format!("the operator to die at {step}"), WAIT, || {
        Ok(op.exited())
    })
    .await
    .with_context(|| op.log_tail(40))?;
    status.code().context("killed by a signal")
}

/// The failpoint exit code (operator/src/controller/target.rs).
const FAILPOINT_EXIT: i32 = 86;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_each_step_of_a_reconcile_converges_after_a_restart() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    for step in [
        "exit-after-finalizer-add",
        "exit-after-configmap-write",
        "exit-after-rollout-patch",
        "exit-after-status-write",
    ] {
        let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
        let mut op = Operator::start_with(
            &c,
            "faults",
            &[],
            &Launch::default().env("DNSPOLICY_FAILPOINT", step),
        )?;
        let policy = tailnet("Rewrite");
        apply(&c, &policy)?;
        let code = exit_code(&mut op, step).await?;
        ensure!(code == FAILPOINT_EXIT, "{step}: exited {code}");
        let p = dnspolicy_e2e::operator::policy(&c, "tailnet")?;
        ensure!(
            p["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "dnspolicy.dev/cleanup")),
            "{step}: no finalizer at the crash"
        );
        let mut op = Operator::start(&c, "faults", &[])?;
        let took = converged(&c, &op, &stock, &policy, "Rewrite")
            .await
            .with_context(|| format!("after a kill at {step}"))?;
        println!("killed at {step}: converged {took:?} after the restart");
        op.delete_policies_and_stop(&c)?;
        ensure!(corefile(&c)? == stock, "{step}: delete did not restore");
    }

    // Killed while deleting, before the Corefile is put back: the restart
    // restores it and lets the policy go.
    let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let step = "exit-during-delete-before-restore";
    let mut op = Operator::start_with(
        &c,
        "faults",
        &[],
        &Launch::default().env("DNSPOLICY_FAILPOINT", step),
    )?;
    let policy = tailnet("Rewrite");
    apply(&c, &policy)?;
    converged(&c, &op, &stock, &policy, "Rewrite").await?;
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=false"])?;
    let code = exit_code(&mut op, step).await?;
    ensure!(code == FAILPOINT_EXIT, "{step}: exited {code}");
    ensure!(
        corefile(&c)?.contains(BEGIN_MANAGED),
        "{step}: restored before the crash"
    );
    let mut op = Operator::start(&c, "faults", &[])?;
    let t0 = Instant::now();
    wait_for("the policy to be gone", WAIT, || {
        let left = c.kubectl(&["get", "cdp", "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    })
    .await
    .with_context(|| op.log_tail(40))?;
    ensure!(
        corefile(&c)? == stock,
        "{step}: the Corefile is not the original"
    );
    rolled(&c).await?;
    println!(
        "killed at {step}: restored {:?} after the restart",
        t0.elapsed()
    );
    op.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_restarting_mid_rollout_is_survived() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    // Each new pod counts as available only 10 s after it is Ready, so the
    // rollout is still going when the apiserver goes down.
    set_min_ready_seconds(&c, 10)?;
    let result = restart_mid_rollout(&c, &stock).await;
    set_min_ready_seconds(&c, 0)?;
    result
}

fn set_min_ready_seconds(c: &Cluster, seconds: u32) -> Result<()> {
    c.kubectl(&[
        "-n",
        "kube-system",
        "patch",
        "deployment",
        "coredns",
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"minReadySeconds\":{seconds}}}}}"),
    ])?;
    Ok(())
}

async fn restart_mid_rollout(c: &Cluster, stock: &str) -> Result<()> {
    let before = template_hash(c)?;
    let mut op = Operator::start(c, "faults", &[])?;
    let policy = tailnet("Rewrite");
    apply(c, &policy)?;
    // The rollout has begun: the pod template carries the new hash, and
    // the Deployment has not finished rolling to it.
    wait_for("the rollout to start", WAIT, || {
        Ok((template_hash(c)? != before).then_some(()))
    })
    .await?;
    let d = get_json(c, &["-n", "kube-system", "deployment", "coredns"])?;
    let status = &d["status"];
    ensure!(
        status["updatedReplicas"] != d["spec"]["replicas"]
            || status["availableReplicas"] != d["spec"]["replicas"]
            || status["observedGeneration"] != d["metadata"]["generation"],
        "the rollout finished before the apiserver restart: {status}"
    );
    let down = c.restart_apiserver()?;
    println!("kube-apiserver back after {down:?}, the rollout in progress ({status})");
    ensure!(
        op.exited().is_none(),
        "the operator died with the apiserver:\n{}",
        op.log_tail(40)
    );
    let took = converged(c, &op, stock, &policy, "Rewrite").await?;
    println!("converged {took:?} after the apiserver was back");
    op.delete_policies_and_stop(c)?;
    ensure!(corefile(c)? == stock);
    Ok(())
}

/// The cluster's admin kubeconfig with its server at `addr`.
fn kubeconfig_through(c: &Cluster, addr: std::net::SocketAddr) -> Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(c.kubeconfig())?;
    let direct = format!("https://{}", env::apiserver_addr());
    ensure!(text.contains(&direct), "the kubeconfig has no {direct}");
    let path = c.layout.dir.join("faults-relay.kubeconfig");
    std::fs::write(&path, text.replace(&direct, &format!("https://{addr}")))?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_partition_from_the_apiserver_heals() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let relay = net::PartitionableRelay::start(env::apiserver_addr())?;
    let launch = Launch::default().kubeconfig(kubeconfig_through(&c, relay.addr)?);
    let mut op = Operator::start_with(&c, "faults", &[], &launch)?;
    let policy = tailnet("Rewrite");
    apply(&c, &policy)?;
    converged(&c, &op, &stock, &policy, "Rewrite").await?;

    relay.cut();
    // The world moves on while the operator cannot see it.
    let changed = tailnet("NXDomain");
    apply(&c, &changed)?;
    tokio::time::sleep(Duration::from_secs(120)).await;
    ensure!(
        !corefile(&c)?.contains("rcode NXDOMAIN"),
        "the operator wrote through the partition: the relay does not cut"
    );
    let t0 = Instant::now();
    relay.heal();
    // Losing the Lease during the partition makes the operator exit (a
    // fresh start takes over); kubelet would restart it, so the test does.
    let mut restarts = 0;
    let took = loop {
        match converged(&c, &op, &stock, &changed, "NXDomain").await {
            Ok(_) => break t0.elapsed(),
            Err(e) if op.exited().is_some() && restarts == 0 => {
                println!("the operator exited during the partition ({e:#}); restarting it");
                restarts += 1;
                op = Operator::start_with(&c, "faults", &[], &launch)?;
            }
            Err(e) => return Err(e),
        }
    };
    println!("partition of 120 s healed: converged {took:?} after the heal, {restarts} restart(s)");
    op.delete_policies_and_stop(&c)?;
    ensure!(corefile(&c)? == stock);
    Ok(())
}

/// The edits test's length: DNSPOLICY_FAULT_EDIT_MINUTES, 2 unless set.
fn edit_minutes() -> Result<u64> {
    match std::env::var("DNSPOLICY_FAULT_EDIT_MINUTES") {
        Ok(m) => m
            .parse()
            .with_context(|| format!("DNSPOLICY_FAULT_EDIT_MINUTES={m:?} is not whole minutes")),
        Err(_) => Ok(2),
    }
}

/// The `n`th edit's action and host labels: every edit changes the rendered
/// Corefile.
fn edit(n: u64) -> (&'static str, u64) {
    let action = if n.is_multiple_of(2) {
        "Rewrite"
    } else {
        "NXDomain"
    };
    // hostLabels may be 0 or 1 under cluster.local (2 would count
    // cluster.local.<suffix> as a host).
    (action, (n / 2) % 2)
}

fn tailnet_edit(n: u64) -> String {
    let (action, labels) = edit(n);
    tailnet(action).replace("hostLabels: 1", &format!("hostLabels: {labels}"))
}

/// Operator's resident set (VmRSS, VmHWM in KiB) and CPU seconds so far.
fn usage(pid: u32) -> Result<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = rest[11].parse::<f64>()? + rest[12].parse::<f64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((kib("VmRSS:")?, kib("VmHWM:")?, ticks / hz))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_policy_edits_a_minute_lose_and_double_nothing() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "faults", &[])?;
    apply(&c, &tailnet_edit(0))?;
    converged(&c, &op, &stock, &tailnet_edit(0), "Rewrite").await?;
    let pid = op.pid().context("operator pid")?;
    let (_, _, cpu_before) = usage(pid)?;

    let minutes = edit_minutes()?;
    let policies: Api<DynamicObject> = Api::all_with(
        c.client(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "dnspolicy.dev",
            "v1alpha1",
            "ClusterDNSPolicy",
        )),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut applied, mut failed, mut peak_rss) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(60 * minutes) {
        tick.tick().await;
        n += 1;
        let (action, labels) = edit(n);
        let patch = serde_json::json!({"spec": {"foreignSuffixes": [{
            "suffix": env::NODE_SEARCH, "action": action, "hostLabels": labels,
        }]}});
        match policies
            .patch("tailnet", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => applied += 1,
            Err(e) => {
                failed += 1;
                eprintln!("edit {n} failed: {e}");
            }
        }
        if n.is_multiple_of(50) {
            peak_rss = peak_rss.max(usage(pid)?.0);
        }
    }
    let editing = started.elapsed();
    let last = n;
    let final_spec = tailnet_edit(last);
    ensure!(
        op.exited().is_none(),
        "the operator died under the edits:\n{}",
        op.log_tail(40)
    );
    let took = converged(&c, &op, &stock, &final_spec, edit(last).0).await?;
    let (rss, hwm, cpu_after) = usage(pid)?;
    let p = dnspolicy_e2e::operator::policy(&c, "tailnet")?;
    println!(
        "{applied} edits applied ({failed} failed) in {editing:?} ({:.0}/min); final generation {}; \
         converged {took:?} after the last edit; operator RSS {rss} KiB now, {} KiB peak sampled, \
         VmHWM {hwm} KiB; operator CPU {:.1} s over the edits and convergence",
        applied as f64 / editing.as_secs_f64() * 60.0,
        p["metadata"]["generation"],
        peak_rss.max(rss),
        cpu_after - cpu_before
    );
    ensure!(failed == 0, "{failed} edits failed");
    op.delete_policies_and_stop(&c)?;
    ensure!(corefile(&c)? == stock, "delete did not restore");
    Ok(())
}
