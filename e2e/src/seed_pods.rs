//! The seed from inside real pods on the real node (`cluster::node`): kubeadm's
//! CoreDNS as two real pods (`kube-system/coredns-real`), a glibc pod and a
//! musl pod in `default`, and the kube-dns Service pointed at the real
//! CoreDNS pods, so a lookup goes pod → 10.96.0.10 (kube-proxy) → real
//! CoreDNS → the node file's nameserver. Shared by tests/real_node.rs and
//! `just demo`; [`restore`] puts the Service back and removes the pods.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cluster::node;
use crate::{Cluster, env};

pub const SEED_NS: &str = "video-management-system";
pub const SEED_NAME: &str = "frigate.video-management-system.svc.cluster.local";
/// The glibc and musl probe pods, in `default`.
pub const GLIBC_POD: &str = "glibc-probe";
pub const MUSL_POD: &str = "musl-probe";

/// kubeadm's CoreDNS as real pods on the real node: the harness's ConfigMap
/// (its `bind {$POD_IP}` gets the real pod IP), kubeadm's securityContext,
/// probes and `dnsPolicy: Default` (so `forward . /etc/resolv.conf` goes to
/// the node file's nameserver). Labelled apart from the process-run pods so
/// the kube-dns Service can be pointed at these alone.
pub fn real_coredns(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns-real, namespace: kube-system}}
spec:
  replicas: 2
  selector: {{matchLabels: {{k8s-app: kube-dns-real}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns-real}}}}
    spec:
      serviceAccountName: coredns
      nodeSelector: {{{key}: "true"}}
      tolerations: [{toleration}]
      dnsPolicy: Default
      terminationGracePeriodSeconds: 1
      containers:
      - name: coredns
        image: "{image}"
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        env: [{{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}]
        volumeMounts: [{{name: config-volume, mountPath: /etc/coredns, readOnly: true}}]
        ports:
        - {{containerPort: 53, name: dns, protocol: UDP}}
        - {{containerPort: 53, name: dns-tcp, protocol: TCP}}
        - {{containerPort: 8181, name: readiness-probe, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: readiness-probe}}, periodSeconds: 2}}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{add: [NET_BIND_SERVICE], drop: [ALL]}}
          readOnlyRootFilesystem: true
      volumes:
      - name: config-volume
        configMap: {{name: coredns, items: [{{key: Corefile, path: Corefile}}]}}
"#,
        key = node::TAINT_KEY,
        toleration = node::TOLERATION,
    )
}

pub fn probe_pod(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeSelector: {{{key}: "true"}}
  tolerations: [{toleration}]
  terminationGracePeriodSeconds: 1
  containers: [{{name: probe, image: "{image}", imagePullPolicy: Never, command: [/bin/busybox, sleep, "3600"]}}]
"#,
        key = node::TAINT_KEY,
        toleration = node::TOLERATION,
    )
}

/// One lookup from inside a real pod (`kubectl exec`).
#[derive(Clone, Debug)]
pub struct PodLookup {
    pub ok: bool,
    pub output: String,
    /// Wall time, the `kubectl exec` round trip included.
    pub secs: f64,
}

/// `kubectl exec` of `argv` in pod `default/pod`.
pub fn exec_lookup(c: &Cluster, pod: &str, argv: &[&str]) -> PodLookup {
    let t0 = Instant::now();
    let mut args = vec!["-n", "default", "exec", pod, "--"];
    args.extend_from_slice(argv);
    let r = c.kubectl(&args);
    let secs = t0.elapsed().as_secs_f64();
    match r {
        Ok(output) => PodLookup {
            ok: true,
            output,
            secs,
        },
        Err(e) => PodLookup {
            ok: false,
            output: format!("{e:#}"),
            secs,
        },
    }
}

/// The seed's name looked up from the glibc pod (`getent ahosts`) and the
/// musl pod (`getaddrinfo`).
pub fn seed_lookups(c: &Cluster) -> (PodLookup, PodLookup) {
    (
        exec_lookup(c, GLIBC_POD, &["/usr/bin/getent", "ahosts", SEED_NAME]),
        exec_lookup(c, MUSL_POD, &["/usr/bin/musl-probe", SEED_NAME]),
    )
}

/// Real CoreDNS and the two probe pods on the real node (which must run),
/// Ready, and the kube-dns Service sending to the real CoreDNS pods.
pub async fn start(c: &Cluster) -> Result<()> {
    c.apply_as("e2e-test", &real_coredns(&node::image("coredns")?))?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &probe_pod(GLIBC_POD, &node::image("glibc-probe")?),
    )?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &probe_pod(MUSL_POD, &node::image("musl-probe")?),
    )?;
    c.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns-real",
        "--timeout=180s",
    ])?;
    for p in [GLIBC_POD, MUSL_POD] {
        c.kubectl(&[
            "-n",
            "default",
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=180s",
        ])?;
    }
    c.kubectl(&[
        "-n",
        "kube-system",
        "patch",
        "service",
        "kube-dns",
        "-p",
        r#"{"spec":{"selector":{"k8s-app":"kube-dns-real"}}}"#,
    ])?;
    wait_kube_dns_serves(c).await
}

/// Restart the real CoreDNS pods so they read the current Corefile (the
/// operator rolls the harness's CoreDNS Deployment, not this one), and wait
/// until kube-proxy sends kube-dns only to the new pods.
pub async fn restart_coredns(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "restart",
        "deployment/coredns-real",
    ])?;
    c.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns-real",
        "--timeout=180s",
    ])?;
    wait_kube_proxy_on_current_pods(c).await?;
    wait_kube_dns_serves(c).await
}

/// The kube-dns Service's selector back to the harness's CoreDNS; the real
/// CoreDNS and the probe pods deleted. Best effort: for cleanup paths.
pub fn restore(c: &Cluster) {
    let _ = c.kubectl(&[
        "-n",
        "kube-system",
        "patch",
        "service",
        "kube-dns",
        "-p",
        r#"{"spec":{"selector":{"k8s-app":"kube-dns"}}}"#,
    ]);
    let _ = c.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "deployment",
        "coredns-real",
        "--ignore-not-found",
    ]);
    let _ = c.kubectl(&[
        "-n",
        "default",
        "delete",
        "pod",
        GLIBC_POD,
        MUSL_POD,
        "--ignore-not-found",
        "--wait=false",
    ]);
}

/// Until kube-proxy sends kube-dns to exactly the real CoreDNS pods that are
/// not terminating (after a restart, the old pods still run the old Corefile).
pub async fn wait_kube_proxy_on_current_pods(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let pods: serde_json::Value = serde_json::from_str(&c.kubectl(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-dns-real",
            "-o",
            "json",
        ])?)?;
        let mut current: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["status"]["podIP"].as_str())
            .map(|ip| format!("{ip}:53"))
            .collect();
        current.sort();
        let proxied = node::kube_proxy_endpoints("kube-system/kube-dns:dns")?;
        if !current.is_empty() && proxied == current {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(90) {
            bail!("kube-proxy sends kube-dns to {proxied:?}, the current pods are {current:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Until kube-proxy has Ready real CoreDNS pods behind 10.96.0.10: a name
/// with five dots is asked as is first, so this waits on the path, not on
/// the suffix.
pub async fn wait_kube_dns_serves(c: &Cluster) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let l = exec_lookup(
            c,
            MUSL_POD,
            &[
                "/usr/bin/musl-probe",
                "kubernetes.default.svc.cluster.local.",
            ],
        );
        if l.ok && l.output.contains(env::KUBERNETES_SVC_IP) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(90) {
            bail!(
                "real pods never resolved kubernetes.default through kube-dns: {}",
                l.output
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
