//! The `dnspolicy-operator` command line: `run` (the controller) and
//! `node-agent`, the two things the image runs in the cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::controller::{self, Settings};
use crate::metrics::Metrics;
use dnspolicy_dns::version::CoreDnsVersion;

#[derive(Debug, Parser)]
#[command(
    name = "dnspolicy-operator",
    version,
    about = "The dnspolicy controller and node agent (the user's tools are in `dnspolicy`)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Publish this node's host search list on its Node.
    NodeAgent(NodeAgentArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where /metrics listens. Loopback unless told. The shipped manifests
    /// and chart bind the pod's address on 8443 with --metrics-auth=kubernetes,
    /// which the ServiceMonitor scrapes (docs/design.md, section 7).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub metrics_addr: SocketAddr,
    /// Who may read /metrics. `kubernetes`: HTTPS, and every request needs
    /// `Authorization: Bearer <token>` that the API server authenticates
    /// (TokenReview) and allows `get` on /metrics (SubjectAccessReview; the
    /// ClusterRole dnspolicy-metrics-reader grants it). `none`: plain HTTP,
    /// anyone who reaches the address (local runs).
    #[arg(long, value_enum, default_value_t = MetricsAuth::None)]
    pub metrics_auth: MetricsAuth,
    /// With --metrics-auth=kubernetes: a directory holding tls.crt and tls.key
    /// (a mounted kubernetes.io/tls Secret, e.g. cert-manager's), re-read when
    /// they change. Without it a self-signed certificate is made at start.
    #[arg(long)]
    pub metrics_cert_dir: Option<PathBuf>,
    /// Where /healthz and /readyz listen: plain HTTP without authentication,
    /// for the kubelet's probes. The shipped manifests and chart bind 0.0.0.0:8081.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub health_addr: SocketAddr,
    /// How long new CoreDNS pods may take to become available before the last good Corefile is put back,
    /// plus 10 s per CoreDNS replica (a Deployment replaces its pods a few at a time).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub rollout_deadline: Duration,
    /// How long after writing a NodeLocal DNSCache ConfigMap every node's
    /// cache is taken to run it (kubelet's ConfigMap sync, node-cache's copy,
    /// the reload plugin's interval); the policy is Ready only after it.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub nodelocal_reload_window: Duration,
    /// CoreDNS version to render for, overriding the Deployment's image tag
    /// (for mirrored images with their own tags, or digests).
    #[arg(long)]
    pub coredns_version: Option<String>,
    /// Namespace whose CoreDNS ConfigMaps and Deployments are watched for drift.
    #[arg(long, default_value = "kube-system")]
    pub watch_namespace: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    #[arg(long, default_value = "dnspolicy")]
    pub lease_name: String,
    /// This replica's identity in the Lease; defaults to the pod (host) name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAuth {
    /// HTTPS; a bearer token checked with TokenReview and SubjectAccessReview.
    Kubernetes,
    /// Plain HTTP without authentication.
    None,
}

#[derive(Debug, clap::Args)]
pub struct NodeAgentArgs {
    /// This node's name (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The resolv.conf kubelet reads (its --resolv-conf), as mounted into the agent.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug)]
pub enum CliError {
    /// Bad input: exit 2.
    Invalid(String),
    /// Anything else: exit 1.
    Failed(String),
}

// clap value parsers report a String, which clap prefixes with the flag.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration like 60s, 2m or 500ms")),
    }
}

pub fn main(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => runtime()?.block_on(run(args)),
        Command::NodeAgent(args) => runtime()?.block_on(node_agent(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

async fn run(args: RunArgs) -> Result<(), CliError> {
    crate::telemetry::init(args.log_json);
    let coredns_version = args
        .coredns_version
        .as_deref()
        .map(CoreDnsVersion::parse)
        .transpose()
        .map_err(|e| CliError::Invalid(format!("--coredns-version: {e}")))?;
    let client = client().await?;
    let metrics = Arc::new(Metrics::default());
    let servers = serve_endpoints(&args, client.clone(), metrics.clone()).await?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("dnspolicy-{}", std::process::id()));
    let leases = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot set up leader election on Lease {}/{}: {e}",
                args.lease_namespace, args.lease_name
            ))
        })?;
    metrics.ready.store(true, Ordering::Relaxed);
    let (mut leading, lease_task) = leases.watch().await;
    tracing::info!(identity, lease = %args.lease_name, "waiting for leadership");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err(CliError::Failed("leader election stopped".into()));
            },
            _ = &mut shutdown => return Ok(()),
        }
    }
    tracing::info!(identity, "leading; starting the controller");
    let settings = Settings {
        rollout_deadline: args.rollout_deadline,
        coredns_version,
        watch_namespace: args.watch_namespace.clone(),
        nodelocal_reload_window: args.nodelocal_reload_window,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(controller::run(client, settings, metrics, async move {
        let _ = stop_rx.await;
    }));
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        // The controller never ends on its own; if it does (a panic), exit so
        // the pod restarts rather than hold the Lease doing nothing.
        ended = &mut controller => {
            Err(CliError::Failed(format!("the controller stopped unexpectedly: {ended:?}")))
        }
        _ = async { while leading.changed().await.is_ok() { if !*leading.borrow() { break; } } } => {
            Err(CliError::Failed("lost leadership; exiting so a fresh start can take over".into()))
        }
    };
    let _ = stop_tx.send(());
    if !controller.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    }
    // Dropping the channel makes the lease manager release the Lease.
    drop(leading);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    for server in servers {
        server.abort();
    }
    tracing::info!("stopped");
    outcome
}

/// Binds `--health-addr` and `--metrics-addr` (a taken port or a bad
/// certificate fails the start, naming the flag) and serves both.
async fn serve_endpoints(
    args: &RunArgs,
    client: kube::Client,
    metrics: Arc<Metrics>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, CliError> {
    use crate::metrics::{health_router, metrics_router, serve_plain};
    let bind = |flag: &'static str, addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            CliError::Invalid(format!(
                "{flag} {addr}: cannot listen: {e}; choose a free address and port"
            ))
        })
    };
    if args.metrics_addr == args.health_addr {
        return Err(CliError::Invalid(format!(
            "--metrics-addr and --health-addr are both {}: give /healthz its own port (the manifests use 8081)",
            args.metrics_addr
        )));
    }
    let health = bind("--health-addr", args.health_addr).await?;
    let metrics_listener = bind("--metrics-addr", args.metrics_addr).await?;
    let mut servers = vec![tokio::spawn(log_end(
        "--health-addr",
        serve_plain(health, health_router(metrics.clone())),
    ))];
    match args.metrics_auth {
        MetricsAuth::None => {
            if args.metrics_cert_dir.is_some() {
                return Err(CliError::Invalid(
                    "--metrics-cert-dir needs --metrics-auth=kubernetes (with none, /metrics is plain HTTP)".into(),
                ));
            }
            if !args.metrics_addr.ip().is_loopback() {
                tracing::warn!(
                    addr = %args.metrics_addr,
                    "/metrics answers anyone on this address without authentication; --metrics-auth=kubernetes protects it"
                );
            }
            servers.push(tokio::spawn(log_end(
                "--metrics-addr",
                serve_plain(metrics_listener, metrics_router(metrics, None)),
            )));
        }
        MetricsAuth::Kubernetes => {
            use crate::metrics_tls::{self, CertSource};
            let source = match &args.metrics_cert_dir {
                Some(dir) => CertSource::Dir(dir.clone()),
                None => CertSource::SelfSigned,
            };
            let acceptor =
                metrics_tls::acceptor(&source).map_err(|e| CliError::Invalid(e.to_string()))?;
            let access = Arc::new(crate::metrics_access::MetricsAccess::new(client));
            let app = metrics_router(metrics, Some(access));
            servers.push(tokio::spawn(metrics_tls::serve(
                metrics_listener,
                acceptor,
                app,
            )));
        }
    }
    tracing::info!(
        metrics = %args.metrics_addr,
        auth = ?args.metrics_auth,
        health = %args.health_addr,
        "serving /metrics and /healthz, /readyz"
    );
    Ok(servers)
}

async fn log_end(flag: &'static str, served: impl Future<Output = std::io::Result<()>>) {
    if let Err(e) = served.await {
        tracing::error!(flag, error = %e, "endpoint server stopped");
    }
}

/// A client as every dnspolicy binary makes one (`dnspolicy_crd::client`).
pub async fn client() -> Result<kube::Client, CliError> {
    dnspolicy_crd::client::connect()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn node_agent(args: NodeAgentArgs) -> Result<(), CliError> {
    crate::telemetry::init(false);
    let client = client().await?;
    tokio::select! {
        _ = crate::node_agent::run(client, args.node_name, args.resolv_conf, args.interval) => {},
        _ = shutdown_signal() => {},
    }
    Ok(())
}
