//! `ClusterDNSPolicy` (`dnspolicy.dev/v1alpha1`): the API users `kubectl apply`.
//!
//! The schema carries what admission can check (sizes, shapes, CEL); the
//! operator validates every value again before anything reaches a Corefile
//! (`dnspolicy::policy::validate`), because CRD schemas can be bypassed by an
//! older CRD version or a hand-installed copy.

use std::collections::BTreeMap;

pub mod vocabulary;

#[cfg(feature = "kube")]
pub mod client;

#[cfg(feature = "kube")]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
#[cfg(feature = "kube")]
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "dnspolicy.dev";
pub const VERSION: &str = "v1alpha1";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const MAX_SUFFIXES: usize = 32;
pub const MAX_FORWARD_TARGETS: usize = 15;

/// A DNS name label by label: lower-case letters, digits, hyphens, underscores
/// (seen in corporate AD suffixes); no leading or trailing dot. The operator
/// re-checks label lengths and the 253-byte total.
pub const DNS_NAME_PATTERN: &str =
    r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$";

/// A forward target as the schema admits it: `IPv4`, `IPv4:port`, an IPv6
/// address, or `[IPv6]:port`. The operator parses it exactly and refuses
/// loopback, unspecified and link-local addresses and the cluster DNS IPs.
pub const FORWARD_TARGET_PATTERN: &str = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}(:[0-9]{1,5})?|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*|\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]:[0-9]{1,5})$";

/// Declares the foreign search suffixes that nodes leak into pods, and what
/// CoreDNS should do with queries that carry them.
// The pure DNS core reads the spec without kube (feature `kube` off); the
// Kubernetes object, its status and the CRD exist only with the feature on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[cfg_attr(feature = "kube", derive(CustomResource, KubeSchema))]
#[cfg_attr(not(feature = "kube"), derive(JsonSchema))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "dnspolicy.dev",
        version = "v1alpha1",
        kind = "ClusterDNSPolicy",
        shortname = "cdp",
        status = "ClusterDNSPolicyStatus",
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Suffixes","type":"string","jsonPath":".spec.foreignSuffixes[*].suffix"}"#,
        printcolumn = r#"{"name":"Polluted","type":"integer","jsonPath":".status.pods.polluted"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "kube", x_kube(validation = Rule::new("self.foreignSuffixes.all(f, f.suffix != self.clusterDomain && !f.suffix.endsWith('.' + self.clusterDomain) && !self.clusterDomain.endsWith('.' + f.suffix))").message("spec.foreignSuffixes: a suffix may not be the cluster domain, a name under it, or a parent of it")))]
#[cfg_attr(feature = "kube", x_kube(validation = Rule::new("self.foreignSuffixes.all(f, self.foreignSuffixes.exists_one(g, g.suffix == f.suffix))").message("spec.foreignSuffixes: each suffix may appear once")))]
#[cfg_attr(feature = "kube", x_kube(validation = Rule::new("self.foreignSuffixes.all(f, !(has(f.forwardTo) && size(f.forwardTo) > 0 && has(f.forwardToRef)))").message("spec.foreignSuffixes: give a suffix forwardTo (literal addresses) or forwardToRef (an object that publishes the address), not both")))]
#[cfg_attr(feature = "kube", x_kube(validation = Rule::new("self.foreignSuffixes.all(f, !has(f.forwardToRef) || (f.forwardToRef.kind == 'Service') == has(f.forwardToRef.namespace))").message("spec.foreignSuffixes[].forwardToRef: a Service reference needs a namespace; a DNSConfig (cluster-scoped) takes none")))]
pub struct ClusterDNSPolicySpec {
    /// The cluster's DNS domain (kubelet `--cluster-domain`).
    #[serde(default = "default_cluster_domain")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_NAME_PATTERN))]
    pub cluster_domain: String,

    /// The suffixes nodes add to pods' search lists. 1 to 32 entries.
    #[schemars(length(min = 1, max = 32))]
    pub foreign_suffixes: Vec<ForeignSuffix>,

    /// Which CoreDNS to configure. Defaults fit kubeadm, EKS, k3s and AKS.
    /// Immutable: a changed target would orphan the stanzas in the old one;
    /// delete the policy (which restores that Corefile) and create a new one.
    #[serde(default)]
    #[cfg_attr(feature = "kube", x_kube(validation = Rule::new("self == oldSelf").message("spec.target is immutable: delete this policy (its Corefile is restored) and create one for the new target")))]
    pub target: CoreDnsTarget,

    /// How CoreDNS picks up a new Corefile.
    #[serde(default)]
    pub rollout: RolloutMode,

    /// Nodes assumed to carry every declared suffix when no node agent
    /// publishes their search list. Empty: no node is assumed polluted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

fn default_cluster_domain() -> String {
    DEFAULT_CLUSTER_DOMAIN.to_string()
}

/// One foreign search suffix and how queries carrying it are answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForeignSuffix {
    /// The suffix as it appears in search lists, e.g. `tailb45a71.ts.net`.
    /// Lower-case, no trailing dot, not the root.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_NAME_PATTERN))]
    pub suffix: String,

    /// Rewrite: answer `Q.<suffix>` as `Q` (mapped back). NXDomain: answer NXDOMAIN.
    #[serde(default)]
    pub action: SuffixAction,

    /// Names with at most this many labels before the suffix are real hosts
    /// in it (`myhost.tailb45a71.ts.net`) and still resolve.
    #[serde(default = "default_host_labels")]
    #[schemars(range(min = 0, max = 8))]
    pub host_labels: u8,

    /// Resolvers for real hosts in the suffix: IP or IP:port (IPv6 as
    /// `[addr]:port`). Empty: real hosts resolve exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 15), inner(regex(pattern = FORWARD_TARGET_PATTERN)))]
    pub forward_to: Vec<String>,

    /// Instead of `forwardTo`: the object that publishes the resolver for
    /// real hosts, read on every reconcile and watched, so a changed
    /// address is followed. Not together with `forwardTo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to_ref: Option<ForwardToRef>,
}

/// A resolver named by the object that publishes its address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardToRef {
    /// `DNSConfig`: Tailscale's operator (`tailscale.com/v1alpha1`,
    /// cluster-scoped); its `status.nameserver.ip` is the in-cluster
    /// nameserver for the tailnet. `Service`: its ClusterIP.
    pub kind: ForwardRefKind,
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Service's namespace; a DNSConfig takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// The port the resolver answers on (default 53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

impl ForwardToRef {
    /// The port queries go to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(53)
    }
}

impl std::fmt::Display for ForwardToRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// What kind of object a `forwardToRef` names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ForwardRefKind {
    /// Tailscale's `DNSConfig` (`tailscale.com/v1alpha1`): `status.nameserver.ip`.
    DNSConfig,
    /// A `Service`: its ClusterIP.
    Service,
}

fn default_host_labels() -> u8 {
    1
}

/// What a search artifact under the suffix gets: `Rewrite` (default) answers
/// `Q.<suffix>` as `Q` would be answered, mapped back; `NXDomain` answers
/// NXDOMAIN at once, so the resolver moves on to the next search entry.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum SuffixAction {
    /// Answer `Q.<suffix>` as `Q`, with the names mapped back.
    #[default]
    Rewrite,
    /// Answer NXDOMAIN.
    NXDomain,
}

/// The CoreDNS ConfigMap and Deployment to manage.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct CoreDnsTarget {
    /// Namespace of the CoreDNS ConfigMap and Deployment.
    #[serde(default = "default_target_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The ConfigMap holding the Corefile (key `Corefile`).
    #[serde(default = "default_target_name")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// The CoreDNS Deployment to roll.
    #[serde(default = "default_target_name")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
}

impl Default for CoreDnsTarget {
    fn default() -> Self {
        Self {
            namespace: default_target_namespace(),
            config_map: default_target_name(),
            deployment: default_target_name(),
        }
    }
}

fn default_target_namespace() -> String {
    "kube-system".to_string()
}

fn default_target_name() -> String {
    "coredns".to_string()
}

/// How CoreDNS picks up a new Corefile: `Restart` (default) rolls the
/// Deployment like `kubectl rollout restart`; `None` leaves it to CoreDNS's
/// `reload` plugin.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutMode {
    /// Annotate the Deployment's pod template so it rolls, like `kubectl rollout restart`.
    #[default]
    Restart,
    /// Only write the Corefile; CoreDNS's `reload` plugin picks it up.
    None,
}

#[cfg(feature = "kube")]
/// What the operator observed and did. Conditions follow kstatus so Flux and
/// Argo CD read health: `Ready`, `Reconciling`, `Stalled`, plus
/// `CorefileApplied` and `RolledOut`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// A policy the operator has not written yet reads `observedGeneration: 0`
// (the apiserver defaults it): without it kstatus, and so Flux's `wait`,
// calls a status-less object Current, Ready before anything ran.
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct ClusterDNSPolicyStatus {
    /// The `metadata.generation` this status describes; equal to it once the
    /// operator has acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every lookup the policy covers works), `Reconciling` (CoreDNS
    /// is rolling onto a new Corefile), `Stalled` (refused or rolled back: the
    /// reason and message say what to change), `CorefileApplied`, `RolledOut`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `sha256:<hex>` of the Corefile the target's CoreDNS runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corefile_hash: Option<String>,
    /// Pods in the cluster, and how many carry one of this policy's suffixes
    /// in the search list kubelet wrote for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCounts>,
    /// Namespaces with polluted pods, most polluted first, at most
    /// `MAX_STATUS_NAMESPACES` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespacePollution>,
    /// Every DNS path pods' queries take that the operator found: CoreDNS,
    /// and each NodeLocal DNSCache in front of it. `Ready` is True only
    /// when every path is covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_paths: Vec<DnsPath>,
}

/// One way pods' queries reach an answer, and whether the policy holds on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsPath {
    /// `CoreDNS`, or `NodeLocalDNSCache`: a cache on every node that pods
    /// query first and that sends only the cluster domain and reverse zones
    /// to CoreDNS.
    pub kind: DnsPathKind,
    /// `namespace/name` of the ConfigMap holding its Corefile.
    pub config_map: String,
    /// NodeLocal DNSCache only: `LinkLocal` (pods reach it on a link-local
    /// address such as 169.254.20.10, which kubelet's clusterDNS names),
    /// `Interception` (it also binds the kube-dns Service IP and so takes
    /// every pod's queries on its node), or `SetAtStartup` (its Corefile
    /// binds placeholders that node-cache fills in from its -localip flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The addresses it listens on, as its Corefile binds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// True when the policy's suffixed names looked up through this path
    /// are answered as the policy says.
    pub covered: bool,
    /// Why it is not covered, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DnsPathKind {
    /// The cluster DNS Deployment `spec.target` names.
    CoreDNS,
    /// NodeLocal DNSCache (k8s.io/dns node-cache), found by its ConfigMap.
    NodeLocalDNSCache,
}

pub const MAX_STATUS_NAMESPACES: usize = 20;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PodCounts {
    /// Pods the operator counted.
    pub total: u64,
    /// Pods whose resolv.conf search list carries one of the policy's suffixes.
    /// A pod keeps the search list it started with: recreate it after the
    /// node is cleaned.
    pub polluted: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NamespacePollution {
    /// The namespace.
    pub name: String,
    /// Pods in it.
    pub pods: u64,
    /// Of those, pods whose search list carries one of the policy's suffixes.
    pub polluted: u64,
}

#[cfg(feature = "kube")]
/// The CRD as YAML, exactly as `dnspolicy crd` prints it and
/// `manifests/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&ClusterDNSPolicy::crd()).expect("the CRD serializes")
}

#[cfg(all(test, feature = "kube"))]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: ClusterDNSPolicySpec =
            serde_yaml::from_str("foreignSuffixes: [{suffix: tailb45a71.ts.net}]").unwrap();
        assert_eq!(spec.cluster_domain, "cluster.local");
        assert_eq!(spec.target, CoreDnsTarget::default());
        assert_eq!(spec.rollout, RolloutMode::Restart);
        assert_eq!(spec.foreign_suffixes[0].action, SuffixAction::Rewrite);
        assert_eq!(spec.foreign_suffixes[0].host_labels, 1);
    }

    #[test]
    fn crd_has_short_name_status_and_columns() {
        let yaml = crd_yaml();
        for needle in [
            "shortNames:\n    - cdp",
            "scope: Cluster",
            "status: {}",
            "name: Polluted",
            "x-kubernetes-validations",
            "maxItems: 15",
            "forwardToRef",
            "has(f.forwardToRef)",
            // kstatus reads a status-less policy as Current; this reads InProgress.
            "default:\n              observedGeneration: 0",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle:?}:\n{yaml}");
        }
    }
}
