//! `up` / `down` of the local cluster. Every component is a process-group
//! leader with a pidfile under the state dir, so `down` can stop it (and
//! anything it spawned) by id.

use anyhow::{Context, Result, bail};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{self, CONTROL_IP};
use crate::pki;
use crate::util::{self, FileLock};

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

fn spawn(
    l: &Layout,
    name: &str,
    bin: &Path,
    args: &[String],
    envs: &[(&str, String)],
) -> Result<i32> {
    fs::create_dir_all(l.logs())?;
    fs::create_dir_all(l.dir.join("pids"))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log(name))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&l.dir)
        .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name} ({})", bin.display()))?;
    let pid = child.id() as i32;
    util::write_file(&l.pidfile(name), pid.to_string())?;
    // The child outlives us; don't keep a handle that would reap it.
    std::mem::forget(child);
    Ok(pid)
}

fn check_alive(l: &Layout, name: &str) -> Result<()> {
    let pid = util::read_pid(&l.pidfile(name)).unwrap_or(0);
    if !util::pid_alive(pid) {
        bail!(
            "{name} exited; last log lines ({}):\n{}",
            l.log(name).display(),
            util::tail(&l.log(name), 30)
        );
    }
    Ok(())
}

fn wait_component(
    l: &Layout,
    name: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if ok() {
            return Ok(());
        }
        check_alive(l, name)?;
        if t0.elapsed() > timeout {
            bail!(
                "{name} not ready after {timeout:?}; log {}:\n{}",
                l.log(name).display(),
                util::tail(&l.log(name), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when this state dir has a live apiserver (a cluster is up).
pub fn is_running(l: &Layout) -> bool {
    util::read_pid(&l.pidfile("kube-apiserver")).is_some_and(|p| util::pid_owned(p, &l.dir))
        && l.kubeconfig().is_file()
}

/// Components of a running cluster whose process is gone.
pub fn dead_components(l: &Layout) -> Vec<&'static str> {
    COMPONENTS
        .iter()
        .copied()
        .filter(|c| !util::read_pid(&l.pidfile(c)).is_some_and(|p| util::pid_owned(p, &l.dir)))
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
        if util::tcp_port_in_use(SocketAddr::new(ip, p)) {
            busy.push(format!("{ip}:{p}/tcp"));
        }
    }
    for a in [env::BLACKHOLE_IP, env::UPSTREAM_IP] {
        let sa = SocketAddr::new(a.into(), 53);
        if util::tcp_port_in_use(sa) || util::udp_port_in_use(sa) {
            busy.push(format!("{sa}"));
        }
    }
    if !busy.is_empty() {
        bail!("ports in use (another cluster or a leftover process?): {busy:?}");
    }
    Ok(())
}

fn audit_policy() -> &'static str {
    // Metadata for everything: user, verb, object and requestURI (which carries
    // fieldManager), so tests can count writes per user / field manager.
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
}

fn kwok_config(l: &Layout) -> Result<PathBuf> {
    // kwok's own fast pod stages, with kube-dns pods left to our stages.
    let sd = env::kwok_stage_dir();
    let mut docs = Vec::new();
    for f in [
        "node/fast/node-initialize.yaml",
        "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
        "pod/fast/pod-ready.yaml",
        "pod/fast/pod-complete.yaml",
        "pod/fast/pod-delete.yaml",
    ] {
        let s = fs::read_to_string(sd.join(f))
            .with_context(|| format!("kwok stage {}", sd.join(f).display()))?;
        let mut v: serde_yaml::Value = serde_yaml::from_str(&s)?;
        if f.ends_with("pod-ready.yaml") {
            let exprs = v["spec"]["selector"]["matchExpressions"]
                .as_sequence_mut()
                .context("pod-ready stage without matchExpressions")?;
            exprs.push(serde_yaml::from_str(
                "{key: '.metadata.labels[\"k8s-app\"]', operator: NotIn, values: [kube-dns]}",
            )?);
        }
        docs.push(serde_yaml::to_string(&v)?);
    }
    docs.push(fs::read_to_string(
        env::manifests_dir().join("kwok-coredns-stages.yaml"),
    )?);
    let p = l.dir.join("kwok.yaml");
    util::write_file(&p, docs.join("\n---\n"))?;
    Ok(p)
}

/// How CoreDNS is installed: kubeadm's shape, or k3s's (Corefile imports
/// `coredns-custom` keys mounted at /etc/coredns/custom, plus NodeHosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    #[default]
    Kubeadm,
    K3s,
}

/// The kubeadm Corefile for that CoreDNS version.
pub fn stock_corefile(coredns_version: &str) -> Result<String> {
    flavor_corefile(Flavor::Kubeadm, coredns_version)
}

/// The Corefile a fresh install of `flavor` has for that CoreDNS version.
pub fn flavor_corefile(flavor: Flavor, coredns_version: &str) -> Result<String> {
    let legacy = version_lt(coredns_version, "v1.10.0");
    let f = match flavor {
        Flavor::K3s => "corefile-k3s.conf",
        Flavor::Kubeadm if legacy => "corefile-kubeadm-legacy.conf",
        Flavor::Kubeadm => "corefile-kubeadm.conf",
    };
    let s = fs::read_to_string(env::manifests_dir().join(f))?;
    Ok(s.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect())
}

pub fn version_lt(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u32> {
        s.trim_start_matches('v')
            .split('.')
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    p(a) < p(b)
}

const K3S_VOLUMES: &str = "      volumes:
        - name: config-volume
          configMap:
            name: coredns
            items:
            - key: Corefile
              path: Corefile
            - key: NodeHosts
              path: NodeHosts
        - name: custom-config-volume
          configMap:
            name: coredns-custom
            optional: true
";

pub fn coredns_manifest(coredns_version: &str, replicas: u32) -> Result<String> {
    coredns_flavor_manifest(Flavor::Kubeadm, coredns_version, replicas)
}

/// ServiceAccount, RBAC, ConfigMap, Service and Deployment of CoreDNS as
/// `flavor` installs them, running `coredns_version`.
pub fn coredns_flavor_manifest(
    flavor: Flavor,
    coredns_version: &str,
    replicas: u32,
) -> Result<String> {
    let corefile = flavor_corefile(flavor, coredns_version)?;
    let mut indented: String = corefile.lines().map(|l| format!("    {l}\n")).collect();
    let mut m = fs::read_to_string(env::manifests_dir().join("coredns.yaml"))?;
    if flavor == Flavor::K3s {
        indented.push_str("  NodeHosts: |\n    10.240.0.1 kwok-node-0\n");
        let vols = m
            .find("      volumes:\n")
            .context("volumes in coredns.yaml")?;
        m.truncate(vols);
        m.push_str(K3S_VOLUMES);
        m = m.replace(
            "          mountPath: /etc/coredns\n          readOnly: true\n",
            "          mountPath: /etc/coredns\n          readOnly: true\n        - name: custom-config-volume\n          mountPath: /etc/coredns/custom\n          readOnly: true\n",
        );
    }
    Ok(m.replace("__COREFILE__\n", &indented)
        .replace("__DNS_IP__", env::DNS_SVC_IP)
        .replace("__COREDNS_VERSION__", coredns_version)
        .replace("replicas: 2", &format!("replicas: {replicas}")))
}

fn nodes_manifest(n: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"apiVersion: v1
kind: Node
metadata:
  name: kwok-node-{i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-{i}
spec: {{}}
"#
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
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

/// Start the cluster; returns the `export KUBECONFIG=...` line. If one is
/// already up in this state dir, says so and returns.
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
    let _ = fs::remove_dir_all(&l.dir);
    fs::create_dir_all(&l.dir)?;
    let pki = l.pki();
    pki::generate(&pki)?;
    for (stem, _, _) in pki::CLIENTS {
        util::write_file(&l.kubeconfig_for(stem), pki::kubeconfig(&pki, stem))?;
    }
    let token = util::sha256_hex(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes())
        [..32]
        .to_string();
    util::write_file(&l.token(), &token)?;
    util::write_file(
        &l.dir.join("tokens.csv"),
        format!("{token},admin-token,admin-token,system:masters\n"),
    )?;
    util::write_file(&l.dir.join("audit-policy.yaml"), audit_policy())?;
    util::write_file(
        &l.node_resolv_conf(),
        format!(
            "nameserver {}\nsearch {}\n",
            env::BLACKHOLE_IP,
            env::NODE_SEARCH
        ),
    )?;
    util::write_file(
        &l.upstream_table(),
        "# name A|AAAA ip... ; see e2e/src/dns.rs\n",
    )?;
    let ip = CONTROL_IP.to_string();
    let d = |p: PathBuf| p.display().to_string();

    // etcd
    let etcd_url = format!("http://{ip}:{}", env::ETCD_CLIENT_PORT);
    let peer_url = format!("http://{ip}:{}", env::ETCD_PEER_PORT);
    spawn(
        l,
        "etcd",
        &env::etcd_bin(),
        &[
            "--name=e2e".into(),
            format!("--data-dir={}", d(l.dir.join("etcd"))),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=e2e={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &[],
    )?;
    let etcd_addr: SocketAddr = format!("{ip}:{}", env::ETCD_CLIENT_PORT).parse()?;
    wait_component(l, "etcd", Duration::from_secs(30), || {
        util::http_get_status(etcd_addr, "/health", Duration::from_secs(1)).is_ok_and(|c| c == 200)
    })?;

    // kube-apiserver (flags after hack/local-up-cluster.sh)
    spawn(
        l,
        "kube-apiserver",
        &env::k8s_bin("kube-apiserver"),
        &[
            format!("--bind-address={ip}"),
            // Published in the `kubernetes` Endpoints, never dialled; a loopback
            // address there is rejected by validation. It is the kwok node IP.
            "--advertise-address=10.240.0.1".into(),
            format!("--secure-port={}", env::APISERVER_PORT),
            format!("--etcd-servers={etcd_url}"),
            format!("--tls-cert-file={}", d(pki.join("apiserver.crt"))),
            format!("--tls-private-key-file={}", d(pki.join("apiserver.key"))),
            format!("--client-ca-file={}", d(pki.join("ca.crt"))),
            format!("--token-auth-file={}", d(l.dir.join("tokens.csv"))),
            format!("--service-account-key-file={}", d(pki.join("sa.pub"))),
            format!(
                "--service-account-signing-key-file={}",
                d(pki.join("sa.key"))
            ),
            format!(
                "--service-account-issuer=https://kubernetes.default.svc.{}",
                env::CLUSTER_DOMAIN
            ),
            format!("--service-cluster-ip-range={}", env::SERVICE_CIDR),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            format!("--audit-policy-file={}", d(l.dir.join("audit-policy.yaml"))),
            format!("--audit-log-path={}", d(l.audit_log())),
            "--audit-log-mode=blocking".into(),
            "--audit-log-maxsize=0".into(),
            "--profiling=false".into(),
            "--enable-priority-and-fairness=false".into(),
            "--endpoint-reconciler-type=lease".into(),
            "--v=1".into(),
        ],
        &[],
    )?;
    let client_l = Layout::new(&l.dir);
    wait_component(l, "kube-apiserver", Duration::from_secs(90), || {
        kubectl(&client_l, &["get", "--raw", "/readyz"], None).is_ok()
    })?;

    let ctl_common = |stem: &str| -> Vec<String> {
        let kc = d(l.kubeconfig_for(stem));
        vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            format!("--bind-address={ip}"),
            "--leader-elect=false".into(),
            "--v=1".into(),
        ]
    };
    let mut kcm = ctl_common("kcm");
    kcm.extend([
        format!("--secure-port={}", env::KCM_PORT),
        format!(
            "--service-account-private-key-file={}",
            d(pki.join("sa.key"))
        ),
        format!("--root-ca-file={}", d(pki.join("ca.crt"))),
        format!("--cluster-signing-cert-file={}", d(pki.join("ca.crt"))),
        format!("--cluster-signing-key-file={}", d(pki.join("ca.key"))),
        format!("--service-cluster-ip-range={}", env::SERVICE_CIDR),
        "--use-service-account-credentials=true".into(),
        "--controllers=*,-nodeipam,-cloud-node-lifecycle".into(),
    ]);
    spawn(
        l,
        "kube-controller-manager",
        &env::k8s_bin("kube-controller-manager"),
        &kcm,
        &[],
    )?;
    let mut sched = ctl_common("scheduler");
    sched.push(format!("--secure-port={}", env::SCHEDULER_PORT));
    spawn(
        l,
        "kube-scheduler",
        &env::k8s_bin("kube-scheduler"),
        &sched,
        &[],
    )?;

    let kwok_cfg = kwok_config(l)?;
    spawn(
        l,
        "kwok",
        &env::kwok_bin(),
        &[
            format!("--kubeconfig={}", d(l.kubeconfig_for("kwok"))),
            format!("--config={}", d(kwok_cfg)),
            "--manage-all-nodes=false".into(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
            format!("--server-address={ip}:{}", env::KWOK_PORT),
            "--cidr=10.244.0.0/16".into(),
            "--node-ip=10.240.0.1".into(),
            "--node-lease-duration-seconds=40".into(),
        ],
        &[],
    )?;

    let sb = self_bin;
    spawn(
        l,
        "blackhole",
        sb,
        &[
            "dns-server".into(),
            format!("--listen={}:53", env::BLACKHOLE_IP),
            format!("--log={}", d(l.blackhole_log())),
            "--default=drop".into(),
        ],
        &[],
    )?;
    spawn(
        l,
        "upstream",
        sb,
        &[
            "dns-server".into(),
            format!("--listen={}:53", env::UPSTREAM_IP),
            format!("--log={}", d(l.upstream_log())),
            format!("--table={}", d(l.upstream_table())),
            "--default=nxdomain".into(),
        ],
        &[],
    )?;
    spawn(
        l,
        "pod-runtime",
        sb,
        &["pod-runtime".into(), format!("--dir={}", d(l.dir.clone()))],
        &[],
    )?;
    for c in [
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "blackhole",
        "upstream",
        "pod-runtime",
    ] {
        std::thread::sleep(Duration::from_millis(50));
        check_alive(l, c)?;
    }

    kubectl(
        l,
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e-bootstrap",
            "-f",
            "-",
        ],
        Some(&nodes_manifest(opts.nodes)),
    )?;
    // Pods need the default ServiceAccount (created by the controller-manager).
    wait_component(
        l,
        "kube-controller-manager",
        Duration::from_secs(60),
        || {
            kubectl(
                l,
                &["-n", "default", "get", "serviceaccount", "default"],
                None,
            )
            .is_ok()
                && kubectl(
                    l,
                    &["-n", "kube-system", "get", "configmap", "kube-root-ca.crt"],
                    None,
                )
                .is_ok()
        },
    )?;
    kubectl(
        l,
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e-bootstrap",
            "-f",
            "-",
        ],
        Some(&coredns_manifest(
            &opts.coredns_version,
            opts.coredns_replicas,
        )?),
    )?;
    wait_component(l, "kwok", Duration::from_secs(60), || {
        kubectl(
            l,
            &[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                "--timeout=1s",
            ],
            None,
        )
        .is_ok()
    })?;
    wait_component(l, "pod-runtime", Duration::from_secs(90), || {
        kubectl(
            l,
            &[
                "-n",
                "kube-system",
                "rollout",
                "status",
                "deployment/coredns",
                "--timeout=1s",
            ],
            None,
        )
        .is_ok()
    })
    .map_err(|e| {
        let pods = kubectl(
            l,
            &[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-o",
                "wide",
                "--show-labels",
            ],
            None,
        )
        .unwrap_or_default();
        e.context(format!(
            "CoreDNS did not roll out; pods:\n{pods}\npod-runtime log:\n{}",
            util::tail(&l.log("pod-runtime"), 30)
        ))
    })?;
    util::write_file(
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

/// Every pid this state dir knows: components and CoreDNS processes.
fn known_pids(l: &Layout) -> Vec<(String, i32)> {
    let mut v = all_pids(l);
    v.retain(|(_, p)| util::pid_owned(*p, &l.dir));
    v
}

fn all_pids(l: &Layout) -> Vec<(String, i32)> {
    let mut v = Vec::new();
    for c in COMPONENTS.iter().rev() {
        if let Some(p) = util::read_pid(&l.pidfile(c)) {
            v.push((c.to_string(), p));
        }
    }
    if let Ok(rd) = fs::read_dir(l.pods()) {
        for e in rd.flatten() {
            if let Some(p) = util::read_pid(&e.path().join("pid")) {
                v.push((format!("coredns {}", e.file_name().to_string_lossy()), p));
            }
        }
    }
    v
}

fn stop_pids(pids: &[(String, i32)], grace: Duration) {
    for (_, p) in pids {
        if util::pid_alive(*p) {
            util::signal_group(*p, libc::SIGTERM);
            util::signal(*p, libc::SIGTERM);
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < grace && pids.iter().any(|(_, p)| util::pid_alive(*p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, p) in pids {
        if util::pid_alive(*p) {
            eprintln!("[e2e] {name} (pid {p}) still running after SIGTERM + {grace:?}; SIGKILL");
            util::signal_group(*p, libc::SIGKILL);
            util::signal(*p, libc::SIGKILL);
        }
    }
    // Group members that outlived their leader (e.g. CoreDNS under a dead runtime).
    for (_, p) in pids {
        util::signal_group(*p, libc::SIGKILL);
    }
}

/// Stop in reverse dependency order: clients of the apiserver first (so it
/// has no open watches to drain), then the apiserver, then etcd.
fn stop_all(l: &Layout) -> Result<()> {
    let pids = known_pids(l);
    let (core, clients): (Vec<_>, Vec<_>) = pids
        .into_iter()
        .partition(|(n, _)| n == "kube-apiserver" || n == "etcd");
    stop_pids(&clients, Duration::from_secs(10));
    let (api, etcd): (Vec<_>, Vec<_>) = core.into_iter().partition(|(n, _)| n == "kube-apiserver");
    stop_pids(&api, Duration::from_secs(10));
    stop_pids(&etcd, Duration::from_secs(10));
    let _ = fs::remove_dir_all(l.dir.join("pids"));
    Ok(())
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
            if util::pid_owned(p, &l.dir) {
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
