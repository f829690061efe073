//! Surgical editing: dnspolicy's text lives between marker comment lines, and
//! every byte outside them is the user's. `strip` removes the regions, `render`
//! strips and then places them again, so `strip(render(c, m)) == c` and
//! `render(render(c, m), m) == render(c, m)`.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::lexer::lex;
use super::parse::{Braces, parse, parse_detailed};
use super::{Corefile, CorefileError, Directive, ManagedText, ServerBlock};

/// Opens the region inside the `.` server block.
pub const DOT_BEGIN: &str =
    "# dnspolicy:begin dot-block (managed by dnspolicy; edits here are reverted)";
/// Closes the region inside the `.` server block.
pub const DOT_END: &str = "# dnspolicy:end dot-block";
/// Opens the region of whole server blocks at the end of the Corefile.
pub const SERVER_BEGIN: &str =
    "# dnspolicy:begin server-blocks (managed by dnspolicy; edits here are reverted)";
/// Closes the region of whole server blocks.
pub const SERVER_END: &str = "# dnspolicy:end server-blocks";

const DOT_KIND: &str = "dot-block";
const SERVER_KIND: &str = "server-blocks";
/// First line of every `coredns-custom` key dnspolicy writes.
const CUSTOM_HEADER: &str = "# managed by dnspolicy; edits here are reverted\n";

/// `sha256:<hex>` of the text, as recorded in status and the pod-template annotation.
pub fn corefile_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The server block that serves `.` over plain DNS on the cluster DNS port:
/// the one on port 53 if there is one, else the only `.` block.
pub fn dot_block(corefile: &Corefile) -> Result<&ServerBlock, CorefileError> {
    dot_choice(corefile).map(|(index, _)| &corefile.blocks[index])
}

/// What the stanza renderer needs of the `.` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotServer {
    /// Index into `Corefile::blocks`.
    pub index: usize,
    /// The port the `.` key listens on (53, or 5353 on OpenShift, ...).
    pub port: u16,
    /// Arguments of the block's `bind` directives; added server blocks must bind the same.
    pub bind: Vec<String>,
}

/// The `.` block's index, port and `bind` arguments.
pub fn dot_server(corefile: &Corefile) -> Result<DotServer, CorefileError> {
    let (index, port) = dot_choice(corefile)?;
    let bind = corefile.blocks[index]
        .directives
        .iter()
        .filter(|d| d.name == "bind")
        .flat_map(|d| d.args.iter().cloned())
        .collect();
    Ok(DotServer { index, port, bind })
}

fn dot_choice(corefile: &Corefile) -> Result<(usize, u16), CorefileError> {
    // (block index, port or None when it comes from the environment)
    let mut candidates: Vec<(usize, Option<u16>, &str)> = Vec::new();
    for (index, block) in corefile.blocks.iter().enumerate() {
        for key in &block.keys {
            let plain_dns = matches!(key.scheme.as_deref(), None | Some("dns"));
            if plain_dns && key.zone == "." {
                let from_env = key.raw.contains("{$") || key.raw.contains("{%");
                let port = if from_env {
                    None
                } else {
                    Some(key.port.unwrap_or(53))
                };
                candidates.push((index, port, key.raw.as_str()));
            }
        }
    }
    let describe = |list: &[(usize, Option<u16>, &str)]| {
        list.iter()
            .map(|(index, _, raw)| format!("{raw} on line {}", corefile.blocks[*index].span.line))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if candidates.is_empty() {
        return Err(CorefileError::NoDotBlock);
    }
    if candidates.iter().any(|(_, port, _)| port.is_none()) {
        return Err(CorefileError::AmbiguousDotBlock {
            candidates: describe(&candidates),
        });
    }
    let on_53: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|(_, port, _)| *port == Some(53))
        .collect();
    let chosen = if on_53.is_empty() {
        candidates.clone()
    } else {
        on_53
    };
    let first = chosen[0].0;
    if chosen.iter().any(|(index, _, _)| *index != first) {
        return Err(CorefileError::AmbiguousDotBlock {
            candidates: describe(&chosen),
        });
    }
    Ok((first, chosen[0].1.unwrap_or(53)))
}

/// Where managed text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Into the Corefile itself, between markers.
    Main,
    /// Into the customisation ConfigMap the Corefile imports (k3s, AKS), because
    /// those distributions overwrite the Corefile.
    Custom {
        /// The glob imported inside the `.` block, e.g. `/etc/coredns/custom/*.override`.
        override_glob: String,
        /// The glob imported at the top level, e.g. `/etc/coredns/custom/*.server`.
        server_glob: Option<String>,
    },
}

/// `Custom` when the `.` block imports `*.override` files, else `Main`.
pub fn channel(corefile: &Corefile) -> Result<Channel, CorefileError> {
    let block = dot_block(corefile)?;
    let glob = |directives: &[Directive], extension: &str| {
        directives
            .iter()
            .filter(|d| d.name == "import" && d.args.len() == 1)
            .map(|d| &d.args[0])
            .find(|arg| custom_key(arg, extension).is_some())
            .cloned()
    };
    Ok(match glob(&block.directives, ".override") {
        Some(override_glob) => Channel::Custom {
            override_glob,
            server_glob: glob(&corefile.top_level_imports, ".server"),
        },
        None => Channel::Main,
    })
}

/// The ConfigMap key a glob like `custom/*.override` imports as `dnspolicy.override`.
fn custom_key(glob: &str, extension: &str) -> Option<String> {
    let file = glob.rsplit('/').next()?;
    let valid = file.ends_with(extension)
        && file.matches('*').count() == 1
        && !file.contains(['?', '['])
        && file
            .replace('*', "")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    valid.then(|| file.replace('*', "dnspolicy"))
}

/// `coredns-custom` keys and values for the managed text: the dot-block text under
/// the override glob's key, the server blocks under the server glob's key.
pub fn custom_keys(
    managed: &ManagedText,
    channel: &Channel,
) -> Result<Vec<(String, String)>, CorefileError> {
    let Channel::Custom {
        override_glob,
        server_glob,
    } = channel
    else {
        return Ok(Vec::new());
    };
    check_managed(managed)?;
    let mut keys = Vec::new();
    let body = |text: &str| {
        let mut value = format!("{CUSTOM_HEADER}{text}");
        if !value.ends_with('\n') {
            value.push('\n');
        }
        value
    };
    if !managed.dot_block.is_empty() {
        let key =
            custom_key(override_glob, ".override").ok_or_else(|| CorefileError::ManagedText {
                part: "dot-block",
                reason: format!("cannot name a key for the import {override_glob:?}"),
            })?;
        keys.push((key, body(&managed.dot_block)));
    }
    if !managed.server_blocks.is_empty() {
        let glob = server_glob
            .as_ref()
            .ok_or_else(|| CorefileError::NoServerImport {
                override_glob: override_glob.clone(),
            })?;
        let key = custom_key(glob, ".server").ok_or_else(|| CorefileError::ManagedText {
            part: "server-blocks",
            reason: format!("cannot name a key for the import {glob:?}"),
        })?;
        keys.push((key, body(&managed.server_blocks)));
    }
    Ok(keys)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Begin,
    End,
}

#[derive(Debug, Clone)]
struct Marker {
    mark: Mark,
    kind: String,
    line: usize,
    /// Start of the marker's line.
    line_start: usize,
    /// Just after the line's `\n`, or the end of the text.
    line_end: usize,
    /// The line ends in `\r\n`, `\n`, or nothing (end of text).
    newline: &'static str,
    /// Byte offset of the `#`.
    at: usize,
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Marker comment lines, in order.
fn markers(text: &str, comments: &[super::Span]) -> Result<Vec<Marker>, CorefileError> {
    let mut out = Vec::new();
    for comment in comments {
        let body = text[comment.start..comment.end].trim_end();
        let mut words = body.trim_start_matches('#').split_whitespace();
        let mark = match words.next() {
            Some("dnspolicy:begin") => Mark::Begin,
            Some("dnspolicy:end") => Mark::End,
            _ => continue,
        };
        let start = line_start(text, comment.start);
        if !text[start..comment.start].chars().all(char::is_whitespace) {
            return Err(CorefileError::MarkerNotAlone {
                line: comment.line,
                column: comment.column,
            });
        }
        let kind = words.next().unwrap_or("").to_string();
        if kind != DOT_KIND && kind != SERVER_KIND {
            return Err(CorefileError::MarkerUnknown {
                found: body.to_string(),
                line: comment.line,
            });
        }
        let (line_end, newline) = match text[comment.end..].find('\n') {
            Some(i) => {
                let nl = comment.end + i;
                let crlf = nl > 0 && text.as_bytes()[nl - 1] == b'\r';
                (nl + 1, if crlf { "\r\n" } else { "\n" })
            }
            None => (text.len(), ""),
        };
        out.push(Marker {
            mark,
            kind,
            line: comment.line,
            line_start: start,
            line_end,
            newline,
            at: comment.start,
        });
    }
    Ok(out)
}

/// Byte ranges of the managed regions, checked for damage.
fn regions(text: &str) -> Result<Vec<(usize, usize)>, CorefileError> {
    let lexed = lex(text)?;
    let marks = markers(text, &lexed.comments)?;
    let mut ranges = Vec::new();
    let mut open: Option<&Marker> = None;
    for marker in &marks {
        match (marker.mark, open) {
            (Mark::Begin, None) => open = Some(marker),
            (Mark::Begin, Some(outer)) => {
                return Err(CorefileError::MarkerNested {
                    kind: marker.kind.clone(),
                    line: marker.line,
                    outer_line: outer.line,
                });
            }
            (Mark::End, None) => {
                return Err(CorefileError::MarkerNotOpened {
                    kind: marker.kind.clone(),
                    line: marker.line,
                });
            }
            (Mark::End, Some(begin)) => {
                if begin.kind != marker.kind {
                    return Err(CorefileError::MarkerMismatch {
                        begin_kind: begin.kind.clone(),
                        end_kind: marker.kind.clone(),
                        begin_line: begin.line,
                        line: marker.line,
                    });
                }
                // braces inside the region must balance, or removing it breaks the Corefile
                let mut depth = 0i64;
                for token in lexed
                    .tokens
                    .iter()
                    .filter(|t| t.span.start > begin.at && t.span.start < marker.at)
                {
                    match token.text.as_str() {
                        "{" => depth += 1,
                        "}" => depth -= 1,
                        _ => {}
                    }
                    if depth < 0 {
                        break;
                    }
                }
                if depth != 0 {
                    return Err(CorefileError::MarkerCrossesBrace {
                        begin_line: begin.line,
                        end_line: marker.line,
                    });
                }
                let mut start = begin.line_start;
                if marker.line_end == text.len() && marker.newline.is_empty() {
                    // render appended this region after adding the newline the text lacked
                    if text[..start].ends_with(begin.newline) {
                        start -= begin.newline.len();
                    }
                }
                ranges.push((start, marker.line_end));
                open = None;
            }
        }
    }
    if let Some(begin) = open {
        return Err(CorefileError::MarkerNotClosed {
            kind: begin.kind.clone(),
            line: begin.line,
        });
    }
    Ok(ranges)
}

/// The text with every managed region removed, byte for byte as it was before
/// dnspolicy wrote them. Damaged markers are an error naming the line.
pub fn strip(text: &str) -> Result<String, CorefileError> {
    let mut out = String::with_capacity(text.len());
    let mut kept = 0;
    for (start, end) in regions(text)? {
        out.push_str(&text[kept..start]);
        kept = end;
    }
    out.push_str(&text[kept..]);
    Ok(out)
}

/// `original` with its managed regions replaced by `managed`: the dot-block text
/// inside the `.` server block (just before its closing brace, indented like its
/// directives), the server blocks at the end. Empty parts produce no region.
pub fn render(original: &str, managed: &ManagedText) -> Result<String, CorefileError> {
    let base = strip(original)?;
    check_managed(managed)?;
    // even with nothing to place, an unparseable Corefile is refused, never passed on
    let (corefile, braces) = parse_detailed(&base)?;
    if managed.dot_block.is_empty() && managed.server_blocks.is_empty() {
        return Ok(base);
    }
    let newline = if base
        .find('\n')
        .is_some_and(|i| i > 0 && base.as_bytes()[i - 1] == b'\r')
    {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = base.clone();

    if !managed.dot_block.is_empty() {
        let (index, _) = dot_choice(&corefile)?;
        let block = &corefile.blocks[index];
        let at = insertion_point(&base, block, braces[index])?;
        let indent = directive_indent(&base, block);
        let mut region = format!("{indent}{DOT_BEGIN}{newline}");
        push_lines(&mut region, &managed.dot_block, &indent, newline);
        let _ = write!(region, "{indent}{DOT_END}{newline}");
        out.insert_str(at, &region);
    }

    if !managed.server_blocks.is_empty() {
        let mut region = format!("{SERVER_BEGIN}{newline}");
        push_lines(&mut region, &managed.server_blocks, "", newline);
        region.push_str(SERVER_END);
        if out.is_empty() || out.ends_with('\n') {
            out.push_str(&region);
            out.push_str(newline);
        } else {
            // keep the missing final newline missing; strip takes this one back
            out.push_str(newline);
            out.push_str(&region);
        }
    }

    check_result(&corefile, &out, managed)?;
    Ok(out)
}

/// The start of the line holding the block's closing brace.
fn insertion_point(
    text: &str,
    block: &ServerBlock,
    braces: Braces,
) -> Result<usize, CorefileError> {
    let line = block.span.line;
    let close =
        braces
            .close
            .filter(|_| braces.open.is_some())
            .ok_or(CorefileError::DotBlockShape {
                line,
                reason: "has no braces",
            })?;
    let start = line_start(text, close.start);
    if close.start < block.span.start
        || !text[start..close.start]
            .chars()
            .all(|c| c == ' ' || c == '\t')
    {
        return Err(CorefileError::DotBlockShape {
            line,
            reason: "does not end with '}' on a line of its own",
        });
    }
    Ok(start)
}

/// The indentation of the block's first directive, or four spaces.
fn directive_indent(text: &str, block: &ServerBlock) -> String {
    block
        .directives
        .first()
        .filter(|d| d.span.start > block.span.start)
        .map(|d| &text[line_start(text, d.span.start)..d.span.start])
        .filter(|prefix| !prefix.is_empty() && prefix.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or("    ")
        .to_string()
}

fn push_lines(out: &mut String, text: &str, indent: &str, newline: &str) {
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if !line.trim().is_empty() {
            out.push_str(indent);
            out.push_str(line);
        }
        out.push_str(newline);
    }
}

/// Managed text must be well-formed on its own and must not carry markers.
fn check_managed(managed: &ManagedText) -> Result<(), CorefileError> {
    for (part, text) in [
        (DOT_KIND, &managed.dot_block),
        (SERVER_KIND, &managed.server_blocks),
    ] {
        let invalid = |reason: String| CorefileError::ManagedText { part, reason };
        let lexed = lex(text).map_err(|e| invalid(e.to_string()))?;
        for comment in &lexed.comments {
            let body = text[comment.start..comment.end].trim_start_matches('#');
            if body
                .split_whitespace()
                .next()
                .is_some_and(|w| w.starts_with("dnspolicy:"))
            {
                return Err(invalid(format!(
                    "line {} looks like a dnspolicy marker",
                    comment.line
                )));
            }
        }
    }
    if !managed.dot_block.is_empty() {
        dot_directives(&managed.dot_block)?;
    }
    if !managed.server_blocks.is_empty() {
        let invalid = |reason: String| CorefileError::ManagedText {
            part: SERVER_KIND,
            reason,
        };
        let (blocks, braces) =
            parse_detailed(&managed.server_blocks).map_err(|e| invalid(e.to_string()))?;
        if !blocks.top_level_imports.is_empty() {
            return Err(invalid("must not import files".into()));
        }
        if braces.iter().any(|b| b.open.is_none() || b.close.is_none()) {
            return Err(invalid(
                "every server block needs { } around its directives".into(),
            ));
        }
    }
    Ok(())
}

/// The managed dot-block text read as the body of a server block.
fn dot_directives(text: &str) -> Result<Vec<Directive>, CorefileError> {
    let wrapped = format!(". {{\n{text}\n}}\n");
    let invalid = |reason: String| CorefileError::ManagedText {
        part: DOT_KIND,
        reason,
    };
    let corefile = parse(&wrapped).map_err(|e| invalid(e.to_string()))?;
    match corefile.blocks.as_slice() {
        [block] if corefile.top_level_imports.is_empty() => Ok(block.directives.clone()),
        _ => Err(invalid(
            "must be directives only, with balanced braces".into(),
        )),
    }
}

/// The rendered text must parse to exactly the original plus the managed parts,
/// so no managed text can escape its region or change what is around it.
fn check_result(
    base: &Corefile,
    rendered: &str,
    managed: &ManagedText,
) -> Result<(), CorefileError> {
    let after = parse(rendered).map_err(|e| CorefileError::ManagedText {
        part: DOT_KIND,
        reason: format!("the result does not parse: {e}"),
    })?;
    let mut expected = base.clone();
    if !managed.dot_block.is_empty() {
        let (index, _) = dot_choice(base)?;
        expected.blocks[index]
            .directives
            .extend(dot_directives(&managed.dot_block)?);
    }
    if !managed.server_blocks.is_empty() {
        expected
            .blocks
            .extend(parse(&managed.server_blocks)?.blocks);
    }
    if shape(&expected) != shape(&after) {
        return Err(CorefileError::ManagedText {
            part: if managed.server_blocks.is_empty() {
                DOT_KIND
            } else {
                SERVER_KIND
            },
            reason: "placed in the Corefile it would change more than its own region".into(),
        });
    }
    Ok(())
}

/// A Corefile's structure without positions.
fn shape(corefile: &Corefile) -> String {
    fn directives(out: &mut String, list: &[Directive]) {
        for d in list {
            let _ = write!(out, "{:?}{:?}[", d.name, d.args);
            directives(out, &d.block);
            out.push(']');
        }
    }
    let mut out = String::new();
    for block in &corefile.blocks {
        let keys: Vec<&str> = block.keys.iter().map(|k| k.raw.as_str()).collect();
        let _ = write!(out, "{keys:?}{{");
        directives(&mut out, &block.directives);
        out.push('}');
    }
    for import in &corefile.top_level_imports {
        let _ = write!(out, "import{:?}", import.args);
    }
    out
}

#[cfg(test)]
mod tests;
