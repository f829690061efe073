//! Laws of the kubelet and resolver models over random inputs.

use std::collections::HashMap;
use std::time::Duration;

use dnspolicy_dns::kubelet::*;
use dnspolicy_explain::resolver::*;
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,12}"
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Answer),
        Just(Outcome::NxDomain),
        Just(Outcome::NoData),
        Just(Outcome::ServFail),
        Just(Outcome::Refused),
        Just(Outcome::Timeout),
    ]
}

proptest! {
    #[test]
    fn kubelet_search_list_always_fits(
        host in prop::collection::vec("[a-z]{1,40}(\\.[a-z]{1,80}){0,3}", 0..60),
        extra in prop::collection::vec(domain(), 0..10),
        namespace in "[a-z]{1,20}",
    ) {
        let pod = PodDns {
            namespace,
            dns_config: Some(PodDnsConfig { searches: extra, ..Default::default() }),
            ..Default::default()
        };
        let node = NodeDns { host_search: host, ..Default::default() };
        let cluster = ClusterDns { domain: "cluster.local".into(), cluster_dns_ips: vec!["10.96.0.10".into()] };
        let conf = pod_resolv_conf(&pod, &node, &cluster);
        prop_assert!(conf.searches.len() <= MAX_SEARCH_PATHS);
        prop_assert!(conf.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
        prop_assert!(conf.searches.iter().all(|s| s.len() <= MAX_SEARCH_ENTRY_CHARS));
        let mut seen = std::collections::HashSet::new();
        prop_assert!(conf.searches.iter().all(|s| seen.insert(s.clone())));
        // Already within the limits: fitting again changes nothing.
        let mut events = vec![];
        prop_assert_eq!(fit_search_limits(conf.searches.clone(), &mut events), conf.searches.clone());
        prop_assert!(events.is_empty());
    }

    #[test]
    fn resolver_traces_are_consistent(
        name in prop::collection::vec(label(), 1..5).prop_map(|l| l.join(".")),
        absolute in any::<bool>(),
        searches in prop::collection::vec(domain(), 0..6),
        ndots in 0u32..7,
        musl in any::<bool>(),
        nameservers in 1u32..4,
        outcomes in prop::collection::vec(outcome(), 64),
    ) {
        let resolver = if musl { Resolver::Musl } else { Resolver::Glibc };
        let mut config = ResolverConfig::new(resolver, searches.clone()).with_ndots(ndots);
        config.nameservers = nameservers;
        let name = if absolute { format!("{name}.") } else { name };
        // A fixed outcome per distinct query, so retries see the same answer.
        let mut given: HashMap<Query, Outcome> = HashMap::new();
        let trace = resolve(&config, &name, |q| {
            let next = outcomes[given.len() % outcomes.len()];
            *given.entry(q.clone()).or_insert(next)
        }).unwrap();

        // Time: exchanges start where the previous one ended.
        let mut clock = Duration::ZERO;
        for e in &trace.exchanges {
            prop_assert_eq!(e.at, clock);
            clock += e.cost;
        }
        prop_assert_eq!(trace.worst_case, clock);

        // Each candidate is asked at most once; at most every search domain and the name itself.
        prop_assert!(trace.exchanges.len() <= searches.len() + 1);
        let mut names = std::collections::HashSet::new();
        prop_assert!(trace.exchanges.iter().all(|e| names.insert(e.name.clone())));

        // Only the last exchange ends the lookup; it says how.
        let last = trace.exchanges.last().unwrap();
        for e in &trace.exchanges[..trace.exchanges.len() - 1] {
            prop_assert!(matches!(e.then, Then::Next | Then::StopSearch));
        }
        match &trace.result {
            Lookup::Resolved(n) => {
                prop_assert_eq!(last.then, Then::Resolved);
                prop_assert_eq!(n, &last.name);
                prop_assert!(last.queries.iter().any(|(_, o)| *o == Outcome::Answer));
            }
            Lookup::Failed(f) => prop_assert_eq!(last.then, Then::Abort(*f)),
        }

        // An absolute name is never searched; musl goes on only after NXDOMAIN.
        if absolute {
            prop_assert_eq!(trace.exchanges.len(), 1);
        }
        if musl {
            for e in &trace.exchanges[..trace.exchanges.len() - 1] {
                prop_assert!(e.not_sent.is_some() || e.queries.iter().any(|(_, o)| *o == Outcome::NxDomain));
            }
        }
    }
}
