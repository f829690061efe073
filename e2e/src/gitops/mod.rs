//! GitOps tools against the operator: Flux's controllers (built from the Go
//! module proxy) reading a git repository served on 127.0.0.1, kstatus (the
//! status library Flux's health checks use), and Argo CD's own health code
//! with dnspolicy's Lua check loaded.

pub mod argocd;
pub mod flux;
pub mod git_server;
pub mod kstatus;

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{env, files};

/// The cached build of the small Go program in `e2e/<name>/`:
/// `<cache>/<name>/<version>-<hash of its main.go and go.mod>/<name>`, as
/// build-deps.sh names it; an error naming the build step when missing.
pub(crate) fn go_program_bin(name: &str, version: &str, built_with: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    let mut src = std::fs::read(dir.join("main.go"))?;
    src.extend(std::fs::read(dir.join("go.mod"))?);
    let h = files::sha256_hex(&src);
    let bin = env::cache_dir()
        .join(name)
        .join(format!("{version}-{}", &h[..12]))
        .join(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: run `bash e2e/scripts/build-deps.sh {}` (builds e2e/{name} with {built_with})",
            bin.display(),
            name.strip_suffix("-health").unwrap_or(name)
        );
    }
    Ok(bin)
}
