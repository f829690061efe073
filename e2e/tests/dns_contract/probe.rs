//! Asking CoreDNS and the resolvers in one cluster state, checking docs/design.md
//! section 3 on each answer, and keeping every measured lookup.

use super::*;

/// rcode and sorted addresses: what "resolves exactly as before" compares.
pub type Answer = (u8, Vec<IpAddr>);

/// Printed at the end of each test: every lookup and how long it took.
#[derive(Default)]
pub struct Figures(pub Vec<String>);

impl Figures {
    pub fn lookup(
        &mut self,
        state: &str,
        l: &Lookup,
        r: Resolver,
        name: &str,
        search: &[&str],
        ndots: u32,
    ) {
        // The seed's list or the one with every suffix.
        let list = if search == SEED_SEARCH {
            "seed"
        } else {
            "cloud"
        };
        let outcome = if l.ok {
            format!("{:?}", l.addrs)
        } else {
            l.output.trim().replace('\n', " ")
        };
        let row = format!(
            "{state:<34} {:<5} {list:<5} ndots {ndots} {name:<52} {:>8.1} ms  {outcome}",
            format!("{r:?}"),
            l.elapsed.as_secs_f64() * 1e3
        );
        println!("{row}");
        self.0.push(row);
    }

    pub fn print(&self, title: &str) {
        let mut s = format!("\n== {title}: measured lookups ==\n");
        for r in &self.0 {
            writeln!(s, "{r}").unwrap();
        }
        println!("{s}");
    }
}

/// One cluster state: where to ask, and the logs to read.
pub struct Probe<'a> {
    pub c: &'a Cluster,
    pub at: Ipv4Addr,
    pub state: String,
}

impl<'a> Probe<'a> {
    pub async fn new(c: &'a Cluster, state: &str) -> Result<Probe<'a>> {
        let at = *rolled(c).await?.first().context("no CoreDNS pod serving")?;
        println!("-- {state} (CoreDNS at {at})");
        Ok(Probe {
            c,
            at,
            state: state.to_string(),
        })
    }

    /// A raw query. Every reply's question must be the query (docs/design.md §3 case 4).
    pub async fn ask(&self, name: &str, qtype: u16) -> Result<dns::Reply> {
        let r = self
            .c
            .query(self.at, name, qtype, Duration::from_secs(4))
            .await
            .with_context(|| format!("{}: {name}", self.state))?;
        ensure!(
            r.question == format!("{name}."),
            "{}: asked {name}, the reply's question is {}: {r:?}",
            self.state,
            r.question
        );
        Ok(r)
    }

    /// A search artifact's reply (docs/design.md §3 cases 1, 2 and 4): never
    /// SERVFAIL or REFUSED; Rewrite answers what `plain` gets, with answer
    /// names mapped back to the artifact; NXDomain says NXDOMAIN.
    pub async fn artifact(
        &self,
        plain: &str,
        suffix: &str,
        action: Action,
        qtype: u16,
    ) -> Result<dns::Reply> {
        let name = format!("{plain}.{suffix}");
        let r = self.ask(&name, qtype).await?;
        let what = format!("{}: {} {name}", self.state, dns::qtype_name(qtype));
        ensure!(
            r.rcode != dns::RCODE_SERVFAIL && r.rcode != dns::RCODE_REFUSED,
            "{what}: {r:?}"
        );
        match action {
            Action::NXDomain => ensure!(
                r.rcode == dns::RCODE_NXDOMAIN && r.addrs.is_empty(),
                "{what}: want NXDOMAIN, got {r:?}"
            ),
            Action::Rewrite => {
                let p = self.ask(plain, qtype).await?;
                ensure!(
                    r.answer() == p.answer(),
                    "{what}: want the answer for {plain} {p:?}, got {r:?}"
                );
                ensure!(
                    r.answer_names.iter().all(|n| *n == format!("{name}.")),
                    "{what}: answer names not mapped back: {r:?}"
                );
            }
        }
        Ok(r)
    }

    /// docs/design.md §3 case 1 for every in-cluster name, A and AAAA.
    pub async fn in_cluster(&self, w: &Workloads, suffix: &str, action: Action) -> Result<()> {
        for (name, want) in w.names() {
            let r = self.ask(name, A).await?;
            match &want {
                Want::Addr(ip) => ensure!(
                    r.rcode == dns::RCODE_NOERROR && r.addrs == vec![*ip],
                    "{}: {name}: want {ip}, got {r:?}",
                    self.state
                ),
                Want::NxDomain => ensure!(
                    r.rcode == dns::RCODE_NXDOMAIN,
                    "{}: {name}: want NXDOMAIN, got {r:?}",
                    self.state
                ),
            }
            for qtype in [A, AAAA] {
                self.artifact(name, suffix, action, qtype).await?;
            }
        }
        Ok(())
    }

    pub async fn lookup(
        &self,
        f: &mut Figures,
        r: Resolver,
        name: &str,
        search: &[&str],
        ndots: u32,
    ) -> Result<Lookup> {
        let spec = dnspolicy_e2e::LookupSpec::new(r, name, IpAddr::V4(self.at), search, ndots);
        let l = self.c.lookup_with(&spec).await?;
        f.lookup(&self.state, &l, r, name, search, ndots);
        Ok(l)
    }

    /// A lookup of `name` with `ndots` that must answer `want` without
    /// waiting on any upstream.
    pub async fn fast(
        &self,
        f: &mut Figures,
        r: Resolver,
        search: &[&str],
        (name, ndots, want): (&str, u32, IpAddr),
    ) -> Result<()> {
        let l = self.lookup(f, r, name, search, ndots).await?;
        ensure!(
            l.ok && l.addrs.contains(&want),
            "{}: {r:?} {name}: want {want}, got {l:?}",
            self.state
        );
        ensure!(
            l.elapsed < FAST,
            "{}: {r:?} {name} took {:?}, as long as an upstream timeout: {l:?}",
            self.state,
            l.elapsed
        );
        Ok(())
    }

    /// `fast` for every (name, ndots, answer) on glibc, then on musl.
    pub async fn all_fast(
        &self,
        f: &mut Figures,
        search: &[&str],
        names: &[(&str, u32, IpAddr)],
    ) -> Result<()> {
        for r in [Resolver::Glibc, Resolver::Musl] {
            for &(name, ndots, want) in names {
                self.fast(f, r, search, (name, ndots, want)).await?;
            }
        }
        Ok(())
    }
}

/// The app's Service by its full name (ndots 5) and by `name.namespace`
/// (ndots 2): both must answer from the search list's in-cluster entries.
pub fn frigate_lookups(w: &Workloads) -> [(&'static str, u32, IpAddr); 2] {
    [
        (FRIGATE, 5, w.frigate),
        ("frigate.video-management-system", 2, w.frigate),
    ]
}

/// Names that left CoreDNS for `log` since `mark` and end with `suffix`,
/// other than the real hosts `allowed`.
pub fn leaked(log: &QueryLog, mark: u64, suffix: &str, allowed: &[&str]) -> Vec<String> {
    log.names_ending_with(mark, suffix)
        .into_iter()
        .filter(|n| !allowed.iter().any(|a| *n == format!("{a}.")))
        .collect()
}
