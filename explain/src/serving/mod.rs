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
//! - `acl` (allow, block, filter, drop by query type and client net; the
//!   client is the pod, or CoreDNS's own address after a forward to itself)
//!   and `autopath` (the search walk inside CoreDNS, as plugin/autopath and
//!   the kubernetes plugin's AutoPath do it at 1.8.4 and 1.14.2).
//! - A forward target is CoreDNS itself only when it is one of the
//!   Corefile's own listeners (a `bind` address on that port, or any local
//!   address where the blocks on that port bind nothing) or a cluster DNS
//!   Service IP on 53; a chain of forwards to itself ends when it repeats a
//!   (block, name) or grows longer than the Corefile has server blocks.
//! - A key without a port listens on `-dns.port` (`ServeContext::dns_port`),
//!   53 by default. A `kubernetes` Service has an IPv4 ClusterIP only: AAAA
//!   is NODATA.
//! - Checked against real CoreDNS on every cell of the matrix the plan writes
//!   (explain/tests/matrix_agreement.rs).
//! - Not modelled: `cache` (a cached reply is the reply the model gives),
//!   listeners that differ only by `bind`, DS routing, zone data.
//!
//! Files: this one holds the public API (`serve`, `ServeContext`,
//! `cluster_dns_port`; `Served`, `Reply`, `Outcome` and `QType` come from
//! `crate::answer`) and the name helpers; `route` picks the server block;
//! `plugins` runs a block's plugin chain; `expr` reads `view` expressions;
//! `regexp` compiles Go regexps.

mod acl;
mod autopath;
mod expr;
mod plugins;
mod regexp;
mod route;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};

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
    /// The port the query arrives on; `None`: the `.` block's.
    pub port: Option<u16>,
    /// CoreDNS's `-dns.port` flag: the port of every server block key that
    /// names none; `None`: 53, CoreDNS's default.
    pub dns_port: Option<u16>,
    /// Whether an in-cluster name (lower-case, absolute:
    /// `frigate.video-management-system.svc.cluster.local.`) exists, for the
    /// `kubernetes` plugin; any other name in its zones is NXDOMAIN.
    pub in_cluster: &'a dyn Fn(&str) -> bool,
    /// The pod that asks: its address (for `acl`) and its search list (for
    /// `autopath`, whose search path CoreDNS builds from the pod's namespace
    /// and its own resolv.conf, taken to be the node's: the pod's entries
    /// after the cluster's three).
    pub client: Client<'a>,
    /// The kube-dns Service IPs: a forward to one on port 53 reaches this
    /// CoreDNS's cluster listener.
    pub cluster_dns_ips: &'a [IpAddr],
    /// What an upstream answers for a name CoreDNS itself sends on while it
    /// waits (`autopath` trying its search path): the caller's upstream model.
    pub upstream: &'a dyn Fn(&str, QType) -> Outcome,
}

/// The client of a query: a pod.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// Its resolv.conf search list, as kubelet wrote it.
    pub search: &'a [String],
}

/// A pod address in kubeadm's default pod network, for callers that do not say.
pub const DEFAULT_POD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 244, 0, 10));

/// An upstream that never answers (docs/design.md §1's unreachable 8.8.8.8).
pub fn black_holed_upstream(_name: &str, _qtype: QType) -> Outcome {
    Outcome::Timeout
}

impl<'a> ServeContext<'a> {
    /// A context for `version`: the cluster listener, a pod at
    /// [`DEFAULT_POD_IP`] with no search list, no Service IPs, a black-holed upstream.
    pub fn new(version: CoreDnsVersion, in_cluster: &'a dyn Fn(&str) -> bool) -> Self {
        ServeContext {
            version,
            port: None,
            dns_port: None,
            in_cluster,
            client: Client {
                ip: DEFAULT_POD_IP,
                search: &[],
            },
            cluster_dns_ips: &[],
            upstream: &black_holed_upstream,
        }
    }
}

/// Serves one query as CoreDNS would.
pub fn serve(corefile: &Corefile, qname: &str, qtype: QType, ctx: &ServeContext<'_>) -> Served {
    let port = ctx
        .port
        .unwrap_or_else(|| cluster_dns_port(corefile, ctx.dns_port));
    let hop = Hop {
        client: Some(ctx.client.ip),
        trail: Vec::new(),
    };
    serve_at(corefile, port, qname, qtype, ctx, &hop)
}

/// Where a query is in CoreDNS's forwards to itself.
#[derive(Debug, Clone)]
struct Hop {
    /// The client CoreDNS sees: the pod, or after a forward to itself the
    /// address it forwarded to (the source it sends from); `None` for an
    /// address the model does not know (`{$POD_IP}`).
    client: Option<IpAddr>,
    /// The (server key, name) of each forward to itself so far.
    trail: Vec<(String, String)>,
}

fn serve_at(
    corefile: &Corefile,
    port: u16,
    qname: &str,
    qtype: QType,
    ctx: &ServeContext<'_>,
    hop: &Hop,
) -> Served {
    let name = absolute_lower(qname);
    let default_port = ctx.dns_port.unwrap_or(DEFAULT_DNS_PORT);
    let Some((block, key)) = route(corefile, port, default_port, &name, qtype) else {
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
        hop: hop.clone(),
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

/// The port of the first block that serves `.`: where pods' queries arrive;
/// `dns_port` is CoreDNS's `-dns.port` (53 when `None`).
pub fn cluster_dns_port(corefile: &Corefile, dns_port: Option<u16>) -> u16 {
    corefile
        .blocks
        .iter()
        .flat_map(|b| &b.keys)
        .find(|k| k.zone == ".")
        .and_then(|k| k.port)
        .or(dns_port)
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
