//! CoreDNS queries per second with the managed Corefile against the stock
//! one: two standalone CoreDNS processes, the same query mix, dnsperf.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::table::*;
use super::*;
use crate::mountns::{self, Bind, Unshare};
use crate::{Cluster, env, files, net, resolver};

impl Bench {
    pub(super) async fn qps(&self, t: &mut Table, managed: &str) -> Result<()> {
        let version = env::coredns_kubeadm_version();
        let upstream = env::UPSTREAM_IP;
        log("dnsperf: stock vs managed Corefile, standalone CoreDNS on 127.0.57.1 / 127.0.57.2");
        let stock = StandaloneCoredns::start(
            &self.c,
            "qps-stock",
            &version,
            Ipv4Addr::new(127, 0, 57, 1),
            &self.stock,
            upstream,
        )?;
        let mngd = StandaloneCoredns::start(
            &self.c,
            "qps-managed",
            &version,
            Ipv4Addr::new(127, 0, 57, 2),
            managed,
            upstream,
        )?;
        let qfile = self.c.layout.dir.join("bench").join("queries.txt");
        let (mix, counts) = query_mix();
        std::fs::write(&qfile, mix)?;
        // Warm both (caches, the kubernetes plugin's informers).
        dnsperf(stock.addr, &qfile, 2)?;
        dnsperf(mngd.addr, &qfile, 2)?;
        let (mut s_q, mut m_q, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut lost = 0;
        let mut last = (DnsperfRun::default(), DnsperfRun::default());
        for r in 0..self.p.qps_rounds {
            // Alternate which goes first so drift does not favour one side.
            let (s, m) = if r % 2 == 0 {
                let s = dnsperf(stock.addr, &qfile, self.p.qps_secs)?;
                (s, dnsperf(mngd.addr, &qfile, self.p.qps_secs)?)
            } else {
                let m = dnsperf(mngd.addr, &qfile, self.p.qps_secs)?;
                (dnsperf(stock.addr, &qfile, self.p.qps_secs)?, m)
            };
            log(format!(
                "  round {}: stock {:.0} qps, managed {:.0} qps",
                r + 1,
                s.qps,
                m.qps
            ));
            lost += s.lost + m.lost;
            s_q.push(s.qps);
            m_q.push(m.qps);
            ratios.push(m.qps / s.qps);
            last = (s, m);
        }
        let ratio = median(&ratios);
        t.at_least(
            "CoreDNS qps, managed Corefile / stock (dnsperf, same run)",
            format!(
                "{ratio:.3} (managed {:.0} vs stock {:.0} qps; median of {} x {} s pairs)",
                median(&m_q),
                median(&s_q),
                self.p.qps_rounds,
                self.p.qps_secs
            ),
            ratio,
            0.97,
            ">= 0.97",
        );
        t.note(format!(
            "dnsperf query mix ({} queries, A and AAAA): {}. Both CoreDNS {version} processes forward `.` to the answering upstream 127.0.54.2, which also plays MagicDNS for forwardTo; 20 clients, 200 in flight. Last round's answers: stock NOERROR {} / NXDOMAIN {} / SERVFAIL {}, managed NOERROR {} / NXDOMAIN {} / SERVFAIL {}; lost queries over all rounds: {lost}.",
            counts.0 + counts.1 + counts.2 + counts.3,
            format_args!("{} in-cluster names and search expansions under cluster.local, {} suffixed with tailb45a71.ts.net, {} outside names, {} real tailnet host", counts.0, counts.1, counts.2, counts.3),
            last.0.noerror, last.0.nxdomain, last.0.servfail,
            last.1.noerror, last.1.nxdomain, last.1.servfail,
        ));
        Ok(())
    }
}

/// What polluted pods send: every search expansion (ndots 5) of in-cluster
/// and outside names, A and AAAA, plus a real host in the tailnet.
/// Returns the file and (under cluster.local, suffixed, outside, tailnet host).
fn query_mix() -> (String, (usize, usize, usize, usize)) {
    let search = resolver::pod_search("workflow-engine", &[env::NODE_SEARCH]);
    let names = [
        NAME,
        "kubernetes.default.svc.cluster.local",
        "kube-dns.kube-system.svc.cluster.local",
        "api.github.com",
        "registry.k8s.io",
    ];
    let mut out = String::new();
    let mut counts = (0, 0, 0, 0);
    for name in names {
        let mut qs: Vec<String> = search.iter().map(|s| format!("{name}.{s}")).collect();
        qs.push(name.to_string());
        for q in qs {
            for ty in ["A", "AAAA"] {
                out.push_str(&format!("{q} {ty}\n"));
                if q.ends_with(env::NODE_SEARCH) {
                    counts.1 += 1;
                } else if q.ends_with(env::CLUSTER_DOMAIN) {
                    counts.0 += 1;
                } else {
                    counts.2 += 1;
                }
            }
        }
    }
    out.push_str(&format!("myhost.{} A\n", env::NODE_SEARCH));
    counts.3 += 1;
    (out, counts)
}

/// A CoreDNS process outside the cluster's pods, run as the pod runtime runs
/// one (private mount namespace, in-cluster service-account files, a
/// resolv.conf of its own, `POD_IP` = its loopback address) with a Corefile
/// given as text; killed on drop.
pub struct StandaloneCoredns {
    child: Child,
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
}

impl StandaloneCoredns {
    /// `upstream` is the nameserver of its /etc/resolv.conf, which the stock
    /// `forward . /etc/resolv.conf` uses.
    pub fn start(
        c: &Cluster,
        name: &str,
        version: &str,
        addr: Ipv4Addr,
        corefile: &str,
        upstream: Ipv4Addr,
    ) -> Result<Self> {
        let bin = env::coredns_bin(version);
        if !bin.is_file() {
            bail!("no CoreDNS {version} binary at {}", bin.display());
        }
        if net::udp_port_in_use(SocketAddr::new(addr.into(), 53)) {
            bail!("{addr}:53 is already in use");
        }
        let dir = c.layout.dir.join("bench").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::write(dir.join("Corefile"), corefile)?;
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {upstream}\nsearch {}\n", env::NODE_SEARCH),
        )?;
        std::fs::copy(c.layout.token(), sa.join("token")).context("admin token")?;
        std::fs::copy(c.layout.pki().join("ca.crt"), sa.join("ca.crt"))?;
        std::fs::write(sa.join("namespace"), "kube-system")?;
        let log = std::fs::File::create(dir.join("coredns.log"))?;
        let mut cmd = Unshare::new()
            .bind(Bind::dir(
                sa,
                "/run/secrets/kubernetes.io/serviceaccount",
                false,
            ))
            .bind(Bind::file(dir.join("resolv.conf"), "/etc/resolv.conf"))
            .command(&bin);
        cmd.arg("-conf")
            .arg(dir.join("Corefile"))
            .env("POD_IP", addr.to_string())
            .env("KUBERNETES_SERVICE_HOST", env::CONTROL_IP.to_string())
            .env("KUBERNETES_SERVICE_PORT", env::APISERVER_PORT.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        mountns::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("spawn CoreDNS")?;
        let mut me = StandaloneCoredns { child, addr, dir };
        let ready = SocketAddr::new(addr.into(), 8181);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = me.child.try_wait() {
                bail!(
                    "CoreDNS {name} exited ({st}): {}",
                    files::tail(&me.dir.join("coredns.log"), 20)
                );
            }
            if net::http_get_status(ready, "/ready", Duration::from_millis(500)).ok() == Some(200) {
                return Ok(me);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "CoreDNS {name} not ready in 30 s: {}",
                    files::tail(&me.dir.join("coredns.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for StandaloneCoredns {
    fn drop(&mut self) {
        // SIGKILL the unshare'd CoreDNS (exec'd in place of sh).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Install Debian's dnsperf if it is missing.
pub fn ensure_dnsperf() -> Result<()> {
    if Command::new("dnsperf")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return Ok(());
    }
    eprintln!("[bench] apt-get install dnsperf");
    let sh = "export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends dnsperf \
              || { apt-get update -qq && apt-get install -y -qq --no-install-recommends dnsperf; }";
    let st = Command::new("bash").args(["-c", sh]).status()?;
    if !st.success() {
        bail!("could not install dnsperf");
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct DnsperfRun {
    pub qps: f64,
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub avg_latency_ms: f64,
}

/// `dnsperf -s addr -d queries -l secs` at full speed (20 clients, up to
/// 200 queries in flight).
pub fn dnsperf(addr: Ipv4Addr, queries: &Path, secs: u64) -> Result<DnsperfRun> {
    let out = Command::new("dnsperf")
        .args(["-s", &addr.to_string(), "-p", "53", "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "20", "-q", "200", "-t", "2"])
        .output()
        .context("run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "dnsperf failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num = |key: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_once(':'))
            .and_then(|(_, v)| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let rcode = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.trim_start().starts_with("Response codes:"))
            .and_then(|l| {
                let rest = l.split_once(':')?.1;
                rest.split(',').find_map(|part| {
                    let mut it = part.split_whitespace();
                    (it.next()? == name)
                        .then(|| it.next()?.parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0)
    };
    Ok(DnsperfRun {
        qps: num("Queries per second").context(format!("no qps in dnsperf output:\n{text}"))?,
        sent: num("Queries sent").unwrap_or(0.0) as u64,
        completed: num("Queries completed").unwrap_or(0.0) as u64,
        lost: num("Queries lost").unwrap_or(0.0) as u64,
        noerror: rcode("NOERROR"),
        nxdomain: rcode("NXDOMAIN"),
        servfail: rcode("SERVFAIL"),
        avg_latency_ms: num("Average Latency (s)").unwrap_or(f64::NAN) * 1000.0,
    })
}
