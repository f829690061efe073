//! Unit tests of `parse`.

use super::*;

fn names(directives: &[Directive]) -> Vec<&str> {
    directives.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn server_keys_carry_scheme_zone_and_port() {
    let corefile =
        parse("dns://.:53 tls://Cluster.Local cluster.local:53 in-addr.arpa:53 .:5353 {\n}\n")
            .unwrap();
    let keys = &corefile.blocks[0].keys;
    assert_eq!(
        (
            keys[0].scheme.as_deref(),
            keys[0].zone.as_str(),
            keys[0].port
        ),
        (Some("dns"), ".", Some(53))
    );
    assert_eq!(
        (
            keys[1].scheme.as_deref(),
            keys[1].zone.as_str(),
            keys[1].port
        ),
        (Some("tls"), "cluster.local.", None)
    );
    assert_eq!(
        (keys[2].zone.as_str(), keys[2].port),
        ("cluster.local.", Some(53))
    );
    assert_eq!(
        (keys[3].zone.as_str(), keys[3].port),
        ("in-addr.arpa.", Some(53))
    );
    assert_eq!((keys[4].zone.as_str(), keys[4].port), (".", Some(5353)));
}

#[test]
fn keys_continue_after_a_trailing_comma_and_cidrs_become_reverse_zones() {
    let corefile =
        parse("tailb45a71.ts.net:53,\n  10.0.0.0/8:53 {\n forward . 100.100.100.100\n}").unwrap();
    let zones: Vec<_> = corefile.blocks[0]
        .keys
        .iter()
        .map(|k| k.zone.as_str())
        .collect();
    assert_eq!(zones, ["tailb45a71.ts.net.", "10.in-addr.arpa."]);
    assert_eq!(
        reverse_zone("192.168.1.0/24").unwrap(),
        "1.168.192.in-addr.arpa."
    );
    assert_eq!(reverse_zone("fd00::/8").unwrap(), "d.f.ip6.arpa.");
    assert_eq!(normalize_zone(""), ".");
}

#[test]
fn a_bad_port_is_an_error_at_the_key() {
    let err = parse("\n  .:99999 {\n}\n").unwrap_err();
    assert!(
        matches!(
            err,
            CorefileError::InvalidServerKey {
                line: 2,
                column: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        parse(".: {\n}").unwrap_err(),
        CorefileError::InvalidServerKey { .. }
    ));
}

#[test]
fn directives_take_their_line_and_their_blocks() {
    let corefile = parse(
        ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n    }\n    rewrite stop {\n        name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {1}.\n        answer auto\n    }\n}\n",
    )
    .unwrap();
    let block = &corefile.blocks[0];
    assert_eq!(
        names(&block.directives),
        ["errors", "kubernetes", "rewrite"]
    );
    assert_eq!(
        block.directives[1].args,
        ["cluster.local", "in-addr.arpa", "ip6.arpa"]
    );
    assert_eq!(names(&block.directives[1].block), ["pods", "fallthrough"]);
    assert_eq!(
        block.directives[2].block[0].args,
        ["regex", "^(.+)[.]tailb45a71[.]ts[.]net[.]$", "{1}."]
    );
    assert_eq!((block.span.start, block.span.line), (0, 1));
    assert_eq!(block.directives[1].span.line, 3);
}

#[test]
fn an_open_brace_on_the_next_line_still_opens_the_directives_block() {
    let corefile =
        parse(".:53 {\n  forward . 1.1.1.1\n  {\n    max_concurrent 1000\n  }\n}").unwrap();
    assert_eq!(
        corefile.blocks[0].directives[0].block[0].name,
        "max_concurrent"
    );
}

#[test]
fn a_close_brace_on_a_directives_line_is_an_error() {
    assert_eq!(
        parse(".:53 {\n  errors }\n"),
        Err(CorefileError::UnexpectedCloseBrace {
            line: 2,
            column: 10
        })
    );
}

#[test]
fn an_unclosed_block_names_its_open_brace() {
    assert_eq!(
        parse(".:53 {\n  cache 30 {\n    success 9984\n"),
        Err(CorefileError::UnclosedBrace {
            line: 2,
            column: 12
        })
    );
    assert_eq!(
        parse(".:53 {\n  errors\n"),
        Err(CorefileError::UnclosedBrace { line: 1, column: 6 })
    );
}

#[test]
fn imports_of_files_stay_imports_and_snippets_are_expanded() {
    let corefile = parse(
        "(tailnet) {\n    forward . 100.100.100.100\n}\n.:53 {\n    errors\n    import /etc/coredns/custom/*.override\n}\nimport /etc/coredns/custom/*.server\ntailb45a71.ts.net:53 {\n    import tailnet\n}\n",
    )
    .unwrap();
    assert_eq!(corefile.blocks.len(), 2);
    assert_eq!(corefile.blocks[0].directives[1].name, "import");
    assert_eq!(
        corefile.blocks[0].directives[1].args,
        ["/etc/coredns/custom/*.override"]
    );
    assert_eq!(
        corefile.top_level_imports[0].args,
        ["/etc/coredns/custom/*.server"]
    );
    assert_eq!(corefile.top_level_imports[0].span.line, 8);
    assert_eq!(corefile.blocks[1].directives[0].name, "forward");
    assert_eq!(
        corefile.blocks[1].directives[0].args,
        [".", "100.100.100.100"]
    );
}

#[test]
fn a_snippet_importing_itself_is_stopped() {
    let err = parse("(loop) {\n  import loop\n}\n.:53 {\n  import loop\n}\n").unwrap_err();
    assert!(matches!(err, CorefileError::SnippetLoop { .. }), "{err}");
}

#[test]
fn snippet_mistakes_are_named() {
    assert!(matches!(
        parse("(a) {\n}\n(a) {\n}\n").unwrap_err(),
        CorefileError::DuplicateSnippet { line: 3, .. }
    ));
    assert!(matches!(
        parse("(a)\n.:53 {\n}\n").unwrap_err(),
        CorefileError::SnippetWithoutBody { line: 1, .. }
    ));
}

#[test]
fn import_needs_one_argument_on_its_line() {
    assert_eq!(
        parse(".:53 {\n  import\n}\n"),
        Err(CorefileError::ImportArguments { line: 2, column: 3 })
    );
    assert_eq!(
        parse(".:53 {\n  import a b\n}\n"),
        Err(CorefileError::ImportArguments { line: 2, column: 3 })
    );
}

#[test]
fn a_block_without_braces_runs_to_the_end() {
    let corefile = parse(".:53\nerrors\nforward . 1.1.1.1\n").unwrap();
    assert_eq!(names(&corefile.blocks[0].directives), ["errors", "forward"]);
}

#[test]
fn comments_and_placeholders_do_not_confuse_the_structure() {
    let corefile =
        parse("# cluster DNS\n.:{$PORT} { # main\n  forward . {$UPSTREAM} # upstream\n}\n")
            .unwrap();
    let key = &corefile.blocks[0].keys[0];
    assert_eq!((key.zone.as_str(), key.port), (".", None));
    assert_eq!(corefile.blocks[0].directives[0].args, [".", "{$UPSTREAM}"]);
}

#[test]
fn a_quoted_brace_is_still_a_brace_to_coredns() {
    // caddy compares token text, so quoting a brace does not make it a word
    let corefile = parse(".:53 \"{\"\n  errors\n\"}\"\n").unwrap();
    assert_eq!(names(&corefile.blocks[0].directives), ["errors"]);
}

#[test]
fn a_block_without_keys_is_refused() {
    assert_eq!(
        parse("{\n  errors\n}\n"),
        Err(CorefileError::StrayOpenBrace { line: 1, column: 1 })
    );
    assert!(matches!(
        parse("\"\" {\n}\n"),
        Err(CorefileError::InvalidServerKey {
            line: 1,
            column: 1,
            ..
        })
    ));
    assert!(matches!(
        parse("\"\"\n.:53 {\n}\n"),
        Err(CorefileError::InvalidServerKey {
            line: 1,
            column: 1,
            ..
        })
    ));
}

#[test]
fn a_lone_open_brace_is_not_a_directive() {
    assert!(matches!(
        parse(".:53 {\n{\n}\n}\n").unwrap_err(),
        CorefileError::StrayOpenBrace { line: 2, .. }
    ));
}

#[test]
fn nesting_is_bounded() {
    let deep = format!(".:53 {{\n a {}{}\n}}", "{ ".repeat(100), "} ".repeat(100));
    assert!(matches!(
        parse(&deep).unwrap_err(),
        CorefileError::TooDeep { .. }
    ));
}
