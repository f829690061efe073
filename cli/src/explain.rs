//! `dnspolicy explain`: the queries a resolver sends for a name and who
//! answers each, for the Corefile as given (what CoreDNS runs now), or, with
//! `--policy`, for the Corefile those policies produce.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    if args.corefile.is_none() {
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
                "--before-after needs --corefile: it compares the Corefile with and without dnspolicy's text".into(),
            ));
        }
    }
    let version = version_arg(args.coredns_version.as_deref())?;
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
        return explain_stage(args, after, version);
    }
    Ok(format!(
        "=== before: {}\n{}\n=== after: {}\n{}",
        stage_title(args, Stage::Stripped),
        explain_stage(args, Stage::Stripped, version)?,
        stage_title(args, after),
        explain_stage(args, after, version)?,
    ))
}

fn stage_title(args: &ExplainArgs, stage: Stage<'_>) -> String {
    let files: Vec<String> = [&args.corefile, &args.node_local_corefile]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    format!("{} {}", files.join(" and "), stage.describe())
}

fn explain_stage(
    args: &ExplainArgs,
    stage: Stage<'_>,
    version: CoreDnsVersion,
) -> Result<String, CliError> {
    let corefile = match &args.corefile {
        Some(path) => Some(coredns_corefile(path, &read_input(path)?, stage, version)?),
        None => None,
    };
    let cache = match &args.node_local_corefile {
        Some(path) => Some(node_local_corefile(path, &read_input(path)?, stage)?),
        None => None,
    };
    dnspolicy_explain::explain::explain_command_through(
        &args.name,
        &args.search,
        args.ndots,
        matches!(args.resolver, ResolverKind::Musl),
        version,
        &Network {
            pod_ip: args.pod_ip.unwrap_or(Network::default().pod_ip),
            cluster_dns_ips: args.cluster_dns_ips.clone(),
        },
        corefile.as_ref().map(|(c, k)| (c, k)),
        cache.as_ref().map(|(c, dns)| (c, dns.as_slice())),
    )
    .map_err(|e| CliError::Invalid(e.to_string()))
}

/// CoreDNS's Corefile at `stage`, and the coredns-custom keys it imports
/// (only the policies' keys are known: given text has none).
fn coredns_corefile(
    path: &Path,
    text: &str,
    stage: Stage<'_>,
    version: CoreDnsVersion,
) -> Result<(Corefile, BTreeMap<String, String>), CliError> {
    let invalid = |e: &dyn std::fmt::Display| CliError::Invalid(format!("{}: {e}", path.display()));
    let (text, keys) = match stage {
        Stage::AsGiven => (text.to_string(), BTreeMap::new()),
        Stage::Stripped => (
            corefile::strip(text).map_err(|e| invalid(&e))?,
            BTreeMap::new(),
        ),
        Stage::Rendered(merged) => {
            let desired = plan::desired(text, merged, Ok(version), &plan::ClusterDns::default())
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
    path: &Path,
    text: &str,
    stage: Stage<'_>,
) -> Result<(Corefile, Vec<String>), CliError> {
    let invalid = |e: &dyn std::fmt::Display| CliError::Invalid(format!("{}: {e}", path.display()));
    let text = match stage {
        Stage::AsGiven => text.to_string(),
        Stage::Stripped => corefile::strip(text).map_err(|e| invalid(&e))?,
        Stage::Rendered(merged) => nodelocal::render(text, merged).map_err(|e| invalid(&e))?,
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
