//! `explain` through NodeLocal DNSCache: a pod's query reaches the node-local
//! cache first; what the cache forwards to the cluster DNS is then served by
//! CoreDNS, and everything else leaves for the node's upstream from the cache
//! itself. Each line says which hop took it (`node-local .:53` sent it
//! upstream; `node-local cluster.local:53 > CoreDNS .:53` went on to CoreDNS).

use std::collections::BTreeMap;

use dnspolicy_dns::corefile::Corefile;
use dnspolicy_dns::version::CoreDnsVersion;

use crate::answer::{QType, Reply, Served};
use crate::custom::with_custom_keys;
use crate::explain::{
    CorefileResponder, ExplainError, Explanation, Responder, Upstream, absolute, explain,
    known_service_names,
};
use crate::resolver::ResolverConfig;
use crate::serving::ServeContext;

/// The cache, then CoreDNS for what the cache sends to the cluster DNS.
pub struct ThroughCache<'a> {
    pub cache: CorefileResponder<'a>,
    /// The cache's cluster-DNS forward targets as written
    /// (`__PILLAR__CLUSTER__DNS__`, or the kube-dns address).
    pub cluster_dns: &'a [String],
    pub coredns: CorefileResponder<'a>,
}

impl Responder for ThroughCache<'_> {
    fn serve(&self, qname: &str, qtype: QType) -> Served {
        let first = self.cache.serve(qname, qtype);
        match &first.reply {
            Reply::Upstream { targets, name } if targets.as_slice() == self.cluster_dns => {
                let second = self.coredns.serve(name, qtype);
                let mut steps = first.steps;
                steps.extend(second.steps.iter().cloned());
                Served {
                    block: format!("node-local {} > CoreDNS {}", first.block, second.block),
                    plugin: format!("{} > {}", first.plugin, second.plugin),
                    steps,
                    ..second
                }
            }
            _ => Served {
                block: format!("node-local {}", first.block),
                ..first
            },
        }
    }
}

/// `explain` for a pod whose queries go to the node-local cache (`cache`,
/// forwarding the cluster domain to `cluster_dns`) in front of CoreDNS
/// (`corefile` with its `coredns-custom` keys). In-cluster names as in
/// [`crate::explain::explain_corefile`].
#[allow(clippy::too_many_arguments)]
pub fn explain_through_cache(
    name: &str,
    config: &ResolverConfig,
    cache: &Corefile,
    cluster_dns: &[String],
    corefile: &Corefile,
    custom_keys: &BTreeMap<String, String>,
    version: CoreDnsVersion,
    upstream: Upstream,
) -> Result<Explanation, ExplainError> {
    let running = with_custom_keys(corefile, custom_keys)?;
    let known = known_service_names(name, &config.searches);
    let in_cluster = |n: &str| known.contains(&absolute(n));
    let target = name.trim_end_matches('.').to_string();
    let upstream_answer =
        |asked: &str, qtype: QType| upstream.answer(qtype, asked.trim_end_matches('.'), &target);
    let context = || ServeContext {
        client: crate::serving::Client {
            ip: crate::serving::DEFAULT_POD_IP,
            search: &config.searches,
        },
        upstream: &upstream_answer,
        ..ServeContext::new(version, &in_cluster)
    };
    let responder = ThroughCache {
        cache: CorefileResponder {
            corefile: cache,
            context: context(),
        },
        cluster_dns,
        coredns: CorefileResponder {
            corefile: &running,
            context: context(),
        },
    };
    Ok(explain(name, config, &responder, true, upstream)?)
}
