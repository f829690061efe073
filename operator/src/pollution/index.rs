//! The pollution index: which pods carry a declared suffix in the search
//! list kubelet wrote for them.
//!
//! Watch events are folded into a synchronous index (`apply_pod`,
//! `delete_pod`, `apply_node`) that keeps only the fields the kubelet model
//! needs, never whole Pod objects; tests build the index in memory.

use std::collections::{BTreeMap, HashMap};

use dnspolicy_crd::vocabulary::annotation;
use dnspolicy_crd::{ClusterDNSPolicy, MAX_STATUS_NAMESPACES};
use dnspolicy_dns::kubelet::{self, DnsPolicy, NodeDns, PodDns, PodDnsConfig};
use k8s_openapi::api::core::v1::{Node, Pod};

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
}

/// Counts for one policy's suffixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub total: u64,
    pub polluted: u64,
    /// (namespace, pods, polluted pods): namespaces with polluted pods, most
    /// polluted first, at most `MAX_STATUS_NAMESPACES`.
    pub namespaces: Vec<(String, u64, u64)>,
}

#[derive(Debug, Default)]
pub struct PollutionIndex {
    /// namespace -> pod name -> facts. Namespace keys are shared by their pods.
    pods: HashMap<String, HashMap<String, PodFacts>>,
    nodes: HashMap<String, NodeFacts>,
    /// Bumped by every change of facts. Most watch events (pod status, node
    /// heartbeats) change none, so an unchanged number lets the counting
    /// tick skip its pass over every pod: idle costs nothing at 150k pods.
    changes: u64,
}

impl PollutionIndex {
    pub fn apply_pod(&mut self, namespace: &str, name: &str, facts: PodFacts) {
        let pods = self.pods.entry(namespace.to_string()).or_default();
        if pods.get(name) != Some(&facts) {
            pods.insert(name.to_string(), facts);
            self.changes += 1;
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        if let Some(pods) = self.pods.get_mut(namespace) {
            if pods.remove(name).is_some() {
                self.changes += 1;
            }
            if pods.is_empty() {
                self.pods.remove(namespace);
            }
        }
    }

    pub fn apply_node(&mut self, name: &str, facts: NodeFacts) {
        if self.nodes.get(name) != Some(&facts) {
            self.nodes.insert(name.to_string(), facts);
            self.changes += 1;
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.changes += 1;
        }
    }

    /// Swaps in the pods of a fresh list (the watch restarted).
    pub fn replace_pods(&mut self, relisted: PollutionIndex) {
        self.pods = relisted.pods;
        self.changes += 1;
    }

    /// Swaps in the nodes of a fresh list (the watch restarted).
    pub fn replace_nodes(&mut self, relisted: HashMap<String, NodeFacts>) {
        self.nodes = relisted;
        self.changes += 1;
    }

    /// How many changes of facts the index has seen.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn pod_count(&self) -> usize {
        self.pods.values().map(HashMap::len).sum()
    }

    /// The host search list kubelet used for a pod on `node`, created at
    /// `created`: kubelet writes resolv.conf when the pod starts, so a pod
    /// older than the node's last change still has the previous list.
    fn host_search_for(
        &self,
        node: Option<&str>,
        created: i64,
        suffixes: &[String],
        selector: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let Some(node) = node.and_then(|n| self.nodes.get(n)) else {
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

    /// Pods and polluted pods for one policy's suffixes.
    pub fn counts(
        &self,
        suffixes: &[String],
        selector: &BTreeMap<String, String>,
        cluster_domain: &str,
    ) -> PolicyCounts {
        let mut counts = PolicyCounts::default();
        let mut namespaces = Vec::new();
        for (namespace, pods) in &self.pods {
            let mut polluted = 0;
            for pod in pods.values() {
                let host_search =
                    self.host_search_for(pod.node.as_deref(), pod.created, suffixes, selector);
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
                    cluster_domain,
                );
                if kubelet::is_polluted(&searches, suffixes) {
                    polluted += 1;
                }
            }
            counts.total += pods.len() as u64;
            counts.polluted += polluted;
            if polluted > 0 {
                namespaces.push((namespace.clone(), pods.len() as u64, polluted));
            }
        }
        namespaces.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        namespaces.truncate(MAX_STATUS_NAMESPACES);
        counts.namespaces = namespaces;
        counts
    }
}

/// The few fields of a Pod the index keeps.
/// A policy's counts: its suffixes, its node selector, its cluster domain.
/// The one computation behind both the status and the metric.
pub fn policy_counts(index: &PollutionIndex, policy: &ClusterDNSPolicy) -> PolicyCounts {
    let suffixes: Vec<String> = policy
        .spec
        .foreign_suffixes
        .iter()
        .map(|s| s.suffix.clone())
        .collect();
    index.counts(
        &suffixes,
        &policy.spec.node_selector,
        &policy.spec.cluster_domain,
    )
}

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

    fn counts(index: &PollutionIndex) -> PolicyCounts {
        index.counts(&[TAILNET.to_string()], &BTreeMap::new(), "cluster.local")
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
        let c = counts(&index);
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
        assert_eq!(counts(&index).polluted, 1);
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
        assert_eq!(counts(&index).polluted, 1);
        index.delete_pod("default", "old");
        let c = counts(&index);
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
        let c = index.counts(&[TAILNET.to_string()], &selector, "cluster.local");
        assert_eq!((c.total, c.polluted), (2, 1));
        // No selector and no agent: nothing is assumed.
        assert_eq!(counts(&index).polluted, 0);
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
        let c = counts(&index);
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
}
