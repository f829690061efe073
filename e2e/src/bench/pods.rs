//! Many pods, fast: kwok nodes (some publishing the tailnet suffix),
//! namespaces, pods of three DNS shapes created and deleted over the API,
//! and the clean-up; plus an operator's resident memory.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::env;

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

/// User plus system CPU time of `pid`, in seconds (/proc/<pid>/stat).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

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
