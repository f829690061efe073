//! Small process, file and network helpers.

use anyhow::{Context, Result, bail};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exclusive advisory lock on a file, released on drop.
pub struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    pub fn acquire(path: &Path) -> Result<FileLock> {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("open lock {}", path.display()))?;
        // SAFETY: flock on a valid fd.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(FileLock(f))
    }
}

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

pub fn write_file(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

/// Atomic replace (write to a temp file in the same dir, rename), as kubelet
/// swaps ConfigMap volume contents.
pub fn write_atomic(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    let dir = path.parent().context("no parent")?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("f")
    ));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

pub fn tcp_port_in_use(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_err()
}

pub fn udp_port_in_use(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_err()
}

/// Minimal HTTP/1.0 GET over plain TCP: returns the status code.
pub fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while buf.len() < 64 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad HTTP response")?;
    Ok(code)
}

pub fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
