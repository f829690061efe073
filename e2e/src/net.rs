//! Loopback ports in use and a minimal HTTP probe (component health).

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
