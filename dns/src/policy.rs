//! Validating `ClusterDNSPolicy` specs and merging the policies that share one
//! CoreDNS into the rules the renderer turns into Corefile text.
//!
//! Everything that reaches a Corefile passes through here first: after
//! `validate`, a suffix is a lower-case DNS name of `[a-z0-9_-]` labels and a
//! forward target is a parsed socket address, so no spec value can be read by
//! CoreDNS as anything but a name or an address.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use dnspolicy_crd::{
    ClusterDNSPolicySpec, CoreDnsTarget, MAX_FORWARD_TARGETS, MAX_SUFFIXES, SuffixAction,
};

use crate::names::{MAX_NAME_LEN, check_dns_name, is_under, label_count, nested};

/// One spec value that cannot be used, named by its path in the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.foreignSuffixes[1].suffix`
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidSpec(pub Vec<FieldError>);

/// A forward target as CoreDNS's `forward` takes it: `ip:port`, IPv6 in brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForwardTarget(pub SocketAddr);

impl fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One validated foreign suffix, remembered with the policy that declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuffixRule {
    /// Lower-case, no trailing dot, e.g. `tailb45a71.ts.net`.
    pub suffix: String,
    pub action: SuffixAction,
    /// Names with at most this many labels before the suffix are real hosts.
    pub host_labels: u8,
    /// Where real hosts in the suffix are resolved; empty: as before.
    pub forward_to: Vec<ForwardTarget>,
    /// The `ClusterDNSPolicy` that declared it.
    pub policy: String,
}

impl SuffixRule {
    /// The rule `policy` declares for `suffix`, its `forward_to` entries read
    /// by [`parse_forward_target`]. The suffix is taken as given: `validate`
    /// is what checks a spec's suffixes.
    pub fn new<T: AsRef<str>>(
        policy: &str,
        suffix: &str,
        action: SuffixAction,
        host_labels: u8,
        forward_to: &[T],
    ) -> Result<SuffixRule, TargetError> {
        Ok(SuffixRule {
            suffix: suffix.into(),
            action,
            host_labels,
            forward_to: forward_to
                .iter()
                .map(|t| parse_forward_target(t.as_ref()))
                .collect::<Result<_, _>>()?,
            policy: policy.into(),
        })
    }

    /// Same behaviour, whichever policy declared it.
    fn same_behaviour(&self, other: &SuffixRule) -> bool {
        self.suffix == other.suffix
            && self.action == other.action
            && self.host_labels == other.host_labels
            && self.forward_to == other.forward_to
    }
}

/// A spec that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    pub name: String,
    pub cluster_domain: String,
    pub target: CoreDnsTarget,
    /// Sorted by suffix.
    pub rules: Vec<SuffixRule>,
}

/// Why a policy's rules were left out of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The policy left out.
    pub policy: String,
    /// The earlier policy (by name) whose rule wins.
    pub winner: String,
    pub message: String,
}

/// The rules of every policy that targets one CoreDNS, merged by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergedPolicies {
    pub cluster_domain: String,
    /// Sorted by suffix; each suffix once.
    pub rules: Vec<SuffixRule>,
    /// Policies whose rules are in `rules`, sorted.
    pub applied: Vec<String>,
    /// Policies left out whole because they contradict an earlier one.
    pub conflicts: Vec<Conflict>,
}

impl MergedPolicies {
    /// What `merge` gives for one policy without conflicts: its `rules`
    /// (already sorted by suffix) in `cluster_domain`.
    pub fn of_one_policy(cluster_domain: &str, policy: &str, rules: Vec<SuffixRule>) -> Self {
        MergedPolicies {
            cluster_domain: cluster_domain.into(),
            rules,
            applied: vec![policy.into()],
            conflicts: vec![],
        }
    }
}

/// Why a `forwardTo` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{text:?} has port 0")]
    PortZero { text: String },
    #[error("{text:?} is not an IP address or IP:port (IPv6 with a port as [addr]:port)")]
    NotAnAddress { text: String },
    #[error(
        "{text:?} is a {kind} address, which leads back to CoreDNS or the node-local cache instead of the suffix's own resolvers; give the resolver's routable address"
    )]
    LeadsBack { text: String, kind: &'static str },
}

/// Why a Kubernetes object name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a Kubernetes object name (lower-case a-z, 0-9, '-', '.')")]
pub struct ObjectNameError {
    pub name: String,
}

/// Parses `IP` or `IP:port` (`[v6]:port`); port 53 when absent.
pub fn parse_forward_target(text: &str) -> Result<ForwardTarget, TargetError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ForwardTarget(SocketAddr::new(ip, 53)));
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(ForwardTarget(addr)),
        Ok(_) => Err(TargetError::PortZero { text: text.into() }),
        Err(_) => Err(TargetError::NotAnAddress { text: text.into() }),
    }
}

/// What kind of address can never be a resolver a CoreDNS pod forwards to:
/// unspecified, and link-local (169.254/16 with the node-local cache's
/// 169.254.20.10, fe80::/10), IPv4-mapped forms included. Loopback is judged
/// against the Corefile (`served`): it loops only where CoreDNS listens on it.
pub fn leads_back(ip: IpAddr) -> Option<&'static str> {
    match unmapped(ip) {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A forward target that may be written: parsed and not leading back.
pub fn check_forward_target(text: &str) -> Result<ForwardTarget, TargetError> {
    let t = parse_forward_target(text)?;
    match leads_back(t.0.ip()) {
        Some(kind) => Err(TargetError::LeadsBack {
            text: text.into(),
            kind,
        }),
        None => Ok(t),
    }
}

/// The spec with each `forwardToRef` replaced by the address it resolved to
/// (`addresses`, by suffix, `IP` or `IP:port`), so `validate` and the planner
/// see plain addresses. A reference with no address becomes no forward at
/// all: real hosts in that suffix resolve as before the policy while the
/// search artifacts are still answered; the caller reports why. A suffix
/// that gives both forwardTo and forwardToRef is left as it is, for
/// `validate` to refuse.
pub fn resolve_forward_refs(
    spec: &ClusterDNSPolicySpec,
    addresses: &BTreeMap<String, String>,
) -> ClusterDNSPolicySpec {
    let mut resolved = spec.clone();
    for entry in &mut resolved.foreign_suffixes {
        if entry.forward_to_ref.is_none() || !entry.forward_to.is_empty() {
            continue;
        }
        entry.forward_to_ref = None;
        entry.forward_to = addresses.get(&entry.suffix).cloned().into_iter().collect();
    }
    resolved
}

/// Validates one policy. Reports every problem, each naming its field.
pub fn validate(name: &str, spec: &ClusterDNSPolicySpec) -> Result<ValidPolicy, InvalidSpec> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(FieldError { field, message });
    // Every error type here names the value; the field is added by `err`.
    fn text(e: impl fmt::Display) -> String {
        e.to_string()
    }

    let domain = spec.cluster_domain.as_str();
    if let Err(m) = check_dns_name(domain) {
        err("spec.clusterDomain".into(), text(m));
    }
    if spec.foreign_suffixes.is_empty() {
        err(
            "spec.foreignSuffixes".into(),
            "declare at least one suffix".into(),
        );
    }
    if spec.foreign_suffixes.len() > MAX_SUFFIXES {
        err(
            "spec.foreignSuffixes".into(),
            format!(
                "{} entries; at most {MAX_SUFFIXES}",
                spec.foreign_suffixes.len()
            ),
        );
    }
    for (field, value) in [
        ("spec.target.namespace", &spec.target.namespace),
        ("spec.target.configMap", &spec.target.config_map),
        ("spec.target.deployment", &spec.target.deployment),
    ] {
        if let Err(m) = check_object_name(value) {
            err(field.into(), text(m));
        }
    }

    let mut rules = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, entry) in spec.foreign_suffixes.iter().enumerate() {
        let field = format!("spec.foreignSuffixes[{i}]");
        let suffix = entry.suffix.as_str();
        let mut suffix_ok = true;
        if let Err(m) = check_dns_name(suffix) {
            err(format!("{field}.suffix"), text(m));
            suffix_ok = false;
        } else if is_under(suffix, domain) {
            err(
                format!("{field}.suffix"),
                format!(
                    "{suffix:?} is the cluster domain {domain:?} or a name under it; CoreDNS must keep answering it"
                ),
            );
            suffix_ok = false;
        } else if is_under(domain, suffix) {
            err(
                format!("{field}.suffix"),
                format!(
                    "{suffix:?} is a parent of the cluster domain {domain:?}; rewriting it would capture in-cluster names"
                ),
            );
            suffix_ok = false;
        }
        if let Some(first) = seen.insert(suffix, i) {
            err(
                format!("{field}.suffix"),
                format!("{suffix:?} is already declared at spec.foreignSuffixes[{first}]"),
            );
            suffix_ok = false;
        }
        let named = check_dns_name(suffix).is_ok();
        for (other, j) in seen.iter().filter(|_| named) {
            if *j != i && *other != suffix && check_dns_name(other).is_ok() && nested(suffix, other)
            {
                err(
                    format!("{field}.suffix"),
                    format!(
                        "{suffix:?} and {other:?} (spec.foreignSuffixes[{j}].suffix) nest: every name in the lower one is also in the upper one, so the two rules would both claim it; declare only one of them"
                    ),
                );
                suffix_ok = false;
            }
        }
        if entry.host_labels > 8 {
            err(
                format!("{field}.hostLabels"),
                format!("{} is more than 8", entry.host_labels),
            );
        } else if check_dns_name(domain).is_ok()
            && usize::from(entry.host_labels) >= label_count(domain)
        {
            err(
                format!("{field}.hostLabels"),
                format!(
                    "{} counts {domain}.{suffix} (the cluster domain {domain:?} with the suffix appended, a search artifact) as a real host, so it would be sent out of the cluster; use hostLabels below {}, the number of labels in spec.clusterDomain",
                    entry.host_labels,
                    label_count(domain)
                ),
            );
        }
        if entry.forward_to.len() > MAX_FORWARD_TARGETS {
            err(
                format!("{field}.forwardTo"),
                format!(
                    "{} targets; CoreDNS's forward takes at most {MAX_FORWARD_TARGETS}",
                    entry.forward_to.len()
                ),
            );
        }
        if let Some(reference) = &entry.forward_to_ref {
            let message = if entry.forward_to.is_empty() {
                format!(
                    "{reference} is resolved against the cluster, not here; give its address with resolve_forward_refs (the operator) or --forward-ref-address {suffix}=ADDR (dnspolicy render)"
                )
            } else {
                "give forwardTo or forwardToRef, not both".to_string()
            };
            err(format!("{field}.forwardToRef"), message);
        }
        let mut forward_to = Vec::new();
        for (j, target) in entry.forward_to.iter().enumerate() {
            match check_forward_target(target) {
                Ok(t) if forward_to.contains(&t) => err(
                    format!("{field}.forwardTo[{j}]"),
                    format!("{t} is listed twice"),
                ),
                Ok(t) => forward_to.push(t),
                Err(m) => err(format!("{field}.forwardTo[{j}]"), text(m)),
            }
        }
        if suffix_ok {
            rules.push(SuffixRule {
                suffix: suffix.to_string(),
                action: entry.action,
                host_labels: entry.host_labels,
                forward_to,
                policy: name.to_string(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(InvalidSpec(errors));
    }
    rules.sort_by(|a, b| a.suffix.cmp(&b.suffix));
    Ok(ValidPolicy {
        name: name.to_string(),
        cluster_domain: domain.to_string(),
        target: spec.target.clone(),
        rules,
    })
}

/// Kubernetes object names (RFC 1123 subdomain): the target's namespace,
/// ConfigMap and Deployment.
fn check_object_name(name: &str) -> Result<(), ObjectNameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ObjectNameError { name: name.into() })
    }
}

/// Merges the valid policies that target one CoreDNS. Policies are taken in
/// name order; a policy that contradicts an earlier one (same suffix with
/// other behaviour, another cluster domain, a suffix nested in an earlier
/// one's) is left out whole and reported, so its owner sees `Conflict` and
/// nothing already applied changes.
pub fn merge(policies: &[ValidPolicy]) -> MergedPolicies {
    let mut sorted: Vec<&ValidPolicy> = policies.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut merged = MergedPolicies::default();
    for policy in sorted {
        match contradiction(&merged, policy) {
            Some((winner, message)) => merged.conflicts.push(Conflict {
                policy: policy.name.clone(),
                winner,
                message,
            }),
            None => {
                if merged.applied.is_empty() {
                    merged.cluster_domain = policy.cluster_domain.clone();
                }
                for rule in &policy.rules {
                    if !merged.rules.iter().any(|r| r.same_behaviour(rule)) {
                        merged.rules.push(rule.clone());
                    }
                }
                merged.applied.push(policy.name.clone());
            }
        }
    }
    merged.rules.sort_by(|a, b| a.suffix.cmp(&b.suffix));
    merged
}

fn contradiction(merged: &MergedPolicies, policy: &ValidPolicy) -> Option<(String, String)> {
    if let Some(first) = merged.applied.first()
        && merged.cluster_domain != policy.cluster_domain
    {
        return Some((
            first.clone(),
            format!(
                "spec.clusterDomain {:?} differs from {:?} set by policy {first:?} for the same CoreDNS",
                policy.cluster_domain, merged.cluster_domain
            ),
        ));
    }
    for rule in &policy.rules {
        for earlier in &merged.rules {
            if earlier.suffix == rule.suffix && !earlier.same_behaviour(rule) {
                return Some((
                    earlier.policy.clone(),
                    format!(
                        "suffix {:?} is declared with other settings by policy {:?}",
                        rule.suffix, earlier.policy
                    ),
                ));
            }
            if earlier.suffix != rule.suffix && nested(&rule.suffix, &earlier.suffix) {
                return Some((
                    earlier.policy.clone(),
                    format!(
                        "suffix {:?} overlaps {:?} declared by policy {:?}; declare one of them",
                        rule.suffix, earlier.suffix, earlier.policy
                    ),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnspolicy_crd::ForeignSuffix;

    fn spec(yaml: &str) -> ClusterDNSPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn fields(result: Result<ValidPolicy, InvalidSpec>) -> Vec<String> {
        result.unwrap_err().0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_tailscale_policy_is_valid() {
        let p = validate(
            "tailnet",
            &spec("foreignSuffixes: [{suffix: tailb45a71.ts.net, forwardTo: ['100.100.100.100']}]"),
        )
        .unwrap();
        assert_eq!(p.rules[0].suffix, "tailb45a71.ts.net");
        assert_eq!(p.rules[0].forward_to[0].to_string(), "100.100.100.100:53");
    }

    #[test]
    fn injection_attempts_are_refused_naming_the_field() {
        for bad in [
            "x }\nforward . 6.6.6.6",
            "evil.com #",
            "a b",
            "\"quoted\"",
            "Tailb45a71.ts.net",
            "tail.ts.net.",
            ".",
            "",
            "a..b",
            "{$HOME}",
        ] {
            let mut s = spec("foreignSuffixes: [{suffix: ok.example}, {suffix: x}]");
            s.foreign_suffixes[1].suffix = bad.into();
            assert_eq!(
                fields(validate("p", &s)),
                ["spec.foreignSuffixes[1].suffix"],
                "suffix {bad:?}"
            );
        }
        for bad in [
            "8.8.8.8; rm",
            "8.8.8.8 }",
            "dns.google",
            "8.8.8.8:0",
            "1.2.3.4:99999",
            "fd00::1:",
        ] {
            let s = spec(&format!(
                "foreignSuffixes: [{{suffix: ok.example, forwardTo: ['1.1.1.1', {bad:?}]}}]"
            ));
            assert_eq!(
                fields(validate("p", &s)),
                ["spec.foreignSuffixes[0].forwardTo[1]"],
                "target {bad:?}"
            );
        }
    }

    #[test]
    fn a_forward_ref_is_replaced_by_its_address_or_by_nothing() {
        let s = spec(
            "foreignSuffixes: [{suffix: tailb45a71.ts.net, forwardToRef: {kind: DNSConfig, name: ts-dns}}, {suffix: corp.example, forwardToRef: {kind: Service, namespace: dns, name: corp, port: 5353}}]",
        );
        assert_eq!(
            fields(validate("p", &s)),
            [
                "spec.foreignSuffixes[0].forwardToRef",
                "spec.foreignSuffixes[1].forwardToRef"
            ],
            "an unresolved reference cannot reach the planner"
        );
        let addresses = BTreeMap::from([("tailb45a71.ts.net".into(), "10.96.0.77:53".into())]);
        let v = validate("p", &resolve_forward_refs(&s, &addresses)).unwrap();
        let by_suffix: BTreeMap<_, _> = v.rules.iter().map(|r| (r.suffix.as_str(), r)).collect();
        assert_eq!(
            by_suffix["tailb45a71.ts.net"].forward_to,
            [parse_forward_target("10.96.0.77:53").unwrap()]
        );
        assert!(
            by_suffix["corp.example"].forward_to.is_empty(),
            "unresolved: real hosts resolve as before, the artifacts are still answered"
        );
    }

    #[test]
    fn forward_to_and_forward_to_ref_together_are_refused() {
        let s = spec(
            "foreignSuffixes: [{suffix: corp.example, forwardTo: ['10.0.0.1'], forwardToRef: {kind: DNSConfig, name: ts-dns}}]",
        );
        let addresses = BTreeMap::from([("corp.example".into(), "10.0.0.2".into())]);
        let e = validate("p", &resolve_forward_refs(&s, &addresses)).unwrap_err();
        assert_eq!(e.0[0].field, "spec.foreignSuffixes[0].forwardToRef");
        assert!(e.0[0].message.contains("not both"), "{e}");
    }

    #[test]
    fn the_cluster_domain_its_parents_and_children_are_refused() {
        for bad in ["cluster.local", "svc.cluster.local", "local"] {
            let s = spec(&format!("foreignSuffixes: [{{suffix: {bad}}}]"));
            assert_eq!(
                fields(validate("p", &s)),
                ["spec.foreignSuffixes[0].suffix"],
                "{bad}"
            );
        }
        // String containment is not label containment.
        let s = spec("foreignSuffixes: [{suffix: mycluster.local}]");
        assert!(validate("p", &s).is_ok());
    }

    #[test]
    fn duplicates_and_too_many_targets_are_refused() {
        let s = spec("foreignSuffixes: [{suffix: openstacklocal}, {suffix: openstacklocal}]");
        assert_eq!(
            fields(validate("p", &s)),
            ["spec.foreignSuffixes[1].suffix"]
        );
        let mut s = spec("foreignSuffixes: [{suffix: openstacklocal}]");
        s.foreign_suffixes[0].forward_to = (1..=16).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            fields(validate("p", &s)),
            ["spec.foreignSuffixes[0].forwardTo"]
        );
        let mut s = spec("foreignSuffixes: []");
        assert_eq!(fields(validate("p", &s)), ["spec.foreignSuffixes"]);
        s.foreign_suffixes = (0..33)
            .map(|i| ForeignSuffix {
                suffix: format!("s{i}.example"),
                action: SuffixAction::Rewrite,
                host_labels: 1,
                forward_to: vec![],
                forward_to_ref: None,
            })
            .collect();
        assert_eq!(fields(validate("p", &s)), ["spec.foreignSuffixes"]);
    }

    #[test]
    fn ipv6_forward_targets_are_bracketed() {
        let s = spec(
            "foreignSuffixes: [{suffix: corp.example, forwardTo: ['fd7a:115c:a1e0::53', '[fd7a:115c:a1e0::54]:5353']}]",
        );
        let p = validate("p", &s).unwrap();
        let shown: Vec<String> = p.rules[0]
            .forward_to
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            ["[fd7a:115c:a1e0::53]:53", "[fd7a:115c:a1e0::54]:5353"]
        );
    }

    fn valid(name: &str, yaml: &str) -> ValidPolicy {
        validate(name, &spec(yaml)).unwrap()
    }

    #[test]
    fn policies_merge_by_name_and_the_later_contradiction_is_left_out() {
        let tailnet = valid(
            "a-tailnet",
            "foreignSuffixes: [{suffix: tailb45a71.ts.net}]",
        );
        let openstack = valid(
            "b-openstack",
            "foreignSuffixes: [{suffix: openstacklocal}, {suffix: tailb45a71.ts.net}]",
        );
        let rogue = valid(
            "c-rogue",
            "foreignSuffixes: [{suffix: tailb45a71.ts.net, action: NXDomain}]",
        );
        let merged = merge(&[rogue.clone(), openstack.clone(), tailnet.clone()]);
        assert_eq!(merged.applied, ["a-tailnet", "b-openstack"]);
        let suffixes: Vec<&str> = merged.rules.iter().map(|r| r.suffix.as_str()).collect();
        assert_eq!(suffixes, ["openstacklocal", "tailb45a71.ts.net"]);
        assert_eq!(merged.conflicts.len(), 1);
        assert_eq!(merged.conflicts[0].policy, "c-rogue");
        assert_eq!(merged.conflicts[0].winner, "a-tailnet");
        // Order of input never matters.
        assert_eq!(merge(&[tailnet, openstack, rogue]), merged);
    }

    #[test]
    fn nested_suffixes_and_other_cluster_domains_conflict() {
        let a = valid("a", "foreignSuffixes: [{suffix: ts.net}]");
        let b = valid("b", "foreignSuffixes: [{suffix: tailb45a71.ts.net}]");
        let c = valid(
            "c",
            "clusterDomain: k8s.internal\nforeignSuffixes: [{suffix: openstacklocal}]",
        );
        let merged = merge(&[a, b, c]);
        assert_eq!(merged.applied, ["a"]);
        let losers: Vec<&str> = merged.conflicts.iter().map(|c| c.policy.as_str()).collect();
        assert_eq!(losers, ["b", "c"]);
    }
}
