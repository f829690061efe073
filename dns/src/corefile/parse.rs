//! Tokens grouped into server blocks and directives, following the decisions of
//! CoreDNS's parser (github.com/coredns/caddy, `caddyfile/parse.go`):
//! - server keys run to the end of their line, or further after a trailing `,`;
//! - a block is `{` ... `}`; without `{` it runs to the end of the input (or a `}`);
//! - a directive runs to the end of its line at brace depth 0; a `{` (even on the
//!   next line) opens its block; a `}` on the directive's own line with nothing
//!   open is an error;
//! - `(name) { ... }` declares a snippet; `import name` splices its tokens in;
//!   `import <file or glob>` is kept as a directive (a single text cannot resolve it).

use std::collections::HashMap;

use super::lexer::{Token, lex};
use super::{Corefile, CorefileError, Directive, ServerBlock, ServerKey, Span};

/// Matches caddy's cap on snippet expansions (it loops on a self-import).
const MAX_EXPANSIONS: usize = 1000;
/// Deeper nesting is never a real Corefile, and bounds our recursion.
const MAX_DEPTH: usize = 64;

/// Parses a Corefile. Snippets are expanded where imported; imports of files
/// stay as `import` directives.
pub fn parse(text: &str) -> Result<Corefile, CorefileError> {
    parse_detailed(text).map(|(corefile, _)| corefile)
}

/// Where a server block's braces are, for the editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Braces {
    pub open: Option<Span>,
    pub close: Option<Span>,
}

pub(crate) fn parse_detailed(text: &str) -> Result<(Corefile, Vec<Braces>), CorefileError> {
    let tokens = lex(text)?.tokens;
    let mut parser = Parser {
        toks: tokens,
        pos: 0,
        snippets: HashMap::new(),
        expansions: 0,
    };
    let mut corefile = Corefile {
        blocks: Vec::new(),
        top_level_imports: Vec::new(),
    };
    let mut braces = Vec::new();
    while parser.pos < parser.toks.len() {
        parser.server_block(&mut corefile, &mut braces)?;
    }
    Ok((corefile, braces))
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    snippets: HashMap<String, Vec<Token>>,
    expansions: usize,
}

fn at(span: Span) -> (usize, usize) {
    (span.line, span.column)
}

impl Parser {
    /// caddy's `isNewLine`: the token starts on a later line than the previous one ends.
    fn new_line(&self, i: usize) -> bool {
        i == 0 || self.toks[i - 1].end_line < self.toks[i].span.line
    }

    fn same_line(&self, i: usize) -> bool {
        i < self.toks.len() && !self.new_line(i)
    }

    /// Checks `import ARG` at `self.pos` and returns ARG.
    fn import_argument(&self) -> Result<Token, CorefileError> {
        let import = &self.toks[self.pos];
        let (line, column) = at(import.span);
        if !self.same_line(self.pos + 1) || self.same_line(self.pos + 2) {
            return Err(CorefileError::ImportArguments { line, column });
        }
        let argument = self.toks[self.pos + 1].clone();
        if argument.text.is_empty() {
            return Err(CorefileError::ImportArguments { line, column });
        }
        Ok(argument)
    }

    /// Replaces `import NAME` at `self.pos` with the snippet's tokens, if NAME is one.
    fn expand_snippet(&mut self, name: &str) -> Result<bool, CorefileError> {
        let Some(body) = self.snippets.get(name) else {
            return Ok(false);
        };
        if self.expansions >= MAX_EXPANSIONS {
            let (line, column) = at(self.toks[self.pos].span);
            return Err(CorefileError::SnippetLoop {
                limit: MAX_EXPANSIONS,
                line,
                column,
            });
        }
        self.expansions += 1;
        let body = body.clone();
        self.toks.splice(self.pos..self.pos + 2, body);
        Ok(true)
    }

    fn import_directive(&self, argument: &Token) -> Directive {
        let import = &self.toks[self.pos];
        Directive {
            name: import.text.clone(),
            args: vec![argument.text.clone()],
            block: Vec::new(),
            span: Span {
                end: argument.span.end.max(import.span.end),
                ..import.span
            },
        }
    }

    fn server_block(
        &mut self,
        corefile: &mut Corefile,
        braces: &mut Vec<Braces>,
    ) -> Result<(), CorefileError> {
        let mut keys: Vec<(String, Span)> = Vec::new();
        let mut expecting_another = false;
        let mut eof = false;
        let mut empty_key: Option<Span> = None;
        loop {
            let Some(token) = self.toks.get(self.pos).cloned() else {
                eof = true;
                break;
            };
            if token.text == "import" && self.new_line(self.pos) {
                let argument = self.import_argument()?;
                if self.expand_snippet(&argument.text)? {
                    continue;
                }
                if !keys.is_empty() {
                    let (line, column) = at(token.span);
                    return Err(CorefileError::ImportAmongKeys {
                        pattern: argument.text,
                        line,
                        column,
                    });
                }
                corefile
                    .top_level_imports
                    .push(self.import_directive(&argument));
                self.pos += 2;
                continue;
            }
            if token.text == "{" {
                if expecting_another {
                    let (line, column) = at(token.span);
                    return Err(CorefileError::MissingServerKey { line, column });
                }
                break;
            }
            if token.text.is_empty() {
                empty_key.get_or_insert(token.span);
            } else {
                let mut key = token.text.clone();
                expecting_another = key.ends_with(',');
                if expecting_another {
                    key.pop();
                }
                keys.push((key, token.span));
            }
            let last = token.span;
            self.pos += 1;
            if self.pos >= self.toks.len() {
                if expecting_another {
                    let (line, column) = at(last);
                    return Err(CorefileError::MissingServerKey { line, column });
                }
                eof = true;
                break;
            }
            if !expecting_another && self.new_line(self.pos) {
                break;
            }
        }
        let Some(&(_, first)) = keys.first() else {
            // caddy parses and drops a block without keys; we refuse it rather than hide it
            if let Some(empty) = empty_key {
                let (line, column) = at(empty);
                let reason = "a quoted empty key names no zone; remove it".to_string();
                return Err(CorefileError::InvalidServerKey {
                    key: String::new(),
                    reason,
                    line,
                    column,
                });
            }
            return match self.toks.get(self.pos) {
                Some(open) if !eof && open.text == "{" => Err(CorefileError::StrayOpenBrace {
                    line: open.span.line,
                    column: open.span.column,
                }),
                _ => Ok(()),
            };
        };

        if keys.len() == 1
            && keys[0].0.len() >= 2
            && keys[0].0.starts_with('(')
            && keys[0].0.ends_with(')')
        {
            let name = keys[0].0[1..keys[0].0.len() - 1].to_string();
            let (line, column) = at(first);
            if self.snippets.contains_key(&name) {
                return Err(CorefileError::DuplicateSnippet { name, line, column });
            }
            if eof || self.toks[self.pos].text != "{" {
                return Err(CorefileError::SnippetWithoutBody { name, line, column });
            }
            let body = self.snippet_body()?;
            self.snippets.insert(name, body);
            return Ok(());
        }

        let server_keys = keys
            .iter()
            .map(|(raw, span)| parse_key(raw, *span))
            .collect::<Result<Vec<_>, _>>()?;
        let last_key_end = keys
            .iter()
            .map(|(_, span)| span.end)
            .max()
            .unwrap_or(first.end);
        if eof {
            // caddy keeps a line of keys with nothing after it as an empty server
            corefile.blocks.push(ServerBlock {
                keys: server_keys,
                directives: Vec::new(),
                span: Span {
                    end: last_key_end,
                    ..first
                },
            });
            braces.push(Braces {
                open: None,
                close: None,
            });
            return Ok(());
        }

        let open = (self.toks[self.pos].text == "{").then(|| self.toks[self.pos].span);
        if open.is_some() {
            self.pos += 1;
        }
        let (directives, close) = self.directives(open)?;
        let end = close
            .map(|c| c.end)
            .or_else(|| directives.last().map(|d| d.span.end))
            .unwrap_or(last_key_end)
            .max(first.end);
        corefile.blocks.push(ServerBlock {
            keys: server_keys,
            directives,
            span: Span { end, ..first },
        });
        braces.push(Braces { open, close });
        Ok(())
    }

    /// Tokens of `{ ... }` at `self.pos`, without the outer braces.
    fn snippet_body(&mut self) -> Result<Vec<Token>, CorefileError> {
        let open = self.toks[self.pos].span;
        self.pos += 1;
        let mut depth = 1usize;
        let mut body = Vec::new();
        while let Some(token) = self.toks.get(self.pos) {
            self.pos += 1;
            if token.text == "}" {
                depth -= 1;
                if depth == 0 {
                    return Ok(body);
                }
            } else if token.text == "{" {
                depth += 1;
            }
            body.push(token.clone());
        }
        let (line, column) = at(open);
        Err(CorefileError::UnclosedBrace { line, column })
    }

    fn directives(
        &mut self,
        open: Option<Span>,
    ) -> Result<(Vec<Directive>, Option<Span>), CorefileError> {
        let mut out = Vec::new();
        loop {
            let Some(token) = self.toks.get(self.pos) else {
                return match open {
                    Some(open) => Err(CorefileError::UnclosedBrace {
                        line: open.line,
                        column: open.column,
                    }),
                    None => Ok((out, None)),
                };
            };
            if token.text == "}" {
                let close = token.span;
                self.pos += 1;
                return Ok((out, Some(close)));
            }
            if token.text == "import" {
                let argument = self.import_argument()?;
                if self.expand_snippet(&argument.text)? {
                    continue;
                }
                out.push(self.import_directive(&argument));
                self.pos += 2;
                continue;
            }
            out.push(self.directive()?);
        }
    }

    /// One directive at `self.pos`: its line, and its blocks however far they reach.
    fn directive(&mut self) -> Result<Directive, CorefileError> {
        let name = self.toks[self.pos].clone();
        if name.text == "{" {
            let (line, column) = at(name.span);
            return Err(CorefileError::StrayOpenBrace { line, column });
        }
        self.pos += 1;
        let mut body = Vec::new();
        let mut open: Vec<Span> = Vec::new();
        while let Some(token) = self.toks.get(self.pos).cloned() {
            if token.text == "{" {
                open.push(token.span);
                if open.len() > MAX_DEPTH {
                    let (line, column) = at(token.span);
                    return Err(CorefileError::TooDeep {
                        limit: MAX_DEPTH,
                        line,
                        column,
                    });
                }
            } else if open.is_empty() && self.new_line(self.pos) {
                break;
            } else if token.text == "}" {
                if open.pop().is_none() {
                    let (line, column) = at(token.span);
                    return Err(CorefileError::UnexpectedCloseBrace { line, column });
                }
            } else if token.text == "import" && self.new_line(self.pos) {
                let argument = self.import_argument()?;
                if self.expand_snippet(&argument.text)? {
                    continue;
                }
            }
            body.push(token);
            self.pos += 1;
        }
        if let Some(innermost) = open.last() {
            return Err(CorefileError::UnclosedBrace {
                line: innermost.line,
                column: innermost.column,
            });
        }
        build(&name, &body)
    }
}

/// Builds a directive from its name and the balanced tokens after it.
fn build(name: &Token, body: &[Token]) -> Result<Directive, CorefileError> {
    let mut directive = Directive {
        name: name.text.clone(),
        args: Vec::new(),
        block: Vec::new(),
        span: name.span,
    };
    let mut i = 0;
    while i < body.len() {
        if body[i].text == "{" {
            let close = matching_close(body, i);
            directive.block.extend(group(&body[i + 1..close])?);
            directive.span.end = directive.span.end.max(body[close].span.end);
            i = close + 1;
        } else {
            directive.args.push(body[i].text.clone());
            directive.span.end = directive.span.end.max(body[i].span.end);
            i += 1;
        }
    }
    Ok(directive)
}

fn matching_close(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    // the caller checked the balance; the end is the safe answer anyway
    tokens.len() - 1
}

/// Splits a block's balanced tokens into directives: a new one starts on a new
/// line at depth 0, as plugins read their blocks line by line.
fn group(tokens: &[Token]) -> Result<Vec<Directive>, CorefileError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let start = i;
        if tokens[start].text == "{" {
            let (line, column) = at(tokens[start].span);
            return Err(CorefileError::StrayOpenBrace { line, column });
        }
        let mut depth = 0usize;
        i += 1;
        while i < tokens.len() {
            match tokens[i].text.as_str() {
                "{" => depth += 1,
                "}" => depth = depth.saturating_sub(1),
                _ if depth == 0 && tokens[i - 1].end_line < tokens[i].span.line => break,
                _ => {}
            }
            i += 1;
        }
        out.push(build(&tokens[start], &tokens[start + 1..i])?);
    }
    Ok(out)
}

/// A server key as CoreDNS reads it (`core/dnsserver/address.go`, `plugin.SplitHostPort`).
pub(crate) fn parse_key(raw: &str, span: Span) -> Result<ServerKey, CorefileError> {
    let invalid = |reason: &str| CorefileError::InvalidServerKey {
        key: raw.to_string(),
        reason: reason.to_string(),
        line: span.line,
        column: span.column,
    };
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, raw),
    };
    let mut host = rest;
    let mut port = None;
    if let Some(colon) = rest.rfind(':') {
        let after = &rest[colon + 1..];
        if after.is_empty() {
            return Err(invalid(
                "nothing follows the last ':'; write a port such as :53",
            ));
        }
        if after.bytes().all(|b| b.is_ascii_digit()) {
            port = Some(
                after
                    .parse::<u16>()
                    .map_err(|_| invalid("the port is above 65535"))?,
            );
            host = &rest[..colon];
        } else if is_placeholder(after) {
            // the port comes from the environment; callers see it as unknown
            host = &rest[..colon];
        }
    }
    Ok(ServerKey {
        raw: raw.to_string(),
        scheme,
        zone: normalize_zone(host),
        port,
    })
}

pub(crate) fn is_placeholder(s: &str) -> bool {
    (s.starts_with("{$") && s.ends_with('}')) || (s.starts_with("{%") && s.ends_with("%}"))
}

fn normalize_zone(host: &str) -> String {
    if let Some(zone) = reverse_zone(host) {
        return zone;
    }
    crate::names::absolute(host)
}

/// `10.0.0.0/8` -> `10.in-addr.arpa.`, as `plugin.SplitHostPort` computes it.
fn reverse_zone(host: &str) -> Option<String> {
    let (ip, bits) = host.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let ones: usize = bits.parse().ok()?;
    let (labels, size, total) = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut labels: Vec<String> = v4.octets().iter().rev().map(u8::to_string).collect();
            labels.extend(["in-addr".to_string(), "arpa".to_string()]);
            (labels, 8, 32)
        }
        std::net::IpAddr::V6(v6) => {
            let mut labels: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
                .collect();
            labels.extend(["ip6".to_string(), "arpa".to_string()]);
            (labels, 4, 128)
        }
    };
    if ones > total {
        return None;
    }
    let nearest = (total - ones) + (total - ones) % size;
    let skip = (nearest / size).min(labels.len());
    Some(format!("{}.", labels[skip..].join(".")))
}

#[cfg(test)]
mod tests;
