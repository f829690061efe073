//! Pieces of `just bench` (`e2e-bench`): the result table, statistics,
//! process memory, standalone CoreDNS processes for dnsperf, and many
//! pods created fast.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::mountns::{self, Bind, Unshare};
use crate::{Cluster, env, files, net};

// ---------------------------------------------------------------- table

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A baseline or context figure: no pass/fail.
    Info,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub measure: String,
    pub figure: String,
    pub target: String,
    pub ratio: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Table {
    /// A row whose ratio is `figure / target` for an upper bound (<= 1 meets it).
    pub fn at_most(
        &mut self,
        measure: &str,
        figure: String,
        value: f64,
        target: f64,
        target_text: &str,
    ) {
        let ratio = value / target;
        self.push(measure, figure, target_text, ratio, ratio <= 1.0);
    }

    /// A row whose ratio is `figure / target` for a lower bound (>= 1 meets it).
    pub fn at_least(
        &mut self,
        measure: &str,
        figure: String,
        value: f64,
        target: f64,
        target_text: &str,
    ) {
        let ratio = value / target;
        self.push(measure, figure, target_text, ratio, ratio >= 1.0);
    }

    fn push(&mut self, measure: &str, figure: String, target: &str, ratio: f64, ok: bool) {
        let verdict = if ok { Verdict::Met } else { Verdict::Missed };
        self.rows.push(Row {
            measure: measure.into(),
            figure,
            target: target.into(),
            ratio: format!("{ratio:.2} {}", if ok { "ok" } else { "MISS" }),
            verdict,
        });
    }

    pub fn row(
        &mut self,
        measure: &str,
        figure: String,
        target: &str,
        ratio: &str,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            figure,
            target: target.into(),
            ratio: ratio.into(),
            verdict,
        });
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let mut out = String::from("| measure | figure | target | ratio |\n|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                esc(&r.measure),
                esc(&r.figure),
                esc(&r.target),
                esc(&r.ratio)
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

// ---------------------------------------------------------------- stats

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile (p50 of 10 values is the 5th smallest).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// "1.234 s" or "12.3 ms".
pub fn fmt_secs(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------- memory

/// (VmRSS, VmHWM) of a process in KiB, from /proc/<pid>/status.
pub fn vm_rss_hwm(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------- CoreDNS + dnsperf

/// A CoreDNS process outside the cluster's pods, run as the pod runtime runs
/// one (private mount namespace, in-cluster service-account files, a
/// resolv.conf of its own, `POD_IP` = its loopback address) with a Corefile
/// given as text; killed on drop.
pub struct StandaloneCoredns {
    child: Child,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
}

impl StandaloneCoredns {
    /// `upstream` is the nameserver of its /etc/resolv.conf, which the stock
    /// `forward . /etc/resolv.conf` uses.
    pub fn start(
        c: &Cluster,
        name: &str,
        version: &str,
        addr: Ipv4Addr,
        corefile: &str,
        upstream: Ipv4Addr,
    ) -> Result<Self> {
        let bin = env::coredns_bin(version);
        if !bin.is_file() {
            bail!("no CoreDNS {version} binary at {}", bin.display());
        }
        if net::udp_port_in_use(SocketAddr::new(addr.into(), 53)) {
            bail!("{addr}:53 is already in use");
        }
        let dir = c.layout.dir.join("bench").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::write(dir.join("Corefile"), corefile)?;
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {upstream}\nsearch {}\n", env::NODE_SEARCH),
        )?;
        std::fs::copy(c.layout.token(), sa.join("token")).context("admin token")?;
        std::fs::copy(c.layout.pki().join("ca.crt"), sa.join("ca.crt"))?;
        std::fs::write(sa.join("namespace"), "kube-system")?;
        let log = std::fs::File::create(dir.join("coredns.log"))?;
        let mut cmd = Unshare::new()
            .bind(Bind::dir(
                sa,
                "/run/secrets/kubernetes.io/serviceaccount",
                false,
            ))
            .bind(Bind::file(dir.join("resolv.conf"), "/etc/resolv.conf"))
            .command(&bin);
        cmd.arg("-conf")
            .arg(dir.join("Corefile"))
            .env("POD_IP", addr.to_string())
            .env("KUBERNETES_SERVICE_HOST", env::CONTROL_IP.to_string())
            .env("KUBERNETES_SERVICE_PORT", env::APISERVER_PORT.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        mountns::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawn CoreDNS")?;
        let mut me = StandaloneCoredns { child, addr, dir };
        let ready = SocketAddr::new(addr.into(), 8181);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!(
                    "CoreDNS {name} exited ({st}): {}",
                    files::tail(&me.dir.join("coredns.log"), 20)
                );
            }
            if net::http_get_status(ready, "/ready", Duration::from_millis(500)).ok() == Some(200) {
                return Ok(me);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "CoreDNS {name} not ready in 30 s: {}",
                    files::tail(&me.dir.join("coredns.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for StandaloneCoredns {
    fn drop(&mut self) {
        // SIGKILL the unshare'd CoreDNS (exec'd in place of sh).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Install Debian's dnsperf if it is missing.
pub fn ensure_dnsperf() -> Result<()> {
    if Command::new("dnsperf")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("[bench] apt-get install dnsperf");
    let sh = "export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends dnsperf \
              || { apt-get update -qq && apt-get install -y -qq --no-install-recommends dnsperf; }";
    let st = Command::new("bash").args(["-c", sh]).status()?;
    if !st.success() {
        bail!("could not install dnsperf");
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct DnsperfRun {
    pub qps: f64,
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub avg_latency_ms: f64,
}

/// `dnsperf -s addr -d queries -l secs` at full speed (20 clients, up to
/// 200 queries in flight).
pub fn dnsperf(addr: Ipv4Addr, queries: &Path, secs: u64) -> Result<DnsperfRun> {
    let out = Command::new("dnsperf")
        .args(["-s", &addr.to_string(), "-p", "53", "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "20", "-q", "200", "-t", "2"])
        .output()
        .context("run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "dnsperf failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num = |key: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_once(':'))
            .and_then(|(_, v)| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rcode = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.trim_start().starts_with("Response codes:"))
            .and_then(|l| {
                let rest = l.split_once(':')?.1;
                rest.split(',').find_map(|part| {
                    let mut it = part.split_whitespace();
                    (it.next()? == name)
                        .then(|| it.next()?.parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0)
    };
    Ok(DnsperfRun {
        qps: num("Queries per second").context(format!("no qps in dnsperf output:\n{text}"))?,
        sent: num("Queries sent").unwrap_or(0.0) as u64,
        completed: num("Queries completed").unwrap_or(0.0) as u64,
        lost: num("Queries lost").unwrap_or(0.0) as u64,
        noerror: rcode("NOERROR"),
        nxdomain: rcode("NXDOMAIN"),
        servfail: rcode("SERVFAIL"),
        avg_latency_ms: num("Average Latency (s)").unwrap_or(f64::NAN) * 1000.0,
    })
}

// ---------------------------------------------------------------- pods at scale

pub const BENCH_NS_PREFIX: &str = "bench-ns-";
pub const BENCH_NODE_PREFIX: &str = "bench-node-";
pub const BENCH_NODES: usize = 10;
/// Nodes 0..POLLUTED_NODES publish the tailnet suffix as their host search.
pub const POLLUTED_NODES: usize = 4;
pub const HOST_SEARCH_ANN: &str = "dnspolicy.dev/host-search";

pub fn node_name(i: usize) -> String {
    format!("{BENCH_NODE_PREFIX}{i}")
}

pub fn ns_name(i: usize) -> String {
    format!("{BENCH_NS_PREFIX}{i:04}")
}

/// The pod with index `i` of a layout of `namespaces` namespaces.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub ns: String,
    pub name: String,
    pub node: usize,
    /// 0: ClusterFirst, 1: dnsPolicy None with its own searches (clean),
    /// 2: ClusterFirst with the suffix in dnsConfig.searches (polluted anywhere).
    pub kind: u8,
}

impl PodSpec {
    pub fn new(i: usize, namespaces: usize) -> PodSpec {
        let kind = match i % 10 {
            7 => 1,
            9 => 2,
            _ => 0,
        };
        PodSpec {
            ns: ns_name(i % namespaces),
            name: format!("p-{i:06}"),
            node: (i / namespaces) % BENCH_NODES,
            kind,
        }
    }

    /// What kubelet's search list makes of it: polluted by the tailnet suffix?
    pub fn polluted(&self) -> bool {
        match self.kind {
            0 => self.node < POLLUTED_NODES,
            1 => false,
            _ => true,
        }
    }

    pub fn to_pod(&self) -> Pod {
        let mut spec = json!({
            "nodeName": node_name(self.node),
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
        });
        match self.kind {
            1 => {
                spec["dnsPolicy"] = json!("None");
                spec["dnsConfig"] = json!({
                    "nameservers": [env::DNS_SVC_IP],
                    "searches": [format!("{}.svc.cluster.local", self.ns), "svc.cluster.local"],
                    "options": [{"name": "ndots", "value": "2"}],
                });
            }
            2 => {
                spec["dnsPolicy"] = json!("ClusterFirst");
                spec["dnsConfig"] = json!({"searches": [env::NODE_SEARCH]});
            }
            _ => spec["dnsPolicy"] = json!("ClusterFirst"),
        }
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.ns, "labels": {"app": "bench"}},
            "spec": spec,
        }))
        .expect("pod json")
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// kwok-managed Nodes; the first `POLLUTED_NODES` carry the tailnet suffix in
/// the node agent's host-search annotation, the others a corporate one.
pub async fn create_nodes(client: &Client) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    for i in 0..BENCH_NODES {
        let search = if i < POLLUTED_NODES {
            env::NODE_SEARCH
        } else {
            "corp.example.internal"
        };
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": node_name(i),
                "annotations": {
                    "kwok.x-k8s.io/node": "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                    HOST_SEARCH_ANN: search,
                },
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": node_name(i),
                    "dnspolicy.dev/bench": "true",
                },
            },
            "spec": {},
        }))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e).context("create bench node"),
        }
    }
    Ok(())
}

/// Namespaces `0..n`, then wait for their `default` ServiceAccount (pod
/// admission needs it).
pub async fn create_namespaces(client: &Client, n: usize, concurrency: usize) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns_name(i), "labels": {"dnspolicy.dev/bench": "true"}},
                }))?;
                for attempt in 0..20 {
                    match api.create(&PostParams::default(), &ns).await {
                        Ok(_) => return Ok(()),
                        Err(e) if is_status(&e, 409) => {
                            // Still terminating from an earlier run? wait.
                            let cur = api.get(&ns_name(i)).await?;
                            if cur.metadata.deletion_timestamp.is_none() {
                                return Ok(());
                            }
                        }
                        Err(e) if attempt < 19 => {
                            let _ = e;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                bail!("namespace {} not created", ns_name(i))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::all(client.clone());
    let t0 = Instant::now();
    loop {
        let list = sa
            .list_metadata(&ListParams::default().fields("metadata.name=default"))
            .await?;
        let have = list
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|n| n.starts_with(BENCH_NS_PREFIX))
            })
            .count();
        if have >= n {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("only {have}/{n} bench namespaces got a default ServiceAccount");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Create the pods `range` with `concurrency` requests in flight; returns the
/// creation rate (pods/s). Existing pods count as created.
pub async fn create_pods(
    client: &Client,
    range: std::ops::Range<usize>,
    namespaces: usize,
    concurrency: usize,
) -> Result<f64> {
    let t0 = Instant::now();
    let n = range.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let results: Vec<Result<()>> = futures::stream::iter(range)
        .map(|i| {
            let client = client.clone();
            async move {
                let p = PodSpec::new(i, namespaces);
                let api: Api<Pod> = Api::namespaced(client, &p.ns);
                let pod = p.to_pod();
                let mut last = None;
                for attempt in 0..30u64 {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {
                            last = None;
                            break;
                        }
                        Err(e) if is_status(&e, 409) => {
                            last = None;
                            break;
                        }
                        Err(e) => {
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1).min(10)))
                                .await;
                        }
                    }
                }
                if let Some(e) = last {
                    return Err(
                        anyhow::Error::from(e).context(format!("create pod {}/{}", p.ns, p.name))
                    );
                }
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d.is_multiple_of(5000) {
                    eprintln!(
                        "[bench]   {d}/{n} pods created ({:.0}/s)",
                        d as f64 / t0.elapsed().as_secs_f64()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Delete the pods `idx` at once (grace period 0, as `kubectl delete --force
/// --grace-period=0`).
pub async fn delete_pods(
    client: &Client,
    idx: &[usize],
    namespaces: usize,
    concurrency: usize,
) -> Result<()> {
    let results: Vec<Result<()>> =
        futures::stream::iter(idx.iter().copied())
            .map(|i| {
                let client = client.clone();
                async move {
                    let p = PodSpec::new(i, namespaces);
                    let api: Api<Pod> = Api::namespaced(client, &p.ns);
                    match api
                        .delete(&p.name, &DeleteParams::default().grace_period(0))
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) if is_status(&e, 404) => Ok(()),
                        Err(e) => Err(anyhow::Error::from(e)
                            .context(format!("delete pod {}/{}", p.ns, p.name))),
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Remove everything the scale phase made: pods (grace 0, per namespace),
/// the namespaces (waiting until they are gone) and the nodes.
pub async fn cleanup_scale(client: &Client) -> Result<()> {
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nsapi
        .list_metadata(&ListParams::default().labels("dnspolicy.dev/bench=true"))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n.starts_with(BENCH_NS_PREFIX))
        .collect();
    if !names.is_empty() {
        eprintln!(
            "[bench] deleting {} bench namespaces and their pods",
            names.len()
        );
    }
    let results: Vec<Result<()>> = futures::stream::iter(names.clone())
        .map(|ns| {
            let client = client.clone();
            let nsapi = nsapi.clone();
            async move {
                let pods: Api<Pod> = Api::namespaced(client, &ns);
                let _ = pods
                    .delete_collection(
                        &DeleteParams::default().grace_period(0),
                        &ListParams::default(),
                    )
                    .await;
                match nsapi.delete(&ns, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let t0 = Instant::now();
    loop {
        let left = nsapi
            .list_metadata(&ListParams::default().labels("dnspolicy.dev/bench=true"))
            .await?
            .items
            .len();
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("{left} bench namespaces still terminating after 10 min");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes
        .list_metadata(&ListParams::default().labels("dnspolicy.dev/bench=true"))
        .await?
        .items
    {
        if let Some(name) = n.metadata.name {
            let _ = nodes.delete(&name, &DeleteParams::default()).await;
        }
    }
    Ok(())
}
