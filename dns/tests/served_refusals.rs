//! Issue 10: a policy is applied only where the lookup keeps working. Each
//! layout of tests/fixtures/corefiles/refused is refused by `plan::desired`
//! (what both the controller and `dnspolicy render` call) with its reason and
//! the Corefile line or policy field; the layouts that can be handled are.

use std::net::IpAddr;

use dnspolicy_crd::ClusterDNSPolicySpec;
use dnspolicy_crd::vocabulary::Reason;
use dnspolicy_dns::plan::{ClusterDns, Desired, Refusal, desired};
use dnspolicy_dns::policy::{MergedPolicies, merge, validate};
use dnspolicy_dns::version::CoreDnsVersion;

const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
const V1_9: CoreDnsVersion = CoreDnsVersion::new(1, 9, 4);
const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);

fn fixture(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corefiles");
    let path = if name.starts_with("kubeadm") || name.starts_with("nodelocaldns") {
        dir.join(name)
    } else {
        dir.join("refused").join(name)
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn policies(specs: &[(&str, &str)]) -> MergedPolicies {
    let valid: Vec<_> = specs
        .iter()
        .map(|(name, yaml)| {
            let spec: ClusterDNSPolicySpec = serde_yaml::from_str(yaml).unwrap();
            validate(name, &spec).unwrap()
        })
        .collect();
    merge(&valid)
}

fn tailnet() -> MergedPolicies {
    policies(&[("tailnet", "foreignSuffixes: [{suffix: tailb45a71.ts.net}]")])
}

fn render(
    corefile: &str,
    merged: &MergedPolicies,
    version: CoreDnsVersion,
) -> Result<Desired, Refusal> {
    desired(corefile, merged, Ok(version), &ClusterDns::default())
}

fn refused(result: Result<Desired, Refusal>, reason: Reason, needles: &[&str]) {
    let r = result.expect_err("refused");
    assert_eq!(r.reason, reason, "{}", r.message);
    for n in needles {
        assert!(r.message.contains(n), "{n:?} not in {:?}", r.message);
    }
    assert!(r.message.contains("nothing was written"), "{}", r.message);
}

#[test]
fn cluster_domain_is_taken_from_the_kubernetes_plugin_when_left_at_the_default() {
    let corefile = fixture("kubernetes-serves-k8s-internal.Corefile");
    let d = render(&corefile, &tailnet(), V1_14).unwrap();
    assert!(
        d.warnings.iter().any(|w| w.contains("\"k8s.internal\"")),
        "{:?}",
        d.warnings
    );
    let explicit = policies(&[(
        "tailnet",
        "clusterDomain: corp.internal\nforeignSuffixes: [{suffix: tailb45a71.ts.net}]",
    )]);
    refused(
        render(&corefile, &explicit, V1_14),
        Reason::ClusterDomainNotServed,
        &[
            "spec.clusterDomain \"corp.internal\"",
            "line 4",
            "k8s.internal",
        ],
    );
}

#[test]
fn a_suffix_served_by_a_stub_the_kubernetes_plugin_or_a_reverse_zone_is_refused() {
    let stub = fixture("stub-forward-corp-example.Corefile");
    let kubeadm = fixture("kubeadm-v1.36.3.Corefile");
    let served_by = [
        (
            &stub,
            ["corp.example", "dev.corp.example", "example"],
            "forward on line 8",
        ),
        (
            &kubeadm,
            ["in-addr.arpa", "10.in-addr.arpa", "arpa"],
            "kubernetes plugin on line 7",
        ),
    ];
    for (corefile, suffixes, server) in served_by {
        for suffix in suffixes {
            let m = policies(&[("p", &format!("foreignSuffixes: [{{suffix: {suffix}}}]"))]);
            refused(render(corefile, &m, V1_14), Reason::ZoneTaken, &[server]);
        }
    }
    // A server block for a zone the suffix falls under, on the same port.
    let taken = format!("{kubeadm}\nts.net:53 {{\n    forward . 100.100.100.100\n}}\n");
    refused(
        render(&taken, &tailnet(), V1_14),
        Reason::ZoneTaken,
        &["\"ts.net:53\" on line 25"],
    );
    // On another port it is another server: no conflict.
    let other_port = format!("{kubeadm}\nts.net:5300 {{\n    forward . 100.100.100.100\n}}\n");
    assert!(render(&other_port, &tailnet(), V1_14).is_ok());
}

#[test]
fn nested_suffixes_are_refused_within_a_policy_and_across_policies() {
    let spec: ClusterDNSPolicySpec = serde_yaml::from_str(
        "foreignSuffixes: [{suffix: ts.net}, {suffix: openstacklocal}, {suffix: tailb45a71.ts.net}]",
    )
    .unwrap();
    let err = validate("p", &spec).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.foreignSuffixes[2].suffix"]);
    assert!(
        err.to_string().contains("spec.foreignSuffixes[0].suffix"),
        "{err}"
    );
    // Across policies the later one is left out (Conflict); a hand-made
    // merge with both is refused by the plan.
    let m = policies(&[
        ("a", "foreignSuffixes: [{suffix: ts.net}]"),
        ("b", "foreignSuffixes: [{suffix: tailb45a71.ts.net}]"),
    ]);
    assert_eq!(m.conflicts.len(), 1);
    let a = policies(&[("a", "foreignSuffixes: [{suffix: ts.net}]")]);
    let b = policies(&[("b", "foreignSuffixes: [{suffix: tailb45a71.ts.net}]")]);
    let mut both = a.clone();
    both.rules.extend(b.rules);
    refused(
        render(&fixture("kubeadm-v1.36.3.Corefile"), &both, V1_14),
        Reason::NestedSuffixes,
        &["\"ts.net\"", "\"tailb45a71.ts.net\""],
    );
}

#[test]
fn forward_to_never_leads_back_to_coredns() {
    for bad in [
        "0.0.0.0",
        "::",
        "169.254.20.10",
        "169.254.169.253",
        "fe80::1",
        "::ffff:169.254.20.10",
    ] {
        let spec: ClusterDNSPolicySpec = serde_yaml::from_str(&format!(
            "foreignSuffixes: [{{suffix: corp.example, forwardTo: ['10.0.0.2', {bad:?}]}}]"
        ))
        .unwrap();
        let err = validate("p", &spec).unwrap_err();
        assert_eq!(
            err.0[0].field, "spec.foreignSuffixes[0].forwardTo[1]",
            "{bad}"
        );
        assert!(err.to_string().contains("leads back"), "{err}");
    }
    // The kube-dns Service IP and the `.` block's own address, known only to the plan.
    let m = policies(&[(
        "p",
        "foreignSuffixes: [{suffix: corp.example, action: NXDomain, forwardTo: ['10.96.0.10']}]",
    )]);
    let kubeadm = fixture("kubeadm-v1.36.3.Corefile");
    let cluster = ClusterDns {
        service_ips: vec!["10.96.0.10".parse::<IpAddr>().unwrap()],
        dns_port: None,
    };
    refused(
        desired(&kubeadm, &m, Ok(V1_14), &cluster),
        Reason::ForwardLoops,
        &["10.96.0.10:53", "cluster DNS Service"],
    );
    assert!(
        render(&kubeadm, &m, V1_14).is_ok(),
        "unknown Service IPs: not refused"
    );
    let bound = kubeadm.replacen("    errors\n", "    errors\n    bind 10.96.0.10\n", 1);
    refused(render(&bound, &m, V1_14), Reason::ForwardLoops, &["binds"]);

    // Loopback is CoreDNS itself where the `.` block listens on every
    // address (kubeadm's: no bind), on CoreDNS's port; not where it binds
    // only its pod address.
    for target in ["127.0.0.1", "127.0.0.53", "[::1]:53", "::ffff:127.0.0.1"] {
        let m = policies(&[(
            "p",
            &format!(
                "foreignSuffixes: [{{suffix: corp.example, action: NXDomain, forwardTo: [{target:?}]}}]"
            ),
        )]);
        refused(
            render(&kubeadm, &m, V1_14),
            Reason::ForwardLoops,
            &["loopback"],
        );
    }
    let m = policies(&[(
        "p",
        "foreignSuffixes: [{suffix: corp.example, action: NXDomain, forwardTo: ['127.0.54.2']}]",
    )]);
    let pod_ip = kubeadm.replacen("    errors\n", "    errors\n    bind {$POD_IP}\n", 1);
    assert!(
        render(&pod_ip, &m, V1_14).is_ok(),
        "bind {{$POD_IP}} does not listen on loopback"
    );
    let other_port = policies(&[(
        "p",
        "foreignSuffixes: [{suffix: corp.example, action: NXDomain, forwardTo: ['127.0.0.1:5353']}]",
    )]);
    assert!(
        render(&kubeadm, &other_port, V1_14).is_ok(),
        "nothing of CoreDNS's on 5353"
    );
}

#[test]
fn autopath_in_the_dot_block_is_refused_naming_its_line() {
    let corefile = fixture("autopath.Corefile");
    for version in [V1_8, V1_14] {
        refused(
            render(&corefile, &tailnet(), version),
            Reason::AutopathInDotBlock,
            &["line 3", "remove autopath"],
        );
    }
}

#[test]
fn rewrite_through_coredns_itself_is_refused_under_acl_or_a_client_ip_view() {
    for (file, line) in [
        ("acl.Corefile", "line 3"),
        ("view-client-ip.Corefile", "line 3"),
    ] {
        let corefile = fixture(file);
        refused(
            render(&corefile, &tailnet(), V1_14),
            Reason::ClientIPPolicyInDotBlock,
            &[line, "NXDomain"],
        );
        // NXDomain answers in its own block: the client address is the pod's.
        let nx = policies(&[(
            "p",
            "foreignSuffixes: [{suffix: openstacklocal, action: NXDomain}]",
        )]);
        assert!(render(&corefile, &nx, V1_14).is_ok(), "{file}");
        // Before view, Rewrite stays in the `.` block: no self-forward either.
        assert!(render(&corefile, &tailnet(), V1_9).is_ok(), "{file}");
    }
}

#[test]
fn a_stripped_name_another_block_serves_is_refused_on_the_fallback_path() {
    let corefile = fixture("separate-cluster-block-bind-interface.Corefile");
    // 1.14 with `bind eth0`: no address to ask CoreDNS again, so the `.` block.
    refused(
        render(&corefile, &tailnet(), V1_14),
        Reason::StrippedNameNotRouted,
        &["\"cluster.local\"", "line 15", "bind an IP address"],
    );
    let plain = corefile.replace("    bind eth0\n", "");
    refused(
        render(&plain, &tailnet(), V1_9),
        Reason::StrippedNameNotRouted,
        &["line 14", "upgrade CoreDNS"],
    );
    // From 1.10 with an address, the name is asked again and routed.
    assert!(render(&plain, &tailnet(), V1_14).is_ok());
    // NodeLocal DNSCache binds placeholders and serves the cluster domain in
    // its own block: Rewrite is refused there, NXDomain is not.
    let nodelocal = fixture("nodelocaldns-kubernetes-v1.36.3.Corefile");
    refused(
        render(&nodelocal, &tailnet(), V1_14),
        Reason::StrippedNameNotRouted,
        &["__pillar__dns__domain__"],
    );
}

#[test]
fn a_user_rewrite_on_coredns_1_8_is_refused() {
    let corefile = fixture("user-rewrite.Corefile");
    refused(
        render(&corefile, &tailnet(), V1_8),
        Reason::UserRewriteOnOldCoreDNS,
        &["line 3", "1.9.0"],
    );
    for version in [V1_9, V1_14] {
        assert!(render(&corefile, &tailnet(), version).is_ok(), "{version}");
    }
}

#[test]
fn host_labels_reaching_the_cluster_domain_apex_are_refused() {
    let spec: ClusterDNSPolicySpec =
        serde_yaml::from_str("foreignSuffixes: [{suffix: corp.example, hostLabels: 2}]").unwrap();
    let err = validate("p", &spec).unwrap_err();
    assert_eq!(err.0[0].field, "spec.foreignSuffixes[0].hostLabels");
    assert!(
        err.to_string().contains("cluster.local.corp.example"),
        "{err}"
    );
    let ok: ClusterDNSPolicySpec = serde_yaml::from_str(
        "clusterDomain: a.b.example\nforeignSuffixes: [{suffix: corp.example, hostLabels: 2}]",
    )
    .unwrap();
    assert!(validate("p", &ok).is_ok());
    // The domain taken from the Corefile is checked again.
    let one_label =
        fixture("kubeadm-v1.36.3.Corefile").replace("kubernetes cluster.local", "kubernetes k8s");
    refused(
        render(&one_label, &tailnet(), V1_14),
        Reason::InvalidSpec,
        &["hostLabels 1", "k8s.tailb45a71.ts.net"],
    );
}

#[test]
fn the_dns_port_flag_moves_the_listener_and_warnings_name_cache() {
    let kubeadm = fixture("kubeadm-v1.36.3.Corefile").replace(".:53 {", ". {");
    let cluster = ClusterDns {
        service_ips: vec![],
        dns_port: Some(5353),
    };
    let d = desired(&kubeadm, &tailnet(), Ok(V1_14), &cluster).unwrap();
    assert!(
        d.corefile.contains("forward . 127.0.0.1:5353"),
        "{}",
        d.corefile
    );
    // 1.8 with `cache` in the `.` block: the SERVFAIL keeps the question.
    let d = render(&fixture("kubeadm-v1.36.3.Corefile"), &tailnet(), V1_8).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let no_cache = fixture("kubeadm-v1.36.3.Corefile")
        .replace("    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n", "");
    let d = render(&no_cache, &tailnet(), V1_8).unwrap();
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(
        d.warnings[0].contains("without `cache`"),
        "{:?}",
        d.warnings
    );
}
