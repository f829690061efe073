//! Processes by pid: alive, ours (not a recycled pid), signalled, read from
//! pidfiles; and where the harness's own `e2e-cluster` binary is.

use anyhow::{Result, bail};
use std::fs;
use std::path::{Path, PathBuf};

pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie still "exists" for kill(0); treat it as dead.
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(rest) = stat.rsplit_once(')')
        && rest.1.trim_start().starts_with('Z')
    {
        return false;
    }
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Signal a whole process group (the components are group leaders).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: plain kill(2) on -pgid.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True if `pid` is alive and one of ours: its cwd is under `dir` (every
/// component and CoreDNS process is started there) or its args mention `dir`.
/// Guards against signalling a recycled pid.
pub fn pid_owned(pid: i32, dir: &Path) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    if fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir)) {
        return true;
    }
    let needle = dir.to_string_lossy().into_owned();
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
}

/// Path of the `e2e-cluster` binary: `DNSPOLICY_E2E_BIN`, else next to (or one
/// level above) the current executable (cargo puts test binaries in deps/).
pub fn e2e_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DNSPOLICY_E2E_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let cand = d.join("e2e-cluster");
        if cand.is_file() {
            return Ok(cand);
        }
        dir = d.parent();
    }
    bail!(
        "e2e-cluster binary not found next to {}; build it (cargo build -p dnspolicy-e2e) or set DNSPOLICY_E2E_BIN",
        exe.display()
    )
}
