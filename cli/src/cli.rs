//! The `dnspolicy` command line: the offline commands (`crd`, `render`,
//! `explain`) and `status`. The controller is `dnspolicy-operator`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use dnspolicy_crd::ClusterDNSPolicy;
use kube::ResourceExt;

use dnspolicy_dns::corefile;
use dnspolicy_dns::nodelocal;
use dnspolicy_dns::plan;
use dnspolicy_dns::policy::{self, ValidPolicy};
use dnspolicy_dns::version::CoreDnsVersion;

#[derive(Debug, Parser)]
#[command(
    name = "dnspolicy",
    version,
    about = "Keeps foreign DNS search suffixes from breaking cluster DNS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ClusterDNSPolicy CRD as YAML.
    Crd,
    /// Print the Corefile the policies produce; with no policy, the Corefile
    /// with dnspolicy's managed text removed.
    Render(RenderArgs),
    /// Show the queries a resolver sends for NAME, who answers each, and the
    /// worst-case time: for the Corefile as given, or with --policy for the
    /// Corefile the policies produce (as `render` prints it).
    Explain(crate::explain::ExplainArgs),
    /// Show policies and polluted pods by namespace, from the cluster.
    Status,
    /// Print the kustomize overlay that installs the manifests with the image
    /// pinned by digest (release/kustomization.yaml; `just
    /// release-overlay IMAGE@sha256:...` writes it there), or with --check,
    /// check that an overlay pins it.
    ReleaseOverlay(ReleaseOverlayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReleaseOverlayArgs {
    /// The released image by digest: REGISTRY/NAME@sha256:<64 hex digits>
    /// (a tag is refused: it can be moved after the release).
    #[arg(required_unless_present = "check", conflicts_with = "check")]
    pub image: Option<String>,
    /// The kustomize base, relative to the overlay's directory.
    #[arg(long, default_value = "../manifests/")]
    pub base: String,
    /// Check this kustomization.yaml instead: it must pin the base's image
    /// by digest (no newTag). Prints the pinned reference.
    #[arg(long)]
    pub check: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RenderOutput {
    /// The main Corefile.
    Corefile,
    /// The coredns-custom keys, where the Corefile imports them (k3s, AKS).
    Custom,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The Corefile to edit; `-` reads standard input.
    #[arg(long)]
    pub corefile: PathBuf,
    /// A ClusterDNSPolicy YAML file (several documents allowed); repeatable.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
    /// The CoreDNS version to render for, e.g. 1.12.1.
    #[arg(long)]
    pub coredns_version: Option<String>,
    #[arg(long, value_enum, default_value = "corefile")]
    pub output: RenderOutput,
    /// A cluster IP of the cluster DNS Service (kube-dns); forwardTo may not
    /// name it. Repeatable.
    #[arg(long = "cluster-dns-ip")]
    pub cluster_dns_ips: Vec<std::net::IpAddr>,
    /// CoreDNS's `-dns.port`, when it runs with one: the port of server keys without one.
    #[arg(long)]
    pub dns_port: Option<u16>,
    /// The address a suffix's `forwardToRef` resolves to in the cluster, as
    /// SUFFIX=IP or SUFFIX=IP:port (`kubectl get dnsconfig NAME -o
    /// jsonpath={.status.nameserver.ip}`). A reference is read from the
    /// cluster, so offline it needs this. Repeatable.
    #[arg(long = "forward-ref-address", value_parser = suffix_address)]
    pub forward_ref_addresses: Vec<(String, String)>,
}

pub(crate) fn suffix_address(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((suffix, address)) if !suffix.is_empty() && !address.is_empty() => {
            Ok((suffix.to_string(), address.to_string()))
        }
        _ => Err(format!("{text:?} is not SUFFIX=ADDRESS")),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ResolverKind {
    Glibc,
    Musl,
}

#[derive(Debug)]
pub enum CliError {
    /// Bad input: exit 2.
    Invalid(String),
    /// Anything else: exit 1.
    Failed(String),
}

pub fn main(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crd => {
            print!("{}", dnspolicy_crd::crd_yaml());
            Ok(())
        }
        Command::Render(args) => {
            print!("{}", render(&args)?);
            Ok(())
        }
        Command::Explain(args) => {
            print!("{}", crate::explain::explain(&args)?);
            Ok(())
        }
        Command::Status => runtime()?.block_on(crate::status::print()),
        Command::ReleaseOverlay(args) => {
            print!("{}", release_overlay(&args)?);
            Ok(())
        }
    }
}

fn release_overlay(args: &ReleaseOverlayArgs) -> Result<String, CliError> {
    use crate::release;
    if let Some(path) = &args.check {
        let pinned = release::check_overlay(&read_input(path)?)
            .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))?;
        return Ok(format!("{pinned}\n"));
    }
    let image = args.image.as_deref().unwrap_or_default();
    let pinned = release::parse_digest_ref(image).map_err(|e| CliError::Invalid(e.to_string()))?;
    Ok(release::overlay(&pinned, &args.base))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

pub(crate) fn read_input(path: &Path) -> Result<String, CliError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Invalid(format!("standard input: {e}")))?;
        return Ok(text);
    }
    fs::read_to_string(path).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

/// Reads and validates every policy in the files, naming file, document,
/// line and field in errors.
pub fn read_policies(
    paths: &[PathBuf],
    forward_ref_addresses: &[(String, String)],
) -> Result<Vec<ValidPolicy>, CliError> {
    let addresses: std::collections::BTreeMap<String, String> =
        forward_ref_addresses.iter().cloned().collect();
    let mut valid = Vec::new();
    for path in paths {
        let text = read_input(path)?;
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize_from(document).map_err(|e| {
                CliError::Invalid(format!("{}: {}", path.display(), yaml_error(&e)))
            })?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if kind != "ClusterDNSPolicy" {
                return Err(CliError::Invalid(format!(
                    "{} (document {}): kind is {kind:?}, not ClusterDNSPolicy",
                    path.display(),
                    i + 1
                )));
            }
            let policy: ClusterDNSPolicy = serde_yaml::from_value(value).map_err(|e| {
                CliError::Invalid(format!(
                    "{} (document {}): not a valid ClusterDNSPolicy: {e}",
                    path.display(),
                    i + 1
                ))
            })?;
            let name = policy.name_any();
            let spec = policy::resolve_forward_refs(&policy.spec, &addresses);
            if let Some(f) = policy.spec.foreign_suffixes.iter().find(|f| {
                f.forward_to_ref.is_some()
                    && f.forward_to.is_empty()
                    && !addresses.contains_key(&f.suffix)
            }) {
                return Err(CliError::Invalid(format!(
                    "{}: ClusterDNSPolicy {name:?}: {:?} has forwardToRef, which is read from the cluster; give its address with --forward-ref-address {}=IP",
                    path.display(),
                    f.suffix,
                    f.suffix
                )));
            }
            let v = policy::validate(&name, &spec).map_err(|e| {
                CliError::Invalid(format!(
                    "{}: ClusterDNSPolicy {name:?}: {e}",
                    path.display()
                ))
            })?;
            valid.push(v);
        }
    }
    Ok(valid)
}

fn yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
        None => e.to_string(),
    }
}

trait DeserializeFrom: Sized {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error>;
}

impl DeserializeFrom for serde_yaml::Value {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error> {
        serde::Deserialize::deserialize(d)
    }
}

pub(crate) fn version_arg(text: Option<&str>) -> Result<CoreDnsVersion, CliError> {
    match text {
        Some(t) => CoreDnsVersion::parse(t)
            .map_err(|e| CliError::Invalid(format!("--coredns-version: {e}"))),
        None => Ok(CoreDnsVersion::NEWEST_CHECKED),
    }
}

/// `dnspolicy render`: the same computation the controller makes.
pub fn render(args: &RenderArgs) -> Result<String, CliError> {
    let text = read_input(&args.corefile)?;
    let policies = read_policies(&args.policies, &args.forward_ref_addresses)?;
    let merged = policy::merge(&policies);
    if let Some(c) = merged.conflicts.first() {
        return Err(CliError::Invalid(format!(
            "ClusterDNSPolicy {:?} conflicts: {}",
            c.policy, c.message
        )));
    }
    if let Some(node_local) = render_node_local(args, &text, &merged)? {
        return Ok(node_local);
    }
    let version = version_arg(args.coredns_version.as_deref())?;
    let cluster_dns = plan::ClusterDns {
        service_ips: args.cluster_dns_ips.clone(),
        dns_port: args.dns_port,
    };
    let desired = plan::desired(&text, &merged, Ok(version), &cluster_dns).map_err(|r| {
        CliError::Invalid(format!(
            "{}: {} ({})",
            args.corefile.display(),
            r.message,
            r.reason
        ))
    })?;
    for warning in &desired.warnings {
        eprintln!("warning: {warning}");
    }
    match args.output {
        RenderOutput::Corefile => {
            if !desired.custom_keys.is_empty() {
                eprintln!(
                    "note: {} imports coredns-custom; dnspolicy writes its stanzas there and leaves this Corefile alone (see --output custom)",
                    args.corefile.display()
                );
            }
            Ok(desired.corefile)
        }
        RenderOutput::Custom => Ok(desired
            .custom_keys
            .iter()
            .map(|(k, v)| format!("# coredns-custom key {k}\n{v}"))
            .collect()),
    }
}

/// `render` for a NodeLocal DNSCache Corefile: a block per suffix that sends
/// it to the cluster DNS, where CoreDNS applies the policies. `None` for any
/// other Corefile.
fn render_node_local(
    args: &RenderArgs,
    text: &str,
    merged: &policy::MergedPolicies,
) -> Result<Option<String>, CliError> {
    let layout = corefile::strip(text)
        .ok()
        .and_then(|base| corefile::parse(&base).ok())
        .and_then(|parsed| nodelocal::recognise(&parsed));
    let Some(layout) = layout else {
        return Ok(None);
    };
    let rendered = nodelocal::render(text, merged)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", args.corefile.display())))?;
    if !merged.rules.is_empty() {
        eprintln!(
            "note: {} is a NodeLocal DNSCache Corefile (listening {}); each suffix gets a block that sends it to the cluster DNS, so CoreDNS's own Corefile needs the same policies",
            args.corefile.display(),
            layout.listen
        );
    }
    Ok(Some(match args.output {
        RenderOutput::Corefile => rendered,
        // node-cache imports no customisation ConfigMap
        RenderOutput::Custom => String::new(),
    }))
}

/// A client as every dnspolicy binary makes one (`dnspolicy_crd::client`).
pub async fn client() -> Result<kube::Client, CliError> {
    dnspolicy_crd::client::connect()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}
