//! The editing laws over generated Corefiles, and "never panics" over any input.

use dnspolicy_dns::corefile::{ManagedText, parse, render, strip, tokenize};
use proptest::collection::vec;
use proptest::prelude::*;

fn directive(indent: &'static str) -> impl Strategy<Value = String> {
    let nested = move |head: &str, lines: &[&str]| {
        let mut s = format!("{head} {{\n");
        for line in lines {
            s.push_str(&format!("{indent}{indent}{line}\n"));
        }
        s.push_str(&format!("{indent}}}"));
        s
    };
    prop_oneof![
        Just("errors".to_string()),
        Just("ready".to_string()),
        Just("cache 30 # thirty seconds".to_string()),
        Just("forward . /etc/resolv.conf".to_string()),
        Just("# a comment line".to_string()),
        Just(String::new()),
        Just("log . \"{remote} - {name} #not-a-comment\"".to_string()),
        Just("import /etc/coredns/custom/*.override".to_string()),
        Just("prometheus :9153".to_string()),
        Just(nested("forward . 8.8.8.8", &["max_concurrent 1000"])),
        Just(nested(
            "kubernetes cluster.local in-addr.arpa ip6.arpa",
            &["pods insecure", "fallthrough in-addr.arpa ip6.arpa"]
        )),
        Just(nested(
            "template ANY ANY internal.cloudapp.net",
            &[
                "match \"^(?:[^.]+\\.){4,}internal\\.cloudapp\\.net\\.$\"",
                "rcode NXDOMAIN"
            ]
        )),
        Just(nested(
            "hosts",
            &[
                "10.0.0.1 frigate.video-management-system.svc.cluster.local",
                "fallthrough"
            ]
        )),
    ]
}

fn other_block() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cluster.local:53 {\n    errors\n    kubernetes cluster.local\n}\n".to_string()),
        Just("in-addr.arpa:53 ip6.arpa:53 {\n  cache 30\n}\n".to_string()),
        Just("corp.example:53 {\n\tforward . 10.0.0.53\n}\n".to_string()),
        Just("import /etc/coredns/custom/*.server\n".to_string()),
        Just("# a note between blocks\n\n".to_string()),
        Just("tls://.:853 {\n    forward . 1.1.1.1\n}\n".to_string()),
    ]
}

fn indent() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("    "), Just("  "), Just("\t"), Just("        ")]
}

prop_compose! {
    fn corefile()(indent in indent())(
        indent in Just(indent),
        dot_key in prop_oneof![Just(".:53"), Just("."), Just(".:5353"), Just("dns://.:53"), Just(".:53 cluster.local:53")],
        lines in vec(directive(indent), 0..8),
        before in vec(other_block(), 0..3),
        after in vec(other_block(), 0..3),
        header in prop_oneof![Just(""), Just("# Corefile for the tailnet\n"), Just("\n\n"), Just("(common) {\n    errors\n    cache 30\n}\n")],
        open_comment in any::<bool>(),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) -> String {
        let mut text = String::from(header);
        for block in &before {
            text.push_str(block);
        }
        text.push_str(dot_key);
        text.push_str(if open_comment { " { # cluster DNS\n" } else { " {\n" });
        for line in &lines {
            if line.is_empty() {
                text.push('\n');
            } else {
                text.push_str(&format!("{indent}{line}\n"));
            }
        }
        text.push_str("}\n");
        for block in &after {
            text.push_str(block);
        }
        if !final_newline {
            text = text.trim_end_matches('\n').to_string();
        }
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        text
    }
}

fn managed() -> impl Strategy<Value = ManagedText> {
    let dot = prop_oneof![
        Just(String::new()),
        Just("rewrite stop {\n    name regex ^(.+)[.]tailb45a71[.]ts[.]net[.]$ {1}.\n    answer auto\n}\n".to_string()),
        Just("template ANY ANY openstacklocal {\n    rcode NXDOMAIN\n}".to_string()),
        Just("rewrite name suffix .cluster.local.tailb45a71.ts.net. .cluster.local.\n\n".to_string()),
    ];
    let server = prop_oneof![
        Just(String::new()),
        Just("tailb45a71.ts.net:53 {\n    forward . 100.100.100.100\n}\n".to_string()),
        Just("openstacklocal:53 {\n    template ANY ANY {\n        rcode NXDOMAIN\n    }\n}\ntailb45a71.ts.net:53 {\n    bind 169.254.20.10\n    forward . 100.100.100.100\n}".to_string()),
    ];
    (dot, server).prop_map(|(dot_block, server_blocks)| ManagedText {
        dot_block,
        server_blocks,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn render_then_strip_restores_every_byte(text in corefile(), managed in managed()) {
        parse(&text).unwrap();
        let rendered = render(&text, &managed).unwrap();
        prop_assert_eq!(&strip(&rendered).unwrap(), &text);
        prop_assert_eq!(&render(&rendered, &managed).unwrap(), &rendered);
        let after = parse(&rendered).unwrap();
        let before = parse(&text).unwrap();
        prop_assert!(after.blocks.len() >= before.blocks.len());
    }

    #[test]
    fn rendering_other_text_replaces_the_regions(text in corefile(), first in managed(), second in managed()) {
        let once = render(&text, &first).unwrap();
        prop_assert_eq!(render(&once, &second).unwrap(), render(&text, &second).unwrap());
    }

    #[test]
    fn the_lexer_and_parser_never_panic_on_any_string(text in "\\PC*") {
        let _ = tokenize(&text);
        let _ = parse(&text);
        let _ = strip(&text);
    }

    #[test]
    fn nothing_panics_on_corefile_shaped_noise(text in "[{}\"#\\\\ \t\r\n.:53a(),$%]{0,80}", managed in managed()) {
        let _ = tokenize(&text);
        let _ = parse(&text);
        if let Ok(rendered) = render(&text, &managed) {
            // whatever render accepts obeys the laws
            prop_assert_eq!(strip(&rendered).unwrap(), strip(&text).unwrap());
            prop_assert_eq!(&render(&rendered, &managed).unwrap(), &rendered);
            prop_assert!(parse(&rendered).is_ok());
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = tokenize(&text);
        let _ = parse(&text);
        let _ = render(&text, &ManagedText { dot_block: "errors\n".into(), server_blocks: String::new() });
    }
}
