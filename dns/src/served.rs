//! What a Corefile serves on the cluster DNS port, and the policies that
//! cannot be applied to it without breaking a lookup.
//!
//! `plan::desired` builds `ServedZones` from the Corefile (managed text
//! stripped) and calls `check`, so the controller and `dnspolicy render`
//! refuse the same policies with the same words. Every refusal names the
//! Corefile line or the policy field and says what to change.

use std::net::IpAddr;

use dnspolicy_crd::SuffixAction;
use dnspolicy_crd::vocabulary::Reason;

use crate::corefile::{Corefile, Directive};
use crate::names::{absolute, label_count, nested, normalise};
use crate::plan::Refusal;
use crate::policy::MergedPolicies;
use crate::stanza::{self, RenderContext};
use crate::version::CoreDnsVersion;

/// A zone something in the Corefile answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedZone {
    /// Absolute, lower-case: `cluster.local.`.
    pub zone: String,
    /// What serves it, as an admin finds it: `server block "ts.net:53"`,
    /// `kubernetes plugin`, `forward`.
    pub by: String,
    pub line: usize,
}

/// A plugin line in the `.` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    pub name: String,
    pub line: usize,
}

/// What the Corefile serves on the port of the `.` block dnspolicy edits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServedZones {
    /// The port the `.` block listens on (its key's, else `-dns.port`, else 53).
    pub port: u16,
    /// Zones of server blocks other than the plain `.` on that port
    /// (other zones of the `.` block's own key included).
    pub blocks: Vec<ServedZone>,
    /// Zones of the `kubernetes` plugin, reverse zones included.
    pub kubernetes: Vec<ServedZone>,
    /// `forward ZONE ...` with a zone other than `.`, in the `.` block.
    pub stubs: Vec<ServedZone>,
    /// Plugins of the `.` block that change how a suffix can be handled:
    /// `autopath`, `acl`, `view` (client-IP expressions only), `rewrite`,
    /// `template`, `loop`, `cache`.
    pub dot_plugins: Vec<PluginLine>,
    /// IP addresses the `.` block binds.
    pub bind_ips: Vec<IpAddr>,
    /// The `.` block listens on every address of the pod, loopback included:
    /// no `bind`, `bind 0.0.0.0`, or a `bind` naming an interface (maybe `lo`).
    /// `{$ENV}` placeholders stand for one pod address each (`{$POD_IP}`).
    pub listens_on_loopback: bool,
}

impl ServedZones {
    /// The model of `corefile` around its `.` block `dot`, whose port, `bind`
    /// and `-dns.port` `ctx` (`RenderContext::for_block_on`) has read.
    pub fn new(corefile: &Corefile, dot: usize, ctx: &RenderContext) -> Self {
        let default_port = ctx.default_port;
        let port = ctx.port.unwrap_or(default_port);
        let mut served = ServedZones {
            port,
            bind_ips: ctx.bind.iter().filter_map(|a| a.parse().ok()).collect(),
            listens_on_loopback: ctx.bind.is_empty()
                || ctx.bind.iter().any(|a| match a.parse::<IpAddr>() {
                    // A bound loopback address is itself in `bind_ips`.
                    Ok(ip) => ip.is_unspecified(),
                    Err(_) => !a.starts_with("{$"),
                }),
            ..Default::default()
        };
        for (i, block) in corefile.blocks.iter().enumerate() {
            let on_port: Vec<_> = block
                .keys
                .iter()
                .filter(|k| k.port.unwrap_or(default_port) == port)
                .collect();
            if on_port.is_empty() {
                continue;
            }
            for key in &on_port {
                if key.zone != "." {
                    served.blocks.push(ServedZone {
                        zone: key.zone.clone(),
                        by: format!("server block {:?}", key.raw),
                        line: block.span.line,
                    });
                }
            }
            for d in block.directives.iter().filter(|d| d.name == "kubernetes") {
                let zones: Vec<String> = if d.args.is_empty() {
                    on_port.iter().map(|k| k.zone.clone()).collect()
                } else {
                    d.args.iter().map(|a| absolute(a)).collect()
                };
                served
                    .kubernetes
                    .extend(zones.into_iter().map(|zone| ServedZone {
                        zone,
                        by: "kubernetes plugin".into(),
                        line: d.span.line,
                    }));
            }
            if i != dot {
                continue;
            }
            for d in &block.directives {
                match d.name.as_str() {
                    "forward" => {
                        if let Some(from) = d.args.first().filter(|z| !normalise(z).is_empty()) {
                            served.stubs.push(ServedZone {
                                zone: absolute(from),
                                by: "forward".into(),
                                line: d.span.line,
                            });
                        }
                    }
                    "view" if mentions_client_ip(&d.block) => served.dot_plugins.push(PluginLine {
                        name: "view".into(),
                        line: d.span.line,
                    }),
                    "autopath" | "acl" | "rewrite" | "template" | "loop" | "cache" => {
                        served.dot_plugins.push(PluginLine {
                            name: d.name.clone(),
                            line: d.span.line,
                        })
                    }
                    _ => {}
                }
            }
        }
        served
    }

    /// The first line of plugin `name` in the `.` block.
    pub fn dot_plugin(&self, name: &str) -> Option<usize> {
        self.dot_plugins
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.line)
    }

    /// The `kubernetes` plugin's forward zones (reverse zones left out).
    fn cluster_zones(&self) -> Vec<&ServedZone> {
        self.kubernetes
            .iter()
            .filter(|z| !z.zone.ends_with(".arpa."))
            .collect()
    }
}

/// A `view` whose expressions read the client's address.
fn mentions_client_ip(block: &[Directive]) -> bool {
    block.iter().any(|d| {
        d.args
            .iter()
            .any(|a| a.contains("client_ip") || a.contains("incidr"))
    })
}

/// What the checks let through: the cluster domain to render with (taken
/// from the Corefile when the spec left the default) and notes for the admin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checked {
    pub cluster_domain: String,
    pub warnings: Vec<String>,
}

fn refuse(reason: Reason, message: String) -> Refusal {
    Refusal {
        reason,
        message: format!("{message}; nothing was written"),
    }
}

/// Checks every merged policy against what the Corefile serves. `cluster_dns_ips`
/// are the kube-dns Service's cluster IPs (empty when unknown).
pub fn check(
    merged: &MergedPolicies,
    served: &ServedZones,
    ctx: &RenderContext,
    cluster_dns_ips: &[IpAddr],
) -> Result<Checked, Refusal> {
    let mut checked = Checked {
        cluster_domain: merged.cluster_domain.clone(),
        warnings: Vec::new(),
    };
    if merged.rules.is_empty() {
        return Ok(checked);
    }

    // 1. The cluster domain is a zone of the kubernetes plugin.
    let cluster_zones = served.cluster_zones();
    let domain = absolute(&merged.cluster_domain);
    if cluster_zones.is_empty() {
        checked.warnings.push(format!(
            "no kubernetes plugin serves port {} in this Corefile, so spec.clusterDomain {:?} cannot be checked against it",
            served.port, merged.cluster_domain
        ));
    } else if !cluster_zones.iter().any(|z| z.zone == domain) {
        let listed: Vec<&str> = cluster_zones
            .iter()
            .map(|z| normalise_ref(&z.zone))
            .collect();
        let line = cluster_zones[0].line;
        if merged.cluster_domain == dnspolicy_crd::DEFAULT_CLUSTER_DOMAIN && listed.len() == 1 {
            checked.cluster_domain = listed[0].to_string();
            checked.warnings.push(format!(
                "spec.clusterDomain is the default {:?}, but the kubernetes plugin (line {line}) serves {:?}; using {:?}. Set spec.clusterDomain to it to silence this",
                merged.cluster_domain, listed[0], listed[0]
            ));
        } else {
            return Err(refuse(
                Reason::ClusterDomainNotServed,
                format!(
                    "spec.clusterDomain {:?} (policy {:?}) is not a zone of the kubernetes plugin on line {line}, which serves {}; set spec.clusterDomain to the cluster's domain",
                    merged.cluster_domain,
                    merged.applied.first().cloned().unwrap_or_default(),
                    listed.join(", ")
                ),
            ));
        }
    }
    let domain_labels = label_count(&checked.cluster_domain);

    for rule in &merged.rules {
        let suffix = rule.suffix.as_str();
        // 3. Suffixes do not nest, whoever declared them.
        if let Some(other) = merged
            .rules
            .iter()
            .find(|o| o.suffix != rule.suffix && nested(&o.suffix, suffix))
        {
            return Err(refuse(
                Reason::NestedSuffixes,
                format!(
                    "suffix {suffix:?} (policy {:?}) and {:?} (policy {:?}) nest; declare only one of them",
                    rule.policy, other.suffix, other.policy
                ),
            ));
        }
        // 2. Nothing but the plain `.` forward serves the suffix, above or below it.
        for z in served
            .blocks
            .iter()
            .chain(&served.kubernetes)
            .chain(&served.stubs)
        {
            if nested(suffix, &z.zone) {
                return Err(refuse(
                    Reason::ZoneTaken,
                    format!(
                        "suffix {suffix:?} (policy {:?}) overlaps zone {:?} that the {} on line {} serves; a query for a name in both would not reach dnspolicy's stanza, or the stanza would take that zone's names. Drop the suffix, or remove that zone from line {} (declare its resolvers as forwardTo)",
                        rule.policy,
                        normalise_ref(&z.zone),
                        z.by,
                        z.line,
                        z.line
                    ),
                ));
            }
        }
        // 9. The cluster domain with the suffix appended is an artifact.
        if usize::from(rule.host_labels) >= domain_labels {
            return Err(refuse(
                Reason::InvalidSpec,
                format!(
                    "suffix {suffix:?} (policy {:?}): hostLabels {} counts {}.{suffix} as a real host, so the cluster domain's own search artifact would leave the cluster; set spec.foreignSuffixes[].hostLabels below {domain_labels}",
                    rule.policy, rule.host_labels, checked.cluster_domain
                ),
            ));
        }
        // 4. forwardTo never leads back to CoreDNS or the cluster DNS.
        for t in &rule.forward_to {
            let ip = t.0.ip();
            let why = if cluster_dns_ips.contains(&ip) {
                Some("is a cluster IP of the cluster DNS Service")
            } else if served.bind_ips.contains(&ip) {
                Some("is an address the `.` block binds: CoreDNS itself")
            } else if crate::policy::unmapped(ip).is_loopback()
                && t.0.port() == served.port
                && served.listens_on_loopback
            {
                Some(
                    "is a loopback address on the port where the `.` block listens on every address: CoreDNS itself",
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(refuse(
                    Reason::ForwardLoops,
                    format!(
                        "suffix {suffix:?} (policy {:?}): forwardTo {t} {why}, so real hosts would loop back into CoreDNS; give the suffix's own resolvers",
                        rule.policy
                    ),
                ));
            }
        }
    }

    // 5. autopath walks the search list inside CoreDNS.
    if let Some(line) = served.dot_plugin("autopath") {
        return Err(refuse(
            Reason::AutopathInDotBlock,
            format!(
                "the `.` block has autopath (line {line}), which tries the search list inside CoreDNS, foreign suffixes included, before any of dnspolicy's server blocks sees the name; remove autopath from line {line} or delete the policies ({})",
                merged.applied.join(", ")
            ),
        ));
    }

    let rewrites: Vec<&crate::policy::SuffixRule> = merged
        .rules
        .iter()
        .filter(|r| r.action == SuffixAction::Rewrite)
        .collect();
    // 6. The self-forwarded Rewrite path makes every client 127.0.0.1 to the `.` block.
    if let Some(rule) = rewrites.iter().find(|r| stanza::forwards_to_itself(r, ctx)) {
        for name in ["acl", "view"] {
            if let Some(line) = served.dot_plugin(name) {
                return Err(refuse(
                    Reason::ClientIPPolicyInDotBlock,
                    format!(
                        "suffix {:?} (policy {:?}): action Rewrite asks CoreDNS again from its own address, so the {name} on line {line} of the `.` block would judge CoreDNS instead of the pod; use action NXDomain, or remove the client-address rule from line {line}",
                        rule.suffix, rule.policy
                    ),
                ));
            }
        }
    }
    // Rewrite rules that go into the `.` block. With forwardTo, `stanza::render`
    // refuses them itself (NeedsNewerCoreDNS, NoSelfAddress), naming the cause.
    let in_dot_block: Vec<&&crate::policy::SuffixRule> = rewrites
        .iter()
        .filter(|r| !stanza::gated(r, ctx) && r.forward_to.is_empty())
        .collect();
    // 7. Rules in the `.` block strip the suffix without routing the name again.
    if let Some(rule) = in_dot_block.first()
        && let Some(other) = served.blocks.first()
    {
        return Err(refuse(
            Reason::StrippedNameNotRouted,
            format!(
                "suffix {:?} (policy {:?}): on this CoreDNS ({}{}) action Rewrite strips the suffix inside the `.` block, and a stripped name stays there: names of zone {:?} ({} on line {}) would not reach that block. Use action NXDomain{}",
                rule.suffix,
                rule.policy,
                ctx.version,
                if ctx.version.has_view() {
                    ", whose `.` block binds no IP address"
                } else {
                    ", before the view plugin"
                },
                normalise_ref(&other.zone),
                other.by,
                other.line,
                if ctx.version.has_view() {
                    ", or bind an IP address in the `.` block"
                } else {
                    ", or upgrade CoreDNS to 1.10.0 or later"
                }
            ),
        ));
    }
    // 8. A user rewrite before 1.9.0 runs in one plugin with the managed rules.
    if ctx.version < CoreDnsVersion::REWRITE_REVERTS_FAILURES
        && let Some(rule) = in_dot_block.first()
        && let Some(line) = served.dot_plugin("rewrite")
    {
        return Err(refuse(
            Reason::UserRewriteOnOldCoreDNS,
            format!(
                "suffix {:?} (policy {:?}): the `.` block already has rewrite (line {line}); on CoreDNS {} all rewrite lines form one plugin and dnspolicy's rules would run after yours on names they already changed; upgrade CoreDNS to 1.9.0 or later, use action NXDomain, or remove the rewrite on line {line}",
                rule.suffix, rule.policy, ctx.version
            ),
        ));
    }
    Ok(checked)
}

fn normalise_ref(zone: &str) -> &str {
    let z = zone.trim_end_matches('.');
    if z.is_empty() { "." } else { z }
}
