//! `e2e-cluster up|down|status|lookup|query`, and the daemons `up` starts
//! (`pod-runtime`, `dns-server`).

use anyhow::Result;
use clap::{Parser, Subcommand};
use dnspolicy_e2e::{Layout, UpOptions, cluster, dns, env, resolver};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Local dnspolicy test cluster: real control plane, kwok nodes, real CoreDNS")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the cluster (prints `export KUBECONFIG=...`).
    Up {
        /// CoreDNS image tag to deploy (a cached build must exist or be buildable).
        #[arg(long)]
        coredns_version: Option<String>,
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        #[arg(long, default_value_t = 2)]
        coredns_replicas: u32,
        /// Fail instead of building missing binaries.
        #[arg(long)]
        no_build: bool,
    },
    /// Stop everything and remove the state dir.
    Down,
    /// Component pids and the CoreDNS pods' addresses.
    Status,
    /// Print `export KUBECONFIG=...`.
    Env,
    /// Addresses (port 53) of the Ready CoreDNS pods, one per line.
    Addresses,
    /// Resolve NAME as a pod would (resolv.conf bind-mounted under unshare).
    Lookup {
        name: String,
        #[arg(long, value_enum, default_value = "glibc")]
        resolver: resolver::Resolver,
        /// Space-separated search list (default: a default-namespace pod on a tailnet node).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 5)]
        ndots: u32,
        /// CoreDNS address (default: first Ready CoreDNS pod).
        #[arg(long)]
        nameserver: Option<IpAddr>,
    },
    /// Send one query straight to a DNS server.
    Query {
        name: String,
        #[arg(long)]
        server: Option<IpAddr>,
        #[arg(long, default_value = "A")]
        qtype: String,
    },
    /// Start the real node (containerd, kubelet, kube-proxy in a netns) on the running cluster.
    NodeUp {
        /// kubelet reads the node resolv.conf through a systemd-resolved-style symlink.
        #[arg(long)]
        resolv_conf_symlink: bool,
    },
    /// Stop the real node and undo what it changed on the host.
    NodeDown,
    /// (daemon) forward TCP connections (the real node's way to the apiserver).
    TcpForward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
    },
    /// (daemon) kubelet stand-in for CoreDNS pods.
    PodRuntime {
        #[arg(long)]
        dir: PathBuf,
    },
    /// (daemon) table-driven DNS server / black hole.
    DnsServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        table: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "nxdomain")]
        default: dns::Action,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let layout = Layout::new(env::state_dir());
    match cli.cmd {
        Cmd::Up {
            coredns_version,
            nodes,
            coredns_replicas,
            no_build,
        } => {
            let opts = UpOptions {
                coredns_version: coredns_version.unwrap_or_else(env::coredns_kubeadm_version),
                nodes,
                coredns_replicas,
                build: !no_build,
            };
            let exe = std::env::current_exe()?;
            let line = cluster::up(&layout, &opts, &exe)?;
            println!("{line}");
        }
        Cmd::Down => cluster::down(&layout)?,
        Cmd::NodeUp {
            resolv_conf_symlink,
        } => {
            let opts = cluster::node::NodeOptions {
                resolv_conf: if resolv_conf_symlink {
                    cluster::node::ResolvConf::SystemdSymlink
                } else {
                    cluster::node::ResolvConf::Plain
                },
            };
            cluster::node::up(&layout, &opts, &std::env::current_exe()?)?;
        }
        Cmd::NodeDown => cluster::node::down(&layout)?,
        Cmd::TcpForward { listen, to } => dnspolicy_e2e::net::tcp_forward(listen, to)?,
        Cmd::Addresses => rt()?.block_on(async {
            let c = dnspolicy_e2e::Cluster::connect(Layout::new(env::state_dir())).await?;
            for a in c.coredns_addresses().await? {
                println!("{a}");
            }
            anyhow::Ok(())
        })?,
        Cmd::Env => println!("export KUBECONFIG={}", layout.kubeconfig().display()),
        Cmd::Status => {
            print!("{}", cluster::status(&layout));
            if cluster::is_running(&layout) {
                rt()?.block_on(async {
                    let c = dnspolicy_e2e::Cluster::connect(Layout::new(env::state_dir())).await?;
                    for p in c.coredns_pods().await? {
                        println!(
                            "coredns pod {:<32} {:<16} ready={} terminating={} image={} restarts={} {}",
                            p.name,
                            p.address.map(|a| a.to_string()).unwrap_or_default(),
                            p.ready,
                            p.terminating,
                            p.image,
                            p.restarts,
                            p.last_error
                        );
                    }
                    anyhow::Ok(())
                })?;
            }
        }
        Cmd::Lookup {
            name,
            resolver,
            search,
            ndots,
            nameserver,
        } => {
            rt()?.block_on(async {
                let search: Vec<String> = match search {
                    Some(s) => s.split_whitespace().map(String::from).collect(),
                    None => resolver::pod_search("default", &[env::NODE_SEARCH]),
                };
                let ns = match nameserver {
                    Some(n) => n,
                    None => first_coredns().await?,
                };
                let s: Vec<&str> = search.iter().map(String::as_str).collect();
                let spec = resolver::LookupSpec::new(resolver, &name, ns, &s, ndots);
                let l = resolver::lookup(&spec).await?;
                println!(
                    "{:?} {name}: {} in {:.3}s addrs={:?}\n{}",
                    resolver,
                    if l.ok { "OK" } else { "FAILED" },
                    l.elapsed.as_secs_f64(),
                    l.addrs,
                    l.output.trim_end()
                );
                if !l.ok {
                    std::process::exit(1);
                }
                anyhow::Ok(())
            })?;
        }
        Cmd::Query {
            name,
            server,
            qtype,
        } => {
            rt()?.block_on(async {
                let server = match server {
                    Some(s) => s,
                    None => first_coredns().await?,
                };
                let t = if qtype.eq_ignore_ascii_case("AAAA") {
                    dns::TYPE_AAAA
                } else {
                    dns::TYPE_A
                };
                let r = dns::query(
                    SocketAddr::new(server, 53),
                    &name,
                    t,
                    Duration::from_secs(6),
                )
                .await?;
                println!("{r:?}");
                anyhow::Ok(())
            })?;
        }
        Cmd::PodRuntime { dir } => rt()?.block_on(dnspolicy_e2e::runtime::run(dir))?,
        Cmd::DnsServer {
            listen,
            log,
            table,
            default,
        } => rt()?.block_on(dns::serve(dns::ServerConfig {
            listen,
            log,
            table,
            default,
        }))?,
    }
    Ok(())
}

/// The first Ready CoreDNS pod of the running cluster.
async fn first_coredns() -> Result<IpAddr> {
    let c = dnspolicy_e2e::Cluster::connect(Layout::new(env::state_dir())).await?;
    Ok(IpAddr::V4(c.first_coredns().await?))
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
