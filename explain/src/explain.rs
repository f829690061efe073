//! `dnspolicy explain`: the queries a stub resolver sends for one name, which
//! CoreDNS server block and plugin take each, which leave CoreDNS for an
//! upstream, and what that costs when the upstream is black-holed.
//!
//! The resolver model (`resolver`) decides the order and the stop rules; a
//! [`Responder`] (the CoreDNS serving model, or "no Corefile") says where each
//! query goes; [`Upstream`] says what an upstream answers.
//!
//! A black-holed upstream is modelled as the stub's *timeout*, not as CoreDNS's
//! SERVFAIL: CoreDNS's forward plugin keeps retrying for its 5 s deadline and a
//! read already in flight may take 2 s more, so it answers SERVFAIL only after
//! the stub's own 5 s try has expired. (glibc's retry may then catch that late
//! SERVFAIL and go on searching instead of stopping; musl treats SERVFAIL like
//! silence either way. The e2e suite measures which happens. `cache` does not
//! keep that SERVFAIL: forward returns it without a reply passing through
//! `cache`, so a repeated lookup asks again, dns/tests/upstream_load.rs.)
//! Not modelled yet: from CoreDNS 1.13.2 the forwards dnspolicy writes try
//! once (`max_connect_attempts`) and answer SERVFAIL after 2 s, within the
//! stub's timeout: a forwardTo target, and a Rewrite artifact whose stripped
//! name meets a black-holed upstream (docs/design.md "A black-holed resolver").

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use crate::answer::{Outcome, QType, Reply, Served};
pub use crate::custom::{CustomKeyError, with_custom_keys};
use crate::resolver::{
    self, Exchange, Lookup, Query, Resolver, ResolverConfig, ResolverError, Then, Trace,
};
use crate::serving::{self, ServeContext};
use dnspolicy_dns::corefile::Corefile;
use dnspolicy_dns::version::CoreDnsVersion;

/// Why `dnspolicy explain` could not run; each names the input at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("--search: {domain:?} is not a domain name")]
    SearchDomain { domain: String },
    /// The name asked about.
    #[error(transparent)]
    Name(#[from] ResolverError),
    #[error(transparent)]
    CustomKey(#[from] CustomKeyError),
}

/// The CoreDNS routing model explain needs; `serving` provides the real one.
pub trait Responder {
    fn serve(&self, qname: &str, qtype: QType) -> Served;
}

/// Without a Corefile every query is assumed to leave for an upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCorefile;

impl Responder for NoCorefile {
    fn serve(&self, qname: &str, _qtype: QType) -> Served {
        Served {
            block: "(no Corefile)".into(),
            plugin: "forward".into(),
            steps: Vec::new(),
            reply: Reply::Upstream {
                targets: vec!["upstream".into()],
                name: qname.into(),
            },
            question_matches: true,
            question_matches_if_upstream_fails: true,
            resolved_name: qname.into(),
        }
    }
}

/// The serving model (`serving::serve`) over a parsed Corefile.
pub struct CorefileResponder<'a> {
    pub corefile: &'a Corefile,
    pub context: ServeContext<'a>,
}

impl Responder for CorefileResponder<'_> {
    fn serve(&self, qname: &str, qtype: QType) -> Served {
        let served = serving::serve(self.corefile, qname, qtype, &self.context);
        let block = if served.block.is_empty() {
            "(none)".to_string()
        } else {
            served.block
        };
        Served {
            block,
            plugin: plugin_path(&served.steps, &served.plugin),
            ..served
        }
    }
}

/// The plugins named by the serving steps (`rewrite: ...`, `kubernetes cluster.local.: ...`),
/// in order, joined with ` > `, ending with the one that ended the query.
fn plugin_path(steps: &[String], last: &str) -> String {
    let mut plugins: Vec<&str> = Vec::new();
    for step in steps {
        let Some((head, _)) = step.split_once(':') else {
            continue;
        };
        let word = head.split_whitespace().next().unwrap_or("");
        let plugin_like = !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if plugin_like && !["no", "the"].contains(&word) && plugins.last() != Some(&word) {
            plugins.push(word);
        }
    }
    if !last.is_empty() {
        if let Some(at) = plugins.iter().position(|p| *p == last) {
            plugins.truncate(at + 1);
        } else {
            plugins.push(last);
        }
    }
    if plugins.is_empty() {
        "-".to_string()
    } else {
        plugins.join(" > ")
    }
}

impl<F: Fn(&str, QType) -> Served> Responder for F {
    fn serve(&self, qname: &str, qtype: QType) -> Served {
        self(qname, qtype)
    }
}

/// What the upstream resolvers do with what reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Nothing comes back (the unreachable 8.8.8.8 of docs/design.md §1): the stub times out.
    #[default]
    BlackHole,
    ServFail,
    Refused,
    /// A working recursive resolver: the name as asked resolves, search
    /// artifacts do not exist.
    Working,
}

impl Upstream {
    /// What the upstream answers when asked `asked` (the name after rewrites).
    pub fn answer(self, qtype: QType, asked: &str, target: &str) -> Outcome {
        match self {
            Upstream::BlackHole => Outcome::Timeout,
            Upstream::ServFail => Outcome::ServFail,
            Upstream::Refused => Outcome::Refused,
            Upstream::Working if asked.trim_end_matches('.').eq_ignore_ascii_case(target) => {
                match qtype {
                    QType::A => Outcome::Answer,
                    _ => Outcome::NoData,
                }
            }
            Upstream::Working => Outcome::NxDomain,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Upstream::BlackHole => "black-holed (no reply: every query that reaches it times out)",
            Upstream::ServFail => "answers SERVFAIL",
            Upstream::Refused => "answers REFUSED",
            Upstream::Working => {
                "working (the name as asked resolves, search artifacts are NXDOMAIN)"
            }
        })
    }
}

/// One query and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub query: Query,
    pub block: String,
    pub plugin: String,
    /// The upstream it reached, if it left CoreDNS.
    pub upstream: Option<String>,
    /// The name the upstream was asked (after rewrites), without the trailing dot.
    pub upstream_name: Option<String>,
    pub outcome: Outcome,
    pub question_matches: bool,
    /// When it was sent, from the start of the lookup.
    pub at: Duration,
}

/// The full answer to `dnspolicy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    pub config: ResolverConfig,
    pub upstream: Upstream,
    pub with_corefile: bool,
    pub lines: Vec<Line>,
    pub trace: Trace,
}

impl Explanation {
    /// Queries that left CoreDNS for an upstream.
    pub fn upstream_queries(&self) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.upstream.is_some()).collect()
    }

    /// Distinct names that left CoreDNS, as the upstream was asked them, in order.
    pub fn leaked_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.lines.iter().filter_map(|l| l.upstream_name.as_deref()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Leaked names that are not the name asked about: a search domain glued on.
    pub fn leaked_artifacts(&self) -> Vec<&str> {
        let target = self.name.trim_end_matches('.');
        self.leaked_names()
            .into_iter()
            .filter(|n| !n.eq_ignore_ascii_case(target))
            .collect()
    }

    pub fn resolved(&self) -> bool {
        matches!(self.trace.result, Lookup::Resolved(_))
    }

    pub fn worst_case(&self) -> Duration {
        self.trace.worst_case
    }

    /// Replies whose question differs from the query (docs/design.md §3 case 4).
    pub fn question_mismatches(&self) -> Vec<&Line> {
        self.lines.iter().filter(|l| !l.question_matches).collect()
    }
}

/// Runs the resolver model for `name`, routing each query through `responder`.
pub fn explain(
    name: &str,
    config: &ResolverConfig,
    responder: &dyn Responder,
    with_corefile: bool,
    upstream: Upstream,
) -> Result<Explanation, resolver::ResolverError> {
    let target = name.strip_suffix('.').unwrap_or(name).to_string();
    let mut lines = Vec::new();
    let trace = resolver::resolve(config, name, |query| {
        let served = responder.serve(&query.name, query.qtype);
        let (mut outcome, to, asked) = match &served.reply {
            Reply::Local(outcome) => (*outcome, None, None),
            Reply::Upstream { targets, name } => (
                upstream.answer(query.qtype, name, &target),
                Some(targets.join(" ")),
                Some(name.trim_end_matches('.').to_string()),
            ),
        };
        // A black-holed upstream: the only reply is forward's own late SERVFAIL.
        let question_matches = match (&served.reply, upstream) {
            (Reply::Upstream { .. }, Upstream::BlackHole) => {
                served.question_matches_if_upstream_fails
            }
            _ => served.question_matches,
        };
        // glibc drops a reply whose question differs (res_send.c send_dg,
        // res_queriesmatch: "wrong query name") and waits; musl matches replies
        // by ID only (res_msend.c) and takes it.
        if !question_matches && config.resolver == Resolver::Glibc && outcome != Outcome::Timeout {
            outcome = Outcome::Timeout;
        }
        lines.push(Line {
            query: query.clone(),
            block: served.block,
            plugin: served.plugin,
            upstream: to,
            upstream_name: asked,
            outcome,
            question_matches,
            at: Duration::ZERO,
        });
        outcome
    })?;
    // The resolver asks in order; stamp each line with its exchange's start.
    let times: Vec<Duration> = trace.queries().map(|(_, _, at)| at).collect();
    for (line, at) in lines.iter_mut().zip(times) {
        line.at = at;
    }
    Ok(Explanation {
        name: name.to_string(),
        config: config.clone(),
        upstream,
        with_corefile,
        lines,
        trace,
    })
}

/// `explain` through a Corefile (with its `coredns-custom` keys spliced in).
///
/// The kubernetes plugin is taken to know the name asked about, and nothing
/// else: every other name in its zones is NXDOMAIN. A short name is read the
/// way a pod means it: `frigate` as the service in the pod's own namespace
/// (`frigate.<ns>.svc.<domain>`, from the first search domain) and
/// `frigate.video-management-system` as `frigate.video-management-system.svc.<domain>`,
/// the cluster domain taken from the `svc.<domain>` search entry.
pub fn explain_corefile(
    name: &str,
    config: &ResolverConfig,
    corefile: &Corefile,
    custom_keys: &BTreeMap<String, String>,
    version: CoreDnsVersion,
    upstream: Upstream,
) -> Result<Explanation, ExplainError> {
    explain_corefile_in(
        name,
        config,
        corefile,
        custom_keys,
        version,
        upstream,
        &Network::default(),
    )
}

/// Where the pod and CoreDNS sit: what `acl` sees and which addresses reach
/// CoreDNS from outside its Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The pod's address: the client `acl` judges.
    pub pod_ip: IpAddr,
    /// The kube-dns Service IPs.
    pub cluster_dns_ips: Vec<IpAddr>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            pod_ip: serving::DEFAULT_POD_IP,
            cluster_dns_ips: Vec::new(),
        }
    }
}

/// [`explain_corefile`] for a pod at `network.pod_ip`.
pub fn explain_corefile_in(
    name: &str,
    config: &ResolverConfig,
    corefile: &Corefile,
    custom_keys: &BTreeMap<String, String>,
    version: CoreDnsVersion,
    upstream: Upstream,
    network: &Network,
) -> Result<Explanation, ExplainError> {
    let running = with_custom_keys(corefile, custom_keys)?;
    let known = known_service_names(name, &config.searches);
    let in_cluster = |n: &str| known.contains(&absolute(n));
    let target = name.trim_end_matches('.').to_string();
    let upstream_answer =
        |asked: &str, qtype: QType| upstream.answer(qtype, asked.trim_end_matches('.'), &target);
    let responder = CorefileResponder {
        corefile: &running,
        context: ServeContext {
            client: serving::Client {
                ip: network.pod_ip,
                search: &config.searches,
            },
            cluster_dns_ips: &network.cluster_dns_ips,
            upstream: &upstream_answer,
            ..ServeContext::new(version, &in_cluster)
        },
    };
    Ok(explain(name, config, &responder, true, upstream)?)
}

/// The in-cluster names taken to exist when `name` is looked up with `searches`.
pub(crate) fn known_service_names(name: &str, searches: &[String]) -> Vec<String> {
    let bare = name.trim_end_matches('.');
    let mut known = vec![absolute(bare)];
    if name.ends_with('.') {
        return known;
    }
    let domain = searches
        .iter()
        .find_map(|s| s.strip_prefix("svc."))
        .map(|d| d.trim_end_matches('.'));
    let own_namespace = searches
        .first()
        .and_then(|s| domain.and_then(|d| s.strip_suffix(&format!(".svc.{d}"))))
        .filter(|ns| !ns.contains('.'));
    match (bare.matches('.').count(), domain, own_namespace) {
        (0, Some(d), Some(ns)) => known.push(absolute(&format!("{bare}.{ns}.svc.{d}"))),
        (1, Some(d), _) => known.push(absolute(&format!("{bare}.svc.{d}"))),
        _ => {}
    }
    known
}

pub(crate) fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// `dnspolicy explain` as the command line calls it: the search list as one
/// space-separated string, one nameserver, the libraries' default timeout and
/// attempts, a black-holed upstream, CoreDNS behaviour of the newest release
/// checked. Errors name the input.
pub fn explain_command(
    name: &str,
    search: &str,
    ndots: u8,
    musl: bool,
    corefile: Option<(&Corefile, &BTreeMap<String, String>)>,
) -> Result<String, ExplainError> {
    explain_command_through(
        name,
        search,
        ndots,
        musl,
        CoreDnsVersion::NEWEST_CHECKED,
        &Network::default(),
        corefile,
        None,
    )
}

/// [`explain_command`] for CoreDNS `version`, the pod's queries going first
/// to a node-local cache (its Corefile and its cluster-DNS forward targets)
/// when one is given.
#[allow(clippy::too_many_arguments)]
pub fn explain_command_through(
    name: &str,
    search: &str,
    ndots: u8,
    musl: bool,
    version: CoreDnsVersion,
    network: &Network,
    corefile: Option<(&Corefile, &BTreeMap<String, String>)>,
    cache: Option<(&Corefile, &[String])>,
) -> Result<String, ExplainError> {
    let resolver = if musl {
        Resolver::Musl
    } else {
        Resolver::Glibc
    };
    let searches: Vec<String> = search.split_whitespace().map(str::to_string).collect();
    if let Some(bad) = searches.iter().find(|d| {
        d.trim_end_matches('.')
            .split('.')
            .any(|l| l.is_empty() || l.len() > 63)
    }) {
        return Err(ExplainError::SearchDomain {
            domain: bad.clone(),
        });
    }
    let config = ResolverConfig::new(resolver, searches).with_ndots(ndots as u32);
    let explanation = match (corefile, cache) {
        (Some((corefile, keys)), Some((cache, cluster_dns))) => {
            crate::nodelocal::explain_through_cache(
                name,
                &config,
                cache,
                cluster_dns,
                corefile,
                keys,
                version,
                Upstream::BlackHole,
            )?
        }
        (Some((corefile, keys)), _) => explain_corefile_in(
            name,
            &config,
            corefile,
            keys,
            version,
            Upstream::BlackHole,
            network,
        )?,
        (None, _) => explain(name, &config, &NoCorefile, false, Upstream::BlackHole)?,
    };
    Ok(explanation.to_string())
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn then_note(exchange: &Exchange, resolver: Resolver) -> Option<String> {
    match exchange.then {
        Then::StopSearch => Some(format!(
            "{resolver} stops searching here ({}) and goes on to the name as written",
            exchange
                .queries
                .iter()
                .map(|(_, o)| o.to_string())
                .collect::<Vec<_>>()
                .join("/")
        )),
        Then::Abort(failure) => Some(format!("{resolver} ends the lookup here: {failure}")),
        Then::Resolved | Then::Next => None,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "name:     {}", self.name)?;
        writeln!(
            f,
            "resolver: {} (ndots {}, timeout {}s, attempts {}, {} nameserver{})",
            c.resolver,
            c.ndots,
            c.timeout_secs,
            c.attempts,
            c.nameservers,
            if c.nameservers == 1 { "" } else { "s" }
        )?;
        writeln!(
            f,
            "search:   {}",
            if c.searches.is_empty() {
                "(none)".to_string()
            } else {
                c.searches.join(" ")
            }
        )?;
        if !self.with_corefile {
            writeln!(
                f,
                "corefile: none given; every query is assumed to reach an upstream"
            )?;
        }
        writeln!(f, "upstream: {}", self.upstream)?;
        writeln!(f)?;

        // Each column as wide as its longest cell, and at least its heading.
        let width = |heading: &str, cell: &dyn Fn(&Line) -> usize| {
            self.lines
                .iter()
                .map(cell)
                .max()
                .unwrap_or(0)
                .max(heading.len())
        };
        let name_width = width("name", &|l| l.query.name.len());
        let block_width = width("block", &|l| l.block.len());
        let plugin_width = width("plugin", &|l| l.plugin.len());
        let upstream_cell = |l: &Line| match (&l.upstream, &l.upstream_name) {
            (Some(to), Some(asked)) if !asked.eq_ignore_ascii_case(&l.query.name) => {
                format!("YES {to} as {asked}")
            }
            (Some(to), _) => format!("YES {to}"),
            _ => "no".to_string(),
        };
        let up_width = width("upstream", &|l| upstream_cell(l).len());
        writeln!(
            f,
            "{:>3}  {:>5}  {:<4}  {:<name_width$}  {:<block_width$}  {:<plugin_width$}  {:<up_width$}  outcome",
            "#", "at", "type", "name", "block", "plugin", "upstream"
        )?;
        let mut index = 0;
        for exchange in &self.trace.exchanges {
            if let Some(reason) = exchange.not_sent {
                writeln!(
                    f,
                    "{:>3}  {:>5}  {:<4}  {:<name_width$}  not sent: {reason}",
                    "-",
                    secs(exchange.at),
                    "",
                    exchange.name
                )?;
            }
            for _ in &exchange.queries {
                let line = &self.lines[index];
                index += 1;
                let mut outcome = line.outcome.to_string();
                if !line.question_matches {
                    outcome.push_str(" (question section differs from the query)");
                }
                writeln!(
                    f,
                    "{:>3}  {:>5}  {:<4}  {:<name_width$}  {:<block_width$}  {:<plugin_width$}  {:<up_width$}  {}",
                    index,
                    secs(line.at),
                    line.query.qtype.to_string(),
                    line.query.name,
                    line.block,
                    line.plugin,
                    upstream_cell(line),
                    outcome
                )?;
            }
            if let Some(note) = then_note(exchange, c.resolver) {
                writeln!(f, "{:>3}  {:>5}  -> {note}", "", "")?;
            }
        }
        writeln!(f)?;

        let leaked = self.leaked_names();
        let reaching = self.upstream_queries().len();
        if leaked.is_empty() {
            writeln!(f, "verdict: no query reaches an upstream")?;
        } else {
            writeln!(
                f,
                "verdict: {reaching} of {} queries reach an upstream, asking for {}",
                self.lines.len(),
                leaked.join(", ")
            )?;
            let artifacts = self.leaked_artifacts();
            if artifacts.is_empty() {
                writeln!(f, "         no search artifact leaves CoreDNS")?;
            } else {
                writeln!(
                    f,
                    "         search artifacts leaving CoreDNS: {}",
                    artifacts.join(", ")
                )?;
            }
        }
        match &self.trace.result {
            Lookup::Resolved(name) => writeln!(
                f,
                "         resolved as {name} after {} (worst case)",
                secs(self.trace.worst_case)
            )?,
            Lookup::Failed(failure) => writeln!(
                f,
                "         FAILED after {} (worst case): {failure}",
                secs(self.trace.worst_case)
            )?,
        }
        let mismatches = self.question_mismatches();
        if !mismatches.is_empty() {
            writeln!(
                f,
                "         {} replies carry a question that differs from the query",
                mismatches.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_corefile_sends_everything_upstream() {
        let config =
            ResolverConfig::new(Resolver::Glibc, vec!["tailb45a71.ts.net".into()]).with_ndots(5);
        let e = explain("frigate", &config, &NoCorefile, false, Upstream::BlackHole).unwrap();
        assert_eq!(e.upstream_queries().len(), 4);
        assert!(!e.resolved());
        // glibc: the search domain times out (10 s), then the bare name does too.
        assert_eq!(e.worst_case(), Duration::from_secs(20));
        assert!(e.to_string().contains("corefile: none given"));
    }
}
