//! Flux's source-controller and kustomize-controller as processes against
//! the local cluster (built from the Go module proxy by `build-deps.sh
//! flux`), their CRDs from the same modules, and the GitRepository +
//! Kustomization a user writes. Killed on drop, like the operator.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{Cluster, env, files};

/// Versions `build-deps.sh flux` builds (FLUX_SOURCE_VERSION, FLUX_KUSTOMIZE_VERSION).
pub const SOURCE_CONTROLLER_VERSION: &str = "v1.9.0";
pub const KUSTOMIZE_CONTROLLER_VERSION: &str = "v1.9.6";
pub const NAMESPACE: &str = "flux-system";

/// `<cache>/flux/<name>/<version>`: the binary and its `crd/` directory.
fn flux_dir(name: &str, version: &str) -> Result<PathBuf> {
    let dir = env::cache_dir().join("flux").join(name).join(version);
    if !dir.join(name).is_file() || !dir.join("crd").is_dir() {
        bail!(
            "{} is missing: run `bash e2e/scripts/build-deps.sh flux` (builds Flux's {name} {version} from the Go module proxy)",
            dir.join(name).display()
        );
    }
    Ok(dir)
}

/// Both controllers running; killed on drop.
pub struct Flux {
    children: Vec<(String, Child)>,
    pub logs: Vec<PathBuf>,
}

impl Flux {
    /// Flux's CRDs applied and Established, namespace `flux-system`, then
    /// both controllers started as the cluster's admin.
    pub fn start(c: &Cluster) -> Result<Flux> {
        let source = flux_dir("source-controller", SOURCE_CONTROLLER_VERSION)?;
        let kustomize = flux_dir("kustomize-controller", KUSTOMIZE_CONTROLLER_VERSION)?;
        for dir in [&source, &kustomize] {
            let crds = dir.join("crd");
            c.kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crds.to_str().context("CRD path")?,
            ])?;
        }
        c.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
            "crd/kustomizations.kustomize.toolkit.fluxcd.io",
        ])?;
        let ns = c.kubectl(&[
            "get",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "-o",
            "name",
        ])?;
        if ns.trim().is_empty() {
            c.kubectl(&["create", "namespace", NAMESPACE])?;
        }

        let mut flux = Flux {
            children: Vec::new(),
            logs: Vec::new(),
        };
        // source-controller serves artifacts (tarballs of the git revision)
        // on its storage address; kustomize-controller downloads them from
        // the address it advertises in GitRepository.status.artifact.url.
        let storage_port = free_port()?;
        let storage = c.layout.dir.join("flux-storage");
        let _ = fs::remove_dir_all(&storage);
        fs::create_dir_all(&storage)?;
        flux.spawn(
            c,
            &source.join("source-controller"),
            &[
                format!("--storage-path={}", storage.display()),
                format!("--storage-addr=127.0.0.1:{storage_port}"),
                format!("--storage-adv-addr=127.0.0.1:{storage_port}"),
                format!("--metrics-addr=127.0.0.1:{}", free_port()?),
                format!("--health-addr=127.0.0.1:{}", free_port()?),
                "--log-level=debug".into(),
            ],
        )?;
        flux.spawn(
            c,
            &kustomize.join("kustomize-controller"),
            &[
                format!("--metrics-addr=127.0.0.1:{}", free_port()?),
                format!("--health-addr=127.0.0.1:{}", free_port()?),
                "--log-level=debug".into(),
            ],
        )?;
        Ok(flux)
    }

    fn spawn(&mut self, c: &Cluster, bin: &std::path::Path, args: &[String]) -> Result<()> {
        let name = bin
            .file_name()
            .and_then(|n| n.to_str())
            .context("binary name")?
            .to_string();
        let log = c.layout.logs().join(format!("flux-{name}.log"));
        let out = File::create(&log)?;
        let child = Command::new(bin)
            .args(args)
            .env("KUBECONFIG", c.kubeconfig())
            .env("RUNTIME_NAMESPACE", NAMESPACE)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        self.children.push((name, child));
        self.logs.push(log);
        Ok(())
    }

    /// An error if a controller has exited; otherwise the last lines of
    /// both logs (for a failure's context).
    pub fn check_alive(&mut self) -> Result<()> {
        for ((name, child), log) in self.children.iter_mut().zip(&self.logs) {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "Flux {name} exited with {st}; log {}:\n{}",
                    log.display(),
                    files::tail(log, 30)
                );
            }
        }
        Ok(())
    }

    pub fn log_tails(&self, n: usize) -> String {
        self.logs
            .iter()
            .map(|l| format!("--- {}\n{}", l.display(), files::tail(l, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Flux {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A GitRepository `name` on branch `main` of `url`, and a Kustomization
/// `name` applying `path` from it, waiting for every object it applies to be
/// healthy (`wait: true`: kstatus on each), pruning what leaves git.
pub fn source_and_kustomization(name: &str, url: &str, path: &str) -> String {
    format!(
        r#"apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  interval: 10m
  url: {url}
  ref: {{branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  interval: 10m
  retryInterval: 5s
  timeout: 90s
  sourceRef: {{kind: GitRepository, name: {name}}}
  path: {path}
  prune: true
  wait: true
"#
    )
}

/// `flux reconcile`'s trigger: the `reconcile.fluxcd.io/requestedAt`
/// annotation. Returns the token; the controller echoes it in
/// `status.lastHandledReconcileAt` once it has acted on it.
pub fn request_reconcile(c: &Cluster, kind: &str, name: &str) -> Result<String> {
    let token = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    c.kubectl(&[
        "-n",
        NAMESPACE,
        "annotate",
        "--overwrite",
        kind,
        name,
        &format!("reconcile.fluxcd.io/requestedAt={token}"),
    ])?;
    Ok(token)
}
