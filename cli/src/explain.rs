//! `dnspolicy explain`: the queries a resolver sends for a name and who
//! answers each, for the Corefile as given (what CoreDNS runs now), or, with
//! `--policy`, for the Corefile those policies produce.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dnspolicy_dns::corefile::{self, Corefile};
use dnspolicy_dns::nodelocal;
use dnspolicy_dns::plan;
use dnspolicy_dns::policy::{self, MergedPolicies};
use dnspolicy_dns::version::CoreDnsVersion;

use dnspolicy_explain::explain::Network;

use crate::cli::{CliError, ResolverKind, read_input, read_policies, suffix_address, version_arg};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The name the application looks up.
    pub name: String,
    /// The pod's search list, space-separated.
    #[arg(long)]
    pub search: String,
    #[arg(long, default_value_t = 5)]
    pub ndots: u8,
    #[arg(long, value_enum, default_value = "glibc")]
    pub resolver: ResolverKind,
    /// The Corefile CoreDNS runs, explained as given: dnspolicy's blocks in
    /// it, if any, count like any other line. Copy it out of the cluster with
    /// `kubectl -n kube-system get cm coredns -o jsonpath={.data.Corefile}`.
    /// Without it every query is assumed to go upstream.
    #[arg(long)]
    pub corefile: Option<PathBuf>,
    /// A ClusterDNSPolicy YAML file (repeatable): explain the Corefile these
    /// policies produce from --corefile, exactly as `render` prints it,
    /// instead of the Corefile as given.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
    /// The CoreDNS version whose behaviour to follow, e.g. 1.8.4; the newest
    /// checked when not given.
    #[arg(long)]
    pub coredns_version: Option<String>,
    /// The NodeLocal DNSCache Corefile (its ConfigMap's, as stored): the pod
    /// asks the cache first, and the cache sends the cluster domain (and any
    /// suffix it has a block for) to CoreDNS. Needs --corefile. Explained as
    /// given, or, with --policy, with the blocks the policies add.
    #[arg(long)]
    pub node_local_corefile: Option<PathBuf>,
    /// As for `render`: SUFFIX=IP[:port] for a suffix's `forwardToRef`.
    #[arg(long = "forward-ref-address", value_parser = suffix_address)]
    pub forward_ref_addresses: Vec<(String, String)>,
    /// The pod's address, for the Corefile's `acl` (a kubeadm pod address when not given).
    #[arg(long)]
    pub pod_ip: Option<std::net::IpAddr>,
    /// A cluster IP of the kube-dns Service: a `forward` to it on port 53
    /// reaches this CoreDNS again. Repeatable.
    #[arg(long = "cluster-dns-ip")]
    pub cluster_dns_ips: Vec<std::net::IpAddr>,
    /// Explain twice: first the Corefiles without dnspolicy's managed text
    /// (as before any policy), then as given (or, with --policy, as rendered).
    #[arg(long)]
    pub before_after: bool,
    /// Read what CoreDNS runs from the cluster (KUBECONFIG, as kubectl does):
    /// the ClusterDNSPolicies, their target ConfigMap's Corefile (and
    /// coredns-custom, node-local-dns or nodelocaldns beside it), the CoreDNS
    /// version from the Deployment's image unless --coredns-version, and the
    /// kube-dns Service IPs; then explain it as given. Replaces --corefile,
    /// --node-local-corefile and --policy.
    #[arg(long, conflicts_with_all = ["corefile", "node_local_corefile", "policies"])]
    pub from_cluster: bool,
}

/// A Corefile to explain and where it came from.
#[derive(Debug, Clone)]
struct Source {
    /// A file path, or `ConfigMap NAMESPACE/NAME`.
    label: String,
    text: String,
}

/// What the explanation reads: from files, or from the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    corefile: Option<Source>,
    node_local: Option<Source>,
    /// coredns-custom's keys as CoreDNS imports them, and which of them are
    /// dnspolicy's (the cluster only; files give none).
    custom_keys: BTreeMap<String, String>,
    managed_custom_keys: Vec<String>,
    version: CoreDnsVersion,
    cluster_dns_ips: Vec<std::net::IpAddr>,
    /// What was read, for the reader (the cluster only).
    header: String,
}

/// Which Corefile to explain, from the text given.
#[derive(Debug, Clone, Copy)]
enum Stage<'a> {
    /// dnspolicy's managed text removed: the Corefile before any policy.
    Stripped,
    /// Exactly the text given.
    AsGiven,
    /// The text the policies produce, as `render` prints it.
    Rendered(&'a MergedPolicies),
}

impl Stage<'_> {
    fn describe(self) -> &'static str {
        match self {
            Stage::Stripped => "without dnspolicy's managed text",
            Stage::AsGiven => "as given",
            Stage::Rendered(_) => "as the policies render it",
        }
    }
}

/// `dnspolicy explain`.
pub fn explain(args: &ExplainArgs) -> Result<String, CliError> {
    if args.corefile.is_none() && !args.from_cluster {
        if !args.policies.is_empty() {
            return Err(CliError::Invalid(
                "--policy needs --corefile: the policy edits a Corefile".into(),
            ));
        }
        if args.node_local_corefile.is_some() {
            return Err(CliError::Invalid(
                "--node-local-corefile needs --corefile: the cache sends the cluster domain to CoreDNS".into(),
            ));
        }
        if args.before_after {
            return Err(CliError::Invalid(
                "--before-after needs --corefile or --from-cluster: it compares the Corefile with and without dnspolicy's text".into(),
            ));
        }
    }
    let inputs = if args.from_cluster {
        crate::cli::runtime()?.block_on(crate::cluster::read_for_explain(args))?
    } else {
        files(args)?
    };
    let merged = if args.policies.is_empty() {
        None
    } else {
        let policies = read_policies(&args.policies, &args.forward_ref_addresses)?;
        Some(policy::merge(&policies))
    };
    let after = match &merged {
        Some(m) => Stage::Rendered(m),
        None => Stage::AsGiven,
    };
    if !args.before_after {
        return Ok(format!(
            "{}{}",
            inputs.header,
            explain_stage(args, &inputs, after)?
        ));
    }
    Ok(format!(
        "{}=== before: {}\n{}\n=== after: {}\n{}",
        inputs.header,
        stage_title(&inputs, Stage::Stripped),
        explain_stage(args, &inputs, Stage::Stripped)?,
        stage_title(&inputs, after),
        explain_stage(args, &inputs, after)?,
    ))
}

/// The inputs the files name.
fn files(args: &ExplainArgs) -> Result<Inputs, CliError> {
    let read = |path: &Option<PathBuf>| -> Result<Option<Source>, CliError> {
        path.as_ref()
            .map(|p| {
                Ok(Source {
                    label: p.display().to_string(),
                    text: read_input(p)?,
                })
            })
            .transpose()
    };
    Ok(Inputs {
        corefile: read(&args.corefile)?,
        node_local: read(&args.node_local_corefile)?,
        custom_keys: BTreeMap::new(),
        managed_custom_keys: Vec::new(),
        version: version_arg(args.coredns_version.as_deref())?,
        cluster_dns_ips: args.cluster_dns_ips.clone(),
        header: String::new(),
    })
}

/// The cluster's inputs: what `--from-cluster` read, with what it found.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cluster_inputs(
    corefile: (String, String),
    node_local: Option<(String, String)>,
    custom_keys: BTreeMap<String, String>,
    managed_custom_keys: Vec<String>,
    version: CoreDnsVersion,
    version_from: String,
    cluster_dns_ips: Vec<std::net::IpAddr>,
    policies: Vec<String>,
) -> Inputs {
    let mut header = format!("From the cluster: {}", corefile.0);
    if let Some((label, _)) = &node_local {
        header.push_str(&format!(", {label}"));
    }
    if !custom_keys.is_empty() {
        header.push_str(&format!(", coredns-custom ({} keys)", custom_keys.len()));
    }
    header.push_str(&format!("; CoreDNS {version} ({version_from})"));
    if !cluster_dns_ips.is_empty() {
        let ips: Vec<String> = cluster_dns_ips.iter().map(|ip| ip.to_string()).collect();
        header.push_str(&format!("; kube-dns {}", ips.join(" ")));
    }
    header.push_str(&format!(
        "; policies: {}\n\n",
        if policies.is_empty() {
            "none".to_string()
        } else {
            policies.join(", ")
        }
    ));
    let source = |(label, text): (String, String)| Source { label, text };
    Inputs {
        corefile: Some(source(corefile)),
        node_local: node_local.map(source),
        custom_keys,
        managed_custom_keys,
        version,
        cluster_dns_ips,
        header,
    }
}

fn stage_title(inputs: &Inputs, stage: Stage<'_>) -> String {
    let labels: Vec<&str> = [&inputs.corefile, &inputs.node_local]
        .into_iter()
        .flatten()
        .map(|s| s.label.as_str())
        .collect();
    format!("{} {}", labels.join(" and "), stage.describe())
}

fn explain_stage(
    args: &ExplainArgs,
    inputs: &Inputs,
    stage: Stage<'_>,
) -> Result<String, CliError> {
    let corefile = match &inputs.corefile {
        Some(source) => Some(coredns_corefile(source, inputs, stage)?),
        None => None,
    };
    let cache = match &inputs.node_local {
        Some(source) => Some(node_local_corefile(source, stage)?),
        None => None,
    };
    dnspolicy_explain::explain::explain_command_through(
        &args.name,
        &args.search,
        args.ndots,
        matches!(args.resolver, ResolverKind::Musl),
        inputs.version,
        &Network {
            pod_ip: args.pod_ip.unwrap_or(Network::default().pod_ip),
            cluster_dns_ips: inputs.cluster_dns_ips.clone(),
        },
        corefile.as_ref().map(|(c, k)| (c, k)),
        cache.as_ref().map(|(c, dns)| (c, dns.as_slice())),
    )
    .map_err(|e| CliError::Invalid(e.to_string()))
}

/// CoreDNS's Corefile at `stage`, and the coredns-custom keys it imports.
fn coredns_corefile(
    source: &Source,
    inputs: &Inputs,
    stage: Stage<'_>,
) -> Result<(Corefile, BTreeMap<String, String>), CliError> {
    let invalid = |e: &dyn std::fmt::Display| CliError::Invalid(format!("{}: {e}", source.label));
    let text = &source.text;
    let (text, keys) = match stage {
        Stage::AsGiven => (text.to_string(), inputs.custom_keys.clone()),
        Stage::Stripped => {
            let mut keys = inputs.custom_keys.clone();
            keys.retain(|k, _| !inputs.managed_custom_keys.contains(k));
            (corefile::strip(text).map_err(|e| invalid(&e))?, keys)
        }
        Stage::Rendered(merged) => {
            let desired = plan::desired(
                text,
                merged,
                Ok(inputs.version),
                &plan::ClusterDns {
                    service_ips: inputs.cluster_dns_ips.clone(),
                    dns_port: None,
                },
            )
            .map_err(|r| invalid(&format!("{} ({})", r.message, r.reason)))?;
            for warning in &desired.warnings {
                eprintln!("warning: {warning}");
            }
            (desired.corefile, desired.custom_keys)
        }
    };
    let parsed = corefile::parse(&text).map_err(|e| invalid(&e))?;
    Ok((parsed, keys))
}

/// The node-local Corefile at `stage`, and where it forwards the cluster domain.
fn node_local_corefile(
    source: &Source,
    stage: Stage<'_>,
) -> Result<(Corefile, Vec<String>), CliError> {
    let invalid = |e: &dyn std::fmt::Display| CliError::Invalid(format!("{}: {e}", source.label));
    let text = match stage {
        Stage::AsGiven => source.text.clone(),
        Stage::Stripped => corefile::strip(&source.text).map_err(|e| invalid(&e))?,
        Stage::Rendered(merged) => {
            nodelocal::render(&source.text, merged).map_err(|e| invalid(&e))?
        }
    };
    let parsed = corefile::parse(&text).map_err(|e| invalid(&e))?;
    // The shape is recognised without dnspolicy's blocks, as `render` does.
    let layout = corefile::strip(&text)
        .ok()
        .and_then(|base| corefile::parse(&base).ok())
        .and_then(|base| nodelocal::recognise(&base))
        .ok_or_else(|| invalid(&nodelocal::NodeLocalError::NotNodeLocal))?;
    Ok((parsed, layout.cluster_dns))
}
