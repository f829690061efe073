//! The node-local edit over both NodeLocal DNSCache fixtures (the upstream
//! addon as shipped and as its instructions fill it in for iptables and IPVS
//! kube-proxy, and Kubespray's rendering) and over generated caches of the
//! same shape: the editing laws hold, the layout is still recognised after
//! the edit, and every added block is the cluster-domain block's shape with
//! only plugins node-cache compiles in.

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::corefile::{Corefile, Directive, ServerBlock, parse, strip};
use dnspolicy_dns::names::nested;
use dnspolicy_dns::nodelocal::{NODE_CACHE_PLUGINS, NodeLocalLayout, recognise, render};
use dnspolicy_dns::policy::{MergedPolicies, SuffixRule};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;

const ADDON: &str = include_str!("fixtures/corefiles/nodelocaldns-kubernetes-v1.36.3.Corefile");
const KUBESPRAY: &str = include_str!("fixtures/corefiles/nodelocaldns-kubespray-46dbdd39.Corefile");

/// The fixtures as clusters hold them: the addon as shipped, filled in by its
/// instructions for iptables kube-proxy (kube-dns IP bound) and IPVS (kube-dns
/// IP as the cluster DNS, `__PILLAR__DNS__SERVER__` left for node-cache to
/// delete), and Kubespray's.
fn fixtures() -> Vec<String> {
    let iptables = ADDON
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10");
    let ipvs = ADDON
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.10");
    vec![ADDON.into(), iptables, ipvs, KUBESPRAY.into()]
}

fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}[a-z0-9]"
}

fn suffix() -> impl Strategy<Value = String> {
    (
        vec(label(), 0..3),
        prop_oneof![
            Just("ts.net"),
            Just("openstacklocal"),
            Just("compute.internal"),
            Just("example"),
            Just("corp")
        ],
    )
        .prop_map(|(labels, tail)| {
            let mut name = labels.join(".");
            if !name.is_empty() {
                name.push('.');
            }
            name + tail
        })
}

fn rule() -> impl Strategy<Value = SuffixRule> {
    (
        suffix(),
        prop_oneof![Just(SuffixAction::Rewrite), Just(SuffixAction::NXDomain)],
        1u8..4,
        prop_oneof![Just(vec![]), Just(vec!["100.100.100.100"])],
        prop_oneof![Just("tailnet"), Just("openstack")],
    )
        .prop_map(|(suffix, action, host_labels, forward_to, policy)| {
            SuffixRule::new(policy, &suffix, action, host_labels, &forward_to).unwrap()
        })
}

/// Merged policies as `policy::merge` leaves them: sorted, no suffix nested
/// in another.
fn policies() -> impl Strategy<Value = MergedPolicies> {
    vec(rule(), 0..5).prop_map(|candidates| {
        let mut rules: Vec<SuffixRule> = Vec::new();
        for r in candidates {
            if !rules.iter().any(|k| nested(&r.suffix, &k.suffix)) {
                rules.push(r);
            }
        }
        rules.sort_by(|a, b| a.suffix.cmp(&b.suffix));
        let mut applied: Vec<String> = rules.iter().map(|r| r.policy.clone()).collect();
        applied.sort();
        applied.dedup();
        MergedPolicies {
            cluster_domain: "cluster.local".into(),
            rules,
            applied,
            conflicts: vec![],
        }
    })
}

/// The tailnet rewritten, its real hosts sent to `forward_to`.
fn tailnet(forward_to: &[&str]) -> MergedPolicies {
    let rule = SuffixRule::new(
        "tailnet",
        "tailb45a71.ts.net",
        SuffixAction::Rewrite,
        1,
        forward_to,
    );
    MergedPolicies::of_one_policy("cluster.local", "tailnet", vec![rule.unwrap()])
}

/// CRLF line ends and a missing final newline, as a ConfigMap may hold them.
fn spelled(text: &str, crlf: bool, final_newline: bool) -> String {
    let mut text = text.to_string();
    if !final_newline {
        text = text.trim_end_matches('\n').to_string();
    }
    if crlf {
        text = text.replace('\n', "\r\n");
    }
    text
}

/// Directives of the cluster-domain block an added block repeats.
const REPEATED: &[&str] = &[
    "errors",
    "cache",
    "reload",
    "loop",
    "bind",
    "forward",
    "prometheus",
];

/// Every law and shape property for one Corefile and policy set.
fn check_edit(
    text: &str,
    merged: &MergedPolicies,
    other: &MergedPolicies,
) -> Result<(), TestCaseError> {
    let before = parse(text).unwrap();
    let layout = recognise(&before).expect("the cache's shape is recognised");
    let rendered = render(text, merged).unwrap();

    // The editing laws.
    prop_assert_eq!(&strip(&rendered).unwrap(), text);
    prop_assert_eq!(&render(&rendered, merged).unwrap(), &rendered);
    prop_assert_eq!(
        render(&rendered, other).unwrap(),
        render(text, other).unwrap()
    );
    prop_assert_eq!(
        &render(&rendered, &MergedPolicies::default()).unwrap(),
        text
    );
    if text.ends_with('\n') {
        // nothing before the region changes
        prop_assert!(rendered.starts_with(text));
    }

    // The result parses, is still the same cache, and has one block per suffix.
    let after = parse(&rendered).unwrap();
    prop_assert_eq!(recognise(&after), Some(layout.clone()));
    prop_assert_eq!(after.blocks.len(), before.blocks.len() + merged.rules.len());
    prop_assert_eq!(
        plain_blocks(&after.blocks[..before.blocks.len()]),
        plain_blocks(&before.blocks)
    );
    for (rule, block) in merged
        .rules
        .iter()
        .zip(&after.blocks[before.blocks.len()..])
    {
        prop_assert_eq!(block.keys.len(), 1);
        prop_assert_eq!(&block.keys[0].zone, &format!("{}.", rule.suffix));
        prop_assert_eq!(block.keys[0].port, layout.port);
        check_shape(block, &before, &layout)?;
    }
    Ok(())
}

/// The added block is the cluster-domain block's repeated directives, in its
/// order and with its arguments, the forward pointed at the cluster DNS.
fn check_shape(
    block: &ServerBlock,
    before: &Corefile,
    layout: &NodeLocalLayout,
) -> Result<(), TestCaseError> {
    let cluster = &before.blocks[layout.cluster_block];
    let repeated: Vec<_> = cluster
        .directives
        .iter()
        .filter(|d| REPEATED.contains(&d.name.as_str()))
        .collect();
    // only the first forward is repeated
    let first_forward = repeated.iter().position(|d| d.name == "forward");
    let expected: Vec<_> = repeated
        .into_iter()
        .enumerate()
        .filter(|(i, d)| d.name != "forward" || Some(*i) == first_forward)
        .map(|(_, d)| d)
        .collect();
    prop_assert_eq!(block.directives.len(), expected.len());
    for (got, want) in block.directives.iter().zip(expected) {
        prop_assert!(
            NODE_CACHE_PLUGINS.contains(&got.name.as_str()),
            "{}",
            got.name
        );
        prop_assert_eq!(&got.name, &want.name);
        if got.name == "forward" {
            let mut args = vec![".".to_string()];
            args.extend(layout.cluster_dns.iter().cloned());
            prop_assert_eq!(&got.args, &args);
            let tcp: Vec<&str> = got.block.iter().map(|d| d.name.as_str()).collect();
            prop_assert_eq!(
                tcp,
                if layout.force_tcp {
                    vec!["force_tcp"]
                } else {
                    vec![]
                }
            );
        } else {
            prop_assert_eq!(&got.args, &want.args);
            prop_assert_eq!(plain(&got.block), plain(&want.block));
        }
    }
    Ok(())
}

/// Directives without their positions: name, arguments, nested, recursively.
fn plain(list: &[Directive]) -> String {
    list.iter()
        .map(|d| format!("{:?}{:?}[{}]", d.name, d.args, plain(&d.block)))
        .collect()
}

/// Blocks without their positions.
fn plain_blocks(blocks: &[ServerBlock]) -> Vec<(Vec<String>, String)> {
    blocks
        .iter()
        .map(|b| {
            (
                b.keys.iter().map(|k| k.raw.clone()).collect(),
                plain(&b.directives),
            )
        })
        .collect()
}

/// One optional directive of a generated cluster-domain block.
fn optional_directives() -> Vec<&'static str> {
    vec![
        "errors",
        "cache 30",
        "cache {\n        success 9984 30\n        denial 9984 5\n    }",
        "reload",
        "loop",
        "log",
        "health 169.254.20.10:8080",
        "hosts /etc/coredns/hosts {\n      fallthrough\n    }",
        "prometheus :9253",
        "prometheus {$MY_HOST_IP}:9253",
        "errors {\n        consolidate 5m \".* i/o timeout$\"\n    }",
    ]
}

prop_compose! {
    /// A cache of the fixtures' shape with its parts varied: keys, listen
    /// addresses, cluster DNS, transport, directives and their order, a stub
    /// zone before it, indentation.
    fn generated_cache()(
        keys in prop_oneof![Just("cluster.local:53"), Just("cluster.local old.local:53"), Just("__PILLAR__DNS__DOMAIN__:53")],
        bind in prop_oneof![
            Just("169.254.20.10"),
            Just("169.254.20.10 10.96.0.10"),
            Just("__PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__"),
            Just("169.254.20.10 __PILLAR__DNS__SERVER__"),
            Just("fd00::10 fe80::10"),
        ],
        cluster_dns in prop_oneof![Just("__PILLAR__CLUSTER__DNS__"), Just("10.233.0.3"), Just("10.233.0.3 10.233.0.4")],
        force_tcp in any::<bool>(),
        chosen in subsequence(optional_directives(), 0..=11).prop_shuffle(),
        forward_at in 0usize..12,
        stub in any::<bool>(),
        indent in prop_oneof![Just("    "), Just("  "), Just("\t")],
    ) -> String {
        let forward = if force_tcp {
            format!("forward . {cluster_dns} {{\n{indent}    force_tcp\n{indent}}}")
        } else {
            format!("forward . {cluster_dns}")
        };
        let mut lines: Vec<String> = chosen.iter().map(|d| d.replace("\n    ", &format!("\n{indent}"))).collect();
        lines.insert(forward_at.min(lines.len()), forward.clone());
        lines.insert(0, format!("bind {bind}"));
        let block = |keys: &str, body: &[String]| {
            let mut b = format!("{keys} {{\n");
            for line in body {
                b.push_str(&format!("{indent}{line}\n"));
            }
            b + "}\n"
        };
        let mut text = String::new();
        if stub {
            text += &block("stub.invalid:53", &[format!("bind {bind}"), "forward . 10.0.0.53".into()]);
        }
        text += &block(keys, &lines);
        text += &block("in-addr.arpa:53", &[format!("bind {bind}"), forward.clone(), "cache 30".into()]);
        text += &block("ip6.arpa:53", &[format!("bind {bind}"), forward]);
        text += &block(".:53", &[format!("bind {bind}"), "forward . __PILLAR__UPSTREAM__SERVERS__".into(), "cache 30".into()]);
        text
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_laws_hold_on_both_fixtures(
        which in 0usize..4,
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        merged in policies(),
        other in policies(),
    ) {
        let text = spelled(&fixtures()[which], crlf, final_newline);
        check_edit(&text, &merged, &other)?;
    }

    #[test]
    fn the_laws_hold_on_generated_caches(text in generated_cache(), merged in policies(), other in policies()) {
        check_edit(&text, &merged, &other)?;
    }
}

#[test]
fn a_stub_zone_of_the_suffix_is_refused_not_shadowed() {
    // Kubespray's nodelocaldns_external_zones puts such a block first.
    let stub = format!(
        "tailb45a71.ts.net:53 {{\n    bind 169.254.25.10\n    forward . 100.100.100.100\n}}\n{KUBESPRAY}"
    );
    let merged = tailnet(&[]);
    let err = render(&stub, &merged).unwrap_err().to_string();
    assert!(err.contains("\"tailb45a71.ts.net:53\" (line 1)"), "{err}");
}

#[test]
fn of_the_distribution_fixtures_only_the_node_local_caches_are_recognised() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corefiles");
    let mut recognised = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "Corefile") {
            let text = std::fs::read_to_string(&path).unwrap();
            if recognise(&parse(&text).unwrap()).is_some() {
                recognised.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    recognised.sort();
    assert_eq!(
        recognised,
        [
            "nodelocaldns-kubernetes-v1.36.3.Corefile",
            "nodelocaldns-kubespray-46dbdd39.Corefile"
        ]
    );
}

/// The controller's plan for a cache: write the blocks with the original
/// kept beside them, cover the path once the reload window has passed, and
/// with no policy left strip the Corefile back byte for byte and drop
/// dnspolicy's annotations; refuse (write nothing, say which ConfigMap and
/// what to do) where the edit cannot hold.
#[test]
fn a_node_local_path_is_written_covered_and_restored() {
    use dnspolicy_crd::vocabulary::annotation::{NODE_LOCAL_WRITTEN, ORIGINAL_COREFILE};
    use dnspolicy_dns::nodelocal::{Coverage, NodeLocalPath, plan_path};
    const NOW: i64 = 1_000_000;
    const WINDOW: i64 = 120;
    let merged = tailnet(&["10.0.0.53"]);
    let path = |corefile: &str, mode: Option<&str>, annotations: &[(&str, &str)]| NodeLocalPath {
        config_map: "kube-system/node-local-dns".into(),
        corefile: Some(corefile.into()),
        addon_mode: mode.map(str::to_string),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let edited = render(ADDON, &merged).unwrap();
    let written = NOW.to_string();
    let kept = [
        (ORIGINAL_COREFILE, ADDON),
        (NODE_LOCAL_WRITTEN, written.as_str()),
    ];

    let first = plan_path(
        &path(ADDON, Some("EnsureExists"), &[]),
        &merged,
        NOW,
        WINDOW,
    );
    assert_eq!(first.coverage, Coverage::Loading { seconds: WINDOW });
    let write = first.write.expect("the blocks are written");
    assert_eq!(write.corefile, edited);
    assert_eq!(write.annotations[ORIGINAL_COREFILE], ADDON);
    assert_eq!(write.annotations[NODE_LOCAL_WRITTEN], written);
    assert_eq!(first.listen.unwrap().mode(), "SetAtStartup");

    // Written: nothing more to do; covered once every cache had the window to load it.
    let soon = plan_path(&path(&edited, None, &kept), &merged, NOW + 100, WINDOW);
    assert_eq!(
        (soon.coverage, soon.write),
        (Coverage::Loading { seconds: 20 }, None)
    );
    let later = plan_path(&path(&edited, None, &kept), &merged, NOW + WINDOW, WINDOW);
    assert_eq!((later.coverage, later.write), (Coverage::Covered, None));
    // Blocks applied by hand (no time recorded) count as loaded.
    let by_hand = plan_path(&path(&edited, None, &[]), &merged, NOW, WINDOW);
    assert_eq!(by_hand.coverage, Coverage::Covered);
    assert_eq!(
        by_hand.write.unwrap().annotations.len(),
        1,
        "only the original is kept"
    );

    // The last policy gone: the original back byte for byte, annotations released.
    let none = MergedPolicies::default();
    let release = plan_path(&path(&edited, None, &kept), &none, NOW, WINDOW);
    assert_eq!(release.coverage, Coverage::Released);
    let write = release.write.expect("the original is written back");
    assert_eq!(write.corefile, ADDON);
    assert!(write.annotations.is_empty());
    assert_eq!(
        plan_path(&path(ADDON, None, &[]), &none, NOW, WINDOW).write,
        None
    );
    // Damaged markers: the kept original.
    let damaged = edited.replacen("# dnspolicy:end", "# gone", 1);
    assert_ne!(damaged, edited, "the fixture has an end marker");
    let write = plan_path(&path(&damaged, None, &kept), &none, NOW, WINDOW).write;
    assert_eq!(write.unwrap().corefile, ADDON);

    // The addon manager would revert the edit: refused, nothing written.
    let reconcile = plan_path(&path(ADDON, Some("Reconcile"), &[]), &merged, NOW, WINDOW);
    assert_eq!(reconcile.write, None);
    let Coverage::Uncovered(why) = reconcile.coverage else {
        panic!("Reconcile mode is not refused")
    };
    assert!(why.contains("kube-system/node-local-dns"), "{why}");
    assert!(why.contains("EnsureExists"), "{why}");
    // Already holding the blocks, the shipped ConfigMap is covered.
    let shipped = plan_path(
        &path(&edited, Some("Reconcile"), &kept),
        &merged,
        NOW + WINDOW,
        WINDOW,
    );
    assert_eq!(shipped.coverage, Coverage::Covered);

    let kubeadm = include_str!("fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    let unknown = plan_path(&path(kubeadm, None, &[]), &merged, NOW, WINDOW);
    assert_eq!(unknown.write, None);
    let Coverage::Uncovered(why) = unknown.coverage else {
        panic!("an unknown shape is not refused")
    };
    assert!(why.contains("does not have the shape"), "{why}");

    let huge = format!("{ADDON}{}", "# padding\n".repeat(12_000));
    let Coverage::Uncovered(why) =
        plan_path(&path(&huge, None, &[]), &merged, NOW, WINDOW).coverage
    else {
        panic!("an oversized Corefile is not refused")
    };
    assert!(why.contains("bytes"), "{why}");
}
