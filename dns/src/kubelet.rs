//! The resolv.conf kubelet gives a pod, as a pure function.
//!
//! A port of kubelet's `pkg/kubelet/network/dns/dns.go` (`GetPodDNS` and the
//! helpers it calls), Kubernetes 1.28 and later, where `ExpandedDNSConfig` is GA
//! and its gate removed: 32 search entries, 2048 characters, entries over 253
//! characters dropped. The comments name the Go function each rule comes from.
//!
//! kubelet computes this once, when the pod sandbox is created, from the node's
//! resolv.conf *as it is at that moment*. A pod created while its node carried a
//! foreign suffix keeps it until the pod is recreated, even after the node is
//! cleaned; so the caller passes the node's search list as it was when the pod
//! started (docs/design.md §6), not as it is now.

use crate::names;
use std::fmt;

/// `validation.MaxDNSNameservers` (pkg/apis/core/validation).
pub const MAX_NAMESERVERS: usize = 3;
/// `validation.MaxDNSSearchPaths` (formerly `MaxDNSSearchPathsExpanded`).
pub const MAX_SEARCH_PATHS: usize = 32;
/// `validation.MaxDNSSearchListChars` (formerly `MaxDNSSearchListCharsExpanded`).
pub const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// `utilvalidation.DNS1123SubdomainMaxLength`: longer entries are dropped one by one.
pub const MAX_SEARCH_ENTRY_CHARS: usize = 253;

/// `defaultDNSOptions` in dns.go: the only option a ClusterFirst pod gets.
pub const DEFAULT_CLUSTER_OPTIONS: &[&str] = &["ndots:5"];

/// `pod.spec.dnsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsPolicy {
    #[default]
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

impl DnsPolicy {
    /// `pod.spec.dnsPolicy` as kubelet acts on it: empty is the API default
    /// (ClusterFirst) and so is an unknown value, which the API server rejects
    /// and kubelet (`GetPodDNS`) logs and treats as ClusterFirst.
    pub fn from_spec(value: Option<&str>) -> Self {
        Self::parse(value).unwrap_or(Self::ClusterFirst)
    }

    /// Strict form: an unknown policy is returned as the error.
    pub fn parse(value: Option<&str>) -> Result<Self, UnknownDnsPolicy> {
        match value.unwrap_or("") {
            "" | "ClusterFirst" => Ok(Self::ClusterFirst),
            "ClusterFirstWithHostNet" => Ok(Self::ClusterFirstWithHostNet),
            "Default" => Ok(Self::Default),
            "None" => Ok(Self::None),
            other => Err(UnknownDnsPolicy(other.to_string())),
        }
    }
}

/// A `pod.spec.dnsPolicy` kubelet does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.dnsPolicy: {0:?} is not ClusterFirst, ClusterFirstWithHostNet, Default or None; kubelet treats it as ClusterFirst"
)]
pub struct UnknownDnsPolicy(pub String);

/// `pod.spec.dnsConfig.options[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDnsOption {
    pub name: String,
    pub value: Option<String>,
}

impl PodDnsOption {
    pub fn new(name: &str, value: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            value: value.map(str::to_string),
        }
    }
}

/// `pod.spec.dnsConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodDnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<PodDnsOption>,
}

/// The few pod fields kubelet reads to build resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodDns {
    pub namespace: String,
    /// `pod.spec.dnsPolicy`, read with [`DnsPolicy::from_spec`].
    pub dns_policy: DnsPolicy,
    pub host_network: bool,
    pub dns_config: Option<PodDnsConfig>,
}

/// The node's resolv.conf as kubelet reads it (`--resolv-conf`, usually
/// `/etc/resolv.conf` or `/run/systemd/resolve/resolv.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeDns {
    pub host_nameservers: Vec<String>,
    pub host_search: Vec<String>,
    pub host_options: Vec<String>,
    /// kubelet runs with `--resolv-conf=""`: no host file at all.
    pub no_resolv_conf: bool,
}

/// kubelet's own settings: `--cluster-domain` and `--cluster-dns`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterDns {
    pub domain: String,
    pub cluster_dns_ips: Vec<String>,
}

/// A warning kubelet records as an Event on the pod or node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEvent {
    pub reason: &'static str,
    pub message: String,
}

/// The pod's /etc/resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
    /// Events kubelet would record while building it (limits exceeded, ...).
    pub events: Vec<KubeletEvent>,
}

/// A malformed node resolv.conf, as kubelet's `parseResolvConf` rejects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConfError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ResolvConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resolv.conf line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ResolvConfError {}

impl NodeDns {
    /// `parseResolvConf`: `nameserver` lines accumulate, the last `search` and
    /// the last `options` line win, a trailing dot on a search entry is trimmed,
    /// lines starting with `#` are skipped (inline comments are not).
    pub fn parse_resolv_conf(text: &str) -> Result<Self, ResolvConfError> {
        let mut node = NodeDns::default();
        for (index, line) in text.split('\n').enumerate() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.first() {
                Some(&"nameserver") => match fields.get(1) {
                    Some(ip) => node.host_nameservers.push(ip.to_string()),
                    None => {
                        return Err(ResolvConfError {
                            line: index + 1,
                            message: "nameserver list is empty; give it an address".into(),
                        });
                    }
                },
                Some(&"search") => {
                    node.host_search = fields[1..]
                        .iter()
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                        .collect();
                }
                Some(&"options") => {
                    node.host_options = fields[1..].iter().map(|s| s.to_string()).collect();
                }
                _ => {}
            }
        }
        Ok(node)
    }
}

impl ResolvConf {
    /// The file as the container runtime writes it (containerd's
    /// `parseDNSOptions`: `search`, then one `nameserver` line each, then `options`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.nameservers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }

    /// `ndots` as the resolver will read it: the last `ndots:` option, else 1.
    pub fn ndots(&self) -> u32 {
        option_value(&self.options, "ndots")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }
}

fn option_value<'a>(options: &'a [String], name: &str) -> Option<&'a str> {
    options.iter().rev().find_map(|o| match o.split_once(':') {
        Some((n, v)) if n == name => Some(v),
        _ => None,
    })
}

/// `podDNSType` in dns.go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodDnsType {
    Cluster,
    Host,
    None,
}

/// `getPodDNSType`: ClusterFirst on the host network falls back to Default;
/// ClusterFirstWithHostNet is cluster DNS with or without the host network.
fn pod_dns_type(pod: &PodDns) -> PodDnsType {
    match pod.dns_policy {
        DnsPolicy::None => PodDnsType::None,
        DnsPolicy::ClusterFirstWithHostNet => PodDnsType::Cluster,
        DnsPolicy::ClusterFirst if !pod.host_network => PodDnsType::Cluster,
        DnsPolicy::ClusterFirst | DnsPolicy::Default => PodDnsType::Host,
    }
}

/// `omitDuplicates`: first occurrence wins, exact (case-sensitive) comparison.
pub fn omit_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// `generateSearchesForDNSClusterFirst`: `<ns>.svc.<domain> svc.<domain> <domain>`
/// then the host's search list, duplicates dropped.
pub fn cluster_first_searches(
    namespace: &str,
    domain: &str,
    host_search: &[String],
) -> Vec<String> {
    if domain.is_empty() {
        return host_search.to_vec();
    }
    let mut search = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    search.extend(host_search.iter().cloned());
    omit_duplicates(search)
}

/// `mergeDNSOptions`: options keyed by the text before the first `:`; the pod's
/// `dnsConfig.options` overwrite. kubelet rebuilds the list from a Go map, so its
/// order is random; here each option keeps the place it first appeared.
pub fn merge_options(existing: &[String], pod_options: &[PodDnsOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match merged.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => merged.push((name.to_string(), value.to_string())),
    };
    for op in existing {
        match op.split_once(':') {
            Some((name, value)) => set(name, value),
            None => set(op, ""),
        }
    }
    for op in pod_options {
        set(&op.name, op.value.as_deref().unwrap_or(""));
    }
    merged
        .into_iter()
        .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
        .collect()
}

/// `formDNSSearchFitsLimits`, in kubelet's order: cut to 32 entries first, then
/// drop entries over 253 characters (so fewer than 32 may remain), then cut
/// entries from the end until the space-joined line is at most 2048 characters.
pub fn fit_search_limits(search: Vec<String>, events: &mut Vec<KubeletEvent>) -> Vec<String> {
    let mut exceeded = false;
    let mut search = search;
    if search.len() > MAX_SEARCH_PATHS {
        search.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = search.len();
    search.retain(|s| s.len() <= MAX_SEARCH_ENTRY_CHARS);
    exceeded |= search.len() != before;
    let line_len = joined_len(&search);
    if line_len > MAX_SEARCH_LIST_CHARS {
        let mut cut = 0;
        let mut cut_len = 0;
        for entry in search.iter().rev() {
            cut_len += entry.len() + 1;
            cut += 1;
            if line_len - cut_len <= MAX_SEARCH_LIST_CHARS {
                break;
            }
        }
        search.truncate(search.len() - cut);
        exceeded = true;
    }
    if exceeded {
        events.push(KubeletEvent {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                search.join(" ")
            ),
        });
    }
    search
}

fn joined_len(items: &[String]) -> usize {
    items.iter().map(String::len).sum::<usize>() + items.len().saturating_sub(1)
}

/// `formDNSNameserversFitsLimits`: the first three.
fn fit_nameserver_limits(mut servers: Vec<String>, events: &mut Vec<KubeletEvent>) -> Vec<String> {
    if servers.len() > MAX_NAMESERVERS {
        servers.truncate(MAX_NAMESERVERS);
        events.push(KubeletEvent {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                servers.join(" ")
            ),
        });
    }
    servers
}

/// `GetPodDNS`: the pod's nameservers, search list and options.
pub fn pod_resolv_conf(pod: &PodDns, node: &NodeDns, cluster: &ClusterDns) -> ResolvConf {
    let mut events = Vec::new();
    // getHostDNSConfig: the node's file is the base for every policy but None.
    let mut servers = node.host_nameservers.clone();
    let mut searches = node.host_search.clone();
    let mut options = node.host_options.clone();

    let mut dns_type = pod_dns_type(pod);
    if dns_type == PodDnsType::Cluster && cluster.cluster_dns_ips.is_empty() {
        events.push(KubeletEvent {
            reason: "MissingClusterDNS",
            message: "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.".into(),
        });
        dns_type = PodDnsType::Host;
    }
    match dns_type {
        PodDnsType::None => {
            servers.clear();
            searches.clear();
            options.clear();
        }
        // The cluster DNS is the only nameserver; host options are replaced by ndots:5.
        PodDnsType::Cluster => {
            servers = cluster.cluster_dns_ips.clone();
            searches = cluster_first_searches(&pod.namespace, &cluster.domain, &node.host_search);
            options = DEFAULT_CLUSTER_OPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        // `--resolv-conf=""`: localhost as nameserver and a root-only search list.
        PodDnsType::Host if node.no_resolv_conf => {
            servers.push("127.0.0.1".into());
            searches = vec![".".into()];
        }
        PodDnsType::Host => {}
    }

    if let Some(config) = &pod.dns_config {
        // appendDNSConfig
        servers.extend(config.nameservers.iter().cloned());
        servers = omit_duplicates(servers);
        searches.extend(config.searches.iter().cloned());
        searches = omit_duplicates(searches);
        options = merge_options(&options, &config.options);
    }

    // formDNSConfigFitsLimits
    let nameservers = fit_nameserver_limits(servers, &mut events);
    let searches = fit_search_limits(searches, &mut events);
    ResolvConf {
        nameservers,
        searches,
        options,
        events,
    }
}

/// Only the search list, for pollution accounting: the pod as kubelet would
/// build it with cluster DNS configured (every real cluster has it).
pub fn pod_searches(pod: &PodDns, node: &NodeDns, cluster_domain: &str) -> Vec<String> {
    let cluster = ClusterDns {
        domain: cluster_domain.to_string(),
        cluster_dns_ips: vec!["cluster-dns".into()],
    };
    pod_resolv_conf(pod, node, &cluster).searches
}

/// True when the search list holds one of the foreign suffixes (or a domain
/// under one): every short name is then also queried under that suffix.
pub fn is_polluted(searches: &[String], suffixes: &[String]) -> bool {
    !polluting_suffixes(searches, suffixes).is_empty()
}

/// The declared suffixes that some search entry equals or lies under,
/// compared label-wise, case-insensitively, ignoring a trailing dot.
pub fn polluting_suffixes<'a>(searches: &[String], suffixes: &'a [String]) -> Vec<&'a str> {
    suffixes
        .iter()
        .filter(|suffix| searches.iter().any(|entry| within(entry, suffix)))
        .map(String::as_str)
        .collect()
}

fn within(name: &str, suffix: &str) -> bool {
    !names::normalise(name).is_empty()
        && !names::normalise(suffix).is_empty()
        && names::is_under(name, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_dot_and_case_do_not_hide_a_suffix() {
        let search = vec!["Tailb45a71.TS.net.".to_string()];
        assert!(is_polluted(&search, &["tailb45a71.ts.net".to_string()]));
        assert!(!is_polluted(&search, &["ts.net.example".to_string()]));
        // Label-wise: `xts.net` is not under `ts.net`.
        assert!(!is_polluted(
            &["xts.net".to_string()],
            &["ts.net".to_string()]
        ));
    }

    #[test]
    fn joined_length_counts_separators() {
        assert_eq!(joined_len(&["a".into(), "bb".into()]), 4);
        assert_eq!(joined_len(&[]), 0);
    }
}
