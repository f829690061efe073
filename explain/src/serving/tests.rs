use super::*;
use dnspolicy_dns::corefile::{Directive, ServerBlock, ServerKey, Span};

const SPAN: Span = Span {
    start: 0,
    end: 0,
    line: 1,
    column: 1,
};

fn d(name: &str, args: &[&str], block: Vec<Directive>) -> Directive {
    Directive {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        block,
        span: SPAN,
    }
}

fn block(key: &str, directives: Vec<Directive>) -> ServerBlock {
    let (zone, port) = match key.rsplit_once(':') {
        Some((z, p)) => (z, Some(p.parse().unwrap())),
        None => (key, None),
    };
    let zone = if zone == "." {
        ".".to_string()
    } else {
        format!("{zone}.")
    };
    ServerBlock {
        keys: vec![ServerKey {
            raw: key.into(),
            scheme: None,
            zone,
            port,
        }],
        directives,
        span: SPAN,
    }
}

/// kubeadm's Corefile, as its AST.
fn kubeadm(extra: Vec<Directive>, more_blocks: Vec<ServerBlock>) -> Corefile {
    let mut directives = vec![
        d("errors", &[], vec![]),
        d("health", &[], vec![d("lameduck", &["5s"], vec![])]),
        d("ready", &[], vec![]),
        d(
            "kubernetes",
            &["cluster.local", "in-addr.arpa", "ip6.arpa"],
            vec![
                d("pods", &["insecure"], vec![]),
                d("fallthrough", &["in-addr.arpa", "ip6.arpa"], vec![]),
                d("ttl", &["30"], vec![]),
            ],
        ),
        d("prometheus", &[":9153"], vec![]),
        d(
            "forward",
            &[".", "/etc/resolv.conf"],
            vec![d("max_concurrent", &["1000"], vec![])],
        ),
        d("cache", &["30"], vec![]),
        d("loop", &[], vec![]),
        d("reload", &[], vec![]),
        d("loadbalance", &[], vec![]),
    ];
    directives.extend(extra);
    let mut blocks = vec![block(".:53", directives)];
    blocks.extend(more_blocks);
    Corefile {
        blocks,
        top_level_imports: vec![],
    }
}

fn frigate(name: &str) -> bool {
    name == "frigate.video-management-system.svc.cluster.local."
}

fn ctx(version: CoreDnsVersion) -> ServeContext<'static> {
    ServeContext::new(version, &frigate)
}

/// The rewrite dnspolicy puts in the `.` block for the tailnet: strips the
/// suffix from names of two labels or more, answers mapped back.
fn strip_tailnet() -> Directive {
    d(
        "rewrite",
        &[
            "stop",
            "name",
            "regex",
            "^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$",
            "{1}.",
            "answer",
            "auto",
        ],
        vec![],
    )
}

/// Sent upstream to kubeadm's `forward . /etc/resolv.conf` as `name`.
fn resolv_conf(name: &str) -> Reply {
    Reply::Upstream {
        targets: vec!["/etc/resolv.conf".into()],
        name: name.into(),
    }
}

/// The search artifact of an in-cluster name under the tailnet's suffix.
const ARTIFACT: &str = "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net";

/// How CoreDNS `version` serves an A query for `name`.
fn serve_a(c: &Corefile, name: &str, version: CoreDnsVersion) -> Served {
    serve(c, name, QType::A, &ctx(version))
}

const V1_14: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
const V1_8: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);

#[test]
fn without_a_policy_the_search_artifact_leaks_upstream() {
    let c = kubeadm(vec![], vec![]);
    let s = serve_a(&c, ARTIFACT, V1_14);
    assert_eq!(s.block, ".:53");
    assert_eq!(
        s.reply,
        resolv_conf("frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net.")
    );
    let s = serve_a(
        &c,
        "frigate.video-management-system.svc.cluster.local",
        V1_14,
    );
    assert_eq!(s.reply, Reply::Local(Outcome::Answer));
    assert_eq!(
        s.steps,
        [
            "kubernetes cluster.local.: frigate.video-management-system.svc.cluster.local. exists, answers an answer"
        ]
    );
    let s = serve_a(&c, "nosuch.svc.cluster.local", V1_14);
    assert_eq!(s.reply, Reply::Local(Outcome::NxDomain));
}

#[test]
fn rewrite_answer_auto_resolves_the_stripped_name_and_keeps_the_question() {
    let rule = strip_tailnet();
    let c = kubeadm(vec![rule], vec![]);
    for version in [V1_8, V1_14] {
        let s = serve_a(
            &c,
            "frigate.video-management-system.svc.cluster.local.tailb45a71.ts.net.",
            version,
        );
        assert_eq!(s.reply, Reply::Local(Outcome::Answer));
        assert!(s.question_matches);
        assert_eq!(
            s.resolved_name,
            "frigate.video-management-system.svc.cluster.local."
        );
        let s = serve(
            &c,
            "api.github.com.tailb45a71.ts.net",
            QType::Aaaa,
            &ctx(version),
        );
        assert_eq!(s.reply, resolv_conf("api.github.com."));
        assert!(s.question_matches);
        let s = serve_a(&c, "myhost.tailb45a71.ts.net", version);
        assert_eq!(s.resolved_name, "myhost.tailb45a71.ts.net.");
        assert!(matches!(s.reply, Reply::Upstream { .. }));
    }
}

#[test]
fn a_continue_rule_without_answer_rules_leaves_the_question_rewritten() {
    let rule = d(
        "rewrite",
        &["continue", "name", "suffix", ".tailb45a71.ts.net.", "."],
        vec![],
    );
    let c = kubeadm(vec![rule], vec![]);
    let s = serve_a(&c, ARTIFACT, V1_14);
    assert_eq!(s.reply, Reply::Local(Outcome::Answer));
    assert!(!s.question_matches);
    // A stop rule restores the question from 1.9.0 on, even without answer rules.
    let rule = d(
        "rewrite",
        &["name", "suffix", ".tailb45a71.ts.net.", "."],
        vec![],
    );
    let c = kubeadm(vec![rule], vec![]);
    let name = ARTIFACT;
    assert!(serve_a(&c, name, V1_14).question_matches);
    assert!(!serve_a(&c, name, V1_8).question_matches);
}

#[test]
fn template_without_fallthrough_fails_names_it_does_not_match() {
    let t = |fallthrough: bool| {
        let mut lines = vec![
            d("match", &["^[^.]+[.].+[.]openstacklocal[.]$"], vec![]),
            d("rcode", &["NXDOMAIN"], vec![]),
        ];
        if fallthrough {
            lines.push(d("fallthrough", &[], vec![]));
        }
        kubeadm(
            vec![d("template", &["ANY", "ANY", "openstacklocal"], lines)],
            vec![],
        )
    };
    let s = serve_a(&t(true), "api.github.com.openstacklocal", V1_14);
    assert_eq!(s.reply, Reply::Local(Outcome::NxDomain));
    let s = serve_a(&t(true), "myhost.openstacklocal", V1_14);
    assert!(matches!(s.reply, Reply::Upstream { .. }));
    assert_eq!(
        serve_a(&t(false), "myhost.openstacklocal", V1_14).reply,
        Reply::Local(Outcome::ServFail)
    );
    assert_eq!(
        serve_a(&t(false), "myhost.openstacklocal", V1_8).reply,
        Reply::Local(Outcome::Timeout)
    );
}

#[test]
fn a_block_for_the_suffix_captures_every_name_in_it_unless_a_view_filters() {
    let plain = block(
        "tailb45a71.ts.net:53",
        vec![d("forward", &[".", "100.100.100.100"], vec![])],
    );
    let c = kubeadm(vec![], vec![plain]);
    let s = serve_a(&c, ARTIFACT, V1_14);
    assert_eq!(s.block, "tailb45a71.ts.net:53");

    let view = d(
        "view",
        &["tailnet"],
        vec![d(
            "expr",
            &[
                "name()",
                "matches",
                "'^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'",
            ],
            vec![],
        )],
    );
    let filtered = block(
        "tailb45a71.ts.net:53",
        vec![view, d("forward", &[".", "100.100.100.100:53"], vec![])],
    );
    let c = kubeadm(vec![], vec![filtered]);
    let s = serve_a(&c, ARTIFACT, V1_14);
    assert_eq!(s.block, ".:53");
    let s = serve_a(&c, "myhost.tailb45a71.ts.net", V1_14);
    assert_eq!(s.block, "tailb45a71.ts.net:53");
    assert_eq!(
        s.reply,
        Reply::Upstream {
            targets: vec!["100.100.100.100:53".into()],
            name: "myhost.tailb45a71.ts.net.".into()
        }
    );
    // Another port is another listener.
    let other = block(
        "tailb45a71.ts.net:5353",
        vec![d("forward", &[".", "100.100.100.100"], vec![])],
    );
    let c = kubeadm(vec![], vec![other]);
    assert_eq!(serve_a(&c, "myhost.tailb45a71.ts.net", V1_14).block, ".:53");
}

#[test]
fn forwarding_to_itself_serves_the_query_again() {
    let strip = strip_tailnet();
    let gated = block(
        "tailb45a71.ts.net:53",
        vec![strip, d("forward", &[".", "127.0.0.1:53"], vec![])],
    );
    let c = kubeadm(vec![], vec![gated]);
    for version in [V1_8, V1_14] {
        let s = serve_a(&c, "api.github.com.tailb45a71.ts.net", version);
        assert_eq!(s.block, "tailb45a71.ts.net:53");
        assert_eq!(s.reply, resolv_conf("api.github.com."));
        assert!(s.question_matches && s.question_matches_if_upstream_fails);
    }
    // Another port is somebody else.
    let elsewhere = block(
        "corp.example:53",
        vec![d("forward", &[".", "127.0.0.1:5353"], vec![])],
    );
    let c = kubeadm(vec![], vec![elsewhere]);
    let s = serve_a(&c, "a.corp.example", V1_14);
    assert!(matches!(s.reply, Reply::Upstream { .. }), "{s:?}");
    // A block that sends its own names back to itself loops.
    let looping = block(
        "corp.example:53",
        vec![d("forward", &[".", "127.0.0.1"], vec![])],
    );
    let c = kubeadm(vec![], vec![looping]);
    let s = serve_a(&c, "a.corp.example", V1_14);
    assert_eq!(s.reply, Reply::Local(Outcome::ServFail));
    assert!(s.steps.last().unwrap().contains("loop"), "{:?}", s.steps);
}

#[test]
fn no_block_for_the_name_is_refused() {
    let c = Corefile {
        blocks: vec![block("cluster.local:53", vec![d("whoami", &[], vec![])])],
        top_level_imports: vec![],
    };
    let s = serve_a(&c, "api.github.com", V1_14);
    assert_eq!(s.reply, Reply::Local(Outcome::Refused));
    assert_eq!(s.block, "");
}

#[test]
fn forward_except_and_hosts_fallthrough() {
    let hosts = d(
        "hosts",
        &[],
        vec![
            d("10.96.0.50", &["registry.corp.example"], vec![]),
            d("fallthrough", &[], vec![]),
        ],
    );
    let fwd = d(
        "forward",
        &[".", "8.8.8.8"],
        vec![d("except", &["corp.example"], vec![])],
    );
    let c = Corefile {
        blocks: vec![block(".:53", vec![fwd, hosts])],
        top_level_imports: vec![],
    };
    assert_eq!(
        serve_a(&c, "registry.corp.example", V1_14).reply,
        Reply::Local(Outcome::Answer)
    );
    assert_eq!(
        serve(&c, "registry.corp.example", QType::Aaaa, &ctx(V1_14)).reply,
        Reply::Local(Outcome::NoData)
    );
    assert_eq!(
        serve_a(&c, "other.corp.example", V1_14).reply,
        Reply::Local(Outcome::ServFail)
    );
    assert!(matches!(
        serve_a(&c, "api.github.com", V1_14).reply,
        Reply::Upstream { .. }
    ));
}

#[test]
fn regexes_match_as_go_does() {
    let r = regexp::compile("^([^.]+[.].+)[.]tailb45a71[.]ts[.]net[.]$").unwrap();
    assert_eq!(
        r.captures("api.github.com.tailb45a71.ts.net.")
            .unwrap()
            .get(1)
            .map(|m| m.as_str()),
        Some("api.github.com")
    );
    assert!(r.captures("myhost.tailb45a71.ts.net.").is_none());
    assert!(r.captures("a.b.xtailb45a71.ts.net.").is_none());
    let aks = regexp::compile(r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$").unwrap();
    assert!(aks.is_match("a.b.c.d.internal.cloudapp.net."));
    assert!(!aks.is_match("a.b.c.internal.cloudapp.net."));
    let r = regexp::compile("(a|ab)(c|bcd)(d*)").unwrap();
    let caps = r.captures("abcd").unwrap();
    assert_eq!(caps.get(0).map(|m| m.as_str()), Some("abcd"));
    assert_eq!(caps.get(1).map(|m| m.as_str()), Some("a"));
    let r = regexp::compile("x{2}y{1,}z?[a-c-]+$").unwrap();
    assert!(r.is_match("..xxyyyb-c"));
    assert!(!r.is_match("xyb"));
    assert!(
        regexp::compile("a{,").is_ok(),
        "a brace that is no repeat is a literal"
    );
    assert!(regexp::compile("(unclosed").is_err());
    assert!(regexp::compile("(a*)*$").unwrap().is_match("aaab"));
}

#[test]
fn view_expressions() {
    let name = "myhost.tailb45a71.ts.net.";
    assert_eq!(
        expr::eval(
            "name() matches '^(?:[^.]+[.])?tailb45a71[.]ts[.]net[.]$'",
            name,
            QType::A
        ),
        Some(true)
    );
    assert_eq!(
        expr::eval(
            "name() matches '^.+$' && !(name() matches '^my')",
            name,
            QType::A
        ),
        Some(false)
    );
    assert_eq!(
        expr::eval(
            "type() in ['A', 'AAAA'] and not (name() == 'x.')",
            name,
            QType::Aaaa
        ),
        Some(true)
    );
    assert_eq!(
        expr::eval("incidr(client_ip(), '10.0.0.0/8')", name, QType::A),
        None
    );
    assert_eq!(
        expr::eval(r"name() matches '^abc\\..*$'", "abc.example.", QType::A),
        Some(true)
    );
}

#[test]
fn go_literals_the_regex_crate_would_read_otherwise() {
    // A `{` that starts no repeat is a literal in Go.
    let r = regexp::compile("^a{,}b{x}$").unwrap();
    assert!(r.is_match("a{,}b{x}"));
    assert!(regexp::compile("^x{2,3}$").unwrap().is_match("xxx"));
    // In a class, `[`, `&&` and `~~` are literals in Go.
    let r = regexp::compile("^[a[&&~~]+$").unwrap();
    assert!(r.is_match("a[&~"));
    assert!(!r.is_match("b"));
    assert!(regexp::compile("^[[:digit:]-]+$").unwrap().is_match("1-2"));
    assert!(regexp::compile("^[]a]+$").unwrap().is_match("]a"));
    // `\<` is a literal `<` in Go, not a word boundary.
    let r = regexp::compile(r"\<a\>").unwrap();
    assert!(r.is_match("<a>"));
    assert!(!r.is_match("a"));
    // Go refuses repeats over 1000, and names the pattern.
    let err = regexp::compile("a{1001}").unwrap_err();
    assert!(err.to_string().contains("\"a{1001}\""), "{err}");
    assert!(regexp::compile("a{2,1000}").is_ok());
    assert!(
        regexp::compile("(")
            .unwrap_err()
            .to_string()
            .starts_with("regex \"(\"")
    );
}

#[test]
fn query_types_parse_and_a_bad_one_is_named() {
    assert_eq!("aaaa".parse::<QType>(), Ok(QType::Aaaa));
    assert_eq!("TYPE65".parse::<QType>(), Ok(QType::Other(65)));
    assert_eq!(QType::Other(65).to_string(), "TYPE65");
    assert_eq!(
        "AX".parse::<QType>().unwrap_err().to_string(),
        "\"AX\" is not a DNS query type (A, AAAA, SRV, ... or TYPEn)"
    );
}

/// Keys without a port listen on CoreDNS's `-dns.port` (the matrix's
/// `-dns.port` layout, explain/tests/matrix_agreement.rs): queries reach
/// them there, and a forward to that port is CoreDNS itself.
#[test]
fn keys_without_a_port_listen_on_the_dns_port_flag() {
    let mut c = kubeadm(
        vec![],
        vec![block(
            "tailb45a71.ts.net",
            vec![
                strip_tailnet(),
                d("forward", &[".", "127.0.0.1:5570"], vec![]),
            ],
        )],
    );
    c.blocks[0] = block(".", c.blocks[0].directives.clone());
    let flagged = ServeContext {
        dns_port: Some(5570),
        ..ctx(V1_14)
    };
    assert_eq!(cluster_dns_port(&c, Some(5570)), 5570);
    let s = serve(&c, ARTIFACT, QType::A, &flagged);
    assert_eq!(s.block, "tailb45a71.ts.net");
    assert_eq!(s.reply, Reply::Local(Outcome::Answer), "{:?}", s.steps);
    let s = serve(&c, "api.github.com", QType::A, &flagged);
    assert_eq!(s.reply, resolv_conf("api.github.com."));
    // Without the flag the same blocks are on 53: port 5570 is nobody.
    let unflagged = ServeContext {
        port: Some(5570),
        ..ctx(V1_14)
    };
    let s = serve(&c, "api.github.com", QType::A, &unflagged);
    assert_eq!(s.reply, Reply::Local(Outcome::Refused));
}

/// Real CoreDNS answers AAAA for an IPv4 Service with NODATA, not an
/// address (explain/tests/matrix_agreement.rs, every version).
#[test]
fn kubernetes_answers_aaaa_of_an_ipv4_service_with_nodata() {
    let c = kubeadm(vec![strip_tailnet()], vec![]);
    for version in [V1_8, V1_14] {
        for name in [
            "frigate.video-management-system.svc.cluster.local",
            ARTIFACT,
        ] {
            let s = serve(&c, name, QType::Aaaa, &ctx(version));
            assert_eq!(s.reply, Reply::Local(Outcome::NoData), "{name}: {s:?}");
            assert_eq!(s.plugin, "kubernetes");
        }
        assert_eq!(
            serve_a(&c, ARTIFACT, version).reply,
            Reply::Local(Outcome::Answer)
        );
    }
}
