//! Table tests for the kubelet model. Cases marked `dns_test.go` are kubelet's
//! own (pkg/kubelet/network/dns/dns_test.go) with the same inputs and answers;
//! the rest use the foreign suffixes from docs/design.md §1.

use dnspolicy_dns::kubelet::*;

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// The search list kubelet gives a pod in `ns` that uses the cluster's DNS:
/// the three cluster.local entries, then `then` (the host's, the pod's own).
fn cluster_first_searches(ns: &str, then: &[&str]) -> Vec<String> {
    let mut searches = vec![
        format!("{ns}.svc.cluster.local"),
        "svc.cluster.local".into(),
        "cluster.local".into(),
    ];
    searches.extend(s(then));
    searches
}

/// `conf` asks the cluster DNS and searches the cluster entries for `ns`,
/// then the tailnet.
fn assert_cluster_dns_then_tailnet(conf: &ResolvConf, ns: &str) {
    assert_eq!(conf.nameservers, s(&["10.96.0.10"]));
    assert_eq!(
        conf.searches,
        cluster_first_searches(ns, &["tailb45a71.ts.net"])
    );
}

fn pod(ns: &str, policy: &str, host_network: bool) -> PodDns {
    PodDns {
        namespace: ns.into(),
        dns_policy: DnsPolicy::from_spec(Some(policy)),
        host_network,
        dns_config: None,
    }
}

fn kubeadm() -> ClusterDns {
    ClusterDns {
        domain: "cluster.local".into(),
        cluster_dns_ips: s(&["10.96.0.10"]),
    }
}

fn tailscale_node() -> NodeDns {
    NodeDns::parse_resolv_conf(
        "# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).\n\
         nameserver 100.100.100.100\n\
         nameserver 192.168.1.1\n\
         search tailb45a71.ts.net.\n",
    )
    .unwrap()
}

/// What kubelet writes for `pod` on a Tailscale node of a kubeadm cluster.
fn on_tailscale_node(pod: &PodDns) -> ResolvConf {
    pod_resolv_conf(pod, &tailscale_node(), &kubeadm())
}

// ---- docs/design.md §1: what a foreign suffix does to a ClusterFirst pod ----

#[test]
fn tailscale_suffix_follows_the_three_cluster_entries() {
    let conf = on_tailscale_node(&pod("workflow-engine", "ClusterFirst", false));
    assert_cluster_dns_then_tailnet(&conf, "workflow-engine");
    assert_eq!(conf.options, s(&["ndots:5"]));
    assert!(conf.events.is_empty());
    assert_eq!(
        conf.render(),
        "search workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net\n\
         nameserver 10.96.0.10\n\
         options ndots:5\n"
    );
    assert!(is_polluted(&conf.searches, &s(&["tailb45a71.ts.net"])));
}

#[test]
fn openstack_and_aws_suffixes() {
    let openstack =
        NodeDns::parse_resolv_conf("nameserver 10.0.0.2\nsearch openstacklocal\n").unwrap();
    let conf = pod_resolv_conf(
        &pod("video-management-system", "", false),
        &openstack,
        &kubeadm(),
    );
    assert_eq!(conf.searches.last().unwrap(), "openstacklocal");
    assert_eq!(
        polluting_suffixes(&conf.searches, &s(&["openstacklocal", "tailb45a71.ts.net"])),
        vec!["openstacklocal"]
    );

    let eks = NodeDns::parse_resolv_conf(
        "nameserver 10.100.0.2\nsearch ap-northeast-2.compute.internal\noptions timeout:2 attempts:5\n",
    )
    .unwrap();
    let eks_cluster = ClusterDns {
        domain: "cluster.local".into(),
        cluster_dns_ips: s(&["172.20.0.10"]),
    };
    let conf = pod_resolv_conf(&pod("default", "ClusterFirst", false), &eks, &eks_cluster);
    assert_eq!(
        conf.searches,
        cluster_first_searches("default", &["ap-northeast-2.compute.internal"])
    );
    // ClusterFirst replaces the host's options with ndots:5.
    assert_eq!(conf.options, s(&["ndots:5"]));
    assert_eq!(conf.ndots(), 5);
}

#[test]
fn host_network_cluster_first_falls_back_to_the_host_file() {
    let conf = on_tailscale_node(&pod("kube-system", "ClusterFirst", true));
    assert_eq!(conf.nameservers, s(&["100.100.100.100", "192.168.1.1"]));
    assert_eq!(conf.searches, s(&["tailb45a71.ts.net"]));
    assert!(conf.options.is_empty());
    assert_eq!(conf.ndots(), 1);
}

#[test]
fn cluster_first_with_host_net_keeps_cluster_dns() {
    let conf = on_tailscale_node(&pod("monitoring", "ClusterFirstWithHostNet", true));
    assert_cluster_dns_then_tailnet(&conf, "monitoring");
}

#[test]
fn default_policy_is_the_host_file_with_its_options() {
    let node = NodeDns::parse_resolv_conf(
        "nameserver 10.0.0.2\nsearch openstacklocal\noptions edns0 trust-ad\n",
    )
    .unwrap();
    let conf = pod_resolv_conf(&pod("default", "Default", false), &node, &kubeadm());
    assert_eq!(conf.nameservers, s(&["10.0.0.2"]));
    assert_eq!(conf.searches, s(&["openstacklocal"]));
    assert_eq!(conf.options, s(&["edns0", "trust-ad"]));
}

#[test]
fn none_policy_only_has_the_pod_dns_config() {
    let mut p = pod("workflow-engine", "None", false);
    p.dns_config = Some(PodDnsConfig {
        nameservers: s(&["10.96.0.10"]),
        searches: s(&["workflow-engine.svc.cluster.local", "svc.cluster.local"]),
        options: vec![PodDnsOption::new("ndots", Some("2"))],
    });
    let conf = on_tailscale_node(&p);
    assert_eq!(
        conf.searches,
        s(&["workflow-engine.svc.cluster.local", "svc.cluster.local"])
    );
    assert!(!is_polluted(&conf.searches, &s(&["tailb45a71.ts.net"])));
    assert_eq!(conf.options, s(&["ndots:2"]));
}

#[test]
fn dns_config_searches_are_appended_after_the_host_and_deduplicated() {
    let mut p = pod("workflow-engine", "ClusterFirst", false);
    p.dns_config = Some(PodDnsConfig {
        nameservers: vec![],
        searches: s(&["tailb45a71.ts.net", "corp.example.com", "svc.cluster.local"]),
        options: vec![PodDnsOption::new("single-request-reopen", None)],
    });
    let conf = on_tailscale_node(&p);
    assert_eq!(
        conf.searches,
        cluster_first_searches(
            "workflow-engine",
            &["tailb45a71.ts.net", "corp.example.com"]
        )
    );
    assert_eq!(conf.options, s(&["ndots:5", "single-request-reopen"]));
}

#[test]
fn host_search_repeating_a_cluster_entry_is_dropped() {
    let node =
        NodeDns::parse_resolv_conf("nameserver 10.0.0.2\nsearch cluster.local tailb45a71.ts.net\n")
            .unwrap();
    let conf = pod_resolv_conf(&pod("workflow-engine", "", false), &node, &kubeadm());
    assert_eq!(
        conf.searches,
        cluster_first_searches("workflow-engine", &["tailb45a71.ts.net"])
    );
}

#[test]
fn missing_cluster_dns_falls_back_to_default_with_an_event() {
    let cluster = ClusterDns {
        domain: "cluster.local".into(),
        cluster_dns_ips: vec![],
    };
    let conf = pod_resolv_conf(
        &pod("workflow-engine", "ClusterFirst", false),
        &tailscale_node(),
        &cluster,
    );
    assert_eq!(conf.searches, s(&["tailb45a71.ts.net"]));
    assert_eq!(conf.events[0].reason, "MissingClusterDNS");
}

#[test]
fn empty_cluster_domain_gives_only_the_host_search() {
    let cluster = ClusterDns {
        domain: "".into(),
        cluster_dns_ips: s(&["10.96.0.10"]),
    };
    let conf = pod_resolv_conf(
        &pod("workflow-engine", "", false),
        &tailscale_node(),
        &cluster,
    );
    assert_eq!(conf.nameservers, s(&["10.96.0.10"]));
    assert_eq!(conf.searches, s(&["tailb45a71.ts.net"]));
}

#[test]
fn unknown_policy_is_read_as_cluster_first_like_kubelet_does() {
    assert_eq!(
        DnsPolicy::parse(Some("ClusterFist")),
        Err(UnknownDnsPolicy("ClusterFist".to_string()))
    );
    let conf = on_tailscale_node(&pod("workflow-engine", "ClusterFist", false));
    assert_eq!(conf.nameservers, s(&["10.96.0.10"]));
    assert_eq!(conf.searches.len(), 4);
}

#[test]
fn pod_searches_is_the_search_list_alone() {
    let p = PodDns {
        namespace: "workflow-engine".into(),
        dns_config: Some(PodDnsConfig {
            searches: s(&["corp.example.com"]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = NodeDns {
        host_search: s(&["tailb45a71.ts.net"]),
        ..Default::default()
    };
    assert_eq!(
        pod_searches(&p, &node, "cluster.local"),
        cluster_first_searches(
            "workflow-engine",
            &["tailb45a71.ts.net", "corp.example.com"]
        )
    );
}

// ---- Limits: formDNSSearchFitsLimits ----

#[test]
fn entry_over_253_chars_is_dropped_alone() {
    let long = format!("{}.ts.net", "a".repeat(250));
    let node = NodeDns {
        host_search: vec![long, "tailb45a71.ts.net".into()],
        ..Default::default()
    };
    let conf = pod_resolv_conf(&pod("workflow-engine", "", false), &node, &kubeadm());
    assert_eq!(
        conf.searches,
        cluster_first_searches("workflow-engine", &["tailb45a71.ts.net"])
    );
    assert_eq!(conf.events.len(), 1);

    // Exactly 253 is kept.
    let edge = "b".repeat(253);
    let mut events = vec![];
    assert_eq!(
        fit_search_limits(vec![edge.clone()], &mut events),
        vec![edge]
    );
    assert!(events.is_empty());
}

#[test]
fn the_32_cut_comes_before_dropping_long_entries() {
    // 31 short entries, one 254-char entry, then the foreign suffix as entry 33:
    // kubelet cuts to 32 first (losing the suffix), then drops the long one.
    let mut search: Vec<String> = (1..=31).map(|i| format!("d{i}.example")).collect();
    search.push("c".repeat(254));
    search.push("tailb45a71.ts.net".into());
    let mut events = vec![];
    let fitted = fit_search_limits(search, &mut events);
    assert_eq!(fitted.len(), 31);
    assert!(!fitted.contains(&"tailb45a71.ts.net".to_string()));
    assert_eq!(events.len(), 1);
}

#[test]
fn too_many_host_entries_push_the_suffix_out() {
    // 29 host domains plus 3 cluster entries fill the 32; a 30th host domain is cut.
    let mut host: Vec<String> = (1..=29).map(|i| format!("corp{i}.example.com")).collect();
    host.push("tailb45a71.ts.net".into());
    let node = NodeDns {
        host_search: host,
        ..Default::default()
    };
    let conf = pod_resolv_conf(&pod("workflow-engine", "", false), &node, &kubeadm());
    assert_eq!(conf.searches.len(), 32);
    assert!(!is_polluted(&conf.searches, &s(&["tailb45a71.ts.net"])));
    assert!(
        conf.events[0]
            .message
            .starts_with("Search Line limits were exceeded")
    );
}

fn search_path_list_2048_chars() -> Vec<String> {
    // dns_test.go: 2048 = 128 + 127 * 15 + 15
    let mut list = vec!["A".repeat(128)];
    list.extend(std::iter::repeat_n("A".repeat(127), 15));
    list
}

#[test]
fn dns_test_go_form_dns_search_fits_limits() {
    let names = |n: usize| -> Vec<String> {
        let mut v = s(&["testNS.svc.TEST", "svc.TEST", "TEST"]);
        v.extend((4..=n).map(|i| i.to_string()));
        v
    };
    let cases: Vec<(&str, Vec<String>, Vec<String>, bool)> = vec![
        ("valid: 3 search paths", names(3), names(3), false),
        (
            "valid: 5 search paths",
            s(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
            s(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
            false,
        ),
        (
            "invalid: 256 characters search path",
            {
                let mut v = s(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA"]);
                v.push("B".repeat(256));
                v.push("BBB".into());
                v
            },
            s(&["testNS.svc.TEST", "svc.TEST", "TEST", "AAA", "BBB"]),
            true,
        ),
        (
            "valid: 2048 characters",
            search_path_list_2048_chars(),
            search_path_list_2048_chars(),
            false,
        ),
        (
            "invalid: 2050 characters",
            {
                let mut v = search_path_list_2048_chars();
                v.push("B".into());
                v
            },
            search_path_list_2048_chars(),
            true,
        ),
        ("valid: 32 search paths", names(32), names(32), false),
        ("invalid: 33 search paths", names(33), names(32), true),
    ];
    for (desc, input, want, event) in cases {
        let mut events = vec![];
        let got = fit_search_limits(input, &mut events);
        assert_eq!(got, want, "{desc}");
        assert_eq!(!events.is_empty(), event, "{desc}: event");
        if event {
            assert_eq!(
                events[0].message,
                format!(
                    "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                    want.join(" ")
                ),
                "{desc}"
            );
        }
    }
}

#[test]
fn dns_test_go_form_dns_nameservers_fits_limits() {
    let node = |servers: &[&str]| NodeDns {
        host_nameservers: s(servers),
        ..Default::default()
    };
    let p = pod("testNS", "Default", false);
    let c = kubeadm();
    for (servers, want, event) in [
        (vec!["127.0.0.1"], vec!["127.0.0.1"], false),
        (
            vec!["127.0.0.1", "10.0.0.10", "8.8.8.8"],
            vec!["127.0.0.1", "10.0.0.10", "8.8.8.8"],
            false,
        ),
        (
            vec!["127.0.0.1", "10.0.0.10", "8.8.8.8", "1.2.3.4"],
            vec!["127.0.0.1", "10.0.0.10", "8.8.8.8"],
            true,
        ),
    ] {
        let conf = pod_resolv_conf(&p, &node(&servers), &c);
        assert_eq!(conf.nameservers, s(&want));
        assert_eq!(!conf.events.is_empty(), event);
    }
}

#[test]
fn dns_test_go_merge_dns_options() {
    let three = Some("3");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let existing = s(&["ndots:5", "debug"]);
    assert_eq!(
        sorted(merge_options(&existing, &[])),
        sorted(s(&["ndots:5", "debug"]))
    );
    assert_eq!(
        sorted(merge_options(
            &existing,
            &[
                PodDnsOption::new("single-request", None),
                PodDnsOption::new("attempts", three)
            ]
        )),
        sorted(s(&["ndots:5", "debug", "single-request", "attempts:3"]))
    );
    assert_eq!(
        merge_options(
            &existing,
            &[
                PodDnsOption::new("ndots", three),
                PodDnsOption::new("debug", None),
                PodDnsOption::new("single-request", None),
                PodDnsOption::new("attempts", three),
            ]
        ),
        s(&["ndots:3", "debug", "single-request", "attempts:3"])
    );
}

#[test]
fn dns_test_go_get_pod_dns_type() {
    // (policy, hostNetwork, cluster DNS known) -> uses cluster DNS?
    let node = tailscale_node();
    for (policy, host_network, want_cluster) in [
        ("ClusterFirst", false, true),
        ("ClusterFirstWithHostNet", true, true),
        ("ClusterFirstWithHostNet", false, true),
        ("Default", false, false),
        ("Default", true, false),
        ("ClusterFirst", true, false),
    ] {
        let conf = pod_resolv_conf(&pod("testNS", policy, host_network), &node, &kubeadm());
        assert_eq!(
            conf.nameservers == s(&["10.96.0.10"]),
            want_cluster,
            "{policy} hostNetwork={host_network}"
        );
    }
    let none = pod_resolv_conf(&pod("testNS", "None", false), &node, &kubeadm());
    assert_eq!(none, ResolvConf::default());
}

#[test]
fn dns_test_go_get_pod_dns_without_resolv_conf() {
    // testGetPodDNS: kubelet --resolv-conf="", cluster domain kubernetes.io, pods without a namespace.
    let cluster = ClusterDns {
        domain: "kubernetes.io".into(),
        cluster_dns_ips: s(&["203.0.113.1"]),
    };
    let node = NodeDns {
        no_resolv_conf: true,
        ..Default::default()
    };
    let with_host_net = pod_resolv_conf(&pod("", "ClusterFirstWithHostNet", true), &node, &cluster);
    assert_eq!(with_host_net.nameservers, s(&["203.0.113.1"]));
    assert_eq!(with_host_net.searches[0], ".svc.kubernetes.io");
    for (policy, host_network) in [("ClusterFirst", true), ("Default", true)] {
        let conf = pod_resolv_conf(&pod("", policy, host_network), &node, &cluster);
        assert_eq!(conf.nameservers, s(&["127.0.0.1"]), "{policy}");
        assert_eq!(conf.searches, s(&["."]), "{policy}");
    }
    let plain = pod_resolv_conf(&pod("", "ClusterFirst", false), &node, &cluster);
    assert_eq!(
        plain.searches,
        s(&[".svc.kubernetes.io", "svc.kubernetes.io", "kubernetes.io"])
    );
}

#[test]
fn dns_test_go_get_pod_dns_custom() {
    let node = NodeDns::parse_resolv_conf("nameserver 8.8.8.8\nsearch host.domain\n").unwrap();
    let cluster = ClusterDns {
        domain: "kubernetes.io".into(),
        cluster_dns_ips: s(&["10.0.0.10"]),
    };
    let config = |servers: &[&str], searches: &[&str]| PodDnsConfig {
        nameservers: s(servers),
        searches: s(searches),
        options: vec![
            PodDnsOption::new("ndots", Some("3")),
            PodDnsOption::new("debug", None),
        ],
    };
    let run = |policy: &str, host_network: bool, cfg: Option<PodDnsConfig>| {
        let mut p = pod("testNS", policy, host_network);
        p.dns_config = cfg;
        pod_resolv_conf(&p, &node, &cluster)
    };

    assert_eq!(run("None", false, None), ResolvConf::default());

    let c = run(
        "None",
        false,
        Some(config(&["203.0.113.1"], &["my.domain", "second.domain"])),
    );
    assert_eq!(
        (c.nameservers, c.searches, c.options),
        (
            s(&["203.0.113.1"]),
            s(&["my.domain", "second.domain"]),
            s(&["ndots:3", "debug"])
        )
    );

    let cluster_search = s(&[
        "testNS.svc.kubernetes.io",
        "svc.kubernetes.io",
        "kubernetes.io",
        "host.domain",
        "my.domain",
    ]);
    for (policy, host_network) in [("ClusterFirst", false), ("ClusterFirstWithHostNet", true)] {
        let c = run(
            policy,
            host_network,
            Some(config(&["10.0.0.11"], &["my.domain"])),
        );
        assert_eq!(c.nameservers, s(&["10.0.0.10", "10.0.0.11"]), "{policy}");
        assert_eq!(c.searches, cluster_search, "{policy}");
        assert_eq!(c.options, s(&["ndots:3", "debug"]), "{policy}");
    }

    let c = run(
        "Default",
        false,
        Some(config(&["10.0.0.11"], &["my.domain"])),
    );
    assert_eq!(
        (c.nameservers, c.searches, c.options),
        (
            s(&["8.8.8.8", "10.0.0.11"]),
            s(&["host.domain", "my.domain"]),
            s(&["ndots:3", "debug"])
        )
    );
}

/// (data, nameservers, searches, options, is error)
type ParseCase<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str], bool);

#[test]
fn dns_test_go_parse_resolv_conf() {
    let cases: &[ParseCase] = &[
        ("", &[], &[], &[], false),
        (" ", &[], &[], &[], false),
        ("\n", &[], &[], &[], false),
        ("\t\n\t", &[], &[], &[], false),
        ("#comment\n", &[], &[], &[], false),
        (" #comment\n", &[], &[], &[], false),
        ("#comment\n#comment", &[], &[], &[], false),
        ("#comment\nnameserver", &[], &[], &[], true),
        ("#comment\nnameserver\nsearch", &[], &[], &[], true),
        (
            "#comment\nnameserver 1.2.3.4\nsearch",
            &["1.2.3.4"],
            &[],
            &[],
            false,
        ),
        ("nameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
        (" nameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
        ("\tnameserver 1.2.3.4", &["1.2.3.4"], &[], &[], false),
        ("nameserver\t1.2.3.4", &["1.2.3.4"], &[], &[], false),
        ("nameserver \t 1.2.3.4", &["1.2.3.4"], &[], &[], false),
        (
            "nameserver 1.2.3.4\nnameserver 5.6.7.8",
            &["1.2.3.4", "5.6.7.8"],
            &[],
            &[],
            false,
        ),
        ("nameserver 1.2.3.4 #comment", &["1.2.3.4"], &[], &[], false),
        ("search ", &[], &[], &[], false),
        ("search foo", &[], &["foo"], &[], false),
        ("search foo bar", &[], &["foo", "bar"], &[], false),
        ("search foo. bar", &[], &["foo", "bar"], &[], false),
        (
            "search foo bar bat\n",
            &[],
            &["foo", "bar", "bat"],
            &[],
            false,
        ),
        ("search foo\nsearch bar", &[], &["bar"], &[], false),
        (
            "nameserver 1.2.3.4\nsearch foo bar",
            &["1.2.3.4"],
            &["foo", "bar"],
            &[],
            false,
        ),
        (
            "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar",
            &["1.2.3.4", "5.6.7.8"],
            &["bar"],
            &[],
            false,
        ),
        (
            "#comment\nnameserver 1.2.3.4\n#comment\nsearch foo\ncomment",
            &["1.2.3.4"],
            &["foo"],
            &[],
            false,
        ),
        ("options ", &[], &[], &[], false),
        (
            "options ndots:5 attempts:2",
            &[],
            &[],
            &["ndots:5", "attempts:2"],
            false,
        ),
        (
            "options ndots:1\noptions ndots:5 attempts:3",
            &[],
            &[],
            &["ndots:5", "attempts:3"],
            false,
        ),
        (
            "nameserver 1.2.3.4\nsearch foo\nnameserver 5.6.7.8\nsearch bar\noptions ndots:5 attempts:4",
            &["1.2.3.4", "5.6.7.8"],
            &["bar"],
            &["ndots:5", "attempts:4"],
            false,
        ),
    ];
    for (data, ns, search, opts, is_err) in cases {
        match NodeDns::parse_resolv_conf(data) {
            Ok(node) => {
                assert!(!is_err, "{data:?} should fail");
                assert_eq!(node.host_nameservers, s(ns), "{data:?}");
                assert_eq!(node.host_search, s(search), "{data:?}");
                assert_eq!(node.host_options, s(opts), "{data:?}");
            }
            Err(e) => {
                assert!(is_err, "{data:?}: {e}");
                assert_eq!(e.line, 2, "{data:?}");
            }
        }
    }
}
