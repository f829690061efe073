//! Unit tests of `edit`.

use super::*;

const KUBEADM: &str = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n    }\n    forward . /etc/resolv.conf\n    cache 30\n}\n";

fn tailnet() -> ManagedText {
    ManagedText {
        dot_block: "rewrite stop {\n    name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {1}.\n    answer auto\n}\n".into(),
        server_blocks: "tailb45a71.ts.net:53 {\n    forward . 100.100.100.100\n}\n".into(),
    }
}

#[test]
fn render_places_both_regions_and_strip_takes_them_back() {
    let rendered = render(KUBEADM, &tailnet()).unwrap();
    assert_eq!(
        rendered,
        format!(
            ".:53 {{\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n    }}\n    forward . /etc/resolv.conf\n    cache 30\n    {DOT_BEGIN}\n    rewrite stop {{\n        name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {{1}}.\n        answer auto\n    }}\n    {DOT_END}\n}}\n{SERVER_BEGIN}\ntailb45a71.ts.net:53 {{\n    forward . 100.100.100.100\n}}\n{SERVER_END}\n"
        )
    );
    assert_eq!(strip(&rendered).unwrap(), KUBEADM);
    assert_eq!(render(&rendered, &tailnet()).unwrap(), rendered);
}

#[test]
fn empty_parts_write_no_region() {
    let only_blocks = ManagedText {
        dot_block: String::new(),
        ..tailnet()
    };
    let rendered = render(KUBEADM, &only_blocks).unwrap();
    assert!(!rendered.contains(DOT_BEGIN) && rendered.contains(SERVER_BEGIN));
    assert_eq!(render(&rendered, &ManagedText::default()).unwrap(), KUBEADM);
}

#[test]
fn a_missing_final_newline_stays_missing() {
    let original = KUBEADM.trim_end();
    let rendered = render(original, &tailnet()).unwrap();
    assert!(rendered.ends_with(SERVER_END));
    assert_eq!(strip(&rendered).unwrap(), original);
}

#[test]
fn crlf_corefiles_get_crlf_regions() {
    let original = KUBEADM.replace('\n', "\r\n");
    let rendered = render(&original, &tailnet()).unwrap();
    assert!(rendered.contains(&format!("    {DOT_END}\r\n}}\r\n")));
    assert_eq!(strip(&rendered).unwrap(), original);
}

#[test]
fn damaged_markers_are_named_by_line() {
    let only_dot = ManagedText {
        server_blocks: String::new(),
        ..tailnet()
    };
    let rendered = render(KUBEADM, &only_dot).unwrap();
    let without_end = rendered.replacen(&format!("    {DOT_END}\n"), "", 1);
    assert!(matches!(
        strip(&without_end),
        Err(CorefileError::MarkerNotClosed { line: 9, .. })
    ));
    let without_begin = rendered.replacen(&format!("    {DOT_BEGIN}\n"), "", 1);
    assert!(matches!(
        strip(&without_begin),
        Err(CorefileError::MarkerNotOpened { line: 13, .. })
    ));
    let nested = rendered.replacen(DOT_END, SERVER_BEGIN, 1);
    assert!(matches!(
        strip(&nested),
        Err(CorefileError::MarkerNested {
            line: 14,
            outer_line: 9,
            ..
        })
    ));
    let mismatched = rendered.replacen(DOT_END, SERVER_END, 1);
    assert!(matches!(
        strip(&mismatched),
        Err(CorefileError::MarkerMismatch {
            line: 14,
            begin_line: 9,
            ..
        })
    ));
    let unknown = rendered.replacen("dnspolicy:end dot-block", "dnspolicy:end dots", 1);
    assert!(matches!(
        strip(&unknown),
        Err(CorefileError::MarkerUnknown { line: 14, .. })
    ));
    let trailing = rendered.replacen(
        &format!("    {DOT_END}"),
        &format!("    cache 30 {DOT_END}"),
        1,
    );
    assert!(matches!(
        strip(&trailing),
        Err(CorefileError::MarkerNotAlone { line: 14, .. })
    ));
    // the end marker moved below the block's closing brace
    let crossing = rendered.replacen(
        &format!("    {DOT_END}\n}}\n"),
        &format!("}}\n{DOT_END}\n"),
        1,
    );
    assert!(matches!(
        strip(&crossing),
        Err(CorefileError::MarkerCrossesBrace {
            begin_line: 9,
            end_line: 15
        })
    ));
    assert!(render(&crossing, &tailnet()).is_err());
}

#[test]
fn managed_text_cannot_escape_its_region() {
    let escape = ManagedText {
        dot_block: "}\nevil.example:53 {\n    forward . 6.6.6.6\n".into(),
        server_blocks: String::new(),
    };
    assert!(matches!(
        render(KUBEADM, &escape),
        Err(CorefileError::ManagedText {
            part: "dot-block",
            ..
        })
    ));
    let quote = ManagedText {
        dot_block: "log \"\n".into(),
        server_blocks: String::new(),
    };
    assert!(matches!(
        render(KUBEADM, &quote),
        Err(CorefileError::ManagedText { .. })
    ));
    let marker = ManagedText {
        dot_block: format!("{DOT_END}\nlog\n"),
        server_blocks: String::new(),
    };
    assert!(matches!(
        render(KUBEADM, &marker),
        Err(CorefileError::ManagedText { .. })
    ));
    let directives_as_blocks = ManagedText {
        dot_block: String::new(),
        server_blocks: "forward . 6.6.6.6\n".into(),
    };
    assert!(render(KUBEADM, &directives_as_blocks).is_err());
}

#[test]
fn the_dot_block_is_chosen_by_port_and_never_guessed() {
    let two = ".:5353 {\n    errors\n}\n.:53 {\n    bind 169.254.20.10\n}\n";
    let corefile = parse(two).unwrap();
    assert_eq!(
        dot_server(&corefile).unwrap(),
        DotServer {
            index: 1,
            port: 53,
            bind: vec!["169.254.20.10".into()]
        }
    );
    let openshift = parse(".:5353 {\n    bind 127.0.0.1\n}\n").unwrap();
    assert_eq!(dot_server(&openshift).unwrap().port, 5353);
    let bare = parse(". {\n    errors\n}\n").unwrap();
    assert_eq!(dot_server(&bare).unwrap().port, 53);
    let twice = parse(".:53 {\n    bind 10.0.0.1\n}\n.:53 {\n    bind 10.0.0.2\n}\n").unwrap();
    assert!(matches!(
        dot_block(&twice),
        Err(CorefileError::AmbiguousDotBlock { .. })
    ));
    let two_others = parse(".:5353 {\n}\n.:5454 {\n}\n").unwrap();
    assert!(matches!(
        dot_block(&two_others),
        Err(CorefileError::AmbiguousDotBlock { .. })
    ));
    let tls_only = parse("tls://.:853 {\n}\ncluster.local:53 {\n}\n").unwrap();
    assert_eq!(dot_block(&tls_only), Err(CorefileError::NoDotBlock));
    let env = parse(".:{$PORT} {\n}\n").unwrap();
    assert!(matches!(
        dot_block(&env),
        Err(CorefileError::AmbiguousDotBlock { .. })
    ));
}

#[test]
fn a_dot_block_without_its_own_closing_line_is_refused() {
    let one_line = ".:53 { }\n";
    assert!(matches!(
        render(one_line, &tailnet()),
        Err(CorefileError::DotBlockShape { line: 1, .. })
    ));
    let braceless = ".:53\nerrors\n";
    assert!(matches!(
        render(braceless, &tailnet()),
        Err(CorefileError::DotBlockShape {
            reason: "has no braces",
            ..
        })
    ));
    assert_eq!(
        render("cluster.local:53 {\n}\n", &tailnet()),
        Err(CorefileError::NoDotBlock)
    );
}

#[test]
fn k3s_and_aks_imports_select_the_custom_channel() {
    let k3s = parse(".:53 {\n    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\n").unwrap();
    let channel = channel(&k3s).unwrap();
    assert_eq!(
        channel,
        Channel::Custom {
            override_glob: "/etc/coredns/custom/*.override".into(),
            server_glob: Some("/etc/coredns/custom/*.server".into())
        }
    );
    let keys = custom_keys(&tailnet(), &channel).unwrap();
    assert_eq!(keys[0].0, "dnspolicy.override");
    assert_eq!(keys[0].1, format!("{CUSTOM_HEADER}{}", tailnet().dot_block));
    assert_eq!(keys[1].0, "dnspolicy.server");
    assert_eq!(
        keys[1].1,
        format!("{CUSTOM_HEADER}{}", tailnet().server_blocks)
    );

    let override_only = Channel::Custom {
        override_glob: "custom/*.override".into(),
        server_glob: None,
    };
    assert!(matches!(
        custom_keys(&tailnet(), &override_only),
        Err(CorefileError::NoServerImport { .. })
    ));
    assert_eq!(
        super::channel(&parse(KUBEADM).unwrap()).unwrap(),
        Channel::Main
    );
    assert_eq!(custom_keys(&tailnet(), &Channel::Main).unwrap(), Vec::new());
}

#[test]
fn the_hash_is_sha256_hex() {
    assert_eq!(
        corefile_hash(""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
