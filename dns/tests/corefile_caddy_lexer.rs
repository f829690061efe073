//! The lexer against CoreDNS's own: `caddy-lexer-golden.jsonl` holds random
//! Corefile-shaped inputs and the fixtures, with the tokens (text, line) that
//! github.com/coredns/caddy v1.1.0 `caddyfile/lexer.go` produced for them, and
//! whether its input ended inside a quote (see the fixtures README).

use dnspolicy_dns::corefile::{CorefileError, tokenize};

#[test]
fn tokens_match_coredns_caddy_lexer() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/corefiles/caddy-lexer-golden.jsonl"
    );
    let golden = std::fs::read_to_string(path).unwrap();
    let mut checked = 0;
    for (n, line) in golden.lines().enumerate() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let input = case["input"].as_str().unwrap();
        let got = tokenize(input);
        if case["unterminated"].as_bool().unwrap() {
            // caddy keeps what it read; we refuse a quote left open
            assert!(
                matches!(got, Err(CorefileError::UnterminatedQuote { .. })),
                "case {n}: {input:?}: {got:?}"
            );
            continue;
        }
        let want: Vec<(String, usize)> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t[0].as_str().unwrap().to_string(),
                    t[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let got: Vec<(String, usize)> = got
            .unwrap_or_else(|e| panic!("case {n}: {input:?}: {e}"))
            .into_iter()
            .map(|t| (t.text, t.span.line))
            .collect();
        assert_eq!(got, want, "case {n}: {input:?}");
        checked += 1;
    }
    assert!(checked > 1000, "only {checked} cases");
}
