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
//! SERVFAIL and go on searching instead of stopping; the e2e suite measures it.)

use std::fmt;
use std::time::Duration;

use crate::resolver::{self, Exchange, Lookup, Outcome, QType, Query, Resolver, ResolverConfig, Then, Trace};

/// Where CoreDNS sends one query, as the serving model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The server block that takes the query, as its key is written (`.:53`).
    pub block: String,
    /// The plugin that writes the reply (`kubernetes`, `forward`, `template`...).
    pub plugin: String,
    pub reply: Reply,
    /// The reply's question section equals the query's (DESIGN 3 case 4).
    pub question_matches: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answered inside CoreDNS.
    Local(Outcome),
    /// Sent on to an upstream resolver (`to` as the Corefile names it).
    Upstream { to: String },
}

/// The CoreDNS routing model explain needs; `serving` provides the real one.
pub trait Responder {
    fn serve(&self, qname: &str, qtype: QType) -> Served;
}

/// Without a Corefile every query is assumed to leave for an upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCorefile;

impl Responder for NoCorefile {
    fn serve(&self, _qname: &str, _qtype: QType) -> Served {
        Served {
            block: "(no Corefile)".into(),
            plugin: "forward".into(),
            reply: Reply::Upstream { to: "upstream".into() },
            question_matches: true,
        }
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
    /// Nothing comes back (the unreachable 8.8.8.8 of DESIGN 1): the stub times out.
    #[default]
    BlackHole,
    ServFail,
    Refused,
    /// A working recursive resolver: the name as asked resolves, search
    /// artifacts do not exist.
    Working,
}

impl Upstream {
    fn answer(self, query: &Query, target: &str) -> Outcome {
        match self {
            Upstream::BlackHole => Outcome::Timeout,
            Upstream::ServFail => Outcome::ServFail,
            Upstream::Refused => Outcome::Refused,
            Upstream::Working if query.name.eq_ignore_ascii_case(target) => match query.qtype {
                QType::A => Outcome::Answer,
                QType::Aaaa => Outcome::NoData,
            },
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
            Upstream::Working => "working (the name as asked resolves, search artifacts are NXDOMAIN)",
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

    /// Distinct names that reached an upstream, in order.
    pub fn leaked_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for line in self.upstream_queries() {
            if !names.contains(&line.query.name.as_str()) {
                names.push(&line.query.name);
            }
        }
        names
    }

    pub fn resolved(&self) -> bool {
        matches!(self.trace.result, Lookup::Resolved(_))
    }

    pub fn worst_case(&self) -> Duration {
        self.trace.worst_case
    }

    /// Replies whose question differs from the query (DESIGN 3 case 4).
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
        let (outcome, to) = match &served.reply {
            Reply::Local(outcome) => (*outcome, None),
            Reply::Upstream { to } => (upstream.answer(query, &target), Some(to.clone())),
        };
        lines.push(Line {
            query: query.clone(),
            block: served.block,
            plugin: served.plugin,
            upstream: to,
            outcome,
            question_matches: served.question_matches,
            at: Duration::ZERO,
        });
        outcome
    })?;
    // The resolver asks in order; stamp each line with its exchange's start.
    let times: Vec<Duration> = trace.queries().map(|(_, _, at)| at).collect();
    for (line, at) in lines.iter_mut().zip(times) {
        line.at = at;
    }
    Ok(Explanation { name: name.to_string(), config: config.clone(), upstream, with_corefile, lines, trace })
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{:.1}s", d.as_secs_f64()) }
}

fn then_note(exchange: &Exchange, resolver: Resolver) -> Option<String> {
    match exchange.then {
        Then::StopSearch => Some(format!(
            "{resolver} stops searching here ({}) and goes on to the name as written",
            exchange.queries.iter().map(|(_, o)| o.to_string()).collect::<Vec<_>>().join("/")
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
        writeln!(f, "search:   {}", if c.searches.is_empty() { "(none)".to_string() } else { c.searches.join(" ") })?;
        if !self.with_corefile {
            writeln!(f, "corefile: none given; every query is assumed to reach an upstream")?;
        }
        writeln!(f, "upstream: {}", self.upstream)?;
        writeln!(f)?;

        let name_width = self.lines.iter().map(|l| l.query.name.len()).max().unwrap_or(4).max(4);
        let block_width = self.lines.iter().map(|l| l.block.len()).max().unwrap_or(5).max(5);
        let plugin_width = self.lines.iter().map(|l| l.plugin.len()).max().unwrap_or(6).max(6);
        let upstream_cell = |l: &Line| match &l.upstream {
            Some(to) => format!("YES {to}"),
            None => "no".to_string(),
        };
        let up_width = self.lines.iter().map(|l| upstream_cell(l).len()).max().unwrap_or(8).max(8);
        writeln!(
            f,
            "{:>3}  {:>5}  {:<4}  {:<name_width$}  {:<block_width$}  {:<plugin_width$}  {:<up_width$}  outcome",
            "#", "at", "type", "name", "block", "plugin", "upstream"
        )?;
        let mut index = 0;
        for exchange in &self.trace.exchanges {
            if let Some(reason) = exchange.not_sent {
                writeln!(f, "{:>3}  {:>5}  {:<4}  {:<name_width$}  not sent: {reason}", "-", secs(exchange.at), "", exchange.name)?;
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
                "verdict: {reaching} of {} queries reach an upstream: {}",
                self.lines.len(),
                leaked.join(", ")
            )?;
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
            writeln!(f, "         {} replies carry a question that differs from the query", mismatches.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_corefile_sends_everything_upstream() {
        let config = ResolverConfig::new(Resolver::Glibc, vec!["tailb45a71.ts.net".into()]).with_ndots(5);
        let e = explain("frigate", &config, &NoCorefile, false, Upstream::BlackHole).unwrap();
        assert_eq!(e.upstream_queries().len(), 4);
        assert!(!e.resolved());
        // glibc: the search domain times out (10 s), then the bare name does too.
        assert_eq!(e.worst_case(), Duration::from_secs(20));
        assert!(e.to_string().contains("corefile: none given"));
    }
}
