//! The Helm chart `charts/dnspolicy` with the real helm binary (built from
//! the Go module proxy by `build-deps.sh helm`): lint, the objects it renders
//! against the kustomize base (`manifests/`, `manifests/monitoring/`), what
//! its values do, and install, upgrade and uninstall on the local cluster
//! with the operator running as the chart's ServiceAccount.
//!
//! Self-contained on purpose: it uses only `Cluster::ensure`, the kubectl
//! helpers and `env` paths of the harness.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dnspolicy_e2e::{Cluster, Flavor, env};
use serde::Deserialize;
use serde_json::Value;

const HELM_VERSION: &str = "v4.3.1";
/// The release and namespace the default-values diff renders with: the
/// names the kustomize base uses.
const BASE_RELEASE: &str = "dnspolicy";
const BASE_NAMESPACE: &str = "dnspolicy-system";
/// Labels Helm charts put on every object; the kustomize base has none of them.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];
const TAILSCALE: &str = include_str!("../../manifests/examples/tailscale.yaml");
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

fn helm_bin() -> Result<PathBuf> {
    let bin = env::cache_dir()
        .join("helm")
        .join(HELM_VERSION)
        .join("helm");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `bash e2e/scripts/build-deps.sh helm` (builds helm {HELM_VERSION} from the Go module proxy)",
            bin.display()
        );
    }
    Ok(bin)
}

fn chart_dir() -> PathBuf {
    env::repo_root().join("charts/dnspolicy")
}

fn manifests() -> PathBuf {
    env::repo_root().join("manifests")
}

/// Runs a command; its stdout, or an error carrying the command line and stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// helm with its config, cache and data kept out of $HOME.
fn helm_cmd() -> Result<Command> {
    let mut cmd = Command::new(helm_bin()?);
    let home = std::env::temp_dir().join("dnspolicy-helm-home");
    for (var, sub) in [
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, home.join(sub));
    }
    Ok(cmd)
}

fn helm(args: &[&str]) -> Result<String> {
    run(helm_cmd()?.args(args))
}

/// `helm template` of the chart as release `release` in `namespace`, CRDs included.
fn template(release: &str, namespace: &str, extra: &[&str]) -> Result<String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

fn kustomize(dir: &Path) -> Result<String> {
    let kubectl = env::kubectl_bin();
    ensure!(
        kubectl.is_file(),
        "{} is missing: run `bash e2e/scripts/build-deps.sh k8s`",
        kubectl.display()
    );
    run(Command::new(kubectl).arg("kustomize").arg(dir))
}

/// Objects by (kind, namespace, name), as JSON, Helm's standard labels removed.
type Objects = BTreeMap<(String, String, String), Value>;

fn objects(yaml: &str, source: &str) -> Result<Objects> {
    let mut out = Objects::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).with_context(|| format!("parse {source}"))?;
        if v.is_null() {
            continue;
        }
        let mut v: Value = serde_json::to_value(&v)?;
        integral_floats_as_integers(&mut v);
        if let Some(labels) = v
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            for l in HELM_LABELS {
                labels.remove(l);
            }
            if labels.is_empty() {
                v["metadata"].as_object_mut().unwrap().remove("labels");
            }
        }
        let s = |p: &Value| p.as_str().unwrap_or_default().to_string();
        let key = (
            s(&v["kind"]),
            s(&v["metadata"]["namespace"]),
            s(&v["metadata"]["name"]),
        );
        ensure!(!key.0.is_empty(), "{source}: an object without kind: {v}");
        if out.insert(key.clone(), v).is_some() {
            bail!("{source} renders {key:?} twice");
        }
    }
    Ok(out)
}

/// `8.0` and `8` are one YAML value (kustomize re-emits `maximum: 8.0` as `8`).
fn integral_floats_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15)
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(o) => o.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

fn describe(k: &(String, String, String)) -> String {
    if k.1.is_empty() {
        format!("{} {}", k.0, k.2)
    } else {
        format!("{} {}/{}", k.0, k.1, k.2)
    }
}

/// Every place two values differ, as `path: left … right` lines.
fn value_diff(path: &str, a: &Value, b: &Value, left: &str, right: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => value_diff(&p, va, vb, left, right, out),
                    (Some(va), None) => out.push(format!("    {p}: only in {left}: {va}")),
                    (None, Some(vb)) => out.push(format!("    {p}: only in {right}: {vb}")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                value_diff(&format!("{path}[{i}]"), va, vb, left, right, out);
            }
        }
        _ if a != b => out.push(format!("    {path}: {left} {a}\n    {path}: {right} {b}")),
        _ => {}
    }
}

/// A readable diff of two object sets; empty when they are the same.
fn diff_objects(left: &Objects, right: &Objects, ln: &str, rn: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, a) in left {
        match right.get(k) {
            None => out.push(format!("- {} only in {ln}", describe(k))),
            Some(b) if a != b => {
                out.push(format!("~ {} differs:", describe(k)));
                value_diff("", a, b, ln, rn, &mut out);
            }
            Some(_) => {}
        }
    }
    for k in right.keys().filter(|k| !left.contains_key(*k)) {
        out.push(format!("+ {} only in {rn}", describe(k)));
    }
    out
}

fn find<'a>(objs: &'a Objects, kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|((k, _, n), _)| k == kind && n == name)
        .map(|(_, v)| v)
}

fn workspace_version() -> Result<String> {
    let cargo = fs::read_to_string(env::repo_root().join("Cargo.toml"))?;
    let mut in_package = false;
    for line in cargo.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            return Ok(v
                .trim_start_matches([' ', '='])
                .trim_matches('"')
                .to_string());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

// ------------------------------------------------------ rendering, no cluster

#[test]
fn the_chart_lints_clean() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let out = helm(&["lint", "--strict", chart])?;
    println!("{out}");
    // Every optional part on, with a default policy: still clean.
    let out = helm(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "metrics.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true,defaultPolicy.enabled=true",
        "--set-json",
        r#"defaultPolicy.spec={"foreignSuffixes":[{"suffix":"openstacklocal","action":"NXDomain"}]}"#,
    ])?;
    println!("{out}");
    Ok(())
}

#[test]
fn chart_version_crd_and_dashboard_match_the_repo() -> Result<()> {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(chart_dir().join("Chart.yaml"))?)?;
    let want = workspace_version()?;
    for field in ["version", "appVersion"] {
        let got = chart[field].as_str().unwrap_or_default();
        ensure!(
            got == want,
            "Chart.yaml {field} is {got:?}, the workspace (Cargo.toml) is {want:?}"
        );
    }
    for (copy, source) in [
        ("crds/crd.yaml", "crd.yaml"),
        (
            "dashboards/dnspolicy.json",
            "monitoring/dashboards/dnspolicy.json",
        ),
    ] {
        let a = fs::read(chart_dir().join(copy))?;
        let b = fs::read(manifests().join(source))?;
        ensure!(
            a == b,
            "charts/dnspolicy/{copy} differs from manifests/{source}: cp manifests/{source} charts/dnspolicy/{copy}"
        );
    }
    let dashboard: Value = serde_json::from_slice(&fs::read(
        manifests().join("monitoring/dashboards/dnspolicy.json"),
    )?)?;
    ensure!(dashboard["uid"] == "dnspolicy", "dashboard uid");
    Ok(())
}

#[test]
fn default_values_render_the_kustomize_base() -> Result<()> {
    let helm = objects(
        &template(BASE_RELEASE, BASE_NAMESPACE, &[])?,
        "helm template",
    )?;
    let mut base = objects(&kustomize(&manifests())?, "kubectl kustomize manifests/")?;
    // The one expected difference: Helm keeps its release record in the
    // namespace, so `helm install --create-namespace` makes it, not the chart.
    let ns = (
        "Namespace".to_string(),
        String::new(),
        BASE_NAMESPACE.to_string(),
    );
    ensure!(
        base.remove(&ns).is_some(),
        "the kustomize base no longer has Namespace {BASE_NAMESPACE}"
    );
    let d = diff_objects(&base, &helm, "kustomize", "helm");
    ensure!(
        d.is_empty(),
        "charts/dnspolicy with default values and manifests/ differ:\n{}",
        d.join("\n")
    );
    println!("{} objects, the same in both", helm.len());
    Ok(())
}

#[test]
fn monitoring_values_render_manifests_monitoring() -> Result<()> {
    let helm = objects(
        &template(
            BASE_RELEASE,
            BASE_NAMESPACE,
            &[
                "--set",
                "metrics.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true",
            ],
        )?,
        "helm template",
    )?;
    // The base and the monitoring pack, applied one after the other.
    let mut base = objects(&kustomize(&manifests())?, "kubectl kustomize manifests/")?;
    for (k, v) in objects(
        &kustomize(&manifests().join("monitoring"))?,
        "kubectl kustomize manifests/monitoring/",
    )? {
        ensure!(
            base.insert(k.clone(), v).is_none(),
            "manifests/monitoring/ repeats {k:?}"
        );
    }
    base.remove(&("Namespace".into(), String::new(), BASE_NAMESPACE.into()));
    let d = diff_objects(&base, &helm, "kustomize", "helm");
    ensure!(
        d.is_empty(),
        "charts/dnspolicy with the monitoring values and manifests/monitoring/ differ:\n{}",
        d.join("\n")
    );
    for kind in ["Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        ensure!(helm.keys().any(|k| k.0 == kind), "no {kind} rendered");
    }
    Ok(())
}

#[test]
fn values_do_what_they_say() -> Result<()> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = |extra: &[&str]| -> Result<Objects> {
        objects(
            &template(BASE_RELEASE, BASE_NAMESPACE, extra)?,
            "helm template",
        )
    };
    let image = |o: &Objects, kind: &str, name: &str| -> String {
        find(o, kind, name).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // The digest wins over the tag, for both workloads.
    let o = r(&["--set", &format!("image.tag=9.9.9,image.digest={digest}")])?;
    for (kind, name) in [
        ("Deployment", "dnspolicy"),
        ("DaemonSet", "dnspolicy-node-agent"),
    ] {
        let got = image(&o, kind, name);
        ensure!(
            got == format!("ghcr.io/dnspolicy/dnspolicy@{digest}"),
            "{kind} image {got}"
        );
    }
    let o = r(&[
        "--set",
        "image.tag=9.9.9,image.repository=registry.local/dnspolicy",
    ])?;
    ensure!(image(&o, "Deployment", "dnspolicy") == "registry.local/dnspolicy:9.9.9");

    // One replica: no PodDisruptionBudget (minAvailable 1 would block every drain).
    let o = r(&["--set", "replicas=1"])?;
    ensure!(find(&o, "Deployment", "dnspolicy").unwrap()["spec"]["replicas"] == 1);
    ensure!(
        find(&o, "PodDisruptionBudget", "dnspolicy").is_none(),
        "PDB with one replica"
    );
    let o = r(&["--set", "replicas=3"])?;
    ensure!(find(&o, "PodDisruptionBudget", "dnspolicy").unwrap()["spec"]["minAvailable"] == 1);

    // No node agent: no DaemonSet, ServiceAccount, ClusterRole or binding for it.
    let o = r(&["--set", "nodeAgent.enabled=false"])?;
    let left: Vec<_> = o.keys().filter(|k| k.2.contains("node-agent")).collect();
    ensure!(
        left.is_empty(),
        "nodeAgent.enabled=false still renders {left:?}"
    );

    // The node agent reads the resolv.conf kubelet hands it (dnsPolicy
    // Default), with no hostPath.
    let o = r(&[])?;
    let ds = &find(&o, "DaemonSet", "dnspolicy-node-agent").unwrap()["spec"]["template"]["spec"];
    ensure!(ds["dnsPolicy"] == "Default", "{ds}");
    ensure!(ds["volumes"].is_null(), "a hostPath is back: {ds}");
    ensure!(ds["containers"][0]["args"][1] == "--resolv-conf=/etc/resolv.conf");

    // resources: merged into the defaults as Helm merges values; null drops a key.
    let o = r(&[
        "--set-json",
        r#"resources={"requests":{"cpu":"1","memory":"1Gi"}}"#,
        "--set",
        "resources.limits=null",
    ])?;
    let res = &find(&o, "Deployment", "dnspolicy").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["resources"];
    ensure!(
        *res == serde_json::json!({"requests": {"cpu": "1", "memory": "1Gi"}}),
        "{res}"
    );

    // Monitoring is off by default; a ServiceMonitor without the Service is refused.
    let o = r(&[])?;
    for kind in [
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "ClusterDNSPolicy",
    ] {
        ensure!(!o.keys().any(|k| k.0 == kind), "{kind} rendered by default");
    }
    let e = template(
        BASE_RELEASE,
        BASE_NAMESPACE,
        &["--set", "serviceMonitor.enabled=true"],
    )
    .err()
    .context("serviceMonitor without metrics rendered")?;
    ensure!(format!("{e:#}").contains("needs metrics.enabled"), "{e:#}");

    // defaultPolicy: a ClusterDNSPolicy from values; enabled without suffixes is an error.
    let o = r(&[
        "--set",
        "defaultPolicy.enabled=true,defaultPolicy.name=tailnet",
        "--set-json",
        r#"defaultPolicy.spec={"foreignSuffixes":[{"suffix":"tailb45a71.ts.net","hostLabels":1}]}"#,
    ])?;
    let p = find(&o, "ClusterDNSPolicy", "tailnet").context("no ClusterDNSPolicy")?;
    ensure!(p["spec"]["foreignSuffixes"][0]["suffix"] == "tailb45a71.ts.net");
    let e = template(
        BASE_RELEASE,
        BASE_NAMESPACE,
        &["--set", "defaultPolicy.enabled=true"],
    )
    .err()
    .context("an empty default policy rendered")?;
    ensure!(format!("{e:#}").contains("foreignSuffixes"), "{e:#}");

    // Another release name: every name prefixed, the Lease named to match its RBAC.
    let o = objects(
        &template("edge-dns", "kube-dns-tools", &[])?,
        "helm template",
    )?;
    let d = find(&o, "Deployment", "edge-dns-dnspolicy").context("Deployment name")?;
    let args = &d["spec"]["template"]["spec"]["containers"][0]["args"];
    ensure!(
        args.as_array()
            .unwrap()
            .contains(&"--lease-name=edge-dns-dnspolicy".into()),
        "{args}"
    );
    let role = find(&o, "Role", "edge-dns-dnspolicy-leader-election").context("lease Role")?;
    ensure!(role["spec"].is_null() && role["rules"][1]["resourceNames"][0] == "edge-dns-dnspolicy");
    let binding = find(&o, "ClusterRoleBinding", "edge-dns-dnspolicy").context("binding")?;
    ensure!(binding["subjects"][0]["namespace"] == "kube-dns-tools");
    Ok(())
}

// ------------------------------------------------------------ on the cluster

const RELEASE: &str = "dnspolicy-helm";
const NAMESPACE: &str = "dnspolicy-helm";

fn operator_bin() -> Result<PathBuf> {
    let bin = env::repo_root().join("target/debug/dnspolicy-operator");
    ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build -p dnspolicy-operator`",
        bin.display()
    );
    Ok(bin)
}

fn json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&c.kubectl(&all)?)?)
}

fn corefile(c: &Cluster) -> Result<String> {
    json(c, &["-n", "kube-system", "configmap", "coredns"])?["data"]["Corefile"]
        .as_str()
        .map(str::to_string)
        .context("coredns ConfigMap has no Corefile")
}

fn exists(c: &Cluster, args: &[&str]) -> Result<bool> {
    let mut all = vec!["get", "--ignore-not-found", "-o", "name"];
    all.extend_from_slice(args);
    Ok(!c.kubectl(&all)?.trim().is_empty())
}

fn ready(p: &Value) -> bool {
    p["status"]["observedGeneration"] == p["metadata"]["generation"]
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t0 = Instant::now();
    let mut last = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_ready(c: &Cluster, name: &str, op: &Operator) -> Result<Duration> {
    let t0 = Instant::now();
    wait_for(&format!("ClusterDNSPolicy {name} Ready=True"), WAIT, || {
        Ok(ready(&json(c, &["cdp", name])?).then_some(()))
    })
    .await
    .with_context(|| op.log_tail())?;
    Ok(t0.elapsed())
}

/// Every policy gone, finalizers cleared first, so no operator is needed.
fn clear_policies(c: &Cluster) -> Result<()> {
    if !exists(c, &["crd", "clusterdnspolicies.dnspolicy.dev"])? {
        return Ok(());
    }
    let names = c.kubectl(&["get", "cdp", "-o", "jsonpath={.items[*].metadata.name}"])?;
    for name in names.split_whitespace() {
        c.kubectl(&[
            "patch",
            "cdp",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])?;
    }
    c.kubectl(&["delete", "cdp", "--all", "--wait=true"])?;
    Ok(())
}

/// `dnspolicy-operator run` from target/debug with a kubeconfig; killed on drop.
struct Operator {
    child: Option<Child>,
    log: PathBuf,
    metrics: String,
}

impl Operator {
    fn start(kubeconfig: &Path, dir: &Path) -> Result<Operator> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics = format!("127.0.0.1:{port}");
        let log = dir.join("operator.log");
        let out = File::create(&log)?;
        let child = Command::new(operator_bin()?)
            .args(["run", "--metrics-addr", &metrics, "--identity", "helm-test"])
            // What the chart's Deployment gets from the downward API and its args.
            .args(["--lease-namespace", NAMESPACE, "--lease-name", RELEASE])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start dnspolicy-operator run")?;
        Ok(Operator {
            child: Some(child),
            log,
            metrics,
        })
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "operator log (last 40 lines of {}):\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    fn metrics(&self) -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        ensure!(body.starts_with("HTTP/1.1 200"), "GET /metrics: {body}");
        let (_, text) = body.split_once("\r\n\r\n").context("no HTTP body")?;
        Ok(text.to_string())
    }

    /// SIGTERM and wait (the graceful path: the Lease is released).
    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while child.try_wait()?.is_none() {
                if t0.elapsed() > Duration::from_secs(15) {
                    child.kill()?;
                    bail!("the operator did not stop within 15 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Metric name -> label names, from Prometheus text.
fn series_labels(text: &str) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(rest) = line[end..].strip_prefix('{') {
            for pair in rest.split('}').next().unwrap_or_default().split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

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
    operator_bin()?;
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
    c.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "configmap",
        "coredns",
        "coredns-custom",
        "--ignore-not-found",
    ])?;
    c.install_coredns(Flavor::Kubeadm, &env::coredns_kubeadm_version())
        .await?;
    let original = corefile(&c)?;

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
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/clusterdnspolicies.dnspolicy.dev",
    ])?;
    let d = json(&c, &["-n", NAMESPACE, "deployment", RELEASE])?;
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
    let pods = json(
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
    let token = c.kubectl(&["-n", NAMESPACE, "create", "token", RELEASE, "--duration=1h"])?;
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&c.kubectl(&["config", "view", "--raw", "--minify"])?)?;
    config["users"][0]["user"] = serde_yaml::from_str(&format!("token: {}", token.trim()))?;
    let sa_config = dir.join("sa.kubeconfig");
    fs::write(&sa_config, serde_yaml::to_string(&config)?)?;
    let who = c.kubectl(&[
        "--kubeconfig",
        sa_config.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    ensure!(
        who.trim() == format!("system:serviceaccount:{NAMESPACE}:{RELEASE}"),
        "running as {who}"
    );
    let mut op = Operator::start(&sa_config, &dir)?;

    c.kubectl_stdin(&["apply", "-f", "-"], TAILSCALE)?;
    let took = wait_ready(&c, "tailnet", &op).await?;
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
            let m = op.metrics()?;
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
    let live = series_labels(&exported);
    let stored = series_labels(include_str!("fixtures/operator-metrics.txt"));
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
    let d = json(&c, &["-n", NAMESPACE, "deployment", RELEASE])?;
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
    let took = wait_ready(&c, "helm-default", &op).await?;
    println!("defaultPolicy Ready=True in {took:?}");
    ensure!(
        corefile(&c)?.contains("openstacklocal"),
        "default policy not in the Corefile"
    );
    ensure!(
        ready(&json(&c, &["cdp", "tailnet"])?),
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
    .with_context(|| op.log_tail())?;
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
    c.kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"])?;
    Ok(())
}
