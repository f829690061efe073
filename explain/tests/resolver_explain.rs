//! `explain` joins the resolver model with CoreDNS routing. These tests route
//! with hand-written responders that behave like the kubeadm Corefile before and
//! after a Tailscale policy; `resolver_explain_corefile.rs` runs the same cases
//! through the serving model and the real fixtures.

use std::time::Duration;

use dnspolicy_explain::explain::*;
use dnspolicy_explain::resolver::*;

const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const LEAK: &str = "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net";

fn search() -> Vec<String> {
    [
        "workflow-engine.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        "tailb45a71.ts.net",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn kubernetes(qname: &str, qtype: QType) -> Outcome {
    match (qname == FRIGATE, qtype) {
        (true, QType::A) => Outcome::Answer,
        (true, _) => Outcome::NoData,
        (false, _) => Outcome::NxDomain,
    }
}

/// kubeadm: `kubernetes cluster.local ...` and `forward . /etc/resolv.conf` in `.:53`.
/// Served by kubeadm's `.` block with `plugin`, question kept, `resolved` the
/// name CoreDNS resolved.
fn dot_block(plugin: &str, reply: Reply, resolved: &str) -> Served {
    Served {
        block: ".:53".into(),
        plugin: plugin.into(),
        steps: vec![],
        reply,
        question_matches: true,
        question_matches_if_upstream_fails: true,
        resolved_name: format!("{resolved}."),
    }
}

fn kubeadm(qname: &str, qtype: QType) -> Served {
    if qname == "cluster.local" || qname.ends_with(".cluster.local") {
        dot_block("kubernetes", Reply::Local(kubernetes(qname, qtype)), qname)
    } else {
        let upstream = Reply::Upstream {
            targets: vec!["/etc/resolv.conf".into()],
            name: qname.into(),
        };
        dot_block("forward", upstream, qname)
    }
}

/// After a Rewrite policy for tailb45a71.ts.net: `Q.cluster.local.S` is
/// rewritten to `Q.cluster.local` and answered by kubernetes, the answer
/// mapped back to the asked name.
fn kubeadm_with_rewrite(qname: &str, qtype: QType) -> Served {
    match qname.strip_suffix(".tailb45a71.ts.net") {
        Some(inner) if inner.ends_with(".cluster.local") => {
            let reply = Reply::Local(kubernetes(inner, qtype));
            dot_block("rewrite > kubernetes", reply, inner)
        }
        _ => kubeadm(qname, qtype),
    }
}

fn config(resolver: Resolver) -> ResolverConfig {
    ResolverConfig::new(resolver, search()).with_ndots(5)
}

/// `explain` for `name` looked up by a pod with the polluted search list,
/// CoreDNS answering as `responder`.
fn explain_from_pod(
    name: &str,
    resolver: Resolver,
    responder: &dyn Responder,
    upstream: Upstream,
) -> Result<Explanation, ResolverError> {
    explain(name, &config(resolver), responder, true, upstream)
}

#[test]
fn musl_kubeadm_leaks_the_tailnet_name_and_aborts() {
    let e = explain_from_pod(FRIGATE, Resolver::Musl, &kubeadm, Upstream::BlackHole).unwrap();
    assert_eq!(e.leaked_names(), vec![LEAK]);
    assert_eq!(e.upstream_queries().len(), 2);
    assert!(!e.resolved());
    assert_eq!(e.trace.result, Lookup::Failed(Failure::TryAgain));
    assert_eq!(e.worst_case(), Duration::from_secs(5));
    let text = e.to_string();
    assert!(text.contains(LEAK), "{text}");
    assert!(
        text.contains("musl ends the lookup here: EAI_AGAIN"),
        "{text}"
    );
    assert!(text.contains("verdict: 2 of 8 queries reach an upstream, asking for frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net"), "{text}");
    assert!(text.contains("search artifacts leaving CoreDNS: frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net"), "{text}");
    assert_eq!(e.leaked_artifacts(), vec![LEAK]);
    assert!(text.contains("FAILED after 5s"), "{text}");
    // One line per query.
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("  A  ") || l.contains("  AAAA  "))
            .count(),
        8,
        "{text}"
    );
}

#[test]
fn glibc_kubeadm_succeeds_ten_seconds_late() {
    let e = explain_from_pod(FRIGATE, Resolver::Glibc, &kubeadm, Upstream::BlackHole).unwrap();
    assert_eq!(e.leaked_names(), vec![LEAK]);
    assert!(e.resolved());
    assert_eq!(e.trace.result, Lookup::Resolved(FRIGATE.into()));
    assert!(e.worst_case() >= Duration::from_secs(5));
    assert_eq!(e.worst_case(), Duration::from_secs(10));
    let last = e.lines.last().unwrap();
    assert_eq!(
        (last.query.name.as_str(), last.at),
        (FRIGATE, Duration::from_secs(10))
    );
    assert!(
        e.to_string()
            .contains("glibc stops searching here (timeout/timeout)")
    );
}

#[test]
fn rewrite_policy_keeps_everything_inside_coredns() {
    for resolver in [Resolver::Musl, Resolver::Glibc] {
        let e = explain_from_pod(
            FRIGATE,
            resolver,
            &kubeadm_with_rewrite,
            Upstream::BlackHole,
        )
        .unwrap();
        assert!(e.leaked_names().is_empty(), "{resolver}");
        assert!(e.resolved(), "{resolver}");
        assert_eq!(e.worst_case(), Duration::ZERO, "{resolver}");
        assert!(
            e.to_string()
                .contains("verdict: no query reaches an upstream")
        );
    }
}

#[test]
fn outside_names_still_leak_without_a_policy_for_them() {
    // api.github.com has 2 dots: searched first under ndots 5; its tailnet artifact leaks.
    let e = explain_from_pod(
        "api.github.com",
        Resolver::Musl,
        &kubeadm,
        Upstream::Working,
    )
    .unwrap();
    assert_eq!(
        e.leaked_names(),
        vec!["api.github.com.tailb45a71.ts.net", "api.github.com"]
    );
    assert_eq!(
        e.leaked_artifacts(),
        vec!["api.github.com.tailb45a71.ts.net"]
    );
    assert!(e.resolved());
}

#[test]
fn servfail_upstream_musl_waits_glibc_goes_on() {
    let musl = explain_from_pod(FRIGATE, Resolver::Musl, &kubeadm, Upstream::ServFail).unwrap();
    assert!(!musl.resolved());
    assert_eq!(musl.worst_case(), Duration::from_secs(5));
    let glibc = explain_from_pod(FRIGATE, Resolver::Glibc, &kubeadm, Upstream::ServFail).unwrap();
    assert!(glibc.resolved());
    assert_eq!(glibc.worst_case(), Duration::ZERO);
}

#[test]
fn question_mismatch_is_reported() {
    let broken = |qname: &str, qtype: QType| Served {
        question_matches: !qname.ends_with("ts.net"),
        ..kubeadm_with_rewrite(qname, qtype)
    };
    let e = explain_from_pod(FRIGATE, Resolver::Musl, &broken, Upstream::BlackHole).unwrap();
    assert_eq!(e.question_mismatches().len(), 2);
    assert!(e.to_string().contains("question section differs"));
}

#[test]
fn trailing_dot_sends_one_exchange() {
    let e = explain_from_pod(
        &format!("{FRIGATE}."),
        Resolver::Musl,
        &kubeadm,
        Upstream::BlackHole,
    )
    .unwrap();
    assert_eq!(e.lines.len(), 2);
    assert!(e.resolved());
}

#[test]
fn bad_name_is_an_error_naming_it() {
    let err = explain_from_pod(
        "frigate..svc",
        Resolver::Glibc,
        &kubeadm,
        Upstream::BlackHole,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("name \"frigate..svc\""));
}
