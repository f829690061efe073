//! A git server on 127.0.0.1 for Flux's source-controller: `git
//! http-backend` (git's own smart-HTTP CGI) behind a minimal HTTP/1.1 server,
//! one thread per connection, the response closed at its end. It serves the
//! bare repositories under its root; tests commit through a work tree and push
//! to the bare repository on disk.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

/// A running server; stops accepting on drop.
pub struct GitServer {
    pub root: PathBuf,
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl GitServer {
    /// Serve the bare repositories under `root` (created if missing).
    pub fn start(root: &Path) -> Result<GitServer> {
        std::fs::create_dir_all(root)?;
        let backend = git_http_backend()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (root2, stop2) = (root.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, backend) = (root2.clone(), backend.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &root, &backend) {
                        eprintln!("git server: {e:#}");
                    }
                });
            }
        });
        Ok(GitServer {
            root: root.to_path_buf(),
            addr,
            stop,
        })
    }

    /// `http://127.0.0.1:<port>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn git_http_backend() -> Result<PathBuf> {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .context("run git --exec-path: git is required (apt-get install git)")?;
    let path = PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("git-http-backend");
    if !path.is_file() {
        bail!("{} is missing: the git package ships it", path.display());
    }
    Ok(path)
}

/// One request: parsed, handed to the CGI, its answer written back.
fn serve(conn: TcpStream, root: &Path, backend: &Path) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => bail!("bad request line {line:?}"),
    };
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        bail!("chunked request bodies are not supported by this test server");
    }
    let len: usize = headers
        .get("content-length")
        .map(|l| l.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new(backend);
    cgi.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", len.to_string())
        .env(
            "CONTENT_TYPE",
            headers.get("content-type").cloned().unwrap_or_default(),
        );
    for (k, v) in &headers {
        cgi.env(
            format!("HTTP_{}", k.to_ascii_uppercase().replace('-', "_")),
            v,
        );
    }
    let mut child = cgi
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(&body)?;
    let out = child.wait_with_output()?;

    // CGI output: header lines, a blank line, the body; `Status:` sets the code.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .context("git http-backend wrote no header block")?;
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    let mut header_lines = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => header_lines.push_str(&format!("{h}\r\n")),
        }
    }
    response.extend_from_slice(
        format!("HTTP/1.1 {status}\r\n{header_lines}Connection: close\r\n\r\n").as_bytes(),
    );
    response.extend_from_slice(&out.stdout[split.0 + split.1..]);
    let mut conn = conn;
    conn.write_all(&response)?;
    conn.shutdown(std::net::Shutdown::Both)?;
    Ok(())
}

/// A bare repository `<server root>/<name>` and a work tree to commit from.
pub struct GitRepo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl GitRepo {
    /// A fresh bare repository with branch `main`, and its work tree in `work`.
    pub fn create(server: &GitServer, name: &str, work: &Path) -> Result<GitRepo> {
        let bare = server.root.join(name);
        let _ = std::fs::remove_dir_all(&bare);
        let _ = std::fs::remove_dir_all(work);
        git(&server.root, &["init", "-q", "--bare", "-b", "main", name])?;
        std::fs::create_dir_all(work)?;
        git(work, &["init", "-q", "-b", "main"])?;
        git(
            work,
            &["remote", "add", "origin", bare.to_str().context("path")?],
        )?;
        Ok(GitRepo {
            bare,
            work: work.to_path_buf(),
        })
    }

    /// Write `files` (path relative to the work tree -> content), commit the
    /// work tree as it is (files removed from it included) and push to the
    /// bare repository. Returns the commit's hash.
    pub fn commit_and_push(&self, message: &str, files: &[(&str, &str)]) -> Result<String> {
        for (path, content) in files {
            let p = self.work.join(path);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&p, content)?;
        }
        git(&self.work, &["add", "-A"])?;
        git(
            &self.work,
            &[
                "-c",
                "user.name=dnspolicy e2e",
                "-c",
                "user.email=e2e@dnspolicy.invalid",
                "commit",
                "-q",
                "-m",
                message,
            ],
        )?;
        git(&self.work, &["push", "-q", "origin", "main"])?;
        Ok(git(&self.work, &["rev-parse", "HEAD"])?.trim().to_string())
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
