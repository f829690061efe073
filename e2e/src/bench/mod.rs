//! `just bench` (`e2e-bench`): docs/design.md section 11's performance targets, measured on the
//! local real cluster in one run, printed as one table
//! (measure | figure | target | ratio). Never part of `just test`.
//!
//! `--quick` uses small counts and few iterations (a few minutes); the
//! default is the full run (5 idle minutes, 10k, 50k and 150k pods).

mod apply_latency;
mod churn;
mod idle_writes;
mod lookups;
pub mod pods;
mod scale;
pub mod table;
pub mod throughput;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kube::Client;

pub use table::{Table, Verdict};

use crate::operator::{self as op, Launch, Operator};
use crate::{Cluster, Flavor, env, files, resolver};

#[derive(Parser, Debug)]
#[command(about = "dnspolicy benchmarks against docs/design.md section 11 (one table)")]
pub struct Cli {
    /// Smaller counts and fewer iterations, so the whole bench takes a few minutes.
    #[arg(long)]
    quick: bool,
    /// Idle window (seconds) over which the operator's API writes are counted
    /// [default: 300; with --quick: 30].
    #[arg(long)]
    idle_secs: Option<u64>,
    /// Run only these parts (comma-separated): lookups, apply, idle, qps, scale.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write the table, with the date and the machine, to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure target/debug/dnspolicy-operator instead of the release build.
    #[arg(long)]
    debug_operator: bool,
    /// Do not run `cargo build --release` for the operator and e2e-cluster first.
    #[arg(long)]
    no_build: bool,
    /// KEY=VALUE added to the operator's environment (repeatable), e.g.
    /// MALLOC_ARENA_MAX=2 to see what the allocator does to RSS.
    #[arg(long = "operator-env", value_parser = parse_kv)]
    operator_env: Vec<(String, String)>,
    /// Pod counts of the scale part, comma-separated
    /// [default: 10000,50000,150000; with --quick: 1000,2000].
    #[arg(long, value_delimiter = ',')]
    scales: Vec<usize>,
    /// Also measure this operator binary at the largest scale (first status,
    /// RSS, CPU idle and under steady churn), e.g. a build of main, so the
    /// table shows before and after on the same pods.
    #[arg(long)]
    baseline_operator: Option<PathBuf>,
}

struct Params {
    before_n: usize,
    after_n: usize,
    apply_n: usize,
    qps_rounds: usize,
    qps_secs: u64,
    idle: Duration,
    namespaces: usize,
    scales: Vec<usize>,
    bursts: usize,
    burst_each: usize,
    /// Steady churn: this many creates and as many deletes per second...
    steady_per_sec: usize,
    /// ...for this long.
    steady: Duration,
    concurrency: usize,
}

impl Params {
    fn new(cli: &Cli) -> Params {
        let mut p = Params::defaults(cli);
        if !cli.scales.is_empty() {
            p.scales = cli.scales.clone();
            p.scales.sort_unstable();
        }
        p
    }

    fn defaults(cli: &Cli) -> Params {
        let idle = Duration::from_secs(cli.idle_secs.unwrap_or(if cli.quick { 30 } else { 300 }));
        if cli.quick {
            Params {
                before_n: 3,
                after_n: 10,
                apply_n: 3,
                qps_rounds: 3,
                qps_secs: 3,
                idle,
                namespaces: 100,
                scales: vec![1_000, 2_000],
                bursts: 2,
                burst_each: 100,
                steady_per_sec: 10,
                steady: Duration::from_secs(10),
                concurrency: 32,
            }
        } else {
            Params {
                before_n: 20,
                after_n: 20,
                apply_n: 10,
                qps_rounds: 5,
                qps_secs: 8,
                idle,
                namespaces: 1_000,
                scales: vec![10_000, 50_000, 150_000],
                bursts: 3,
                burst_each: 500,
                steady_per_sec: 10,
                steady: Duration::from_secs(60),
                concurrency: 48,
            }
        }
    }
}

/// The app the seed's lookup goes to: a ClusterIP Service in its namespace.
const APP_NS: &str = "bench-video";
const NAME: &str = "frigate.bench-video.svc.cluster.local";
const POLICY: &str = "tailnet";
/// The answering upstream (127.0.54.2) plays the outside world and, through
/// the policy's forwardTo, the tailnet's MagicDNS.
const UPSTREAM_RECORDS: &str = "\n# e2e-bench (removed when it ends)\napi.github.com A 140.82.112.5\napi.github.com AAAA 2606:50c0:8000::154\nregistry.k8s.io A 34.96.108.209\nregistry.k8s.io AAAA 2600:1901:0:bbc4::\nmyhost.tailb45a71.ts.net A 100.64.0.7\n";

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", chrono_now(), msg.as_ref());
}

fn chrono_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// The whole bench; the process exit code.
pub async fn main(cli: Cli) -> i32 {
    let p = Params::new(&cli);
    let t_all = Instant::now();
    let started_at = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let mut table = Table::default();
    let mut b = match Bench::setup(&cli, p).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let mut result = b.run(&cli, &mut table).await;
    if result.is_err() && b.cluster_replaced() {
        result = result.context(
            "the cluster was replaced while the bench held the test lock (another session ran `e2e-cluster down`/`up`, which does not take that lock)",
        );
    }
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
        table.note(format!("the bench stopped early: {e:#}"));
    }
    if let Err(e) = b.teardown().await {
        eprintln!("teardown: {e:#}");
        table.note(format!("teardown failed: {e:#}"));
    }
    let took = t_all.elapsed();
    table.note(format!(
        "whole bench: {:.1} min{}; operator binary: {}{}",
        took.as_secs_f64() / 60.0,
        if cli.quick { " (--quick)" } else { "" },
        b.operator_bin.display(),
        if cli.operator_env.is_empty() {
            String::new()
        } else {
            format!(" with {:?}", cli.operator_env)
        }
    ));
    let md = table.markdown();
    println!("{md}");
    if let Some(out) = &cli.out {
        let header = format!(
            "# dnspolicy benchmarks (`just bench{}`)\n\n{}\n\n",
            if cli.quick { " -- --quick" } else { "" },
            machine_line(&started_at)
        );
        if let Err(e) = std::fs::write(out, format!("{header}{md}")) {
            eprintln!("write {}: {e}", out.display());
        }
    }
    i32::from(result.is_err())
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s}: want KEY=VALUE"))
}

fn sh(c: &str) -> String {
    Command::new("bash")
        .args(["-c", c])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine_line(started_at: &str) -> String {
    format!(
        "Run started {started_at} on {} ({} cores, {} RAM, kernel {}); Kubernetes {}, CoreDNS {}, etcd {}, kwok {}.",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
        sh("nproc"),
        sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        sh("uname -r"),
        env::K8S_VERSION,
        env::coredns_kubeadm_version(),
        env::ETCD_VERSION,
        env::KWOK_VERSION
    )
}

struct Bench {
    p: Params,
    c: Cluster,
    client: Client,
    _lock: files::FileLock,
    operator_bin: PathBuf,
    stock: String,
    upstream_zone: Option<String>,
    scale_started: bool,
    launch: Launch,
    /// `--baseline-operator`, measured too at the largest scale.
    baseline: Option<Launch>,
    /// The admin token of the cluster the bench started on: a new one means
    /// someone ran `down`/`up` under it.
    token: String,
}

impl Bench {
    async fn setup(cli: &Cli, p: Params) -> Result<Bench> {
        if !cli.no_build {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let profile: &[&str] = if cli.debug_operator {
                &[]
            } else {
                &["--release"]
            };
            log("cargo build (operator and e2e-cluster)");
            let st = Command::new(&cargo)
                .arg("build")
                .args(profile)
                .args([
                    "-q",
                    "-p",
                    "dnspolicy-operator",
                    "-p",
                    "dnspolicy-e2e",
                    "--bin",
                    "dnspolicy-operator",
                    "--bin",
                    "e2e-cluster",
                ])
                .current_dir(env::repo_root())
                .status()
                .context("cargo build")?;
            if !st.success() {
                bail!("cargo build failed");
            }
        }
        let operator_bin = op::operator_bin(!cli.debug_operator)?;
        throughput::ensure_dnsperf()?;
        let c = Cluster::ensure().await?;
        log("waiting for the cluster lock (other tests may hold it)");
        let lock = c.exclusive()?;
        log("lock held");
        // Reconnect: the cluster may have been replaced while we waited.
        let c = Cluster::ensure().await?;
        let client = c.client();
        let token = std::fs::read_to_string(c.layout.token()).unwrap_or_default();
        // Leftovers of an interrupted run.
        pods::cleanup_scale(&client).await?;
        log("fresh CoreDNS (kubeadm flavor), no policies");
        let stock = op::fresh(&c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await?;
        let app = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NS}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: frigate, namespace: {APP_NS}}}\nspec: {{selector: {{app: frigate}}, ports: [{{port: 5000}}]}}\n"
        );
        c.apply_as("e2e-bench", &app)?;
        let zone_path = c.upstream_table();
        let upstream_zone = std::fs::read_to_string(&zone_path).ok();
        std::fs::write(
            &zone_path,
            format!(
                "{}{UPSTREAM_RECORDS}",
                upstream_zone.clone().unwrap_or_default()
            ),
        )?;
        Ok(Bench {
            p,
            c,
            client,
            _lock: lock,
            operator_bin: operator_bin.clone(),
            stock,
            upstream_zone,
            scale_started: false,
            launch: Launch {
                bin: Some(operator_bin),
                envs: cli.operator_env.clone(),
                kubeconfig: None,
            },
            baseline: cli.baseline_operator.as_ref().map(|bin| Launch {
                bin: Some(bin.clone()),
                envs: cli.operator_env.clone(),
                kubeconfig: None,
            }),
            token,
        })
    }

    fn cluster_replaced(&self) -> bool {
        std::fs::read_to_string(self.c.layout.token()).unwrap_or_default() != self.token
    }

    async fn teardown(&mut self) -> Result<()> {
        if self.cluster_replaced() {
            bail!("the cluster was replaced during the bench; nothing to tear down");
        }
        log("teardown");
        let mut errs = Vec::new();
        if self.scale_started
            && let Err(e) = pods::cleanup_scale(&self.client).await
        {
            errs.push(format!("{e:#}"));
        }
        if let Some(z) = &self.upstream_zone {
            let _ = std::fs::write(self.c.upstream_table(), z);
        }
        if let Err(e) = op::fresh(&self.c, Flavor::Kubeadm, &env::coredns_kubeadm_version()).await {
            errs.push(format!("{e:#}"));
        }
        let _ = self.c.kubectl(&[
            "delete",
            "namespace",
            APP_NS,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("{}", errs.join("; "))
        }
    }

    async fn run(&mut self, cli: &Cli, t: &mut Table) -> Result<()> {
        let want = |part: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == part);
        let search_owned = resolver::pod_search("workflow-engine", &[env::NODE_SEARCH]);
        let search: Vec<&str> = search_owned.iter().map(String::as_str).collect();

        // 1. Lookups with the stock Corefile and the black-holed upstream.
        if want("lookups") {
            self.lookups(t, "before", self.p.before_n, &search).await?;
        }

        // 2. The operator; apply -> ConfigMap written / Ready with CoreDNS rolled.
        let mut operator = Operator::start_with(&self.c, "bench", &[], &self.launch)?;
        let a = policy_a();
        let b_spec = policy_b();
        if want("apply") {
            self.apply_iterations(t, &mut operator, &a, &b_spec).await?;
        } else {
            op::apply(&self.c, &a)?;
            self.wait_ready_rolled(&mut operator, Duration::from_secs(60))
                .await?;
        }
        let managed = op::corefile(&self.c)?;

        // 3. An idle window after converging; lookups and dnsperf run inside
        //    it (they make no API writes).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mark = op::audit_mark(&self.c)?;
        let idle_start = Instant::now();
        if want("lookups") {
            self.lookups(t, "after", self.p.after_n, &search).await?;
        }
        if want("qps") {
            self.qps(t, &managed).await?;
        }
        if want("idle") {
            let traffic = want("lookups") || want("qps");
            self.idle_writes(t, &mut operator, mark, idle_start, traffic)
                .await?;
        }
        operator.stop()?;

        // 4. Scale: memory and time to first status, then churn.
        if want("scale") {
            self.scale(t).await?;
        }
        Ok(())
    }
}

fn human(n: usize) -> String {
    if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The Tailscale example, its MagicDNS played by the answering upstream.
fn policy_a() -> String {
    op::tailscale_forwarding_to(&env::UPSTREAM_IP.to_string())
}

fn policy_b() -> String {
    policy_a().replace("action: Rewrite", "action: NXDomain")
}
