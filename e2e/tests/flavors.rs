//! CoreDNS installed the k3s way: `coredns-custom` keys mounted at
//! /etc/coredns/custom and imported by the Corefile; ConfigMap edits reach the
//! running pods' files as kubelet's volume updates do.

use anyhow::{Context, Result};
use dnspolicy_e2e::{Cluster, Flavor, env};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_custom_server_block() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let version = env::coredns_kubeadm_version();
    let result = async {
        c.install_coredns(Flavor::K3s, &version).await?;
        let custom = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: coredns-custom, namespace: kube-system}
data:
  example.server: |
    example.test:53 {
        bind {$POD_IP}
        hosts {
            192.0.2.7 www.example.test
        }
    }
"#;
        c.apply_as("e2e-test", custom)?;
        // The running pods' custom dir gets the key (kubelet's ConfigMap update).
        let pods: Vec<_> = c
            .coredns_pods()
            .await?
            .into_iter()
            .filter(|p| p.ready && !p.terminating)
            .collect();
        let t0 = Instant::now();
        for p in &pods {
            let f = c
                .layout
                .pods()
                .join(format!("kube-system_{}", p.name))
                .join("volumes/custom-config-volume/example.server");
            while !f.is_file() {
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{} never appeared",
                    f.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Restart rather than wait for the reload plugin's 30 s tick.
        c.restart_coredns()?;
        let addrs = c.wait_coredns_rolled_out(Duration::from_secs(120)).await?;
        for a in addrs {
            let r = c.query_a(a, "www.example.test").await?;
            assert_eq!(
                r.addrs,
                vec!["192.0.2.7".parse::<IpAddr>()?],
                "via {a}: {r:?}"
            );
            let k = c.query_a(a, "kubernetes.default.svc.cluster.local").await?;
            assert_eq!(k.addrs.len(), 1, "{k:?}");
        }
        anyhow::Ok(())
    }
    .await;
    let _ = c.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "configmap",
        "coredns-custom",
        "--ignore-not-found",
    ]);
    let restored = c
        .install_coredns(Flavor::Kubeadm, &version)
        .await
        .context("restore kubeadm CoreDNS");
    result?;
    restored?;
    Ok(())
}

/// The old CoreDNS (1.8.4 unless it stopped building) runs as the cluster's
/// CoreDNS, from the image tag, with the kubeadm Corefile of its era.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_coredns_serves_the_cluster() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    let old = env::coredns_old_version();
    let result = async {
        let addrs = c.install_coredns(Flavor::Kubeadm, &old).await?;
        for p in c.coredns_pods().await? {
            assert!(p.image.ends_with(&format!(":{old}")), "{p:?}");
        }
        for a in addrs {
            let r = c.query_a(a, "kubernetes.default.svc.cluster.local").await?;
            assert_eq!(
                r.addrs,
                vec!["10.96.0.1".parse::<IpAddr>()?],
                "via {a}: {r:?}"
            );
        }
        anyhow::Ok(())
    }
    .await;
    let restored = c
        .install_coredns(Flavor::Kubeadm, &env::coredns_kubeadm_version())
        .await
        .context("restore kubeadm CoreDNS");
    result?;
    restored?;
    Ok(())
}
