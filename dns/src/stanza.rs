//! Rendering merged policies into the Corefile text CoreDNS runs.
//!
//! Facts this rests on, checked in CoreDNS's source (1.8.3 to 1.14.2) and on
//! the real binaries (see operator/tests/stanza_coredns.rs):
//! - A query goes to the server block with the longest matching zone before
//!   any plugin runs, so a plain block for the suffix takes
//!   `frigate....svc.cluster.local.<suffix>` away from the `.` block's
//!   `kubernetes`. A block with a `view` takes only the names its expression
//!   admits; the others fall back to the next shorter zone and finally to `.`
//!   (core/dnsserver/server.go). `view` exists from 1.10.0.
//! - Every plugin in the `.` block costs every query that reaches it: on
//!   1.14.2 an idle `template` or a one-regex `rewrite` added 8-17% CPU per
//!   uncached in-cluster query (kubeadm disables the cache for cluster.local).
//!   So from 1.10.0 on, everything goes into blocks for the suffix, which
//!   other names never reach, and the `.` block is left alone.
//! - Search artifacts (more than `hostLabels` labels before the suffix, or
//!   below `<cluster domain>.<suffix>`), from 1.10.0: a block whose view
//!   admits only them. Rewrite: `rewrite stop name regex ^(...)[.]S[.]$ {1}.
//!   answer auto`, then `forward` to CoreDNS's own listener, where the `.`
//!   block answers the stripped name as it always did; `answer auto` maps the
//!   reply back, question included. NXDomain: `template ANY ANY S { rcode
//!   NXDOMAIN }`. On 1.14.2 with a black-holed upstream, an in-cluster name
//!   with the suffix still answers in about 0.1 ms (two passes through
//!   CoreDNS); the artifacts cost twice the CPU of a plain query, every other
//!   name nothing.
//! - Before 1.10.0 (no `view`) they are handled in the `.` block: the same
//!   `rewrite` rule, or `template ANY ANY S { match ...; rcode NXDOMAIN;
//!   fallthrough }`. Without `fallthrough`, a name in the zone that no
//!   `match` takes gets SERVFAIL (1.9.3 on) or no reply at all (before).
//!   All `rewrite` lines of a block form one plugin whose rules run in file
//!   order; a `stop` rule ends the list when it matches.
//! - forwardTo: real hosts go to a block whose view admits only them (Rewrite,
//!   from 1.10.0; refused before), or, for NXDomain, to one plain block that
//!   answers the artifacts with a falling-through `template` and forwards the
//!   rest (every version).
//! - Regexes use `[.]`, never `\.`, and never `#` (a comment even inside a
//!   token): no backslash or quoting questions between the Corefile lexer,
//!   Go's regexp and expr-lang's string literals.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dnspolicy_crd::SuffixAction;
use dnspolicy_crd::vocabulary::Reason;

use crate::corefile::{Corefile, ManagedText};
use crate::policy::{MergedPolicies, SuffixRule, check_dns_name};
use crate::version::{CoreDnsVersion, VersionError};

/// The port CoreDNS listens on when a server key has none (`-dns.port`'s default).
pub const DEFAULT_DNS_PORT: u16 = 53;

/// What the rendered text must fit: the CoreDNS release and the `.` server
/// block the directives go into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    pub version: CoreDnsVersion,
    /// Port of the `.` block's key; `None` when the key has none (`.`), in
    /// which case added blocks are written without one too.
    pub port: Option<u16>,
    /// Arguments of the `.` block's `bind` lines, copied into every server
    /// block added so it listens exactly where the `.` block does (blocks on
    /// other addresses form another server, and routing never crosses servers).
    pub bind: Vec<String>,
    /// Zones other server blocks already serve on the same port.
    pub zones_in_use: Vec<ZoneInUse>,
}

/// A zone another server block of the Corefile serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInUse {
    /// Absolute, lower-case: `ts.net.`.
    pub zone: String,
    /// The server key as written: `ts.net:53`.
    pub key: String,
    pub line: usize,
}

impl RenderContext {
    /// A context for a `.` block with no port and no `bind` (the command
    /// line's default when there is no Corefile to read it from).
    pub fn new(version: CoreDnsVersion) -> Self {
        RenderContext {
            version,
            port: None,
            bind: Vec::new(),
            zones_in_use: Vec::new(),
        }
    }

    /// The context of `corefile.blocks[dot]`, the `.` block the directives go
    /// into. Pass the Corefile with dnspolicy's managed text stripped, or
    /// the blocks added last time count as zones in use.
    pub fn for_block(corefile: &Corefile, dot: usize, version: CoreDnsVersion) -> Self {
        let block = &corefile.blocks[dot];
        let port = block
            .keys
            .iter()
            .find(|k| k.zone == ".")
            .or(block.keys.first())
            .and_then(|k| k.port);
        let bind = block
            .directives
            .iter()
            .filter(|d| d.name == "bind")
            .flat_map(|d| d.args.iter().cloned())
            .collect();
        let listen = port.unwrap_or(DEFAULT_DNS_PORT);
        let zones_in_use = corefile
            .blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dot)
            .flat_map(|(_, b)| b.keys.iter().map(move |k| (b, k)))
            .filter(|(_, k)| k.zone != "." && k.port.unwrap_or(DEFAULT_DNS_PORT) == listen)
            .map(|(b, k)| ZoneInUse {
                zone: k.zone.clone(),
                key: k.raw.clone(),
                line: b.span.line,
            })
            .collect();
        RenderContext {
            version,
            port,
            bind,
            zones_in_use,
        }
    }
}

/// Why policies cannot be written into this Corefile for this CoreDNS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(
        "suffix {suffix:?} (policy {policy:?}): forwardTo with action Rewrite needs CoreDNS {needed} or newer, whose view plugin lets a server block take only the real hosts of the suffix; this CoreDNS is {have}. Upgrade CoreDNS, use action NXDomain (which works with forwardTo on every supported version), or drop forwardTo"
    )]
    NeedsNewerCoreDns {
        suffix: String,
        policy: String,
        have: CoreDnsVersion,
        needed: CoreDnsVersion,
    },
    #[error(
        "suffix {suffix:?} (policy {policy:?}): forwardTo with action Rewrite needs an address where CoreDNS reaches itself, but the `.` block binds only {bind:?}; bind an IP address (or an {{$ENV}} placeholder), use action NXDomain, or drop forwardTo"
    )]
    NoSelfAddress {
        suffix: String,
        policy: String,
        bind: Vec<String>,
    },
    #[error(
        "suffix {suffix:?} (policy {policy:?}): the Corefile already has server block {key:?} (line {line}), which takes queries for names in {suffix:?} before the `.` block can handle them; remove that block (declare its resolvers as forwardTo) or drop the suffix"
    )]
    ZoneTaken {
        suffix: String,
        policy: String,
        key: String,
        line: usize,
    },
    #[error("{what} {name:?} (policy {policy:?}) cannot be written into a Corefile: {message}")]
    InvalidName {
        what: &'static str,
        name: String,
        policy: String,
        message: String,
    },
}

impl RenderError {
    /// A CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            RenderError::Version(VersionError::Unsupported { .. }) => Reason::UnsupportedCoreDNS,
            RenderError::Version(_) => Reason::UnknownCoreDNSVersion,
            RenderError::NeedsNewerCoreDns { .. } => Reason::NeedsNewerCoreDNS,
            RenderError::ZoneTaken { .. } => Reason::ZoneTaken,
            RenderError::NoSelfAddress { .. } => Reason::NoSelfAddress,
            RenderError::InvalidName { .. } => Reason::InvalidName,
        }
    }
}

/// Renders the merged policies as text for the editor to place: directives
/// for the `.` block and server blocks for the end of the Corefile. No
/// policies, no text.
pub fn render(merged: &MergedPolicies, ctx: &RenderContext) -> Result<ManagedText, RenderError> {
    let mut text = ManagedText::default();
    if merged.rules.is_empty() {
        return Ok(text);
    }
    ctx.version.check_supported()?;
    for rule in &merged.rules {
        check(rule, &merged.cluster_domain, ctx)?;
    }
    let mut blocks = Vec::new();
    for rule in &merged.rules {
        let stanza = Stanza::new(rule, &merged.cluster_domain, ctx);
        text.dot_block.push_str(&stanza.dot_block());
        blocks.extend(stanza.server_blocks());
    }
    text.server_blocks = blocks.join("\n");
    Ok(text)
}

/// Where CoreDNS reaches itself: the `.` block's first `bind` address (the
/// loopback address when it binds everything or nothing), on its port (53
/// when the key has none: `-dns.port` is not visible from the Corefile). A
/// `{$ENV}` placeholder bind (one address per pod, e.g. `{$POD_IP}`) is
/// forwarded to as written: CoreDNS expands it the same way in both places.
/// `None` when `bind` names only interfaces.
fn self_address(ctx: &RenderContext) -> Option<String> {
    let port = ctx.port.unwrap_or(DEFAULT_DNS_PORT);
    if ctx.bind.is_empty() {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port).to_string());
    }
    ctx.bind.iter().find_map(|a| {
        if let Ok(ip) = a.parse::<IpAddr>() {
            let ip = match ip {
                IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            return Some(SocketAddr::new(ip, port).to_string());
        }
        is_env_placeholder(a).then(|| format!("{a}:{port}"))
    })
}

/// `{$NAME}` as CoreDNS's lexer expands it (a whole token, letters, digits, `_`).
fn is_env_placeholder(token: &str) -> bool {
    token
        .strip_prefix("{$")
        .and_then(|t| t.strip_suffix('}'))
        .is_some_and(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// What an admin should know about rendering these policies for this
/// release, though nothing is refused: one line per concern.
pub fn warnings(merged: &MergedPolicies, version: CoreDnsVersion) -> Vec<String> {
    let mut out = Vec::new();
    let rewrites: Vec<&str> = merged
        .rules
        .iter()
        .filter(|r| r.action == SuffixAction::Rewrite)
        .map(|r| r.suffix.as_str())
        .collect();
    if !rewrites.is_empty() && version < CoreDnsVersion::REWRITE_REVERTS_FAILURES {
        out.push(format!(
            "CoreDNS {version} answers a rewritten query whose upstream fails (timeout, no healthy upstream) with a SERVFAIL carrying the rewritten question, which resolvers drop and then time out; this affects search artifacts of outside names in {}. CoreDNS {} fixed it; action NXDomain avoids it",
            rewrites.join(", "),
            CoreDnsVersion::REWRITE_REVERTS_FAILURES
        ));
    }
    out
}

/// Everything `render` refuses, for one rule.
fn check(rule: &SuffixRule, cluster_domain: &str, ctx: &RenderContext) -> Result<(), RenderError> {
    // Validation already guarantees both names; checked again because they
    // are written into regexes and server keys unquoted.
    for (what, name) in [
        ("suffix", rule.suffix.as_str()),
        ("cluster domain", cluster_domain),
    ] {
        check_dns_name(name).map_err(|message| RenderError::InvalidName {
            what,
            name: name.to_string(),
            policy: rule.policy.clone(),
            message,
        })?;
    }
    let zone = format!("{}.", rule.suffix);
    if let Some(taken) = ctx
        .zones_in_use
        .iter()
        .find(|z| is_same_or_below_abs(&zone, &z.zone) || is_same_or_below_abs(&z.zone, &zone))
    {
        return Err(RenderError::ZoneTaken {
            suffix: rule.suffix.clone(),
            policy: rule.policy.clone(),
            key: taken.key.clone(),
            line: taken.line,
        });
    }
    if !rule.forward_to.is_empty()
        && rule.action == SuffixAction::Rewrite
        && !ctx.version.has_view()
    {
        return Err(RenderError::NeedsNewerCoreDns {
            suffix: rule.suffix.clone(),
            policy: rule.policy.clone(),
            have: ctx.version,
            needed: CoreDnsVersion::VIEW_PLUGIN,
        });
    }
    // Without a self address the rules fall back to the `.` block, where a
    // stripped real-host artifact (`myhost.S.S` -> `myhost.S`) is already
    // routed and would leave through the default upstream, not forwardTo.
    if !rule.forward_to.is_empty()
        && rule.action == SuffixAction::Rewrite
        && self_address(ctx).is_none()
    {
        return Err(RenderError::NoSelfAddress {
            suffix: rule.suffix.clone(),
            policy: rule.policy.clone(),
            bind: ctx.bind.clone(),
        });
    }
    Ok(())
}

/// Absolute names: `a` is `b` or below it, label-wise.
fn is_same_or_below_abs(a: &str, b: &str) -> bool {
    a == b || a.strip_suffix(b).is_some_and(|rest| rest.ends_with('.'))
}

/// The text for one suffix. Labels are `[^.]+`, dots `[.]`; names are
/// matched as CoreDNS sees them: lower-case, absolute.
struct Stanza<'a> {
    rule: &'a SuffixRule,
    ctx: &'a RenderContext,
    /// `tailb45a71[.]ts[.]net`
    suffix_re: String,
    /// Names ending `.<cluster domain>.<suffix>.` that `hostLabels` alone would
    /// count as real hosts: `Some(cluster[.]local)` when the cluster domain has
    /// fewer labels than `hostLabels`.
    cluster_re: Option<String>,
    /// Where a `rewrite` block forwards the stripped name: CoreDNS itself.
    /// `None`: no `view` in this release, or no known address to reach
    /// itself, so artifacts are handled in the `.` block.
    gated: Option<Gate>,
}

#[derive(Clone)]
enum Gate {
    /// NXDomain: the block answers artifacts itself.
    Answer,
    /// Rewrite: the block strips the suffix and asks CoreDNS again.
    /// `ip:port` or `{$ENV}:port`.
    Forward(String),
}

impl<'a> Stanza<'a> {
    fn new(rule: &'a SuffixRule, cluster_domain: &str, ctx: &'a RenderContext) -> Self {
        let h = usize::from(rule.host_labels);
        let cluster_re = (cluster_domain.split('.').count() < h).then(|| literal(cluster_domain));
        let gated = match rule.action {
            _ if !ctx.version.has_view() => None,
            SuffixAction::NXDomain => Some(Gate::Answer),
            SuffixAction::Rewrite => self_address(ctx).map(Gate::Forward),
        };
        Stanza {
            rule,
            ctx,
            suffix_re: literal(&rule.suffix),
            cluster_re,
            gated,
        }
    }

    /// Names with more than `hostLabels` labels before the suffix.
    fn artifact(&self) -> String {
        format!(
            "^{}.+[.]{}[.]$",
            exactly_labels(self.rule.host_labels),
            self.suffix_re
        )
    }

    /// Names below `<cluster domain>.<suffix>.` that `artifact` misses.
    fn cluster(&self) -> Option<String> {
        self.cluster_re
            .as_ref()
            .map(|d| format!("^.+[.]{d}[.]{}[.]$", self.suffix_re))
    }

    /// `artifact` with group 1 the name without the suffix and its dot.
    fn artifact_capture(&self) -> String {
        format!(
            "^({}.+)[.]{}[.]$",
            exactly_labels(self.rule.host_labels),
            self.suffix_re
        )
    }

    /// `cluster` with group 1 the name without the suffix and its dot.
    fn cluster_capture(&self) -> Option<String> {
        self.cluster_re
            .as_ref()
            .map(|d| format!("^(.+[.]{d})[.]{}[.]$", self.suffix_re))
    }

    /// The names the suffix's own resolvers answer: the suffix itself and up
    /// to `hostLabels` labels before it.
    fn real_host(&self) -> String {
        format!(
            "^{}{}[.]$",
            up_to_labels(self.rule.host_labels),
            self.suffix_re
        )
    }

    /// Comment naming the rule, so an admin reading the Corefile sees why.
    fn comment(&self) -> String {
        let r = self.rule;
        let action = match r.action {
            SuffixAction::Rewrite => "Rewrite",
            SuffixAction::NXDomain => "NXDomain",
        };
        // No `name:` shape: the editor takes `# dnspolicy:` for a marker, and
        // `dnspolicy` is a valid suffix.
        let mut c = format!("# {} ({action}, hostLabels {}", r.suffix, r.host_labels);
        if !r.forward_to.is_empty() {
            let targets: Vec<String> = r.forward_to.iter().map(ToString::to_string).collect();
            write!(c, ", forwardTo {}", targets.join(" ")).unwrap();
        }
        c.push_str(")\n");
        c
    }

    fn rewrite_rules(&self, indent: &str) -> String {
        let mut out = String::new();
        for regex in self
            .cluster_capture()
            .into_iter()
            .chain([self.artifact_capture()])
        {
            writeln!(
                out,
                "{indent}rewrite stop name regex {regex} {{1}}. answer auto"
            )
            .unwrap();
        }
        out
    }

    /// Lines for the `.` block: only where no block for the suffix takes the
    /// artifacts, and never for NXDomain with forwardTo, whose block does.
    fn dot_block(&self) -> String {
        if self.gated.is_some() {
            return String::new();
        }
        match self.rule.action {
            SuffixAction::Rewrite => self.comment() + &self.rewrite_rules(""),
            SuffixAction::NXDomain if self.rule.forward_to.is_empty() => {
                self.comment() + &self.nxdomain_template("", true)
            }
            SuffixAction::NXDomain => String::new(),
        }
    }

    /// `matching`: with the artifact regexes and `fallthrough`, for a block or
    /// zone that also sees real hosts; without, for a block that sees only
    /// artifacts.
    fn nxdomain_template(&self, indent: &str, matching: bool) -> String {
        let mut out = format!("{indent}template ANY ANY {} {{\n", self.rule.suffix);
        if matching {
            let matches: Vec<String> = self
                .cluster()
                .into_iter()
                .chain([self.artifact()])
                .collect();
            writeln!(out, "{indent}    match {}", matches.join(" ")).unwrap();
        }
        writeln!(out, "{indent}    rcode NXDOMAIN").unwrap();
        if matching {
            writeln!(out, "{indent}    fallthrough").unwrap();
        }
        writeln!(out, "{indent}}}").unwrap();
        out
    }

    /// `S:port {` and the `bind` line.
    fn open_block(&self) -> String {
        let mut out = match self.ctx.port {
            Some(port) => format!("{}:{port} {{\n", self.rule.suffix),
            None => format!("{} {{\n", self.rule.suffix),
        };
        if !self.ctx.bind.is_empty() {
            let args: Vec<String> = self.ctx.bind.iter().map(|a| token(a)).collect();
            writeln!(out, "    bind {}", args.join(" ")).unwrap();
        }
        out
    }

    fn view(&self, kind: &str, expr: &str) -> String {
        format!(
            "    view dnspolicy-{}-{kind} {{\n        expr {expr}\n    }}\n",
            self.rule.suffix
        )
    }

    fn forward_to(&self) -> String {
        let targets: Vec<String> = self
            .rule
            .forward_to
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("    forward . {}\n", targets.join(" "))
    }

    /// The blocks for the suffix, each ending with its closing brace.
    fn server_blocks(&self) -> Vec<String> {
        let r = self.rule;
        let mut blocks = Vec::new();
        if let Some(gate) = self.gated.clone()
            && gate_takes_artifacts(&gate, r)
        {
            let mut expr = format!("name() matches '{}'", self.artifact());
            if let Some(cluster) = self.cluster() {
                write!(expr, " || name() matches '{cluster}'").unwrap();
            }
            let mut b = self.comment()
                + &self.open_block()
                + &self.view("artifacts", &expr)
                + "    errors\n";
            match gate {
                Gate::Forward(me) => {
                    b += &self.rewrite_rules("    ");
                    writeln!(b, "    forward . {me}").unwrap();
                }
                Gate::Answer => b += &self.nxdomain_template("    ", false),
            }
            blocks.push(b + "}\n");
        }
        if r.forward_to.is_empty() {
            return blocks;
        }
        let mut b = self.comment() + &self.open_block();
        match r.action {
            SuffixAction::Rewrite => {
                let mut expr = format!("name() matches '{}'", self.real_host());
                if let Some(cluster) = self.cluster() {
                    write!(expr, " && !(name() matches '{cluster}')").unwrap();
                }
                b += &self.view("hosts", &expr);
                b += "    errors\n    cache 30\n";
            }
            SuffixAction::NXDomain => {
                b += "    errors\n    cache 30\n";
                b += &self.nxdomain_template("    ", true);
            }
        }
        blocks.push(b + &self.forward_to() + "}\n");
        blocks
    }
}

/// NXDomain with forwardTo answers artifacts in its one plain block.
fn gate_takes_artifacts(gate: &Gate, rule: &SuffixRule) -> bool {
    !matches!(gate, Gate::Answer) || rule.forward_to.is_empty()
}

/// A DNS name as a regex literal: `tailb45a71[.]ts[.]net`. Names passed
/// `check_dns_name`, so `[a-z0-9_-]` and dots are all there is.
fn literal(name: &str) -> String {
    name.replace('.', "[.]")
}

/// Exactly `n` labels, each with its dot.
fn exactly_labels(n: u8) -> String {
    match n {
        0 => String::new(),
        1 => "[^.]+[.]".to_string(),
        n => format!("(?:[^.]+[.]){{{n}}}"),
    }
}

/// Zero to `n` labels, each with its dot.
fn up_to_labels(n: u8) -> String {
    match n {
        0 => String::new(),
        1 => "(?:[^.]+[.])?".to_string(),
        n => format!("(?:[^.]+[.]){{0,{n}}}"),
    }
}

/// An argument copied from the Corefile, quoted when it would not read back
/// as one token.
fn token(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg.contains(|c: char| c.is_whitespace() || c == '"' || c == '#' || c == '\\')
        && arg != "{"
        && arg != "}";
    if plain {
        arg.to_string()
    } else {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_forward_target;

    const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
    const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);
    const V1_9: CoreDnsVersion = CoreDnsVersion::new(1, 9, 4);

    fn rule(
        suffix: &str,
        action: SuffixAction,
        host_labels: u8,
        forward_to: &[&str],
    ) -> SuffixRule {
        SuffixRule {
            suffix: suffix.into(),
            action,
            host_labels,
            forward_to: forward_to
                .iter()
                .map(|t| parse_forward_target(t).unwrap())
                .collect(),
            policy: "tailnet".into(),
        }
    }

    fn merged(rules: Vec<SuffixRule>) -> MergedPolicies {
        MergedPolicies {
            cluster_domain: "cluster.local".into(),
            rules,
            applied: vec!["tailnet".into()],
            conflicts: vec![],
        }
    }

    fn ctx(version: CoreDnsVersion) -> RenderContext {
        RenderContext {
            port: Some(53),
            ..RenderContext::new(version)
        }
    }

    #[test]
    fn rewrite_from_1_10_is_a_block_for_the_artifacts_that_asks_coredns_again() {
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &[],
        )]);
        let text = render(&m, &ctx(V1_14)).unwrap();
        assert_eq!(text.dot_block, "");
        assert_eq!(
            text.server_blocks,
            "# tailb45a71.ts.net (Rewrite, hostLabels 1)\n\
             tailb45a71.ts.net:53 {\n\
             \x20   view dnspolicy-tailb45a71.ts.net-artifacts {\n\
             \x20       expr name() matches '^[^.]+[.].+[.]tailb45a71[.]ts[.]net[.]$'\n\
             \x20   }\n\
             \x20   errors\n\
             \x20   rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n\
             \x20   forward . 127.0.0.1:53\n\
             }\n"
        );
    }

    #[test]
    fn rewrite_before_1_10_strips_the_suffix_in_the_dot_block() {
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &[],
        )]);
        for version in [V1_8, V1_9] {
            let text = render(&m, &ctx(version)).unwrap();
            assert_eq!(
                text.dot_block,
                "# tailb45a71.ts.net (Rewrite, hostLabels 1)\n\
                 rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n"
            );
            assert_eq!(text.server_blocks, "");
        }
        // From 1.10 too, when CoreDNS cannot be reached at an address it binds.
        let c = RenderContext {
            bind: vec!["eth0".into()],
            ..ctx(V1_14)
        };
        let text = render(&m, &c).unwrap();
        assert!(
            text.dot_block.contains("rewrite stop name regex"),
            "{}",
            text.dot_block
        );
        assert_eq!(text.server_blocks, "");
    }

    #[test]
    fn nxdomain_from_1_10_is_a_block_for_the_artifacts() {
        let m = merged(vec![rule("openstacklocal", SuffixAction::NXDomain, 1, &[])]);
        let c = RenderContext {
            bind: vec!["10.96.0.10".into()],
            ..ctx(V1_14)
        };
        let text = render(&m, &c).unwrap();
        assert_eq!(text.dot_block, "");
        assert_eq!(
            text.server_blocks,
            "# openstacklocal (NXDomain, hostLabels 1)\n\
             openstacklocal:53 {\n\
             \x20   bind 10.96.0.10\n\
             \x20   view dnspolicy-openstacklocal-artifacts {\n\
             \x20       expr name() matches '^[^.]+[.].+[.]openstacklocal[.]$'\n\
             \x20   }\n\
             \x20   errors\n\
             \x20   template ANY ANY openstacklocal {\n\
             \x20       rcode NXDOMAIN\n\
             \x20   }\n\
             }\n"
        );
    }

    #[test]
    fn nxdomain_before_1_10_is_a_template_that_falls_through() {
        let m = merged(vec![rule("openstacklocal", SuffixAction::NXDomain, 1, &[])]);
        for version in [V1_8, V1_9] {
            let text = render(&m, &ctx(version)).unwrap();
            assert_eq!(
                text.dot_block,
                "# openstacklocal (NXDomain, hostLabels 1)\n\
                 template ANY ANY openstacklocal {\n\
                 \x20   match ^[^.]+[.].+[.]openstacklocal[.]$\n\
                 \x20   rcode NXDOMAIN\n\
                 \x20   fallthrough\n\
                 }\n"
            );
            assert_eq!(text.server_blocks, "");
        }
    }

    #[test]
    fn rewrite_with_forward_to_adds_a_block_for_the_real_hosts() {
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &["100.100.100.100"],
        )]);
        let c = RenderContext {
            bind: vec!["10.96.0.10".into(), "{$POD_IP}".into()],
            ..ctx(V1_14)
        };
        let text = render(&m, &c).unwrap();
        assert_eq!(text.dot_block, "");
        assert_eq!(
            text.server_blocks,
            "# tailb45a71.ts.net (Rewrite, hostLabels 1, forwardTo 100.100.100.100:53)\n\
             tailb45a71.ts.net:53 {\n\
             \x20   bind 10.96.0.10 {$POD_IP}\n\
             \x20   view dnspolicy-tailb45a71.ts.net-artifacts {\n\
             \x20       expr name() matches '^[^.]+[.].+[.]tailb45a71[.]ts[.]net[.]$'\n\
             \x20   }\n\
             \x20   errors\n\
             \x20   rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n\
             \x20   forward . 10.96.0.10:53\n\
             }\n\
             \n\
             # tailb45a71.ts.net (Rewrite, hostLabels 1, forwardTo 100.100.100.100:53)\n\
             tailb45a71.ts.net:53 {\n\
             \x20   bind 10.96.0.10 {$POD_IP}\n\
             \x20   view dnspolicy-tailb45a71.ts.net-hosts {\n\
             \x20       expr name() matches '^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'\n\
             \x20   }\n\
             \x20   errors\n\
             \x20   cache 30\n\
             \x20   forward . 100.100.100.100:53\n\
             }\n"
        );
    }

    #[test]
    fn rewrite_with_forward_to_is_refused_before_the_view_plugin() {
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &["100.100.100.100"],
        )]);
        let err = render(&m, &ctx(V1_9)).unwrap_err();
        assert_eq!(
            err,
            RenderError::NeedsNewerCoreDns {
                suffix: "tailb45a71.ts.net".into(),
                policy: "tailnet".into(),
                have: V1_9,
                needed: CoreDnsVersion::new(1, 10, 0),
            }
        );
        assert!(err.to_string().contains("NXDomain"), "{err}");
        assert!(render(&m, &ctx(CoreDnsVersion::new(1, 10, 0))).is_ok());
    }

    #[test]
    fn nxdomain_with_forward_to_is_one_block_on_every_version() {
        let m = merged(vec![rule(
            "eu-west-1.compute.internal",
            SuffixAction::NXDomain,
            1,
            &["10.0.0.2", "[fd00::2]:5353"],
        )]);
        for version in [V1_8, V1_9, V1_14] {
            let text = render(&m, &ctx(version)).unwrap();
            assert_eq!(text.dot_block, "");
            assert_eq!(
                text.server_blocks,
                "# eu-west-1.compute.internal (NXDomain, hostLabels 1, forwardTo 10.0.0.2:53 [fd00::2]:5353)\n\
                 eu-west-1.compute.internal:53 {\n\
                 \x20   errors\n\
                 \x20   cache 30\n\
                 \x20   template ANY ANY eu-west-1.compute.internal {\n\
                 \x20       match ^[^.]+[.].+[.]eu-west-1[.]compute[.]internal[.]$\n\
                 \x20       rcode NXDOMAIN\n\
                 \x20       fallthrough\n\
                 \x20   }\n\
                 \x20   forward . 10.0.0.2:53 [fd00::2]:5353\n\
                 }\n"
            );
        }
    }

    #[test]
    fn host_labels_shape_the_regexes() {
        let m = merged(vec![rule("corp.example", SuffixAction::Rewrite, 0, &[])]);
        let text = render(&m, &ctx(V1_8)).unwrap();
        assert!(
            text.dot_block
                .contains("regex ^(.+)[.]corp[.]example[.]$ {1}."),
            "{}",
            text.dot_block
        );

        // With 3 host labels, `x.cluster.local.corp.example` would count as a
        // host; a rule ahead of the general one strips it anyway.
        let m = merged(vec![rule(
            "corp.example",
            SuffixAction::Rewrite,
            3,
            &["10.0.0.53"],
        )]);
        let text = render(&m, &ctx(V1_14)).unwrap();
        for line in [
            "expr name() matches '^(?:[^.]+[.]){3}.+[.]corp[.]example[.]$' || name() matches '^.+[.]cluster[.]local[.]corp[.]example[.]$'\n",
            "rewrite stop name regex ^(.+[.]cluster[.]local)[.]corp[.]example[.]$ {1}. answer auto\n    \
             rewrite stop name regex ^((?:[^.]+[.]){3}.+)[.]corp[.]example[.]$ {1}. answer auto\n",
            "expr name() matches '^(?:[^.]+[.]){0,3}corp[.]example[.]$' && !(name() matches '^.+[.]cluster[.]local[.]corp[.]example[.]$')\n",
        ] {
            assert!(
                text.server_blocks.contains(line),
                "{line}\nnot in\n{}",
                text.server_blocks
            );
        }
        let m = merged(vec![rule("corp.example", SuffixAction::NXDomain, 3, &[])]);
        let text = render(&m, &ctx(V1_8)).unwrap();
        assert!(
            text.dot_block.contains(
                "match ^.+[.]cluster[.]local[.]corp[.]example[.]$ ^(?:[^.]+[.]){3}.+[.]corp[.]example[.]$\n"
            ),
            "{}",
            text.dot_block
        );
    }

    #[test]
    fn several_suffixes_render_in_suffix_order() {
        let m = merged(vec![
            rule(
                "eu-west-1.compute.internal",
                SuffixAction::NXDomain,
                1,
                &["10.0.0.2"],
            ),
            rule("openstacklocal", SuffixAction::NXDomain, 1, &[]),
            rule("tailb45a71.ts.net", SuffixAction::Rewrite, 1, &[]),
        ]);
        let old = render(&m, &RenderContext::new(V1_8)).unwrap();
        let comments: Vec<&str> = old
            .dot_block
            .lines()
            .filter(|l| l.starts_with('#'))
            .collect();
        assert_eq!(
            comments,
            [
                "# openstacklocal (NXDomain, hostLabels 1)",
                "# tailb45a71.ts.net (Rewrite, hostLabels 1)"
            ]
        );
        let new = render(&m, &RenderContext::new(V1_14)).unwrap();
        assert_eq!(new.dot_block, "");
        let keys: Vec<&str> = new
            .server_blocks
            .lines()
            .filter(|l| l.ends_with(" {") && !l.starts_with(' '))
            .collect();
        // No port on the `.` key: none on the added keys either.
        assert_eq!(
            keys,
            [
                "eu-west-1.compute.internal {",
                "openstacklocal {",
                "tailb45a71.ts.net {"
            ]
        );
        assert!(new.server_blocks.contains("}\n\n# openstacklocal"));
    }

    #[test]
    fn coredns_reaches_itself_where_the_dot_block_listens() {
        let at = |bind: &[&str], port| {
            let c = RenderContext {
                port,
                bind: bind.iter().map(|b| b.to_string()).collect(),
                ..RenderContext::new(V1_14)
            };
            self_address(&c)
        };
        assert_eq!(at(&[], None).as_deref(), Some("127.0.0.1:53"));
        assert_eq!(at(&[], Some(5353)).as_deref(), Some("127.0.0.1:5353"));
        assert_eq!(at(&["0.0.0.0"], Some(53)).as_deref(), Some("127.0.0.1:53"));
        assert_eq!(at(&["::"], Some(53)).as_deref(), Some("[::1]:53"));
        assert_eq!(
            at(&["lo", "169.254.20.10"], Some(53)).as_deref(),
            Some("169.254.20.10:53")
        );
        assert_eq!(
            at(&["{$POD_IP}"], Some(53)).as_deref(),
            Some("{$POD_IP}:53")
        );
        assert_eq!(at(&["eth0"], Some(53)), None);
        let lo_only = RenderContext {
            bind: vec!["lo".into()],
            ..RenderContext::new(V1_14)
        };
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &["100.100.100.100:53"],
        )]);
        assert!(matches!(
            render(&m, &lo_only),
            Err(RenderError::NoSelfAddress { .. })
        ));
    }

    #[test]
    fn unsupported_versions_and_taken_zones_are_refused() {
        let m = merged(vec![rule(
            "tailb45a71.ts.net",
            SuffixAction::Rewrite,
            1,
            &[],
        )]);
        let err = render(&m, &ctx(CoreDnsVersion::new(1, 8, 3))).unwrap_err();
        assert!(err.to_string().contains("answer auto"), "{err}");
        // No policy, nothing to write, whatever the version.
        assert_eq!(
            render(&merged(vec![]), &ctx(CoreDnsVersion::new(1, 6, 0))),
            Ok(ManagedText::default())
        );

        let taken = |zone: &str| RenderContext {
            zones_in_use: vec![ZoneInUse {
                zone: zone.into(),
                key: format!("{}:53", zone.trim_end_matches('.')),
                line: 23,
            }],
            ..ctx(V1_14)
        };
        let err = render(&m, &taken("ts.net.")).unwrap_err();
        assert_eq!(
            err,
            RenderError::ZoneTaken {
                suffix: "tailb45a71.ts.net".into(),
                policy: "tailnet".into(),
                key: "ts.net:53".into(),
                line: 23
            }
        );
        assert!(render(&m, &taken("tailb45a71.ts.net.")).is_err());
        assert!(render(&m, &taken("cluster.local.tailb45a71.ts.net.")).is_err());
        assert!(render(&m, &taken("xtailb45a71.ts.net.")).is_ok());
    }

    #[test]
    fn bind_arguments_are_copied_as_single_tokens() {
        assert_eq!(token("10.96.0.10"), "10.96.0.10");
        assert_eq!(token("{$POD_IP}"), "{$POD_IP}");
        assert_eq!(token("a b"), "\"a b\"");
        assert_eq!(token("x#y"), "\"x#y\"");
        assert_eq!(token("{"), "\"{\"");
    }
}
