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

use std::fmt;
use std::str::FromStr;

use dnspolicy_dns::corefile::{Corefile, Directive, ServerBlock};
use dnspolicy_dns::stanza::DEFAULT_DNS_PORT;
use dnspolicy_dns::version::CoreDnsVersion;

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

/// CoreDNS's plugin order (plugin.cfg, 1.14.2); plugins not listed come after,
/// in file order. `view` filters during routing, not here.
const PLUGIN_ORDER: &[&str] = &[
    "root",
    "metadata",
    "geoip",
    "cancel",
    "tls",
    "quic",
    "grpc_server",
    "https",
    "https3",
    "timeouts",
    "multisocket",
    "reload",
    "nsid",
    "bufsize",
    "bind",
    "debug",
    "trace",
    "ready",
    "health",
    "pprof",
    "prometheus",
    "errors",
    "log",
    "dnstap",
    "local",
    "dns64",
    "acl",
    "any",
    "chaos",
    "loadbalance",
    "tsig",
    "cache",
    "rewrite",
    "header",
    "dnssec",
    "autopath",
    "minimal",
    "template",
    "transfer",
    "hosts",
    "route53",
    "azure",
    "clouddns",
    "k8s_external",
    "kubernetes",
    "file",
    "auto",
    "secondary",
    "etcd",
    "loop",
    "forward",
    "grpc",
    "erratic",
    "whoami",
    "on",
    "sign",
    "view",
    "nomad",
];

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

/// The block (and the key as written) that takes the query: longest zone
/// first, each zone's blocks in file order, a block with a `view` only when
/// its expression admits the query; `.` last.
fn route<'c>(
    corefile: &'c Corefile,
    port: u16,
    name: &str,
    qtype: QType,
) -> Option<(&'c ServerBlock, String)> {
    let mut candidates: Vec<&str> = Vec::new();
    let mut rest = name;
    while rest != "." && !rest.is_empty() {
        candidates.push(rest);
        rest = rest
            .split_once('.')
            .map_or(".", |(_, r)| if r.is_empty() { "." } else { r });
    }
    candidates.push(".");
    for zone in candidates {
        for b in &corefile.blocks {
            let key = b.keys.iter().find(|k| {
                k.zone == zone
                    && k.port.unwrap_or(DEFAULT_DNS_PORT) == port
                    && k.scheme.as_deref().is_none_or(|s| s == "dns")
            });
            if let Some(key) = key
                && view_admits(b, name, qtype)
            {
                return Some((b, key.raw.clone()));
            }
        }
    }
    None
}

/// Whether a block's `view` (if any) admits the query. An expression the
/// model cannot read admits nothing, so the model never sends a query to a
/// block CoreDNS might not.
fn view_admits(block: &ServerBlock, name: &str, qtype: QType) -> bool {
    block
        .directives
        .iter()
        .filter(|d| d.name == "view")
        .flat_map(|d| d.block.iter().filter(|e| e.name == "expr"))
        .all(|e| expr::eval(&e.args.join(" "), name, qtype).unwrap_or(false))
}

struct Run<'a, 'c> {
    ctx: &'a ServeContext<'a>,
    corefile: &'c Corefile,
    /// The listener's port.
    port: u16,
    /// Forwards from CoreDNS to itself so far.
    depth: u8,
    block: &'c ServerBlock,
    qtype: QType,
    /// The current name, after rewrites.
    name: String,
    steps: Vec<String>,
    /// The plugin that ended the query.
    plugin: String,
    rewritten: bool,
    /// A `stop` rule matched.
    stopped: bool,
    /// A rewrite put a reverter in front of the client that restores the question.
    restores_question: bool,
    /// The reverter maps answer names back (`answer auto`/`answer name`).
    maps_answers: bool,
    /// `forward` sent the query to CoreDNS's own listener.
    self_forwarded: bool,
    /// The plugin that answered when this block asked CoreDNS itself.
    answered_by: Option<String>,
}

impl Run<'_, '_> {
    fn chain(&mut self) -> Outcome {
        let mut plugins: Vec<&str> = Vec::new();
        for d in &self.block.directives {
            if !plugins.contains(&d.name.as_str()) {
                plugins.push(&d.name);
            }
        }
        let rank = |p: &str| {
            PLUGIN_ORDER
                .iter()
                .position(|x| *x == p)
                .unwrap_or(PLUGIN_ORDER.len())
        };
        plugins.sort_by_key(|p| rank(p));
        for plugin in plugins {
            let lines: Vec<&Directive> = self
                .block
                .directives
                .iter()
                .filter(|d| d.name == plugin)
                .collect();
            if let Some(outcome) = self.plugin(plugin, &lines) {
                self.plugin = self
                    .answered_by
                    .clone()
                    .unwrap_or_else(|| plugin.to_string());
                return outcome;
            }
        }
        self.steps.push("no plugin answered: SERVFAIL".into());
        Outcome::ServFail
    }

    fn block_zones(&self) -> Vec<String> {
        self.block.keys.iter().map(|k| k.zone.clone()).collect()
    }

    /// One plugin: `Some(outcome)` when it ends the query.
    fn plugin(&mut self, plugin: &str, lines: &[&Directive]) -> Option<Outcome> {
        match plugin {
            "rewrite" => {
                self.rewrite(lines);
                None
            }
            "template" => self.template(lines),
            "hosts" => self.hosts(lines[0]),
            "kubernetes" => self.kubernetes(lines[0]),
            "file" | "auto" | "secondary" => {
                let d = lines[0];
                let zones = if plugin == "auto" {
                    Vec::new()
                } else {
                    zones_of(d.args.get(1..).unwrap_or(&[]))
                };
                let zones = if zones.is_empty() {
                    self.block_zones()
                } else {
                    zones
                };
                let zone = zones.iter().find(|z| in_zone(&self.name, z))?;
                self.steps.push(format!(
                    "{plugin}: {} is in zone {zone}, answered from its data (not modelled)",
                    self.name
                ));
                Some(Outcome::Answer)
            }
            "forward" | "grpc" => lines.iter().find_map(|d| self.forward(plugin, d)),
            "local" => {
                (self.name == "localhost." || self.name.ends_with(".localhost.")).then(|| {
                    self.steps.push(format!("local: answers {}", self.name));
                    Outcome::Answer
                })
            }
            "whoami" | "erratic" => {
                self.steps.push(format!("{plugin}: answers {}", self.name));
                Some(Outcome::Answer)
            }
            "any" if self.qtype == QType::Any => {
                self.steps
                    .push("any: answers an ANY query with HINFO".into());
                Some(Outcome::Answer)
            }
            _ => None,
        }
    }

    fn rewrite(&mut self, lines: &[&Directive]) {
        let version = self.ctx.version;
        for d in lines {
            let mut args: Vec<String> = d.args.clone();
            if args.len() < 2 {
                // `rewrite [stop|continue] { rule }`: the block's tokens, flattened.
                for line in &d.block {
                    args.push(line.name.clone());
                    args.extend(line.args.iter().cloned());
                }
            }
            let rule = match NameRule::parse(&args) {
                Ok(Some(rule)) => rule,
                Ok(None) => continue,
                Err(e) => {
                    self.steps.push(format!(
                        "rewrite: rule {:?} not modelled ({e}); passed over",
                        args.join(" ")
                    ));
                    continue;
                }
            };
            let Some(new) = rule.apply(&self.name) else {
                continue;
            };
            self.steps.push(format!("rewrite: {} to {new}", self.name));
            self.name = new;
            self.rewritten = true;
            if rule.answer_rules {
                self.restores_question = true;
                self.maps_answers = true;
            }
            if rule.stop {
                self.stopped = true;
                if version >= CoreDnsVersion::REWRITE_REVERTS_FAILURES {
                    self.restores_question = true;
                }
                break;
            }
        }
        if self.rewritten && !self.maps_answers {
            self.steps
                .push("rewrite: no answer rule, so answers keep the rewritten name".into());
        }
    }

    fn template(&mut self, lines: &[&Directive]) -> Option<Outcome> {
        let templates: Vec<Template> = lines
            .iter()
            .map(|d| Template::parse(d, &self.block_zones()))
            .collect();
        if !templates
            .iter()
            .any(|t| t.zones.iter().any(|z| in_zone(&self.name, z)))
        {
            return None;
        }
        for t in &templates {
            let Some(zone) = t.zones.iter().find(|z| in_zone(&self.name, z)) else {
                continue;
            };
            let type_ok =
                t.qtype == "ANY" || self.qtype == QType::Any || t.qtype == self.qtype.name();
            if !type_ok {
                continue;
            }
            if t.regexes
                .iter()
                .any(|r| r.as_ref().is_some_and(|r| r.is_match(&self.name)))
            {
                let outcome = match t.rcode.as_str() {
                    "NXDOMAIN" => Outcome::NxDomain,
                    "SERVFAIL" => Outcome::ServFail,
                    "REFUSED" => Outcome::Refused,
                    _ if t.answers => Outcome::Answer,
                    _ => Outcome::NoData,
                };
                self.steps.push(format!(
                    "template {zone}: matches {}, answers {}",
                    self.name,
                    outcome_word(&outcome)
                ));
                return Some(outcome);
            }
            if t.fallthrough.as_ref().is_some_and(|zones| {
                zones.is_empty() || zones.iter().any(|z| in_zone(&self.name, z))
            }) {
                self.steps.push(format!(
                    "template {zone}: no match for {}, falls through",
                    self.name
                ));
                continue;
            }
            return Some(if self.ctx.version >= CoreDnsVersion::TEMPLATE_SERVFAIL {
                self.steps.push(format!(
                    "template {zone}: no match for {} and no fallthrough: SERVFAIL",
                    self.name
                ));
                Outcome::ServFail
            } else {
                self.steps.push(format!(
                    "template {zone}: no match for {} and no fallthrough: no reply",
                    self.name
                ));
                Outcome::NoReply
            });
        }
        None
    }

    fn hosts(&mut self, d: &Directive) -> Option<Outcome> {
        // `hosts [FILE [ZONES...]] { IP NAME...; fallthrough [ZONES] }`
        let zones = zones_of(d.args.get(1..).unwrap_or(&[]));
        let zones = if zones.is_empty() {
            self.block_zones()
        } else {
            zones
        };
        if !zones.iter().any(|z| in_zone(&self.name, z)) {
            return None;
        }
        let mut fallthrough: Option<Vec<String>> = None;
        let mut found_v4 = false;
        let mut found_v6 = false;
        for line in &d.block {
            if line.name == "fallthrough" {
                fallthrough = Some(zones_of(&line.args));
            } else if let Ok(ip) = line.name.parse::<std::net::IpAddr>()
                && line.args.iter().any(|n| absolute_lower(n) == self.name)
            {
                if ip.is_ipv4() {
                    found_v4 = true;
                } else {
                    found_v6 = true;
                }
            }
        }
        if found_v4 || found_v6 {
            let has = match self.qtype {
                QType::A => found_v4,
                QType::Aaaa => found_v6,
                _ => false,
            };
            let outcome = if has {
                Outcome::Answer
            } else {
                Outcome::NoData
            };
            self.steps.push(format!(
                "hosts: {} is listed, answers {}",
                self.name,
                outcome_word(&outcome)
            ));
            return Some(outcome);
        }
        if fallthrough.is_some_and(|z| z.is_empty() || z.iter().any(|z| in_zone(&self.name, z))) {
            return None;
        }
        self.steps.push(format!(
            "hosts: {} is not listed and there is no fallthrough: SERVFAIL",
            self.name
        ));
        Some(Outcome::ServFail)
    }

    fn kubernetes(&mut self, d: &Directive) -> Option<Outcome> {
        let zones = zones_of(&d.args);
        let zones = if zones.is_empty() {
            self.block_zones()
        } else {
            zones
        };
        let zone = zones.iter().find(|z| in_zone(&self.name, z))?.clone();
        if (self.ctx.in_cluster)(&self.name) {
            let outcome = match self.qtype {
                QType::A | QType::Aaaa | QType::Srv | QType::Ptr | QType::Any => Outcome::Answer,
                _ => Outcome::NoData,
            };
            self.steps.push(format!(
                "kubernetes {zone}: {} exists, answers {}",
                self.name,
                outcome_word(&outcome)
            ));
            return Some(outcome);
        }
        let fallthrough = d
            .block
            .iter()
            .find(|l| l.name == "fallthrough")
            .map(|l| zones_of(&l.args));
        if fallthrough.is_some_and(|z| z.is_empty() || z.iter().any(|z| in_zone(&self.name, z))) {
            self.steps.push(format!(
                "kubernetes {zone}: no {}, falls through",
                self.name
            ));
            return None;
        }
        self.steps.push(format!(
            "kubernetes {zone}: no {}, answers NXDOMAIN",
            self.name
        ));
        Some(Outcome::NxDomain)
    }

    fn forward(&mut self, plugin: &str, d: &Directive) -> Option<Outcome> {
        let from = absolute_lower(d.args.first()?);
        let except: Vec<String> = d
            .block
            .iter()
            .filter(|l| l.name == "except")
            .flat_map(|l| zones_of(&l.args))
            .collect();
        let excepted = self.name != from && except.iter().any(|z| in_zone(&self.name, z));
        if !in_zone(&self.name, &from) || excepted {
            return None;
        }
        let targets: Vec<String> = d.args[1..].to_vec();
        if let Some(me) = targets.iter().find(|t| self.is_self(t)) {
            return Some(self.ask_itself(plugin, &from, me));
        }
        self.steps.push(format!(
            "{plugin} {from}: sends {} to {}",
            self.name,
            targets.join(" ")
        ));
        Some(Outcome::Upstream {
            targets,
            name: self.name.clone(),
        })
    }

    /// Whether a forward target is this listener: a loopback or wildcard
    /// address, or one the blocks on this port `bind`, on this port.
    fn is_self(&self, target: &str) -> bool {
        let addr = target.strip_prefix("dns://").unwrap_or(target);
        let parsed = addr
            .parse::<std::net::SocketAddr>()
            .map(|a| (a.ip(), a.port()))
            .or_else(|_| {
                addr.parse::<std::net::IpAddr>()
                    .map(|ip| (ip, DEFAULT_DNS_PORT))
            });
        let Ok((ip, port)) = parsed else { return false };
        if port != self.port {
            return false;
        }
        ip.is_loopback()
            || ip.is_unspecified()
            || self.corefile.blocks.iter().any(|b| {
                b.keys
                    .iter()
                    .any(|k| k.port.unwrap_or(DEFAULT_DNS_PORT) == self.port)
                    && b.directives.iter().filter(|d| d.name == "bind").any(|d| {
                        d.args
                            .iter()
                            .any(|a| a.parse::<std::net::IpAddr>() == Ok(ip))
                    })
            })
    }

    /// `forward` to CoreDNS's own listener: the query is served again, from
    /// routing on, and the reply comes back through this block's plugins.
    fn ask_itself(&mut self, plugin: &str, from: &str, me: &str) -> Outcome {
        self.self_forwarded = true;
        self.steps.push(format!(
            "{plugin} {from}: asks CoreDNS itself ({me}) for {}",
            self.name
        ));
        if self.depth >= MAX_SELF_FORWARDS {
            self.steps
                .push("CoreDNS keeps forwarding to itself: a loop, SERVFAIL".into());
            return Outcome::ServFail;
        }
        let inner = serve_at(
            self.corefile,
            self.port,
            &self.name,
            self.qtype,
            self.ctx,
            self.depth + 1,
        );
        self.steps.push(format!(
            "{}: served by {}",
            self.name,
            if inner.block.is_empty() {
                "no block"
            } else {
                &inner.block
            }
        ));
        self.steps
            .extend(inner.steps.iter().map(|s| format!("  {s}")));
        self.answered_by = Some(inner.plugin.clone());
        self.name = inner.resolved_name.clone();
        match inner.outcome {
            // `forward` gives up on a silent upstream with SERVFAIL.
            Outcome::NoReply => Outcome::ServFail,
            other => other,
        }
    }
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

/// A `rewrite ... name ...` rule. Other rule types (`type`, `class`,
/// `edns0`, `ttl`, `cname`, `rcode`) leave the name alone and are skipped.
struct NameRule {
    stop: bool,
    kind: NameMatch,
    /// `answer auto` or `answer name`: the reverter maps answers back. Also
    /// true for `exact`, which always maps its answers back.
    answer_rules: bool,
}

enum NameMatch {
    Exact(String, String),
    Prefix(String, String),
    Suffix(String, String),
    Substring(String, String),
    Regex(re::Regex, String),
}

impl NameRule {
    fn parse(args: &[String]) -> Result<Option<NameRule>, String> {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut stop = true;
        match args.first().map(|a| a.to_ascii_lowercase()) {
            Some(m) if m == "continue" => {
                stop = false;
                args.remove(0);
            }
            Some(m) if m == "stop" => {
                args.remove(0);
            }
            _ => {}
        }
        if args.first().map(|a| a.to_ascii_lowercase()).as_deref() != Some("name") {
            return Ok(None);
        }
        let args = &args[1..];
        let (kind, from, to, rest): (&str, &str, &str, &[&str]) = match args {
            [from, to] => ("exact", from, to, &[]),
            [kind, from, to, rest @ ..] => (kind, from, to, rest),
            _ => return Err("too few arguments".into()),
        };
        let answer_rules = rest.iter().any(|a| a.eq_ignore_ascii_case("answer"));
        let norm = |s: &str| absolute_lower(s);
        let kind = match kind.to_ascii_lowercase().as_str() {
            "exact" => NameMatch::Exact(norm(from), norm(to)),
            "prefix" => NameMatch::Prefix(from.to_ascii_lowercase(), to.to_ascii_lowercase()),
            "suffix" => NameMatch::Suffix(norm(from), norm(to)),
            "substring" => NameMatch::Substring(from.to_ascii_lowercase(), to.to_ascii_lowercase()),
            "regex" => NameMatch::Regex(re::Regex::new(from)?, norm(to)),
            other => return Err(format!("unknown match type {other:?}")),
        };
        let answer_rules = answer_rules || matches!(kind, NameMatch::Exact(..));
        Ok(Some(NameRule {
            stop,
            kind,
            answer_rules,
        }))
    }

    /// The rewritten name, if the rule matches.
    fn apply(&self, name: &str) -> Option<String> {
        match &self.kind {
            NameMatch::Exact(from, to) => (name == from).then(|| to.clone()),
            NameMatch::Prefix(from, to) => {
                name.strip_prefix(from.as_str()).map(|r| format!("{to}{r}"))
            }
            NameMatch::Suffix(from, to) => {
                name.strip_suffix(from.as_str()).map(|r| format!("{r}{to}"))
            }
            NameMatch::Substring(from, to) => name
                .contains(from.as_str())
                .then(|| name.replace(from.as_str(), to)),
            NameMatch::Regex(regex, to) => {
                let groups = regex.captures(name)?;
                let mut out = to.clone();
                for (i, g) in groups.iter().enumerate() {
                    out = out.replace(&format!("{{{i}}}"), g.as_deref().unwrap_or(""));
                }
                Some(out)
            }
        }
    }
}

/// One `template CLASS TYPE [ZONES...] { ... }`.
struct Template {
    qtype: String,
    zones: Vec<String>,
    /// `None` for a regex the model cannot read: never matches.
    regexes: Vec<Option<re::Regex>>,
    rcode: String,
    answers: bool,
    /// `Some(zones)` with `fallthrough [ZONES]`.
    fallthrough: Option<Vec<String>>,
}

impl Template {
    fn parse(d: &Directive, block_zones: &[String]) -> Template {
        let zones = zones_of(d.args.get(2..).unwrap_or(&[]));
        let mut t = Template {
            qtype: d
                .args
                .get(1)
                .map_or("ANY".into(), |t| t.to_ascii_uppercase()),
            zones: if zones.is_empty() {
                block_zones.to_vec()
            } else {
                zones
            },
            regexes: Vec::new(),
            rcode: "NOERROR".into(),
            answers: false,
            fallthrough: None,
        };
        for line in &d.block {
            match line.name.as_str() {
                "match" => t
                    .regexes
                    .extend(line.args.iter().map(|r| re::Regex::new(r).ok())),
                "answer" => t.answers = true,
                "rcode" => {
                    t.rcode = line
                        .args
                        .first()
                        .map_or("NOERROR".into(), |r| r.to_ascii_uppercase())
                }
                "fallthrough" => t.fallthrough = Some(zones_of(&line.args)),
                _ => {}
            }
        }
        if t.regexes.is_empty() {
            t.regexes.push(re::Regex::new(".*").ok());
        }
        t
    }
}

/// The `view` plugin's expressions (expr-lang), as far as they route by name
/// and type: `name() matches 'RE'`, `name() == '...'`, `type() == 'A'`,
/// `type() in ['A', 'AAAA']`, joined with `&&`/`and`, `||`/`or`, `!`/`not`
/// and parentheses.
mod expr {
    use super::{QType, re};

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        LParen,
        RParen,
        LBracket,
        RBracket,
        Comma,
        And,
        Or,
        Not,
        Eq,
        Ne,
        Matches,
        In,
    }

    fn lex(text: &str) -> Option<Vec<Tok>> {
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' | '\n' => i += 1,
                '(' => {
                    toks.push(Tok::LParen);
                    i += 1
                }
                ')' => {
                    toks.push(Tok::RParen);
                    i += 1
                }
                '[' => {
                    toks.push(Tok::LBracket);
                    i += 1
                }
                ']' => {
                    toks.push(Tok::RBracket);
                    i += 1
                }
                ',' => {
                    toks.push(Tok::Comma);
                    i += 1
                }
                '&' if chars.get(i + 1) == Some(&'&') => {
                    toks.push(Tok::And);
                    i += 2
                }
                '|' if chars.get(i + 1) == Some(&'|') => {
                    toks.push(Tok::Or);
                    i += 2
                }
                '=' if chars.get(i + 1) == Some(&'=') => {
                    toks.push(Tok::Eq);
                    i += 2
                }
                '!' if chars.get(i + 1) == Some(&'=') => {
                    toks.push(Tok::Ne);
                    i += 2
                }
                '!' => {
                    toks.push(Tok::Not);
                    i += 1
                }
                '\'' | '"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i)? {
                            '\\' => {
                                s.push(*chars.get(i + 1)?);
                                i += 2;
                            }
                            q if *q == c => {
                                i += 1;
                                break;
                            }
                            other => {
                                s.push(*other);
                                i += 1;
                            }
                        }
                    }
                    toks.push(Tok::Str(s));
                }
                c if c.is_alphanumeric() || c == '_' => {
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    toks.push(match word.as_str() {
                        "and" => Tok::And,
                        "or" => Tok::Or,
                        "not" => Tok::Not,
                        "matches" => Tok::Matches,
                        "in" => Tok::In,
                        _ => Tok::Ident(word),
                    });
                }
                _ => return None,
            }
        }
        Some(toks)
    }

    struct P<'a> {
        toks: &'a [Tok],
        i: usize,
        name: &'a str,
        qtype: QType,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Val {
        Bool(bool),
        Str(String),
        List(Vec<String>),
    }

    impl P<'_> {
        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.i)
        }
        fn eat(&mut self, t: &Tok) -> bool {
            if self.peek() == Some(t) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn or(&mut self) -> Option<bool> {
            let mut v = self.and()?;
            while self.eat(&Tok::Or) {
                let r = self.and()?;
                v = v || r;
            }
            Some(v)
        }
        fn and(&mut self) -> Option<bool> {
            let mut v = self.not()?;
            while self.eat(&Tok::And) {
                let r = self.not()?;
                v = v && r;
            }
            Some(v)
        }
        fn not(&mut self) -> Option<bool> {
            if self.eat(&Tok::Not) {
                return self.not().map(|v| !v);
            }
            self.comparison()
        }
        fn comparison(&mut self) -> Option<bool> {
            let left = self.value()?;
            let op = self.peek().cloned();
            match op {
                Some(Tok::Matches) | Some(Tok::Eq) | Some(Tok::Ne) | Some(Tok::In) => {
                    self.i += 1;
                    let right = self.value()?;
                    match (op?, left, right) {
                        (Tok::Matches, Val::Str(s), Val::Str(r)) => {
                            Some(re::Regex::new(&r).ok()?.is_match(&s))
                        }
                        (Tok::Eq, l, r) => Some(l == r),
                        (Tok::Ne, l, r) => Some(l != r),
                        (Tok::In, Val::Str(s), Val::List(l)) => Some(l.contains(&s)),
                        _ => None,
                    }
                }
                _ => match left {
                    Val::Bool(b) => Some(b),
                    _ => None,
                },
            }
        }
        fn value(&mut self) -> Option<Val> {
            match self.peek()?.clone() {
                Tok::LParen => {
                    self.i += 1;
                    let v = self.or()?;
                    self.eat(&Tok::RParen).then_some(Val::Bool(v))
                }
                Tok::Str(s) => {
                    self.i += 1;
                    Some(Val::Str(s))
                }
                Tok::LBracket => {
                    self.i += 1;
                    let mut items = Vec::new();
                    while !self.eat(&Tok::RBracket) {
                        match self.peek()?.clone() {
                            Tok::Str(s) => items.push(s),
                            _ => return None,
                        }
                        self.i += 1;
                        self.eat(&Tok::Comma);
                    }
                    Some(Val::List(items))
                }
                Tok::Ident(f) => {
                    self.i += 1;
                    if !(self.eat(&Tok::LParen) && self.eat(&Tok::RParen)) {
                        return None;
                    }
                    match f.as_str() {
                        "name" => Some(Val::Str(self.name.to_string())),
                        "type" => Some(Val::Str(self.qtype.name())),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
    }

    /// `None` when the expression is outside what the model reads.
    pub fn eval(text: &str, name: &str, qtype: QType) -> Option<bool> {
        let toks = lex(text)?;
        let mut p = P {
            toks: &toks,
            i: 0,
            name,
            qtype,
        };
        let v = p.or()?;
        (p.i == toks.len()).then_some(v)
    }
}

/// Go `regexp` (RE2 syntax) as far as Corefiles use it: literals, `.`,
/// classes (`[^.]`, `[a-z0-9-]`, `\d\w\s`), groups (capturing, `(?:`,
/// named), alternation, `* + ? {n} {n,} {n,m}` (greedy or lazy), `^ $ \A \z`.
/// Matching backtracks in priority order, which gives Go's leftmost-first
/// submatches. Names are short, so backtracking stays cheap.
pub(crate) mod re {
    #[derive(Debug)]
    enum Node {
        Empty,
        Lit(char),
        Any,
        Class(Vec<(char, char)>, bool),
        Start,
        End,
        Group(Box<Node>, Option<usize>),
        Cat(Vec<Node>),
        Alt(Vec<Node>),
        Rep(Box<Node>, u32, Option<u32>, bool),
    }

    #[derive(Debug)]
    pub struct Regex {
        node: Node,
        groups: usize,
    }

    type Caps = Vec<Option<(usize, usize)>>;
    /// An escape as a node, and as class ranges with their negation.
    type Escape = (Node, Vec<(char, char)>, bool);

    struct Parser<'a> {
        chars: &'a [char],
        i: usize,
        groups: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.i).copied()
        }
        fn alt(&mut self) -> Result<Node, String> {
            let mut alts = vec![self.cat()?];
            while self.peek() == Some('|') {
                self.i += 1;
                alts.push(self.cat()?);
            }
            Ok(if alts.len() == 1 {
                alts.pop().unwrap()
            } else {
                Node::Alt(alts)
            })
        }
        fn cat(&mut self) -> Result<Node, String> {
            let mut items = Vec::new();
            while let Some(c) = self.peek() {
                if c == '|' || c == ')' {
                    break;
                }
                let atom = self.atom()?;
                items.push(self.quantified(atom)?);
            }
            Ok(match items.len() {
                0 => Node::Empty,
                1 => items.pop().unwrap(),
                _ => Node::Cat(items),
            })
        }
        fn number(&mut self) -> Option<u32> {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            self.chars[start..self.i]
                .iter()
                .collect::<String>()
                .parse()
                .ok()
        }
        /// `{n}`, `{n,}`, `{n,m}`; anything else after `{` is a literal `{`.
        fn braces(&mut self) -> Option<(u32, Option<u32>)> {
            let save = self.i;
            self.i += 1;
            let result = (|| {
                let min = self.number()?;
                let max = if self.peek() == Some(',') {
                    self.i += 1;
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number()?)
                    }
                } else {
                    Some(min)
                };
                (self.peek() == Some('}')).then(|| {
                    self.i += 1;
                    (min, max)
                })
            })();
            if result.is_none() {
                self.i = save;
            }
            result
        }
        fn quantified(&mut self, atom: Node) -> Result<Node, String> {
            let (min, max) = match self.peek() {
                Some('*') => {
                    self.i += 1;
                    (0, None)
                }
                Some('+') => {
                    self.i += 1;
                    (1, None)
                }
                Some('?') => {
                    self.i += 1;
                    (0, Some(1))
                }
                Some('{') => match self.braces() {
                    Some(q) => q,
                    None => return Ok(atom),
                },
                _ => return Ok(atom),
            };
            if max.is_some_and(|m| m < min) || min > 1000 {
                return Err("bad repeat count".into());
            }
            let greedy = if self.peek() == Some('?') {
                self.i += 1;
                false
            } else {
                true
            };
            Ok(Node::Rep(Box::new(atom), min, max, greedy))
        }
        fn atom(&mut self) -> Result<Node, String> {
            let c = self.peek().ok_or("unexpected end")?;
            self.i += 1;
            Ok(match c {
                '.' => Node::Any,
                '^' => Node::Start,
                '$' => Node::End,
                '(' => {
                    let capture = if self.peek() == Some('?') {
                        self.i += 1;
                        match self.peek() {
                            Some(':') => {
                                self.i += 1;
                                None
                            }
                            Some('P') | Some('<') => {
                                while self.peek().is_some_and(|c| c != '>') {
                                    self.i += 1;
                                }
                                self.i += 1;
                                self.groups += 1;
                                Some(self.groups)
                            }
                            _ => return Err("flags are not modelled".into()),
                        }
                    } else {
                        self.groups += 1;
                        Some(self.groups)
                    };
                    let inner = self.alt()?;
                    if self.peek() != Some(')') {
                        return Err("missing )".into());
                    }
                    self.i += 1;
                    Node::Group(Box::new(inner), capture)
                }
                '[' => self.class()?,
                '\\' => self.escape(false)?.0,
                '*' | '+' | '?' | ')' => return Err(format!("unexpected {c:?}")),
                c => Node::Lit(c),
            })
        }
        /// An escape after `\`; inside a class, returns its ranges.
        fn escape(&mut self, in_class: bool) -> Result<Escape, String> {
            let c = self.peek().ok_or("trailing backslash")?;
            self.i += 1;
            let digit = vec![('0', '9')];
            let word = vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
            let space = vec![('\t', '\n'), ('\x0c', '\r'), (' ', ' ')];
            let (ranges, negated) = match c {
                'd' => (digit, false),
                'D' => (digit, true),
                'w' => (word, false),
                'W' => (word, true),
                's' => (space, false),
                'S' => (space, true),
                'A' if !in_class => return Ok((Node::Start, vec![], false)),
                'z' if !in_class => return Ok((Node::End, vec![], false)),
                'n' => (vec![('\n', '\n')], false),
                't' => (vec![('\t', '\t')], false),
                c if c.is_ascii_punctuation() => (vec![(c, c)], false),
                c => return Err(format!("escape \\{c} is not modelled")),
            };
            let node = if ranges.len() == 1 && ranges[0].0 == ranges[0].1 && !negated {
                Node::Lit(ranges[0].0)
            } else {
                Node::Class(ranges.clone(), negated)
            };
            Ok((node, ranges, negated))
        }
        fn class(&mut self) -> Result<Node, String> {
            let negated = self.peek() == Some('^');
            if negated {
                self.i += 1;
            }
            let mut ranges = Vec::new();
            let mut first = true;
            loop {
                let c = self.peek().ok_or("missing ]")?;
                if c == ']' && !first {
                    self.i += 1;
                    break;
                }
                first = false;
                self.i += 1;
                let lo = if c == '\\' {
                    let (_, r, neg) = self.escape(true)?;
                    if neg || r.len() != 1 || r[0].0 != r[0].1 {
                        if neg {
                            return Err("negated escape in a class is not modelled".into());
                        }
                        ranges.extend(r);
                        continue;
                    }
                    r[0].0
                } else {
                    c
                };
                if self.peek() == Some('-') && self.chars.get(self.i + 1).is_some_and(|n| *n != ']')
                {
                    self.i += 1;
                    let mut hi = self.peek().ok_or("missing ]")?;
                    self.i += 1;
                    if hi == '\\' {
                        hi = self.peek().ok_or("missing ]")?;
                        self.i += 1;
                    }
                    ranges.push((lo, hi));
                } else {
                    ranges.push((lo, lo));
                }
            }
            Ok(Node::Class(ranges, negated))
        }
    }

    impl Regex {
        pub fn new(pattern: &str) -> Result<Regex, String> {
            let chars: Vec<char> = pattern.chars().collect();
            let mut p = Parser {
                chars: &chars,
                i: 0,
                groups: 0,
            };
            let node = p.alt()?;
            if p.i != chars.len() {
                return Err(format!("unexpected {:?} in regex {pattern:?}", chars[p.i]));
            }
            Ok(Regex {
                node,
                groups: p.groups,
            })
        }

        pub fn is_match(&self, s: &str) -> bool {
            self.captures(s).is_some()
        }

        /// Group 0 and every group, leftmost-first, as Go's FindStringSubmatch.
        pub fn captures(&self, s: &str) -> Option<Vec<Option<String>>> {
            let chars: Vec<char> = s.chars().collect();
            for start in 0..=chars.len() {
                let mut caps: Caps = vec![None; self.groups + 1];
                let mut end = None;
                if self.m(&self.node, &chars, start, &mut caps, &mut |j, _| {
                    end = Some(j);
                    true
                }) {
                    caps[0] = Some((start, end.unwrap_or(start)));
                    return Some(
                        caps.iter()
                            .map(|c| c.map(|(a, b)| chars[a..b].iter().collect()))
                            .collect(),
                    );
                }
            }
            None
        }

        fn m(
            &self,
            n: &Node,
            s: &[char],
            i: usize,
            caps: &mut Caps,
            k: &mut dyn FnMut(usize, &mut Caps) -> bool,
        ) -> bool {
            match n {
                Node::Empty => k(i, caps),
                Node::Lit(c) => i < s.len() && s[i] == *c && k(i + 1, caps),
                Node::Any => i < s.len() && s[i] != '\n' && k(i + 1, caps),
                Node::Class(ranges, negated) => {
                    i < s.len()
                        && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s[i])) != *negated
                        && k(i + 1, caps)
                }
                Node::Start => i == 0 && k(i, caps),
                Node::End => i == s.len() && k(i, caps),
                Node::Group(inner, None) => self.m(inner, s, i, caps, k),
                Node::Group(inner, Some(g)) => {
                    let g = *g;
                    let old = caps[g];
                    let ok = self.m(inner, s, i, caps, &mut |j, caps| {
                        let saved = caps[g];
                        caps[g] = Some((i, j));
                        if k(j, caps) {
                            return true;
                        }
                        caps[g] = saved;
                        false
                    });
                    if !ok {
                        caps[g] = old;
                    }
                    ok
                }
                Node::Cat(items) => self.cat(items, s, i, caps, k),
                Node::Alt(alts) => {
                    for a in alts {
                        if self.m(a, s, i, caps, k) {
                            return true;
                        }
                    }
                    false
                }
                Node::Rep(inner, min, max, greedy) => {
                    self.rep(inner, *min, *max, *greedy, 0, s, i, caps, k)
                }
            }
        }

        fn cat(
            &self,
            items: &[Node],
            s: &[char],
            i: usize,
            caps: &mut Caps,
            k: &mut dyn FnMut(usize, &mut Caps) -> bool,
        ) -> bool {
            match items.split_first() {
                None => k(i, caps),
                Some((first, rest)) => self.m(first, s, i, caps, &mut |j, caps| {
                    self.cat(rest, s, j, caps, k)
                }),
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn rep(
            &self,
            inner: &Node,
            min: u32,
            max: Option<u32>,
            greedy: bool,
            count: u32,
            s: &[char],
            i: usize,
            caps: &mut Caps,
            k: &mut dyn FnMut(usize, &mut Caps) -> bool,
        ) -> bool {
            let can_more = max.is_none_or(|m| count < m);
            let more = |caps: &mut Caps, k: &mut dyn FnMut(usize, &mut Caps) -> bool| {
                can_more
                    && self.m(inner, s, i, caps, &mut |j, caps| {
                        // An empty iteration past the minimum would loop forever.
                        if j == i && count >= min {
                            return false;
                        }
                        self.rep(inner, min, max, greedy, count + 1, s, j, caps, k)
                    })
            };
            if count < min {
                return more(caps, k);
            }
            // Same calls, other order: which is tried first is the point.
            #[allow(clippy::if_same_then_else)]
            if greedy {
                more(caps, k) || k(i, caps)
            } else {
                k(i, caps) || more(caps, k)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnspolicy_dns::corefile::{ServerKey, Span};

    const SPAN: Span = Span {
        start: 0,
        end: 0,
        line: 1,
        column: 1,
    };

    fn d(name: &str, args: &[&str], block: Vec<Directive>) -> Directive {
        Directive {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            block,
            span: SPAN,
        }
    }

    fn block(key: &str, directives: Vec<Directive>) -> ServerBlock {
        let (zone, port) = match key.rsplit_once(':') {
            Some((z, p)) => (z, Some(p.parse().unwrap())),
            None => (key, None),
        };
        let zone = if zone == "." {
            ".".to_string()
        } else {
            format!("{zone}.")
        };
        ServerBlock {
            keys: vec![ServerKey {
                raw: key.into(),
                scheme: None,
                zone,
                port,
            }],
            directives,
            span: SPAN,
        }
    }

    /// kubeadm's Corefile, as its AST.
    fn kubeadm(extra: Vec<Directive>, more_blocks: Vec<ServerBlock>) -> Corefile {
        let mut directives = vec![
            d("errors", &[], vec![]),
            d("health", &[], vec![d("lameduck", &["5s"], vec![])]),
            d("ready", &[], vec![]),
            d(
                "kubernetes",
                &["cluster.local", "in-addr.arpa", "ip6.arpa"],
                vec![
                    d("pods", &["insecure"], vec![]),
                    d("fallthrough", &["in-addr.arpa", "ip6.arpa"], vec![]),
                    d("ttl", &["30"], vec![]),
                ],
            ),
            d("prometheus", &[":9153"], vec![]),
            d(
                "forward",
                &[".", "/etc/resolv.conf"],
                vec![d("max_concurrent", &["1000"], vec![])],
            ),
            d("cache", &["30"], vec![]),
            d("loop", &[], vec![]),
            d("reload", &[], vec![]),
            d("loadbalance", &[], vec![]),
        ];
        directives.extend(extra);
        let mut blocks = vec![block(".:53", directives)];
        blocks.extend(more_blocks);
        Corefile {
            blocks,
            top_level_imports: vec![],
        }
    }

    fn frigate(name: &str) -> bool {
        name == "frigate.video-management-system.svc.cluster.local."
    }

    fn ctx(version: CoreDnsVersion) -> ServeContext<'static> {
        ServeContext {
            version,
            port: None,
            in_cluster: &frigate,
        }
    }

    const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
    const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);

    #[test]
    fn without_a_policy_the_search_artifact_leaks_upstream() {
        let c = kubeadm(vec![], vec![]);
        let s = serve(
            &c,
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.block, ".:53");
        assert_eq!(
            s.outcome,
            Outcome::Upstream {
                targets: vec!["/etc/resolv.conf".into()],
                name: "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net.".into()
            }
        );
        let s = serve(
            &c,
            "frigate.video-management-system.svc.cluster.local",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.outcome, Outcome::Answer);
        assert_eq!(
            s.steps,
            [
                "kubernetes cluster.local.: frigate.video-management-system.svc.cluster.local. exists, answers an answer"
            ]
        );
        let s = serve(&c, "nosuch.svc.cluster.local", QType::A, &ctx(V1_14));
        assert_eq!(s.outcome, Outcome::NxDomain);
    }

    #[test]
    fn rewrite_answer_auto_resolves_the_stripped_name_and_keeps_the_question() {
        let rule = d(
            "rewrite",
            &[
                "stop",
                "name",
                "regex",
                "^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$",
                "{1}.",
                "answer",
                "auto",
            ],
            vec![],
        );
        let c = kubeadm(vec![rule], vec![]);
        for version in [V1_8, V1_14] {
            let s = serve(
                &c,
                "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net.",
                QType::A,
                &ctx(version),
            );
            assert_eq!(s.outcome, Outcome::Answer);
            assert!(s.question_matches);
            assert_eq!(
                s.resolved_name,
                "frigate.video-management-system.svc.cluster.local."
            );
            let s = serve(
                &c,
                "api.github.com.tailb45a71.ts.net",
                QType::Aaaa,
                &ctx(version),
            );
            assert_eq!(
                s.outcome,
                Outcome::Upstream {
                    targets: vec!["/etc/resolv.conf".into()],
                    name: "api.github.com.".into()
                }
            );
            assert!(s.question_matches);
            let s = serve(&c, "myhost.tailb45a71.ts.net", QType::A, &ctx(version));
            assert_eq!(s.resolved_name, "myhost.tailb45a71.ts.net.");
            assert!(matches!(s.outcome, Outcome::Upstream { .. }));
        }
    }

    #[test]
    fn a_continue_rule_without_answer_rules_leaves_the_question_rewritten() {
        let rule = d(
            "rewrite",
            &["continue", "name", "suffix", ".tailb45a71.ts.net.", "."],
            vec![],
        );
        let c = kubeadm(vec![rule], vec![]);
        let s = serve(
            &c,
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.outcome, Outcome::Answer);
        assert!(!s.question_matches);
        // A stop rule restores the question from 1.9.0 on, even without answer rules.
        let rule = d(
            "rewrite",
            &["name", "suffix", ".tailb45a71.ts.net.", "."],
            vec![],
        );
        let c = kubeadm(vec![rule], vec![]);
        let name = "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net";
        assert!(serve(&c, name, QType::A, &ctx(V1_14)).question_matches);
        assert!(!serve(&c, name, QType::A, &ctx(V1_8)).question_matches);
    }

    #[test]
    fn template_without_fallthrough_fails_names_it_does_not_match() {
        let t = |fallthrough: bool| {
            let mut lines = vec![
                d("match", &["^[^.]+[.].+[.]openstacklocal[.]$"], vec![]),
                d("rcode", &["NXDOMAIN"], vec![]),
            ];
            if fallthrough {
                lines.push(d("fallthrough", &[], vec![]));
            }
            kubeadm(
                vec![d("template", &["ANY", "ANY", "openstacklocal"], lines)],
                vec![],
            )
        };
        let s = serve(
            &t(true),
            "api.github.com.openstacklocal",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.outcome, Outcome::NxDomain);
        let s = serve(&t(true), "myhost.openstacklocal", QType::A, &ctx(V1_14));
        assert!(matches!(s.outcome, Outcome::Upstream { .. }));
        assert_eq!(
            serve(&t(false), "myhost.openstacklocal", QType::A, &ctx(V1_14)).outcome,
            Outcome::ServFail
        );
        assert_eq!(
            serve(&t(false), "myhost.openstacklocal", QType::A, &ctx(V1_8)).outcome,
            Outcome::NoReply
        );
    }

    #[test]
    fn a_block_for_the_suffix_captures_every_name_in_it_unless_a_view_filters() {
        let plain = block(
            "tailb45a71.ts.net:53",
            vec![d("forward", &[".", "100.100.100.100"], vec![])],
        );
        let c = kubeadm(vec![], vec![plain]);
        let s = serve(
            &c,
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.block, "tailb45a71.ts.net:53");

        let view = d(
            "view",
            &["tailnet"],
            vec![d(
                "expr",
                &[
                    "name()",
                    "matches",
                    "'^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'",
                ],
                vec![],
            )],
        );
        let filtered = block(
            "tailb45a71.ts.net:53",
            vec![view, d("forward", &[".", "100.100.100.100:53"], vec![])],
        );
        let c = kubeadm(vec![], vec![filtered]);
        let s = serve(
            &c,
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net",
            QType::A,
            &ctx(V1_14),
        );
        assert_eq!(s.block, ".:53");
        let s = serve(&c, "myhost.tailb45a71.ts.net", QType::A, &ctx(V1_14));
        assert_eq!(s.block, "tailb45a71.ts.net:53");
        assert_eq!(
            s.outcome,
            Outcome::Upstream {
                targets: vec!["100.100.100.100:53".into()],
                name: "myhost.tailb45a71.ts.net.".into()
            }
        );
        // Another port is another listener.
        let other = block(
            "tailb45a71.ts.net:5353",
            vec![d("forward", &[".", "100.100.100.100"], vec![])],
        );
        let c = kubeadm(vec![], vec![other]);
        assert_eq!(
            serve(&c, "myhost.tailb45a71.ts.net", QType::A, &ctx(V1_14)).block,
            ".:53"
        );
    }

    #[test]
    fn forwarding_to_itself_serves_the_query_again() {
        let strip = d(
            "rewrite",
            &[
                "stop",
                "name",
                "regex",
                "^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$",
                "{1}.",
                "answer",
                "auto",
            ],
            vec![],
        );
        let gated = block(
            "tailb45a71.ts.net:53",
            vec![strip, d("forward", &[".", "127.0.0.1:53"], vec![])],
        );
        let c = kubeadm(vec![], vec![gated]);
        for version in [V1_8, V1_14] {
            let s = serve(
                &c,
                "api.github.com.tailb45a71.ts.net",
                QType::A,
                &ctx(version),
            );
            assert_eq!(s.block, "tailb45a71.ts.net:53");
            assert_eq!(
                s.outcome,
                Outcome::Upstream {
                    targets: vec!["/etc/resolv.conf".into()],
                    name: "api.github.com.".into()
                }
            );
            assert!(s.question_matches && s.question_matches_if_upstream_fails);
        }
        // Another port is somebody else.
        let elsewhere = block(
            "corp.example:53",
            vec![d("forward", &[".", "127.0.0.1:5353"], vec![])],
        );
        let c = kubeadm(vec![], vec![elsewhere]);
        let s = serve(&c, "a.corp.example", QType::A, &ctx(V1_14));
        assert!(matches!(s.outcome, Outcome::Upstream { .. }), "{s:?}");
        // A block that sends its own names back to itself loops.
        let looping = block(
            "corp.example:53",
            vec![d("forward", &[".", "127.0.0.1"], vec![])],
        );
        let c = kubeadm(vec![], vec![looping]);
        let s = serve(&c, "a.corp.example", QType::A, &ctx(V1_14));
        assert_eq!(s.outcome, Outcome::ServFail);
        assert!(s.steps.last().unwrap().contains("loop"), "{:?}", s.steps);
    }

    #[test]
    fn no_block_for_the_name_is_refused() {
        let c = Corefile {
            blocks: vec![block("cluster.local:53", vec![d("whoami", &[], vec![])])],
            top_level_imports: vec![],
        };
        let s = serve(&c, "api.github.com", QType::A, &ctx(V1_14));
        assert_eq!(s.outcome, Outcome::Refused);
        assert_eq!(s.block, "");
    }

    #[test]
    fn forward_except_and_hosts_fallthrough() {
        let hosts = d(
            "hosts",
            &[],
            vec![
                d("10.96.0.50", &["registry.corp.example"], vec![]),
                d("fallthrough", &[], vec![]),
            ],
        );
        let fwd = d(
            "forward",
            &[".", "8.8.8.8"],
            vec![d("except", &["corp.example"], vec![])],
        );
        let c = Corefile {
            blocks: vec![block(".:53", vec![fwd, hosts])],
            top_level_imports: vec![],
        };
        assert_eq!(
            serve(&c, "registry.corp.example", QType::A, &ctx(V1_14)).outcome,
            Outcome::Answer
        );
        assert_eq!(
            serve(&c, "registry.corp.example", QType::Aaaa, &ctx(V1_14)).outcome,
            Outcome::NoData
        );
        assert_eq!(
            serve(&c, "other.corp.example", QType::A, &ctx(V1_14)).outcome,
            Outcome::ServFail
        );
        assert!(matches!(
            serve(&c, "api.github.com", QType::A, &ctx(V1_14)).outcome,
            Outcome::Upstream { .. }
        ));
    }

    #[test]
    fn regexes_match_as_go_does() {
        let r = re::Regex::new("^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$").unwrap();
        assert_eq!(
            r.captures("api.github.com.tailb45a71.ts.net.").unwrap()[1].as_deref(),
            Some("api.github.com")
        );
        assert!(r.captures("myhost.tailb45a71.ts.net.").is_none());
        assert!(r.captures("a.b.xtailb45a71.ts.net.").is_none());
        let aks = re::Regex::new(r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$").unwrap();
        assert!(aks.is_match("a.b.c.d.internal.cloudapp.net."));
        assert!(!aks.is_match("a.b.c.internal.cloudapp.net."));
        let r = re::Regex::new("(a|ab)(c|bcd)(d*)").unwrap();
        let caps = r.captures("abcd").unwrap();
        assert_eq!(caps[0].as_deref(), Some("abcd"));
        assert_eq!(caps[1].as_deref(), Some("a"));
        let r = re::Regex::new("x{2}y{1,}z?[a-c-]+$").unwrap();
        assert!(r.is_match("..xxyyyb-c"));
        assert!(!r.is_match("xyb"));
        assert!(
            re::Regex::new("a{,").is_ok(),
            "a brace that is no repeat is a literal"
        );
        assert!(re::Regex::new("(unclosed").is_err());
        assert!(re::Regex::new("(a*)*$").unwrap().is_match("aaab"));
    }

    #[test]
    fn view_expressions() {
        let name = "myhost.tailb45a71.ts.net.";
        assert_eq!(
            expr::eval(
                "name() matches '^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'",
                name,
                QType::A
            ),
            Some(true)
        );
        assert_eq!(
            expr::eval(
                "name() matches '^.+$' && !(name() matches '^my')",
                name,
                QType::A
            ),
            Some(false)
        );
        assert_eq!(
            expr::eval(
                "type() in ['A', 'AAAA'] and not (name() == 'x.')",
                name,
                QType::Aaaa
            ),
            Some(true)
        );
        assert_eq!(
            expr::eval("incidr(client_ip(), '10.0.0.0/8')", name, QType::A),
            None
        );
        assert_eq!(
            expr::eval(r"name() matches '^abc\\..*$'", "abc.example.", QType::A),
            Some(true)
        );
    }
}
