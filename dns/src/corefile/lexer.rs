//! Tokens cut exactly as CoreDNS cuts them (github.com/coredns/caddy,
//! `caddyfile/lexer.go`), plus the comment positions the editor needs.
//!
//! The rules, all taken from that lexer:
//! - tokens are separated by Unicode whitespace; `\r` is skipped and never ends a token;
//! - `"` opens a quoted token only at the start of a token; inside it `\"` is a quote
//!   and every other backslash is kept as written; the closing `"` ends the token
//!   (so `"a"b` is two tokens);
//! - `#` starts a comment anywhere outside quotes. At the start of a token it hides
//!   the rest of the line. Inside a token it cuts the token there, but lexing resumes
//!   at the next whitespace on the same line (caddy forgets the comment when it
//!   returns the token), so `a#b c` is the tokens `a` and `c`;
//! - `{` and `}` are ordinary words: they are braces only when they stand alone;
//! - a byte order mark at the very start is dropped;
//! - backticks and heredocs are Caddy v2 syntax; CoreDNS's fork has neither, so a
//!   backtick is an ordinary character.
//!
//! One deliberate difference: caddy silently accepts a quote left open at the end
//! of the input; we refuse it, because the editor must never guess where text ends.

use super::{CorefileError, Span};

/// One token of a Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Text with the enclosing quotes removed and `\"` unescaped.
    pub text: String,
    /// The source bytes of the token, quotes included.
    pub span: Span,
    /// Line of the token's last character (a quoted token may span lines).
    pub end_line: usize,
    /// Written in double quotes.
    pub quoted: bool,
}

/// Tokens and the comments that hide the rest of their line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lexed {
    pub tokens: Vec<Token>,
    /// From `#` up to (not including) the line's `\n`.
    pub comments: Vec<Span>,
}

/// Splits a Corefile into tokens the way CoreDNS does.
pub fn tokenize(text: &str) -> Result<Vec<Token>, CorefileError> {
    lex(text).map(|lexed| lexed.tokens)
}

struct Start {
    byte: usize,
    line: usize,
    column: usize,
}

pub(crate) fn lex(text: &str) -> Result<Lexed, CorefileError> {
    let mut out = Lexed::default();
    let mut val = String::new();
    let mut start: Option<Start> = None;
    let (mut quoted, mut escaped, mut comment) = (false, false, false);
    let mut comment_start: Option<Start> = None;
    let (mut line, mut column) = (1usize, 1usize);

    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let offset = text.len() - body.len();

    let emit = |out: &mut Lexed,
                val: &mut String,
                start: &mut Option<Start>,
                end: usize,
                end_line: usize,
                quoted: bool| {
        let s = start.take().unwrap_or(Start {
            byte: end,
            line: end_line,
            column: 1,
        });
        out.tokens.push(Token {
            text: std::mem::take(val),
            span: Span {
                start: s.byte,
                end,
                line: s.line,
                column: s.column,
            },
            end_line,
            quoted,
        });
    };
    let close_comment = |out: &mut Lexed, comment_start: &mut Option<Start>, end: usize| {
        if let Some(s) = comment_start.take() {
            out.comments.push(Span {
                start: s.byte,
                end,
                line: s.line,
                column: s.column,
            });
        }
    };

    for (rel, ch) in body.char_indices() {
        let at = offset + rel;
        let (here_line, here_column) = (line, column);
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }

        if quoted {
            if !escaped {
                if ch == '\\' {
                    escaped = true;
                    continue;
                }
                if ch == '"' {
                    quoted = false;
                    emit(&mut out, &mut val, &mut start, at + 1, here_line, true);
                    continue;
                }
            }
            if escaped && ch != '"' {
                val.push('\\');
            }
            val.push(ch);
            escaped = false;
            continue;
        }

        if ch.is_whitespace() {
            if ch == '\r' {
                continue;
            }
            if ch == '\n' {
                comment = false;
                close_comment(&mut out, &mut comment_start, at);
            }
            if !val.is_empty() {
                emit(&mut out, &mut val, &mut start, at, here_line, false);
                // caddy's `comment` flag lives only as long as one token
                comment = false;
            }
            continue;
        }

        if ch == '#' && !comment {
            comment = true;
            if val.is_empty() {
                comment_start = Some(Start {
                    byte: at,
                    line: here_line,
                    column: here_column,
                });
            }
        }
        if comment {
            continue;
        }

        if val.is_empty() && start.is_none() {
            start = Some(Start {
                byte: at,
                line: here_line,
                column: here_column,
            });
            if ch == '"' {
                quoted = true;
                continue;
            }
        }
        val.push(ch);
    }

    if quoted {
        let s = start.unwrap_or(Start {
            byte: text.len(),
            line,
            column,
        });
        return Err(CorefileError::UnterminatedQuote {
            line: s.line,
            column: s.column,
        });
    }
    close_comment(&mut out, &mut comment_start, text.len());
    if !val.is_empty() {
        emit(&mut out, &mut val, &mut start, text.len(), line, false);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        tokenize(s).unwrap().into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn words_are_separated_by_whitespace() {
        assert_eq!(texts(".:53 {\n\terrors\n}\n"), [".:53", "{", "errors", "}"]);
        assert_eq!(texts("a\u{a0}b"), ["a", "b"]);
    }

    #[test]
    fn braces_are_tokens_only_when_they_stand_alone() {
        assert_eq!(texts(".:53{\n}"), [".:53{", "}"]);
        assert_eq!(texts("health{ }"), ["health{", "}"]);
        assert_eq!(texts("{}"), ["{}"]);
    }

    #[test]
    fn quotes_group_words_and_only_escape_quotes() {
        assert_eq!(
            texts(r#"match "^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$""#),
            ["match", r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"]
        );
        assert_eq!(
            texts(r#"answer "say \"hi\" there""#),
            ["answer", r#"say "hi" there"#]
        );
        assert_eq!(texts(r#""a\\b""#), [r"a\\b"]);
        assert_eq!(texts(r#""a"b"#), ["a", "b"]);
        assert_eq!(texts(r#"x"y z""#), [r#"x"y"#, r#"z""#]);
        assert_eq!(texts(r#""""#), [""]);
    }

    #[test]
    fn a_quoted_token_keeps_its_newlines_and_reports_its_last_line() {
        let tokens = tokenize("a \"b\nc\" d").unwrap();
        assert_eq!(tokens[1].text, "b\nc");
        assert_eq!((tokens[1].span.line, tokens[1].end_line), (1, 2));
        assert_eq!((tokens[2].span.line, tokens[2].span.column), (2, 4));
    }

    #[test]
    fn hash_at_a_token_start_hides_the_rest_of_the_line() {
        assert_eq!(
            texts("errors # log everything {\nhealth"),
            ["errors", "health"]
        );
        let lexed = lex("  # dnspolicy:begin dot-block\r\nx").unwrap();
        assert_eq!(lexed.comments.len(), 1);
        assert_eq!(
            &"  # dnspolicy:begin dot-block\r\nx"[lexed.comments[0].start..lexed.comments[0].end],
            "# dnspolicy:begin dot-block\r"
        );
    }

    #[test]
    fn hash_inside_a_token_cuts_only_that_token() {
        // An unquoted regex containing `#` loses its tail, and the next word comes back.
        assert_eq!(
            texts("name regex ^a#b.tailb45a71.ts.net$ {1}\nanswer auto"),
            ["name", "regex", "^a", "{1}", "answer", "auto"]
        );
        assert_eq!(
            texts(r#"name regex "^a#b$" x"#),
            ["name", "regex", "^a#b$", "x"]
        );
    }

    #[test]
    fn carriage_returns_never_split_tokens() {
        assert_eq!(
            texts("forward\r\n. 1.1.1.1\r\n"),
            ["forward", ".", "1.1.1.1"]
        );
        assert_eq!(texts("ab\rcd"), ["abcd"]);
    }

    #[test]
    fn env_placeholders_stay_as_written() {
        assert_eq!(
            texts(".:{$DNS_PORT} {\n forward . {$UPSTREAM}\n}"),
            [".:{$DNS_PORT}", "{", "forward", ".", "{$UPSTREAM}", "}"]
        );
        assert_eq!(texts("{$ENV}"), ["{$ENV}"]);
    }

    #[test]
    fn backticks_are_ordinary_characters() {
        assert_eq!(texts("answer `a b`"), ["answer", "`a", "b`"]);
    }

    #[test]
    fn a_byte_order_mark_is_dropped() {
        let tokens = tokenize("\u{feff}.:53 {}").unwrap();
        assert_eq!(tokens[0].text, ".:53");
        assert_eq!(tokens[0].span.start, 3);
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let tokens = tokenize("é  .:53 {\n    errors\n}").unwrap();
        assert_eq!((tokens[1].span.line, tokens[1].span.column), (1, 4));
        assert_eq!((tokens[3].span.line, tokens[3].span.column), (2, 5));
        assert_eq!(tokens[3].span.start, 15);
    }

    #[test]
    fn an_open_quote_at_the_end_is_an_error_at_the_quote() {
        assert_eq!(
            tokenize(".:53 {\n  forward . \"1.1.1.1\n}\n"),
            Err(CorefileError::UnterminatedQuote {
                line: 2,
                column: 13
            })
        );
    }
}
