//! The renderer's unit tests: exact text per action, version and layout.

use super::*;
use crate::corefile::token;

const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);
const V1_9: CoreDnsVersion = CoreDnsVersion::new(1, 9, 4);

fn rule(suffix: &str, action: SuffixAction, host_labels: u8, forward_to: &[&str]) -> SuffixRule {
    SuffixRule::new("tailnet", suffix, action, host_labels, forward_to).unwrap()
}

fn merged(rules: Vec<SuffixRule>) -> MergedPolicies {
    MergedPolicies::of_one_policy("cluster.local", "tailnet", rules)
}

/// The tailnet rewritten (one host label), real hosts sent to `forward_to`.
fn tailnet_rewrite(forward_to: &[&str]) -> MergedPolicies {
    merged(vec![rule(
        "tailb45a71.ts.net",
        SuffixAction::Rewrite,
        1,
        forward_to,
    )])
}

fn ctx(version: CoreDnsVersion) -> RenderContext {
    RenderContext {
        port: Some(53),
        ..RenderContext::new(version)
    }
}

#[test]
fn rewrite_from_1_10_is_a_block_for_the_artifacts_that_asks_coredns_again() {
    let m = tailnet_rewrite(&[]);
    let text = render(&m, &ctx(V1_14)).unwrap();
    assert_eq!(text.dot_block, "");
    assert_eq!(
        text.server_blocks,
        "# tailb45a71.ts.net (Rewrite, hostLabels 1)\n\
         tailb45a71.ts.net:53 {\n\
         \x20   view dnspolicy-tailb45a71.ts.net-artifacts {\n\
         \x20       expr name() matches '^[^.]+[.].+[.]tailb45a71[.]ts[.]net[.]$'\n\
         \x20   }\n\
         \x20   errors\n\
         \x20   rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n\
         \x20   forward . 127.0.0.1:53 {\n\
         \x20       max_fails 0\n\
         \x20       max_connect_attempts 1\n\
         \x20   }\n\
         }\n"
    );
}

#[test]
fn the_forward_to_itself_never_health_checks_and_tries_once_where_it_can() {
    let m = tailnet_rewrite(&[]);
    let forward = |version| {
        let text = render(&m, &ctx(version)).unwrap().server_blocks;
        let at = text.find("    forward").unwrap();
        text[at..].to_string()
    };
    let before = "    forward . 127.0.0.1:53 {\n        max_fails 0\n    }\n}\n";
    for version in [CoreDnsVersion::new(1, 10, 0), CoreDnsVersion::new(1, 13, 1)] {
        assert_eq!(forward(version), before, "{version}");
    }
    let from = "    forward . 127.0.0.1:53 {\n        max_fails 0\n        max_connect_attempts 1\n    }\n}\n";
    for version in [CoreDnsVersion::FORWARD_CONNECT_ATTEMPTS, V1_14] {
        assert_eq!(forward(version), from, "{version}");
    }
}

#[test]
fn rewrite_before_1_10_strips_the_suffix_in_the_dot_block() {
    let m = tailnet_rewrite(&[]);
    for version in [V1_8, V1_9] {
        let text = render(&m, &ctx(version)).unwrap();
        assert_eq!(
            text.dot_block,
            "# tailb45a71.ts.net (Rewrite, hostLabels 1)\n\
             rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n"
        );
        assert_eq!(text.server_blocks, "");
    }
    // From 1.10 too, when CoreDNS cannot be reached at an address it binds.
    let c = RenderContext {
        bind: vec!["eth0".into()],
        ..ctx(V1_14)
    };
    let text = render(&m, &c).unwrap();
    assert!(
        text.dot_block.contains("rewrite stop name regex"),
        "{}",
        text.dot_block
    );
    assert_eq!(text.server_blocks, "");
}

#[test]
fn nxdomain_from_1_10_is_a_block_for_the_artifacts() {
    let m = merged(vec![rule("openstacklocal", SuffixAction::NXDomain, 1, &[])]);
    let c = RenderContext {
        bind: vec!["10.96.0.10".into()],
        ..ctx(V1_14)
    };
    let text = render(&m, &c).unwrap();
    assert_eq!(text.dot_block, "");
    assert_eq!(
        text.server_blocks,
        "# openstacklocal (NXDomain, hostLabels 1)\n\
         openstacklocal:53 {\n\
         \x20   bind 10.96.0.10\n\
         \x20   view dnspolicy-openstacklocal-artifacts {\n\
         \x20       expr name() matches '^[^.]+[.].+[.]openstacklocal[.]$'\n\
         \x20   }\n\
         \x20   errors\n\
         \x20   template ANY ANY openstacklocal {\n\
         \x20       rcode NXDOMAIN\n\
         \x20   }\n\
         }\n"
    );
}

#[test]
fn nxdomain_before_1_10_is_a_template_that_falls_through() {
    let m = merged(vec![rule("openstacklocal", SuffixAction::NXDomain, 1, &[])]);
    for version in [V1_8, V1_9] {
        let text = render(&m, &ctx(version)).unwrap();
        assert_eq!(
            text.dot_block,
            "# openstacklocal (NXDomain, hostLabels 1)\n\
             template ANY ANY openstacklocal {\n\
             \x20   match ^[^.]+[.].+[.]openstacklocal[.]$\n\
             \x20   rcode NXDOMAIN\n\
             \x20   fallthrough\n\
             }\n"
        );
        assert_eq!(text.server_blocks, "");
    }
}

#[test]
fn rewrite_with_forward_to_adds_a_block_for_the_real_hosts() {
    let m = tailnet_rewrite(&["100.100.100.100"]);
    let c = RenderContext {
        bind: vec!["10.96.0.10".into(), "{$POD_IP}".into()],
        ..ctx(V1_14)
    };
    let text = render(&m, &c).unwrap();
    assert_eq!(text.dot_block, "");
    assert_eq!(
        text.server_blocks,
        "# tailb45a71.ts.net (Rewrite, hostLabels 1, forwardTo 100.100.100.100:53)\n\
         tailb45a71.ts.net:53 {\n\
         \x20   bind 10.96.0.10 {$POD_IP}\n\
         \x20   view dnspolicy-tailb45a71.ts.net-artifacts {\n\
         \x20       expr name() matches '^[^.]+[.].+[.]tailb45a71[.]ts[.]net[.]$'\n\
         \x20   }\n\
         \x20   errors\n\
         \x20   rewrite stop name regex ^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$ {1}. answer auto\n\
         \x20   forward . 10.96.0.10:53 {\n\
         \x20       max_fails 0\n\
         \x20       max_connect_attempts 1\n\
         \x20   }\n\
         }\n\
         \n\
         # tailb45a71.ts.net (Rewrite, hostLabels 1, forwardTo 100.100.100.100:53)\n\
         tailb45a71.ts.net:53 {\n\
         \x20   bind 10.96.0.10 {$POD_IP}\n\
         \x20   view dnspolicy-tailb45a71.ts.net-hosts {\n\
         \x20       expr name() matches '^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'\n\
         \x20   }\n\
         \x20   errors\n\
         \x20   cache 30\n\
         \x20   forward . 100.100.100.100:53 {\n\
         \x20       max_connect_attempts 1\n\
         \x20   }\n\
         }\n"
    );
}

#[test]
fn rewrite_with_forward_to_is_refused_before_the_view_plugin() {
    let m = tailnet_rewrite(&["100.100.100.100"]);
    let err = render(&m, &ctx(V1_9)).unwrap_err();
    assert_eq!(
        err,
        RenderError::NeedsNewerCoreDns {
            suffix: "tailb45a71.ts.net".into(),
            policy: "tailnet".into(),
            have: V1_9,
            needed: CoreDnsVersion::new(1, 10, 0),
        }
    );
    assert!(err.to_string().contains("NXDomain"), "{err}");
    assert!(render(&m, &ctx(CoreDnsVersion::new(1, 10, 0))).is_ok());
}

#[test]
fn nxdomain_with_forward_to_is_one_block_on_every_version() {
    let m = merged(vec![rule(
        "eu-west-1.compute.internal",
        SuffixAction::NXDomain,
        1,
        &["10.0.0.2", "[fd00::2]:5353"],
    )]);
    // From 1.13.2, at most one try per target for each query.
    let capped =
        "    forward . 10.0.0.2:53 [fd00::2]:5353 {\n        max_connect_attempts 2\n    }\n";
    for (version, forward) in [
        (V1_8, "    forward . 10.0.0.2:53 [fd00::2]:5353\n"),
        (V1_9, "    forward . 10.0.0.2:53 [fd00::2]:5353\n"),
        (
            CoreDnsVersion::new(1, 13, 1),
            "    forward . 10.0.0.2:53 [fd00::2]:5353\n",
        ),
        (CoreDnsVersion::FORWARD_CONNECT_ATTEMPTS, capped),
        (V1_14, capped),
    ] {
        let text = render(&m, &ctx(version)).unwrap();
        assert_eq!(text.dot_block, "");
        assert_eq!(
            text.server_blocks,
            "# eu-west-1.compute.internal (NXDomain, hostLabels 1, forwardTo 10.0.0.2:53 [fd00::2]:5353)\n\
             eu-west-1.compute.internal:53 {\n\
             \x20   errors\n\
             \x20   cache 30\n\
             \x20   template ANY ANY eu-west-1.compute.internal {\n\
             \x20       match ^[^.]+[.].+[.]eu-west-1[.]compute[.]internal[.]$\n\
             \x20       rcode NXDOMAIN\n\
             \x20       fallthrough\n\
             \x20   }\n"
                .to_string()
                + forward
                + "}\n",
            "{version}"
        );
    }
}

#[test]
fn host_labels_shape_the_regexes() {
    let m = merged(vec![rule("corp.example", SuffixAction::Rewrite, 0, &[])]);
    let text = render(&m, &ctx(V1_8)).unwrap();
    assert!(
        text.dot_block
            .contains("regex ^(.+)[.]corp[.]example[.]$ {1}."),
        "{}",
        text.dot_block
    );

    // With 3 host labels, `x.cluster.local.corp.example` would count as a
    // host; a rule ahead of the general one strips it anyway.
    let m = merged(vec![rule(
        "corp.example",
        SuffixAction::Rewrite,
        3,
        &["10.0.0.53"],
    )]);
    let text = render(&m, &ctx(V1_14)).unwrap();
    for line in [
        "expr name() matches '^(?:[^.]+[.]){3}.+[.]corp[.]example[.]$' || name() matches '^.+[.]cluster[.]local[.]corp[.]example[.]$'\n",
        "rewrite stop name regex ^(.+[.]cluster[.]local)[.]corp[.]example[.]$ {1}. answer auto\n    \
         rewrite stop name regex ^((?:[^.]+[.]){3}.+)[.]corp[.]example[.]$ {1}. answer auto\n",
        "expr name() matches '^(?:[^.]+[.]){0,3}corp[.]example[.]$' && !(name() matches '^.+[.]cluster[.]local[.]corp[.]example[.]$')\n",
    ] {
        assert!(
            text.server_blocks.contains(line),
            "{line}\nnot in\n{}",
            text.server_blocks
        );
    }
    let m = merged(vec![rule("corp.example", SuffixAction::NXDomain, 3, &[])]);
    let text = render(&m, &ctx(V1_8)).unwrap();
    assert!(
        text.dot_block.contains(
            "match ^.+[.]cluster[.]local[.]corp[.]example[.]$ ^(?:[^.]+[.]){3}.+[.]corp[.]example[.]$\n"
        ),
        "{}",
        text.dot_block
    );
}

#[test]
fn several_suffixes_render_in_suffix_order() {
    let m = merged(vec![
        rule(
            "eu-west-1.compute.internal",
            SuffixAction::NXDomain,
            1,
            &["10.0.0.2"],
        ),
        rule("openstacklocal", SuffixAction::NXDomain, 1, &[]),
        rule("tailb45a71.ts.net", SuffixAction::Rewrite, 1, &[]),
    ]);
    let old = render(&m, &RenderContext::new(V1_8)).unwrap();
    let comments: Vec<&str> = old
        .dot_block
        .lines()
        .filter(|l| l.starts_with('#'))
        .collect();
    assert_eq!(
        comments,
        [
            "# openstacklocal (NXDomain, hostLabels 1)",
            "# tailb45a71.ts.net (Rewrite, hostLabels 1)"
        ]
    );
    let new = render(&m, &RenderContext::new(V1_14)).unwrap();
    assert_eq!(new.dot_block, "");
    let keys: Vec<&str> = new
        .server_blocks
        .lines()
        .filter(|l| l.ends_with(" {") && !l.starts_with(' '))
        .collect();
    // No port on the `.` key: none on the added keys either.
    assert_eq!(
        keys,
        [
            "eu-west-1.compute.internal {",
            "openstacklocal {",
            "tailb45a71.ts.net {"
        ]
    );
    assert!(new.server_blocks.contains("}\n\n# openstacklocal"));
}

#[test]
fn coredns_reaches_itself_where_the_dot_block_listens() {
    let at = |bind: &[&str], port| {
        let c = RenderContext {
            port,
            bind: bind.iter().map(|b| b.to_string()).collect(),
            ..RenderContext::new(V1_14)
        };
        self_address(&c)
    };
    assert_eq!(at(&[], None).as_deref(), Some("127.0.0.1:53"));
    assert_eq!(at(&[], Some(5353)).as_deref(), Some("127.0.0.1:5353"));
    assert_eq!(at(&["0.0.0.0"], Some(53)).as_deref(), Some("127.0.0.1:53"));
    assert_eq!(at(&["::"], Some(53)).as_deref(), Some("[::1]:53"));
    assert_eq!(
        at(&["lo", "169.254.20.10"], Some(53)).as_deref(),
        Some("169.254.20.10:53")
    );
    assert_eq!(
        at(&["{$POD_IP}"], Some(53)).as_deref(),
        Some("{$POD_IP}:53")
    );
    assert_eq!(at(&["eth0"], Some(53)), None);
    let lo_only = RenderContext {
        bind: vec!["lo".into()],
        ..RenderContext::new(V1_14)
    };
    let m = tailnet_rewrite(&["100.100.100.100:53"]);
    assert!(matches!(
        render(&m, &lo_only),
        Err(RenderError::NoSelfAddress { .. })
    ));
}

#[test]
fn unsupported_versions_and_taken_zones_are_refused() {
    let m = tailnet_rewrite(&[]);
    let err = render(&m, &ctx(CoreDnsVersion::new(1, 8, 3))).unwrap_err();
    assert!(err.to_string().contains("answer auto"), "{err}");
    // No policy, nothing to write, whatever the version.
    assert_eq!(
        render(&merged(vec![]), &ctx(CoreDnsVersion::new(1, 6, 0))),
        Ok(ManagedText::default())
    );

    let taken = |zone: &str| RenderContext {
        zones_in_use: vec![ZoneInUse {
            zone: zone.into(),
            key: format!("{}:53", zone.trim_end_matches('.')),
            line: 23,
        }],
        ..ctx(V1_14)
    };
    let err = render(&m, &taken("ts.net.")).unwrap_err();
    assert_eq!(
        err,
        RenderError::ZoneTaken {
            suffix: "tailb45a71.ts.net".into(),
            policy: "tailnet".into(),
            key: "ts.net:53".into(),
            line: 23
        }
    );
    assert!(render(&m, &taken("tailb45a71.ts.net.")).is_err());
    assert!(render(&m, &taken("cluster.local.tailb45a71.ts.net.")).is_err());
    assert!(render(&m, &taken("xtailb45a71.ts.net.")).is_ok());
}

#[test]
fn bind_arguments_are_copied_as_single_tokens() {
    assert_eq!(token("10.96.0.10"), "10.96.0.10");
    assert_eq!(token("{$POD_IP}"), "{$POD_IP}");
    assert_eq!(token("a b"), "\"a b\"");
    assert_eq!(token("x#y"), "\"x#y\"");
    assert_eq!(token("{"), "\"{\"");
}
