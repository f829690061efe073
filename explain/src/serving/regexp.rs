//! Go's `regexp` (RE2 syntax), which CoreDNS compiles `rewrite`, `template`
//! and `view` patterns with, on the `regex` crate. The two agree on syntax
//! and on leftmost-first submatches except where [`compile`] bends the
//! pattern first:
//! - a `{` that starts no repeat (`a{,`, `{x}`) is a literal in Go and a
//!   syntax error in `regex`: it is escaped;
//! - inside a class, `[` (not `[:alpha:]`), `&&` and `~~` are literals in Go
//!   and nested classes or set operations in `regex`: they are escaped;
//! - `\<` and `\>` are a literal `<` and `>` in Go and word boundaries in
//!   `regex`: the backslash is dropped;
//! - Go refuses a repeat count over 1000; `regex` would take it.
//!
//! Left as they are, because no Corefile seen uses them: `a**` and `a++`
//! (Go refuses them, `regex` nests the repeat), `(?x)` (only `regex` has
//! it), `\Q...\E` (only Go has it: such a pattern does not compile here, and
//! the model passes the rule over).
//!
//! `\d`, `\w`, `\s` and `\b` are ASCII in Go and Unicode in `regex`; a DNS
//! name is ASCII, so they agree on every name the model matches.

use regex::Regex;

/// Go's `maxRepeat` (regexp/syntax/parse.go).
const MAX_REPEAT: u32 = 1000;

/// A pattern the model cannot compile, named in the message.
#[derive(Debug, thiserror::Error)]
pub enum RegexError {
    #[error("regex {pattern:?}: {source}")]
    Syntax {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("regex {pattern:?}: repeat count {count} is over Go's limit of {MAX_REPEAT}")]
    RepeatTooBig { pattern: String, count: u32 },
}

/// Compiles `pattern` as Go's `regexp.Compile` reads it.
pub fn compile(pattern: &str) -> Result<Regex, RegexError> {
    let translated = to_rust_syntax(pattern).map_err(|count| RegexError::RepeatTooBig {
        pattern: pattern.to_string(),
        count,
    })?;
    Regex::new(&translated).map_err(|source| RegexError::Syntax {
        pattern: pattern.to_string(),
        source,
    })
}

/// The pattern with Go's literal `{`, `[`, `&&`, `~~`, `<`, `>` spelled for
/// `regex`; `Err(count)` for a repeat count Go refuses. Anything else is left
/// for `regex` to judge.
fn to_rust_syntax(pattern: &str) -> Result<String, u32> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    // `\<` and `\>` escape punctuation in Go; in `regex` they
                    // are word boundaries.
                    Some(edge @ ('<' | '>')) => out.push(*edge),
                    Some(next) => {
                        out.push(c);
                        out.push(*next);
                    }
                    None => out.push(c),
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` first in a class is a literal in both.
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                continue;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // `[:alpha:]` inside a class: copied whole.
                let close = chars[i..]
                    .windows(2)
                    .position(|w| w == [':', ']'])
                    .map_or(chars.len(), |p| i + p + 2);
                out.extend(&chars[i..close]);
                i = close;
                continue;
            }
            '[' => out.push_str("\\["),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            '{' if !in_class => match repeat(&chars[i..]) {
                Some((len, min, max)) => {
                    if let Some(count) = [Some(min), max]
                        .into_iter()
                        .flatten()
                        .find(|n| *n > MAX_REPEAT)
                    {
                        return Err(count);
                    }
                    out.extend(&chars[i..i + len]);
                    i += len;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `s`: its length and counts.
fn repeat(s: &[char]) -> Option<(usize, u32, Option<u32>)> {
    let close = s.iter().position(|c| *c == '}')?;
    let inner: String = s[1..close].iter().collect();
    // A count too big for u32 is over Go's limit all the same.
    let number = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<u32>().unwrap_or(u32::MAX))
    };
    let (min, max) = match inner.split_once(',') {
        Some((min, "")) => (number(min)?, None),
        Some((min, max)) => (number(min)?, Some(number(max)?)),
        None => (number(&inner)?, number(&inner)),
    };
    Some((close + 1, min, max))
}
