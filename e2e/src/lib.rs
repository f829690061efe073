//! dnspolicy end-to-end harness: a real local cluster (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok), real CoreDNS processes for
//! the `kube-system/coredns` Deployment, and real resolvers (glibc, musl).
//!
//! Tests call [`Cluster::ensure`]: it reuses a cluster started by `just up`
//! (same state dir) or starts one, which then stays up for the next test
//! binary; `just down` (or `e2e-cluster down`) stops it.

pub mod audit;
pub mod bench;
pub mod cluster;
pub mod dns;
pub mod env;
pub mod files;
pub mod gitops;
pub mod mountns;
pub mod net;
pub mod nodecache;
pub mod operator;
pub mod pki;
pub mod process;
pub mod resolver;
pub mod runtime;
pub mod seed_pods;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use cluster::{Flavor, Layout, UpOptions};
pub use dns::{LoggedQuery, QueryLog};
pub use resolver::{Lookup, LookupSpec, Resolver};

/// A running local cluster.
pub struct Cluster {
    pub layout: Layout,
    client: Client,
}

/// One CoreDNS pod as the API and the pod runtime see it.
#[derive(Clone, Debug)]
pub struct CorednsPod {
    pub name: String,
    /// Loopback address its CoreDNS process listens on (port 53).
    pub address: Option<Ipv4Addr>,
    /// The pod's Ready condition (from the API).
    pub ready: bool,
    pub terminating: bool,
    pub image: String,
    pub pod_template_hash: String,
    pub restarts: u32,
    pub last_error: String,
}

impl Cluster {
    /// Use the cluster in the default state dir, starting it (and building
    /// missing binaries) if none is up. Never skips: errors if anything is missing.
    pub async fn ensure() -> Result<Cluster> {
        Self::ensure_with(&UpOptions::default()).await
    }

    pub async fn ensure_with(opts: &UpOptions) -> Result<Cluster> {
        let layout = Layout::new(env::state_dir());
        if !cluster::is_running(&layout) {
            let bin = process::e2e_bin()?;
            let o = opts.clone();
            let st = tokio::process::Command::new(&bin)
                .args([
                    "up",
                    "--coredns-version",
                    &o.coredns_version,
                    "--nodes",
                    &o.nodes.to_string(),
                ])
                .env("DNSPOLICY_E2E_DIR", &layout.dir)
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .with_context(|| format!("run {} up", bin.display()))?;
            if !st.success() {
                bail!("e2e-cluster up failed");
            }
        }
        let dead = cluster::dead_components(&layout);
        if !dead.is_empty() {
            bail!(
                "cluster components exited: {dead:?} (logs in {}); run `e2e-cluster down`",
                layout.logs().display()
            );
        }
        Self::connect(layout).await
    }

    /// Connect to an already running cluster.
    pub async fn connect(layout: Layout) -> Result<Cluster> {
        let client = runtime::client_for(&layout.kubeconfig()).await?;
        Ok(Cluster { layout, client })
    }

    /// Start the real node (containerd, kubelet, kube-proxy; cluster/node.rs)
    /// unless it runs. On demand rather than in every `up`: it adds about a
    /// minute, and only the real-node suites use it. Pods for it tolerate
    /// [`cluster::node::TOLERATION`]; stop it with [`Cluster::stop_node`] so
    /// later suites find the cluster as `up` left it.
    pub fn ensure_node(&self, opts: &cluster::node::NodeOptions) -> Result<()> {
        cluster::node::up(&self.layout, opts, &process::e2e_bin()?)
    }

    /// Stop the real node; everything it changed on the host is undone.
    pub fn stop_node(&self) -> Result<()> {
        cluster::node::down(&self.layout)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig()
    }

    /// Run the harness's kubectl (v1.36.3) against this cluster; Err on non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        cluster::kubectl(&self.layout, args, None)
    }

    /// kubectl with stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        cluster::kubectl(&self.layout, args, Some(stdin))
    }

    /// Server-side apply of `yaml` as `field_manager`, taking over fields
    /// another manager owns (the harness's objects are its own).
    pub fn apply_as(&self, field_manager: &str, yaml: &str) -> Result<()> {
        self.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &format!("--field-manager={field_manager}"),
                "-f",
                "-",
            ],
            yaml,
        )?;
        Ok(())
    }

    /// ClusterIP of Service `ns/name`.
    pub fn service_ip(&self, ns: &str, name: &str) -> Result<IpAddr> {
        let ip = self.kubectl(&[
            "-n",
            ns,
            "get",
            "service",
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        ip.trim()
            .parse()
            .with_context(|| format!("clusterIP of {ns}/{name}: {ip:?}"))
    }

    /// The seed's app in `ns`: Deployment `frigate` of `replicas` pods behind
    /// Service `frigate`, applied as `field_manager` and Available; returns
    /// the Service's ClusterIP.
    pub fn deploy_frigate(&self, ns: &str, replicas: u32, field_manager: &str) -> Result<IpAddr> {
        let app = format!(
            r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: frigate, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: frigate}}}}
  template:
    metadata: {{labels: {{app: frigate}}}}
    spec:
      containers: [{{name: frigate, image: "ghcr.io/blakeblackshear/frigate:stable"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: frigate, namespace: {ns}}}
spec:
  selector: {{app: frigate}}
  ports: [{{port: 5000}}]
"#
        );
        self.apply_as(field_manager, &app)?;
        self.kubectl(&[
            "-n",
            ns,
            "wait",
            "--for=condition=Available",
            "deployment/frigate",
            "--timeout=60s",
        ])?;
        self.service_ip(ns, "frigate")
    }

    pub async fn coredns_pods(&self) -> Result<Vec<CorednsPod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
        let list = api
            .list(&ListParams::default().labels("k8s-app=kube-dns"))
            .await?;
        Ok(list
            .items
            .into_iter()
            .map(|p| {
                let ann = p.metadata.annotations.clone().unwrap_or_default();
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                CorednsPod {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    address: ann.get(env::ANN_ADDRESS).and_then(|a| a.parse().ok()),
                    ready,
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    image: p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                    pod_template_hash: p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("pod-template-hash").cloned())
                        .unwrap_or_default(),
                    restarts: ann
                        .get(env::ANN_RESTARTS)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                    last_error: ann.get(env::ANN_LAST_ERROR).cloned().unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The pod-template hash of every CoreDNS pod (which rollout it is of).
    pub async fn coredns_template_hashes(&self) -> Result<Vec<String>> {
        let pods = self.coredns_pods().await?;
        Ok(pods.into_iter().map(|p| p.pod_template_hash).collect())
    }

    /// Addresses (port 53) of the CoreDNS pods that are Ready and not terminating:
    /// what the kube-dns Service would route to.
    pub async fn coredns_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .coredns_pods()
            .await?
            .into_iter()
            .filter(|p| p.ready && !p.terminating)
            .filter_map(|p| p.address)
            .collect())
    }

    /// The pid of a CoreDNS pod's process under the pod runtime, while one runs.
    pub fn coredns_pid(&self, pod: &str) -> Option<i32> {
        let dir = self.layout.pods().join(format!("kube-system_{pod}"));
        process::read_pid(&dir.join("pid")).filter(|p| process::pid_alive(*p))
    }

    /// Wait for `kubectl rollout status deployment/coredns` and return the serving addresses.
    pub async fn wait_coredns_rolled_out(&self, timeout: Duration) -> Result<Vec<Ipv4Addr>> {
        let t = format!("--timeout={}s", timeout.as_secs().max(1));
        self.kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            &t,
        ])?;
        let t0 = Instant::now();
        loop {
            let pods = self.coredns_pods().await?;
            let addrs: Vec<Ipv4Addr> = pods
                .iter()
                .filter(|p| p.ready && !p.terminating)
                .filter_map(|p| p.address)
                .collect();
            if !addrs.is_empty() && pods.iter().all(|p| p.ready && !p.terminating) {
                return Ok(addrs);
            }
            if t0.elapsed() > timeout {
                bail!("CoreDNS pods not settled: {pods:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The first Ready CoreDNS pod's address.
    pub async fn first_coredns(&self) -> Result<Ipv4Addr> {
        let a = self.coredns_addresses().await?;
        a.first().copied().context("no Ready CoreDNS pod")
    }

    /// Look `name` up as a pod with this search list and ndots would, through
    /// the first Ready CoreDNS pod.
    pub async fn lookup(
        &self,
        resolver: Resolver,
        name: &str,
        search: &[&str],
        ndots: u32,
    ) -> Result<Lookup> {
        let ns = IpAddr::V4(self.first_coredns().await?);
        resolver::lookup(&LookupSpec::new(resolver, name, ns, search, ndots)).await
    }

    /// Full control (nameserver, timeout/attempts options, deadline).
    pub async fn lookup_with(&self, spec: &LookupSpec) -> Result<Lookup> {
        resolver::lookup(spec).await
    }

    /// One direct UDP query to a CoreDNS address (no resolver logic).
    pub async fn query(
        &self,
        server: Ipv4Addr,
        name: &str,
        qtype: u16,
        timeout: Duration,
    ) -> Result<dns::Reply> {
        dns::query(SocketAddr::new(server.into(), 53), name, qtype, timeout).await
    }

    /// A records of `name` straight from CoreDNS at `server` (5 s timeout).
    pub async fn query_a(&self, server: Ipv4Addr, name: &str) -> Result<dns::Reply> {
        self.query(server, name, dns::TYPE_A, Duration::from_secs(5))
            .await
    }

    /// Query log of the black-hole upstream (CoreDNS's `forward . /etc/resolv.conf`).
    pub fn blackhole(&self) -> QueryLog {
        QueryLog::new(self.layout.blackhole_log())
    }

    /// Query log of the answering upstream at 127.0.54.2:53.
    pub fn upstream(&self) -> QueryLog {
        QueryLog::new(self.layout.upstream_log())
    }

    /// Records file of the answering upstream (re-read on change; format in dns.rs).
    pub fn upstream_table(&self) -> PathBuf {
        self.layout.upstream_table()
    }

    /// kube-apiserver audit log file (JSON lines, level Metadata, every request).
    pub fn audit_log(&self) -> PathBuf {
        self.layout.audit_log()
    }

    /// Parsed audit log: `mark()`, then `writes_by_user` / `writes_by_field_manager`.
    pub fn audit(&self) -> audit::AuditLog {
        audit::AuditLog {
            path: self.layout.audit_log(),
        }
    }

    /// Serialise tests that change cluster-wide state (CoreDNS, its ConfigMap),
    /// across threads and processes. Hold the guard for the whole test.
    pub fn exclusive(&self) -> Result<files::FileLock> {
        let mut p = self.layout.dir.clone().into_os_string();
        p.push(".test.lock");
        files::FileLock::acquire(&PathBuf::from(p))
    }

    /// Adds a kwok-managed node.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        self.kubectl_stdin(&["apply", "-f", "-"], &cluster::node_manifest(name, labels))?;
        Ok(())
    }

    /// Kills kube-apiserver and starts it again with the same command line,
    /// as a crash and restart would; returns once it serves again.
    pub fn restart_apiserver(&self) -> Result<Duration> {
        cluster::restart_apiserver(&self.layout)
    }

    /// `kubectl rollout restart deployment/coredns` (returns at once).
    pub fn restart_coredns(&self) -> Result<()> {
        self.kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "restart",
            "deployment/coredns",
        ])?;
        Ok(())
    }

    /// Replace the CoreDNS Corefile (ConfigMap key `Corefile`) with kubectl.
    pub fn set_corefile(&self, corefile: &str) -> Result<()> {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile}
        });
        self.apply_as("e2e-test", &cm.to_string())
    }

    /// The Corefile the cluster was started with for `coredns_version`.
    pub fn stock_corefile(coredns_version: &str) -> Result<String> {
        cluster::stock_corefile(coredns_version)
    }

    /// (Re)install CoreDNS as `flavor` installs it, running `coredns_version`
    /// (server-side apply as `e2e-bootstrap`, so switching flavors drops the
    /// other's fields), restart it and wait for the rollout.
    pub async fn install_coredns(
        &self,
        flavor: cluster::Flavor,
        coredns_version: &str,
    ) -> Result<Vec<Ipv4Addr>> {
        let m = cluster::coredns_flavor_manifest(flavor, coredns_version, 2)?;
        self.apply_as("e2e-bootstrap", &m)?;
        self.restart_coredns()?;
        self.wait_coredns_rolled_out(Duration::from_secs(120)).await
    }

    /// Start an extra answering DNS server (a tailnet resolver, ...) on a loopback
    /// address; the process is killed when the handle drops.
    pub fn start_dns_server(
        &self,
        listen: SocketAddr,
        table: &str,
        default: dns::Action,
    ) -> Result<DnsServer> {
        let dir = self
            .layout
            .dir
            .join("dns-servers")
            .join(listen.to_string().replace(':', "_"));
        std::fs::create_dir_all(&dir)?;
        let t = dir.join("zone");
        std::fs::write(&t, table)?;
        let log = dir.join("queries.log");
        let _ = std::fs::remove_file(&log);
        let action = format!("{default:?}").to_lowercase();
        let child = std::process::Command::new(process::e2e_bin()?)
            .args([
                "dns-server",
                &format!("--listen={listen}"),
                &format!("--log={}", log.display()),
                &format!("--table={}", t.display()),
                &format!("--default={action}"),
            ])
            .stdin(std::process::Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while !net::udp_port_in_use(listen) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(DnsServer {
            child,
            log: QueryLog::new(log),
            table: t,
            listen,
        })
    }
}

/// A DNS server process started by a test; killed on drop.
pub struct DnsServer {
    child: std::process::Child,
    pub log: QueryLog,
    pub table: PathBuf,
    pub listen: SocketAddr,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
