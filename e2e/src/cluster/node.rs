//! The real node: containerd, kubelet and kube-proxy (iptables mode) in a
//! network namespace the harness creates, joined to the local control plane.
//!
//! - Network: a veth pair, `dpe2e-host` (10.240.0.1, the host side) and the
//!   node's `eth0` (10.240.0.2) with a default route to the host. Pods get
//!   10.244.250.0/24 on a CNI bridge inside the namespace, so no pod or
//!   Service address touches the machine's own interfaces. The apiserver
//!   listens on loopback only; an `e2e-cluster tcp-forward` process on the
//!   host side (10.240.0.1:6443, the apiserver's advertised address, so the
//!   `kubernetes` Service works from pods too) carries the node's traffic to it.
//! - The node is tainted `dnspolicy.dev/real-node=true:NoSchedule`: nothing
//!   that existed before it (kwok test pods, the CoreDNS Deployment, node
//!   agent DaemonSets that tolerate everything aside) lands on it.
//! - It starts on demand ([`start`], from `Cluster::ensure_node`) and is
//!   stopped by [`stop`] (also part of the cluster's `down`), which undoes
//!   everything outside the state dir too: see [`leftovers`].
//!
//! Three settings this machine needs (../shared/REAL-NODE-FACTS.md):
//! `failCgroupV1: false`, `nsenter --net` rather than `ip netns exec` (which
//! remounts /sys and hides the cgroup v1 mounts from runc), and containerd's
//! `restrict_oom_score_adj` (root has no CAP_SYS_RESOURCE here).

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::components::{spawn, wait_component};
use super::{APPLY_BOOTSTRAP, Layout, kubectl};
use crate::env;
use crate::files::{self, write_file};
use crate::{pki, process};

pub const NODE_NAME: &str = "e2e-real-node";
pub const TAINT_KEY: &str = "dnspolicy.dev/real-node";
/// `tolerations:` entry for pods meant for the real node.
pub const TOLERATION: &str = "{key: dnspolicy.dev/real-node, operator: Exists, effect: NoSchedule}";
/// Images built by build-deps.sh `node-images` and imported at start.
pub const IMAGES: &[&str] = &["pause", "busybox", "coredns", "glibc-probe", "musl-probe"];
pub const NETNS: &str = "dnspolicy-e2e-node";
const HOST_VETH: &str = "dpe2e-host";
pub const HOST_IP: &str = "10.240.0.1";
pub const NODE_IP: &str = "10.240.0.2";
pub const POD_SUBNET: &str = "10.244.250.0/24";
/// kubelet's `cgroupRoot`, created in every cgroup v1 hierarchy.
const CGROUP_ROOT: &str = "dnspolicy-e2e-node";
/// Host sysctls kubelet sets (`setupKernelTunables`); restored at stop.
const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];
/// Paths outside the state dir kubelet, containerd or CNI write to whatever
/// their configuration says. Removed at stop if they did not exist at start.
const FIXED_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
];
const DEVICE_PLUGIN_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
/// Components, in start order; stopped in reverse.
pub(super) const NODE_COMPONENTS: &[&str] = &[
    "node-apiserver-forward",
    "node-containerd",
    "node-kubelet",
    "node-kube-proxy",
];

/// How the node's resolv.conf is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResolvConf {
    /// kubelet's `resolvConf` is a plain file.
    #[default]
    Plain,
    /// kubelet's `resolvConf` is `etc/resolv.conf`, a symlink to
    /// `run/systemd/resolve/resolv.conf`, as on a node with systemd-resolved.
    SystemdSymlink,
}

#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    pub resolv_conf: ResolvConf,
}

pub fn dir(l: &Layout) -> PathBuf {
    l.dir.join("node")
}
fn containerd_socket(l: &Layout) -> PathBuf {
    dir(l).join("containerd.sock")
}
fn containerd_root(l: &Layout) -> PathBuf {
    dir(l).join("containerd/root")
}
fn containerd_state(l: &Layout) -> PathBuf {
    dir(l).join("containerd/state")
}
fn kubelet_root(l: &Layout) -> PathBuf {
    dir(l).join("kubelet")
}
fn netns_path() -> PathBuf {
    PathBuf::from("/run/netns").join(NETNS)
}
/// The node resolv.conf's real file (what kubelet reads, through the symlink
/// in the systemd variant).
pub fn resolv_conf_file(l: &Layout) -> PathBuf {
    dir(l).join("run/systemd/resolve/resolv.conf")
}
/// What kubelet's `resolvConf` names.
pub fn kubelet_resolv_conf(l: &Layout, how: ResolvConf) -> PathBuf {
    match how {
        ResolvConf::Plain => resolv_conf_file(l),
        ResolvConf::SystemdSymlink => dir(l).join("etc/resolv.conf"),
    }
}
/// The node resolv.conf: an unreachable nameserver (the host side of the
/// veth; nothing answers there) and the seed's tailnet search line.
pub fn resolv_conf_contents() -> String {
    format!("nameserver {HOST_IP}\nsearch {}\n", env::NODE_SEARCH)
}

/// True when the node's kubelet runs.
pub fn is_running(l: &Layout) -> bool {
    process::read_pid(&l.pidfile("node-kubelet")).is_some_and(|p| process::pid_owned(p, &l.dir))
}

/// Every binary and package the node needs, or an error naming what to install.
pub fn check_binaries() -> Result<()> {
    let mut missing = Vec::new();
    for p in [
        env::k8s_bin("kubelet"),
        env::k8s_bin("kube-proxy"),
        env::containerd_bin("containerd"),
        env::containerd_bin("containerd-shim-runc-v2"),
        env::containerd_bin("ctr"),
    ]
    .into_iter()
    .chain(IMAGES.iter().map(|i| env::node_image_tar(i)))
    {
        if !p.is_file() {
            missing.push(format!(
                "{} (run e2e/scripts/build-deps.sh k8s-node containerd node-images)",
                p.display()
            ));
        }
    }
    for (bin, pkg) in [
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/sbin/iptables", "iptables"),
        ("/usr/sbin/conntrack", "conntrack"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/sbin/ip", "iproute2"),
    ] {
        if !Path::new(bin).is_file() {
            missing.push(format!(
                "{bin} (apt-get install {pkg}, or run e2e/scripts/deps.sh)"
            ));
        }
    }
    if !missing.is_empty() {
        bail!("the real node needs:\n  {}", missing.join("\n  "));
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command inside the node's network namespace.
fn in_netns(cmd: &str, args: &[&str]) -> Result<String> {
    let ns = format!("--net={}", netns_path().display());
    let mut a = vec![ns.as_str(), "--", cmd];
    a.extend_from_slice(args);
    run("nsenter", &a)
}

/// `ctr` against the node's containerd, in the CRI's namespace.
pub fn ctr(l: &Layout, args: &[&str]) -> Result<String> {
    let sock = containerd_socket(l).display().to_string();
    let mut a = vec!["--address", sock.as_str(), "--namespace", "k8s.io"];
    a.extend_from_slice(args);
    run(&env::containerd_bin("ctr").display().to_string(), &a)
}

/// [`start`] under the cluster's up/down lock.
pub fn up(l: &Layout, opts: &NodeOptions, self_bin: &Path) -> Result<()> {
    let _lock = crate::files::FileLock::acquire(&l.lock())?;
    if !super::is_running(l) {
        bail!(
            "no cluster runs in {}: start it first (e2e-cluster up)",
            l.dir.display()
        );
    }
    start(l, opts, self_bin)
}

/// [`stop`] under the cluster's up/down lock.
pub fn down(l: &Layout) -> Result<()> {
    let _lock = crate::files::FileLock::acquire(&l.lock())?;
    stop(l)
}

/// Start the node and wait until it is Ready with kube-proxy running.
/// A node already running is left as it is.
fn start(l: &Layout, opts: &NodeOptions, self_bin: &Path) -> Result<()> {
    if is_running(l) {
        return Ok(());
    }
    // Leftovers of a node that crashed or whose test stopped half-way.
    stop(l)?;
    check_binaries()?;
    let t0 = Instant::now();
    record_host_state(l)?;
    make_netns()?;
    make_cgroups()?;
    write_config(l, opts)?;
    spawn(
        l,
        "node-apiserver-forward",
        self_bin,
        &[
            "tcp-forward".into(),
            format!("--listen={HOST_IP}:{}", env::APISERVER_PORT),
            format!("--to={}", env::apiserver_addr()),
        ],
        &[],
    )?;
    start_containerd(l)?;
    import_images(l)?;
    kubectl(l, APPLY_BOOTSTRAP, Some(&node_rbac()))?;
    start_kubelet(l)?;
    wait_component(l, "node-kubelet", Duration::from_secs(180), || {
        kubectl(
            l,
            &[
                "wait",
                "--for=condition=Ready",
                &format!("node/{NODE_NAME}"),
                "--timeout=2s",
            ],
            None,
        )
        .is_ok()
    })?;
    start_kube_proxy(l)?;
    wait_component(l, "node-kube-proxy", Duration::from_secs(60), || {
        in_netns("iptables", &["-t", "nat", "-S", "KUBE-SERVICES"])
            .is_ok_and(|s| s.contains(env::KUBERNETES_SVC_IP))
    })?;
    eprintln!(
        "[e2e] real node {NODE_NAME} Ready in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Before anything changes: which fixed paths and netns entries exist, and
/// the host sysctls kubelet will change (so stop can put them back).
fn record_host_state(l: &Layout) -> Result<()> {
    let d = dir(l);
    fs::create_dir_all(&d)?;
    let absent: Vec<&str> = FIXED_PATHS
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    write_file(&d.join("created-paths"), absent.join("\n"))?;
    let mut sysctls = String::new();
    for s in KUBELET_SYSCTLS {
        let v = fs::read_to_string(Path::new("/proc/sys").join(s))?;
        sysctls.push_str(&format!("{s} {}\n", v.trim()));
    }
    write_file(&d.join("sysctls"), sysctls)?;
    Ok(())
}

fn make_netns() -> Result<()> {
    run("ip", &["netns", "add", NETNS])?;
    run(
        "ip",
        &[
            "link", "add", HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS,
        ],
    )?;
    run(
        "ip",
        &["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_VETH],
    )?;
    run("ip", &["link", "set", HOST_VETH, "up"])?;
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", "10.240.0.2/24", "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", HOST_IP],
    ] {
        let mut a = vec!["-n", NETNS];
        a.extend(args);
        run("ip", &a)?;
    }
    // Pods reach Services and the host through the node: route between them.
    in_netns("sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
    Ok(())
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// kubelet's cgroupRoot must exist in every hierarchy; a new cpuset starts
/// empty, so it gets its parent's cpus and mems.
fn make_cgroups() -> Result<()> {
    for h in cgroup_hierarchies() {
        let g = h.join(CGROUP_ROOT);
        fs::create_dir_all(&g).with_context(|| format!("create cgroup {}", g.display()))?;
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                fs::write(g.join(f), fs::read_to_string(h.join(f))?)?;
            }
        }
    }
    Ok(())
}

fn write_config(l: &Layout, opts: &NodeOptions) -> Result<()> {
    let d = dir(l);
    let pki_dir = l.pki();
    // Kubeconfigs pointing at the forwarder (the apiserver's cert covers it).
    for stem in ["node", "kube-proxy"] {
        let kc = pki::kubeconfig(&pki_dir, stem).replace(
            &env::apiserver_addr().to_string(),
            &format!("{HOST_IP}:{}", env::APISERVER_PORT),
        );
        write_file(&d.join(format!("{stem}.kubeconfig")), kc)?;
    }
    write_file(&resolv_conf_file(l), resolv_conf_contents())?;
    if opts.resolv_conf == ResolvConf::SystemdSymlink {
        let link = kubelet_resolv_conf(l, ResolvConf::SystemdSymlink);
        fs::create_dir_all(link.parent().unwrap())?;
        std::os::unix::fs::symlink("../run/systemd/resolve/resolv.conf", &link)?;
    }
    let bridge = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "e2e-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            // Pods' traffic to the host (the apiserver forwarder) leaves as the node's.
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": d.join("cni/ipam"),
            }
        }]
    });
    write_file(
        &d.join("cni/net.d/10-e2e-pods.conflist"),
        serde_json::to_string_pretty(&bridge)?,
    )?;
    let pause = image_ref("pause")?;
    write_file(
        &d.join("containerd.toml"),
        format!(
            r#"version = 3
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{pause}'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = '/usr/sbin/runc'
    Root = '{state}/runc'
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '{cni}'
"#,
            root = containerd_root(l).display(),
            state = containerd_state(l).display(),
            sock = containerd_socket(l).display(),
            cni = d.join("cni/net.d").display(),
        ),
    )?;
    write_file(
        &d.join("kubelet.yaml"),
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
containerRuntimeEndpoint: unix://{sock}
address: {NODE_IP}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
clusterDNS: [{dns}]
clusterDomain: {domain}
resolvConf: {resolv}
podLogsDir: {logs}
staticPodPath: ""
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
maxPods: 30
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
registerWithTaints: [{{key: {TAINT_KEY}, value: "true", effect: NoSchedule}}]
"#,
            sock = containerd_socket(l).display(),
            dns = env::DNS_SVC_IP,
            domain = env::CLUSTER_DOMAIN,
            resolv = kubelet_resolv_conf(l, opts.resolv_conf).display(),
            logs = d.join("pod-logs").display(),
            ca = pki_dir.join("ca.crt").display(),
        ),
    )?;
    write_file(
        &d.join("kube-proxy.yaml"),
        format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_SUBNET}
clientConnection: {{kubeconfig: {kc}}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# 0 leaves the host's conntrack table size and timeouts alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
            kc = d.join("kube-proxy.kubeconfig").display(),
        ),
    )?;
    Ok(())
}

/// kubelet's identity gets the node role (this cluster authorizes with RBAC
/// only, and the `system:node` binding has no subjects since 1.8);
/// kube-proxy's `system:kube-proxy` is bound by the bootstrap policy.
fn node_rbac() -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: e2e-real-node}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"system:node:{NODE_NAME}\"}}]\n"
    )
}

/// The node's processes run in its network namespace, entered with
/// `nsenter --net` (which execs, so the pidfile holds the component's pid).
fn spawn_in_netns(l: &Layout, name: &str, bin: &Path, args: &[String]) -> Result<i32> {
    let mut a = vec![
        format!("--net={}", netns_path().display()),
        "--".into(),
        bin.display().to_string(),
    ];
    a.extend_from_slice(args);
    // containerd finds its shim on PATH; runc and iptables are in /usr/sbin.
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        env::containerd_bin("ctr").parent().unwrap().display()
    );
    spawn(
        l,
        name,
        Path::new("/usr/bin/nsenter"),
        &a,
        &[("PATH", path)],
    )
}

fn start_containerd(l: &Layout) -> Result<()> {
    spawn_in_netns(
        l,
        "node-containerd",
        &env::containerd_bin("containerd"),
        &[format!(
            "--config={}",
            dir(l).join("containerd.toml").display()
        )],
    )?;
    wait_component(l, "node-containerd", Duration::from_secs(60), || {
        ctr(l, &["version"]).is_ok()
    })
}

fn image_ref(name: &str) -> Result<String> {
    let p = env::node_image_tar(name).with_extension("ref");
    Ok(fs::read_to_string(&p)
        .with_context(|| {
            format!(
                "{} (run e2e/scripts/build-deps.sh node-images)",
                p.display()
            )
        })?
        .trim()
        .to_string())
}

/// The fully qualified name of a node image (`localhost/<name>:<tag>`).
pub fn image(name: &str) -> Result<String> {
    image_ref(name)
}

fn import_images(l: &Layout) -> Result<()> {
    for name in IMAGES {
        import_image(l, name)?;
    }
    Ok(())
}

/// Import the node image `name` (built by build-deps.sh) into the running
/// node's containerd, named as a pull names it: the tag and the
/// `name@sha256:<manifest digest>` record, which is what the CRI resolves a
/// digest reference (`image: name@sha256:...`) through and reports as the
/// container's imageID (its first repo digest). A plain `ctr images import`
/// records only the archive's ref.name annotation (the tag), so a pod
/// spec by digest would find nothing; `--base-name NAME --digests` adds the
/// digest record. `--local`: containerd 2.4's transfer-API import inverts
/// --skip-digest-for-named and, without it, records the digest of the
/// archive's index.json (a layout file no registry serves) instead of the
/// manifest's.
pub fn import_image(l: &Layout, name: &str) -> Result<()> {
    let tar = env::node_image_tar(name).display().to_string();
    let want = image_ref(name)?;
    let (base, _tag) = want
        .rsplit_once(':')
        .with_context(|| format!("{want}: a node image ref has a tag"))?;
    ctr(
        l,
        &[
            "images",
            "import",
            "--local",
            "--no-unpack",
            "--base-name",
            base,
            "--digests",
            &tar,
        ],
    )?;
    let by_digest = image_digest_ref(name)?;
    let have = ctr(l, &["images", "ls", "-q"])?;
    for r in [&want, &by_digest] {
        if !have.lines().any(|i| i == r) {
            bail!("ctr import of {tar} did not create {r}; images: {have}");
        }
    }
    Ok(())
}

/// The node image `name` by digest: `localhost/<name>@sha256:<digest of its
/// manifest>`, read from the archive's index.json (what a registry would
/// serve the manifest under).
pub fn image_digest_ref(name: &str) -> Result<String> {
    let tar = env::node_image_tar(name);
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("./index.json")
        .output()
        .with_context(|| format!("tar -xOf {} ./index.json", tar.display()))?;
    if !out.status.success() {
        bail!(
            "{}: no index.json (an OCI layout from build-deps.sh node_image): {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: index.json", tar.display()))?;
    let want = image_ref(name)?;
    let manifest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == want.as_str())
        .with_context(|| format!("{}: index.json has no manifest named {want}", tar.display()))?;
    let digest = manifest["digest"]
        .as_str()
        .filter(|d| d.starts_with("sha256:"))
        .with_context(|| format!("{}: manifest digest in {index}", tar.display()))?;
    let (base, _) = want
        .rsplit_once(':')
        .context("a node image ref has a tag")?;
    Ok(format!("{base}@{digest}"))
}

/// The dnspolicy image as the Dockerfile's final stage describes it, with
/// `target/debug/dnspolicy-operator` for the release build (build-deps.sh
/// `dnspolicy-image`: a no-op unless the binary changed). Its name.
pub fn build_dnspolicy_image() -> Result<String> {
    let bin = env::repo_root().join("target/debug/dnspolicy-operator");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build -p dnspolicy-operator` (just test does)",
            bin.display()
        );
    }
    let out = Command::new("bash")
        .arg(env::build_script())
        .arg("dnspolicy-image")
        .output()
        .context("run build-deps.sh dnspolicy-image")?;
    if !out.status.success() {
        bail!(
            "build-deps.sh dnspolicy-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    image_ref("dnspolicy")
}

fn start_kubelet(l: &Layout) -> Result<()> {
    let d = dir(l);
    spawn_in_netns(
        l,
        "node-kubelet",
        &env::k8s_bin("kubelet"),
        &[
            format!("--config={}", d.join("kubelet.yaml").display()),
            format!("--kubeconfig={}", d.join("node.kubeconfig").display()),
            format!("--root-dir={}", kubelet_root(l).display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--node-labels={TAINT_KEY}=true"),
            "--v=1".into(),
        ],
    )?;
    Ok(())
}

fn start_kube_proxy(l: &Layout) -> Result<()> {
    spawn_in_netns(
        l,
        "node-kube-proxy",
        &env::k8s_bin("kube-proxy"),
        &[
            format!("--config={}", dir(l).join("kube-proxy.yaml").display()),
            "--v=1".into(),
        ],
    )?;
    Ok(())
}

/// Stop the node and undo everything it did outside the state dir. Safe to
/// call when no node ran (it then only checks). Errors list what is left.
pub(super) fn stop(l: &Layout) -> Result<()> {
    let d = dir(l);
    let started = d.join("created-paths").is_file();
    let any_pid = NODE_COMPONENTS
        .iter()
        .any(|c| process::read_pid(&l.pidfile(c)).is_some());
    if !started && !any_pid && !netns_path().exists() {
        return Ok(());
    }
    // Pods first, through kubelet, so CNI and the sandboxes are torn down
    // as on a real node; bounded, since the apiserver may be gone.
    if is_running(l) && super::is_running(l) {
        let _ = kubectl(
            l,
            &[
                "delete",
                "pods",
                "--all-namespaces",
                &format!("--field-selector=spec.nodeName={NODE_NAME}"),
                "--grace-period=1",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60)
            && ctr(l, &["tasks", "ls", "-q"]).is_ok_and(|s| !s.trim().is_empty())
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if super::is_running(l) {
        let _ = kubectl(
            l,
            &[
                "delete",
                "--ignore-not-found",
                &format!("node/{NODE_NAME}"),
                "clusterrolebinding/e2e-real-node",
            ],
            None,
        );
    }
    // Tasks kubelet did not stop (it may be dead): kill them via containerd.
    if let Ok(tasks) = ctr(l, &["tasks", "ls", "-q"]) {
        for t in tasks.lines().filter(|t| !t.is_empty()) {
            let _ = ctr(l, &["tasks", "kill", "--signal", "SIGKILL", t]);
        }
    }
    let mut pids = Vec::new();
    for c in NODE_COMPONENTS.iter().rev() {
        if let Some(p) = process::read_pid(&l.pidfile(c))
            && process::pid_owned(p, &l.dir)
        {
            pids.push((c.to_string(), p));
        }
    }
    super::stop_pids(&pids, Duration::from_secs(15));
    for c in NODE_COMPONENTS {
        let _ = fs::remove_file(l.pidfile(c));
    }
    // Shims outlive containerd; then anything still in the node's cgroups.
    kill_shims(l);
    kill_cgroup_members();
    unmount_under(l);
    if netns_path().exists() {
        let _ = run("ip", &["netns", "delete", NETNS]);
    }
    // The host side of the veth goes with its peer; if not, remove it.
    if Path::new("/sys/class/net").join(HOST_VETH).exists() {
        let _ = run("ip", &["link", "delete", HOST_VETH]);
    }
    remove_cgroups();
    restore_sysctls(l);
    let _ = fs::remove_file(DEVICE_PLUGIN_SOCKET);
    remove_container_log_links(l);
    remove_cni_results();
    remove_created_paths(l);
    let _ = fs::remove_dir_all(&d);
    let left = leftovers(l);
    if !left.is_empty() {
        bail!("the real node left behind:\n  {}", left.join("\n  "));
    }
    Ok(())
}

fn kill_shims(l: &Layout) {
    let mut found = Vec::new();
    find_files(&containerd_state(l), "shim.pid", &mut found);
    for f in found {
        if let Some(p) = process::read_pid(&f) {
            process::signal(p, libc::SIGKILL);
        }
    }
    // Also shims found by their binary (a pidfile can be missing).
    for (pid, exe) in processes() {
        if exe == env::containerd_bin("containerd-shim-runc-v2") {
            process::signal(pid, libc::SIGKILL);
        }
    }
}

fn find_files(d: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(d) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            find_files(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

/// (pid, executable) of every process.
fn processes() -> Vec<(i32, PathBuf)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let exe = fs::read_link(e.path().join("exe")).ok()?;
            Some((pid, exe))
        })
        .collect()
}

/// cgroup directories under the node's cgroupRoot, deepest first.
fn cgroup_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    fn walk(d: &Path, v: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), v);
                }
            }
        }
        v.push(d.to_path_buf());
    }
    for h in cgroup_hierarchies() {
        let g = h.join(CGROUP_ROOT);
        if g.is_dir() {
            walk(&g, &mut v);
        }
    }
    v
}

fn cgroup_members() -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_dirs()
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

fn kill_cgroup_members() {
    let t0 = Instant::now();
    loop {
        let pids = cgroup_members();
        if pids.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return;
        }
        for p in pids {
            process::signal(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn remove_cgroups() {
    for _ in 0..20 {
        let dirs = cgroup_dirs();
        if dirs.is_empty() {
            return;
        }
        for d in dirs {
            let _ = fs::remove_dir(&d);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mount points (from /proc/self/mountinfo) that belong to the node: under
/// its state dir, under the fixed paths it created, and its netns file.
fn node_mounts(l: &Layout) -> Vec<PathBuf> {
    let created = created_paths(l);
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = mi
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| {
            m.starts_with(dir(l))
                || *m == netns_path()
                || m.starts_with("/var/lib/kubelet")
                || created.iter().any(|c| m.starts_with(c))
        })
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

fn unmount_under(l: &Layout) {
    for _ in 0..5 {
        let mounts = node_mounts(l);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 on a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn created_paths(l: &Layout) -> Vec<PathBuf> {
    fs::read_to_string(dir(l).join("created-paths"))
        .unwrap_or_default()
        .lines()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

fn restore_sysctls(l: &Layout) {
    let Ok(s) = fs::read_to_string(dir(l).join("sysctls")) else {
        return;
    };
    for line in s.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            let _ = fs::write(Path::new("/proc/sys").join(k), v);
        }
    }
}

/// kubelet links /var/log/containers/*.log to the pods' logs (under our podLogsDir).
fn container_log_links(l: &Layout) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/var/log/containers") else {
        return Vec::new();
    };
    let ours = dir(l).join("pod-logs");
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| fs::read_link(p).is_ok_and(|t| t.starts_with(&ours)))
        .collect()
}

fn remove_container_log_links(l: &Layout) {
    for p in container_log_links(l) {
        let _ = fs::remove_file(p);
    }
}

/// libcni's cache of results for the node's network (`e2e-pods-<id>-<if>`).
fn cni_results() -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir("/var/lib/cni/results") else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("e2e-pods-"))
        })
        .collect()
}

fn remove_cni_results() {
    for p in cni_results() {
        let _ = fs::remove_file(p);
    }
}

fn remove_created_paths(l: &Layout) {
    for p in created_paths(l) {
        let _ = fs::remove_dir_all(&p);
    }
}

/// What a running node leaves outside the state dir; after [`stop`], empty.
/// Each entry names the thing and where it is.
pub fn leftovers(l: &Layout) -> Vec<String> {
    let mut v = Vec::new();
    let bins = [
        env::k8s_bin("kubelet"),
        env::k8s_bin("kube-proxy"),
        env::containerd_bin("containerd"),
        env::containerd_bin("containerd-shim-runc-v2"),
    ];
    for (pid, exe) in processes() {
        if bins.contains(&exe) {
            v.push(format!("process {pid} {}", exe.display()));
        }
    }
    for p in cgroup_members() {
        v.push(format!("process {p} in cgroup {CGROUP_ROOT}"));
    }
    for m in node_mounts(l) {
        v.push(format!("mount {}", m.display()));
    }
    if netns_path().exists() {
        v.push(format!("netns {}", netns_path().display()));
    }
    if Path::new("/sys/class/net").join(HOST_VETH).exists() {
        v.push(format!("link {HOST_VETH}"));
    }
    for d in cgroup_dirs() {
        v.push(format!("cgroup {}", d.display()));
    }
    if Path::new(DEVICE_PLUGIN_SOCKET).exists() {
        v.push(format!("socket {DEVICE_PLUGIN_SOCKET}"));
    }
    for p in container_log_links(l) {
        v.push(format!("log link {}", p.display()));
    }
    for p in cni_results() {
        v.push(format!("CNI result {}", p.display()));
    }
    for p in created_paths(l) {
        if p.exists() {
            v.push(format!(
                "path {} (absent before the node started)",
                p.display()
            ));
        }
    }
    if let Ok(s) = fs::read_to_string(dir(l).join("sysctls")) {
        for line in s.lines() {
            if let Some((k, want)) = line.split_once(' ') {
                let now = fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap_or_default();
                if now.trim() != want {
                    v.push(format!("sysctl {k} = {} (was {want})", now.trim()));
                }
            }
        }
    }
    v
}

/// The host's sysctl values kubelet changes, as `key value` lines (for tests).
pub fn host_sysctls() -> Vec<(String, String)> {
    KUBELET_SYSCTLS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                fs::read_to_string(Path::new("/proc/sys").join(k))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// Pod `ns/name`'s /etc/resolv.conf as its container sees it: read through
/// the container process's root (`/proc/<pid>/root`), found with ctr by the
/// CRI's labels. (containerd writes it in its CRI sandbox dir and
/// bind-mounts it into every container of the pod.)
pub fn pod_resolv_conf(l: &Layout, ns: &str, name: &str) -> Result<String> {
    let p = PathBuf::from(format!(
        "/proc/{}/root/etc/resolv.conf",
        pod_pid(l, ns, name)?
    ));
    fs::read_to_string(&p).with_context(|| format!("pod {ns}/{name}: read {}", p.display()))
}

/// `/proc/<pid>/status` of pod `ns/name`'s (only) container's process: its
/// real uid, gid and capabilities.
pub fn pod_process_status(l: &Layout, ns: &str, name: &str) -> Result<String> {
    let p = PathBuf::from(format!("/proc/{}/status", pod_pid(l, ns, name)?));
    fs::read_to_string(&p).with_context(|| format!("pod {ns}/{name}: read {}", p.display()))
}

/// The pid (on the host) of pod `ns/name`'s only container, found with ctr
/// by the CRI's labels.
pub fn pod_pid(l: &Layout, ns: &str, name: &str) -> Result<String> {
    let ids = ctr(
        l,
        &[
            "containers",
            "ls",
            "-q",
            &format!(
                "labels.\"io.kubernetes.pod.name\"=={name},labels.\"io.kubernetes.pod.namespace\"=={ns},labels.\"io.cri-containerd.kind\"==container"
            ),
        ],
    )?;
    let ids: Vec<&str> = ids.lines().filter(|s| !s.is_empty()).collect();
    let [id] = ids.as_slice() else {
        bail!("pod {ns}/{name}: expected one container in containerd, found {ids:?}");
    };
    let tasks = ctr(l, &["tasks", "ls"])?;
    let pid = tasks
        .lines()
        .find_map(|t| {
            let f: Vec<&str> = t.split_whitespace().collect();
            (f.first() == Some(id) && f.get(2) == Some(&"RUNNING")).then(|| f[1].to_string())
        })
        .with_context(|| {
            format!("pod {ns}/{name}: no running task for container {id}:\n{tasks}")
        })?;
    Ok(pid)
}

/// The endpoints kube-proxy sends Service port `comment` to (its iptables
/// DNAT rules in the node's netns; `comment` is like `kube-system/kube-dns:dns`).
pub fn kube_proxy_endpoints(comment: &str) -> Result<Vec<String>> {
    let nat = in_netns("iptables-save", &["-t", "nat"])?;
    let tag = format!("\"{comment}\"");
    let mut v: Vec<String> = nat
        .lines()
        .filter(|l| l.contains(&tag) || l.contains(&format!(" {comment} ")))
        .filter_map(|l| l.split("--to-destination ").nth(1))
        .map(|d| d.split_whitespace().next().unwrap_or(d).to_string())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Log tail of a node component, for error messages.
pub fn log_tail(l: &Layout, component: &str) -> String {
    files::tail(&l.log(component), 30)
}
