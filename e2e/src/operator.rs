//! The real operator as a process (`dnspolicy-operator run` and
//! `node-agent`), policies applied with kubectl, status read back and waited
//! on, and the operator's API writes counted from the audit log. The e2e
//! tests, the demo and the bench (which runs the release build) share it.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Cluster, Flavor, env};

/// `target/<profile>/dnspolicy-operator`, the controller and node agent,
/// built by `cargo build [--release] -p dnspolicy-operator`.
pub fn operator_bin(release: bool) -> Result<PathBuf> {
    built_bin("dnspolicy-operator", release)
}

/// `target/debug/dnspolicy`, the user's command line (`status`).
pub fn cli_bin() -> Result<PathBuf> {
    built_bin("dnspolicy", false)
}

fn built_bin(package: &str, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    let bin = env::repo_root().join("target").join(profile).join(package);
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build{} -p {package}` (just test does)",
            bin.display(),
            if release { " --release" } else { "" }
        );
    }
    Ok(bin)
}

/// How to start an operator beyond its name and arguments.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The binary; `target/debug/dnspolicy-operator` when None.
    pub bin: Option<PathBuf>,
    /// Added to its environment.
    pub envs: Vec<(String, String)>,
    /// The cluster's admin kubeconfig when None.
    pub kubeconfig: Option<PathBuf>,
}

impl Launch {
    pub fn env(mut self, k: &str, v: &str) -> Launch {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn kubeconfig(mut self, path: PathBuf) -> Launch {
        self.kubeconfig = Some(path);
        self
    }
}

/// A running `dnspolicy-operator run`; killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    /// `--metrics-addr`: plain HTTP unless the test passed `--metrics-auth kubernetes`.
    pub metrics: String,
    /// `--health-addr`: `/healthz` and `/readyz`, plain HTTP.
    pub health: String,
    pub started: Instant,
}

impl Operator {
    /// `run` (the debug build) against the cluster as its admin, leading its
    /// own Lease `dnspolicy-<name>` as identity `name` unless `extra` names them.
    pub fn start(c: &Cluster, name: &str, extra: &[&str]) -> Result<Operator> {
        Self::start_with(c, name, extra, &Launch::default())
    }

    pub fn start_with(c: &Cluster, name: &str, extra: &[&str], how: &Launch) -> Result<Operator> {
        let bin = match &how.bin {
            Some(b) => b.clone(),
            None => operator_bin(false)?,
        };
        let free = || -> Result<String> {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            Ok(format!("127.0.0.1:{port}"))
        };
        let (metrics, health) = (free()?, free()?);
        let log = c.layout.logs().join(format!("operator-{name}.log"));
        let out = File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--metrics-addr", &metrics, "--health-addr", &health]);
        // Each test leads its own Lease under its own name unless it names them.
        if !extra.contains(&"--lease-name") {
            cmd.args(["--lease-name", &format!("dnspolicy-{name}")]);
        }
        if !extra.contains(&"--identity") {
            cmd.args(["--identity", name]);
        }
        cmd.args(extra)
            .env(
                "KUBECONFIG",
                how.kubeconfig.clone().unwrap_or_else(|| c.kubeconfig()),
            )
            .env("RUST_LOG", "info,kube=warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        for (k, v) in &how.envs {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd.spawn().context("start dnspolicy-operator run")?;
        Ok(Operator {
            child: Some(child),
            log,
            metrics,
            health,
            started,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait: the graceful path (releases the Lease).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while child.try_wait()?.is_none() {
                if t0.elapsed() > Duration::from_secs(15) {
                    child.kill()?;
                    let _ = child.wait();
                    bail!(
                        "operator did not stop within 15 s after SIGTERM; log {}",
                        self.log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
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

    /// Policy `name` Ready for its generation; a timeout carries this
    /// operator's log.
    pub async fn ready(&self, c: &Cluster, name: &str, timeout: Duration) -> Result<Value> {
        wait_ready(c, name, timeout)
            .await
            .with_context(|| self.log_text())
    }

    /// Every policy deleted (the operator restores the Corefile and rolls
    /// CoreDNS back before their finalizers go), then a graceful stop.
    pub fn delete_policies_and_stop(&mut self, c: &Cluster) -> Result<()> {
        c.kubectl(&["delete", "cdp", "--all", "--wait=true", "--timeout=60s"])?;
        self.stop()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::files::tail(&self.log, n)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn crd_path() -> PathBuf {
    env::repo_root().join("manifests/crd.yaml")
}

/// manifests/crd.yaml (what `dnspolicy crd` prints) applied and Established.
pub fn install_crd(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crd_path().to_str().context("CRD path")?,
    ])?;
    wait_crd_established(c)
}

/// The ClusterDNSPolicy CRD serves (after `kubectl apply` or `helm install`).
pub fn wait_crd_established(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/clusterdnspolicies.dnspolicy.dev",
    ])?;
    Ok(())
}

/// A clean slate: the CRD installed, no policies (finalizers cleared if an
/// earlier run died), CoreDNS reinstalled as `flavor` without any dnspolicy
/// state. Returns the stock Corefile.
pub async fn fresh(c: &Cluster, flavor: Flavor, version: &str) -> Result<String> {
    install_crd(c)?;
    clear_policies(c)?;
    stock_coredns(c, flavor, version).await
}

/// CoreDNS reinstalled as `flavor`, its ConfigMaps without any dnspolicy
/// state. Returns the stock Corefile.
pub async fn stock_coredns(c: &Cluster, flavor: Flavor, version: &str) -> Result<String> {
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

/// `kubectl apply -k manifests/`, as a user installs dnspolicy.
pub fn install_manifests(c: &Cluster) -> Result<()> {
    let manifests = env::repo_root().join("manifests");
    c.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        manifests.to_str().unwrap(),
    ])?;
    Ok(())
}

/// Delete every policy, clearing finalizers first so no operator is needed.
pub fn clear_policies(c: &Cluster) -> Result<()> {
    let crd = c.kubectl(&[
        "get",
        "crd",
        "--ignore-not-found",
        "-o",
        "name",
        "clusterdnspolicies.dnspolicy.dev",
    ])?;
    if crd.trim().is_empty() {
        return Ok(());
    }
    let names = c.kubectl(&["get", "cdp", "-o", "jsonpath={.items[*].metadata.name}"])?;
    for name in names.split_whitespace() {
        c.kubectl(&[
            "patch",
            "cdp",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])?;
    }
    c.kubectl(&["delete", "cdp", "--all", "--wait=true"])?;
    Ok(())
}

/// A kubeconfig for the cluster with a fresh token of ServiceAccount
/// `namespace/name` as the user, checked with `kubectl auth whoami`.
pub fn service_account_kubeconfig(c: &Cluster, namespace: &str, name: &str) -> Result<PathBuf> {
    let token = c.kubectl(&["-n", namespace, "create", "token", name, "--duration=1h"])?;
    let path = token_kubeconfig(c, &format!("{namespace}-{name}"), &token)?;
    let who = c.kubectl(&[
        "--kubeconfig",
        path.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    let want = format!("system:serviceaccount:{namespace}:{name}");
    anyhow::ensure!(who.trim() == want, "the token is {who:?}, not {want}");
    Ok(path)
}

/// A kubeconfig for the cluster with `token` as the user.
pub fn token_kubeconfig(c: &Cluster, file: &str, token: &str) -> Result<PathBuf> {
    let raw = c.kubectl(&["config", "view", "--raw", "--minify"])?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&raw)?;
    config["users"][0]["user"] = serde_yaml::from_str(&format!("token: {}", token.trim()))?;
    let path = c.layout.dir.join(format!("{file}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

pub fn apply(c: &Cluster, yaml: &str) -> Result<()> {
    c.kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    Ok(())
}

pub fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&c.kubectl(&all)?)?)
}

pub fn corefile(c: &Cluster) -> Result<String> {
    let cm = get_json(c, &["-n", "kube-system", "configmap", "coredns"])?;
    cm["data"]["Corefile"]
        .as_str()
        .map(str::to_string)
        .context("coredns ConfigMap has no Corefile")
}

/// The `dnspolicy.dev/*` annotation keys on ConfigMap kube-system/`name`:
/// what a last policy's deletion must leave none of.
pub fn dnspolicy_annotations(c: &Cluster, name: &str) -> Result<Vec<String>> {
    let cm = get_json(c, &["-n", "kube-system", "configmap", name])?;
    Ok(dnspolicy_annotation_keys(&cm))
}

/// The `dnspolicy.dev/*` annotation keys of an object read as JSON.
pub fn dnspolicy_annotation_keys(object: &Value) -> Vec<String> {
    object["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.keys()
                .filter(|k| k.starts_with("dnspolicy.dev/"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn condition(p: &Value, type_: &str) -> Option<(String, String, String)> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// `Ready=True` for the current generation.
pub fn is_ready(p: &Value) -> bool {
    p["status"]["observedGeneration"] == p["metadata"]["generation"]
        && condition(p, "Ready").is_some_and(|(s, _, _)| s == "True")
}

/// The audit log's length now: writes are counted from here.
pub fn audit_mark(c: &Cluster) -> Result<u64> {
    Ok(fs::metadata(c.audit_log())?.len())
}

/// Writes (create, update, patch, delete) the operator (user agent
/// `dnspolicy/<version>`) made since `mark`, as `verb resource/name[/sub]`;
/// Lease renewals are leader election's heartbeat and are left out.
pub fn operator_writes_since(c: &Cluster, mark: u64) -> Result<Vec<String>> {
    let mut file = File::open(c.audit_log())?;
    file.seek(SeekFrom::Start(mark))?;
    let mut writes = Vec::new();
    for line in BufReader::new(file).lines() {
        let Ok(event) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        let agent = event["userAgent"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default();
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        if agent.starts_with("dnspolicy/")
            && event["stage"] == "ResponseComplete"
            && matches!(verb, "create" | "update" | "patch" | "delete")
            && resource != "leases"
        {
            let sub = event["objectRef"]["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            writes.push(format!(
                "{verb} {resource}/{}{sub}",
                event["objectRef"]["name"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(writes)
}

/// An audit mark taken once the operator has written nothing for 3 s (old
/// pods finishing after a rollout still change counts in status), so writes
/// after it are the next step's.
pub async fn quiet_mark(c: &Cluster) -> Result<u64> {
    let t0 = std::time::Instant::now();
    loop {
        let mark = audit_mark(c)?;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let writes = operator_writes_since(c, mark)?;
        if writes.is_empty() {
            return Ok(mark);
        }
        anyhow::ensure!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the operator never stopped writing: {writes:?}"
        );
    }
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

/// (namespace, pods, polluted) entries of a policy's status.
pub fn status_namespaces(p: &Value) -> Vec<(String, u64, u64)> {
    p["status"]["namespaces"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_string(),
                        n["pods"].as_u64().unwrap_or(0),
                        n["polluted"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until policy `tailnet`'s status counts `want` (namespace, pods,
/// polluted) per namespace; returns how long it took.
pub async fn wait_namespace_counts(
    c: &Cluster,
    want: &[(&str, u64, u64)],
    what: &str,
) -> Result<Duration> {
    let t0 = Instant::now();
    wait_for(what, Duration::from_secs(30), || {
        let p = policy(c, "tailnet")?;
        let got = status_namespaces(&p);
        let ok = want.iter().all(|(ns, pods, polluted)| {
            let entry = got.iter().find(|g| g.0 == *ns);
            match entry {
                Some(g) => g.1 == *pods && g.2 == *polluted,
                // A namespace with no polluted pod is not listed.
                None => *polluted == 0,
            }
        });
        Ok(ok.then_some(()))
    })
    .await?;
    Ok(t0.elapsed())
}

/// A running `dnspolicy node-agent` for `node`, reading `resolv_conf`.
pub fn node_agent(c: &Cluster, node: &str, resolv_conf: &std::path::Path) -> Result<Child> {
    let log = File::create(c.layout.logs().join(format!("node-agent-{node}.log")))?;
    Ok(Command::new(operator_bin(false)?)
        .args(["node-agent", "--node-name", node, "--interval", "500ms"])
        .arg("--resolv-conf")
        .arg(resolv_conf)
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// The Tailscale example as shipped: its tailnet hosts go to a DNSConfig's
/// nameserver (`forwardToRef`).
pub const TAILSCALE_EXAMPLE: &str = include_str!("../../manifests/examples/tailscale.yaml");
/// The example's reference, one line, for the variants below to replace.
pub const TAILSCALE_FORWARD_REF: &str = "    forwardToRef: {kind: DNSConfig, name: ts-dns}\n";

/// The Tailscale example without forwarding for tailnet hosts: the policy
/// the rollout, status and accounting tests apply (they run no tailnet
/// resolver, and the operator probes every forward target).
pub static TAILSCALE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    assert!(
        TAILSCALE_EXAMPLE.contains(TAILSCALE_FORWARD_REF),
        "manifests/examples/tailscale.yaml has no {TAILSCALE_FORWARD_REF:?}"
    );
    TAILSCALE_EXAMPLE.replace(TAILSCALE_FORWARD_REF, "")
});

/// The Tailscale example with a literal forwardTo `resolver` (a harness
/// address) in place of its reference.
pub fn tailscale_forwarding_to(resolver: &str) -> String {
    assert!(
        TAILSCALE_EXAMPLE.contains(TAILSCALE_FORWARD_REF),
        "manifests/examples/tailscale.yaml has no {TAILSCALE_FORWARD_REF:?}"
    );
    TAILSCALE_EXAMPLE.replace(
        TAILSCALE_FORWARD_REF,
        &format!("    forwardTo: [\"{resolver}\"]\n"),
    )
}
pub const OPENSTACK: &str = include_str!("../../manifests/examples/openstack.yaml");

/// Prometheus text -> metric name -> label names of its series.
pub fn metric_series(
    text: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(rest) = line[end..].strip_prefix('{') {
            for pair in rest.split('}').next().unwrap_or_default().split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}
