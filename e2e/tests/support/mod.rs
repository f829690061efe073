//! Shared by the operator and DNS-contract suites: the real `dnspolicy`
//! binary as a process, policies applied with kubectl, and waits on status.

#![allow(dead_code)]

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dnspolicy_e2e::{Cluster, Flavor};
// One copy of the cluster-state helpers, shared with the benchmarks.
#[allow(unused_imports)] // each suite uses a different subset
pub use dnspolicy_e2e::operator::{
    apply, audit_mark, clear_policies, condition, corefile, crd_path, get_json, is_ready,
    operator_writes_since,
};
use serde_json::Value;

/// The operator binary `cargo build -p dnspolicy-operator` made.
pub fn operator_bin() -> Result<PathBuf> {
    dnspolicy_e2e::operator::operator_bin(false)
}

/// A running `dnspolicy run` (or any dnspolicy subcommand); killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    pub metrics: String,
}

impl Operator {
    /// `dnspolicy run` against the cluster as its admin, with its own Lease.
    pub fn start(c: &Cluster, name: &str, extra: &[&str]) -> Result<Operator> {
        Self::start_with(c, name, extra, &[], None)
    }

    pub fn start_with(
        c: &Cluster,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        kubeconfig: Option<PathBuf>,
    ) -> Result<Operator> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics = format!("127.0.0.1:{port}");
        let log = c.layout.logs().join(format!("operator-{name}.log"));
        let out = File::create(&log)?;
        let mut cmd = Command::new(operator_bin()?);
        cmd.args(["run", "--metrics-addr", &metrics]);
        // Each test leads its own Lease under its own name unless it names them.
        if !extra.contains(&"--lease-name") {
            cmd.args(["--lease-name", &format!("dnspolicy-{name}")]);
        }
        if !extra.contains(&"--identity") {
            cmd.args(["--identity", name]);
        }
        cmd.args(extra)
            .env("KUBECONFIG", kubeconfig.unwrap_or_else(|| c.kubeconfig()))
            .env("RUST_LOG", "info,kube=warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("start dnspolicy run")?;
        Ok(Operator {
            child: Some(child),
            log,
            metrics,
        })
    }

    /// SIGTERM and wait: the graceful path (releases the Lease).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while child.try_wait()?.is_none() {
                if t0.elapsed() > Duration::from_secs(15) {
                    child.kill()?;
                    bail!(
                        "operator did not stop within 15 s after SIGTERM; log {}",
                        self.log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Exit status if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A clean slate: the CRD installed, no policies (finalizers cleared if an
/// earlier run died), CoreDNS reinstalled as `flavor` without any dnspolicy
/// state. Returns the stock Corefile.
pub async fn fresh(c: &Cluster, flavor: Flavor, version: &str) -> Result<String> {
    c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crd_path().to_str().unwrap(),
    ])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/clusterdnspolicies.dnspolicy.dev",
    ])?;
    clear_policies(c)?;
    c.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "configmap",
        "coredns",
        "coredns-custom",
        "--ignore-not-found",
    ])?;
    c.install_coredns(flavor, version).await?;
    corefile(c)
}

pub fn policy(c: &Cluster, name: &str) -> Result<Value> {
    get_json(c, &["cdp", name])
}

/// Polls `check` every 200 ms until it returns Some, or fails with `what`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t0 = Instant::now();
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last_err:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_ready(c: &Cluster, name: &str, timeout: Duration) -> Result<Value> {
    wait_for(&format!("ClusterDNSPolicy {name} Ready"), timeout, || {
        let p = policy(c, name)?;
        Ok(is_ready(&p).then_some(p))
    })
    .await
}

/// The Deployment's pod-template hash annotation.
pub fn template_hash(c: &Cluster) -> Result<Option<String>> {
    let d = get_json(c, &["-n", "kube-system", "deployment", "coredns"])?;
    Ok(
        d["spec"]["template"]["metadata"]["annotations"]["dnspolicy.dev/corefile-hash"]
            .as_str()
            .map(str::to_string),
    )
}

/// Serving CoreDNS addresses after the rollout settles.
pub async fn rolled(c: &Cluster) -> Result<Vec<Ipv4Addr>> {
    c.wait_coredns_rolled_out(Duration::from_secs(60)).await
}

pub const TAILSCALE: &str = include_str!("../../../manifests/examples/tailscale.yaml");
pub const OPENSTACK: &str = include_str!("../../../manifests/examples/openstack.yaml");
pub const EKS: &str = include_str!("../../../manifests/examples/eks.yaml");

/// Kills kube-apiserver and starts it again with the same command line, as a
/// crash and restart would; waits until it serves again.
pub fn restart_apiserver(c: &Cluster) -> Result<Duration> {
    use std::os::unix::process::CommandExt;
    let pidfile = c.layout.pidfile("kube-apiserver");
    let pid: i32 = fs::read_to_string(&pidfile)?.trim().parse()?;
    let argv: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))?
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let t0 = Instant::now();
    // SIGKILL, as a crash: a graceful stop drains watches for a minute.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = |pid: i32| {
        // A zombie child of this process counts as gone; reap it if it is ours.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
            Err(_) => true,
        }
    };
    while !gone(pid) {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("kube-apiserver {pid} did not stop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(c.layout.log("kube-apiserver"))?;
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&c.layout.dir)
        .process_group(0)
        .spawn()?;
    fs::write(&pidfile, child.id().to_string())?;
    std::mem::forget(child);
    loop {
        if c.kubectl(&["get", "--raw", "/readyz"]).is_ok() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("kube-apiserver did not come back within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Adds a kwok-managed node.
pub fn add_node(c: &Cluster, name: &str, labels: &[(&str, &str)]) -> Result<()> {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    kwok.x-k8s.io/node: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    type: kwok\n    kubernetes.io/hostname: {name}\n{labels}spec: {{}}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &yaml)?;
    Ok(())
}

/// A running `dnspolicy node-agent` for `node`, reading `resolv_conf`.
pub fn node_agent(c: &Cluster, node: &str, resolv_conf: &std::path::Path) -> Result<Child> {
    let log = File::create(c.layout.logs().join(format!("node-agent-{node}.log")))?;
    Ok(Command::new(operator_bin()?)
        .args(["node-agent", "--node-name", node, "--interval", "500ms"])
        .arg("--resolv-conf")
        .arg(resolv_conf)
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}
