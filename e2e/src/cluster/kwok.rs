//! kwok: fake nodes (those annotated `kwok.x-k8s.io/node: fake`) and the
//! pod lifecycle of everything but CoreDNS, whose pods the pod runtime runs.

use anyhow::{Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use super::components::{spawn, wait_component};
use super::{APPLY_BOOTSTRAP, Layout, kubectl};
use crate::env::{self, CONTROL_IP};
use crate::files;

pub fn start(l: &Layout) -> Result<()> {
    let cfg = config(l)?;
    spawn(
        l,
        "kwok",
        &env::kwok_bin(),
        &[
            format!("--kubeconfig={}", l.kubeconfig_for("kwok").display()),
            format!("--config={}", cfg.display()),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            format!("--server-address={CONTROL_IP}:{}", env::KWOK_PORT),
            "--cidr=10.244.0.0/16".into(),
            "--node-ip=10.240.0.1".into(),
            "--node-lease-duration-seconds=40".into(),
        ],
        &[],
    )?;
    Ok(())
}

fn config(l: &Layout) -> Result<PathBuf> {
    // kwok's own fast pod stages, with kube-dns pods left to our stages.
    let sd = env::kwok_stage_dir();
    let mut docs = Vec::new();
    for f in [
        "node/fast/node-initialize.yaml",
        "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        "pod/fast/pod-ready.yaml",
        "pod/fast/pod-complete.yaml",
        "pod/fast/pod-delete.yaml",
    ] {
        let s = fs::read_to_string(sd.join(f))
            .with_context(|| format!("kwok stage {}", sd.join(f).display()))?;
        let mut v: serde_yaml::Value = serde_yaml::from_str(&s)?;
        if f.ends_with("pod-ready.yaml") {
            let exprs = v["spec"]["selector"]["matchExpressions"]
                .as_sequence_mut()
                .context("pod-ready stage without matchExpressions")?;
            exprs.push(serde_yaml::from_str(
                "{key: '.metadata.labels[\"k8s-app\"]', operator: NotIn, values: [kube-dns]}",
            )?);
        }
        docs.push(serde_yaml::to_string(&v)?);
    }
    docs.push(fs::read_to_string(
        env::manifests_dir().join("kwok-coredns-stages.yaml"),
    )?);
    let p = l.dir.join("kwok.yaml");
    files::write_file(&p, docs.join("\n---\n"))?;
    Ok(p)
}

/// A kwok-managed Node with these labels besides kwok's and the hostname.
pub fn node_manifest(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    kwok.x-k8s.io/node: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    type: kwok\n    kubernetes.io/hostname: {name}\n{labels}spec: {{}}\n"
    )
}

fn nodes_manifest(n: u32) -> String {
    (0..n)
        .map(|i| {
            node_manifest(
                &format!("kwok-node-{i}"),
                &[
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", "amd64"),
                ],
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Create `n` nodes `kwok-node-<i>`.
pub fn add_nodes(l: &Layout, n: u32) -> Result<()> {
    kubectl(l, APPLY_BOOTSTRAP, Some(&nodes_manifest(n)))?;
    Ok(())
}

/// Every node Ready (kwok took them over).
pub fn wait_nodes_ready(l: &Layout) -> Result<()> {
    wait_component(l, "kwok", Duration::from_secs(60), || {
        kubectl(
            l,
            &[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                "--timeout=1s",
            ],
            None,
        )
        .is_ok()
    })
}
