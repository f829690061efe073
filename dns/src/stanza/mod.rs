//! Rendering merged policies into the Corefile text CoreDNS runs.
//!
//! Facts this rests on, checked in CoreDNS's source (1.8.3 to 1.14.2) and on
//! the real binaries (see dns/tests/stanza_coredns.rs):
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
//! - Every `forward` dnspolicy writes asks a silent resolver once per query
//!   from 1.13.2 (`max_connect_attempts`, one per target): SERVFAIL after
//!   2 s, not 3 tries and 6 s. The forward to CoreDNS itself has no health
//!   check (`max_fails 0`), whose `. NS` would reach the node upstream
//!   through the `.` block. Measured in dns/tests/upstream_load.rs.
//! - Regexes use `[.]`, never `\.`, and never `#` (a comment even inside a
//!   token): no backslash or quoting questions between the Corefile lexer,
//!   Go's regexp and expr-lang's string literals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dnspolicy_crd::SuffixAction;
use dnspolicy_crd::vocabulary::Reason;

use crate::corefile::{Corefile, ManagedText};
use crate::names::{NameError, absolute, check_dns_name, nested};
use crate::policy::{MergedPolicies, SuffixRule};
use crate::version::{CoreDnsVersion, VersionError};

mod regex;
mod suffix;
#[cfg(test)]
mod tests;

use suffix::Stanza;

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
    /// Where CoreDNS listens for keys without a port: `-dns.port`, 53 by default.
    pub default_port: u16,
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
            default_port: DEFAULT_DNS_PORT,
        }
    }

    /// The context of `corefile.blocks[dot]`, the `.` block the directives go
    /// into. Pass the Corefile with dnspolicy's managed text stripped, or
    /// the blocks added last time count as zones in use.
    pub fn for_block(corefile: &Corefile, dot: usize, version: CoreDnsVersion) -> Self {
        Self::for_block_on(corefile, dot, version, None)
    }

    /// `for_block` for a CoreDNS started with `-dns.port` `dns_port`.
    pub fn for_block_on(
        corefile: &Corefile,
        dot: usize,
        version: CoreDnsVersion,
        dns_port: Option<u16>,
    ) -> Self {
        let default_port = dns_port.unwrap_or(DEFAULT_DNS_PORT);
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
        let listen = port.unwrap_or(default_port);
        let zones_in_use = corefile
            .blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dot)
            .flat_map(|(_, b)| b.keys.iter().map(move |k| (b, k)))
            .filter(|(_, k)| k.zone != "." && k.port.unwrap_or(default_port) == listen)
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
            default_port,
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
    #[error("{what} {name:?} (policy {policy:?}) cannot be written into a Corefile: {error}")]
    InvalidName {
        what: &'static str,
        name: String,
        policy: String,
        error: NameError,
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
    let port = ctx.port.unwrap_or(ctx.default_port);
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

/// The rule's artifacts are handled in server blocks for the suffix (from
/// 1.10.0, with an address to reach CoreDNS again for Rewrite), not in the
/// `.` block.
pub fn gated(rule: &SuffixRule, ctx: &RenderContext) -> bool {
    ctx.version.has_view() && (rule.action == SuffixAction::NXDomain || self_address(ctx).is_some())
}

/// The rule's stanza forwards stripped names to CoreDNS itself (Rewrite in
/// a block for the suffix), so the `.` block sees CoreDNS as the client.
pub fn forwards_to_itself(rule: &SuffixRule, ctx: &RenderContext) -> bool {
    rule.action == SuffixAction::Rewrite && gated(rule, ctx)
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
/// release, though nothing is refused, for a `.` block without `cache`: one
/// line per concern. See `warnings_for_block`.
pub fn warnings(merged: &MergedPolicies, version: CoreDnsVersion) -> Vec<String> {
    warnings_for_block(merged, version, false)
}

/// `warnings` for a `.` block that has (`cache`) or lacks a `cache` plugin.
///
/// Before 1.9.0, `rewrite` does not write the failures of the plugins after it
/// (forward's timeout, no healthy upstream) through its reverter: CoreDNS
/// writes the SERVFAIL itself from the request, whose question `rewrite`
/// changed in place. `cache` runs before `rewrite` and hands the plugins
/// after it a copy of the request, so with `cache` in the block the SERVFAIL
/// carries the question as asked and there is nothing to warn about.
pub fn warnings_for_block(
    merged: &MergedPolicies,
    version: CoreDnsVersion,
    dot_block_has_cache: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let rewrites: Vec<&str> = merged
        .rules
        .iter()
        .filter(|r| r.action == SuffixAction::Rewrite)
        .map(|r| r.suffix.as_str())
        .collect();
    if !rewrites.is_empty()
        && version < CoreDnsVersion::REWRITE_REVERTS_FAILURES
        && !dot_block_has_cache
    {
        out.push(format!(
            "CoreDNS {version} without `cache` in the `.` block answers a rewritten query whose upstream fails (timeout, no healthy upstream) with a SERVFAIL carrying the rewritten question, which resolvers drop and then time out; this affects search artifacts of outside names in {}. Add `cache` to the `.` block (it hands `rewrite` a copy of the query), upgrade to CoreDNS {} or later, or use action NXDomain",
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
        check_dns_name(name).map_err(|error| RenderError::InvalidName {
            what,
            name: name.to_string(),
            policy: rule.policy.clone(),
            error,
        })?;
    }
    let zone = absolute(&rule.suffix);
    if let Some(taken) = ctx.zones_in_use.iter().find(|z| nested(&zone, &z.zone)) {
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
