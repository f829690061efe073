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
//! Files: this one holds the public API (`serve`, `ServeContext`,
//! `cluster_dns_port`; `Served`, `Reply`, `Outcome` and `QType` come from
//! `crate::answer`) and the name helpers; `route` picks the server block;
//! `plugins` runs a block's plugin chain; `expr` reads `view` expressions;
//! `regexp` compiles Go regexps.

mod expr;
mod plugins;
mod regexp;
mod route;
#[cfg(test)]
mod tests;

use dnspolicy_dns::corefile::Corefile;
use dnspolicy_dns::stanza::DEFAULT_DNS_PORT;
use dnspolicy_dns::version::CoreDnsVersion;

pub use crate::answer::{Outcome, QType, QTypeError, Reply, Served};
use plugins::Run;
use route::route;

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
            reply: Reply::Local(Outcome::Refused),
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
    let reply = run.chain();
    // CoreDNS writes failures itself, from the rewritten query, unless a
    // stop rule's reverter writes them (1.9.0 on).
    // A reply CoreDNS gets back from itself is written through the reverter.
    let failure_matches = !run.rewritten
        || (run.self_forwarded && run.restores_question)
        || (run.stopped && ctx.version >= CoreDnsVersion::REWRITE_REVERTS_FAILURES);
    let question_matches = !run.rewritten
        || match reply {
            Reply::Local(Outcome::Timeout) => true,
            Reply::Local(Outcome::ServFail | Outcome::Refused) if !run.self_forwarded => {
                failure_matches
            }
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
        reply,
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

/// Zone arguments as CoreDNS normalizes them: lower-case, absolute.
fn zones_of(args: &[String]) -> Vec<String> {
    args.iter().map(|a| absolute_lower(a)).collect()
}
