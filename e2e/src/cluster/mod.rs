//! `up` / `down` of the local cluster. Every component is a process-group
//! leader with a pidfile under the state dir, so `down` can stop it (and
//! anything it spawned) by id. `up` starts them in order, one module each.

mod apiserver;
mod components;
mod controllers;
mod coredns;
mod etcd;
mod kwok;
pub mod node;
mod upstreams;

use anyhow::{Context, Result, bail};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use apiserver::restart as restart_apiserver;
pub use coredns::{
    Flavor, coredns_flavor_manifest, coredns_manifest, flavor_corefile, stock_corefile, version_lt,
};
pub use kwok::node_manifest;

use crate::env::{self, CONTROL_IP};
use crate::files::{self, FileLock};
use crate::{net, pki, process};

/// `kubectl apply` of what the harness installs (nodes, CoreDNS).
const APPLY_BOOTSTRAP: &[&str] = &[
    "apply",
    "--server-side",
    "--field-manager=e2e-bootstrap",
    "-f",
    "-",
];

#[derive(Clone, Debug)]
pub struct UpOptions {
    pub coredns_version: String,
    pub nodes: u32,
    pub coredns_replicas: u32,
    /// Build missing binaries (build-deps.sh) instead of failing.
    pub build: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            coredns_version: env::coredns_kubeadm_version(),
            nodes: 1,
            coredns_replicas: 2,
            build: true,
        }
    }
}

/// Components in start order: (name, pidfile stem).
const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "blackhole",
    "upstream",
    "pod-runtime",
];

pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Layout { dir: dir.into() }
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn kubeconfig_for(&self, stem: &str) -> PathBuf {
        if stem == "admin" {
            self.kubeconfig()
        } else {
            self.dir.join(format!("{stem}.kubeconfig"))
        }
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log(&self, c: &str) -> PathBuf {
        self.logs().join(format!("{c}.log"))
    }
    pub fn pidfile(&self, c: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{c}.pid"))
    }
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }
    pub fn blackhole_log(&self) -> PathBuf {
        self.dir.join("blackhole.log")
    }
    pub fn upstream_log(&self) -> PathBuf {
        self.dir.join("upstream.log")
    }
    pub fn upstream_table(&self) -> PathBuf {
        self.dir.join("upstream.zone")
    }
    /// The resolv.conf kubelet would hand to `dnsPolicy: Default` pods (CoreDNS).
    pub fn node_resolv_conf(&self) -> PathBuf {
        self.dir.join("node-resolv.conf")
    }
    pub fn pods(&self) -> PathBuf {
        self.dir.join("pods")
    }
    pub fn token(&self) -> PathBuf {
        self.dir.join("admin.token")
    }
    /// Held during `up` and `down`. Not `<dir>.lock`: whole test runs are
    /// serialised with `flock /tmp/dnspolicy-e2e.lock`, which must not deadlock this.
    fn lock(&self) -> PathBuf {
        let mut p = self.dir.clone().into_os_string();
        p.push(".up.lock");
        PathBuf::from(p)
    }
}

/// True when this state dir has a live apiserver (a cluster is up).
pub fn is_running(l: &Layout) -> bool {
    process::read_pid(&l.pidfile("kube-apiserver")).is_some_and(|p| process::pid_owned(p, &l.dir))
        && l.kubeconfig().is_file()
}

/// Components of a running cluster whose process is gone.
pub fn dead_components(l: &Layout) -> Vec<&'static str> {
    COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !process::read_pid(&l.pidfile(c)).is_some_and(|p| process::pid_owned(p, &l.dir))
        })
        .collect()
}

fn missing_binaries(opts: &UpOptions) -> Vec<PathBuf> {
    let mut v = vec![
        env::etcd_bin(),
        env::k8s_bin("kube-apiserver"),
        env::k8s_bin("kube-controller-manager"),
        env::k8s_bin("kube-scheduler"),
        env::kubectl_bin(),
        env::kwok_bin(),
        env::coredns_bin(&opts.coredns_version),
        env::musl_probe_bin(),
    ];
    v.retain(|p| !p.is_file());
    v
}

pub fn ensure_binaries(opts: &UpOptions) -> Result<()> {
    let missing = missing_binaries(opts);
    if missing.is_empty() {
        return Ok(());
    }
    if !opts.build {
        bail!("missing binaries (run e2e/scripts/build-deps.sh): {missing:?}");
    }
    eprintln!(
        "[e2e] missing {missing:?}; running {}",
        env::build_script().display()
    );
    let st = Command::new("bash").arg(env::build_script()).status()?;
    if !st.success() {
        bail!("build-deps.sh failed");
    }
    let missing = missing_binaries(opts);
    if !missing.is_empty() {
        bail!("still missing after build: {missing:?}");
    }
    Ok(())
}

fn check_ports_free() -> Result<()> {
    let ip = std::net::IpAddr::V4(CONTROL_IP);
    let mut busy = Vec::new();
    for p in [
        env::ETCD_CLIENT_PORT,
        env::ETCD_PEER_PORT,
        env::APISERVER_PORT,
        env::KCM_PORT,
        env::SCHEDULER_PORT,
        env::KWOK_PORT,
    ] {
        if net::tcp_port_in_use(SocketAddr::new(ip, p)) {
            busy.push(format!("{ip}:{p}/tcp"));
        }
    }
    for a in [env::BLACKHOLE_IP, env::UPSTREAM_IP] {
        let sa = SocketAddr::new(a.into(), 53);
        if net::tcp_port_in_use(sa) || net::udp_port_in_use(sa) {
            busy.push(format!("{sa}"));
        }
    }
    if !busy.is_empty() {
        bail!("ports in use (another cluster or a leftover process?): {busy:?}");
    }
    Ok(())
}

pub fn kubectl(l: &Layout, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new(env::kubectl_bin());
    cmd.args(args)
        .env("KUBECONFIG", l.kubeconfig())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("run kubectl")?;
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn export_line(l: &Layout) -> String {
    format!("export KUBECONFIG={}", l.kubeconfig().display())
}

/// Start the cluster, component by component; returns the `export
/// KUBECONFIG=...` line. If one is already up in this state dir, says so and
/// returns.
pub fn up(l: &Layout, opts: &UpOptions, self_bin: &Path) -> Result<String> {
    let _lock = FileLock::acquire(&l.lock())?;
    if is_running(l) {
        let dead = dead_components(l);
        if !dead.is_empty() {
            bail!(
                "cluster in {} is partly down ({dead:?} exited; logs in {}): run `e2e-cluster down` first",
                l.dir.display(),
                l.logs().display()
            );
        }
        eprintln!("[e2e] cluster already running (state {})", l.dir.display());
        return Ok(export_line(l));
    }
    // Leftovers of a crashed run: stop them first.
    stop_all(l)?;
    ensure_binaries(opts)?;
    check_ports_free()?;
    let t0 = Instant::now();
    write_state(l)?;
    etcd::start(l)?;
    apiserver::start(l)?;
    controllers::start(l)?;
    kwok::start(l)?;
    upstreams::start(l, self_bin)?;
    coredns::start_runtime(l, self_bin)?;
    for c in &COMPONENTS[2..] {
        std::thread::sleep(Duration::from_millis(50));
        components::check_alive(l, c)?;
    }
    kwok::add_nodes(l, opts.nodes)?;
    controllers::wait_ready(l)?;
    coredns::install(l, opts)?;
    kwok::wait_nodes_ready(l)?;
    coredns::wait_rolled_out(l)?;
    files::write_file(
        &l.dir.join("up-seconds"),
        format!("{:.1}\n", t0.elapsed().as_secs_f64()),
    )?;
    eprintln!(
        "[e2e] cluster up in {:.1}s (state {})",
        t0.elapsed().as_secs_f64(),
        l.dir.display()
    );
    Ok(export_line(l))
}

/// A fresh state dir: certificates and kubeconfigs, the admin token, the
/// audit policy, the nodes' resolv.conf and the upstream's empty table.
fn write_state(l: &Layout) -> Result<()> {
    let _ = fs::remove_dir_all(&l.dir);
    fs::create_dir_all(&l.dir)?;
    let pki = l.pki();
    pki::generate(&pki)?;
    for (stem, _, _) in pki::CLIENTS {
        files::write_file(&l.kubeconfig_for(stem), pki::kubeconfig(&pki, stem))?;
    }
    let token = files::sha256_hex(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes())
        [..32]
        .to_string();
    files::write_file(&l.token(), &token)?;
    files::write_file(
        &l.dir.join("tokens.csv"),
        format!("{token},admin-token,admin-token,system:masters\n"),
    )?;
    files::write_file(&l.dir.join("audit-policy.yaml"), apiserver::AUDIT_POLICY)?;
    files::write_file(
        &l.node_resolv_conf(),
        format!(
            "nameserver {}\nsearch {}\n",
            env::BLACKHOLE_IP,
            env::NODE_SEARCH
        ),
    )?;
    files::write_file(
        &l.upstream_table(),
        "# name A|AAAA ip... ; see e2e/src/dns/server.rs\n",
    )
}

/// Every pid this state dir knows: components and CoreDNS processes.
fn known_pids(l: &Layout) -> Vec<(String, i32)> {
    let mut v = all_pids(l);
    v.retain(|(_, p)| process::pid_owned(*p, &l.dir));
    v
}

fn all_pids(l: &Layout) -> Vec<(String, i32)> {
    let mut v = Vec::new();
    for c in COMPONENTS.iter().rev().chain(node::NODE_COMPONENTS) {
        if let Some(p) = process::read_pid(&l.pidfile(c)) {
            v.push((c.to_string(), p));
        }
    }
    if let Ok(rd) = fs::read_dir(l.pods()) {
        for e in rd.flatten() {
            if let Some(p) = process::read_pid(&e.path().join("pid")) {
                v.push((format!("coredns {}", e.file_name().to_string_lossy()), p));
            }
        }
    }
    v
}

fn stop_pids(pids: &[(String, i32)], grace: Duration) {
    for (_, p) in pids {
        if process::pid_alive(*p) {
            process::signal_group(*p, libc::SIGTERM);
            process::signal(*p, libc::SIGTERM);
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < grace && pids.iter().any(|(_, p)| process::pid_alive(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, p) in pids {
        if process::pid_alive(*p) {
            eprintln!("[e2e] {name} (pid {p}) still running after SIGTERM + {grace:?}; SIGKILL");
            process::signal_group(*p, libc::SIGKILL);
            process::signal(*p, libc::SIGKILL);
        }
    }
    // Group members that outlived their leader (e.g. CoreDNS under a dead runtime).
    for (_, p) in pids {
        process::signal_group(*p, libc::SIGKILL);
    }
}

/// Stop in reverse dependency order: clients of the apiserver first (so it
/// has no open watches to drain), then the apiserver, then etcd.
fn stop_all(l: &Layout) -> Result<()> {
    // The real node first: it drains its pods through the apiserver.
    let node = node::stop(l);
    let pids = known_pids(l);
    let (core, clients): (Vec<_>, Vec<_>) = pids
        .into_iter()
        .partition(|(n, _)| n == "kube-apiserver" || n == "etcd");
    stop_pids(&clients, Duration::from_secs(10));
    let (api, etcd): (Vec<_>, Vec<_>) = core.into_iter().partition(|(n, _)| n == "kube-apiserver");
    stop_pids(&api, Duration::from_secs(10));
    stop_pids(&etcd, Duration::from_secs(10));
    let _ = fs::remove_dir_all(l.dir.join("pids"));
    node
}

/// Stop everything, check no port is left, remove the state (logs are kept in
/// `<dir>.last-logs` for post-mortems).
pub fn down(l: &Layout) -> Result<()> {
    let _lock = FileLock::acquire(&l.lock())?;
    if !l.dir.exists() {
        eprintln!("[e2e] no cluster state at {}", l.dir.display());
    }
    stop_all(l)?;
    let t0 = Instant::now();
    loop {
        match check_ports_free() {
            Ok(()) => break,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => return Err(e.context("after down")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let mut last = l.dir.clone().into_os_string();
    last.push(".last-logs");
    let last = PathBuf::from(last);
    let _ = fs::remove_dir_all(&last);
    if l.logs().exists() {
        let _ = fs::rename(l.logs(), &last);
    }
    if l.dir.exists() {
        fs::remove_dir_all(&l.dir).with_context(|| format!("remove {}", l.dir.display()))?;
    }
    eprintln!("[e2e] cluster down");
    Ok(())
}

/// One line per component: name, pid, alive.
pub fn status(l: &Layout) -> String {
    let mut s = String::new();
    for (name, p) in all_pids(l) {
        s.push_str(&format!(
            "{name:<28} pid {p:<8} {}\n",
            if process::pid_owned(p, &l.dir) {
                "running"
            } else {
                "DEAD"
            }
        ));
    }
    if s.is_empty() {
        s.push_str("not running\n");
    }
    s
}
