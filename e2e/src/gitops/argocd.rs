//! Argo CD's own health code (github.com/argoproj/argo-cd/v3 util/lua, and
//! gitops-engine's GetResourceHealth that its application controller calls)
//! with dnspolicy's health.lua as a resource customization, through
//! e2e/argocd-health (built by `build-deps.sh argocd`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::env;

/// ARGOCD_VERSION in build-deps.sh.
pub const ARGOCD_VERSION: &str = "v3.2.12";

/// Argo CD's verdict on one object.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub name: String,
    /// What the application controller shows: Healthy, Progressing, Degraded, ...
    pub status: String,
    pub message: String,
    /// health.lua's own answer (the controller answers first for an object
    /// being deleted).
    pub lua_status: String,
    pub lua_message: String,
}

/// The resource customization: manifests/gitops/argocd/resource_customizations/dnspolicy.dev/ClusterDNSPolicy.
pub fn customization_dir() -> PathBuf {
    env::repo_root()
        .join("manifests/gitops/argocd/resource_customizations/dnspolicy.dev/ClusterDNSPolicy")
}

/// `<cache>/argocd-health/<version>-<hash of e2e/argocd-health's main.go and go.mod>/argocd-health`.
pub fn argocd_health_bin() -> Result<PathBuf> {
    super::go_program_bin(
        "argocd-health",
        ARGOCD_VERSION,
        &format!("Argo CD {ARGOCD_VERSION} from the Go module proxy"),
    )
}

/// Argo CD's health of `object` (as `kubectl get -o json` prints it).
pub fn argocd_health(object: &Value) -> Result<Health> {
    let mut child = Command::new(argocd_health_bin()?)
        .arg("judge")
        .arg(customization_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start argocd-health")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(serde_json::to_string(object)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "argocd-health judge failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The customization's health_test.yaml run by Argo CD's code, as Argo CD's
/// own TestLuaHealthScript runs every resource_customizations directory.
/// Returns its report.
pub fn run_fixtures() -> Result<String> {
    let out = Command::new(argocd_health_bin()?)
        .arg("test")
        .arg(customization_dir())
        .stdin(Stdio::null())
        .output()
        .context("run argocd-health test")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("Argo CD's health code disagrees with health_test.yaml:\n{report}");
    }
    Ok(report)
}
