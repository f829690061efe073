//! Cluster PKI: one CA, serving and client certs, service-account keys.

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;

use crate::env;
use crate::files::write_file;

fn params(cn: &str, org: Option<&str>, sans: Vec<String>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(p)
}

/// Client identities: (file stem, CN, O). The pod runtime and bootstrap get
/// their own names so audit-log counts can tell them from the operator.
pub const CLIENTS: &[(&str, &str, Option<&str>)] = &[
    ("admin", "kubernetes-admin", Some("system:masters")),
    ("kcm", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kwok", "e2e:kwok", Some("system:masters")),
    ("runtime", "e2e:pod-runtime", Some("system:masters")),
    // The real node (cluster/node.rs).
    ("node", "system:node:e2e-real-node", Some("system:nodes")),
    ("kube-proxy", "system:kube-proxy", None),
];

pub fn generate(dir: &Path) -> Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = params("dnspolicy-e2e-ca", None, vec![])?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    write_file(&dir.join("ca.crt"), ca_cert.pem())?;
    write_file(&dir.join("ca.key"), ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    // Serving cert: covers the loopback address pods use as
    // KUBERNETES_SERVICE_HOST and the data-only Service IP and names.
    let mut sans = vec![
        env::CONTROL_IP.to_string(),
        "127.0.0.1".into(),
        // The real node's way in (cluster/node.rs: the forwarder on the veth).
        crate::cluster::node::HOST_IP.into(),
        env::KUBERNETES_SVC_IP.into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
    ];
    sans.push(format!("kubernetes.default.svc.{}", env::CLUSTER_DOMAIN));
    let mut sp = params("kube-apiserver", None, sans)?;
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let k = KeyPair::generate()?;
    let c = sp.signed_by(&k, &issuer)?;
    write_file(&dir.join("apiserver.crt"), c.pem())?;
    write_file(&dir.join("apiserver.key"), k.serialize_pem())?;

    for (stem, cn, org) in CLIENTS {
        let mut p = params(cn, *org, vec![])?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let k = KeyPair::generate()?;
        let c = p.signed_by(&k, &issuer)?;
        write_file(&dir.join(format!("{stem}.crt")), c.pem())?;
        write_file(&dir.join(format!("{stem}.key")), k.serialize_pem())?;
    }

    let sa = KeyPair::generate()?;
    write_file(&dir.join("sa.key"), sa.serialize_pem())?;
    write_file(&dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(())
}

/// A kubeconfig for one client identity, certs embedded as files.
pub fn kubeconfig(pki: &Path, stem: &str) -> String {
    let server = format!("https://{}", env::apiserver_addr());
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: dnspolicy-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {stem}
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: dnspolicy-e2e
  context: {{cluster: dnspolicy-e2e, user: {stem}}}
current-context: dnspolicy-e2e
"#,
        ca = pki.join("ca.crt").display(),
        crt = pki.join(format!("{stem}.crt")).display(),
        key = pki.join(format!("{stem}.key")).display(),
    )
}
