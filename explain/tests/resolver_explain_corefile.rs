//! `explain` through the serving model and real Corefiles: the kubeadm
//! default (fixture `kubeadm-v1.36.3.Corefile`), then the same Corefile with
//! the Tailscale example policy rendered into it.

use std::collections::BTreeMap;
use std::time::Duration;

use dnspolicy_crd::ClusterDNSPolicy;
use dnspolicy_dns::corefile;
use dnspolicy_dns::version::CoreDnsVersion;
use dnspolicy_dns::{policy, stanza};
use dnspolicy_explain::explain::*;
use dnspolicy_explain::resolver::*;

const KUBEADM: &str = include_str!("../../dns/tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
const TAILSCALE_POLICY: &str = include_str!("../../manifests/examples/tailscale.yaml");
const FRIGATE: &str = "frigate.video-management-system.svc.cluster.local";
const LEAK: &str = "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net";
const SEARCH: &str =
    "workflow-engine.svc.cluster.local svc.cluster.local cluster.local tailb45a71.ts.net";
const VERSION: CoreDnsVersion = CoreDnsVersion::NEWEST_CHECKED;
/// What the example's DNSConfig publishes, as the operator would read it.
const TS_NAMESERVER: &str = "10.96.0.77";

fn config(resolver: Resolver) -> ResolverConfig {
    ResolverConfig::new(resolver, SEARCH.split(' ').map(str::to_string).collect()).with_ndots(5)
}

fn with_tailscale_policy(text: &str) -> String {
    let policy: ClusterDNSPolicy = serde_yaml::from_str(TAILSCALE_POLICY).unwrap();
    // The operator reads the DNSConfig's status.nameserver.ip; here it is 10.96.0.77.
    let addresses = [("tailb45a71.ts.net".to_string(), TS_NAMESERVER.to_string())].into();
    let spec = policy::resolve_forward_refs(&policy.spec, &addresses);
    let valid = policy::validate("tailnet", &spec).unwrap();
    let merged = policy::merge(&[valid]);
    let parsed = corefile::parse(text).unwrap();
    let dot = corefile::dot_server(&parsed).unwrap();
    let ctx = stanza::RenderContext::for_block(&parsed, dot.index, VERSION);
    let managed = stanza::render(&merged, &ctx).unwrap();
    corefile::render(text, &managed).unwrap()
}

fn run(text: &str, resolver: Resolver, name: &str) -> Explanation {
    let parsed = corefile::parse(text).unwrap();
    explain_corefile(
        name,
        &config(resolver),
        &parsed,
        &BTreeMap::new(),
        VERSION,
        Upstream::BlackHole,
    )
    .unwrap()
}

#[test]
fn kubeadm_musl_leaks_the_tailnet_name_and_aborts() {
    let e = run(KUBEADM, Resolver::Musl, FRIGATE);
    assert_eq!(e.leaked_names(), vec![LEAK]);
    assert_eq!(e.trace.result, Lookup::Failed(Failure::TryAgain));
    assert_eq!(e.worst_case(), Duration::from_secs(5));
    let leak = e.upstream_queries()[0];
    assert_eq!(leak.block, ".:53");
    assert!(leak.plugin.ends_with("forward"), "{}", leak.plugin);
    assert_eq!(leak.upstream.as_deref(), Some("/etc/resolv.conf"));
    let first = &e.lines[0];
    assert!(first.plugin.contains("kubernetes"), "{}", first.plugin);
    assert_eq!(first.outcome, Outcome::NxDomain);
    let text = e.to_string();
    assert!(
        text.contains("musl ends the lookup here: EAI_AGAIN"),
        "{text}"
    );
}

#[test]
fn kubeadm_glibc_succeeds_late() {
    let e = run(KUBEADM, Resolver::Glibc, FRIGATE);
    assert_eq!(e.leaked_names(), vec![LEAK]);
    assert_eq!(e.trace.result, Lookup::Resolved(FRIGATE.into()));
    assert!(e.worst_case() >= Duration::from_secs(5));
}

#[test]
fn tailscale_policy_keeps_the_lookup_inside_coredns() {
    let text = with_tailscale_policy(KUBEADM);
    for resolver in [Resolver::Musl, Resolver::Glibc] {
        let e = run(&text, resolver, FRIGATE);
        assert!(e.leaked_names().is_empty(), "{resolver}:\n{e}");
        assert!(e.resolved(), "{resolver}:\n{e}");
        assert_eq!(e.worst_case(), Duration::ZERO, "{resolver}:\n{e}");
        assert!(e.question_mismatches().is_empty(), "{resolver}:\n{e}");
    }
}

#[test]
fn tailscale_policy_sends_outside_names_upstream_without_the_suffix() {
    // docs/design.md §3 case 2: api.github.com.tailb45a71.ts.net is asked upstream as api.github.com.
    let text = with_tailscale_policy(KUBEADM);
    let e = run(&text, Resolver::Glibc, "api.github.com");
    assert_eq!(e.leaked_names(), vec!["api.github.com"], "{e}");
    assert!(e.leaked_artifacts().is_empty(), "{e}");
    assert!(e.to_string().contains("as api.github.com"), "{e}");
    let working = explain_corefile(
        "api.github.com",
        &config(Resolver::Musl),
        &corefile::parse(&text).unwrap(),
        &BTreeMap::new(),
        VERSION,
        Upstream::Working,
    )
    .unwrap();
    // Rewritten to api.github.com, answered by the working upstream, mapped back.
    assert_eq!(
        working.trace.result,
        Lookup::Resolved("api.github.com.tailb45a71.ts.net".into()),
        "{working}"
    );
}

#[test]
fn tailnet_hosts_still_go_to_the_tailnet_nameserver_with_the_policy() {
    // docs/design.md §3 case 3: myhost.tailb45a71.ts.net goes to the
    // forwardToRef's address.
    let text = with_tailscale_policy(KUBEADM);
    let e = run(&text, Resolver::Musl, "myhost.tailb45a71.ts.net.");
    assert_eq!(e.lines.len(), 2);
    let line = &e.lines[0];
    assert_eq!(
        line.upstream.as_deref().map(|u| u.contains(TS_NAMESERVER)),
        Some(true),
        "{e}"
    );
}

#[test]
fn short_service_names_resolve_in_the_pods_namespace() {
    let e = run(KUBEADM, Resolver::Musl, "frigate");
    assert_eq!(
        e.trace.result,
        Lookup::Resolved("frigate.workflow-engine.svc.cluster.local".into()),
        "{e}"
    );
    let e = run(KUBEADM, Resolver::Musl, "frigate.video-management-system");
    assert_eq!(
        e.trace.result,
        Lookup::Resolved("frigate.video-management-system.svc.cluster.local".into()),
        "{e}"
    );
    assert!(e.leaked_names().is_empty());
}

#[test]
fn explain_command_prints_the_verdict() {
    let parsed = corefile::parse(KUBEADM).unwrap();
    let out = explain_command(FRIGATE, SEARCH, 5, true, Some((&parsed, &BTreeMap::new()))).unwrap();
    assert!(out.contains(LEAK), "{out}");
    assert!(out.contains("FAILED after 5s"), "{out}");
    let err = explain_command(FRIGATE, "cluster..local", 5, true, None)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--search:"), "{err}");
    let err = explain_command("frigate..svc", SEARCH, 5, false, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("frigate..svc"), "{err}");
    // The same errors, typed.
    assert_eq!(
        explain_command(FRIGATE, "cluster..local", 5, true, None).unwrap_err(),
        ExplainError::SearchDomain {
            domain: "cluster..local".into()
        }
    );
    assert!(matches!(
        explain_command("frigate..svc", SEARCH, 5, false, None),
        Err(ExplainError::Name(ResolverError { name, .. })) if name == "frigate..svc"
    ));
}

#[test]
fn a_custom_key_that_does_not_parse_is_named() {
    let parsed = corefile::parse(
        ".:53 {\n    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\n",
    )
    .unwrap();
    let broken = |key: &str, text: &str| {
        let keys = BTreeMap::from([(key.to_string(), text.to_string())]);
        with_custom_keys(&parsed, &keys).unwrap_err()
    };
    let err = broken("broken.override", "template IN A {\n");
    assert!(matches!(err, CustomKeyError::Override { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("coredns-custom key broken.override: override text: line "),
        "{err}"
    );
    let err = broken("broken.server", "corp.example:53 {\n");
    assert!(
        matches!(err, CustomKeyError::ServerBlocks { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("coredns-custom key broken.server: line "),
        "{err}"
    );
}

#[test]
fn custom_keys_are_spliced_where_the_corefile_imports_them() {
    let k3s = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n    }\n    import /etc/coredns/custom/*.override\n    forward . /etc/resolv.conf\n}\nimport /etc/coredns/custom/*.server\n";
    let parsed = corefile::parse(k3s).unwrap();
    let mut keys = BTreeMap::new();
    keys.insert("dnspolicy.override".to_string(), "template IN A AAAA tailb45a71.ts.net {\n  match \"\\.cluster\\.local\\.tailb45a71\\.ts\\.net\\.$\"\n  rcode NXDOMAIN\n  fallthrough\n}\n".to_string());
    keys.insert(
        "dnspolicy.server".to_string(),
        "corp.example.com:53 {\n  forward . 10.0.0.53\n}\n".to_string(),
    );
    let running = with_custom_keys(&parsed, &keys).unwrap();
    assert!(
        running.blocks[0]
            .directives
            .iter()
            .any(|d| d.name == "template")
    );
    assert!(
        !running.blocks[0]
            .directives
            .iter()
            .any(|d| d.name == "import")
    );
    assert_eq!(running.blocks.len(), 2);
    assert!(running.top_level_imports.is_empty());
}

#[test]
#[ignore = "prints the explain output for a reader"]
fn show() {
    let text = with_tailscale_policy(KUBEADM);
    for r in [Resolver::Musl, Resolver::Glibc] {
        println!("{}", run(&text, r, FRIGATE));
        println!("{}", run(&text, r, "api.github.com"));
    }
    println!("{text}");
}
