//! How CoreDNS serves one query through a parsed Corefile: which server
//! block takes it, what each plugin does with it, and how it ends.
//!
//! A model of CoreDNS's own code (core/dnsserver/server.go, plugin.cfg and
//! the plugins named below, read at 1.8.4 and 1.14.2), not of a zone's data:
//! - Routing: the server block with the longest zone matching the name, on
//!   the listener's port, whose `view` expression (if any) admits the query;
//!   then `.`; otherwise REFUSED. Blocks on other ports never see it.
//! - Plugins run in CoreDNS's fixed order (plugin.cfg), not in file order;
//!   all lines of one plugin in a block are one plugin instance.
//! - `rewrite` name rules (exact, prefix, suffix, substring, regex; stop or
//!   continue; `answer auto` and `answer name`), `template`, `hosts` (inline
//!   entries), `kubernetes` (the caller says which in-cluster names exist),
//!   `file`/`auto`/`secondary` (authoritative for their zones; contents not
//!   modelled), `forward` and `grpc` (the query leaves CoreDNS, unless it
//!   goes to CoreDNS's own listener: then it is served again from routing
//!   on), `local`, `whoami`, `erratic`. Other plugins pass the query on.
//! - Not modelled: `cache` (a cached reply is the reply the model gives),
//!   listeners that differ only by `bind`, `acl`, DS routing, zone data.
//!
//! Files: this one holds the public API (`serve`, `ServeContext`, `Served`,
//! `Outcome`, `QType`) and the name helpers; `route` picks the server block;
//! `plugins` runs a block's plugin chain; `expr` reads `view` expressions;
//! `regexp` compiles Go regexps.

mod expr;
mod plugins;
mod regexp;
mod route;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use dnspolicy_dns::corefile::Corefile;
use dnspolicy_dns::stanza::DEFAULT_DNS_PORT;
use dnspolicy_dns::version::CoreDnsVersion;

use plugins::Run;
use route::route;

/// Query types a resolver sends; others by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    Ptr,
    Txt,
    Mx,
    Cname,
    Ns,
    Soa,
    Any,
    Other(u16),
}

impl QType {
    fn name(self) -> String {
        match self {
            QType::A => "A".into(),
            QType::Aaaa => "AAAA".into(),
            QType::Srv => "SRV".into(),
            QType::Ptr => "PTR".into(),
            QType::Txt => "TXT".into(),
            QType::Mx => "MX".into(),
            QType::Cname => "CNAME".into(),
            QType::Ns => "NS".into(),
            QType::Soa => "SOA".into(),
            QType::Any => "ANY".into(),
            QType::Other(n) => format!("TYPE{n}"),
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for QType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        Ok(match upper.as_str() {
            "A" => QType::A,
            "AAAA" => QType::Aaaa,
            "SRV" => QType::Srv,
            "PTR" => QType::Ptr,
            "TXT" => QType::Txt,
            "MX" => QType::Mx,
            "CNAME" => QType::Cname,
            "NS" => QType::Ns,
            "SOA" => QType::Soa,
            "ANY" => QType::Any,
            _ => match upper.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
                Some(n) => QType::Other(n),
                None => {
                    return Err(format!(
                        "{s:?} is not a DNS query type (A, AAAA, SRV, ... or TYPEn)"
                    ));
                }
            },
        })
    }
}

/// What the client gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records.
    Answer,
    NxDomain,
    /// NOERROR without records of the type asked for.
    NoData,
    /// The query leaves CoreDNS: the reply is whatever `targets` answer for
    /// `name` (the name after rewrites), or a timeout if they never do.
    Upstream {
        targets: Vec<String>,
        name: String,
    },
    ServFail,
    Refused,
    /// CoreDNS writes no reply; the client waits for its timeout.
    NoReply,
}

/// How one query was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The server key of the block that took the query (`.:53`,
    /// `tailb45a71.ts.net:53`); empty when no block did.
    pub block: String,
    /// The plugin that ended the query (`kubernetes`, `template`, `forward`,
    /// ...); empty when none did (REFUSED, or SERVFAIL at the chain's end).
    pub plugin: String,
    /// What happened, plugin by plugin.
    pub steps: Vec<String>,
    pub outcome: Outcome,
    /// Whether the reply's question section is the query's (a resolver drops
    /// a reply whose question differs, and waits for its timeout).
    pub question_matches: bool,
    /// For `Outcome::Upstream`: whether the question still matches when the
    /// upstream never answers and `forward` itself fails. CoreDNS writes that
    /// SERVFAIL from the rewritten query unless a `stop` rule's reverter
    /// writes it (1.9.0 on); before, a resolver drops the reply and times out.
    pub question_matches_if_upstream_fails: bool,
    /// The name the answering plugin saw, after rewrites; lower-case, absolute.
    pub resolved_name: String,
}

/// What the model needs besides the Corefile.
pub struct ServeContext<'a> {
    /// Behaviour that changed between releases follows this version.
    pub version: CoreDnsVersion,
    /// The port the query arrives on; `None`: the `.` block's (53 if unset).
    pub port: Option<u16>,
    /// Whether an in-cluster name (lower-case, absolute:
    /// `frigate.video-management-system.svc.cluster.local.`) exists, for the
    /// `kubernetes` plugin; any other name in its zones is NXDOMAIN.
    pub in_cluster: &'a dyn Fn(&str) -> bool,
}

/// Serves one query as CoreDNS would.
pub fn serve(corefile: &Corefile, qname: &str, qtype: QType, ctx: &ServeContext<'_>) -> Served {
    let port = ctx.port.unwrap_or_else(|| cluster_dns_port(corefile));
    serve_at(corefile, port, qname, qtype, ctx, 0)
}

/// How many times a query may be forwarded from CoreDNS to itself before the
/// model calls it a loop.
const MAX_SELF_FORWARDS: u8 = 4;

fn serve_at(
    corefile: &Corefile,
    port: u16,
    qname: &str,
    qtype: QType,
    ctx: &ServeContext<'_>,
    depth: u8,
) -> Served {
    let name = absolute_lower(qname);
    let Some((block, key)) = route(corefile, port, &name, qtype) else {
        return Served {
            block: String::new(),
            plugin: String::new(),
            steps: vec![format!(
                "no server block on port {port} serves {name}: REFUSED"
            )],
            outcome: Outcome::Refused,
            question_matches: true,
            question_matches_if_upstream_fails: true,
            resolved_name: name,
        };
    };
    let mut run = Run {
        ctx,
        corefile,
        port,
        depth,
        block,
        qtype,
        name: name.clone(),
        steps: Vec::new(),
        plugin: String::new(),
        rewritten: false,
        stopped: false,
        restores_question: false,
        maps_answers: false,
        self_forwarded: false,
        answered_by: None,
    };
    let outcome = run.chain();
    // CoreDNS writes failures itself, from the rewritten query, unless a
    // stop rule's reverter writes them (1.9.0 on).
    // A reply CoreDNS gets back from itself is written through the reverter.
    let failure_matches = !run.rewritten
        || (run.self_forwarded && run.restores_question)
        || (run.stopped && ctx.version >= CoreDnsVersion::REWRITE_REVERTS_FAILURES);
    let question_matches = !run.rewritten
        || match outcome {
            Outcome::NoReply => true,
            Outcome::ServFail | Outcome::Refused if !run.self_forwarded => failure_matches,
            _ => run.restores_question,
        };
    if !question_matches {
        run.steps.push(format!(
            "the reply's question is {} instead of {name}: a resolver drops it",
            run.name
        ));
    }
    Served {
        block: key,
        plugin: run.plugin,
        steps: run.steps,
        outcome,
        question_matches,
        question_matches_if_upstream_fails: failure_matches,
        resolved_name: run.name,
    }
}

/// The port of the first block that serves `.`: where pods' queries arrive.
pub fn cluster_dns_port(corefile: &Corefile) -> u16 {
    corefile
        .blocks
        .iter()
        .flat_map(|b| &b.keys)
        .find(|k| k.zone == ".")
        .and_then(|k| k.port)
        .unwrap_or(DEFAULT_DNS_PORT)
}

fn absolute_lower(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// `name` is `zone` or below it, label-wise; both absolute.
fn in_zone(name: &str, zone: &str) -> bool {
    zone == "."
        || name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Answer => "an answer",
        Outcome::NxDomain => "NXDOMAIN",
        Outcome::NoData => "NODATA",
        Outcome::Upstream { .. } => "upstream",
        Outcome::ServFail => "SERVFAIL",
        Outcome::Refused => "REFUSED",
        Outcome::NoReply => "no reply",
    }
}

/// Zone arguments as CoreDNS normalizes them: lower-case, absolute.
fn zones_of(args: &[String]) -> Vec<String> {
    args.iter().map(|a| absolute_lower(a)).collect()
}
