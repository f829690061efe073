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

use std::fmt;
use std::time::Duration;

use dnspolicy_dns::kubelet::ResolvConf;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QType {
    A,
    Aaaa,
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        })
    }
}

/// One DNS question; `name` is absolute, written without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub name: String,
    pub qtype: QType,
}

/// What the stub gets back for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with an address record.
    Answer,
    NxDomain,
    /// NOERROR with no record of the asked type.
    NoData,
    ServFail,
    Refused,
    /// No reply within the stub's timeout.
    Timeout,
}

impl Outcome {
    /// NOERROR or NXDOMAIN: a reply both libraries accept as final.
    fn is_response(self) -> bool {
        matches!(self, Outcome::Answer | Outcome::NxDomain | Outcome::NoData)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Answer => "answer",
            Outcome::NxDomain => "NXDOMAIN",
            Outcome::NoData => "NODATA",
            Outcome::ServFail => "SERVFAIL",
            Outcome::Refused => "REFUSED",
            Outcome::Timeout => "timeout",
        })
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverError {
    pub name: String,
    pub reason: String,
}

impl fmt::Display for ResolverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for ResolverError {}

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

    /// glibc `send_dg`: `seconds = retrans << ns; if (ns > 0) seconds /= nscount;`
    /// at least 1, for nameserver index `ns`.
    fn glibc_try_timeout(&self, ns: u32) -> Duration {
        let mut seconds = (self.timeout_secs as u64) << ns;
        if ns > 0 {
            seconds /= self.nameservers as u64;
        }
        Duration::from_secs(seconds.max(1))
    }

    /// glibc `__res_context_send`: `attempts` rounds over every nameserver.
    fn glibc_all_tries(&self) -> Duration {
        (0..self.nameservers)
            .map(|ns| self.glibc_try_timeout(ns))
            .sum::<Duration>()
            * self.attempts
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
        Resolver::Glibc => glibc_search(&mut run, name),
        Resolver::Musl => musl_search(&mut run, name),
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

// ---------------------------------------------------------------- glibc ----

/// glibc's `h_errno` after one `__res_context_query`, and the rcode left in the
/// answer buffer (the search loop looks at both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HErrno {
    Success,
    HostNotFound,
    NoData,
    /// TRY_AGAIN with SERVFAIL in the buffer: the search goes on.
    TryAgainServFail,
    /// TRY_AGAIN after a timeout or REFUSED: the search stops.
    TryAgain,
    NoRecovery,
}

impl HErrno {
    fn failure(self) -> Failure {
        match self {
            HErrno::HostNotFound | HErrno::Success => Failure::NotFound,
            HErrno::NoData => Failure::NoData,
            HErrno::TryAgain | HErrno::TryAgainServFail => Failure::TryAgain,
            HErrno::NoRecovery => Failure::Fail,
        }
    }
}

/// One `__res_context_query` (A and AAAA in one `send_dg`), with its cost.
fn glibc_query<F: FnMut(&Query) -> Outcome>(run: &mut Run<'_, F>, name: &str) -> (HErrno, usize) {
    // res_mkquery fails on a name that does not fit: NO_RECOVERY, nothing sent.
    if !sendable(name) {
        let i = run.record(
            name,
            vec![],
            Duration::ZERO,
            Some("longer than a DNS name can be"),
        );
        return (HErrno::NoRecovery, i);
    }
    let queries = run.ask(name);
    let outcomes: Vec<Outcome> = queries.iter().map(|(_, o)| *o).collect();
    let config = run.config;
    let responses: Vec<Outcome> = outcomes
        .iter()
        .copied()
        .filter(|o| o.is_response())
        .collect();
    let timeouts = outcomes.contains(&Outcome::Timeout);

    let (herrno, cost) = if !timeouts {
        if responses.is_empty() {
            // send_dg: SERVFAIL/REFUSED -> next nameserver, next try; all spent ->
            // ETIMEDOUT, TRY_AGAIN, the first reply's rcode left in the buffer.
            let herrno = if outcomes[0] == Outcome::ServFail {
                HErrno::TryAgainServFail
            } else {
                HErrno::TryAgain
            };
            (herrno, Duration::ZERO)
        } else {
            // An error reply beside a real one is skipped; the real one decides.
            (glibc_rcode(&responses), Duration::ZERO)
        }
    } else if responses.is_empty() {
        // Every try of every nameserver times out (or only error replies came
        // before the timeout): TRY_AGAIN; SERVFAIL in the buffer lets the search go on.
        let herrno =
            if outcomes.contains(&Outcome::ServFail) && !outcomes.contains(&Outcome::Refused) {
                HErrno::TryAgainServFail
            } else {
                HErrno::TryAgain
            };
        (herrno, config.glibc_all_tries())
    } else if outcomes[0].is_response() {
        // send_dg timeout after one good reply: retry in single-request mode,
        // then single-request-reopen, then return the reply it has.
        let rounds = if config.single_request_reopen {
            1
        } else if config.single_request {
            2
        } else {
            3
        };
        (
            glibc_rcode(&responses),
            config.glibc_try_timeout(0) * rounds,
        )
    } else {
        // The first query (A) is the one lost: the single-request retry loses it
        // again and every later try does too.
        (
            HErrno::TryAgain,
            config.glibc_all_tries() + config.glibc_try_timeout(0),
        )
    };
    let index = run.record(name, queries, cost, None);
    (herrno, index)
}

/// `__res_context_query`: success when any reply has an answer; otherwise the
/// first reply's rcode, or the second's when the first is NOERROR.
fn glibc_rcode(responses: &[Outcome]) -> HErrno {
    if responses.contains(&Outcome::Answer) {
        return HErrno::Success;
    }
    let first = responses[0];
    let decisive = if first == Outcome::NoData {
        *responses.last().unwrap()
    } else {
        first
    };
    match decisive {
        Outcome::NxDomain => HErrno::HostNotFound,
        _ => HErrno::NoData,
    }
}

/// `__res_context_search` (res_query.c).
fn glibc_search<F: FnMut(&Query) -> Outcome>(run: &mut Run<'_, F>, name: &str) -> Lookup {
    let config = run.config;
    let dots = name.matches('.').count() as u32;
    let trailing_dot = name.ends_with('.');
    let bare = name.strip_suffix('.').unwrap_or(name);
    let mut saved: Option<HErrno> = None;
    let mut last = HErrno::HostNotFound; // "True if we never query."
    let mut tried_as_is = false;
    let mut searched = false;
    let mut root_on_list = false;
    let mut got_nodata = false;
    let mut got_servfail = false;

    // "If there are enough dots in the name, let's just give it a try 'as is'."
    if dots >= config.ndots || trailing_dot {
        let (h, i) = glibc_query(run, bare);
        if h == HErrno::Success {
            run.then(i, Then::Resolved);
            return Lookup::Resolved(bare.to_string());
        }
        if trailing_dot {
            run.then(i, Then::Abort(h.failure()));
            return Lookup::Failed(h.failure());
        }
        saved = Some(h);
        last = h;
        tried_as_is = true;
    }

    // RES_DEFNAMES and RES_DNSRCH are on by default: search when the name has
    // no trailing dot.
    if !trailing_dot {
        for domain in &config.searches {
            searched = true;
            // A leading dot is dropped; "" (the root) means the name itself.
            let domain = domain.strip_prefix('.').unwrap_or(domain);
            if domain.is_empty() {
                root_on_list = true;
            }
            let candidate = if domain.is_empty() {
                bare.to_string()
            } else {
                format!("{bare}.{domain}")
            };
            let (h, i) = glibc_query(run, &candidate);
            last = h;
            match h {
                HErrno::Success => {
                    run.then(i, Then::Resolved);
                    return Lookup::Resolved(candidate);
                }
                // "On a NO_DATA error, keep trying"; HOST_NOT_FOUND: keep trying.
                HErrno::NoData => got_nodata = true,
                HErrno::HostNotFound => {}
                // TRY_AGAIN with SERVFAIL: "try next search element, if any".
                HErrno::TryAgainServFail => got_servfail = true,
                // "anything else implies that we're done".
                HErrno::TryAgain | HErrno::NoRecovery => {
                    run.then(i, Then::StopSearch);
                    break;
                }
            }
        }
    }

    // "If the query has not already been tried as is then try it unless
    // RES_NOTLDQUERY is set and there were no dots." (kept in glibc's shape)
    #[allow(clippy::nonminimal_bool)]
    if (dots > 0 || !searched || !config.no_tld_query) && !(tried_as_is || root_on_list) {
        let (h, i) = glibc_query(run, bare);
        last = h;
        if h == HErrno::Success {
            run.then(i, Then::Resolved);
            return Lookup::Resolved(bare.to_string());
        }
    }

    // The initial as-is query's error wins, then NO_DATA, then SERVFAIL's TRY_AGAIN.
    let failure = match saved {
        Some(h) => h.failure(),
        None if got_nodata => Failure::NoData,
        None if got_servfail => Failure::TryAgain,
        None => last.failure(),
    };
    if let Some(e) = run.exchanges.last_mut() {
        e.then = Then::Abort(failure);
    }
    Lookup::Failed(failure)
}

// ----------------------------------------------------------------- musl ----

/// One `name_from_dns`: A and AAAA sent together to every nameserver.
/// `Ok(true)` resolved, `Ok(false)` go on (NXDOMAIN), `Err` ends the lookup.
fn musl_query<F: FnMut(&Query) -> Outcome>(
    run: &mut Run<'_, F>,
    name: &str,
) -> Result<bool, Failure> {
    // __res_mkquery fails on a name that does not fit: name_from_dns returns 0.
    if !sendable(name) {
        run.record(
            name,
            vec![],
            Duration::ZERO,
            Some("longer than a DNS name can be"),
        );
        return Ok(false);
    }
    let queries = run.ask(name);
    // __res_msend_rc accepts only rcode 0 and 3; SERVFAIL is resent and then
    // ignored, REFUSED ignored: both wait out the whole `timeout` like silence.
    let accepted = |o: Outcome| o.is_response();
    let cost = if queries.iter().all(|(_, o)| accepted(*o)) {
        Duration::ZERO
    } else {
        Duration::from_secs(run.config.timeout_secs as u64)
    };
    let index = run.record(name, queries.clone(), cost, None);
    // name_from_dns: for each query in order (A first), no reply -> EAI_AGAIN,
    // NXDOMAIN -> 0 (search goes on); then any address -> success; else EAI_NODATA.
    let mut verdict = None;
    for (_, outcome) in &queries {
        if !accepted(*outcome) {
            verdict = Some(Err(Failure::TryAgain));
            break;
        }
        if *outcome == Outcome::NxDomain {
            verdict = Some(Ok(false));
            break;
        }
    }
    let verdict = verdict.unwrap_or_else(|| {
        if queries.iter().any(|(_, o)| *o == Outcome::Answer) {
            Ok(true)
        } else {
            Err(Failure::NoData)
        }
    });
    run.then(
        index,
        match verdict {
            Ok(true) => Then::Resolved,
            Ok(false) => Then::Next,
            Err(f) => Then::Abort(f),
        },
    );
    verdict
}

/// `name_from_dns_search` (lookup_name.c).
fn musl_search<F: FnMut(&Query) -> Outcome>(run: &mut Run<'_, F>, name: &str) -> Lookup {
    let config = run.config;
    let dots = name.matches('.').count() as u32;
    let trailing_dot = name.ends_with('.');
    // "suppress search when >=ndots or name ends in a dot"
    let search: &[String] = if dots >= config.ndots || trailing_dot {
        &[]
    } else {
        &config.searches
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    let l = bare.len();
    for domain in search {
        // `if (z-p < 256 - l - 1)`: a candidate that would not fit is skipped.
        if domain.len() >= 256 - l - 1 {
            continue;
        }
        let candidate = format!("{bare}.{domain}");
        match musl_query(run, &candidate) {
            Ok(true) => return Lookup::Resolved(candidate),
            Ok(false) => {}
            Err(failure) => return Lookup::Failed(failure),
        }
    }
    // The name as written comes last, or alone.
    match musl_query(run, bare) {
        Ok(true) => Lookup::Resolved(bare.to_string()),
        // NXDOMAIN everywhere: __lookup_name turns 0 results into EAI_NONAME.
        Ok(false) => {
            if let Some(e) = run.exchanges.last_mut() {
                e.then = Then::Abort(Failure::NotFound);
            }
            Lookup::Failed(Failure::NotFound)
        }
        Err(failure) => Lookup::Failed(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_try_timeouts_follow_send_dg() {
        let mut c = ResolverConfig::new(Resolver::Glibc, vec![]);
        assert_eq!(c.glibc_all_tries(), Duration::from_secs(10));
        c.nameservers = 3;
        // 5, (10/3)=3, (20/3)=6 per try, two tries.
        assert_eq!(c.glibc_try_timeout(1), Duration::from_secs(3));
        assert_eq!(c.glibc_try_timeout(2), Duration::from_secs(6));
        assert_eq!(c.glibc_all_tries(), Duration::from_secs(28));
    }

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
