//! Loopback ports in use, a minimal HTTP probe (component health), and TCP
//! relays (one the fault suite can partition).

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

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

/// A plain HTTP/1.1 GET on loopback: status line, headers and body as text.
pub fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// Forward every TCP connection on `listen` to `to`, both ways, until killed
/// (`e2e-cluster tcp-forward`: the real node reaches the loopback-only apiserver).
pub fn tcp_forward(listen: SocketAddr, to: SocketAddr) -> Result<()> {
    let l = std::net::TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    for conn in l.incoming() {
        let Ok(a) = conn else { continue };
        std::thread::spawn(move || {
            let Ok(b) = TcpStream::connect(to) else {
                return;
            };
            let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
                return;
            };
            let pipe = |mut r: TcpStream, mut w: TcpStream| {
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            };
            let t = std::thread::spawn(move || pipe(a2, b));
            pipe(b2, a);
            let _ = t.join();
        });
    }
    Ok(())
}

/// A TCP relay on 127.0.0.1 that a test can partition, as an iptables DROP
/// between a client and `to` would: while cut, no byte flows either way on
/// open connections and a new connection gets no further than its handshake
/// with the relay; healed, held bytes flow on (TCP retransmits would deliver
/// them after a real partition too). Stops forwarding when dropped.
pub struct PartitionableRelay {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PartitionableRelay {
    pub fn start(to: SocketAddr) -> Result<PartitionableRelay> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("listen for the relay")?;
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (cut2, stop2) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            let tick = Duration::from_millis(50);
            while !stop2.load(Relaxed) {
                let a = match l.accept() {
                    Ok((a, _)) => a,
                    Err(_) => {
                        std::thread::sleep(tick);
                        continue;
                    }
                };
                let (cut, stop) = (cut2.clone(), stop2.clone());
                std::thread::spawn(move || {
                    // A connection opened during the cut waits for the heal.
                    while cut.load(Relaxed) && !stop.load(Relaxed) {
                        std::thread::sleep(tick);
                    }
                    let Ok(b) = TcpStream::connect(to) else {
                        return;
                    };
                    let pipe = move |mut r: TcpStream, mut w: TcpStream| {
                        let _ = r.set_nonblocking(false);
                        let _ = r.set_read_timeout(Some(tick));
                        let mut buf = vec![0u8; 64 * 1024];
                        while !stop.load(Relaxed) {
                            let n = match r.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => n,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) =>
                                {
                                    continue;
                                }
                                Err(_) => break,
                            };
                            while cut.load(Relaxed) && !stop.load(Relaxed) {
                                std::thread::sleep(tick);
                            }
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = w.shutdown(std::net::Shutdown::Write);
                    };
                    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
                        return;
                    };
                    let back = pipe.clone();
                    let t = std::thread::spawn(move || pipe(a2, b));
                    back(b2, a);
                    let _ = t.join();
                });
            }
        });
        Ok(PartitionableRelay { addr, cut, stop })
    }

    /// Partition: nothing passes until `heal`.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for PartitionableRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What an HTTPS GET answered: the status code and the body.
#[derive(Debug)]
pub struct HttpsReply {
    pub status: u16,
    pub body: String,
}

/// `GET https://{addr}{path}` with curl (a TLS client that is not ours),
/// with `Authorization: Bearer {token}` when given, trusting `ca` (a PEM
/// file) or, without one, skipping verification as a ServiceMonitor with
/// `insecureSkipVerify` does. `netns`: run inside that network namespace
/// (`nsenter --net`), e.g. the real node's.
pub fn https_get(
    addr: &str,
    path: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    netns: Option<&std::path::Path>,
) -> Result<HttpsReply> {
    let url = format!("https://{addr}{path}");
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        args.extend([
            format!("--net={}", ns.display()),
            "--".into(),
            "curl".into(),
        ]);
    }
    args.extend(
        ["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
            .iter()
            .map(|a| a.to_string()),
    );
    match ca {
        Some(ca) => args.extend(["--cacert".into(), ca.display().to_string()]),
        None => args.push("-k".into()),
    }
    if let Some(token) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
    }
    args.push(url.clone());
    let program = if netns.is_some() { "nsenter" } else { "curl" };
    let out = std::process::Command::new(program)
        .args(&args)
        .output()
        .with_context(|| {
            format!("run {program} for GET {url}: install curl (and util-linux's nsenter)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "curl GET {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok(HttpsReply {
        status: code
            .trim()
            .parse()
            .with_context(|| format!("status {code:?}"))?,
        body: body.to_string(),
    })
}
