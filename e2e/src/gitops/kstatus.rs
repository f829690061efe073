//! kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`), the status library
//! Flux's health checks use, run on objects' JSON through e2e/kstatus (a few
//! lines of Go built by `build-deps.sh kstatus`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

/// KSTATUS_VERSION in build-deps.sh.
pub const KSTATUS_VERSION: &str = "v0.37.2";

/// kstatus's verdict on one object.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    /// Current, InProgress, Failed, Terminating, NotFound or Unknown.
    pub status: String,
    pub message: String,
}

/// `<cache>/kstatus/<version>-<hash of e2e/kstatus's main.go and go.mod>/kstatus`.
pub fn kstatus_bin() -> Result<PathBuf> {
    super::go_program_bin(
        "kstatus",
        KSTATUS_VERSION,
        &format!("sigs.k8s.io/cli-utils {KSTATUS_VERSION}"),
    )
}

/// kstatus's verdict on `object` (as `kubectl get -o json` prints it).
pub fn kstatus(object: &Value) -> Result<Verdict> {
    let mut child = Command::new(kstatus_bin()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start kstatus")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(serde_json::to_string(object)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kstatus failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
