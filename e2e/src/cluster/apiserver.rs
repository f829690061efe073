//! kube-apiserver (flags after hack/local-up-cluster.sh), auditing every
//! request at Metadata level so tests can count writes; and its restart, as
//! a crash would have it.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::components::{spawn, wait_component};
use super::{Layout, etcd, kubectl};
use crate::env::{self, CONTROL_IP};
use crate::process;

/// Metadata for everything: user, verb, object and requestURI (which carries
/// fieldManager), so tests can count writes per user / field manager.
pub const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

/// Start kube-apiserver on etcd and wait until `/readyz` answers.
pub fn start(l: &Layout) -> Result<()> {
    let pki = l.pki();
    let d = |p: &Path| p.display().to_string();
    spawn(
        l,
        "kube-apiserver",
        &env::k8s_bin("kube-apiserver"),
        &[
            format!("--bind-address={CONTROL_IP}"),
            // Published in the `kubernetes` Endpoints, never dialled; a loopback
            // address there is rejected by validation. It is the kwok node IP.
            "--advertise-address=10.240.0.1".into(),
            format!("--secure-port={}", env::APISERVER_PORT),
            format!("--etcd-servers={}", etcd::client_url()),
            format!("--tls-cert-file={}", d(&pki.join("apiserver.crt"))),
            format!("--tls-private-key-file={}", d(&pki.join("apiserver.key"))),
            format!("--client-ca-file={}", d(&pki.join("ca.crt"))),
            format!("--token-auth-file={}", d(&l.dir.join("tokens.csv"))),
            format!("--service-account-key-file={}", d(&pki.join("sa.pub"))),
            format!(
                "--service-account-signing-key-file={}",
                d(&pki.join("sa.key"))
            ),
            format!(
                "--service-account-issuer=https://kubernetes.default.svc.{}",
                env::CLUSTER_DOMAIN
            ),
            format!("--service-cluster-ip-range={}", env::SERVICE_CIDR),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            format!(
                "--audit-policy-file={}",
                d(&l.dir.join("audit-policy.yaml"))
            ),
            format!("--audit-log-path={}", d(&l.audit_log())),
            "--audit-log-mode=blocking".into(),
            "--audit-log-maxsize=0".into(),
            "--profiling=false".into(),
            "--enable-priority-and-fairness=false".into(),
            "--endpoint-reconciler-type=lease".into(),
            // The real node's name does not resolve; its InternalIP is
            // reachable through the veth (exec, logs: cluster/node.rs).
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            "--v=1".into(),
        ],
        &[],
    )?;
    wait_component(l, "kube-apiserver", Duration::from_secs(90), || serves(l))
}

fn serves(l: &Layout) -> bool {
    kubectl(l, &["get", "--raw", "/readyz"], None).is_ok()
}

/// Kills kube-apiserver and starts it again with the same command line, as a
/// crash and restart would; waits until it serves again.
pub fn restart(l: &Layout) -> Result<Duration> {
    let pid = process::read_pid(&l.pidfile("kube-apiserver")).context("kube-apiserver pid")?;
    let argv: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))?
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let t0 = Instant::now();
    // SIGKILL, as a crash: a graceful stop drains watches for a minute.
    process::signal(pid, libc::SIGKILL);
    // A zombie child of this process counts as gone; reap it if it is ours.
    let gone = |pid: i32| {
        // SAFETY: waitpid with WNOHANG on a pid; a pid not our child is an error, ignored.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        !process::pid_alive(pid)
    };
    while !gone(pid) {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("kube-apiserver {pid} did not stop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log_tail = || {
        let log = fs::read_to_string(l.log("kube-apiserver")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let mut new = spawn(l, "kube-apiserver", Path::new(&argv[0]), &argv[1..], &[])?;
    let mut respawned = false;
    while !serves(l) {
        // On a loaded machine the new process can die at start-up (a port
        // not yet released, etcd slow to answer): start it once more, as a
        // supervisor would, and say why if it dies again.
        if gone(new) {
            if respawned {
                bail!(
                    "the restarted kube-apiserver exited twice; its log ends:\n{}",
                    log_tail()
                );
            }
            eprintln!("[e2e] the restarted kube-apiserver exited; starting it again");
            std::thread::sleep(Duration::from_secs(1));
            new = spawn(l, "kube-apiserver", Path::new(&argv[0]), &argv[1..], &[])?;
            respawned = true;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!(
                "kube-apiserver did not come back within 120 s; its log ends:\n{}",
                log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(t0.elapsed())
}
