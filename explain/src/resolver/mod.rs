//! The stub resolvers of glibc and musl as pure models: which names a
//! `getaddrinfo(NAME)` sends, in what order, when it stops, and how long it
//! takes, given what the nameserver answers to each query.
//!
//! Sources (comments cite them by function):
//! - glibc 2.3x `resolv/res_query.c` (`__res_context_search`, `__res_context_query`),
//!   `resolv/res_send.c` (`__res_context_send`, `send_dg`), `resolv/res_init.c` (options).
//! - musl 1.2.4+ `src/network/lookup_name.c` (`name_from_dns_search`, `name_from_dns`),
//!   `src/network/res_msend.c` (`__res_msend_rc`), `src/network/resolvconf.c`.
//!
//! The answer function is called once per query and is taken to answer the same
//! way to every retry of that query. Time counts only timeouts (round trips are
//! free), so `worst_case` is what a black-holed path costs.
//!
//! Stop rules, in short:
//! - glibc: as-is first when dots >= ndots (or a trailing dot, then nothing
//!   else); then each search domain; NXDOMAIN, NODATA and SERVFAIL go on;
//!   a timeout or REFUSED stops the search; the name as written is tried last
//!   if not yet. Each query costs `attempts` x the per-nameserver timeouts.
//! - musl: search only when dots < ndots and no trailing dot; the name as
//!   written always last; only NXDOMAIN goes on. SERVFAIL and REFUSED are not
//!   accepted as replies, so they cost the full `timeout` like silence and end
//!   the lookup with EAI_AGAIN; NODATA ends it with EAI_NODATA.
//!
//! Not modelled (to be measured by the e2e suite): a late SERVFAIL from CoreDNS
//! arriving during glibc's second try, glibc keeping RES_SNGLKUP for later
//! queries after a partial timeout, ICMP port-unreachable (ECONNREFUSED),
//! TCP fallback on truncation, /etc/hosts and nsswitch.
//!
//! Files: this one holds the vocabulary, the configuration and the shared
//! driver; `glibc` and `musl` hold each library's search walk and timing.

mod glibc;
mod musl;

use std::fmt;
use std::time::Duration;

use dnspolicy_dns::kubelet::ResolvConf;

pub use crate::answer::{Outcome, QType};

/// Which C library's stub resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Glibc,
    Musl,
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resolver::Glibc => "glibc",
            Resolver::Musl => "musl",
        })
    }
}

/// `ai_family` of the getaddrinfo hints: which of A and AAAA are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// AF_UNSPEC: A and AAAA together (glibc `T_QUERY_A_AND_AAAA`, musl `nq = 2`).
    #[default]
    Unspec,
    Inet,
    Inet6,
}

/// One DNS question; `name` is absolute, written without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub name: String,
    pub qtype: QType,
}

/// Why a lookup failed, as getaddrinfo reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// glibc HOST_NOT_FOUND, musl EAI_NONAME.
    NotFound,
    /// glibc NO_DATA, musl EAI_NODATA.
    NoData,
    /// glibc TRY_AGAIN, musl EAI_AGAIN: timeouts, SERVFAIL.
    TryAgain,
    /// glibc NO_RECOVERY, musl EAI_FAIL: REFUSED (glibc), a name that cannot be sent.
    Fail,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::NotFound => "EAI_NONAME (name not found)",
            Failure::NoData => "EAI_NODATA (no address for the name)",
            Failure::TryAgain => "EAI_AGAIN (temporary failure in name resolution)",
            Failure::Fail => "EAI_FAIL (non-recoverable failure in name resolution)",
        })
    }
}

/// How the lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Addresses found for this (absolute) name.
    Resolved(String),
    Failed(Failure),
}

/// What the resolver did after one candidate name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Addresses found: the lookup ends with them.
    Resolved,
    /// NXDOMAIN or NODATA (or a glibc SERVFAIL): the next candidate is tried.
    Next,
    /// glibc after a timeout or REFUSED: no more search domains, but the name
    /// as written is still tried if it was not yet.
    StopSearch,
    /// The whole lookup ends here with this failure (musl on anything but
    /// NXDOMAIN; glibc when no candidate is left).
    Abort(Failure),
}

/// One candidate name and the queries sent for it (A and AAAA go out together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub queries: Vec<(Query, Outcome)>,
    /// When the queries were sent, from the start of the lookup.
    pub at: Duration,
    /// How long until the resolver moved on.
    pub cost: Duration,
    /// Set when nothing was sent, with the reason (a name too long to send).
    pub not_sent: Option<&'static str>,
    pub then: Then,
}

/// Everything one lookup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub resolver: Resolver,
    pub exchanges: Vec<Exchange>,
    pub result: Lookup,
    /// Time to the result with every timeout running its full course.
    pub worst_case: Duration,
}

impl Trace {
    /// Every query sent, in order, with its outcome and the time it was sent.
    pub fn queries(&self) -> impl Iterator<Item = (&Query, Outcome, Duration)> {
        self.exchanges
            .iter()
            .flat_map(|e| e.queries.iter().map(move |(q, o)| (q, *o, e.at)))
    }
}

/// The resolver's view of resolv.conf (plus the getaddrinfo family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    pub resolver: Resolver,
    pub searches: Vec<String>,
    pub ndots: u32,
    /// `options attempts:` (glibc: tries per nameserver; musl: sends within the timeout).
    pub attempts: u32,
    /// `options timeout:` in seconds (glibc: per try; musl: for the whole exchange).
    pub timeout_secs: u32,
    /// Nameserver lines the library uses (both read at most 3).
    pub nameservers: u32,
    pub rotate: bool,
    pub single_request: bool,
    pub single_request_reopen: bool,
    /// glibc `no-tld-query`: a dotless name is never sent as-is.
    pub no_tld_query: bool,
    pub family: Family,
}

/// A name the resolver cannot be asked about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name {name:?}: {reason}")]
pub struct ResolverError {
    pub name: String,
    pub reason: String,
}

// glibc resolv/res_init.c: RES_MAXNDOTS, RES_MAXRETRY, RES_MAXRETRANS, MAXNS.
const GLIBC_MAX_NDOTS: u32 = 15;
const GLIBC_MAX_ATTEMPTS: u32 = 5;
const GLIBC_MAX_TIMEOUT: u32 = 30;
// musl src/network/resolvconf.c caps.
const MUSL_MAX_NDOTS: u32 = 15;
const MUSL_MAX_ATTEMPTS: u32 = 10;
const MUSL_MAX_TIMEOUT: u32 = 60;
/// musl reads resolv.conf with `char line[256]` and skips any line that does
/// not fit (resolvconf.c: "Ignore lines that get truncated"), newline included.
pub const MUSL_MAX_LINE: usize = 255;
const MAXNS: u32 = 3;

impl ResolverConfig {
    /// Library defaults (ndots 1, attempts 2, timeout 5 s, one nameserver).
    pub fn new(resolver: Resolver, searches: Vec<String>) -> Self {
        Self {
            resolver,
            searches,
            ndots: 1,
            attempts: 2,
            timeout_secs: 5,
            nameservers: 1,
            rotate: false,
            single_request: false,
            single_request_reopen: false,
            no_tld_query: false,
            family: Family::Unspec,
        }
    }

    pub fn with_ndots(mut self, ndots: u32) -> Self {
        self.ndots = ndots;
        self.clamp()
    }

    /// How `resolver` reads this resolv.conf. musl drops a `search` line longer
    /// than 255 bytes altogether (so a long Kubernetes search list is no
    /// search list at all for it), and ignores options it does not know.
    pub fn from_resolv_conf(resolver: Resolver, conf: &ResolvConf) -> Self {
        let mut config = Self::new(resolver, conf.searches.clone());
        config.nameservers = (conf.nameservers.len() as u32).clamp(1, MAXNS);
        if resolver == Resolver::Musl
            && "search ".len() + conf.searches.join(" ").len() + 1 > MUSL_MAX_LINE
        {
            config.searches.clear();
        }
        let number = |v: &str| v.parse::<u32>().ok();
        for option in &conf.options {
            let (name, value) = option.split_once(':').unwrap_or((option, ""));
            match (name, resolver) {
                ("ndots", _) => config.ndots = number(value).unwrap_or(config.ndots),
                ("attempts", _) => config.attempts = number(value).unwrap_or(config.attempts),
                ("timeout", _) => {
                    config.timeout_secs = number(value).unwrap_or(config.timeout_secs)
                }
                ("rotate", Resolver::Glibc) => config.rotate = true,
                ("single-request", Resolver::Glibc) => config.single_request = true,
                ("single-request-reopen", Resolver::Glibc) => config.single_request_reopen = true,
                ("no-tld-query", Resolver::Glibc) => config.no_tld_query = true,
                _ => {}
            }
        }
        config.clamp()
    }

    /// The libraries' caps; attempts below 1 would send nothing (glibc) or
    /// divide by zero (musl `timeout / attempts`), so 1 is the floor.
    fn clamp(mut self) -> Self {
        let (ndots, attempts, timeout) = match self.resolver {
            Resolver::Glibc => (GLIBC_MAX_NDOTS, GLIBC_MAX_ATTEMPTS, GLIBC_MAX_TIMEOUT),
            Resolver::Musl => (MUSL_MAX_NDOTS, MUSL_MAX_ATTEMPTS, MUSL_MAX_TIMEOUT),
        };
        self.ndots = self.ndots.min(ndots);
        self.attempts = self.attempts.clamp(1, attempts);
        self.timeout_secs = self.timeout_secs.clamp(1, timeout);
        self.nameservers = self.nameservers.clamp(1, MAXNS);
        self
    }

    fn qtypes(&self) -> Vec<QType> {
        match self.family {
            Family::Unspec => vec![QType::A, QType::Aaaa],
            Family::Inet => vec![QType::A],
            Family::Inet6 => vec![QType::Aaaa],
        }
    }
}

/// Resolves `name` as `getaddrinfo` would, asking `answer` for each query.
pub fn resolve(
    config: &ResolverConfig,
    name: &str,
    mut answer: impl FnMut(&Query) -> Outcome,
) -> Result<Trace, ResolverError> {
    check_name(name)?;
    let mut run = Run {
        config,
        answer: &mut answer,
        exchanges: Vec::new(),
        clock: Duration::ZERO,
    };
    let result = match config.resolver {
        Resolver::Glibc => glibc::glibc_search(&mut run, name),
        Resolver::Musl => musl::musl_search(&mut run, name),
    };
    Ok(Trace {
        resolver: config.resolver,
        exchanges: run.exchanges,
        result,
        worst_case: run.clock,
    })
}

/// The candidate names in the order the resolver would try them if every
/// one of them came back NXDOMAIN.
pub fn candidates(config: &ResolverConfig, name: &str) -> Result<Vec<String>, ResolverError> {
    let trace = resolve(config, name, |_| Outcome::NxDomain)?;
    Ok(trace.exchanges.into_iter().map(|e| e.name).collect())
}

fn check_name(name: &str) -> Result<(), ResolverError> {
    let err = |reason: &str| {
        Err(ResolverError {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return err(
            "empty name; give a host name such as frigate.video-management-system.svc.cluster.local",
        );
    }
    if bare.len() > 253 {
        return err("longer than 253 characters");
    }
    if bare.split('.').any(str::is_empty) {
        return err("has an empty label (two dots in a row, or a leading dot)");
    }
    if bare.split('.').any(|l| l.len() > 63) {
        return err("has a label longer than 63 characters");
    }
    Ok(())
}

/// Whether a candidate can be put in a query at all (`res_mkquery` succeeds).
fn sendable(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

struct Run<'a, F: FnMut(&Query) -> Outcome> {
    config: &'a ResolverConfig,
    answer: &'a mut F,
    exchanges: Vec<Exchange>,
    clock: Duration,
}

impl<F: FnMut(&Query) -> Outcome> Run<'_, F> {
    fn ask(&mut self, name: &str) -> Vec<(Query, Outcome)> {
        self.config
            .qtypes()
            .into_iter()
            .map(|qtype| {
                let query = Query {
                    name: name.to_string(),
                    qtype,
                };
                let outcome = (self.answer)(&query);
                (query, outcome)
            })
            .collect()
    }

    fn record(
        &mut self,
        name: &str,
        queries: Vec<(Query, Outcome)>,
        cost: Duration,
        not_sent: Option<&'static str>,
    ) -> usize {
        self.exchanges.push(Exchange {
            name: name.to_string(),
            queries,
            at: self.clock,
            cost,
            not_sent,
            then: Then::Next,
        });
        self.clock += cost;
        self.exchanges.len() - 1
    }

    fn then(&mut self, index: usize, then: Then) {
        self.exchanges[index].then = then;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let c = ResolverConfig::new(Resolver::Musl, vec![]);
        assert!(resolve(&c, "", |_| Outcome::Answer).is_err());
        assert!(
            resolve(&c, "a..b", |_| Outcome::Answer)
                .unwrap_err()
                .to_string()
                .contains("\"a..b\"")
        );
        assert!(resolve(&c, "frigate.", |_| Outcome::Answer).is_ok());
    }
}
