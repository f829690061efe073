//! `explain` through NodeLocal DNSCache in front of CoreDNS: the cache's
//! Corefile (Kubespray's, and the addon's filled in for iptables kube-proxy)
//! before and after the Tailscale policy, with kubeadm's CoreDNS Corefile.
//! Before, the polluted name leaves from the cache's `.` block; after, the
//! cache's block for the suffix hands it to CoreDNS, which rewrites it.

use std::collections::BTreeMap;

use dnspolicy_crd::ClusterDNSPolicy;
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_dns::{corefile, nodelocal, plan, policy};
use dnspolicy_explain::explain::{Explanation, Upstream};
use dnspolicy_explain::nodelocal::explain_through_cache;
use dnspolicy_explain::resolver::{Lookup, Resolver, ResolverConfig};

const KUBEADM: &str = include_str!("../../dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
const KUBESPRAY: &str =
    include_str!("../../dns/tests/fixtures/corefiles/nodelocaldns-kubespray-46dbdd39.Corefile");
const ADDON: &str =
    include_str!("../../dns/tests/fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");
const TAILSCALE_POLICY: &str = include_str!("../../manifests/examples/tailscale.yaml");
const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const LEAK: &str = "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net";
const SEARCH: &str =
    "video-management-system.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net";
const VERSION: CoreDnsVersion = CoreDnsVersion::NEWEST_CHECKED;

fn merged(with_policy: bool) -> policy::MergedPolicies {
    if !with_policy {
        return policy::MergedPolicies::default();
    }
    let p: ClusterDNSPolicy = serde_yaml::from_str(TAILSCALE_POLICY).unwrap();
    // The example's forwardToRef, as the operator resolves it from the cluster.
    let addresses = [("tailb45a71.ts.net".to_string(), "10.96.0.77".to_string())].into();
    let spec = policy::resolve_forward_refs(&p.spec, &addresses);
    policy::merge(&[policy::validate("tailnet", &spec).unwrap()])
}

/// The lookup through `cache` (as the ConfigMap stores it), both Corefiles
/// edited as the operator edits them.
fn run(cache: &str, resolver: Resolver, with_policy: bool) -> Explanation {
    let merged = merged(with_policy);
    let coredns = plan::desired(KUBEADM, &merged, Ok(VERSION), &plan::ClusterDns::default())
        .unwrap()
        .corefile;
    let cache = corefile::parse(&nodelocal::render(cache, &merged).unwrap()).unwrap();
    let cluster_dns = nodelocal::recognise(&cache).unwrap().cluster_dns;
    let config = ResolverConfig::new(resolver, SEARCH.split(' ').map(str::to_string).collect())
        .with_ndots(5);
    explain_through_cache(
        FRIGATE,
        &config,
        &cache,
        &cluster_dns,
        &corefile::parse(&coredns).unwrap(),
        &BTreeMap::new(),
        VERSION,
        Upstream::BlackHole,
    )
    .unwrap()
}

fn intercepting_addon() -> String {
    ADDON
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
}

#[test]
fn before_the_policy_the_cache_itself_sends_the_polluted_name_upstream() {
    for cache in [KUBESPRAY.to_string(), intercepting_addon()] {
        let e = run(&cache, Resolver::Musl, false);
        assert_eq!(e.leaked_names(), vec![LEAK], "{e}");
        let leak = e.upstream_queries()[0];
        assert_eq!(leak.block, "node-local .:53", "{e}");
        assert!(!e.resolved(), "{e}");
        // the search artifacts in the cluster domain went on to CoreDNS
        let first = &e.lines[0];
        assert_eq!(
            first.block, "node-local cluster.local:53 > CoreDNS .:53",
            "{e}"
        );
    }
}

#[test]
fn after_the_policy_the_cache_hands_the_suffix_to_coredns_which_rewrites_it() {
    for cache in [KUBESPRAY.to_string(), intercepting_addon()] {
        for resolver in [Resolver::Glibc, Resolver::Musl] {
            let e = run(&cache, resolver, true);
            assert!(e.leaked_names().is_empty(), "{e}");
            assert_eq!(e.trace.result, Lookup::Resolved(LEAK.into()), "{e}");
            let last = e.lines.last().unwrap();
            assert_eq!(
                last.block, "node-local tailb45a71.ts.net:53 > CoreDNS tailb45a71.ts.net:53",
                "{e}"
            );
            assert!(last.plugin.contains("rewrite"), "{e}");
        }
    }
}
