//! NodeLocal DNSCache on the harness's one node: the CoreDNS build linked with
//! node-cache's plugins only (`coredns-nodecache`, built by
//! `e2e/scripts/build-deps.sh coredns-nodecache`), run as a process that
//! reads its Corefile from a file the harness keeps in step with the
//! ConfigMap, as kubelet's ConfigMap volume and node-cache do:
//!
//! - node-cache's start-up substitution (k8s.io/dns app/configmap.go):
//!   `__PILLAR__CLUSTER__DNS__` -> the cluster DNS, `__PILLAR__UPSTREAM__SERVERS__`
//!   -> the node's upstream (the black hole, as in the node's resolv.conf),
//!   `__PILLAR__DNS__SERVER__` deleted;
//! - the node's addresses mapped to loopback ones: the link-local
//!   169.254.20.10 -> [`LINK_LOCAL`], the kube-dns Service IP -> [`INTERCEPTED`],
//!   `prometheus :9253` bound to [`LINK_LOCAL`] only;
//! - the cluster DNS Service is its endpoints: the Ready CoreDNS pods'
//!   addresses (the Service IP is never dialled here), rewritten when they
//!   change, as kube-proxy follows endpoints;
//! - `reload` becomes `reload 2s` (the plugin's minimum) so the cache loads
//!   an edit in seconds, not the half minute kubelet's sync plus the default
//!   interval take on a node. The ConfigMap itself is never touched.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::{Cluster, Layout, dns, env, files};

/// Stands in for the link-local 169.254.20.10.
pub const LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 56, 10);
/// Stands in for the kube-dns Service IP the cache intercepts.
pub const INTERCEPTED: Ipv4Addr = Ipv4Addr::new(127, 0, 56, 11);

/// The `coredns-nodecache` build of `version` (`v1.14.2`).
pub fn binary(version: &str) -> Result<PathBuf> {
    let path = env::cache_dir()
        .join("coredns-nodecache")
        .join(version)
        .join("coredns");
    ensure!(
        path.is_file(),
        "{} is missing: run `bash e2e/scripts/build-deps.sh coredns-nodecache`",
        path.display()
    );
    Ok(path)
}

/// What the cache runs for the ConfigMap's Corefile, with the cluster DNS
/// at `cluster_dns` (CoreDNS pods on port 53).
pub fn as_node_cache_runs_it(config_map: &str, cluster_dns: &[Ipv4Addr]) -> String {
    let endpoints: Vec<String> = cluster_dns.iter().map(|a| format!("{a}:53")).collect();
    let cluster_dns = if endpoints.is_empty() {
        // no CoreDNS pod Ready: a refused port, as an empty Service would
        "127.0.0.1:1".to_string()
    } else {
        endpoints.join(" ")
    };
    config_map
        .replace("__PILLAR__CLUSTER__DNS__", &cluster_dns)
        .replace(
            "__PILLAR__UPSTREAM__SERVERS__",
            &format!("{}:53", env::BLACKHOLE_IP),
        )
        .replace("__PILLAR__DNS__SERVER__", "")
        .replace("169.254.20.10", &LINK_LOCAL.to_string())
        .replace(env::DNS_SVC_IP, &INTERCEPTED.to_string())
        .replace("prometheus :9253", &format!("prometheus {LINK_LOCAL}:9253"))
        .replace("    reload\n", "    reload 2s\n")
}

/// A running cache; killed, and its sync stopped, on drop.
pub struct NodeCache {
    child: Child,
    sync: tokio::task::JoinHandle<()>,
    /// The Corefile the process reads.
    pub corefile: PathBuf,
    pub log: PathBuf,
}

impl NodeCache {
    /// Starts the cache on the Corefile of ConfigMap `kube-system/<config_map>`
    /// and keeps the file in step with it and with CoreDNS's pods.
    pub async fn start(c: &Cluster, config_map: &str, version: &str) -> Result<NodeCache> {
        let bin = binary(version)?;
        let dir = c.layout.dir.join("node-cache");
        std::fs::create_dir_all(&dir)?;
        let corefile = dir.join("Corefile");
        let log = dir.join("node-cache.log");
        let cms: Api<ConfigMap> = Api::namespaced(c.client(), "kube-system");
        let first = running_corefile(c, &cms, config_map).await?;
        files::write_atomic(&corefile, &first)?;
        let child = Command::new(&bin)
            .arg("-conf")
            .arg(&corefile)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(dir.join("node-cache.stderr"))?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let c2 = Cluster::connect(Layout::new(c.layout.dir.clone())).await?;
        let (name, file) = (config_map.to_string(), corefile.clone());
        let sync = tokio::spawn(async move {
            let mut last = first;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                // a failed read keeps the last file, as kubelet keeps the volume
                if let Ok(text) = running_corefile(&c2, &cms, &name).await
                    && text != last
                    && files::write_atomic(&file, &text).is_ok()
                {
                    last = text;
                }
            }
        });
        Ok(NodeCache {
            child,
            sync,
            corefile,
            log,
        })
    }

    /// Where pods reach it: the intercepted kube-dns Service IP.
    pub fn nameserver(&self) -> IpAddr {
        IpAddr::V4(INTERCEPTED)
    }

    /// Waits until the cache answers `name` (type A) with `ip`, one query
    /// every 200 ms, for at most `timeout`.
    pub async fn wait_answer(&self, name: &str, ip: IpAddr, timeout: Duration) -> Result<()> {
        let server = SocketAddr::new(self.nameserver(), 53);
        let t0 = std::time::Instant::now();
        loop {
            let reply = dns::query(server, name, dns::TYPE_A, Duration::from_secs(1)).await;
            match reply {
                Ok(r) if r.addrs == vec![ip] => return Ok(()),
                last if t0.elapsed() > timeout => {
                    anyhow::bail!(
                        "the node-local cache did not answer {name} with {ip} within {timeout:?}: last reply {last:?}; log:\n{}",
                        self.log_tail()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeCache {
    fn drop(&mut self) {
        self.sync.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn running_corefile(c: &Cluster, cms: &Api<ConfigMap>, name: &str) -> Result<String> {
    let cm = cms.get(name).await?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("Corefile"))
        .with_context(|| format!("ConfigMap kube-system/{name} has no Corefile"))?;
    let endpoints: Vec<Ipv4Addr> = c
        .coredns_pods()
        .await?
        .into_iter()
        .filter(|p| p.ready && !p.terminating)
        .filter_map(|p| p.address)
        .collect();
    Ok(as_node_cache_runs_it(text, &endpoints))
}
