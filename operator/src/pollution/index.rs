//! The pollution index: which pods carry a declared suffix in the search
//! list kubelet wrote for them, counted per policy as watch events arrive.
//!
//! Watch events are folded into a synchronous index (`apply_pod`,
//! `delete_pod`, `apply_node`) that keeps only the fields the kubelet model
//! needs, never whole Pod objects; tests build the index in memory.
//!
//! Counts are kept, not recomputed: each pod remembers, per policy, whether
//! it was counted polluted, and each event moves the tallies by its delta. A
//! pod event runs the kubelet model for that pod, a node event for the pods
//! on that node, and a policy whose inputs change is counted once over every
//! pod. Reading a policy's counts costs O(namespaces), never O(pods): at 150k
//! pods, churn and the status it feeds stay cheap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use dnspolicy_crd::vocabulary::annotation;
use dnspolicy_crd::{ClusterDNSPolicy, MAX_STATUS_NAMESPACES};
use dnspolicy_dns::kubelet::{self, DnsPolicy, NodeDns, PodDns, PodDnsConfig};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

/// What kubelet's resolv.conf logic needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub node: Option<String>,
    pub dns_policy: DnsPolicy,
    pub host_network: bool,
    /// `spec.dnsConfig.searches`.
    pub extra_searches: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
}

/// What the accounting needs of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub labels: BTreeMap<String, String>,
    /// Published by the node agent; `None` without one.
    pub host_search: Option<Vec<String>>,
    pub host_search_since: Option<i64>,
    pub previous_host_search: Option<Vec<String>>,
    /// The agent's `host-search-error`: it cannot read the node's file.
    pub agent_error: Option<String>,
}

/// Everything a policy's counts depend on besides pods and nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInputs {
    pub suffixes: Vec<String>,
    /// Without a node agent, the nodes that carry the suffixes.
    pub node_selector: BTreeMap<String, String>,
    pub cluster_domain: String,
}

impl PolicyInputs {
    pub fn of(policy: &ClusterDNSPolicy) -> Self {
        PolicyInputs {
            suffixes: policy
                .spec
                .foreign_suffixes
                .iter()
                .map(|s| s.suffix.clone())
                .collect(),
            node_selector: policy.spec.node_selector.clone(),
            cluster_domain: policy.spec.cluster_domain.clone(),
        }
    }
}

/// Counts for one policy's suffixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub total: u64,
    pub polluted: u64,
    /// (namespace, pods, polluted pods): namespaces with polluted pods, most
    /// polluted first, at most `MAX_STATUS_NAMESPACES`.
    pub namespaces: Vec<(String, u64, u64)>,
    /// (node, error) of the nodes whose agent cannot read resolv.conf, by
    /// name, at most `MAX_UNREAD_NODES`; `unread_nodes_total` counts them all.
    pub unread_nodes: Vec<(String, String)>,
    pub unread_nodes_total: u64,
}

/// How many unreadable nodes a status message names.
pub const MAX_UNREAD_NODES: usize = 5;

/// Whether a pod was counted polluted, by policy slot. Policies are few:
/// one word inline covers 64 of them and keeps a pod's entry small.
#[derive(Debug, Clone)]
// A thin pointer keeps this 16 bytes, a boxed slice would make it 24.
#[allow(clippy::box_collection)]
enum PolicyBits {
    Inline(u64),
    Spilled(Box<Vec<u64>>),
}

impl PolicyBits {
    fn words(&self) -> &[u64] {
        match self {
            PolicyBits::Inline(w) => std::slice::from_ref(w),
            PolicyBits::Spilled(ws) => ws,
        }
    }

    fn get(&self, slot: usize) -> bool {
        self.words()
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn set(&mut self, slot: usize, on: bool) {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if word >= self.words().len() {
            if !on {
                return;
            }
            let mut grown = vec![0; word + 1];
            grown[..self.words().len()].copy_from_slice(self.words());
            *self = PolicyBits::Spilled(Box::new(grown));
        }
        let w = match self {
            PolicyBits::Inline(w) => w,
            PolicyBits::Spilled(ws) => &mut ws[word],
        };
        if on {
            *w |= bit;
        } else {
            *w &= !bit;
        }
    }
}

/// A pod as the index keeps it: its facts, the node name shared with the
/// node's entry in `on_node`, and what it was counted as.
#[derive(Debug)]
struct PodEntry {
    node: Option<Arc<str>>,
    dns_policy: DnsPolicy,
    host_network: bool,
    extra_searches: Box<[String]>,
    created: i64,
    polluted: PolicyBits,
}

impl PodEntry {
    fn has_facts(&self, facts: &PodFacts) -> bool {
        self.node.as_deref() == facts.node.as_deref()
            && self.dns_policy == facts.dns_policy
            && self.host_network == facts.host_network
            && *self.extra_searches == *facts.extra_searches
            && self.created == facts.created
    }
}

#[derive(Debug, Default)]
struct NamespacePods {
    pods: HashMap<Arc<str>, PodEntry>,
    /// Polluted pods here, by policy slot.
    polluted: Vec<u64>,
}

#[derive(Debug)]
struct PolicySlot {
    name: String,
    inputs: PolicyInputs,
    polluted: u64,
}

/// (namespace, pod name), sharing the strings of the pod's entry.
type PodKey = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
pub struct PollutionIndex {
    namespaces: HashMap<Arc<str>, NamespacePods>,
    nodes: HashMap<String, NodeFacts>,
    /// Node name -> the pods bound to it, known node or not: a node change
    /// re-runs the kubelet model for these pods only.
    on_node: HashMap<Arc<str>, HashSet<PodKey>>,
    /// Counted policies by slot; a deleted policy's slot is reused.
    policies: Vec<Option<PolicySlot>>,
    pods: usize,
    /// Bumped by every change of facts. Most watch events (pod status, node
    /// heartbeats) change none, so an unchanged number lets the counting
    /// tick skip reading the counts at all.
    changes: u64,
}

impl PollutionIndex {
    pub fn apply_pod(&mut self, namespace: &str, name: &str, facts: PodFacts) {
        let known = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.pods.get(name));
        if known.is_some_and(|pod| pod.has_facts(&facts)) {
            return;
        }
        // A changed pod is counted out, then in again.
        self.delete_pod(namespace, name);
        let namespace = match self.namespaces.get_key_value(namespace) {
            Some((key, _)) => key.clone(),
            None => Arc::from(namespace),
        };
        let name: Arc<str> = Arc::from(name);
        let node = facts.node.as_deref().map(|node| {
            let key = match self.on_node.get_key_value(node) {
                Some((key, _)) => key.clone(),
                None => Arc::from(node),
            };
            self.on_node
                .entry(key.clone())
                .or_default()
                .insert((namespace.clone(), name.clone()));
            key
        });
        let mut pod = PodEntry {
            node,
            dns_policy: facts.dns_policy,
            host_network: facts.host_network,
            extra_searches: facts.extra_searches.into_boxed_slice(),
            created: facts.created,
            polluted: PolicyBits::Inline(0),
        };
        let slots = self.policies.len();
        let pods = self
            .namespaces
            .entry(namespace.clone())
            .or_insert_with(|| NamespacePods {
                polluted: vec![0; slots],
                ..Default::default()
            });
        recount_pod(
            &self.nodes,
            &mut self.policies,
            &namespace,
            &mut pods.polluted,
            &mut pod,
        );
        pods.pods.insert(name, pod);
        self.pods += 1;
        self.changes += 1;
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let Some((namespace, pods)) = self.namespaces.get_key_value(namespace) else {
            return;
        };
        if !pods.pods.contains_key(name) {
            return;
        }
        let namespace = namespace.clone();
        let pods = self.namespaces.get_mut(&namespace).expect("just found");
        let (name, pod) = pods.pods.remove_entry(name).expect("just found");
        for (slot, policy) in live(&mut self.policies) {
            if pod.polluted.get(slot) {
                pods.polluted[slot] -= 1;
                policy.polluted -= 1;
            }
        }
        if pods.pods.is_empty() {
            self.namespaces.remove(&namespace);
        }
        if let Some(node) = &pod.node
            && let Some(on_node) = self.on_node.get_mut(node)
        {
            on_node.remove(&(namespace, name));
            if on_node.is_empty() {
                self.on_node.remove(node);
            }
        }
        self.pods -= 1;
        self.changes += 1;
    }

    pub fn apply_node(&mut self, name: &str, facts: NodeFacts) {
        if self.nodes.get(name) != Some(&facts) {
            self.nodes.insert(name.to_string(), facts);
            self.recount_node(name);
            self.changes += 1;
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.recount_node(name);
            self.changes += 1;
        }
    }

    /// Swaps in the pods of a fresh list (the watch restarted), gathered
    /// in an index of their own, and counts every policy over them once.
    pub fn replace_pods(&mut self, relisted: PollutionIndex) {
        self.namespaces = relisted.namespaces;
        self.on_node = relisted.on_node;
        self.pods = relisted.pods;
        for pods in self.namespaces.values_mut() {
            pods.polluted = vec![0; self.policies.len()];
        }
        for slot in 0..self.policies.len() {
            self.count_policy(slot);
        }
        self.changes += 1;
    }

    /// Makes the nodes those of a fresh list (the watch restarted).
    pub fn replace_nodes(&mut self, relisted: HashMap<String, NodeFacts>) {
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|name| !relisted.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.delete_node(&name);
        }
        for (name, facts) in relisted {
            self.apply_node(&name, facts);
        }
        self.changes += 1;
    }

    /// How many changes of facts the index has seen.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn pod_count(&self) -> usize {
        self.pods
    }

    /// The counts of policy `name`. A policy seen for the first time, or
    /// whose inputs changed, is first counted over every pod, once; after
    /// that this reads the tallies, O(namespaces).
    pub fn counts(&mut self, name: &str, inputs: &PolicyInputs) -> PolicyCounts {
        let slot = self.slot_for(name, inputs);
        let polluted = self.policies[slot].as_ref().map_or(0, |p| p.polluted);
        let mut namespaces: Vec<(&Arc<str>, u64, u64)> = self
            .namespaces
            .iter()
            .filter(|(_, pods)| pods.polluted[slot] > 0)
            .map(|(namespace, pods)| (namespace, pods.pods.len() as u64, pods.polluted[slot]))
            .collect();
        let most_polluted_first = |a: &(&Arc<str>, u64, u64), b: &(&Arc<str>, u64, u64)| {
            b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0))
        };
        // Only the top few are sorted: names are unique, so this is the
        // order a full sort would give.
        if namespaces.len() > MAX_STATUS_NAMESPACES {
            namespaces.select_nth_unstable_by(MAX_STATUS_NAMESPACES, most_polluted_first);
            namespaces.truncate(MAX_STATUS_NAMESPACES);
        }
        namespaces.sort_by(most_polluted_first);
        // Nodes are few next to pods: a pass over them costs little.
        let mut unread_nodes: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter_map(|(node, facts)| Some((node.clone(), facts.agent_error.clone()?)))
            .collect();
        let unread_nodes_total = unread_nodes.len() as u64;
        unread_nodes.sort();
        unread_nodes.truncate(MAX_UNREAD_NODES);
        PolicyCounts {
            total: self.pods as u64,
            polluted,
            unread_nodes,
            unread_nodes_total,
            namespaces: namespaces
                .into_iter()
                .map(|(namespace, pods, polluted)| (namespace.to_string(), pods, polluted))
                .collect(),
        }
    }

    /// Stops counting the policies `keep` refuses (deleted ones).
    pub fn retain_policies(&mut self, keep: impl Fn(&str) -> bool) {
        for slot in 0..self.policies.len() {
            if self.policies[slot].as_ref().is_some_and(|p| !keep(&p.name)) {
                self.policies[slot] = None;
                // Pods keep stale bits for the slot; counting a policy into
                // it again sets every pod's bit.
                for pods in self.namespaces.values_mut() {
                    pods.polluted[slot] = 0;
                }
            }
        }
    }

    /// The slot counting policy `name` with `inputs`, counted over every
    /// pod when new or changed.
    fn slot_for(&mut self, name: &str, inputs: &PolicyInputs) -> usize {
        let known = self
            .policies
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.name == name));
        if let Some(slot) = known
            && self.policies[slot]
                .as_ref()
                .is_some_and(|p| p.inputs == *inputs)
        {
            return slot;
        }
        let slot = known
            .or_else(|| self.policies.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                self.policies.push(None);
                for pods in self.namespaces.values_mut() {
                    pods.polluted.push(0);
                }
                self.policies.len() - 1
            });
        self.policies[slot] = Some(PolicySlot {
            name: name.to_string(),
            inputs: inputs.clone(),
            polluted: 0,
        });
        self.count_policy(slot);
        slot
    }

    /// Counts the policy in `slot` over every pod, from scratch.
    fn count_policy(&mut self, slot: usize) {
        let Some(policy) = self.policies[slot].as_mut() else {
            return;
        };
        policy.polluted = 0;
        for (namespace, pods) in &mut self.namespaces {
            pods.polluted[slot] = 0;
            for pod in pods.pods.values_mut() {
                let polluted = is_polluted(&self.nodes, namespace, pod.view(), &policy.inputs);
                pod.polluted.set(slot, polluted);
                if polluted {
                    pods.polluted[slot] += 1;
                    policy.polluted += 1;
                }
            }
        }
    }

    /// Re-runs the kubelet model for the pods on `node` after its facts changed.
    fn recount_node(&mut self, node: &str) {
        let Some(on_node) = self.on_node.get(node) else {
            return;
        };
        for (namespace, name) in on_node {
            let Some(pods) = self.namespaces.get_mut(namespace) else {
                continue;
            };
            if let Some(pod) = pods.pods.get_mut(name) {
                recount_pod(
                    &self.nodes,
                    &mut self.policies,
                    namespace,
                    &mut pods.polluted,
                    pod,
                );
            }
        }
    }
}

/// The policies counted, with their slots.
fn live(policies: &mut [Option<PolicySlot>]) -> impl Iterator<Item = (usize, &mut PolicySlot)> {
    policies
        .iter_mut()
        .enumerate()
        .filter_map(|(slot, p)| Some((slot, p.as_mut()?)))
}

/// Runs the kubelet model for one pod under every policy and moves the
/// tallies where the answer changed.
fn recount_pod(
    nodes: &HashMap<String, NodeFacts>,
    policies: &mut [Option<PolicySlot>],
    namespace: &str,
    namespace_polluted: &mut [u64],
    pod: &mut PodEntry,
) {
    for (slot, policy) in live(policies) {
        let now = is_polluted(nodes, namespace, pod.view(), &policy.inputs);
        if now != pod.polluted.get(slot) {
            pod.polluted.set(slot, now);
            if now {
                namespace_polluted[slot] += 1;
                policy.polluted += 1;
            } else {
                namespace_polluted[slot] -= 1;
                policy.polluted -= 1;
            }
        }
    }
}

/// The fields of a pod the kubelet model reads, borrowed.
#[derive(Clone, Copy)]
struct PodView<'a> {
    node: Option<&'a str>,
    dns_policy: DnsPolicy,
    host_network: bool,
    extra_searches: &'a [String],
    created: i64,
}

impl PodEntry {
    fn view(&self) -> PodView<'_> {
        PodView {
            node: self.node.as_deref(),
            dns_policy: self.dns_policy,
            host_network: self.host_network,
            extra_searches: &self.extra_searches,
            created: self.created,
        }
    }
}

/// Does kubelet give this pod one of the policy's suffixes?
fn is_polluted(
    nodes: &HashMap<String, NodeFacts>,
    namespace: &str,
    pod: PodView<'_>,
    policy: &PolicyInputs,
) -> bool {
    let host_search = host_search_for(
        nodes,
        pod.node,
        pod.created,
        &policy.suffixes,
        &policy.node_selector,
    );
    let searches = kubelet::pod_searches(
        &PodDns {
            namespace: namespace.to_string(),
            dns_policy: pod.dns_policy,
            host_network: pod.host_network,
            dns_config: (!pod.extra_searches.is_empty()).then(|| PodDnsConfig {
                searches: pod.extra_searches.to_vec(),
                ..Default::default()
            }),
        },
        &NodeDns {
            host_search,
            ..Default::default()
        },
        &policy.cluster_domain,
    );
    kubelet::is_polluted(&searches, &policy.suffixes)
}

/// The host search list kubelet used for a pod on `node`, created at
/// `created`: kubelet writes resolv.conf when the pod starts, so a pod
/// older than the node's last change still has the previous list.
fn host_search_for(
    nodes: &HashMap<String, NodeFacts>,
    node: Option<&str>,
    created: i64,
    suffixes: &[String],
    selector: &BTreeMap<String, String>,
) -> Vec<String> {
    let Some(node) = node.and_then(|n| nodes.get(n)) else {
        return vec![];
    };
    match &node.host_search {
        Some(current) => match (node.host_search_since, &node.previous_host_search) {
            (Some(since), Some(previous)) if created < since => previous.clone(),
            _ => current.clone(),
        },
        // No agent: the policy's nodeSelector says which nodes carry its suffixes.
        None if !selector.is_empty()
            && selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)) =>
        {
            suffixes.to_vec()
        }
        None => vec![],
    }
}

/// A policy's counts: its suffixes, its node selector, its cluster domain.
/// The one computation behind both the status and the metric; O(namespaces)
/// unless the policy is new to the index or its inputs changed.
pub fn policy_counts(index: &mut PollutionIndex, policy: &ClusterDNSPolicy) -> PolicyCounts {
    index.counts(&policy.name_any(), &PolicyInputs::of(policy))
}

/// The few fields of a Pod the index keeps.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let spec = pod.spec.as_ref();
    PodFacts {
        node: spec.and_then(|s| s.node_name.clone()),
        dns_policy: DnsPolicy::from_spec(spec.and_then(|s| s.dns_policy.as_deref())),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        extra_searches: spec
            .and_then(|s| s.dns_config.as_ref())
            .and_then(|c| c.searches.clone())
            .unwrap_or_default(),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
    }
}

/// The few fields of a Node the index keeps.
pub fn node_facts(node: &Node) -> NodeFacts {
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let list = |key: &str| {
        annotations
            .get(key)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
    };
    NodeFacts {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        host_search: list(annotation::HOST_SEARCH),
        host_search_since: annotations
            .get(annotation::HOST_SEARCH_SINCE)
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
        previous_host_search: list(annotation::HOST_SEARCH_PREVIOUS),
        agent_error: annotations.get(annotation::HOST_SEARCH_ERROR).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAILNET: &str = "tailb45a71.ts.net";

    fn pod(node: &str, policy: DnsPolicy, host_network: bool, created: i64) -> PodFacts {
        PodFacts {
            node: Some(node.into()),
            dns_policy: policy,
            host_network,
            extra_searches: vec![],
            created,
        }
    }

    fn agent_node(search: &str) -> NodeFacts {
        NodeFacts {
            host_search: Some(search.split_whitespace().map(str::to_string).collect()),
            ..Default::default()
        }
    }

    fn tailnet() -> PolicyInputs {
        PolicyInputs {
            suffixes: vec![TAILNET.to_string()],
            node_selector: BTreeMap::new(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn counts(index: &mut PollutionIndex) -> PolicyCounts {
        index.counts("tailnet", &tailnet())
    }

    #[test]
    fn pods_on_a_tailscale_node_are_polluted_whatever_their_policy_says() {
        let mut index = PollutionIndex::default();
        index.apply_node("tailnode", agent_node(TAILNET));
        index.apply_node("clean", agent_node(""));
        index.apply_pod(
            "workflow-engine",
            "api",
            pod("tailnode", DnsPolicy::ClusterFirst, false, 10),
        );
        // hostNetwork + ClusterFirst falls back to the node's own resolv.conf: still polluted.
        index.apply_pod(
            "workflow-engine",
            "hostnet",
            pod("tailnode", DnsPolicy::ClusterFirst, true, 10),
        );
        index.apply_pod(
            "workflow-engine",
            "default",
            pod("tailnode", DnsPolicy::Default, false, 10),
        );
        // dnsPolicy None takes only its own dnsConfig: clean.
        index.apply_pod(
            "workflow-engine",
            "none",
            pod("tailnode", DnsPolicy::None, false, 10),
        );
        index.apply_pod(
            "video-management-system",
            "frigate",
            pod("clean", DnsPolicy::ClusterFirst, false, 10),
        );
        let c = counts(&mut index);
        assert_eq!((c.total, c.polluted), (5, 3));
        assert_eq!(c.namespaces, [("workflow-engine".to_string(), 4, 3)]);
    }

    #[test]
    fn a_pods_own_dns_config_can_pollute_it_on_a_clean_node() {
        let mut index = PollutionIndex::default();
        index.apply_node("clean", agent_node(""));
        let mut p = pod("clean", DnsPolicy::ClusterFirst, false, 10);
        p.extra_searches = vec![TAILNET.into()];
        index.apply_pod("default", "custom", p);
        assert_eq!(counts(&mut index).polluted, 1);
    }

    #[test]
    fn pods_keep_the_search_list_their_node_had_when_they_started() {
        let mut index = PollutionIndex::default();
        index.apply_node(
            "n1",
            NodeFacts {
                host_search: Some(vec![]),
                host_search_since: Some(100),
                previous_host_search: Some(vec![TAILNET.into()]),
                ..Default::default()
            },
        );
        index.apply_pod(
            "default",
            "old",
            pod("n1", DnsPolicy::ClusterFirst, false, 50),
        );
        index.apply_pod(
            "default",
            "new",
            pod("n1", DnsPolicy::ClusterFirst, false, 150),
        );
        assert_eq!(counts(&mut index).polluted, 1);
        index.delete_pod("default", "old");
        let c = counts(&mut index);
        assert_eq!((c.total, c.polluted), (1, 0));
        assert!(c.namespaces.is_empty());
    }

    #[test]
    fn without_an_agent_the_node_selector_says_which_nodes_carry_the_suffix() {
        let mut index = PollutionIndex::default();
        let labelled = NodeFacts {
            labels: [("tailscale".to_string(), "true".to_string())].into(),
            ..Default::default()
        };
        index.apply_node("tailnode", labelled);
        index.apply_node("other", NodeFacts::default());
        index.apply_pod(
            "a",
            "p1",
            pod("tailnode", DnsPolicy::ClusterFirst, false, 1),
        );
        index.apply_pod("a", "p2", pod("other", DnsPolicy::ClusterFirst, false, 1));
        let selector: BTreeMap<String, String> =
            [("tailscale".to_string(), "true".to_string())].into();
        let c = index.counts(
            "selected",
            &PolicyInputs {
                node_selector: selector,
                ..tailnet()
            },
        );
        assert_eq!((c.total, c.polluted), (2, 1));
        // No selector and no agent: nothing is assumed.
        assert_eq!(counts(&mut index).polluted, 0);
    }

    #[test]
    fn status_namespaces_are_bounded_and_most_polluted_first() {
        let mut index = PollutionIndex::default();
        index.apply_node("tailnode", agent_node(TAILNET));
        for ns in 0..100 {
            for p in 0..=(ns % 7) {
                index.apply_pod(
                    &format!("ns-{ns:03}"),
                    &format!("p{p}"),
                    pod("tailnode", DnsPolicy::ClusterFirst, false, 1),
                );
            }
        }
        let c = counts(&mut index);
        assert_eq!(c.namespaces.len(), MAX_STATUS_NAMESPACES);
        assert!(c.namespaces.windows(2).all(|w| w[0].2 >= w[1].2));
        assert_eq!(c.namespaces[0], ("ns-006".to_string(), 7, 7));
    }

    #[test]
    fn only_a_change_of_facts_counts_as_a_change() {
        let mut index = PollutionIndex::default();
        let facts = pod("n1", DnsPolicy::ClusterFirst, false, 10);
        index.apply_pod("ns", "a", facts.clone());
        index.apply_node("n1", agent_node("tailb45a71.ts.net"));
        let after_create = index.changes();
        // A status update or a heartbeat: same facts.
        index.apply_pod("ns", "a", facts);
        index.apply_node("n1", agent_node("tailb45a71.ts.net"));
        index.delete_pod("ns", "gone");
        assert_eq!(index.changes(), after_create);
        index.apply_node("n1", agent_node("openstacklocal"));
        index.delete_pod("ns", "a");
        assert_eq!(index.changes(), after_create + 2);
    }

    /// The full computation the index replaced, kept as the oracle: every
    /// pod through the kubelet model, from plain maps of facts.
    fn full_counts(
        pods: &BTreeMap<(String, String), PodFacts>,
        nodes: &HashMap<String, NodeFacts>,
        policy: &PolicyInputs,
    ) -> PolicyCounts {
        let mut by_namespace: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for ((namespace, _), pod) in pods {
            let host_search = host_search_for(
                nodes,
                pod.node.as_deref(),
                pod.created,
                &policy.suffixes,
                &policy.node_selector,
            );
            let searches = kubelet::pod_searches(
                &PodDns {
                    namespace: namespace.clone(),
                    dns_policy: pod.dns_policy,
                    host_network: pod.host_network,
                    dns_config: (!pod.extra_searches.is_empty()).then(|| PodDnsConfig {
                        searches: pod.extra_searches.clone(),
                        ..Default::default()
                    }),
                },
                &NodeDns {
                    host_search,
                    ..Default::default()
                },
                &policy.cluster_domain,
            );
            let tally = by_namespace.entry(namespace).or_default();
            tally.0 += 1;
            tally.1 += u64::from(kubelet::is_polluted(&searches, &policy.suffixes));
        }
        let mut namespaces: Vec<(String, u64, u64)> = by_namespace
            .iter()
            .filter(|(_, (_, polluted))| *polluted > 0)
            .map(|(namespace, (pods, polluted))| (namespace.to_string(), *pods, *polluted))
            .collect();
        namespaces.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        namespaces.truncate(MAX_STATUS_NAMESPACES);
        let mut unread_nodes: Vec<(String, String)> = nodes
            .iter()
            .filter_map(|(node, f)| Some((node.clone(), f.agent_error.clone()?)))
            .collect();
        unread_nodes.sort();
        PolicyCounts {
            total: pods.len() as u64,
            polluted: by_namespace.values().map(|(_, polluted)| polluted).sum(),
            namespaces,
            unread_nodes_total: unread_nodes.len() as u64,
            unread_nodes: unread_nodes.into_iter().take(MAX_UNREAD_NODES).collect(),
        }
    }

    /// xorshift64*: reproducible random event sequences without a crate.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        fn some_of(&mut self, items: &[&str]) -> Vec<String> {
            items
                .iter()
                .filter(|_| self.below(2) == 0)
                .map(|s| s.to_string())
                .collect()
        }
    }

    const SUFFIXES: &[&str] = &[TAILNET, "corp.example", "cluster.local"];

    fn random_pod(rng: &mut Rng) -> PodFacts {
        PodFacts {
            // n4 never exists as a Node.
            node: (rng.below(6) > 0).then(|| format!("n{}", rng.below(5))),
            dns_policy: [
                DnsPolicy::ClusterFirst,
                DnsPolicy::ClusterFirstWithHostNet,
                DnsPolicy::Default,
                DnsPolicy::None,
            ][rng.below(4)],
            host_network: rng.below(4) == 0,
            extra_searches: if rng.below(3) == 0 {
                rng.some_of(&[TAILNET, "corp.example", "svc.cluster.local"])
            } else {
                vec![]
            },
            created: rng.below(200) as i64,
        }
    }

    fn random_node(rng: &mut Rng) -> NodeFacts {
        let list = |rng: &mut Rng| rng.some_of(&[TAILNET, "corp.example", "openstacklocal"]);
        NodeFacts {
            labels: match rng.below(3) {
                0 => BTreeMap::new(),
                1 => [("tailscale".to_string(), "true".to_string())].into(),
                _ => [("tailscale".to_string(), "false".to_string())].into(),
            },
            host_search: (rng.below(3) > 0).then(|| list(rng)),
            host_search_since: (rng.below(2) == 0).then(|| rng.below(200) as i64),
            previous_host_search: (rng.below(2) == 0).then(|| list(rng)),
            agent_error: (rng.below(4) == 0).then(|| "cannot read".to_string()),
        }
    }

    fn random_policy(rng: &mut Rng) -> PolicyInputs {
        PolicyInputs {
            suffixes: rng.some_of(SUFFIXES),
            node_selector: if rng.below(2) == 0 {
                BTreeMap::new()
            } else {
                [("tailscale".to_string(), "true".to_string())].into()
            },
            cluster_domain: rng.pick(&["cluster.local", "corp.example"]).into(),
        }
    }

    #[test]
    fn counts_kept_from_events_equal_a_full_recount() {
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut index = PollutionIndex::default();
            let mut pods: BTreeMap<(String, String), PodFacts> = BTreeMap::new();
            let mut nodes: HashMap<String, NodeFacts> = HashMap::new();
            let mut policies: BTreeMap<String, PolicyInputs> = BTreeMap::new();
            // 30 namespaces: more than MAX_STATUS_NAMESPACES can hold polluted pods.
            let namespace = |rng: &mut Rng| format!("ns-{:02}", rng.below(30));
            let pod_name = |rng: &mut Rng| format!("p{}", rng.below(4));
            for step in 0..600 {
                match rng.below(20) {
                    0..=8 => {
                        let key = (namespace(&mut rng), pod_name(&mut rng));
                        let facts = random_pod(&mut rng);
                        index.apply_pod(&key.0, &key.1, facts.clone());
                        pods.insert(key, facts);
                    }
                    9..=11 => {
                        let key = (namespace(&mut rng), pod_name(&mut rng));
                        index.delete_pod(&key.0, &key.1);
                        pods.remove(&key);
                    }
                    12..=13 => {
                        let name = format!("n{}", rng.below(4));
                        let facts = random_node(&mut rng);
                        index.apply_node(&name, facts.clone());
                        nodes.insert(name, facts);
                    }
                    14 => {
                        let name = format!("n{}", rng.below(4));
                        index.delete_node(&name);
                        nodes.remove(&name);
                    }
                    15 => {
                        // A relist: some pods gone, some changed, one new.
                        pods.retain(|_, _| rng.below(5) > 0);
                        for facts in pods.values_mut() {
                            if rng.below(5) == 0 {
                                *facts = random_pod(&mut rng);
                            }
                        }
                        pods.insert(
                            (namespace(&mut rng), pod_name(&mut rng)),
                            random_pod(&mut rng),
                        );
                        let mut relisted = PollutionIndex::default();
                        for ((ns, name), facts) in &pods {
                            relisted.apply_pod(ns, name, facts.clone());
                        }
                        index.replace_pods(relisted);
                    }
                    16 => {
                        nodes.retain(|_, _| rng.below(3) > 0);
                        let name = format!("n{}", rng.below(4));
                        nodes.insert(name, random_node(&mut rng));
                        index.replace_nodes(nodes.clone());
                    }
                    17..=18 => {
                        let name = rng.pick(&["a", "b", "c"]).to_string();
                        policies.insert(name, random_policy(&mut rng));
                    }
                    _ => {
                        let name = rng.pick(&["a", "b", "c"]);
                        policies.remove(name);
                        index.retain_policies(|p| policies.contains_key(p));
                    }
                }
                // Read now and then, so several events land between reads.
                if rng.below(3) == 0 {
                    for (name, inputs) in &policies {
                        assert_eq!(
                            index.counts(name, inputs),
                            full_counts(&pods, &nodes, inputs),
                            "seed {seed}, step {step}, policy {name}"
                        );
                    }
                    assert_eq!(index.pod_count(), pods.len(), "seed {seed}, step {step}");
                }
            }
        }
    }

    #[test]
    fn a_node_change_recounts_its_pods_and_a_policy_change_recounts_the_policy() {
        let mut index = PollutionIndex::default();
        index.apply_node("n1", agent_node(""));
        index.apply_pod("a", "p", pod("n1", DnsPolicy::ClusterFirst, false, 10));
        index.apply_pod("b", "q", pod("n2", DnsPolicy::ClusterFirst, false, 10));
        assert_eq!(counts(&mut index).polluted, 0);
        // The agent publishes the suffix, and n2 (unknown until now) appears with it.
        index.apply_node("n1", agent_node(TAILNET));
        index.apply_node("n2", agent_node(TAILNET));
        assert_eq!(counts(&mut index).polluted, 2);
        index.delete_node("n2");
        assert_eq!(counts(&mut index).polluted, 1);
        // Another suffix: the same policy name counts again, from scratch.
        let other = PolicyInputs {
            suffixes: vec!["corp.example".into()],
            ..tailnet()
        };
        assert_eq!(index.counts("tailnet", &other).polluted, 0);
        index.retain_policies(|_| false);
        assert_eq!(counts(&mut index).polluted, 1);
    }

    #[test]
    fn more_than_64_policies_each_keep_their_own_counts() {
        let mut index = PollutionIndex::default();
        index.apply_node("n1", agent_node(TAILNET));
        index.apply_pod("a", "p", pod("n1", DnsPolicy::ClusterFirst, false, 10));
        let inputs = |i: usize| PolicyInputs {
            suffixes: vec![
                if i.is_multiple_of(2) {
                    TAILNET
                } else {
                    "corp.example"
                }
                .into(),
            ],
            ..tailnet()
        };
        for i in 0..70 {
            index.counts(&format!("p{i}"), &inputs(i));
        }
        index.apply_pod("a", "q", pod("n1", DnsPolicy::ClusterFirst, false, 10));
        for i in 0..70 {
            let c = index.counts(&format!("p{i}"), &inputs(i));
            assert_eq!(
                (c.total, c.polluted),
                (2, if i.is_multiple_of(2) { 2 } else { 0 }),
                "p{i}"
            );
        }
    }
}
