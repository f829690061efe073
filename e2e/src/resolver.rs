//! Lookups as a pod makes them: a resolv.conf like kubelet writes, bind-mounted
//! over /etc/resolv.conf in a private mount namespace, then glibc's
//! `getent ahosts` or the musl probe (getaddrinfo, AF_UNSPEC).

use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::env;
use crate::mountns::{Bind, Unshare};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Resolver {
    /// glibc: `getent ahosts NAME`
    Glibc,
    /// musl: static getaddrinfo probe built with musl-gcc
    Musl,
}

#[derive(Clone, Debug)]
pub struct LookupSpec {
    pub resolver: Resolver,
    pub name: String,
    /// The CoreDNS pod address to use as `nameserver` (stands in for the
    /// kube-dns ClusterIP, which is never dialled).
    pub nameserver: IpAddr,
    pub search: Vec<String>,
    pub ndots: u32,
    /// `options timeout:` / `attempts:`; None = not written (kubelet leaves
    /// them out: glibc and musl default to 5 s and 2).
    pub timeout: Option<u32>,
    pub attempts: Option<u32>,
    /// Kill the resolver after this long (reported as a failure).
    pub deadline: Duration,
}

impl LookupSpec {
    pub fn new(
        resolver: Resolver,
        name: &str,
        nameserver: IpAddr,
        search: &[&str],
        ndots: u32,
    ) -> Self {
        LookupSpec {
            resolver,
            name: name.into(),
            nameserver,
            search: search.iter().map(|s| s.to_string()).collect(),
            ndots,
            timeout: None,
            attempts: None,
            deadline: Duration::from_secs(120),
        }
    }
    pub fn resolv_conf(&self) -> String {
        let mut s = format!("nameserver {}\n", self.nameserver);
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        let mut opts = vec![format!("ndots:{}", self.ndots)];
        if let Some(t) = self.timeout {
            opts.push(format!("timeout:{t}"));
        }
        if let Some(a) = self.attempts {
            opts.push(format!("attempts:{a}"));
        }
        s.push_str(&format!("options {}\n", opts.join(" ")));
        s
    }
}

#[derive(Clone, Debug)]
pub struct Lookup {
    pub ok: bool,
    /// Unique addresses, in the order the resolver printed them.
    pub addrs: Vec<IpAddr>,
    pub elapsed: Duration,
    pub exit_code: Option<i32>,
    /// Raw stdout+stderr of getent / the probe (musl: `EAI <code> <msg>` on failure).
    pub output: String,
    pub resolv_conf: String,
}

/// Run one lookup; fails only if the resolver could not be run at all.
pub async fn lookup(spec: &LookupSpec) -> Result<Lookup> {
    let rc = spec.resolv_conf();
    let dir = std::env::temp_dir().join("dnspolicy-e2e-lookups");
    std::fs::create_dir_all(&dir)?;
    let nonce = format!("{}-{:?}", std::process::id(), Instant::now());
    let rc_path: PathBuf = dir.join(format!(
        "resolv-{}.conf",
        &crate::files::sha256_hex(nonce.as_bytes())[..12]
    ));
    std::fs::write(&rc_path, &rc)?;
    // A pod's /etc/hosts and a plain `hosts: files dns`, so the host's
    // nsswitch (myhostname, resolve, ...) cannot change what glibc does.
    let hosts = dir.join("hosts");
    let nss = dir.join("nsswitch.conf");
    for (p, text) in [
        (
            &hosts,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        (&nss, "hosts: files dns\n"),
    ] {
        // Concurrent lookups share these: replace atomically, and only if needed.
        if std::fs::read_to_string(p).ok().as_deref() != Some(text) {
            crate::files::write_atomic(p, text)?;
        }
    }
    let (prog, args): (PathBuf, Vec<String>) = match spec.resolver {
        Resolver::Glibc => ("getent".into(), vec!["ahosts".into(), spec.name.clone()]),
        Resolver::Musl => {
            let b = env::musl_probe_bin();
            anyhow::ensure!(
                b.is_file(),
                "musl probe missing at {} (run e2e/scripts/build-deps.sh musl)",
                b.display()
            );
            (b, vec![spec.name.clone()])
        }
    };
    let mut cmd = tokio::process::Command::from(
        Unshare::new()
            .bind(Bind::file(&rc_path, "/etc/resolv.conf"))
            .bind(Bind::file(&hosts, "/etc/hosts"))
            .bind(Bind::file(&nss, "/etc/nsswitch.conf"))
            .command(&prog),
    );
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let child = cmd.spawn().context("spawn unshare")?;
    let out = tokio::time::timeout(spec.deadline, child.wait_with_output()).await;
    let elapsed = t0.elapsed();
    let _ = std::fs::remove_file(&rc_path);
    let out = match out {
        Ok(o) => o?,
        Err(_) => {
            return Ok(Lookup {
                ok: false,
                addrs: vec![],
                elapsed,
                exit_code: None,
                output: format!("killed after {:?}", spec.deadline),
                resolv_conf: rc,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut addrs: Vec<IpAddr> = Vec::new();
    for line in stdout.lines() {
        let tok = match spec.resolver {
            Resolver::Glibc => line.split_whitespace().next(),
            Resolver::Musl => line.strip_prefix("ADDR ").map(str::trim),
        };
        if let Some(ip) = tok.and_then(|t| t.parse::<IpAddr>().ok())
            && !addrs.contains(&ip)
        {
            addrs.push(ip);
        }
    }
    let code = out.status.code();
    Ok(Lookup {
        ok: out.status.success() && !addrs.is_empty(),
        addrs,
        elapsed,
        exit_code: code,
        output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        resolv_conf: rc,
    })
}

/// The search list kubelet gives a ClusterFirst pod in `ns` on a node whose
/// resolv.conf has `host_search`.
pub fn pod_search(ns: &str, host_search: &[&str]) -> Vec<String> {
    let d = env::CLUSTER_DOMAIN;
    let mut v = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
    v.extend(host_search.iter().map(|s| s.to_string()));
    v
}

pub fn default_nameserver() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        env::COREDNS_NET[0],
        env::COREDNS_NET[1],
        env::COREDNS_NET[2],
        1,
    ))
}
