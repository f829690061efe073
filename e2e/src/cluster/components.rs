//! A component is a process-group leader started in the state dir, logging
//! to `logs/<name>.log`, with its pid in `pids/<name>.pid`: started, checked
//! alive, waited on until it serves.

use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Layout;
use crate::{files, process};

pub(super) fn spawn(
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
    files::write_file(&l.pidfile(name), pid.to_string())?;
    // The child outlives us; don't keep a handle that would reap it.
    std::mem::forget(child);
    Ok(pid)
}

pub(super) fn check_alive(l: &Layout, name: &str) -> Result<()> {
    let pid = process::read_pid(&l.pidfile(name)).unwrap_or(0);
    if !process::pid_alive(pid) {
        bail!(
            "{name} exited; last log lines ({}):\n{}",
            l.log(name).display(),
            files::tail(&l.log(name), 30)
        );
    }
    Ok(())
}

pub(super) fn wait_component(
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
                files::tail(&l.log(name), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
