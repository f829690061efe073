//! docs/design.md §3 through the serving model: the fixtures' real Corefiles, the
//! stanzas rendered for them and placed by the editor, then every case served
//! as CoreDNS would, on each supported version band. (The same stanzas on the
//! real CoreDNS binaries: stanza_coredns.rs.)

use dnspolicy_crd::SuffixAction;
use dnspolicy_dns::corefile;
use dnspolicy_dns::policy::{MergedPolicies, SuffixRule};
use dnspolicy_dns::stanza::{RenderContext, RenderError, render, warnings};
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_explain::serving::{Outcome, QType, Reply, ServeContext, Served, serve};

const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const TAILNET: &str = "tailb45a71.ts.net";

/// One version per band: before the rewrite reverter fix, before the
/// template SERVFAIL fix and `view`, first with `view`, current.
const BANDS: [CoreDnsVersion; 4] = [
    CoreDnsVersion::new(1, 8, 4),
    CoreDnsVersion::new(1, 9, 4),
    CoreDnsVersion::new(1, 10, 0),
    CoreDnsVersion::new(1, 14, 2),
];

/// Fixtures whose `.` block takes the managed text directly (k3s and AKS
/// go through coredns-custom imports instead).
const FIXTURES: [&str; 4] = [
    "kubeadm-v1.36.3.Corefile",
    "kubeadm-v1.19.16.Corefile",
    "kubeadm-v1.14.10.Corefile",
    "eks-addon.Corefile",
];

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../dns/tests/fixtures/corefiles/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn policy(suffix: &str, action: SuffixAction, forward_to: &[&str]) -> MergedPolicies {
    let rule = SuffixRule::new("tailnet", suffix, action, 1, forward_to).unwrap();
    MergedPolicies::of_one_policy("cluster.local", "tailnet", vec![rule])
}

/// Renders `merged` into the fixture with the editor; the parsed result.
fn apply(
    text: &str,
    merged: &MergedPolicies,
    version: CoreDnsVersion,
) -> Result<corefile::Corefile, RenderError> {
    let parsed = corefile::parse(text).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let managed = render(merged, &ctx)?;
    let edited = corefile::render(text, &managed).unwrap();
    Ok(corefile::parse(&edited).unwrap())
}

fn frigate_exists(name: &str) -> bool {
    name == format!("{FRIGATE}.")
}

fn ask(c: &corefile::Corefile, name: &str, qtype: QType, version: CoreDnsVersion) -> Served {
    serve(c, name, qtype, &ServeContext::new(version, &frigate_exists))
}

fn upstream(targets: &[&str], name: &str) -> Reply {
    Reply::Upstream {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        name: name.into(),
    }
}

const RESOLV: &[&str] = &["/etc/resolv.conf"];

/// Names the tailnet policy must leave alone (case 5).
const WITHOUT_SUFFIX: [&str; 4] = [
    FRIGATE,
    "nosuch.svc.cluster.local",
    "api.github.com",
    "myhost.ts.net",
];

/// A real host of the tailnet, sent to the policy's forwardTo.
fn myhost_via_forward_to() -> Reply {
    upstream(&["100.100.100.100:53"], &format!("myhost.{TAILNET}."))
}

/// Each of `names` (A) is served by `after` exactly as by `before`.
fn assert_served_alike(
    before: &corefile::Corefile,
    after: &corefile::Corefile,
    names: &[&str],
    version: CoreDnsVersion,
    at: &str,
) {
    for name in names {
        assert_eq!(
            ask(after, name, QType::A, version),
            ask(before, name, QType::A, version),
            "{at}: {name}"
        );
    }
}

#[test]
fn the_kubeadm_corefile_leaks_search_artifacts_before_any_policy() {
    let c = corefile::parse(&fixture("kubeadm-v1.36.3.Corefile")).unwrap();
    let s = ask(
        &c,
        &format!("{FRIGATE}.{TAILNET}"),
        QType::A,
        CoreDnsVersion::new(1, 14, 2),
    );
    assert_eq!(s.block, ".:53");
    assert_eq!(s.plugin, "forward");
    assert_eq!(s.reply, upstream(RESOLV, &format!("{FRIGATE}.{TAILNET}.")));
}

#[test]
fn rewrite_keeps_cases_1_to_5_on_every_fixture_and_version() {
    for file in FIXTURES {
        let original = fixture(file);
        let before = corefile::parse(&original).unwrap();
        for version in BANDS {
            for forward_to in [&[][..], &["100.100.100.100"][..]] {
                let merged = policy(TAILNET, SuffixAction::Rewrite, forward_to);
                let after = match apply(&original, &merged, version) {
                    Err(RenderError::NeedsNewerCoreDns { .. })
                        if !version.has_view() && !forward_to.is_empty() =>
                    {
                        continue;
                    }
                    other => other.unwrap(),
                };
                let at = format!("{file} on {version}, forwardTo {forward_to:?}");

                // From 1.10 a block for the suffix takes the artifacts and asks
                // CoreDNS again for the stripped name; before, the `.` block strips it.
                let artifacts = if version.has_view() {
                    format!("{TAILNET}:53")
                } else {
                    ".:53".into()
                };

                // Case 1: answered by kubernetes as the in-cluster name, mapped back.
                for qtype in [QType::A, QType::Aaaa] {
                    let s = ask(&after, &format!("{FRIGATE}.{TAILNET}"), qtype, version);
                    assert_eq!(
                        (&s.block, s.plugin.as_str()),
                        (&artifacts, "kubernetes"),
                        "{at}: {s:?}"
                    );
                    // An IPv4 Service: AAAA is NODATA from kubernetes.
                    let found = if qtype == QType::A {
                        Outcome::Answer
                    } else {
                        Outcome::NoData
                    };
                    assert_eq!(s.reply, Reply::Local(found), "{at}");
                    assert_eq!(s.resolved_name, format!("{FRIGATE}."), "{at}");
                    assert!(s.question_matches, "{at}");
                }
                let s = ask(
                    &after,
                    &format!("nosuch.default.svc.cluster.local.{TAILNET}"),
                    QType::A,
                    version,
                );
                assert_eq!(s.reply, Reply::Local(Outcome::NxDomain), "{at}");
                assert!(s.question_matches, "{at}");

                // Case 2: upstream as the outside name, never with the suffix.
                let s = ask(
                    &after,
                    &format!("api.github.com.{TAILNET}"),
                    QType::A,
                    version,
                );
                assert_eq!(s.reply, upstream(RESOLV, "api.github.com."), "{at}");
                assert!(s.question_matches, "{at}");
                assert_eq!(
                    s.question_matches_if_upstream_fails,
                    version >= CoreDnsVersion::REWRITE_REVERTS_FAILURES,
                    "{at}"
                );
                assert_eq!(s.plugin, "forward", "{at}");

                // Case 3: real hosts through forwardTo, or exactly as before.
                let s = ask(&after, &format!("myhost.{TAILNET}"), QType::A, version);
                if forward_to.is_empty() {
                    assert_eq!(
                        s,
                        ask(&before, &format!("myhost.{TAILNET}"), QType::A, version),
                        "{at}"
                    );
                } else {
                    assert_eq!(s.block, format!("{TAILNET}:53"), "{at}");
                    assert_eq!(s.reply, myhost_via_forward_to(), "{at}");
                }

                // Case 5: names without the suffix, exactly as before.
                assert_served_alike(&before, &after, &WITHOUT_SUFFIX, version, &at);
                let reverse = ["10.0.96.10.in-addr.arpa"];
                assert_served_alike(&before, &after, &reverse, version, &at);
            }
        }
    }
}

#[test]
fn nxdomain_keeps_cases_1_to_5_on_every_fixture_and_version() {
    for file in FIXTURES {
        let original = fixture(file);
        let before = corefile::parse(&original).unwrap();
        for version in BANDS {
            for forward_to in [&[][..], &["100.100.100.100"][..]] {
                let merged = policy(TAILNET, SuffixAction::NXDomain, forward_to);
                let after = apply(&original, &merged, version).unwrap();
                let at = format!("{file} on {version}, forwardTo {forward_to:?}");
                let block = if forward_to.is_empty() && !version.has_view() {
                    ".:53".to_string()
                } else {
                    format!("{TAILNET}:53")
                };

                for name in [
                    format!("{FRIGATE}.{TAILNET}"),
                    format!("api.github.com.{TAILNET}"),
                ] {
                    for qtype in [QType::A, QType::Aaaa] {
                        let s = ask(&after, &name, qtype, version);
                        assert_eq!(
                            (&s.block, s.plugin.as_str()),
                            (&block, "template"),
                            "{at}: {name}"
                        );
                        assert_eq!(s.reply, Reply::Local(Outcome::NxDomain), "{at}: {name}");
                        assert!(s.question_matches, "{at}");
                    }
                }
                let s = ask(&after, &format!("myhost.{TAILNET}"), QType::A, version);
                if forward_to.is_empty() {
                    assert_eq!(
                        s.reply,
                        ask(&before, &format!("myhost.{TAILNET}"), QType::A, version).reply,
                        "{at}"
                    );
                } else {
                    assert_eq!(s.reply, myhost_via_forward_to(), "{at}");
                }
                assert_served_alike(&before, &after, &WITHOUT_SUFFIX, version, &at);
            }
        }
    }
}

#[test]
fn openstack_and_eks_suffixes_together() {
    let mut merged = policy("openstacklocal", SuffixAction::NXDomain, &[]);
    merged.rules.insert(
        0,
        SuffixRule::new::<&str>("eks", "ec2.internal", SuffixAction::Rewrite, 1, &[]).unwrap(),
    );
    let original = fixture("eks-addon.Corefile");
    let version = CoreDnsVersion::new(1, 11, 3);
    let after = apply(&original, &merged, version).unwrap();
    let s = ask(
        &after,
        &format!("{FRIGATE}.ec2.internal"),
        QType::A,
        version,
    );
    assert_eq!(
        (s.block.as_str(), s.plugin.as_str(), &s.reply),
        (
            "ec2.internal:53",
            "kubernetes",
            &Reply::Local(Outcome::Answer)
        )
    );
    assert_eq!(
        s.steps,
        [
            format!("rewrite: {FRIGATE}.ec2.internal. to {FRIGATE}."),
            format!("forward .: asks CoreDNS itself (127.0.0.1:53) for {FRIGATE}."),
            format!("{FRIGATE}.: served by .:53"),
            format!("  kubernetes cluster.local.: {FRIGATE}. exists, answers an answer"),
        ]
    );
    let s = ask(&after, "api.github.com.ec2.internal", QType::A, version);
    assert_eq!(s.reply, upstream(RESOLV, "api.github.com."));
    let s = ask(&after, "ip-10-0-0-1.ec2.internal", QType::A, version);
    assert_eq!(s.reply, upstream(RESOLV, "ip-10-0-0-1.ec2.internal."));
    let s = ask(
        &after,
        &format!("{FRIGATE}.openstacklocal"),
        QType::A,
        version,
    );
    assert_eq!(s.reply, Reply::Local(Outcome::NxDomain));
    let s = ask(&after, "myhost.openstacklocal", QType::A, version);
    assert_eq!(s.reply, upstream(RESOLV, "myhost.openstacklocal."));
}

#[test]
fn a_tailscale_split_dns_block_is_refused_not_worked_around() {
    let original = format!(
        "{}\n{TAILNET}:53 {{\n    errors\n    forward . 100.100.100.100\n}}\n",
        fixture("kubeadm-v1.36.3.Corefile")
    );
    let merged = policy(TAILNET, SuffixAction::Rewrite, &[]);
    let err = apply(&original, &merged, CoreDnsVersion::new(1, 14, 2)).unwrap_err();
    assert!(
        matches!(err, RenderError::ZoneTaken { ref key, .. } if key == "tailb45a71.ts.net:53"),
        "{err}"
    );
    assert!(err.to_string().contains("forwardTo"), "{err}");
}

#[test]
fn old_releases_get_a_warning_about_failed_upstreams() {
    let merged = policy(TAILNET, SuffixAction::Rewrite, &[]);
    assert_eq!(warnings(&merged, CoreDnsVersion::new(1, 8, 7)).len(), 1);
    assert!(warnings(&merged, CoreDnsVersion::new(1, 9, 0)).is_empty());
    assert!(
        warnings(
            &policy(TAILNET, SuffixAction::NXDomain, &[]),
            CoreDnsVersion::new(1, 8, 4)
        )
        .is_empty()
    );
}

#[test]
fn any_valid_suffix_passes_the_editor_even_one_named_like_its_markers() {
    let original = fixture("kubeadm-v1.36.3.Corefile");
    for suffix in ["dnspolicy", "begin.dnspolicy", "openstacklocal"] {
        for action in [SuffixAction::Rewrite, SuffixAction::NXDomain] {
            for version in BANDS {
                let merged = policy(suffix, action, &["100.100.100.100"]);
                match apply(&original, &merged, version) {
                    Err(RenderError::NeedsNewerCoreDns { .. }) => assert!(!version.has_view()),
                    other => {
                        other.unwrap();
                    }
                }
            }
        }
    }
}
