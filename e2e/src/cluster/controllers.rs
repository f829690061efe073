//! kube-controller-manager and kube-scheduler, each with its own client
//! certificate, no leader election.

use anyhow::Result;
use std::time::Duration;

use super::components::{spawn, wait_component};
use super::{Layout, kubectl};
use crate::env::{self, CONTROL_IP};

/// Start both (they need only the apiserver).
pub fn start(l: &Layout) -> Result<()> {
    let pki = l.pki();
    let d = |p: std::path::PathBuf| p.display().to_string();
    let mut kcm = common(l, "kcm");
    kcm.extend([
        format!("--secure-port={}", env::KCM_PORT),
        format!(
            "--service-account-private-key-file={}",
            d(pki.join("sa.key"))
        ),
        format!("--root-ca-file={}", d(pki.join("ca.crt"))),
        format!("--cluster-signing-cert-file={}", d(pki.join("ca.crt"))),
        format!("--cluster-signing-key-file={}", d(pki.join("ca.key"))),
        format!("--service-cluster-ip-range={}", env::SERVICE_CIDR),
        "--use-service-account-credentials=true".into(),
        "--controllers=*,-nodeipam,-cloud-node-lifecycle".into(),
    ]);
    spawn(
        l,
        "kube-controller-manager",
        &env::k8s_bin("kube-controller-manager"),
        &kcm,
        &[],
    )?;
    let mut sched = common(l, "scheduler");
    sched.push(format!("--secure-port={}", env::SCHEDULER_PORT));
    spawn(
        l,
        "kube-scheduler",
        &env::k8s_bin("kube-scheduler"),
        &sched,
        &[],
    )?;
    Ok(())
}

fn common(l: &Layout, stem: &str) -> Vec<String> {
    let kc = l.kubeconfig_for(stem).display().to_string();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        format!("--bind-address={CONTROL_IP}"),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ]
}

/// Pods need the default ServiceAccount and kube-root-ca.crt, which the
/// controller-manager creates.
pub fn wait_ready(l: &Layout) -> Result<()> {
    let has = |args: &[&str]| kubectl(l, args, None).is_ok();
    wait_component(
        l,
        "kube-controller-manager",
        Duration::from_secs(60),
        || {
            has(&["-n", "default", "get", "serviceaccount", "default"])
                && has(&["-n", "kube-system", "get", "configmap", "kube-root-ca.crt"])
        },
    )
}
