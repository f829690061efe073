//! The plugin chain of one server block: CoreDNS's plugin order, and what
//! each modelled plugin (`rewrite` name rules, `template`, `hosts`,
//! `kubernetes`, `file`/`auto`/`secondary`, `forward`/`grpc`, `local`,
//! `whoami`, `erratic`, `any`) does with the query.

use dnspolicy_dns::corefile::{Corefile, Directive, ServerBlock};
use dnspolicy_dns::stanza::DEFAULT_DNS_PORT;
use dnspolicy_dns::version::CoreDnsVersion;

use regex::Regex;

use super::regexp::{self, RegexError};
use super::{
    Hop, Outcome, QType, Reply, ServeContext, absolute_lower, in_zone, serve_at, zones_of,
};

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

pub(super) struct Run<'a, 'c> {
    pub(super) ctx: &'a ServeContext<'a>,
    pub(super) corefile: &'c Corefile,
    /// The listener's port.
    pub(super) port: u16,
    /// The client as CoreDNS sees it, and the forwards to itself so far.
    pub(super) hop: Hop,
    pub(super) block: &'c ServerBlock,
    pub(super) qtype: QType,
    /// The current name, after rewrites.
    pub(super) name: String,
    pub(super) steps: Vec<String>,
    /// The plugin that ended the query.
    pub(super) plugin: String,
    pub(super) rewritten: bool,
    /// A `stop` rule matched.
    pub(super) stopped: bool,
    /// A rewrite put a reverter in front of the client that restores the question.
    pub(super) restores_question: bool,
    /// The reverter maps answer names back (`answer auto`/`answer name`).
    pub(super) maps_answers: bool,
    /// `forward` sent the query to CoreDNS's own listener.
    pub(super) self_forwarded: bool,
    /// The plugin that answered when this block asked CoreDNS itself.
    pub(super) answered_by: Option<String>,
}

impl<'c> Run<'_, 'c> {
    pub(super) fn chain(&mut self) -> Reply {
        let mut plugins: Vec<&'c str> = Vec::new();
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
        self.run_plugins(&plugins)
    }

    /// Runs `plugins` (in CoreDNS's order) until one ends the query.
    pub(super) fn run_plugins(&mut self, plugins: &[&'c str]) -> Reply {
        for (i, plugin) in plugins.iter().enumerate() {
            let lines: Vec<&Directive> = self
                .block
                .directives
                .iter()
                .filter(|d| d.name == *plugin)
                .collect();
            // autopath runs the plugins after it itself, once per search domain.
            let outcome = if *plugin == "autopath" {
                self.autopath(lines[0], &plugins[i + 1..])
            } else {
                self.plugin(plugin, &lines)
            };
            if let Some(outcome) = outcome {
                if self.plugin.is_empty() {
                    self.plugin = self
                        .answered_by
                        .clone()
                        .unwrap_or_else(|| plugin.to_string());
                }
                return outcome;
            }
        }
        self.steps.push("no plugin answered: SERVFAIL".into());
        Outcome::ServFail.into()
    }

    pub(super) fn block_zones(&self) -> Vec<String> {
        self.block.keys.iter().map(|k| k.zone.clone()).collect()
    }

    /// Whether a `fallthrough [ZONES...]` line (if any) passes the name on:
    /// no zones means every name.
    fn falls_through(&self, fallthrough: Option<&[String]>) -> bool {
        fallthrough.is_some_and(|z| z.is_empty() || z.iter().any(|z| in_zone(&self.name, z)))
    }

    /// A plugin's zone arguments; none means the block's zones.
    pub(super) fn zones_or_block(&self, args: &[String]) -> Vec<String> {
        let zones = zones_of(args);
        if zones.is_empty() {
            self.block_zones()
        } else {
            zones
        }
    }

    /// One plugin: `Some(outcome)` when it ends the query.
    fn plugin(&mut self, plugin: &str, lines: &[&Directive]) -> Option<Reply> {
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
                    self.block_zones()
                } else {
                    self.zones_or_block(d.args.get(1..).unwrap_or(&[]))
                };
                let zone = zones.iter().find(|z| in_zone(&self.name, z))?;
                self.steps.push(format!(
                    "{plugin}: {} is in zone {zone}, answered from its data (not modelled)",
                    self.name
                ));
                Some(Outcome::Answer.into())
            }
            "forward" | "grpc" => lines.iter().find_map(|d| self.forward(plugin, d)),
            "local" => {
                (self.name == "localhost." || self.name.ends_with(".localhost.")).then(|| {
                    self.steps.push(format!("local: answers {}", self.name));
                    Outcome::Answer.into()
                })
            }
            "acl" => self.acl(lines),
            "whoami" | "erratic" => {
                self.steps.push(format!("{plugin}: answers {}", self.name));
                Some(Outcome::Answer.into())
            }
            "any" if self.qtype == QType::Any => {
                self.steps
                    .push("any: answers an ANY query with HINFO".into());
                Some(Outcome::Answer.into())
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
                        "rewrite: rule {:?} on line {} not modelled ({e}); passed over",
                        args.join(" "),
                        d.span.line
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

    fn template(&mut self, lines: &[&Directive]) -> Option<Reply> {
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
                    outcome.word()
                ));
                return Some(outcome.into());
            }
            if self.falls_through(t.fallthrough.as_deref()) {
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
                Outcome::ServFail.into()
            } else {
                self.steps.push(format!(
                    "template {zone}: no match for {} and no fallthrough: no reply",
                    self.name
                ));
                Outcome::Timeout.into()
            });
        }
        None
    }

    fn hosts(&mut self, d: &Directive) -> Option<Reply> {
        // `hosts [FILE [ZONES...]] { IP NAME...; fallthrough [ZONES] }`
        let zones = self.zones_or_block(d.args.get(1..).unwrap_or(&[]));
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
                outcome.word()
            ));
            return Some(outcome.into());
        }
        if self.falls_through(fallthrough.as_deref()) {
            return None;
        }
        self.steps.push(format!(
            "hosts: {} is not listed and there is no fallthrough: SERVFAIL",
            self.name
        ));
        Some(Outcome::ServFail.into())
    }

    fn kubernetes(&mut self, d: &Directive) -> Option<Reply> {
        let zones = self.zones_or_block(&d.args);
        let zone = zones.iter().find(|z| in_zone(&self.name, z))?.clone();
        if (self.ctx.in_cluster)(&self.name) {
            // Services have IPv4 ClusterIPs only (kubeadm's single-stack
            // default): AAAA is NODATA, as real CoreDNS answers it
            // (explain/tests/matrix_agreement.rs).
            let outcome = match self.qtype {
                QType::A | QType::Srv | QType::Ptr | QType::Any => Outcome::Answer,
                _ => Outcome::NoData,
            };
            self.steps.push(format!(
                "kubernetes {zone}: {} exists, answers {}",
                self.name,
                outcome.word()
            ));
            return Some(outcome.into());
        }
        let fallthrough = d
            .block
            .iter()
            .find(|l| l.name == "fallthrough")
            .map(|l| zones_of(&l.args));
        if self.falls_through(fallthrough.as_deref()) {
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
        Some(Outcome::NxDomain.into())
    }

    fn forward(&mut self, plugin: &str, d: &Directive) -> Option<Reply> {
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
        if let Some((me, listener)) = targets
            .iter()
            .find_map(|t| self.own_listener(t).map(|l| (t, l)))
        {
            return Some(self.ask_itself(plugin, &from, me, listener));
        }
        self.steps.push(format!(
            "{plugin} {from}: sends {} to {}",
            self.name,
            targets.join(" ")
        ));
        Some(Reply::Upstream {
            targets,
            name: self.name.clone(),
        })
    }

    /// Where a forward target reaches this CoreDNS, if it does: the port to
    /// serve on and the address CoreDNS then sees as the client (`None`
    /// when it is a placeholder like `{$POD_IP}`). A target is CoreDNS when
    /// it names a listener of the Corefile: an address the blocks on its
    /// port `bind` (`lo`: 127.0.0.1 and ::1), or, where they bind nothing or
    /// a wildcard, any loopback or unspecified address; or a cluster DNS
    /// Service IP on port 53, which kube-proxy sends to the cluster listener.
    fn own_listener(&self, target: &str) -> Option<Listener> {
        let addr = target.strip_prefix("dns://").unwrap_or(target);
        let (host, port) = split_host_port(addr)?;
        let ip = host.parse::<std::net::IpAddr>().ok();
        if let Some(ip) = ip
            && port == DEFAULT_DNS_PORT
            && self.ctx.cluster_dns_ips.contains(&ip)
        {
            return Some(Listener {
                port: super::cluster_dns_port(self.corefile, self.ctx.dns_port),
                client: None,
            });
        }
        let blocks: Vec<&ServerBlock> = self
            .corefile
            .blocks
            .iter()
            .filter(|b| {
                b.keys
                    .iter()
                    .any(|k| k.port.or(self.ctx.dns_port).unwrap_or(DEFAULT_DNS_PORT) == port)
            })
            .collect();
        if blocks.is_empty() {
            return None;
        }
        let listens = blocks.iter().any(|b| {
            let binds: Vec<&String> = b
                .directives
                .iter()
                .filter(|d| d.name == "bind")
                .flat_map(|d| d.args.iter())
                .collect();
            let wildcard = binds.is_empty()
                || binds.iter().any(|a| {
                    a.parse::<std::net::IpAddr>()
                        .is_ok_and(|b| b.is_unspecified())
                });
            let local = ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
            (wildcard && local)
                || binds.iter().any(|a| {
                    a.as_str() == host
                        || (ip.is_some() && a.parse::<std::net::IpAddr>().ok() == ip)
                        || (a.as_str() == "lo"
                            && ip.is_some_and(|ip| {
                                ip == std::net::IpAddr::from([127, 0, 0, 1])
                                    || ip == std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
                            }))
                })
        });
        // The kernel sends to a 127/8 address from 127.0.0.1 (lo's route
        // source), to any other own address from that address.
        let client = ip.map(|ip| match ip {
            std::net::IpAddr::V4(v4) if v4.is_loopback() || v4.is_unspecified() => {
                std::net::IpAddr::from([127, 0, 0, 1])
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        });
        listens.then_some(Listener { port, client })
    }

    /// `forward` to CoreDNS's own listener: the query is served again, from
    /// routing on, with CoreDNS itself as the client, and the reply comes
    /// back through this block's plugins.
    fn ask_itself(&mut self, plugin: &str, from: &str, me: &str, listener: Listener) -> Reply {
        self.self_forwarded = true;
        self.steps.push(format!(
            "{plugin} {from}: asks CoreDNS itself ({me}) for {}",
            self.name
        ));
        let here = (
            self.block
                .keys
                .first()
                .map(|k| k.raw.clone())
                .unwrap_or_default(),
            self.name.clone(),
        );
        if self.hop.trail.contains(&here) {
            self.steps.push(format!(
                "{} reaches {} again: CoreDNS forwards it to itself in a loop, SERVFAIL",
                here.1, here.0
            ));
            return Outcome::ServFail.into();
        }
        // Each forward to itself that is not a loop leaves a block for
        // another; more than the Corefile's blocks is a loop through rewrites.
        if self.hop.trail.len() >= self.corefile.blocks.len() {
            self.steps.push(format!(
                "more forwards to itself than the Corefile has server blocks ({}): a loop, SERVFAIL",
                self.corefile.blocks.len()
            ));
            return Outcome::ServFail.into();
        }
        let mut hop = Hop {
            client: listener.client,
            trail: self.hop.trail.clone(),
        };
        hop.trail.push(here);
        let inner = serve_at(
            self.corefile,
            listener.port,
            &self.name,
            self.qtype,
            self.ctx,
            &hop,
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
        match inner.reply {
            // `forward` gives up on a silent upstream with SERVFAIL.
            Reply::Local(Outcome::Timeout) => Outcome::ServFail.into(),
            other => other,
        }
    }
}

/// A listener of the Corefile a forward target reaches.
struct Listener {
    port: u16,
    /// The address CoreDNS sees the forwarded query come from.
    client: Option<std::net::IpAddr>,
}

/// `IP`, `IP:port`, `[IPv6]:port` or `{$ENV}[:port]`; the port 53 when absent.
fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return Some((addr, DEFAULT_DNS_PORT));
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port.parse().ok()?));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        None => Some((addr, DEFAULT_DNS_PORT)),
        _ => None,
    }
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

/// Why a `rewrite ... name` rule is passed over; the step that reports it
/// names the rule and its Corefile line.
#[derive(Debug, thiserror::Error)]
enum RuleError {
    #[error("too few arguments")]
    TooFewArguments,
    #[error("unknown match type {0:?}")]
    UnknownMatch(String),
    #[error(transparent)]
    Regex(#[from] RegexError),
}

enum NameMatch {
    Exact(String, String),
    Prefix(String, String),
    Suffix(String, String),
    Substring(String, String),
    Regex(Regex, String),
}

impl NameRule {
    fn parse(args: &[String]) -> Result<Option<NameRule>, RuleError> {
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
            _ => return Err(RuleError::TooFewArguments),
        };
        let answer_rules = rest.iter().any(|a| a.eq_ignore_ascii_case("answer"));
        let norm = |s: &str| absolute_lower(s);
        let kind = match kind.to_ascii_lowercase().as_str() {
            "exact" => NameMatch::Exact(norm(from), norm(to)),
            "prefix" => NameMatch::Prefix(from.to_ascii_lowercase(), to.to_ascii_lowercase()),
            "suffix" => NameMatch::Suffix(norm(from), norm(to)),
            "substring" => NameMatch::Substring(from.to_ascii_lowercase(), to.to_ascii_lowercase()),
            "regex" => NameMatch::Regex(regexp::compile(from)?, norm(to)),
            other => return Err(RuleError::UnknownMatch(other.to_string())),
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
                // CoreDNS replaces `{0}`, `{1}`, ... one group after the other
                // with strings.Replace (plugin/rewrite/name.go), `$` meaning
                // nothing: so not `Captures::expand`, whose `${1}` and `$`
                // would read the replacement differently.
                let groups = regex.captures(name)?;
                let mut out = to.clone();
                for (i, g) in groups.iter().enumerate() {
                    out = out.replace(&format!("{{{i}}}"), g.map_or("", |m| m.as_str()));
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
    regexes: Vec<Option<Regex>>,
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
                    .extend(line.args.iter().map(|r| regexp::compile(r).ok())),
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
            t.regexes.push(regexp::compile(".*").ok());
        }
        t
    }
}
