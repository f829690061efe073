//! dnspolicy installed as a user installs it: the image built from the
//! Dockerfile's final stage (e2e/scripts/build-deps.sh `dnspolicy-image`),
//! `kubectl apply -k` of the shipped manifests through the release overlay
//! (`dnspolicy release-overlay`, as the repository's release/ is written) pinning
//! that image by digest, under an overlay that lets the operator onto the
//! real node, and the operator and node agent then running as pods on the
//! real node (see
//! e2e/src/cluster/node.rs): the pods run the image by digest (the spec
//! and the container's imageID), probes, securityContext, RBAC, a policy's
//! Corefile and Ready status, the node agent reading kubelet's real node
//! file through a systemd-resolved-style symlink, pollution counts from
//! real pods' real resolv.conf, and leader failover by deleting the leader.
//!
//! One node start for the file; the node is stopped at the end (or when the
//! test panics) so later suites find the cluster as `up` left it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use dnspolicy_e2e::cluster::node::{self, NodeOptions, ResolvConf};
use dnspolicy_e2e::operator;
use dnspolicy_e2e::{Cluster, Flavor, env};

const SYSTEM_NS: &str = "dnspolicy-system";
const PODS_NS: &str = "install-pollution";
const OPERATOR_SA: &str = "system:serviceaccount:dnspolicy-system:dnspolicy";
const LABELS_OPERATOR: &str =
    "app.kubernetes.io/name=dnspolicy,app.kubernetes.io/component=controller";
const LABELS_AGENT: &str =
    "app.kubernetes.io/name=dnspolicy,app.kubernetes.io/component=node-agent";

/// The overlay a user with a dedicated, tainted node pool writes over the
/// release overlay (here: to keep the operator off the kwok nodes, where
/// nothing really runs). Nothing else: the node agent DaemonSet tolerates
/// every taint as shipped.
fn node_pool_overlay(release: &str) -> String {
    format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- {release}
patches:
- target: {{kind: Deployment, name: dnspolicy}}
  patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: dnspolicy}}
    spec:
      template:
        spec:
          nodeSelector: {{{key}: "true"}}
          tolerations: [{toleration}]
"#,
        key = node::TAINT_KEY,
        toleration = node::TOLERATION,
    )
}

/// `dnspolicy release-overlay ARGS` (what `just release-overlay` runs): its
/// standard output, or its exit code and standard error.
fn release_overlay(args: &[&str]) -> Result<std::result::Result<String, (i32, String)>> {
    let out = std::process::Command::new(operator::cli_bin()?)
        .arg("release-overlay")
        .args(args)
        .output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err((out.status.code().unwrap_or(-1), text(&out.stderr)))
    })
}

/// The release overlay for the local image, written by the same tool a
/// release uses, with the image by digest (refusing its tag); the node pool
/// overlay over it, beside it (kustomize refuses an overlay inside its
/// base's directory). The latter's path.
fn write_overlays(c: &Cluster, image_tag: &str, image_digest: &str) -> Result<PathBuf> {
    let release = c.layout.dir.join("install-release");
    let pool = c.layout.dir.join("install-node-pool");
    std::fs::create_dir_all(&release)?;
    std::fs::create_dir_all(&pool)?;
    let manifests = env::repo_root().join("manifests").canonicalize()?;
    let base = relative(&manifests, &release)?.display().to_string();
    let refused = release_overlay(&[image_tag, "--base", &base])?;
    match refused {
        Err((2, e)) if e.contains("tag only") && e.contains("IMAGE@sha256:") => {}
        other => bail!("release-overlay took the tag {image_tag}: {other:?}"),
    }
    let text = release_overlay(&[image_digest, "--base", &base])?
        .map_err(|e| anyhow::anyhow!("release-overlay {image_digest}: {e:?}"))?;
    let file = release.join("kustomization.yaml");
    std::fs::write(&file, &text)?;
    let pinned = release_overlay(&["--check", file.to_str().context("overlay path")?])?
        .map_err(|e| anyhow::anyhow!("release-overlay --check {}: {e:?}", file.display()))?;
    assert_eq!(pinned.trim(), image_digest, "{text}");
    std::fs::write(
        pool.join("kustomization.yaml"),
        node_pool_overlay("../install-release"),
    )?;
    Ok(pool)
}

/// Stops the node and removes what the test installed, also on panic.
struct Run<'a> {
    c: &'a Cluster,
    done: bool,
}

impl Run<'_> {
    fn cleanup(&self) -> Result<()> {
        let c = self.c;
        let _ = operator::clear_policies(c);
        let _ = c.kubectl(&["delete", "namespace", PODS_NS, "--ignore-not-found"]);
        // The operator and agent pods go while the node still runs them.
        let _ = c.kubectl(&[
            "delete",
            "namespace",
            SYSTEM_NS,
            "--ignore-not-found",
            "--timeout=120s",
        ]);
        c.stop_node()
    }

    fn finish(mut self) -> Result<()> {
        self.done = true;
        self.cleanup()
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.cleanup()
        {
            eprintln!("[install] cleanup after a failure: {e:#}");
        }
    }
}

fn json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&c.kubectl(&a)?)?)
}

/// Pods matching `labels` in `ns` that run on the real node, by name.
fn pods_on_node(c: &Cluster, ns: &str, labels: &str) -> Result<Vec<Value>> {
    let pods = json(c, &["-n", ns, "get", "pods", "-l", labels])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["nodeName"] == node::NODE_NAME)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect())
}

fn name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls `check` every 500 ms until it gives a value, or fails after `limit`.
async fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if t0.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The container process of pod `ns/name` runs as the manifests' user with
/// no capabilities.
fn assert_runs_as_shipped(c: &Cluster, ns: &str, pod: &str) -> Result<()> {
    let status = node::pod_process_status(&c.layout, ns, pod)?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), ["65532"; 4], "{pod} uid: {status}");
    assert_eq!(field("Gid:"), ["65532"; 4], "{pod} gid: {status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{pod}: {status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{pod}: {status}");
    Ok(())
}

fn lease_holder(c: &Cluster) -> Result<Option<String>> {
    let lease = json(c, &["-n", SYSTEM_NS, "get", "lease", "dnspolicy"]);
    Ok(lease
        .ok()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .filter(|h| !h.is_empty()))
}

fn node_annotation(c: &Cluster, key: &str) -> Result<Option<String>> {
    let n = json(c, &["get", "node", node::NODE_NAME])?;
    Ok(n["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string))
}

/// A busybox pod on the real node with `dns` (YAML lines of its spec).
fn busybox_pod(name: &str, image: &str, dns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {PODS_NS}}}
spec:
  nodeSelector: {{{key}: "true"}}
  tolerations: [{toleration}]
  terminationGracePeriodSeconds: 1
{dns}
  containers: [{{name: sleep, image: "{image}", imagePullPolicy: Never, command: [/bin/busybox, sleep, "3600"]}}]
"#,
        key = node::TAINT_KEY,
        toleration = node::TOLERATION,
    )
}

#[tokio::test]
async fn operator_and_node_agent_from_the_image_with_the_shipped_manifests() -> Result<()> {
    let c = Cluster::ensure().await?;
    // The CoreDNS ConfigMap is cluster-wide state.
    let _x = c.exclusive()?;
    // Not a node left by an earlier run.
    c.stop_node()?;
    let image_tag = node::build_dnspolicy_image()?;
    // Installed by digest, as a release is (the repository's release/).
    let image = node::image_digest_ref("dnspolicy")?;
    eprintln!("[install] image {image_tag}, installed as {image}");
    let run = Run { c: &c, done: false };
    c.ensure_node(&NodeOptions {
        resolv_conf: ResolvConf::SystemdSymlink,
    })?;
    node::import_image(&c.layout, "dnspolicy")?;
    operator::fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    let _ = c.kubectl(&["delete", "namespace", SYSTEM_NS, "--ignore-not-found"]);

    // 1. kubectl apply -k, as a user does: the release overlay (written by
    // `dnspolicy release-overlay`) under the user's node pool overlay.
    let t0 = Instant::now();
    let dir = write_overlays(&c, &image_tag, &image)?;
    c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        dir.to_str().context("overlay path")?,
    ])?;
    for what in ["deployment/dnspolicy", "daemonset/dnspolicy-node-agent"] {
        c.kubectl(&["-n", SYSTEM_NS, "rollout", "status", what, "--timeout=180s"])?;
    }
    eprintln!(
        "[install] apply -k to both workloads rolled out: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let operators = pods_on_node(&c, SYSTEM_NS, LABELS_OPERATOR)?;
    let agents = pods_on_node(&c, SYSTEM_NS, LABELS_AGENT)?;
    assert_eq!(
        operators.len(),
        2,
        "both operator replicas on the real node"
    );
    assert_eq!(agents.len(), 1, "one node agent on the real node");
    for p in operators.iter().chain(&agents) {
        // Ready: the readiness probe (operator: /readyz) passed on the real kubelet.
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{} Ready: {}", name(p), p["status"]);
        // The pod runs the image by digest: the spec names it, and the
        // container's imageID (the CRI's repo digest of the image it ran)
        // is that digest.
        assert_eq!(p["spec"]["containers"][0]["image"], image.as_str());
        assert_eq!(
            p["status"]["containerStatuses"][0]["imageID"],
            image.as_str(),
            "{} imageID: {}",
            name(p),
            p["status"]["containerStatuses"]
        );
        // Not overlaid: the API server's default for a digest (or a
        // non-`latest` tag).
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_runs_as_shipped(&c, SYSTEM_NS, &name(p))?;
    }

    // 2. The node agent reads the file kubelet uses (here through the
    // systemd-resolved symlink) and publishes its search list.
    let link = node::kubelet_resolv_conf(&c.layout, ResolvConf::SystemdSymlink);
    assert!(link.symlink_metadata()?.file_type().is_symlink());
    let published = wait_until(
        "the node agent's host-search",
        Duration::from_secs(90),
        || node_annotation(&c, "dnspolicy.dev/host-search"),
    )
    .await?;
    assert_eq!(published, env::NODE_SEARCH);
    // A change to the node's resolver, picked up when the agent restarts
    // (as manifests/node-agent.yaml says).
    let node_file = node::resolv_conf_file(&c.layout);
    let changed = format!(
        "nameserver {}\nsearch corp.example {}\n",
        node::HOST_IP,
        env::NODE_SEARCH
    );
    std::fs::write(&node_file, &changed)?;
    c.kubectl(&["-n", SYSTEM_NS, "delete", "pod", &name(&agents[0])])?;
    let published = wait_until("the new host-search", Duration::from_secs(90), || {
        Ok(node_annotation(&c, "dnspolicy.dev/host-search")?.filter(|s| s != env::NODE_SEARCH))
    })
    .await?;
    assert_eq!(published, format!("corp.example {}", env::NODE_SEARCH));
    assert_eq!(
        node_annotation(&c, "dnspolicy.dev/host-search-previous")?.as_deref(),
        Some(env::NODE_SEARCH)
    );

    // 3. A policy: the operator pod writes the Corefile as its ServiceAccount
    // (the shipped RBAC and admission policies let it) and reports Ready.
    let audit = c.audit();
    let mark = audit.mark();
    let t0 = Instant::now();
    c.kubectl_stdin(&["apply", "-f", "-"], &operator::TAILSCALE)?;
    operator::wait_ready(&c, "tailnet", Duration::from_secs(180)).await?;
    eprintln!(
        "[install] policy Ready in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let corefile = operator::corefile(&c)?;
    assert!(corefile.contains(env::NODE_SEARCH), "{corefile}");
    let writes: Vec<String> = audit
        .writes_by_user(mark, OPERATOR_SA)
        .iter()
        .filter(|e| e.code < 300)
        .map(|e| format!("{} {}/{}", e.verb, e.resource, e.name))
        .collect();
    assert!(
        writes.iter().any(|w| w.contains("configmaps/coredns")),
        "the operator's ServiceAccount wrote the Corefile: {writes:?}"
    );

    // 3b. /metrics as a ServiceMonitor scrapes it.
    metrics_through_the_shipped_rbac(&c)?;

    // 4. Pollution counts from real pods' real resolv.conf.
    pollution_counts(&c).await?;

    // 5. Leader failover: delete the leader pod; then a leader that hangs.
    failover(&c).await?;
    hung_leader(&c).await?;

    run.finish()
}

/// The operator pods' /metrics from inside the node's network, as Prometheus
/// reaches them: HTTPS on 8443 with the self-signed certificate (verification
/// skipped, as the shipped ServiceMonitor does), a ServiceAccount token bound
/// to the shipped dnspolicy-metrics-reader: 200 with the operator's series.
/// The operator checks the token with its own ServiceAccount, so the shipped
/// RBAC for TokenReviews and SubjectAccessReviews is what lets it answer
/// (without it: 500). No token: 401; the node agent's token (not bound): 403;
/// the probes' port 8081 answers plain HTTP without one.
fn metrics_through_the_shipped_rbac(c: &Cluster) -> Result<()> {
    const SCRAPER: &str = "dnspolicy-e2e-scraper";
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {SCRAPER}, namespace: {SYSTEM_NS}}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {SCRAPER}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dnspolicy-metrics-reader}}\n\
             subjects: [{{kind: ServiceAccount, name: {SCRAPER}, namespace: {SYSTEM_NS}}}]\n"
        ),
    )?;
    let token = |sa: &str| -> Result<String> {
        Ok(
            c.kubectl(&["-n", SYSTEM_NS, "create", "token", sa, "--duration=10m"])?
                .trim()
                .to_string(),
        )
    };
    let (reader, agent) = (token(SCRAPER)?, token("dnspolicy-node-agent")?);
    let netns = PathBuf::from("/run/netns").join(node::NETNS);
    let result = (|| -> Result<()> {
        for p in pods_on_node(c, SYSTEM_NS, LABELS_OPERATOR)? {
            let ip = p["status"]["podIP"].as_str().context("podIP")?.to_string();
            let addr = format!("{ip}:8443");
            let get = |token: Option<&str>| {
                dnspolicy_e2e::net::https_get(&addr, "/metrics", token, None, Some(&netns))
            };
            let ok = get(Some(&reader))?;
            assert_eq!(
                ok.status,
                200,
                "{} /metrics with the reader's token: {ok:?}",
                name(&p)
            );
            assert!(ok.body.contains("dnspolicy_build_info"), "{}", ok.body);
            let none = get(None)?;
            assert_eq!(none.status, 401, "no token: {none:?}");
            let denied = get(Some(&agent))?;
            assert_eq!(denied.status, 403, "the node agent's token: {denied:?}");
            let health = std::process::Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{ip}:8081/healthz"))
                .output()?;
            assert_eq!(String::from_utf8_lossy(&health.stdout), "200", "{health:?}");
        }
        Ok(())
    })();
    c.kubectl(&[
        "delete",
        "clusterrolebinding",
        SCRAPER,
        "--ignore-not-found",
    ])?;
    result?;
    eprintln!(
        "[install] /metrics: 200 with the reader's token, 401 without, 403 for the node agent"
    );
    Ok(())
}

/// Real pods on the real node: the policy's counts equal the number whose
/// real /etc/resolv.conf (kubectl exec cat) carries the declared suffix.
async fn pollution_counts(c: &Cluster) -> Result<()> {
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {PODS_NS}}}\n"),
    )?;
    let busybox = node::image("busybox")?;
    let pods = [
        ("cluster-first", "  dnsPolicy: ClusterFirst"),
        ("default", "  dnsPolicy: Default"),
        (
            "host-network",
            "  hostNetwork: true\n  dnsPolicy: ClusterFirst",
        ),
        (
            "none",
            "  dnsPolicy: None\n  dnsConfig: {nameservers: [10.96.0.10], searches: [svc.cluster.local]}",
        ),
        (
            "none-with-suffix",
            "  dnsPolicy: None\n  dnsConfig: {nameservers: [10.96.0.10], searches: [svc.cluster.local, tailb45a71.ts.net]}",
        ),
    ];
    for (n, dns) in pods {
        c.kubectl_stdin(&["apply", "-f", "-"], &busybox_pod(n, &busybox, dns))?;
    }
    for (n, _) in pods {
        c.kubectl(&[
            "-n",
            PODS_NS,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{n}"),
            "--timeout=180s",
        ])?;
    }
    let mut polluted = 0;
    for (n, _) in pods {
        let conf = c.kubectl(&[
            "-n",
            PODS_NS,
            "exec",
            n,
            "--",
            "/bin/busybox",
            "cat",
            "/etc/resolv.conf",
        ])?;
        let carries = conf
            .lines()
            .filter_map(|l| l.strip_prefix("search "))
            .flat_map(str::split_whitespace)
            .any(|s| s.trim_end_matches('.') == env::NODE_SEARCH);
        eprintln!("[install] {n} (carries the suffix: {carries}):\n{conf}");
        polluted += u64::from(carries);
    }
    assert!(polluted > 0 && polluted < pods.len() as u64);
    let took = operator::wait_namespace_counts(
        c,
        &[(PODS_NS, pods.len() as u64, polluted)],
        "the policy to count the real pods",
    )
    .await
    .with_context(|| {
        format!(
            "status namespaces: {:?}",
            operator::policy(c, "tailnet")
                .map(|p| operator::status_namespaces(&p))
                .unwrap_or_default()
        )
    })?;
    eprintln!(
        "[install] status counts {polluted} of {} real pods polluted, {:.1}s after they were Ready",
        pods.len(),
        took.as_secs_f64()
    );
    Ok(())
}

/// Delete the leader pod: it releases the Lease on SIGTERM, and another
/// replica takes it and reconciles a change to the policy. Which one is a
/// race: the standby sleeps until the Lease's expiry before looking again
/// (kube-lease-manager), while the Deployment's replacement pod tries as
/// soon as it starts; either is a correct failover.
async fn failover(c: &Cluster) -> Result<()> {
    let replicas: Vec<String> = pods_on_node(c, SYSTEM_NS, LABELS_OPERATOR)?
        .iter()
        .map(name)
        .collect();
    let leader = wait_until("a Lease holder", Duration::from_secs(60), || {
        lease_holder(c)
    })
    .await?;
    assert!(
        replicas.contains(&leader),
        "{leader} is one of {replicas:?}"
    );
    let t0 = Instant::now();
    c.kubectl(&["-n", SYSTEM_NS, "delete", "pod", &leader, "--wait=false"])?;
    let new = wait_until("another replica to lead", Duration::from_secs(90), || {
        Ok(lease_holder(c)?.filter(|h| *h != leader))
    })
    .await
    .with_context(|| leader_election_state(c))?;
    let took_lease = t0.elapsed();
    reconciles_change(c, "corp.example").await?;
    eprintln!(
        "[install] failover: {new} ({}) took the Lease {:.1}s after {leader} was deleted; the change was Ready {:.1}s after the delete",
        if replicas.contains(&new) {
            "the standby"
        } else {
            "the replacement pod"
        },
        took_lease.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The leader hangs (SIGSTOP: it neither renews nor releases the Lease).
/// The other replica takes the Lease when it expires and reconciles a
/// change; the hung one, killed by its liveness probe or woken, does not
/// take the Lease back and comes back as the standby.
async fn hung_leader(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "-n",
        SYSTEM_NS,
        "rollout",
        "status",
        "deployment/dnspolicy",
        "--timeout=120s",
    ])?;
    let leader = wait_until("a Lease holder", Duration::from_secs(60), || {
        lease_holder(c)
    })
    .await?;
    let pid: i32 = node::pod_pid(&c.layout, SYSTEM_NS, &leader)?.parse()?;
    let t0 = Instant::now();
    // SAFETY: a plain signal to a process of the leader's container.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let resumed = async {
        let new = wait_until("another replica to lead", Duration::from_secs(90), || {
            Ok(lease_holder(c)?.filter(|h| *h != leader))
        })
        .await
        .with_context(|| leader_election_state(c))?;
        let took_lease = t0.elapsed();
        reconciles_change(c, "hung.example").await?;
        eprintln!(
            "[install] hung leader: {new} took the Lease {:.1}s after {leader} stopped; the change was Ready {:.1}s after",
            took_lease.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        anyhow::Ok(new)
    }
    .await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let new = resumed?;
    // The old leader's container restarts (liveness probe, or its own exit
    // on losing the Lease) and comes back Ready, as the standby.
    wait_until(
        "the hung replica to restart and be Ready",
        Duration::from_secs(120),
        || {
            let p = json(c, &["-n", SYSTEM_NS, "get", "pod", &leader])?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0);
            let ready = p["status"]["containerStatuses"][0]["ready"] == true;
            Ok((restarts > 0 && ready).then_some(()))
        },
    )
    .await?;
    assert_eq!(lease_holder(c)?.as_deref(), Some(new.as_str()));
    let log = c
        .kubectl(&["-n", SYSTEM_NS, "logs", &leader, "--previous", "--tail=5"])
        .unwrap_or_default();
    eprintln!("[install] the hung replica's last lines before its restart:\n{log}");
    Ok(())
}

/// The Lease, the operator pods and their last log lines, for a failure.
fn leader_election_state(c: &Cluster) -> String {
    let mut out = c
        .kubectl(&["-n", SYSTEM_NS, "get", "lease", "dnspolicy", "-o", "yaml"])
        .unwrap_or_else(|e| format!("{e:#}"));
    out += &c
        .kubectl(&["-n", SYSTEM_NS, "get", "pods", "-o", "wide"])
        .unwrap_or_else(|e| format!("{e:#}"));
    for p in pods_on_node(c, SYSTEM_NS, LABELS_OPERATOR).unwrap_or_default() {
        let n = name(&p);
        out += &format!("\n--- {n}\n");
        out += &c
            .kubectl(&["-n", SYSTEM_NS, "logs", &n, "--tail=15"])
            .unwrap_or_else(|e| format!("{e:#}"));
    }
    out
}

/// A change only a leading controller acts on: `suffix` added to the
/// policy, in the Corefile and Ready at the new generation.
async fn reconciles_change(c: &Cluster, suffix: &str) -> Result<()> {
    c.kubectl(&[
        "patch",
        "clusterdnspolicy",
        "tailnet",
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op":"add","path":"/spec/foreignSuffixes/-","value":{{"suffix":"{suffix}","action":"Rewrite"}}}}]"#
        ),
    ])?;
    let generation = operator::policy(c, "tailnet")?["metadata"]["generation"]
        .as_i64()
        .context("generation")?;
    wait_until(
        "the leader to reconcile the change",
        Duration::from_secs(180),
        || {
            let p = operator::policy(c, "tailnet")?;
            let observed = p["status"]["observedGeneration"].as_i64();
            Ok((observed == Some(generation)
                && operator::is_ready(&p)
                && operator::corefile(c)?.contains(suffix))
            .then_some(()))
        },
    )
    .await
}

/// `to` relative to `from` (kustomize takes a base by relative path).
fn relative(to: &std::path::Path, from: &std::path::Path) -> Result<PathBuf> {
    let from = from.canonicalize()?;
    let common = to
        .ancestors()
        .find(|a| from.starts_with(a))
        .context("a common ancestor")?;
    let mut p = PathBuf::new();
    for _ in from.strip_prefix(common)?.components() {
        p.push("..");
    }
    Ok(p.join(to.strip_prefix(common)?))
}
