//! `helm install`, `upgrade` and `uninstall` of charts/dnspolicy on the
//! local cluster, with the operator running as the chart's ServiceAccount.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env};

use super::{WAIT, chart_dir, helm, helm_bin, manifests};

/// `GET /metrics` over HTTPS with a bearer token, as the chart's
/// ServiceMonitor scrapes it (self-signed certificate, verification skipped).
fn scrape(addr: &str, token: &str) -> Result<String> {
    let reply = dnspolicy_e2e::net::https_get(addr, "/metrics", Some(token), None, None)?;
    ensure!(reply.status == 200, "GET /metrics: {reply:?}");
    Ok(reply.body)
}

/// Whether `kubectl get ARGS` finds anything.
fn exists(c: &Cluster, args: &[&str]) -> Result<bool> {
    let mut all = vec!["get", "--ignore-not-found", "-o", "name"];
    all.extend_from_slice(args);
    Ok(!c.kubectl(&all)?.trim().is_empty())
}

const RELEASE: &str = "dnspolicy-helm";
const NAMESPACE: &str = "dnspolicy-helm";
/// The ClusterRoleBinding of the test's scraper to the chart's reader role.
const SCRAPER: &str = "dnspolicy-helm-e2e-scraper";

/// The metric names the shipped alerts and dashboard read from the operator.
fn referenced_operator_metrics() -> Result<Vec<String>> {
    let mut text = fs::read_to_string(manifests().join("monitoring/prometheusrule.yaml"))?;
    text += &fs::read_to_string(manifests().join("monitoring/dashboards/dnspolicy.json"))?;
    let mut names: Vec<String> = text
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .filter(|w| w.starts_with("dnspolicy_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// helm install, the operator as the chart's ServiceAccount, a policy Ready,
/// helm upgrade (replicas, digest, a default policy from values, then that
/// policy removed), the policies deleted, helm uninstall: the Corefile is the
/// original byte for byte and the CRD stays.
///
/// Order: Helm's uninstall deletes custom resources after the Deployment and
/// RBAC, so a ClusterDNSPolicy still present then would keep its finalizer
/// for an operator that is gone (and the Corefile edited). Policies are
/// deleted first, the chart's own with `helm upgrade --set defaultPolicy.enabled=false`,
/// while the operator runs; NOTES.txt says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_on_the_local_cluster() -> Result<()> {
    helm_bin()?;
    operator_bin(false)?;
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let dir = env::state_dir().join("helm-test");
    fs::create_dir_all(&dir)?;
    let kubeconfig = c.kubeconfig();
    let kc = kubeconfig.to_str().unwrap();
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let h = |args: &[&str]| -> Result<String> {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--kubeconfig", kc, "--namespace", NAMESPACE]);
        helm(&all)
    };

    // A clean slate: no release left by an earlier run, no policies, stock CoreDNS.
    clear_policies(&c)?;
    if h(&["status", RELEASE]).is_ok() {
        h(&["uninstall", RELEASE, "--wait"])?;
    }
    let original = stock_coredns(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;

    // Install: the CRD from crds/, the workloads scheduled (kwok runs their pods).
    let t0 = Instant::now();
    let out = h(&[
        "install",
        RELEASE,
        chart,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    ])?;
    println!("helm install in {:?}\n{out}", t0.elapsed());
    wait_crd_established(&c)?;
    let d = get_json(&c, &["-n", NAMESPACE, "deployment", RELEASE])?;
    ensure!(
        d["spec"]["replicas"] == 2 && d["status"]["readyReplicas"] == 2,
        "Deployment: {}",
        d["status"]
    );
    ensure!(d["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical");
    ensure!(
        exists(&c, &["-n", NAMESPACE, "pdb", RELEASE])?,
        "no PodDisruptionBudget"
    );
    ensure!(
        exists(
            &c,
            &[
                "-n",
                NAMESPACE,
                "daemonset",
                &format!("{RELEASE}-node-agent")
            ]
        )?,
        "no node agent"
    );
    let pods = get_json(
        &c,
        &[
            "-n",
            NAMESPACE,
            "pods",
            "-l",
            "app.kubernetes.io/component=controller",
        ],
    )?;
    for p in pods["items"].as_array().context("pods")? {
        ensure!(
            p["spec"]["priority"] == 2000000000,
            "priority not resolved: {}",
            p["spec"]
        );
    }

    // The operator as the chart's ServiceAccount.
    let sa_config = service_account_kubeconfig(&c, NAMESPACE, RELEASE)?;
    // What the chart's Deployment gets from the downward API and its args.
    let mut op = Operator::start_with(
        &c,
        "helm",
        &[
            "--lease-namespace",
            NAMESPACE,
            "--lease-name",
            RELEASE,
            // The chart's default: its TokenReview and SubjectAccessReview
            // are made with the chart's ServiceAccount, so its RBAC is proven.
            "--metrics-auth",
            "kubernetes",
        ],
        &Launch::default().kubeconfig(sa_config.clone()),
    )?;
    // A scraper bound to the chart's reader role, as docs/operations.md says
    // (non-resource URLs are granted by ClusterRoleBindings only).
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: prometheus, namespace: {NAMESPACE}}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {SCRAPER}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {RELEASE}-metrics-reader}}\n\
             subjects: [{{kind: ServiceAccount, name: prometheus, namespace: {NAMESPACE}}}]\n"
        ),
    )?;
    let scraper = c
        .kubectl(&[
            "-n",
            NAMESPACE,
            "create",
            "token",
            "prometheus",
            "--duration=1h",
        ])?
        .trim()
        .to_string();

    // The example without its forwardToRef: no Tailscale operator runs here
    // (e2e/tests/forward_targets.rs covers the reference).
    c.kubectl_stdin(&["apply", "-f", "-"], &TAILSCALE)?;
    let t0 = Instant::now();
    op.ready(&c, "tailnet", WAIT).await?;
    let took = t0.elapsed();
    println!("example policy Ready=True in {took:?} under the chart's RBAC");
    ensure!(
        corefile(&c)?.contains("# dnspolicy:begin"),
        "no managed region"
    );

    // The metric names the alerts and dashboard use are the ones it exports.
    let exported = wait_for(
        "/metrics with the policy's gauge",
        Duration::from_secs(10),
        || {
            let m = scrape(&op.metrics, &scraper)?;
            Ok(m.contains("dnspolicy_polluted_pods{").then_some(m))
        },
    )
    .await?;
    let families: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    fs::write(dir.join("operator-metrics.txt"), &exported)?;
    // prometheus-client leaves a family out until its first series: failures
    // show up with the first failed reconcile only.
    const AFTER_FIRST_EVENT: [&str; 1] = ["dnspolicy_reconcile_failures_total"];
    for name in referenced_operator_metrics()? {
        if AFTER_FIRST_EVENT.contains(&name.as_str()) {
            continue;
        }
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        ensure!(
            families.contains(&family),
            "the monitoring pack reads {name}, which the operator does not export (families: {families:?})"
        );
    }

    // The promtool tests (tests/monitoring.rs) draw their series from a stored
    // scrape: its series must still carry the labels the live ones do.
    let live = metric_series(&exported);
    let stored = metric_series(include_str!("../fixtures/operator-metrics.txt"));
    for (name, labels) in &stored {
        if let Some(l) = live.get(name) {
            ensure!(
                l == labels,
                "{name} has labels {l:?} live but {labels:?} in tests/fixtures/operator-metrics.txt: copy {} there",
                dir.join("operator-metrics.txt").display()
            );
        }
    }

    // Upgrade: one replica (no PDB), an image digest, a default policy from values.
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let values = dir.join("upgrade.yaml");
    fs::write(
        &values,
        format!(
            "replicas: 1\nimage: {{digest: \"{digest}\"}}\ndefaultPolicy:\n  enabled: true\n  name: helm-default\n  spec:\n    foreignSuffixes:\n    - {{suffix: openstacklocal, action: NXDomain}}\n"
        ),
    )?;
    let t0 = Instant::now();
    h(&[
        "upgrade",
        RELEASE,
        chart,
        "-f",
        values.to_str().unwrap(),
        "--wait",
        "--timeout",
        "120s",
    ])?;
    println!("helm upgrade in {:?}", t0.elapsed());
    let d = get_json(&c, &["-n", NAMESPACE, "deployment", RELEASE])?;
    ensure!(
        d["spec"]["replicas"] == 1,
        "replicas {}",
        d["spec"]["replicas"]
    );
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        image == format!("ghcr.io/dnspolicy/dnspolicy@{digest}"),
        "image {image}"
    );
    ensure!(
        !exists(&c, &["-n", NAMESPACE, "pdb", RELEASE])?,
        "PDB left with one replica"
    );
    let t0 = Instant::now();
    op.ready(&c, "helm-default", WAIT).await?;
    let took = t0.elapsed();
    println!("defaultPolicy Ready=True in {took:?}");
    ensure!(
        corefile(&c)?.contains("openstacklocal"),
        "default policy not in the Corefile"
    );
    ensure!(
        is_ready(&get_json(&c, &["cdp", "tailnet"])?),
        "tailnet not Ready next to the default policy"
    );

    // Policies go before the operator: the chart's through helm, the example with kubectl.
    h(&[
        "upgrade",
        RELEASE,
        chart,
        "--reuse-values",
        "--set",
        "defaultPolicy.enabled=false",
        "--wait",
        "--timeout",
        "120s",
    ])?;
    wait_for("helm-default deleted (finalizer released)", WAIT, || {
        Ok((!exists(&c, &["cdp", "helm-default"])?).then_some(()))
    })
    .await
    .with_context(|| op.log_tail(40))?;
    c.kubectl(&["delete", "cdp", "tailnet", "--wait=true", "--timeout=60s"])?;
    ensure!(
        corefile(&c)? == original,
        "Corefile not restored after the policies were deleted"
    );
    op.stop()?;
    let log = op.log_text();
    ensure!(
        !log.contains("forbidden"),
        "the chart's RBAC forbade something:\n{log}"
    );

    // Uninstall: everything of the release gone but the CRD; the Corefile untouched.
    let t0 = Instant::now();
    h(&["uninstall", RELEASE, "--wait", "--timeout", "120s"])?;
    println!("helm uninstall in {:?}", t0.elapsed());
    let restored = corefile(&c)?;
    ensure!(
        restored == original,
        "Corefile not byte for byte the original after helm uninstall:\n--- original\n{original}\n--- now\n{restored}"
    );
    ensure!(
        exists(&c, &["crd", "clusterdnspolicies.dnspolicy.dev"])?,
        "helm uninstall removed the CRD"
    );
    for (ns, kind, name) in [
        (NAMESPACE, "deployment", RELEASE.to_string()),
        (NAMESPACE, "daemonset", format!("{RELEASE}-node-agent")),
        (NAMESPACE, "serviceaccount", RELEASE.to_string()),
        ("", "clusterrole", RELEASE.to_string()),
        ("", "clusterrole", format!("{RELEASE}-metrics-reader")),
        ("", "clusterrolebinding", format!("{RELEASE}-node-agent")),
        ("kube-system", "role", format!("{RELEASE}-coredns")),
    ] {
        let args: Vec<&str> = if ns.is_empty() {
            vec![kind, &name]
        } else {
            vec!["-n", ns, kind, &name]
        };
        ensure!(
            !exists(&c, &args)?,
            "{kind} {name} left after helm uninstall"
        );
    }
    c.kubectl(&[
        "delete",
        "clusterrolebinding",
        SCRAPER,
        "--ignore-not-found",
    ])?;
    c.kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"])?;
    Ok(())
}
