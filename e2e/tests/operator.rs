//! The controller on the real local cluster: apply, change, re-apply,
//! delete, merge and conflict, drift, the k3s channel, rollback of a
//! Corefile real CoreDNS refuses, crash safety.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env, net};

const BEGIN_MANAGED: &str = "# dnspolicy:begin";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_change_reapply_and_delete() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "lifecycle", &[])?;

    // Apply: managed stanzas in the ConfigMap, CoreDNS rolled, Ready for this generation.
    let t0 = Instant::now();
    apply(&c, &TAILSCALE)?;
    let p = op.ready(&c, "tailnet", WAIT).await?;
    println!("apply -> Ready=True in {:?}", t0.elapsed());
    let applied = corefile(&c)?;
    ensure!(
        applied.contains(BEGIN_MANAGED),
        "no managed region:\n{applied}"
    );
    ensure!(
        applied.contains("tailb45a71[.]ts[.]net"),
        "no rewrite for the suffix:\n{applied}"
    );
    let hash = p["status"]["corefileHash"]
        .as_str()
        .context("no corefileHash")?
        .to_string();
    ensure!(
        template_hash(&c)? == Some(hash.clone()),
        "Deployment not rolled to {hash}"
    );
    ensure!(p["status"]["observedGeneration"] == p["metadata"]["generation"]);
    for (t, want) in [
        ("Reconciling", "False"),
        ("Stalled", "False"),
        ("CorefileApplied", "True"),
        ("RolledOut", "True"),
    ] {
        let got = condition(&p, t).map(|c| c.0);
        ensure!(got.as_deref() == Some(want), "{t} is {got:?}, want {want}");
    }
    rolled(&c).await?;

    // What a person sees: `dnspolicy status`, and the operator's endpoints.
    let status = std::process::Command::new(cli_bin()?)
        .arg("status")
        .env("KUBECONFIG", c.kubeconfig())
        .output()?;
    let table = String::from_utf8_lossy(&status.stdout);
    ensure!(
        status.status.success() && table.contains("tailnet") && table.contains("True"),
        "dnspolicy status:\n{table}"
    );
    // Gauges per policy appear with the first accounting tick (every second).
    wait_for(
        "/metrics to carry every family",
        Duration::from_secs(10),
        || {
            let metrics = net::http_get(&op.metrics, "/metrics")?;
            Ok([
                "dnspolicy_reconciles_total",
                "dnspolicy_rollouts_total",
                "dnspolicy_polluted_pods{",
                "dnspolicy_watched_pods",
                "dnspolicy_reconcile_duration_seconds",
            ]
            .iter()
            .all(|needle| metrics.contains(needle))
            .then_some(()))
        },
    )
    .await?;
    ensure!(net::http_get(&op.health, "/healthz")?.starts_with("HTTP/1.1 200"));
    ensure!(net::http_get(&op.health, "/readyz")?.starts_with("HTTP/1.1 200"));

    // Change: one more rollout to a new hash.
    apply(
        &c,
        &TAILSCALE.replace("action: Rewrite", "action: NXDomain"),
    )?;
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
    apply(
        &c,
        &TAILSCALE.replace("action: Rewrite", "action: NXDomain"),
    )?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let writes = operator_writes_since(&c, mark)?;
    ensure!(
        writes.is_empty(),
        "re-applying the same spec wrote: {writes:?}"
    );
    println!("re-apply of the same spec: 0 operator writes in 15 s");

    // Delete: the Corefile is byte for byte the original, CoreDNS rolled back.
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    let restored = corefile(&c)?;
    ensure!(
        restored == original,
        "Corefile not restored byte for byte:\n--- original\n{original}\n--- now\n{restored}"
    );
    let stock_hash = dnspolicy_dns::corefile::corefile_hash(&original);
    ensure!(
        template_hash(&c)? == Some(stock_hash.clone()),
        "Deployment not rolled back to {stock_hash}"
    );
    rolled(&c).await?;
    let leftovers = dnspolicy_annotations(&c, "coredns")?;
    ensure!(
        leftovers.is_empty(),
        "dnspolicy annotations left on the ConfigMap: {leftovers:?}"
    );
    // Nor metric series: the deleted policy's gauges go with it (the next
    // accounting tick, within a second or two).
    wait_for(
        "the deleted policy's series to leave /metrics",
        Duration::from_secs(10),
        || {
            let metrics = net::http_get(&op.metrics, "/metrics")?;
            Ok((!metrics.contains(r#"policy="tailnet""#)).then_some(()))
        },
    )
    .await?;
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_merge_conflicts_stall_and_hand_edits() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "merge", &[])?;

    apply(&c, &TAILSCALE)?;
    apply(&c, OPENSTACK)?;
    op.ready(&c, "tailnet", WAIT).await?;
    let openstack = wait_ready(&c, "openstack", WAIT).await?;
    let merged = corefile(&c)?;
    ensure!(
        merged.contains("tailb45a71[.]ts[.]net") && merged.contains("openstacklocal"),
        "not merged:\n{merged}"
    );
    let hash = openstack["status"]["corefileHash"].clone();
    rolled(&c).await?;

    // A third policy contradicting the first: Stalled=Conflict, the others untouched.
    let mark = quiet_mark(&c).await?;
    apply(
        &c,
        "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {name: zz-rogue}\nspec:\n  foreignSuffixes:\n  - {suffix: tailb45a71.ts.net, action: NXDomain}\n",
    )?;
    let rogue = wait_for("zz-rogue Stalled", WAIT, || {
        let p = policy(&c, "zz-rogue")?;
        Ok(condition(&p, "Stalled")
            .filter(|s| s.0 == "True")
            .map(|s| (s, p)))
    })
    .await?;
    ensure!(rogue.0.1 == "Conflict", "reason {:?}", rogue.0);
    ensure!(
        rogue.0.2.contains("tailnet"),
        "message does not name the winner: {}",
        rogue.0.2
    );
    ensure!(corefile(&c)? == merged, "the conflict changed the Corefile");
    let writes = operator_writes_since(&c, mark)?;
    ensure!(
        writes
            .iter()
            .all(|w| w.contains("clusterdnspolicies/zz-rogue") || w.contains("events/zz-rogue.")),
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
    ensure!(
        fixed.contains("# tuned by hand"),
        "the hand edit outside the region was lost:\n{fixed}"
    );
    ensure!(fixed.contains("rcode NXDOMAIN"));
    let events = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=DriftCorrected",
        "-o",
        "name",
    ])?;
    ensure!(!events.trim().is_empty(), "no DriftCorrected event");

    op.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_corefile_gets_coredns_custom_keys_and_stays_unchanged() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::K3s, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "k3s", &[])?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;
    ensure!(
        corefile(&c)? == original,
        "the k3s main Corefile was edited"
    );
    let custom = get_json(&c, &["-n", "kube-system", "configmap", "coredns-custom"])?;
    let data = custom["data"]
        .as_object()
        .context("coredns-custom has no data")?;
    let keys: Vec<&String> = data.keys().collect();
    // CoreDNS >= 1.10: the stanzas are whole server blocks, imported from `*.server`.
    let server = data
        .get("dnspolicy.server")
        .and_then(|v| v.as_str())
        .context(format!("no dnspolicy.server key: {keys:?}"))?;
    ensure!(
        server.contains("tailb45a71.ts.net:53 {"),
        "dnspolicy.server:\n{server}"
    );
    rolled(&c).await?;
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    ensure!(corefile(&c)? == original);
    let custom = get_json(&c, &["-n", "kube-system", "configmap", "coredns-custom"])?;
    let left: Vec<String> = custom["data"]
        .as_object()
        .map(|d| {
            d.keys()
                .filter(|k| k.starts_with("dnspolicy"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        left.is_empty(),
        "dnspolicy keys left in coredns-custom: {left:?}"
    );
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
    let mut op = Operator::start(
        &c,
        "rollback",
        &["--coredns-version", "1.14.2", "--rollout-deadline", "15s"],
    )?;
    apply(&c, &TAILSCALE)?;
    let stalled = wait_for("Stalled=RolloutFailed", Duration::from_secs(90), || {
        let p = policy(&c, "tailnet")?;
        Ok(condition(&p, "Stalled").filter(|s| s.0 == "True" && s.1 == "RolloutFailed"))
    })
    .await
    .with_context(|| op.log_text())?;
    println!("Stalled: {}", stalled.2);
    let now = corefile(&c)?;
    ensure!(
        now == original,
        "the refused Corefile is still live:\n{now}"
    );
    let addrs = rolled(&c).await?;
    let reply = c
        .query(
            addrs[0],
            "kubernetes.default.svc.cluster.local",
            1,
            Duration::from_secs(2),
        )
        .await?;
    ensure!(
        reply.rcode == 0 && !reply.addrs.is_empty(),
        "CoreDNS does not answer after the rollback: {reply:?}"
    );
    // It stays put: no retry loop while the spec is unchanged. (Status may
    // still follow the pod counts of the rollback's rollout settling.)
    let mark = audit_mark(&c)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes: Vec<String> = operator_writes_since(&c, mark)?
        .into_iter()
        .filter(|w| !w.ends_with("/status"))
        .collect();
    let p = policy(&c, "tailnet")?;
    ensure!(
        condition(&p, "Stalled").is_some_and(|s| s.0 == "True" && s.1 == "RolloutFailed"),
        "no longer Stalled/RolloutFailed: {:?}",
        condition(&p, "Stalled")
    );
    ensure!(
        writes.is_empty(),
        "the operator kept writing after the rollback: {writes:?}"
    );
    op.delete_policies_and_stop(&c)
}

/// The planner's notes reach the policy: on CoreDNS 1.8.4 without `cache` in
/// the `.` block, Rewrite works but a failing upstream's SERVFAIL carries the
/// rewritten question. Ready, a `Warnings` condition, one Warning Event.
/// Then `explain --from-cluster` explains what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_on_old_coredns_are_shown_in_status_and_one_event() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let old = env::coredns_old_version();
    let stock = fresh(&c, Flavor::Kubeadm, &old).await?;
    // kubeadm's Corefile for the old CoreDNS has `cache 30` on one line.
    let no_cache = stock.replace("    cache 30\n", "");
    ensure!(no_cache != stock, "kubeadm fixture changed shape:\n{stock}");
    c.set_corefile(&no_cache)?;
    let mut op = Operator::start(&c, "warnings", &[])?;
    apply(&c, &TAILSCALE)?;
    let p = op.ready(&c, "tailnet", WAIT).await?;
    let addrs = rolled(&c).await?;
    let (status, reason, message) =
        condition(&p, "Warnings").context("Ready without the Warnings condition")?;
    ensure!(
        status == "True" && reason == "PlanWarnings",
        "Warnings is {status}/{reason}"
    );
    ensure!(
        message.contains(&format!(
            "CoreDNS {} without `cache`",
            old.trim_start_matches('v')
        )) && message.contains("tailb45a71.ts.net"),
        "Warnings message: {message}"
    );
    println!("Warnings: {message}");
    // The cluster still answers on the written Corefile.
    let reply = c
        .query(
            addrs[0],
            "kubernetes.default.svc.cluster.local",
            1,
            Duration::from_secs(2),
        )
        .await?;
    ensure!(reply.rcode == 0 && !reply.addrs.is_empty(), "{reply:?}");

    // Reconciles go on (rollout polling, then periodic); the Event does not repeat.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let events = get_json(&c, &["events.events.k8s.io", "-A"])?;
    let warnings: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == "tailnet" && e["reason"] == "PlanWarning")
        .collect();
    ensure!(
        warnings.len() == 1
            && warnings[0]["type"] == "Warning"
            && warnings[0]["note"] == message.as_str()
            && warnings[0]["series"].is_null(),
        "want one PlanWarning Warning Event, seen once, with the condition's message: {warnings:#?}"
    );

    // `dnspolicy explain --from-cluster` reads what CoreDNS runs (the
    // ConfigMap, the version from the image, the policies) and explains it
    // as given: the lookup works; before the policy it failed.
    let explain = std::process::Command::new(cli_bin()?)
        .args([
            "explain",
            "frigate.video-management-system.svc.cluster.local",
            "--search",
            "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net",
            "--resolver",
            "musl",
            "--from-cluster",
            "--before-after",
        ])
        .env("KUBECONFIG", c.kubeconfig())
        .output()?;
    let text = String::from_utf8_lossy(&explain.stdout);
    ensure!(
        explain.status.success(),
        "explain --from-cluster: {}",
        String::from_utf8_lossy(&explain.stderr)
    );
    let (before, after) = text
        .split_once("=== after: ")
        .context(format!("no after section:\n{text}"))?;
    ensure!(
        before.starts_with("From the cluster: ConfigMap kube-system/coredns")
            && before.contains(&format!("CoreDNS {} (image ", old.trim_start_matches('v')))
            && before.contains("policies: tailnet")
            && before.contains("FAILED"),
        "explain --from-cluster, before:\n{before}"
    );
    ensure!(
        after.starts_with("ConfigMap kube-system/coredns as given") && !after.contains("FAILED"),
        "explain --from-cluster, after:\n{after}"
    );
    println!("explain --from-cluster:\n{text}");
    op.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_corefile_write_and_rollout_converges() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let before = template_hash(&c)?;
    let mut op = Operator::start_with(
        &c,
        "crash",
        &[],
        &Launch::default().env("DNSPOLICY_FAILPOINT", "exit-after-configmap-write"),
    )?;
    apply(&c, &TAILSCALE)?;
    let status = wait_for(
        "the operator to die after the ConfigMap write",
        WAIT,
        || Ok(op.exited()),
    )
    .await
    .with_context(|| op.log_tail(40))?;
    ensure!(
        status.code() == Some(86),
        "exited {status:?}; log:\n{}",
        op.log_text()
    );
    ensure!(
        corefile(&c)?.contains(BEGIN_MANAGED),
        "the ConfigMap write did not happen"
    );
    ensure!(
        template_hash(&c)? == before,
        "the rollout happened before the crash"
    );
    let mut op = Operator::start(&c, "crash", &[])?;
    let p = op.ready(&c, "tailnet", WAIT).await?;
    ensure!(template_hash(&c)?.as_deref() == p["status"]["corefileHash"].as_str());
    rolled(&c).await?;
    op.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_at_admission_naming_the_field() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    install_crd(&c)?;
    for (spec, field) in [
        (
            "foreignSuffixes: [{suffix: \"x }\\nforward . 6.6.6.6\"}]",
            "spec.foreignSuffixes[0].suffix",
        ),
        (
            "foreignSuffixes: [{suffix: svc.cluster.local}]",
            "spec.foreignSuffixes",
        ),
        ("foreignSuffixes: []", "spec.foreignSuffixes"),
        (
            "foreignSuffixes: [{suffix: a.example}, {suffix: a.example}]",
            "spec.foreignSuffixes",
        ),
    ] {
        let yaml = format!(
            "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"
        );
        let err = c
            .kubectl_stdin(&["apply", "-f", "-"], &yaml)
            .err()
            .context(format!("accepted: {spec}"))?;
        ensure!(
            format!("{err:#}").contains(field),
            "error for {spec} does not name {field}: {err:#}"
        );
    }
    Ok(())
}

fn pod_yaml(ns: &str, name: &str, node: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: app, image: registry.example/app:1}}]\n{extra_spec}---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polluted_pods_are_counted_as_kubelet_builds_their_search_lists() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    for ns in ["pollution-a", "pollution-b"] {
        c.kubectl(&[
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=true",
        ])?;
        c.kubectl(&["create", "namespace", ns])?;
    }
    c.add_node("tail-node", &[])?;
    c.add_node("clean-node", &[])?;
    let dir = c.layout.dir.join("node-agents");
    std::fs::create_dir_all(&dir)?;
    let tail_conf = dir.join("tail-node.resolv.conf");
    let clean_conf = dir.join("clean-node.resolv.conf");
    std::fs::write(
        &tail_conf,
        "nameserver 100.100.100.100\nsearch tailb45a71.ts.net\n",
    )?;
    std::fs::write(
        &clean_conf,
        "nameserver 10.0.0.2\nsearch example.internal\n",
    )?;
    let mut agents = vec![
        node_agent(&c, "tail-node", &tail_conf)?,
        node_agent(&c, "clean-node", &clean_conf)?,
    ];
    wait_for("node agents to publish", Duration::from_secs(20), || {
        let n = get_json(&c, &["node", "tail-node"])?;
        Ok(
            (n["metadata"]["annotations"]["dnspolicy.dev/host-search"] == "tailb45a71.ts.net")
                .then_some(()),
        )
    })
    .await?;

    let mut op = Operator::start(&c, "pollution", &[])?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;

    // What kubelet writes (pkg/kubelet/network/dns): ClusterFirst = cluster
    // entries + host search; hostNetwork with ClusterFirst falls back to
    // Default = host search only; ClusterFirstWithHostNet = ClusterFirst;
    // None = only dnsConfig; dnsConfig.searches are appended to any policy.
    let pods = [
        pod_yaml("pollution-a", "a1-clusterfirst", "tail-node", ""),
        pod_yaml("pollution-a", "a2-default", "tail-node", "  dnsPolicy: Default\n"),
        pod_yaml("pollution-a", "a3-none", "tail-node", "  dnsPolicy: None\n  dnsConfig: {nameservers: [10.96.0.10], searches: [corp.example]}\n"),
        pod_yaml("pollution-a", "a4-hostnet", "tail-node", "  hostNetwork: true\n"),
        pod_yaml("pollution-a", "a5-hostnet-cf", "tail-node", "  hostNetwork: true\n  dnsPolicy: ClusterFirstWithHostNet\n"),
        pod_yaml("pollution-b", "b1-clusterfirst", "clean-node", ""),
        pod_yaml("pollution-b", "b2-own-search", "clean-node", "  dnsConfig: {searches: [tailb45a71.ts.net]}\n"),
        pod_yaml("pollution-b", "b3-default", "clean-node", "  dnsPolicy: Default\n"),
    ]
    .concat();
    c.kubectl_stdin(&["apply", "-f", "-"], &pods)?;
    let took = wait_namespace_counts(
        &c,
        &[("pollution-a", 5, 4), ("pollution-b", 3, 1)],
        "counts of the first pods",
    )
    .await?;
    println!("status counted 8 new pods in {took:?}");

    // Churn: counts follow deletions and creations.
    c.kubectl(&[
        "-n",
        "pollution-a",
        "delete",
        "pod",
        "a1-clusterfirst",
        "a2-default",
        "--wait=false",
    ])?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("pollution-b", "b4-clusterfirst", "tail-node", ""),
    )?;
    let took = wait_namespace_counts(
        &c,
        &[("pollution-a", 3, 2), ("pollution-b", 4, 2)],
        "counts after churn",
    )
    .await?;
    println!("status followed churn in {took:?}");

    // The node is cleaned: its existing pods keep the list they started
    // with; pods started afterwards are clean.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&tail_conf, "nameserver 10.0.0.2\nsearch example.internal\n")?;
    wait_for(
        "the agent to publish the clean list",
        Duration::from_secs(20),
        || {
            let n = get_json(&c, &["node", "tail-node"])?;
            Ok(
                (n["metadata"]["annotations"]["dnspolicy.dev/host-search"] == "example.internal")
                    .then_some(()),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("pollution-a", "a6-after-cleanup", "tail-node", ""),
    )?;
    wait_namespace_counts(
        &c,
        &[("pollution-a", 4, 2), ("pollution-b", 4, 2)],
        "counts after the node was cleaned",
    )
    .await?;

    // An agent that cannot read its file says so on its Node, and the
    // policy's status names the node instead of counting it as clean.
    std::fs::remove_file(&clean_conf)?;
    let message = wait_for(
        "PodsCounted=False naming clean-node",
        Duration::from_secs(20),
        || {
            let p = policy(&c, "tailnet")?;
            Ok(condition(&p, "PodsCounted")
                .filter(|(status, reason, message)| {
                    status == "False"
                        && reason == "NodeAgentFailed"
                        && message.contains("clean-node: ")
                })
                .map(|(_, _, message)| message))
        },
    )
    .await?;
    ensure!(message.contains("cannot read"), "{message}");
    ensure!(
        is_ready(&policy(&c, "tailnet")?),
        "an unreadable node file is about counts, not lookups: Ready must stay"
    );
    std::fs::write(
        &clean_conf,
        "nameserver 10.0.0.2\nsearch example.internal\n",
    )?;
    wait_for(
        "PodsCounted to go once the file reads again",
        Duration::from_secs(20),
        || {
            Ok(condition(&policy(&c, "tailnet")?, "PodsCounted")
                .is_none()
                .then_some(()))
        },
    )
    .await?;

    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    c.kubectl(&["delete", "cdp", "--all", "--wait=true", "--timeout=60s"])?;
    for ns in ["pollution-a", "pollution-b"] {
        c.kubectl(&["delete", "namespace", ns, "--wait=false"])?;
    }
    c.kubectl(&["delete", "node", "tail-node", "clean-node", "--wait=false"])?;
    op.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_the_other_takes_over() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let lease = "dnspolicy-ha";
    let holder = |c: &Cluster| -> Result<Option<String>> {
        let l = get_json(c, &["-n", "kube-system", "lease", lease])?;
        Ok(l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let mut first = Operator::start(&c, "ha", &["--identity", "ha-1"])?;
    wait_for("ha-1 to lead", Duration::from_secs(30), || {
        Ok(holder(&c)?.filter(|h| h == "ha-1"))
    })
    .await?;
    let mut second = Operator::start(
        &c,
        "ha-standby",
        &["--lease-name", lease, "--identity", "ha-2"],
    )?;
    apply(&c, &TAILSCALE)?;
    first.ready(&c, "tailnet", WAIT).await?;
    ensure!(
        !second.log_text().contains("starting the controller"),
        "the standby started reconciling"
    );

    // The leader crashes (no Lease release): the standby takes over after the lease expires.
    let t0 = Instant::now();
    first.kill();
    wait_for("ha-2 to take over", Duration::from_secs(40), || {
        Ok(holder(&c)?.filter(|h| h == "ha-2"))
    })
    .await?;
    println!(
        "standby took over {:?} after the leader was killed",
        t0.elapsed()
    );
    apply(
        &c,
        &TAILSCALE.replace("action: Rewrite", "action: NXDomain"),
    )?;
    let p = wait_for("the new leader to reconcile a change", WAIT, || {
        let p = policy(&c, "tailnet")?;
        Ok((is_ready(&p) && corefile(&c)?.contains("rcode NXDOMAIN")).then_some(p))
    })
    .await
    .with_context(|| second.log_text())?;
    ensure!(template_hash(&c)?.as_deref() == p["status"]["corefileHash"].as_str());
    second.delete_policies_and_stop(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_restarting_mid_run_is_survived() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = Operator::start(&c, "apiserver-restart", &[])?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;
    let down = c.restart_apiserver()?;
    println!("kube-apiserver back after {down:?}");
    ensure!(
        op.exited().is_none(),
        "the operator died with the apiserver:\n{}",
        op.log_text()
    );
    // Watches resumed: a change made after the restart is reconciled. The
    // watches reconnect at most 3 s (plus jitter) apart however long the
    // apiserver was down (WatchBackoff), then relist on 410 Expired: 6 s
    // measured here. The bound leaves room for a loaded CI machine; with
    // kube-runtime's default backoff (up to 30 s plus 100 % jitter) it took
    // over 60 s in one CI run.
    apply(
        &c,
        &TAILSCALE.replace("action: Rewrite", "action: NXDomain"),
    )?;
    let t0 = Instant::now();
    wait_for(
        "a change after the apiserver restart to apply",
        Duration::from_secs(30),
        || {
            let p = policy(&c, "tailnet")?;
            Ok((is_ready(&p) && corefile(&c)?.contains("rcode NXDOMAIN")).then_some(()))
        },
    )
    .await
    .with_context(|| op.log_text())?;
    println!("the change after the restart applied in {:?}", t0.elapsed());
    op.delete_policies_and_stop(&c)
}

/// `kubectl apply -k manifests/`, then the operator run with its
/// ServiceAccount's token (the admin kubeconfig's cluster, that token as the
/// user) and the shipped Lease: what the shipped RBAC and admission allow.
fn installed_with_the_shipped_rbac(c: &Cluster, name: &str) -> Result<Operator> {
    install_manifests(c)?;
    let path = service_account_kubeconfig(c, "dnspolicy-system", "dnspolicy")?;
    Operator::start_with(
        c,
        name,
        &[
            "--lease-namespace",
            "dnspolicy-system",
            "--lease-name",
            "dnspolicy",
        ],
        &Launch::default().kubeconfig(path),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_install_works_with_the_shipped_rbac() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = installed_with_the_shipped_rbac(&c, "rbac")?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", WAIT).await?;
    rolled(&c).await?;
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    ensure!(
        corefile(&c)? == original,
        "not restored under the shipped RBAC"
    );
    let log = op.log_text();
    ensure!(
        !log.contains("forbidden"),
        "the shipped RBAC forbade something:\n{log}"
    );
    op.stop()?;
    Ok(())
}

/// `kubectl delete -k manifests/` with policies still applied, the operator
/// running under the shipped RBAC: the CRD's deletion deletes the policies
/// and the operator restores the Corefile byte for byte; the shipped
/// admission policy `dnspolicy-uninstall-order` refuses to delete what the
/// operator needs for that (its namespace, ServiceAccount, RBAC, Deployment)
/// while a policy exists, naming the policy and the way out; a second
/// `delete -k` then removes the rest. No policy is left Terminating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_k_restores_the_corefile_and_leaves_nothing_stuck() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let original = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let mut op = installed_with_the_shipped_rbac(&c, "uninstall")?;
    apply(&c, &TAILSCALE)?;
    apply(&c, OPENSTACK)?;
    op.ready(&c, "tailnet", WAIT).await?;
    op.ready(&c, "openstack", WAIT).await?;
    rolled(&c).await?;
    ensure!(corefile(&c)? != original, "the policies changed nothing");

    let manifests = env::repo_root().join("manifests");
    let manifests = manifests.to_str().unwrap();
    let t0 = Instant::now();
    let first = c.kubectl(&["delete", "-k", manifests, "--wait=false"]);
    let refused = match first {
        Ok(out) => anyhow::bail!("the first delete -k removed everything:\n{out}"),
        Err(e) => format!("{e:#}"),
    };
    for kind in [
        "namespaces \"dnspolicy-system\"",
        "serviceaccounts \"dnspolicy\"",
        "clusterroles.rbac.authorization.k8s.io \"dnspolicy\"",
        "rolebindings.rbac.authorization.k8s.io \"dnspolicy-coredns\"",
        "deployments.apps \"dnspolicy\"",
    ] {
        ensure!(
            refused
                .lines()
                .any(|l| l.contains(kind) && l.contains("dnspolicy-uninstall-order")),
            "deleting {kind} was not refused by dnspolicy-uninstall-order:\n{refused}"
        );
    }
    ensure!(
        refused.contains("kubectl delete clusterdnspolicies --all --wait"),
        "the refusal does not say the way out:\n{refused}"
    );
    // The CRD goes once the operator has released its policies.
    let deadline = Instant::now() + WAIT;
    loop {
        let crd = c.kubectl(&[
            "get",
            "crd",
            "clusterdnspolicies.dnspolicy.dev",
            "--ignore-not-found",
            "-o",
            "name",
        ])?;
        if crd.trim().is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the CRD is still there after {WAIT:?} (policies stuck?):\n{}\n{}",
            c.kubectl(&["get", "cdp", "-o", "yaml"]).unwrap_or_default(),
            op.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let released = t0.elapsed();
    ensure!(
        corefile(&c)? == original,
        "the Corefile is not the original after delete -k"
    );
    let left = dnspolicy_annotations(&c, "coredns")?;
    ensure!(left.is_empty(), "dnspolicy annotations left: {left:?}");
    let log = op.log_text();
    ensure!(
        !log.contains("forbidden"),
        "the operator lost a permission during the uninstall:\n{log}"
    );
    op.stop()?;

    let t1 = Instant::now();
    c.kubectl(&[
        "delete",
        "-k",
        manifests,
        "--ignore-not-found",
        "--timeout=120s",
    ])
    .context("the second delete -k")?;
    for (kind, name) in [
        ("clusterrole", "dnspolicy"),
        ("clusterrolebinding", "dnspolicy"),
        ("validatingadmissionpolicy", "dnspolicy-uninstall-order"),
        ("namespace", "dnspolicy-system"),
    ] {
        let got = c.kubectl(&["get", kind, name, "--ignore-not-found", "-o", "name"])?;
        ensure!(got.trim().is_empty(), "{kind} {name} is still there");
    }
    println!(
        "delete -k: policies released and the Corefile restored {:.1} s after the first run; the second run took {:.1} s",
        released.as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    // Later tests expect the CRD.
    install_crd(&c)
}

/// Issue 10's refusals through the controller (the planner's own tests and
/// the real-CoreDNS matrix prove each on its own): a layout or policy the
/// planner cannot make correct leaves the Corefile untouched, never reports
/// Ready, and says why in Stalled and a Warning Event `Refused` whose note
/// starts with the same reason.
/// Each case is the cluster's stock Corefile with one change, so the CoreDNS
/// pods that reload it keep answering on their own addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_the_planner_refuses_stall_with_their_reason_and_an_event() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let stock = fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let tailnet = "foreignSuffixes: [{suffix: tailb45a71.ts.net}]";
    let autopath = stock
        .replacen("    errors\n", "    errors\n    autopath @kubernetes\n", 1)
        .replacen("pods insecure", "pods verified", 1);
    let acl = stock.replacen(
        "    errors\n",
        "    errors\n    acl {\n        allow net 127.0.0.0/8 10.0.0.0/8\n        block\n    }\n",
        1,
    );
    let cases: [(&str, &str, String, &str); 5] = [
        (
            "ClusterDomainNotServed",
            "clusterDomain: corp.internal\nforeignSuffixes: [{suffix: tailb45a71.ts.net}]",
            stock.clone(),
            "spec.clusterDomain",
        ),
        (
            "ZoneTaken",
            "foreignSuffixes: [{suffix: 10.in-addr.arpa}]",
            stock.clone(),
            "kubernetes",
        ),
        (
            "ForwardLoops",
            "foreignSuffixes: [{suffix: corp.example, action: NXDomain, forwardTo: ['10.96.0.10']}]",
            stock.clone(),
            "10.96.0.10",
        ),
        ("AutopathInDotBlock", tailnet, autopath, "autopath"),
        ("ClientIPPolicyInDotBlock", tailnet, acl, "acl"),
    ];
    let mut op = Operator::start(&c, "refusals", &[])?;
    for (want, spec, corefile_before, names) in cases {
        c.set_corefile(&corefile_before)?;
        let hash = template_hash(&c)?;
        let name = format!("refused-{}", want.to_ascii_lowercase());
        apply(
            &c,
            &format!(
                "apiVersion: dnspolicy.dev/v1alpha1\nkind: ClusterDNSPolicy\nmetadata:\n  name: {name}\nspec:\n{}",
                spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
            ),
        )?;
        let (reason, message) = wait_for(&format!("{name} Stalled"), WAIT, || {
            let p = policy(&c, &name)?;
            Ok(condition(&p, "Stalled")
                .filter(|s| s.0 == "True")
                .map(|s| (s.1, s.2)))
        })
        .await
        .with_context(|| op.log_tail(40))?;
        println!("{want}: Stalled {reason}: {message}");
        ensure!(
            reason == want,
            "{name}: Stalled {reason}, want {want}: {message}"
        );
        ensure!(
            message.contains(names),
            "{name}: {names:?} not named in {message}"
        );
        let p = policy(&c, &name)?;
        ensure!(!is_ready(&p), "{name}: refused but Ready: {}", p["status"]);
        let events = get_json(&c, &["events.events.k8s.io", "-A"])?;
        let seen = events["items"].as_array().into_iter().flatten().any(|e| {
            e["regarding"]["name"] == name.as_str()
                && e["reason"] == "Refused"
                && e["type"] == "Warning"
                && e["note"].as_str().is_some_and(|n| n.starts_with(want))
        });
        ensure!(seen, "{name}: no Warning Event Refused for {want}");
        ensure!(
            corefile(&c)? == corefile_before,
            "{name}: the refused policy was written"
        );
        ensure!(
            template_hash(&c)? == hash,
            "{name}: CoreDNS was rolled for a refused policy"
        );
        c.kubectl(&["delete", "cdp", &name, "--wait=true", "--timeout=60s"])?;
    }
    op.delete_policies_and_stop(&c)?;
    c.set_corefile(&stock)?;
    Ok(())
}
