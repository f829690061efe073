//! CoreDNS as kubeadm or k3s installs it (Corefile of the version's era,
//! Deployment, Service), and the pod runtime that runs its pods as real
//! CoreDNS processes.

use anyhow::{Context, Result};
use std::fs;
use std::path::Path;
use std::time::Duration;

use super::components::{spawn, wait_component};
use super::{APPLY_BOOTSTRAP, Layout, UpOptions, kubectl};
use crate::{env, files};

/// Start the pod runtime (`e2e-cluster pod-runtime`, `self_bin`).
pub fn start_runtime(l: &Layout, self_bin: &Path) -> Result<()> {
    spawn(
        l,
        "pod-runtime",
        self_bin,
        &["pod-runtime".into(), format!("--dir={}", l.dir.display())],
        &[],
    )?;
    Ok(())
}

/// Apply the kubeadm install of `opts.coredns_version`.
pub fn install(l: &Layout, opts: &UpOptions) -> Result<()> {
    let m = coredns_manifest(&opts.coredns_version, opts.coredns_replicas)?;
    kubectl(l, APPLY_BOOTSTRAP, Some(&m))?;
    Ok(())
}

/// The Deployment rolled out: every pod Ready under the pod runtime.
pub fn wait_rolled_out(l: &Layout) -> Result<()> {
    let rolled = || {
        kubectl(
            l,
            &[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "deployment/coredns",
                "--timeout=1s",
            ],
            None,
        )
        .is_ok()
    };
    wait_component(l, "pod-runtime", Duration::from_secs(90), rolled).map_err(|e| {
        let pods = kubectl(
            l,
            &[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-o",
                "wide",
                "--show-labels",
            ],
            None,
        )
        .unwrap_or_default();
        e.context(format!(
            "CoreDNS did not roll out; pods:\n{pods}\npod-runtime log:\n{}",
            files::tail(&l.log("pod-runtime"), 30)
        ))
    })
}

/// How CoreDNS is installed: kubeadm's shape, or k3s's (Corefile imports
/// `coredns-custom` keys mounted at /etc/coredns/custom, plus NodeHosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    #[default]
    Kubeadm,
    K3s,
}

/// The kubeadm Corefile for that CoreDNS version.
pub fn stock_corefile(coredns_version: &str) -> Result<String> {
    flavor_corefile(Flavor::Kubeadm, coredns_version)
}

/// The Corefile a fresh install of `flavor` has for that CoreDNS version.
pub fn flavor_corefile(flavor: Flavor, coredns_version: &str) -> Result<String> {
    let legacy = version_lt(coredns_version, "v1.10.0");
    let f = match flavor {
        Flavor::K3s => "corefile-k3s.conf",
        Flavor::Kubeadm if legacy => "corefile-kubeadm-legacy.conf",
        Flavor::Kubeadm => "corefile-kubeadm.conf",
    };
    let s = fs::read_to_string(env::manifests_dir().join(f))?;
    Ok(s.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect())
}

pub fn version_lt(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u32> {
        s.trim_start_matches('v')
            .split('.')
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    p(a) < p(b)
}

const K3S_VOLUMES: &str = "      volumes:
        - name: config-volume
          configMap:
            name: coredns
            items:
            - key: Corefile
              path: Corefile
            - key: NodeHosts
              path: NodeHosts
        - name: custom-config-volume
          configMap:
            name: coredns-custom
            optional: true
";

pub fn coredns_manifest(coredns_version: &str, replicas: u32) -> Result<String> {
    coredns_flavor_manifest(Flavor::Kubeadm, coredns_version, replicas)
}

/// ServiceAccount, RBAC, ConfigMap, Service and Deployment of CoreDNS as
/// `flavor` installs them, running `coredns_version`.
pub fn coredns_flavor_manifest(
    flavor: Flavor,
    coredns_version: &str,
    replicas: u32,
) -> Result<String> {
    let corefile = flavor_corefile(flavor, coredns_version)?;
    let mut indented: String = corefile.lines().map(|l| format!("    {l}\n")).collect();
    let mut m = fs::read_to_string(env::manifests_dir().join("coredns.yaml"))?;
    if flavor == Flavor::K3s {
        indented.push_str("  NodeHosts: |\n    10.240.0.1 kwok-node-0\n");
        let vols = m
            .find("      volumes:\n")
            .context("volumes in coredns.yaml")?;
        m.truncate(vols);
        m.push_str(K3S_VOLUMES);
        m = m.replace(
            "          mountPath: /etc/coredns\n          readOnly: true\n",
            "          mountPath: /etc/coredns\n          readOnly: true\n        - name: custom-config-volume\n          mountPath: /etc/coredns/custom\n          readOnly: true\n",
        );
    }
    Ok(m.replace("__COREFILE__\n", &indented)
        .replace("__DNS_IP__", env::DNS_SVC_IP)
        .replace("__COREDNS_VERSION__", coredns_version)
        .replace("replicas: 2", &format!("replicas: {replicas}")))
}
