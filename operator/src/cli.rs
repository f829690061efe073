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
    /// Where /metrics, /healthz and /readyz listen. Loopback unless told:
    /// the endpoints answer without authentication. The shipped manifests
    /// and chart bind the pod's address, which the kubelet's probes and the
    /// ServiceMonitor need (docs/design.md, section 7, says what is exposed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub metrics_addr: SocketAddr,
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
    let server = tokio::spawn(crate::metrics::serve(args.metrics_addr, metrics.clone()));
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
    server.abort();
    tracing::info!("stopped");
    outcome
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
