//! The "pod runtime": kubelet's job for CoreDNS pods only. For each scheduled
//! `k8s-app=kube-dns` pod it runs the real CoreDNS binary of the image's tag on
//! its own loopback address (127.0.53.N, its "pod IP"), inside its own mount
//! namespace with the pod's volumes bind-mounted where the pod spec mounts
//! them (ConfigMap volumes kept in sync, projected service-account token) and
//! /etc/resolv.conf = the node's resolv.conf (dnsPolicy: Default). It probes
//! the container's readinessProbe like kubelet and publishes the result as the
//! `e2e.dnspolicy.dev/ready` annotation, which kwok stages turn into the Ready
//! condition. Crashed processes restart with back-off, as in CrashLoopBackOff.

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount, Volume};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Layout;
use crate::env;
use crate::mountns::{self, Bind, Unshare};
use crate::{files, net, process};

pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

/// The CoreDNS version an image reference names (`...coredns:v1.14.2` or `:1.8.4`).
pub fn image_version(image: &str) -> Option<String> {
    let tag = image.rsplit_once(':')?.1;
    if tag.contains('/') {
        return None;
    }
    let tag = tag.split('@').next()?;
    Some(if tag.starts_with('v') {
        tag.to_string()
    } else {
        format!("v{tag}")
    })
}

struct PodProc {
    ns: String,
    name: String,
    uid: String,
    addr: Ipv4Addr,
    dir: PathBuf,
    child: Option<Child>,
    restarts: u32,
    next_start: Instant,
    started: Instant,
    ready: bool,
    probe_fails: u32,
    last_error: String,
    token_at: Option<Instant>,
    stopping: Option<Instant>,
    grace: Duration,
    published: Option<(bool, u32, String)>,
}

impl PodProc {
    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
    fn running(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(None) => true,
            Ok(Some(_)) if self.stopping.is_some() => {
                self.child = None;
                let _ = fs::remove_file(self.dir.join("pid"));
                false
            }
            Ok(Some(st)) => {
                let log = self.dir.join("coredns.log");
                self.last_error = format!(
                    "exited ({st}): {}",
                    files::tail(&log, 3).replace('\n', " | ")
                );
                eprintln!(
                    "[runtime] {}/{} CoreDNS {}",
                    self.ns, self.name, self.last_error
                );
                self.child = None;
                let _ = fs::remove_file(self.dir.join("pid"));
                // CrashLoopBackOff, compressed for tests: 1s, 2s, 4s .. 10s.
                let back =
                    Duration::from_secs(1u64 << self.restarts.min(3)).min(Duration::from_secs(10));
                self.next_start = Instant::now() + back;
                self.restarts += 1;
                false
            }
            Err(_) => false,
        }
    }
    fn stop(&mut self) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now());
            if let Some(p) = self.pid() {
                process::signal(p, libc::SIGTERM);
            }
        }
    }
}

struct Runtime {
    client: Client,
    // Watches (not polling) keep API traffic, and the audit log, quiet.
    pod_store: Store<Pod>,
    cm_store: Store<ConfigMap>,
    layout: Layout,
    pods: HashMap<String, PodProc>,
    ca: String,
}

fn configmap_files(
    cm: &ConfigMap,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k.clone(), v.0.clone());
    }
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| all.get(&i.key).map(|d| (i.path.clone(), d.clone())))
            .collect(),
        None => all,
    }
}

/// Make `dir` hold exactly `files` (atomic per file; stale regular files removed).
fn sync_dir(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    fs::create_dir_all(dir)?;
    for (name, data) in files {
        let p = dir.join(name);
        if fs::read(&p).ok().as_deref() != Some(data.as_slice()) {
            files::write_atomic(&p, data)?;
        }
    }
    for e in fs::read_dir(dir)?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if e.file_type()?.is_file() && !files.contains_key(&n) {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

impl Runtime {
    async fn configmap(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
        if ns == "kube-system" {
            return Ok(self
                .cm_store
                .get(&ObjectRef::new(name).within(ns))
                .map(|c| (*c).clone()));
        }
        Ok(Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
    }

    async fn token(
        &self,
        pod: &Pod,
        sa: &str,
        expiration: i64,
        audience: Option<String>,
    ) -> Result<String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let tr = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience.map(|a| vec![a]),
                expiration_seconds: Some(expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            ..Default::default()
        };
        let r = api
            .create_token_request(sa, &PostParams::default(), &tr)
            .await?;
        r.status
            .and_then(|s| s.token)
            .context("token request without token")
    }

    /// Write every volume the container mounts; returns the bind mounts.
    async fn materialize(&self, p: &mut PodProc, pod: &Pod, c: &Container) -> Result<Vec<Bind>> {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let refresh_token = p
            .token_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1800));
        let mut mounts = Vec::new();
        let empty = vec![];
        for vm in c.volume_mounts.as_ref().unwrap_or(&empty) {
            let Some(v): Option<&Volume> =
                spec.volumes.iter().flatten().find(|v| v.name == vm.name)
            else {
                bail!("volume {} not found", vm.name);
            };
            let vdir = p.dir.join("volumes").join(&v.name);
            if let Some(cmv) = &v.config_map {
                match self.configmap(&ns, &cmv.name).await? {
                    Some(cm) => sync_dir(&vdir, &configmap_files(&cm, cmv.items.as_ref()))?,
                    None if cmv.optional == Some(true) => sync_dir(&vdir, &BTreeMap::new())?,
                    None => bail!("configmap {}/{} not found", ns, cmv.name),
                }
            } else if let Some(sv) = &v.secret {
                let name = sv.secret_name.clone().unwrap_or_default();
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let mut files = BTreeMap::new();
                match secrets.get_opt(&name).await? {
                    Some(s) => {
                        for (k, d) in s.data.iter().flatten() {
                            files.insert(k.clone(), d.0.clone());
                        }
                    }
                    None if sv.optional == Some(true) => {}
                    None => bail!("secret {ns}/{name} not found"),
                }
                sync_dir(&vdir, &files)?;
            } else if let Some(pv) = &v.projected {
                let mut files = BTreeMap::new();
                for src in pv.sources.iter().flatten() {
                    if let Some(t) = &src.service_account_token {
                        let tok_path = vdir.join(&t.path);
                        if refresh_token || !tok_path.exists() {
                            let sa = spec
                                .service_account_name
                                .clone()
                                .unwrap_or_else(|| "default".into());
                            let tok = self
                                .token(
                                    pod,
                                    &sa,
                                    t.expiration_seconds.unwrap_or(3607),
                                    t.audience.clone(),
                                )
                                .await?;
                            files.insert(t.path.clone(), tok.into_bytes());
                        } else {
                            files.insert(t.path.clone(), fs::read(&tok_path)?);
                        }
                    }
                    if let Some(cmp) = &src.config_map {
                        match self.configmap(&ns, &cmp.name).await? {
                            Some(cm) => files.extend(configmap_files(&cm, cmp.items.as_ref())),
                            None if cmp.optional == Some(true) => {}
                            None => bail!("configmap {}/{} not found", ns, cmp.name),
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for i in d.items.iter().flatten() {
                            let val = match i.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                                Some("metadata.namespace") => ns.clone(),
                                Some("metadata.name") => p.name.clone(),
                                Some("metadata.uid") => p.uid.clone(),
                                _ => continue,
                            };
                            files.insert(i.path.clone(), val.into_bytes());
                        }
                    }
                }
                sync_dir(&vdir, &files)?;
            } else if v.empty_dir.is_some() {
                fs::create_dir_all(&vdir)?;
            } else if let Some(h) = &v.host_path {
                mounts.push(Bind::dir(
                    &h.path,
                    &vm.mount_path,
                    vm.read_only == Some(true),
                ));
                continue;
            } else {
                bail!(
                    "volume {}: only configMap, secret, projected, emptyDir and hostPath are supported",
                    v.name
                );
            }
            mounts.push(Bind::dir(vdir, &vm.mount_path, vm.read_only == Some(true)));
        }
        if refresh_token {
            p.token_at = Some(Instant::now());
        }
        // Parents before children (e.g. /etc/coredns before /etc/coredns/custom);
        // a child's mount point is made in the parent's source, which is
        // read-only once mounted.
        mounts.sort_by_key(|m| m.target.matches('/').count());
        for (i, m) in mounts.iter().enumerate() {
            for parent in &mounts[..i] {
                let pre = format!("{}/", parent.target.trim_end_matches('/'));
                if let Some(rel) = m.target.strip_prefix(&pre) {
                    fs::create_dir_all(parent.source.join(rel))?;
                }
            }
        }
        Ok(mounts)
    }

    fn start(&self, p: &mut PodProc, c: &Container, mounts: &[Bind]) -> Result<()> {
        let image = c.image.clone().unwrap_or_default();
        let version = image_version(&image).context("image without tag")?;
        let bin = env::coredns_bin(&version);
        if !bin.is_file() {
            bail!(
                "ErrImagePull: no CoreDNS {version} binary at {} (build it: COREDNS_OLD_VERSION={version} e2e/scripts/build-deps.sh coredns)",
                bin.display()
            );
        }
        let resolv = p.dir.join("resolv.conf");
        fs::copy(self.layout.node_resolv_conf(), &resolv).context("node resolv.conf")?;
        let log_path = p.dir.join("coredns.log");
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        use std::io::Write;
        writeln!(
            log,
            "=== start #{} of {image} as {bin:?} on {}",
            p.restarts, p.addr
        )?;
        let mut args: Vec<String> = c
            .command
            .clone()
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .collect();
        args.extend(c.args.clone().unwrap_or_default());
        let mut cmd = Unshare::new()
            .binds(mounts.iter().cloned())
            .bind(Bind::file(&resolv, "/etc/resolv.conf"))
            .command(&bin);
        cmd.args(&args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOSTNAME", &p.name)
            .env("POD_IP", p.addr.to_string())
            .env("KUBERNETES_SERVICE_HOST", env::CONTROL_IP.to_string())
            .env("KUBERNETES_SERVICE_PORT", env::APISERVER_PORT.to_string())
            .env(
                "KUBERNETES_SERVICE_PORT_HTTPS",
                env::APISERVER_PORT.to_string(),
            )
            .current_dir(&p.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                cmd.env(&e.name, v);
            }
        }
        // Die with the runtime if it is killed hard.
        mountns::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawn unshare")?;
        files::write_file(&p.dir.join("pid"), child.id().to_string())?;
        p.child = Some(child);
        p.started = Instant::now();
        p.probe_fails = 0;
        Ok(())
    }

    fn alloc_addr(&self, pod: &Pod) -> Ipv4Addr {
        let [a, b, c] = env::COREDNS_NET;
        let used: Vec<Ipv4Addr> = self.pods.values().map(|p| p.addr).collect();
        if let Some(ip) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(env::ANN_ADDRESS))
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .filter(|ip| !used.contains(ip))
        {
            return ip;
        }
        (1..=254u8)
            .map(|d| Ipv4Addr::new(a, b, c, d))
            .find(|ip| !used.contains(ip))
            .expect("254 CoreDNS pods")
    }

    async fn tick(&mut self) -> Result<()> {
        let mut live: HashMap<String, Pod> = HashMap::new();
        for pod in self.pod_store.state().into_iter().map(|p| (*p).clone()) {
            let scheduled = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if scheduled && pod.metadata.deletion_timestamp.is_none() {
                live.insert(pod.metadata.uid.clone().unwrap_or_default(), pod);
            }
        }
        // Gone or terminating: stop; forget once the process has exited.
        for (uid, p) in self.pods.iter_mut() {
            if !live.contains_key(uid) {
                p.stop();
            }
        }
        let mut done = Vec::new();
        for (uid, p) in self.pods.iter_mut() {
            if let Some(t) = p.stopping {
                if !p.running() {
                    done.push(uid.clone());
                } else if t.elapsed() > p.grace
                    && let Some(pid) = p.pid()
                {
                    process::signal(pid, libc::SIGKILL);
                }
            }
        }
        for uid in done {
            if let Some(p) = self.pods.remove(&uid) {
                let keep = self.layout.logs().join(format!("coredns-{}.log", p.name));
                let _ = fs::copy(p.dir.join("coredns.log"), keep);
                let _ = fs::remove_dir_all(&p.dir);
                eprintln!("[runtime] {}/{} stopped", p.ns, p.name);
            }
        }
        for (uid, pod) in &live {
            if !self.pods.contains_key(uid) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let addr = self.alloc_addr(pod);
                let dir = self.layout.pods().join(format!("{ns}_{name}"));
                fs::create_dir_all(&dir)?;
                let grace = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                eprintln!("[runtime] {ns}/{name} scheduled; address {addr}");
                self.pods.insert(
                    uid.clone(),
                    PodProc {
                        ns,
                        name,
                        uid: uid.clone(),
                        addr,
                        dir,
                        child: None,
                        restarts: 0,
                        next_start: Instant::now(),
                        started: Instant::now(),
                        ready: false,
                        probe_fails: 0,
                        last_error: String::new(),
                        token_at: None,
                        stopping: None,
                        grace: Duration::from_secs(grace.max(1) as u64),
                        published: None,
                    },
                );
            }
        }
        let uids: Vec<String> = live.keys().cloned().collect();
        for uid in uids {
            let pod = &live[&uid];
            let mut p = self.pods.remove(&uid).unwrap();
            let r = self.sync_pod(&mut p, pod).await;
            if let Err(e) = r {
                let msg = format!("{e:#}");
                if msg != p.last_error {
                    eprintln!("[runtime] {}/{}: {msg}", p.ns, p.name);
                }
                p.last_error = msg;
                p.ready = false;
            }
            let _ = self.publish(&mut p).await;
            self.pods.insert(uid, p);
        }
        Ok(())
    }

    async fn sync_pod(&self, p: &mut PodProc, pod: &Pod) -> Result<()> {
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .context("pod without containers")?
            .clone();
        // Volumes stay in sync for running pods too (kubelet's ConfigMap updates).
        let mounts = self.materialize(p, pod, &c).await?;
        let running = p.running();
        if !running {
            p.ready = false;
            if Instant::now() >= p.next_start {
                self.start(p, &c, &mounts)?;
            }
            return Ok(());
        }
        // readinessProbe.httpGet like kubelet; no probe = ready when running.
        let ok = match c
            .readiness_probe
            .as_ref()
            .and_then(|rp| rp.http_get.as_ref())
        {
            Some(hg) => {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                let port = match &hg.port {
                    IntOrString::Int(i) => *i as u16,
                    IntOrString::String(n) => c
                        .ports
                        .iter()
                        .flatten()
                        .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                        .map(|cp| cp.container_port as u16)
                        .context("named probe port not found")?,
                };
                let addr = SocketAddr::new(p.addr.into(), port);
                let path = hg.path.clone().unwrap_or_else(|| "/".into());
                tokio::task::spawn_blocking(move || {
                    net::http_get_status(addr, &path, Duration::from_millis(800))
                })
                .await?
                .is_ok_and(|code| (200..400).contains(&code))
            }
            None => true,
        };
        if ok {
            p.ready = true;
            p.probe_fails = 0;
            p.last_error.clear();
        } else {
            p.probe_fails += 1;
            if p.probe_fails >= 3 {
                p.ready = false;
            }
        }
        Ok(())
    }

    async fn publish(&self, p: &mut PodProc) -> Result<()> {
        let mut err = p.last_error.clone();
        err.truncate(1000);
        let state = (p.ready, p.restarts, err.clone());
        if p.published.as_ref() == Some(&state) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.ns);
        let patch = serde_json::json!({"metadata": {"annotations": {
            env::ANN_ADDRESS: p.addr.to_string(),
            env::ANN_READY: p.ready.to_string(),
            env::ANN_RESTARTS: p.restarts.to_string(),
            env::ANN_LAST_ERROR: err,
        }}});
        api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        p.published = Some(state);
        Ok(())
    }

    fn shutdown(&mut self) {
        for p in self.pods.values_mut() {
            p.stop();
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(8) && self.pods.values_mut().any(|p| p.running()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for p in self.pods.values_mut() {
            if let Some(pid) = p.pid() {
                process::signal(pid, libc::SIGKILL);
                let _ = p.child.as_mut().map(|c| c.wait());
            }
        }
    }
}

pub async fn run(dir: PathBuf) -> Result<()> {
    let layout = Layout::new(dir);
    let client = client_for(&layout.kubeconfig_for("runtime")).await?;
    let ca = fs::read_to_string(layout.pki().join("ca.crt"))?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let (pod_store, pod_writer) = reflector::store();
    let pod_watch = reflector::reflector(
        pod_writer,
        watcher(
            pods_api,
            watcher::Config::default().labels("k8s-app=kube-dns"),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(pod_watch);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let (cm_store, cm_writer) = reflector::store();
    let cm_watch = reflector::reflector(cm_writer, watcher(cm_api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(cm_watch);
    pod_store.wait_until_ready().await?;
    cm_store.wait_until_ready().await?;
    let mut rt = Runtime {
        client,
        pod_store,
        cm_store,
        layout,
        pods: HashMap::new(),
        ca,
    };
    let _ = &rt.ca;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    eprintln!("[runtime] watching kube-system pods k8s-app=kube-dns");
    loop {
        if let Err(e) = rt.tick().await {
            eprintln!("[runtime] tick: {e:#}");
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
    eprintln!("[runtime] stopping CoreDNS processes");
    rt.shutdown();
    Ok(())
}
