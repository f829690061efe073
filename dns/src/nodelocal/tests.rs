//! Unit tests of the node-local edit.

use super::*;
use crate::corefile::{SERVER_BEGIN, SERVER_END, parse};
use dnspolicy_crd::SuffixAction;

const ADDON: &str =
    include_str!("../../tests/fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");
const KUBESPRAY: &str =
    include_str!("../../tests/fixtures/corefiles/nodelocaldns-kubespray-46dbdd39.Corefile");
const KUBEADM: &str = include_str!("../../tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");

fn merged(suffixes: &[(&str, SuffixAction, &[&str])]) -> MergedPolicies {
    let rules = suffixes
        .iter()
        .map(|(suffix, action, forward_to)| {
            SuffixRule::new("tailnet", suffix, *action, 1, forward_to).unwrap()
        })
        .collect();
    MergedPolicies::of_one_policy("cluster.local", "tailnet", rules)
}

fn tailnet() -> MergedPolicies {
    merged(&[(
        "tailb45a71.ts.net",
        SuffixAction::Rewrite,
        &["100.100.100.100"],
    )])
}

#[test]
fn the_addon_template_is_recognised_with_its_placeholders() {
    let layout = recognise(&parse(ADDON).unwrap()).unwrap();
    assert_eq!(
        layout,
        NodeLocalLayout {
            cluster_block: 0,
            cluster_zones: vec!["__pillar__dns__domain__.".into()],
            port: Some(53),
            cluster_dns: vec![CLUSTER_DNS_PLACEHOLDER.into()],
            force_tcp: true,
            dot_block: 3,
            upstream: vec!["__PILLAR__UPSTREAM__SERVERS__".into()],
            bind: vec![LOCAL_DNS_PLACEHOLDER.into(), DNS_SERVER_PLACEHOLDER.into()],
            listen: Listen::AtStartup {
                bind: vec![LOCAL_DNS_PLACEHOLDER.into(), DNS_SERVER_PLACEHOLDER.into()]
            },
        }
    );
}

#[test]
fn the_listen_mode_follows_the_filled_in_bind_line() {
    // iptables kube-proxy: the instructions put the kube-dns IP in place of __PILLAR__DNS__SERVER__
    let iptables = ADDON
        .replace(LOCAL_DNS_PLACEHOLDER, "169.254.20.10")
        .replace(DNS_SERVER_PLACEHOLDER, "10.96.0.10")
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local");
    let layout = recognise(&parse(&iptables).unwrap()).unwrap();
    assert_eq!(
        layout.listen,
        Listen::Interception {
            link_local: vec!["169.254.20.10".parse().unwrap()],
            service: vec!["10.96.0.10".parse().unwrap()],
        }
    );
    assert_eq!(layout.cluster_zones, ["cluster.local."]);
    // IPVS: __PILLAR__DNS__SERVER__ stays, node-cache deletes it, and
    // __PILLAR__CLUSTER__DNS__ is the kube-dns IP
    let ipvs = ADDON
        .replace(LOCAL_DNS_PLACEHOLDER, "169.254.20.10")
        .replace(CLUSTER_DNS_PLACEHOLDER, "10.96.0.10");
    let layout = recognise(&parse(&ipvs).unwrap()).unwrap();
    assert_eq!(
        layout.listen,
        Listen::LinkLocal(vec!["169.254.20.10".parse().unwrap()])
    );
    assert_eq!(layout.cluster_dns, ["10.96.0.10"]);

    let kubespray = recognise(&parse(KUBESPRAY).unwrap()).unwrap();
    assert_eq!(
        kubespray.listen,
        Listen::LinkLocal(vec!["169.254.25.10".parse().unwrap()])
    );
    assert_eq!(kubespray.cluster_dns, ["10.233.0.3"]);
    assert_eq!(kubespray.upstream, ["/etc/resolv.conf"]);
    assert!(kubespray.force_tcp);
}

#[test]
fn corefiles_of_another_shape_are_not_recognised() {
    let refused = |text: &str| recognise(&parse(text).unwrap());
    assert_eq!(refused(KUBEADM), None, "kubernetes plugin");
    // CoreDNS with a kubernetes plugin somewhere, even with the cache's shape
    let with_kubernetes = format!("{KUBESPRAY}k8s.example:53 {{\n    kubernetes k8s.example\n}}\n");
    assert_eq!(refused(&with_kubernetes), None);
    // everything already goes to the cluster DNS: nothing leaks
    let all_to_cluster = KUBESPRAY.replace(
        "forward . /etc/resolv.conf",
        "forward . 10.233.0.3 {\n        force_tcp\n    }",
    );
    assert_eq!(refused(&all_to_cluster), None);
    // no placeholder and no reverse zone: the cluster DNS cannot be told from a stub domain
    let stub_only = "cluster.local:53 {\n    bind 169.254.20.10\n    forward . 10.96.0.10\n}\n.:53 {\n    bind 169.254.20.10\n    forward . /etc/resolv.conf\n}\n";
    assert_eq!(refused(stub_only), None);
    // no `.` block
    let no_dot =
        "cluster.local:53 {\n    bind 169.254.20.10\n    forward . __PILLAR__CLUSTER__DNS__\n}\n";
    assert_eq!(refused(no_dot), None);
    // a cache that binds nothing is not the DaemonSet's
    let unbound = KUBESPRAY.replace("    bind 169.254.25.10\n", "");
    assert_eq!(refused(&unbound), None);
}

#[test]
fn the_addon_gets_one_block_copied_from_its_cluster_block() {
    let rendered = render(ADDON, &tailnet()).unwrap();
    let added = rendered.strip_prefix(ADDON).unwrap();
    assert_eq!(
        added,
        format!(
            "{SERVER_BEGIN}\n\
             # tailb45a71.ts.net (policy tailnet): every name in it goes to the cluster DNS, which applies the policy\n\
             tailb45a71.ts.net:53 {{\n    errors\n    cache {{\n        success 9984 30\n        denial 9984 5\n    }}\n    reload\n    loop\n    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__\n    forward . __PILLAR__CLUSTER__DNS__ {{\n        force_tcp\n    }}\n    prometheus :9253\n}}\n\
             {SERVER_END}\n"
        )
    );
    assert_eq!(corefile::strip(&rendered).unwrap(), ADDON);
    assert_eq!(render(&rendered, &tailnet()).unwrap(), rendered);
    assert_eq!(
        render(&rendered, &MergedPolicies::default()).unwrap(),
        ADDON
    );
}

#[test]
fn kubespray_gets_its_filled_in_addresses_and_every_suffix_a_block() {
    let both = merged(&[
        ("openstacklocal", SuffixAction::NXDomain, &[]),
        ("tailb45a71.ts.net", SuffixAction::Rewrite, &[]),
    ]);
    let rendered = render(KUBESPRAY, &both).unwrap();
    let block = |suffix: &str| {
        format!(
            "# {suffix} (policy tailnet): every name in it goes to the cluster DNS, which applies the policy\n\
             {suffix}:53 {{\n    errors\n    cache {{\n        success 9984 30\n        denial 9984 5\n    }}\n    reload\n    loop\n    bind 169.254.25.10\n    forward . 10.233.0.3 {{\n        force_tcp\n    }}\n    prometheus :9253\n}}\n"
        )
    };
    assert_eq!(
        rendered,
        format!(
            "{KUBESPRAY}{SERVER_BEGIN}\n{}\n{}{SERVER_END}\n",
            block("openstacklocal"),
            block("tailb45a71.ts.net")
        )
    );
}

#[test]
fn a_block_for_or_around_the_suffix_is_refused_by_line() {
    let with_magicdns = format!(
        "{KUBESPRAY}ts.net:53 {{\n    bind 169.254.25.10\n    forward . 100.100.100.100\n}}\n"
    );
    assert_eq!(
        render(&with_magicdns, &tailnet()),
        Err(NodeLocalError::ZoneTaken {
            suffix: "tailb45a71.ts.net".into(),
            policy: "tailnet".into(),
            key: "ts.net:53".into(),
            line: 47,
        })
    );
    let as_suffix = merged(&[("cluster.local", SuffixAction::NXDomain, &[])]);
    assert!(matches!(
        render(KUBESPRAY, &as_suffix),
        Err(NodeLocalError::ZoneTaken { line: 1, .. })
    ));
}

#[test]
fn another_cluster_domain_is_refused() {
    let mut other = tailnet();
    other.cluster_domain = "k8s.example".into();
    let err = render(KUBESPRAY, &other).unwrap_err();
    assert_eq!(
        err,
        NodeLocalError::ClusterDomainNotForwarded {
            cluster_domain: "k8s.example".into(),
            zones: "cluster.local.".into(),
            line: 1
        }
    );
    // the addon's unfilled domain placeholder says nothing either way
    assert!(render(ADDON, &other).is_ok());
}

#[test]
fn coredns_corefiles_are_refused_and_no_policy_strips() {
    assert_eq!(
        render(KUBEADM, &tailnet()),
        Err(NodeLocalError::NotNodeLocal)
    );
    assert_eq!(
        render(KUBEADM, &MergedPolicies::default()).unwrap(),
        KUBEADM
    );
}

#[test]
fn added_blocks_use_only_node_cache_plugins() {
    // a cluster block with everything Kubespray may add to it
    let busy = KUBESPRAY.replacen(
        "    prometheus :9253\n    health 169.254.25.10:9254\n",
        "    prometheus \"{$MY_HOST_IP}:9253\"\n    health 169.254.25.10:9254\n    hosts /etc/coredns/hosts {\n      fallthrough\n    }\n    log\n",
        1,
    );
    let rendered = render(&busy, &tailnet()).unwrap();
    let after = parse(&rendered).unwrap();
    let added = after.blocks.last().unwrap();
    let names: Vec<&str> = added.directives.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names.join(" "),
        "errors cache reload loop bind forward prometheus"
    );
    assert!(names.iter().all(|n| NODE_CACHE_PLUGINS.contains(n)));
    assert_eq!(added.directives[6].args, ["{$MY_HOST_IP}:9253"]);
}
