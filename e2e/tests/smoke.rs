//! Smoke test of the harness on the real components. One test function, steps
//! in order: they share one cluster and CoreDNS is cluster-wide state.

use anyhow::{Context, Result, bail};
use dnspolicy_e2e::{Cluster, Flavor, Resolver, dns, env};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const POLLUTED_SEARCH: &[&str] = &[
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    "tailb45a71.ts.net",
];
const NS: &str = "video-management-system";
const SVC_FQDN: &str = "frigate.video-management-system.svc.cluster.local";
const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";

/// A minimal CRD, used only until manifests/crd.yaml exists.
const FALLBACK_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusterdnspolicies.dnspolicy.dev
spec:
  group: dnspolicy.dev
  scope: Cluster
  names: {plural: clusterdnspolicies, singular: clusterdnspolicy, kind: ClusterDNSPolicy, shortNames: [cdp]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

async fn stock_coredns(c: &Cluster) -> Result<Vec<Ipv4Addr>> {
    let version = env::coredns_kubeadm_version();
    let stock = Cluster::stock_corefile(&version)?;
    let cur = c.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "configmap",
        "coredns",
        "-o",
        "jsonpath={.data.Corefile}",
    ])?;
    if cur != stock {
        return c.install_coredns(Flavor::Kubeadm, &version).await;
    }
    c.wait_coredns_rolled_out(Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() -> Result<()> {
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;

    // The CRD installs.
    let crd_path = env::repo_root().join("manifests/crd.yaml");
    let crd = if crd_path.is_file() {
        std::fs::read_to_string(&crd_path)?
    } else {
        FALLBACK_CRD.to_string()
    };
    let crd_name = serde_yaml::Deserializer::from_str(&crd)
        .filter_map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).ok())
        .find(|v| v["kind"] == "CustomResourceDefinition")
        .and_then(|v| v["metadata"]["name"].as_str().map(String::from))
        .context("no CRD in manifests/crd.yaml")?;
    c.apply_as("e2e-test", &crd)?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{crd_name}"),
        "--timeout=30s",
    ])?;
    eprintln!(
        "CRD {crd_name} established ({})",
        if crd_path.is_file() {
            "manifests/crd.yaml"
        } else {
            "fallback"
        }
    );

    // A kwok node is Ready.
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        "--timeout=30s",
    ])?;

    // A Deployment rolls out to Available, behind a Service (the demo
    // applies the same app; whoever ran last owns it).
    let frigate_ip = c.deploy_frigate(NS, 2, "e2e-test")?;
    let kube_ip = c.service_ip("default", "kubernetes")?;

    // Stock CoreDNS, all pods Ready.
    let addrs = stock_coredns(&c).await?;
    eprintln!("CoreDNS serving on {addrs:?}");

    // kubernetes.default via every CoreDNS pod = the Service's ClusterIP from the apiserver.
    for a in &addrs {
        let r = c.query_a(*a, KUBERNETES).await?;
        assert_eq!(r.rcode, dns::RCODE_NOERROR, "{r:?}");
        assert_eq!(r.addrs, vec![kube_ip], "via {a}");
    }
    let l = c.lookup(Resolver::Glibc, KUBERNETES, &[], 1).await?;
    assert!(l.ok && l.addrs == vec![kube_ip], "glibc: {l:?}");

    // The seed: polluted search list, ndots 5, black-holed upstream.
    let bh = c.blackhole();
    let mark = bh.mark();
    let g = c
        .lookup(Resolver::Glibc, SVC_FQDN, POLLUTED_SEARCH, 5)
        .await?;
    eprintln!(
        "glibc {SVC_FQDN}: ok={} in {:?} {:?}",
        g.ok, g.elapsed, g.addrs
    );
    assert!(
        g.ok && g.addrs == vec![frigate_ip],
        "glibc eventually resolves: {g:?}"
    );
    // CoreDNS's forward answers SERVFAIL after its 2 s read timeout; glibc
    // tries twice (attempts:2) before it falls back to the name as-is: ~4 s.
    assert!(
        g.elapsed >= Duration::from_millis(3500),
        "glibc was fast: {g:?}"
    );
    let m = c
        .lookup(Resolver::Musl, SVC_FQDN, POLLUTED_SEARCH, 5)
        .await?;
    eprintln!(
        "musl {SVC_FQDN}: ok={} in {:?} {}",
        m.ok,
        m.elapsed,
        m.output.trim()
    );
    assert!(!m.ok && m.output.contains("EAI"), "musl must fail: {m:?}");
    let leaked = bh.names_ending_with(mark, "tailb45a71.ts.net");
    eprintln!("black hole got {leaked:?}");
    assert!(
        leaked.contains(&format!("{SVC_FQDN}.tailb45a71.ts.net.")),
        "black hole log: {leaked:?}"
    );

    // A broken Corefile plus a rollout: the new pod is not Ready, an old one keeps answering.
    let stock = Cluster::stock_corefile(&env::coredns_kubeadm_version())?;
    let broken = stock.replacen(
        "    loadbalance\n",
        "    loadbalance\n    no_such_plugin\n",
        1,
    );
    assert_ne!(broken, stock);
    let old = c.coredns_template_hashes().await?;
    c.set_corefile(&broken)?;
    c.restart_coredns()?;
    let result = async {
        let t0 = Instant::now();
        loop {
            let pods = c.coredns_pods().await?;
            let new: Vec<_> = pods
                .iter()
                .filter(|p| !old.contains(&p.pod_template_hash))
                .collect();
            let failed = new.iter().any(|p| p.restarts >= 2);
            if failed {
                assert!(
                    new.iter().all(|p| !p.ready),
                    "a new pod with the broken Corefile is Ready: {new:?}"
                );
                let serving: Vec<_> = pods
                    .iter()
                    .filter(|p| p.ready && !p.terminating && old.contains(&p.pod_template_hash))
                    .collect();
                assert!(
                    !serving.is_empty(),
                    "no old CoreDNS pod left Ready: {pods:?}"
                );
                for p in serving {
                    let r = c.query_a(p.address.unwrap(), KUBERNETES).await?;
                    assert_eq!(r.addrs, vec![kube_ip], "old pod {} answers", p.name);
                }
                eprintln!(
                    "broken rollout: new {:?}",
                    new.iter()
                        .map(|p| (&p.name, p.ready, p.restarts, &p.last_error))
                        .collect::<Vec<_>>()
                );
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("new CoreDNS pod never crash-looped: {pods:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let status = c.kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=2s",
        ]);
        assert!(
            status.is_err(),
            "rollout reported complete with a broken Corefile: {status:?}"
        );
        anyhow::Ok(())
    }
    .await;
    // Always put stock CoreDNS back for whoever runs next.
    let restored = stock_coredns(&c).await;
    result?;
    let addrs = restored?;
    for a in &addrs {
        let r = c.query_a(*a, KUBERNETES).await?;
        assert_eq!(r.addrs, vec![kube_ip]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_counts_writes_by_field_manager() -> Result<()> {
    let c = Cluster::ensure().await?;
    let audit = c.audit();
    let mark = audit.mark();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: audit-probe, namespace: default}\ndata: {k: v}\n";
    c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=audit-probe",
            "-f",
            "-",
        ],
        cm,
    )?;
    let w = audit.writes_by_field_manager(mark, "audit-probe");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (
            w[0].verb.as_str(),
            w[0].resource.as_str(),
            w[0].name.as_str()
        ),
        ("patch", "configmaps", "audit-probe")
    );
    assert_eq!(w[0].user, "kubernetes-admin");
    c.kubectl(&["-n", "default", "delete", "configmap", "audit-probe"])?;
    Ok(())
}
