//! NodeLocal DNSCache: the node-local cache's Corefile, recognised by its
//! shape and edited so that every foreign suffix goes to CoreDNS.
//!
//! Facts this rests on (k8s.io/dns `cmd/node-cache`, and the real CoreDNS in
//! tests/nodelocal_coredns.rs):
//! - The cache forwards only the cluster domain and the reverse zones to the
//!   cluster DNS; its `.` block sends everything else to the node's upstream,
//!   so `frigate....svc.cluster.local.<suffix>` never reaches CoreDNS and no
//!   stanza there can help. A server block for the suffix in the cache,
//!   forwarding to the cluster DNS, hands those names to CoreDNS, which applies
//!   the policy: the DNS contract lives in one place.
//! - node-cache compiles in only [`NODE_CACHE_PLUGINS`]: no `view`, no
//!   `kubernetes`, no `file`. A Corefile naming another plugin does not start.
//! - node-cache rewrites its Corefile when the ConfigMap changes; CoreDNS's
//!   `reload` plugin (or, with `-reloadwithsignal`, node-cache's SIGUSR1)
//!   then loads it, so an edit needs no rollout of the DaemonSet.
//! - At start-up (and on every change of its ConfigMap, read every 10 s) node-cache
//!   copies the ConfigMap's Corefile, replacing `__PILLAR__CLUSTER__DNS__` with the
//!   ClusterIP of its `-upstreamsvc` Service, `__PILLAR__UPSTREAM__SERVERS__`
//!   with `/etc/resolv.conf` (or kube-dns's upstreamNameservers),
//!   `__PILLAR__LOCAL__DNS__` with its `-localip` addresses, and deleting
//!   `__PILLAR__DNS__SERVER__` (app/configmap.go). A block copied from the
//!   cluster-domain block, placeholders and all, therefore listens and forwards
//!   exactly where that block does. The upstream addon's instructions replace
//!   `__PILLAR__LOCAL__DNS__`, `__PILLAR__DNS__DOMAIN__` and, with iptables
//!   kube-proxy, `__PILLAR__DNS__SERVER__` (the kube-dns IP) before applying it.
//!   Kubespray renders every value itself and runs node-cache with
//!   `-conf /etc/coredns/Corefile`, so nothing is substituted there.
//! - Blocks bind the same addresses, so they form one server and routing by the
//!   longest zone match applies across them.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::corefile::{self, Corefile, CorefileError, Directive, ManagedText, ServerBlock, token};
use crate::names::{NameError, check_dns_name, nested};
use crate::policy::{MergedPolicies, SuffixRule};
use crate::stanza::DEFAULT_DNS_PORT;

/// The plugins node-cache compiles in, by directive name (the metrics
/// plugin's directive is `prometheus`): k8s.io/dns `cmd/node-cache/main.go`
/// in release 1.26.7 (2025-10, CoreDNS 1.13.1). Older releases lack
/// `bufsize` and `dns64`, master adds `timeouts`; the blocks dnspolicy adds
/// use only plugins every release has.
pub const NODE_CACHE_PLUGINS: &[&str] = &[
    "bind",
    "bufsize",
    "cache",
    "debug",
    "dns64",
    "errors",
    "forward",
    "health",
    "hosts",
    "loadbalance",
    "log",
    "loop",
    "prometheus",
    "pprof",
    "reload",
    "rewrite",
    "template",
    "trace",
    "whoami",
];

/// node-cache writes the cluster DNS Service's ClusterIP here at start-up.
pub const CLUSTER_DNS_PLACEHOLDER: &str = "__PILLAR__CLUSTER__DNS__";
/// node-cache writes its `-localip` addresses here at start-up.
pub const LOCAL_DNS_PLACEHOLDER: &str = "__PILLAR__LOCAL__DNS__";
/// node-cache deletes this at start-up; the addon's iptables-mode instructions
/// replace it with the kube-dns Service IP before the ConfigMap is applied.
pub const DNS_SERVER_PLACEHOLDER: &str = "__PILLAR__DNS__SERVER__";

/// Directives of the cluster-domain block that every added block repeats,
/// besides `forward`: the same listeners, cache, logging, loop check, reload
/// and metrics. `health` is left out (one listener per process, it would
/// clash), and so is anything that could answer suffix names in the cache
/// (`hosts`, `rewrite`, `template`): CoreDNS answers them.
const REPEATED: &[&str] = &["errors", "cache", "reload", "loop", "bind", "prometheus"];

/// What the cache's Corefile looks like to dnspolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocalLayout {
    /// Index into `Corefile::blocks` of the block that forwards the cluster
    /// domain to the cluster DNS; added blocks copy its shape.
    pub cluster_block: usize,
    /// Its zones, absolute and lower-case: `cluster.local.`, or
    /// `__pillar__dns__domain__.` where the addon's template is not filled in.
    pub cluster_zones: Vec<String>,
    /// The port of its first key; `None` when written without one.
    pub port: Option<u16>,
    /// Its forward targets as written: `__PILLAR__CLUSTER__DNS__` or addresses.
    pub cluster_dns: Vec<String>,
    /// It forwards with `force_tcp`.
    pub force_tcp: bool,
    /// Index of the `.` block, which sends everything else upstream.
    pub dot_block: usize,
    /// The `.` block's forward targets as written (`__PILLAR__UPSTREAM__SERVERS__`, `/etc/resolv.conf`, ...).
    pub upstream: Vec<String>,
    /// The cluster-domain block's `bind` arguments as written.
    pub bind: Vec<String>,
    pub listen: Listen,
}

/// Where pods' queries reach the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Only link-local addresses (`169.254.20.10`): pods use the cache when
    /// kubelet's `--cluster-dns` names it.
    LinkLocal(Vec<IpAddr>),
    /// Also the kube-dns Service IP: the cache takes pods' queries to the
    /// Service on every node, whatever kubelet says.
    Interception {
        link_local: Vec<IpAddr>,
        service: Vec<IpAddr>,
    },
    /// The addresses are filled in when node-cache starts
    /// (`__PILLAR__LOCAL__DNS__` becomes its `-localip` flag): the DaemonSet's
    /// arguments say which mode it is.
    AtStartup { bind: Vec<String> },
}

impl Listen {
    /// `LinkLocal`, `Interception` or `SetAtStartup`: the mode as `.status` names it.
    pub fn mode(&self) -> &'static str {
        match self {
            Listen::LinkLocal(_) => "LinkLocal",
            Listen::Interception { .. } => "Interception",
            Listen::AtStartup { .. } => "SetAtStartup",
        }
    }

    /// The addresses it listens on, as written (placeholders when set at start-up).
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Listen::LinkLocal(ips) => ips.iter().map(ToString::to_string).collect(),
            Listen::Interception {
                link_local,
                service,
            } => service
                .iter()
                .chain(link_local)
                .map(ToString::to_string)
                .collect(),
            Listen::AtStartup { bind } => bind.clone(),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ips: &[IpAddr]| {
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Listen::LinkLocal(ips) => write!(f, "link-local, on {}", list(ips)),
            Listen::Interception {
                link_local,
                service,
            } if link_local.is_empty() => {
                write!(f, "intercepting the kube-dns Service IP {}", list(service))
            }
            Listen::Interception {
                link_local,
                service,
            } => write!(
                f,
                "intercepting the kube-dns Service IP {}, and on {}",
                list(service),
                list(link_local)
            ),
            Listen::AtStartup { .. } => write!(
                f,
                "on the addresses node-cache fills in from its -localip flag at start-up"
            ),
        }
    }
}

/// Why the policies cannot be written into a node-local Corefile. Nothing is
/// written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeLocalError {
    #[error(transparent)]
    Corefile(#[from] CorefileError),
    #[error(
        "not a NodeLocal DNSCache Corefile: dnspolicy looks for a block that forwards the cluster domain to the cluster DNS (`forward . __PILLAR__CLUSTER__DNS__`, or the address the in-addr.arpa block forwards to) and binds its listen addresses, a `.` block that forwards elsewhere, and no `kubernetes` plugin"
    )]
    NotNodeLocal,
    #[error(
        "suffix {suffix:?} (policy {policy:?}): the node-local cache already has server block {key:?} (line {line}), which serves names in or around the suffix; remove that block (declare its resolvers as forwardTo) or drop the suffix"
    )]
    ZoneTaken {
        suffix: String,
        policy: String,
        key: String,
        line: usize,
    },
    #[error(
        "the node-local cache sends {zones} to the cluster DNS (line {line}), not the policies' cluster domain {cluster_domain:?}; set spec.clusterDomain to the cluster's domain or fix that block"
    )]
    ClusterDomainNotForwarded {
        cluster_domain: String,
        zones: String,
        line: usize,
    },
    #[error("{what} {name:?} (policy {policy:?}) cannot be written into a Corefile: {message}")]
    InvalidName {
        what: &'static str,
        name: String,
        policy: String,
        message: NameError,
    },
}

/// The node-local cache's layout, or `None` when the Corefile does not have
/// its shape: no `kubernetes` plugin anywhere; a block that forwards the
/// cluster domain to the cluster DNS (`__PILLAR__CLUSTER__DNS__`, or where the
/// `in-addr.arpa` block forwards) and binds addresses; a `.` block that
/// forwards somewhere else. Pass the Corefile with dnspolicy's text stripped.
pub fn recognise(corefile: &Corefile) -> Option<NodeLocalLayout> {
    let blocks = &corefile.blocks;
    if blocks
        .iter()
        .any(|b| b.directives.iter().any(|d| d.name == "kubernetes"))
    {
        return None;
    }
    let dot = corefile::dot_server(corefile).ok()?;
    let (upstream, _) = forward_of(&blocks[dot.index])?;
    let on_port = |b: &ServerBlock| {
        b.keys.iter().all(|k| {
            matches!(k.scheme.as_deref(), None | Some("dns"))
                && k.port.unwrap_or(DEFAULT_DNS_PORT) == dot.port
        })
    };
    let others = || {
        blocks
            .iter()
            .enumerate()
            .filter(move |(i, b)| *i != dot.index && on_port(b))
    };
    // The cluster DNS: the placeholder where the addon's template keeps it,
    // else where the reverse zones go (both templates send them to it).
    let cluster_dns = others()
        .filter_map(|(_, b)| forward_of(b))
        .map(|(targets, _)| targets)
        .find(|t| t.iter().any(|a| a == CLUSTER_DNS_PLACEHOLDER))
        .or_else(|| {
            others()
                .find(|(_, b)| b.keys.iter().any(|k| k.zone == "in-addr.arpa."))
                .and_then(|(_, b)| forward_of(b))
                .map(|(targets, _)| targets)
        })?;
    if cluster_dns == upstream {
        return None;
    }
    let (cluster_block, block, force_tcp) = others()
        .filter(|(_, b)| b.keys.iter().all(|k| !is_reverse(&k.zone) && k.zone != "."))
        .find_map(|(i, b)| match forward_of(b) {
            Some((targets, tcp)) if targets == cluster_dns => Some((i, b, tcp)),
            _ => None,
        })?;
    let bind: Vec<String> = block
        .directives
        .iter()
        .filter(|d| d.name == "bind")
        .flat_map(|d| d.args.iter().cloned())
        .collect();
    if bind.is_empty() {
        return None;
    }
    Some(NodeLocalLayout {
        cluster_block,
        cluster_zones: block.keys.iter().map(|k| k.zone.clone()).collect(),
        port: block.keys[0].port,
        cluster_dns,
        force_tcp,
        dot_block: dot.index,
        upstream,
        listen: listen(&bind),
        bind,
    })
}

/// The first `forward . TO...` of a block: its targets and whether it forces TCP.
fn forward_of(block: &ServerBlock) -> Option<(Vec<String>, bool)> {
    let forward = block
        .directives
        .iter()
        .find(|d| d.name == "forward" && d.args.len() >= 2 && d.args[0] == ".")?;
    let force_tcp = forward.block.iter().any(|d| d.name == "force_tcp");
    Some((forward.args[1..].to_vec(), force_tcp))
}

fn is_reverse(zone: &str) -> bool {
    ["in-addr.arpa.", "ip6.arpa."]
        .iter()
        .any(|r| zone == *r || zone.ends_with(&format!(".{r}")))
}

fn listen(bind: &[String]) -> Listen {
    let mut link_local = Vec::new();
    let mut service = Vec::new();
    for arg in bind.iter().filter(|a| *a != DNS_SERVER_PLACEHOLDER) {
        match arg.parse::<IpAddr>() {
            Ok(ip) if is_link_local(ip) => link_local.push(ip),
            Ok(ip) => service.push(ip),
            Err(_) => {
                return Listen::AtStartup {
                    bind: bind.to_vec(),
                };
            }
        }
    }
    if service.is_empty() {
        Listen::LinkLocal(link_local)
    } else {
        Listen::Interception {
            link_local,
            service,
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// `corefile_text` with dnspolicy's blocks for the merged policies: one per
/// suffix, between dnspolicy's markers at the end, sending every name in the
/// suffix to the cluster DNS the way the cluster-domain block does. No
/// policies: the text with dnspolicy's regions removed, byte for byte.
pub fn render(corefile_text: &str, merged: &MergedPolicies) -> Result<String, NodeLocalError> {
    let base = corefile::strip(corefile_text)?;
    if merged.rules.is_empty() {
        return Ok(corefile::render(&base, &ManagedText::default())?);
    }
    let parsed = corefile::parse(&base)?;
    let layout = recognise(&parsed).ok_or(NodeLocalError::NotNodeLocal)?;
    let managed = managed_text(&parsed, &layout, merged)?;
    Ok(corefile::render(&base, &managed)?)
}

/// The blocks `render` places, for a Corefile `recognise` accepted.
pub fn managed_text(
    corefile: &Corefile,
    layout: &NodeLocalLayout,
    merged: &MergedPolicies,
) -> Result<ManagedText, NodeLocalError> {
    let cluster = &corefile.blocks[layout.cluster_block];
    check_cluster_domain(&merged.cluster_domain, layout, cluster)?;
    let mut blocks = Vec::new();
    for rule in &merged.rules {
        check(rule, corefile)?;
        blocks.push(server_block(rule, cluster, layout));
    }
    Ok(ManagedText {
        dot_block: String::new(),
        server_blocks: blocks.join("\n"),
    })
}

/// The policies' cluster domain must be what the cache sends to the cluster
/// DNS (or the addon's unfilled `__PILLAR__DNS__DOMAIN__`).
fn check_cluster_domain(
    cluster_domain: &str,
    layout: &NodeLocalLayout,
    cluster: &ServerBlock,
) -> Result<(), NodeLocalError> {
    let zone = format!("{cluster_domain}.");
    if cluster_domain.is_empty()
        || layout
            .cluster_zones
            .iter()
            .any(|z| *z == zone || z.starts_with("__pillar__"))
    {
        return Ok(());
    }
    Err(NodeLocalError::ClusterDomainNotForwarded {
        cluster_domain: cluster_domain.to_string(),
        zones: layout.cluster_zones.join(" "),
        line: cluster.span.line,
    })
}

fn check(rule: &SuffixRule, corefile: &Corefile) -> Result<(), NodeLocalError> {
    // Validation guarantees the name; checked again because it becomes a server key.
    check_dns_name(&rule.suffix).map_err(|message| NodeLocalError::InvalidName {
        what: "suffix",
        name: rule.suffix.clone(),
        policy: rule.policy.clone(),
        message,
    })?;
    let zone = format!("{}.", rule.suffix);
    for block in &corefile.blocks {
        for key in block.keys.iter().filter(|k| k.zone != ".") {
            if nested(&zone, &key.zone) {
                return Err(NodeLocalError::ZoneTaken {
                    suffix: rule.suffix.clone(),
                    policy: rule.policy.clone(),
                    key: key.raw.clone(),
                    line: block.span.line,
                });
            }
        }
    }
    Ok(())
}

/// `S:port { ... }`: the cluster-domain block's repeated directives in its
/// order, its `forward` pointed at the same cluster DNS.
fn server_block(rule: &SuffixRule, cluster: &ServerBlock, layout: &NodeLocalLayout) -> String {
    // No `name:` shape: the editor takes `# dnspolicy:` for a marker.
    let mut out = format!(
        "# {} (policy {}): every name in it goes to the cluster DNS, which applies the policy\n",
        rule.suffix, rule.policy
    );
    match layout.port {
        Some(port) => writeln!(out, "{}:{port} {{", rule.suffix).unwrap(),
        None => writeln!(out, "{} {{", rule.suffix).unwrap(),
    }
    let mut forwarded = false;
    for directive in &cluster.directives {
        if REPEATED.contains(&directive.name.as_str()) {
            write_directive(&mut out, directive, 1);
        } else if directive.name == "forward" && !forwarded {
            forwarded = true;
            let targets: Vec<String> = layout.cluster_dns.iter().map(|t| token(t)).collect();
            write!(out, "    forward . {}", targets.join(" ")).unwrap();
            out.push_str(if layout.force_tcp {
                " {\n        force_tcp\n    }\n"
            } else {
                "\n"
            });
        }
    }
    out.push_str("}\n");
    out
}

fn write_directive(out: &mut String, directive: &Directive, depth: usize) {
    let indent = "    ".repeat(depth);
    out.push_str(&indent);
    out.push_str(&directive.name);
    for arg in &directive.args {
        out.push(' ');
        out.push_str(&token(arg));
    }
    if directive.block.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    for inner in &directive.block {
        write_directive(out, inner, depth + 1);
    }
    writeln!(out, "{indent}}}").unwrap();
}

mod path;
#[cfg(test)]
mod tests;

pub use path::{
    ADDON_MANAGER_MODE, CONFIG_MAPS, Coverage, NodeLocalPath, NodeLocalPlan, plan_path,
};
