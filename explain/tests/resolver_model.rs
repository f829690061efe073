//! The glibc and musl stub-resolver models against the cases of docs/design.md §1.

use std::time::Duration;

use dnspolicy_dns::kubelet::{ClusterDns, NodeDns, PodDns, pod_resolv_conf};
use dnspolicy_explain::resolver::*;

const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const TAILNET: &str = "tailb45a71.ts.net";

fn polluted_search() -> Vec<String> {
    [
        "workflow-engine.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        TAILNET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn config(resolver: Resolver) -> ResolverConfig {
    ResolverConfig::new(resolver, polluted_search()).with_ndots(5)
}

/// CoreDNS with the kubeadm Corefile: the kubernetes plugin owns cluster.local
/// (NXDOMAIN for unknown names, A only for services); everything else goes to
/// an upstream that answers `upstream`.
fn cluster(upstream: Outcome) -> impl FnMut(&Query) -> Outcome {
    move |q: &Query| {
        if q.name == FRIGATE {
            match q.qtype {
                QType::A => Outcome::Answer,
                _ => Outcome::NoData,
            }
        } else if q.name.ends_with("cluster.local") {
            Outcome::NxDomain
        } else {
            upstream
        }
    }
}

fn names(trace: &Trace) -> Vec<&str> {
    trace.exchanges.iter().map(|e| e.name.as_str()).collect()
}

fn thens(trace: &Trace) -> Vec<Then> {
    trace.exchanges.iter().map(|e| e.then).collect()
}

#[test]
fn musl_aborts_at_the_tailnet_timeout() {
    let trace = resolve(&config(Resolver::Musl), FRIGATE, cluster(Outcome::Timeout)).unwrap();
    assert_eq!(
        names(&trace),
        vec![
            "frigate.video-management-system.svc.cluster.local.workflow-engine.svc.cluster.local",
            "frigate.video-management-system.svc.cluster.local.svc.cluster.local",
            "frigate.video-management-system.svc.cluster.local.cluster.local",
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net",
        ]
    );
    assert_eq!(
        thens(&trace),
        vec![
            Then::Next,
            Then::Next,
            Then::Next,
            Then::Abort(Failure::TryAgain)
        ]
    );
    assert_eq!(trace.result, Lookup::Failed(Failure::TryAgain));
    // musl's timeout is for the whole exchange, retries included.
    assert_eq!(trace.worst_case, Duration::from_secs(5));
    assert_eq!(trace.queries().count(), 8);
    let (q, o, at) = trace.queries().last().unwrap();
    assert_eq!(
        (q.qtype, o, at),
        (QType::Aaaa, Outcome::Timeout, Duration::ZERO)
    );
}

#[test]
fn musl_treats_servfail_and_refused_like_silence() {
    for upstream in [Outcome::ServFail, Outcome::Refused] {
        let trace = resolve(&config(Resolver::Musl), FRIGATE, cluster(upstream)).unwrap();
        assert_eq!(
            trace.result,
            Lookup::Failed(Failure::TryAgain),
            "{upstream}"
        );
        assert_eq!(trace.exchanges.len(), 4, "{upstream}");
        assert_eq!(trace.worst_case, Duration::from_secs(5), "{upstream}");
    }
}

#[test]
fn musl_goes_on_only_after_nxdomain() {
    let trace = resolve(&config(Resolver::Musl), FRIGATE, cluster(Outcome::NxDomain)).unwrap();
    assert_eq!(trace.exchanges.len(), 5);
    assert_eq!(trace.exchanges[4].name, FRIGATE);
    assert_eq!(trace.result, Lookup::Resolved(FRIGATE.to_string()));
    assert_eq!(trace.worst_case, Duration::ZERO);
}

#[test]
fn musl_stops_on_nodata_too() {
    // A suffix whose DNS answers NOERROR with no records (a wildcard of another
    // type): name_from_dns returns EAI_NODATA and the search ends there.
    let trace = resolve(&config(Resolver::Musl), FRIGATE, cluster(Outcome::NoData)).unwrap();
    assert_eq!(trace.result, Lookup::Failed(Failure::NoData));
    assert_eq!(trace.exchanges.len(), 4);
    assert_eq!(trace.worst_case, Duration::ZERO);
}

#[test]
fn musl_wildcard_answer_resolves_to_the_wrong_name() {
    let trace = resolve(&config(Resolver::Musl), FRIGATE, cluster(Outcome::Answer)).unwrap();
    assert_eq!(
        trace.result,
        Lookup::Resolved(
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net".into()
        )
    );
}

#[test]
fn glibc_stops_searching_at_the_timeout_then_tries_the_name_as_is() {
    let trace = resolve(&config(Resolver::Glibc), FRIGATE, cluster(Outcome::Timeout)).unwrap();
    assert_eq!(trace.exchanges.len(), 5);
    assert_eq!(trace.exchanges[3].then, Then::StopSearch);
    assert_eq!(trace.exchanges[4].name, FRIGATE);
    assert_eq!(trace.exchanges[4].at, Duration::from_secs(10));
    assert_eq!(trace.result, Lookup::Resolved(FRIGATE.to_string()));
    // Two tries of 5 s at the one nameserver.
    assert_eq!(trace.worst_case, Duration::from_secs(10));
}

#[test]
fn glibc_goes_on_after_servfail_and_stops_at_refused() {
    let servfail = resolve(
        &config(Resolver::Glibc),
        FRIGATE,
        cluster(Outcome::ServFail),
    )
    .unwrap();
    assert_eq!(servfail.exchanges[3].then, Then::Next);
    assert_eq!(servfail.result, Lookup::Resolved(FRIGATE.to_string()));
    assert_eq!(servfail.worst_case, Duration::ZERO);

    let refused = resolve(&config(Resolver::Glibc), FRIGATE, cluster(Outcome::Refused)).unwrap();
    assert_eq!(refused.exchanges[3].then, Then::StopSearch);
    assert_eq!(refused.result, Lookup::Resolved(FRIGATE.to_string()));
}

#[test]
fn glibc_timeouts_grow_with_nameservers_and_attempts() {
    let mut c = config(Resolver::Glibc);
    c.nameservers = 3;
    let trace = resolve(&c, FRIGATE, cluster(Outcome::Timeout)).unwrap();
    assert_eq!(trace.worst_case, Duration::from_secs(2 * (5 + 3 + 6)));

    let eks = dnspolicy_dns::kubelet::ResolvConf {
        searches: polluted_search(),
        nameservers: vec!["172.20.0.10".into()],
        options: vec!["ndots:5".into(), "timeout:2".into(), "attempts:1".into()],
        events: vec![],
    };
    let c = ResolverConfig::from_resolv_conf(Resolver::Glibc, &eks);
    let trace = resolve(&c, FRIGATE, cluster(Outcome::Timeout)).unwrap();
    assert_eq!(trace.worst_case, Duration::from_secs(2));
}

#[test]
fn trailing_dot_is_one_exchange_for_both() {
    for resolver in [Resolver::Glibc, Resolver::Musl] {
        let trace = resolve(
            &config(resolver),
            &format!("{FRIGATE}."),
            cluster(Outcome::Timeout),
        )
        .unwrap();
        assert_eq!(names(&trace), vec![FRIGATE], "{resolver}");
        assert_eq!(
            trace.result,
            Lookup::Resolved(FRIGATE.to_string()),
            "{resolver}"
        );
    }
    // An absolute name that fails is not searched either.
    let trace = resolve(&config(Resolver::Glibc), "api.github.com.", |_| {
        Outcome::NxDomain
    })
    .unwrap();
    assert_eq!(trace.exchanges.len(), 1);
    assert_eq!(trace.result, Lookup::Failed(Failure::NotFound));
}

#[test]
fn enough_dots_glibc_tries_as_is_first_musl_only_as_is() {
    let c = |r| ResolverConfig::new(r, polluted_search()).with_ndots(2);
    let upstream_nx = |q: &Query| {
        if q.name == "api.github.com" {
            Outcome::NxDomain
        } else {
            Outcome::Timeout
        }
    };

    let glibc = resolve(&c(Resolver::Glibc), "api.github.com", upstream_nx).unwrap();
    assert_eq!(glibc.exchanges[0].name, "api.github.com");
    assert_eq!(
        glibc.exchanges[1].name,
        "api.github.com.workflow-engine.svc.cluster.local"
    );
    assert_eq!(glibc.exchanges[1].then, Then::Abort(Failure::NotFound));
    assert_eq!(
        glibc.result,
        Lookup::Failed(Failure::NotFound),
        "the first as-is error is reported"
    );

    let musl = resolve(&c(Resolver::Musl), "api.github.com", upstream_nx).unwrap();
    assert_eq!(names(&musl), vec!["api.github.com"]);
    assert_eq!(musl.result, Lookup::Failed(Failure::NotFound));
}

#[test]
fn short_service_name_resolves_at_the_first_search_domain() {
    let answer = |q: &Query| {
        if q.name == "frigate.workflow-engine.svc.cluster.local" {
            Outcome::Answer
        } else {
            Outcome::Timeout
        }
    };
    for resolver in [Resolver::Glibc, Resolver::Musl] {
        let trace = resolve(&config(resolver), "frigate", answer).unwrap();
        assert_eq!(trace.exchanges.len(), 1);
        assert_eq!(
            trace.result,
            Lookup::Resolved("frigate.workflow-engine.svc.cluster.local".into())
        );
        assert_eq!(trace.worst_case, Duration::ZERO);
    }
}

#[test]
fn candidate_order() {
    let glibc = candidates(&config(Resolver::Glibc), "api.github.com").unwrap();
    let musl = candidates(&config(Resolver::Musl), "api.github.com").unwrap();
    let expected = vec![
        "api.github.com.workflow-engine.svc.cluster.local",
        "api.github.com.svc.cluster.local",
        "api.github.com.cluster.local",
        "api.github.com.tailb45a71.ts.net",
        "api.github.com",
    ];
    assert_eq!(glibc, expected);
    assert_eq!(musl, expected);
}

#[test]
fn glibc_failure_priority_nodata_then_servfail() {
    // The tailnet's server answers `tailnet`, every other NXDOMAIN.
    let lookup = |tailnet: Outcome| {
        resolve(&config(Resolver::Glibc), "api.github.com", |q: &Query| {
            if q.name.ends_with(TAILNET) {
                tailnet
            } else {
                Outcome::NxDomain
            }
        })
        .unwrap()
    };
    let nodata = lookup(Outcome::NoData);
    assert_eq!(nodata.exchanges.len(), 5);
    assert_eq!(nodata.result, Lookup::Failed(Failure::NoData));

    let servfail = lookup(Outcome::ServFail);
    assert_eq!(servfail.result, Lookup::Failed(Failure::TryAgain));
}

#[test]
fn glibc_root_on_the_search_list_replaces_the_as_is_query() {
    let c = ResolverConfig::new(Resolver::Glibc, vec![".".into()]);
    let trace = resolve(&c, "openstacklocal", |_| Outcome::NxDomain).unwrap();
    assert_eq!(names(&trace), vec!["openstacklocal"]);
}

#[test]
fn glibc_no_tld_query_skips_the_bare_dotless_name() {
    let mut c = ResolverConfig::new(Resolver::Glibc, vec!["openstacklocal".into()]);
    c.no_tld_query = true;
    let trace = resolve(&c, "frigate", |_| Outcome::NxDomain).unwrap();
    assert_eq!(names(&trace), vec!["frigate.openstacklocal"]);
}

#[test]
fn glibc_single_request_fallback_after_a_lost_aaaa() {
    let lost_aaaa = |q: &Query| match q.qtype {
        QType::A => Outcome::Answer,
        _ => Outcome::Timeout,
    };
    let mut c = ResolverConfig::new(Resolver::Glibc, vec![]);
    let trace = resolve(&c, "api.github.com", lost_aaaa).unwrap();
    assert_eq!(trace.result, Lookup::Resolved("api.github.com".into()));
    assert_eq!(trace.worst_case, Duration::from_secs(15));
    c.single_request_reopen = true;
    assert_eq!(
        resolve(&c, "api.github.com", lost_aaaa).unwrap().worst_case,
        Duration::from_secs(5)
    );
}

#[test]
fn glibc_error_reply_beside_a_real_one_is_skipped() {
    let c = ResolverConfig::new(Resolver::Glibc, vec![TAILNET.into()]).with_ndots(5);
    let trace = resolve(&c, "myhost", |q: &Query| match q.qtype {
        QType::A => Outcome::ServFail,
        _ => Outcome::NxDomain,
    })
    .unwrap();
    assert_eq!(trace.exchanges[0].then, Then::Next);
    assert_eq!(trace.result, Lookup::Failed(Failure::NotFound));
}

#[test]
fn musl_nxdomain_for_a_decides_even_if_aaaa_is_lost() {
    let c = ResolverConfig::new(Resolver::Musl, vec![TAILNET.into()]).with_ndots(5);
    let trace = resolve(&c, "myhost", |q: &Query| match (q.name.as_str(), q.qtype) {
        ("myhost", _) => Outcome::Answer,
        (_, QType::A) => Outcome::NxDomain,
        _ => Outcome::Timeout,
    })
    .unwrap();
    assert_eq!(trace.exchanges[0].then, Then::Next);
    assert_eq!(trace.exchanges[0].cost, Duration::from_secs(5));
    assert_eq!(trace.result, Lookup::Resolved("myhost".into()));
}

#[test]
fn ipv4_only_lookups_send_a_alone() {
    let mut c = config(Resolver::Musl);
    c.family = Family::Inet;
    let trace = resolve(&c, FRIGATE, cluster(Outcome::NxDomain)).unwrap();
    assert!(trace.queries().all(|(q, _, _)| q.qtype == QType::A));
    assert_eq!(trace.queries().count(), 5);
}

#[test]
fn musl_ignores_a_search_line_longer_than_255_bytes() {
    let long_host: Vec<String> = (1..=12)
        .map(|i| format!("zone{i:02}.corp.example.com"))
        .collect();
    let node = NodeDns {
        host_search: long_host,
        ..Default::default()
    };
    let cluster = ClusterDns {
        domain: "cluster.local".into(),
        cluster_dns_ips: vec!["10.96.0.10".into()],
    };
    let pod = PodDns {
        namespace: "workflow-engine".into(),
        ..Default::default()
    };
    let conf = pod_resolv_conf(&pod, &node, &cluster);
    assert!(conf.render().lines().next().unwrap().len() + 1 > MUSL_MAX_LINE);
    assert!(
        ResolverConfig::from_resolv_conf(Resolver::Musl, &conf)
            .searches
            .is_empty()
    );
    assert_eq!(
        ResolverConfig::from_resolv_conf(Resolver::Glibc, &conf)
            .searches
            .len(),
        15
    );
}

#[test]
fn options_are_read_and_capped_per_library() {
    let conf = dnspolicy_dns::kubelet::ResolvConf {
        nameservers: vec!["10.96.0.10".into()],
        searches: vec![],
        options: vec![
            "ndots:20".into(),
            "attempts:9".into(),
            "timeout:45".into(),
            "rotate".into(),
        ],
        events: vec![],
    };
    let g = ResolverConfig::from_resolv_conf(Resolver::Glibc, &conf);
    assert_eq!(
        (g.ndots, g.attempts, g.timeout_secs, g.rotate),
        (15, 5, 30, true)
    );
    let m = ResolverConfig::from_resolv_conf(Resolver::Musl, &conf);
    assert_eq!(
        (m.ndots, m.attempts, m.timeout_secs, m.rotate),
        (15, 9, 45, false)
    );
}

#[test]
fn bad_names_are_errors_naming_the_input() {
    let err = resolve(&config(Resolver::Glibc), "frigate..svc", |_| {
        Outcome::Answer
    })
    .unwrap_err();
    assert_eq!(err.name, "frigate..svc");
    assert!(err.to_string().contains("empty label"));
    let long = format!("{}.example.com", "a".repeat(64));
    assert!(resolve(&config(Resolver::Musl), &long, |_| Outcome::Answer).is_err());
}

#[test]
fn a_candidate_too_long_to_send_stops_glibc_and_is_skipped_by_musl() {
    let label = "a".repeat(60);
    let name = format!("{label}.{label}.{label}"); // 182 chars, 2 dots
    let long_domain = format!("{label}.example.com"); // candidate of 255 chars
    let search = vec![long_domain, TAILNET.to_string()];
    let answer = |_: &Query| Outcome::NxDomain;

    let glibc = resolve(
        &ResolverConfig::new(Resolver::Glibc, search.clone()).with_ndots(5),
        &name,
        answer,
    )
    .unwrap();
    assert_eq!(
        glibc.exchanges[0].not_sent,
        Some("longer than a DNS name can be")
    );
    assert_eq!(glibc.exchanges[0].then, Then::StopSearch);
    assert_eq!(glibc.exchanges[1].name, name);

    let musl = resolve(
        &ResolverConfig::new(Resolver::Musl, search).with_ndots(5),
        &name,
        answer,
    )
    .unwrap();
    assert_eq!(
        musl.exchanges[0].not_sent,
        Some("longer than a DNS name can be")
    );
    assert_eq!(musl.exchanges[1].name, format!("{name}.{TAILNET}"));
}
