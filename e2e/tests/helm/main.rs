//! The Helm chart `charts/dnspolicy` with the real helm binary (built from
//! the Go module proxy by `build-deps.sh helm`): lint, the objects it renders
//! against the kustomize base (`manifests/`, `manifests/monitoring/`), what
//! its values do, and install, upgrade and uninstall on the local cluster
//! with the operator running as the chart's ServiceAccount.
//!
//! `main.rs`: lint, the rendered objects, the values; `install.rs`: the
//! chart on the local cluster, with the operator from the shared harness.

mod install;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dnspolicy_e2e::env;
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

/// The chart with the digest release/ pins renders the same objects as
/// `kubectl kustomize release/`: both install the release by digest.
#[test]
fn the_release_digest_renders_the_release_overlay() -> Result<()> {
    let dir = env::repo_root().join("release");
    let overlay: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir.join("kustomization.yaml"))?)?;
    let digest = overlay["images"][0]["digest"]
        .as_str()
        .context("release/kustomization.yaml images[0].digest")?;
    let helm = objects(
        &template(
            BASE_RELEASE,
            BASE_NAMESPACE,
            &["--set", &format!("image.digest={digest}")],
        )?,
        "helm template",
    )?;
    let mut release = objects(&kustomize(&dir)?, "kubectl kustomize release/")?;
    release.remove(&("Namespace".into(), String::new(), BASE_NAMESPACE.into()));
    let d = diff_objects(&release, &helm, "kustomize", "helm");
    ensure!(
        d.is_empty(),
        "charts/dnspolicy with image.digest={digest} and release/ differ:\n{}",
        d.join("\n")
    );
    for (kind, name) in [
        ("Deployment", "dnspolicy"),
        ("DaemonSet", "dnspolicy-node-agent"),
    ] {
        let image = &find(&helm, kind, name).context(name)?["spec"]["template"]["spec"]["containers"]
            [0]["image"];
        ensure!(
            *image == format!("ghcr.io/dnspolicy/dnspolicy@{digest}").as_str(),
            "{kind} {image}"
        );
    }
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
    // A digest that is not one fails the render, naming the value.
    for bad in ["0.1.0", "sha256:abc"] {
        let e = template(
            BASE_RELEASE,
            BASE_NAMESPACE,
            &["--set", &format!("image.digest={bad}")],
        )
        .err()
        .with_context(|| format!("image.digest={bad} rendered"))?;
        ensure!(
            format!("{e:#}").contains(&format!("image.digest \"{bad}\" is not sha256:")),
            "{e:#}"
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

    // metrics.certSecret: the Secret mounted and passed as --metrics-cert-dir;
    // auth none: plain HTTP, and the ServiceMonitor scrapes http without a token.
    let o = r(&["--set", "metrics.certSecret=dnspolicy-metrics-tls"])?;
    let pod = &find(&o, "Deployment", "dnspolicy").unwrap()["spec"]["template"]["spec"];
    ensure!(
        pod["volumes"][0]["secret"]["secretName"] == "dnspolicy-metrics-tls"
            && pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/dnspolicy/metrics-tls",
        "{pod}"
    );
    let args = pod["containers"][0]["args"].to_string();
    ensure!(
        args.contains("\"--metrics-cert-dir=/etc/dnspolicy/metrics-tls\""),
        "{args}"
    );
    let o = r(&[
        "--set",
        "metrics.auth=none,metrics.enabled=true,serviceMonitor.enabled=true",
    ])?;
    let args = find(&o, "Deployment", "dnspolicy").unwrap()["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .to_string();
    ensure!(args.contains("\"--metrics-auth=none\""), "{args}");
    let endpoint = &find(&o, "ServiceMonitor", "dnspolicy").unwrap()["spec"]["endpoints"][0];
    ensure!(
        endpoint.get("scheme").is_none() && endpoint.get("bearerTokenFile").is_none(),
        "{endpoint}"
    );
    for (set, says) in [
        ("metrics.auth=open", "use kubernetes"),
        (
            "metrics.auth=none,metrics.certSecret=x",
            "needs metrics.auth=kubernetes",
        ),
    ] {
        let e = template(BASE_RELEASE, BASE_NAMESPACE, &["--set", set])
            .err()
            .with_context(|| format!("{set} rendered"))?;
        ensure!(format!("{e:#}").contains(says), "{e:#}");
    }

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
