//! `/metrics` behind `--metrics-auth=kubernetes` on the real local cluster:
//! HTTPS with a certificate from `--metrics-cert-dir` (checked by curl
//! against the CA that signed it), and every request's bearer token checked
//! by the real apiserver (TokenReview, then SubjectAccessReview for `get
//! /metrics`). Tokens are real ServiceAccount tokens from `kubectl create
//! token`: one bound to the shipped ClusterRole dnspolicy-metrics-reader
//! (taken from manifests/rbac.yaml), one not.
//!
//! The operator runs as the harness runs it, with the cluster's admin
//! credentials, so this proves the filter, not the shipped RBAC for the
//! reviews: that is proven where the operator runs as its own ServiceAccount
//! (tests/helm/install.rs with the chart's, tests/install.rs with the manifests').

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dnspolicy_e2e::operator::*;
use dnspolicy_e2e::{Cluster, Flavor, env, net};

const NS: &str = "metrics-auth";
const READER_ROLE: &str = "dnspolicy-metrics-reader";
const BINDING: &str = "metrics-auth-e2e-reader";

/// The ClusterRole dnspolicy-metrics-reader exactly as manifests/rbac.yaml ships it.
fn shipped_reader_role() -> Result<String> {
    let rbac = std::fs::read_to_string(env::repo_root().join("manifests/rbac.yaml"))?;
    rbac.split("\n---\n")
        .find(|doc| doc.contains(&format!("name: {READER_ROLE}\n")))
        .map(str::to_string)
        .with_context(|| format!("manifests/rbac.yaml has no ClusterRole {READER_ROLE}"))
}

/// A CA and a serving certificate for 127.0.0.1 it signed: tls.crt and
/// tls.key in `dir` (as a mounted kubernetes.io/tls Secret), ca.crt beside.
fn serving_cert(dir: &Path) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Its own name: rcgen's default subject is the leaf's too, and a leaf
    // whose issuer is its own subject reads as self-signed to curl.
    ca.distinguished_name
        .push(DnType::CommonName, "dnspolicy e2e metrics CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "dnspolicy metrics");
    let leaf = leaf.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("tls.crt"), leaf.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    Ok(())
}

fn cleanup(c: &Cluster) {
    let _ = c.kubectl(&["delete", "namespace", NS, "--ignore-not-found"]);
    let _ = c.kubectl(&[
        "delete",
        "clusterrolebinding",
        BINDING,
        "--ignore-not-found",
    ]);
    let _ = c.kubectl(&["delete", "clusterrole", READER_ROLE, "--ignore-not-found"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_allowed_to_get_metrics_over_tls() -> Result<()> {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .context("curl is the TLS client of this test: install curl")?;
    let c = Cluster::ensure().await?;
    let _guard = c.exclusive()?;
    fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
    cleanup(&c);

    apply(&c, &shipped_reader_role()?)?;
    c.kubectl(&["create", "namespace", NS])?;
    for sa in ["prometheus", "stranger"] {
        c.kubectl(&["-n", NS, "create", "serviceaccount", sa])?;
    }
    c.kubectl(&[
        "create",
        "clusterrolebinding",
        BINDING,
        &format!("--clusterrole={READER_ROLE}"),
        &format!("--serviceaccount={NS}:prometheus"),
    ])?;
    let token = |sa: &str| -> Result<String> {
        Ok(
            c.kubectl(&["-n", NS, "create", "token", sa, "--duration=1h"])?
                .trim()
                .to_string(),
        )
    };
    let (reader, stranger) = (token("prometheus")?, token("stranger")?);

    let tls = c.layout.dir.join("metrics-auth-tls");
    serving_cert(&tls)?;
    let ca = tls.join("ca.crt");
    let tls_dir = tls.to_str().context("cert dir")?;
    let mut op = Operator::start(
        &c,
        "metrics-auth",
        &[
            "--metrics-auth",
            "kubernetes",
            "--metrics-cert-dir",
            tls_dir,
        ],
    )?;
    apply(&c, &TAILSCALE)?;
    op.ready(&c, "tailnet", Duration::from_secs(60)).await?;

    let get = |token: Option<&str>| net::https_get(&op.metrics, "/metrics", token, Some(&ca), None);
    // Allowed: the exposition, per-policy series included (the first
    // accounting tick writes the gauge within a second or so).
    let allowed = wait_for(
        "/metrics with the policy's gauge for the bound ServiceAccount",
        Duration::from_secs(10),
        || {
            let r = get(Some(&reader))?;
            ensure!(r.status == 200, "bound ServiceAccount: {r:?}");
            Ok(r.body.contains("dnspolicy_polluted_pods{").then_some(r))
        },
    )
    .await?;
    for family in [
        "dnspolicy_build_info",
        "dnspolicy_reconciles_total",
        "dnspolicy_watched_pods",
    ] {
        ensure!(
            allowed.body.contains(family),
            "no {family}:\n{}",
            allowed.body
        );
    }

    let none = get(None)?;
    ensure!(none.status == 401, "no token: {none:?}");
    let garbage = get(Some("not-a-token"))?;
    ensure!(garbage.status == 401, "garbage token: {garbage:?}");
    let forbidden = get(Some(&stranger))?;
    ensure!(
        forbidden.status == 403,
        "unbound ServiceAccount: {forbidden:?}"
    );
    ensure!(
        forbidden
            .body
            .contains(&format!("system:serviceaccount:{NS}:stranger"))
            && forbidden.body.contains(READER_ROLE),
        "the 403 names the user and the role to bind: {}",
        forbidden.body
    );
    // Plain HTTP is not served on the metrics port.
    ensure!(
        !net::http_get(&op.metrics, "/metrics")
            .unwrap_or_default()
            .contains("dnspolicy_"),
        "/metrics answered plain HTTP"
    );
    // The probes need no token, on their own plain port.
    ensure!(net::http_get(&op.health, "/healthz")?.starts_with("HTTP/1.1 200"));
    ensure!(net::http_get(&op.health, "/readyz")?.starts_with("HTTP/1.1 200"));
    println!(
        "401 without and with a bad token, 403 for {NS}:stranger, 200 for {NS}:prometheus ({} bytes)",
        allowed.body.len()
    );

    op.delete_policies_and_stop(&c)?;
    cleanup(&c);
    Ok(())
}
