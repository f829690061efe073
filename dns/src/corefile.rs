//! Corefile lexing, parsing and surgical editing.
//!
//! `lexer` cuts tokens exactly as CoreDNS does, `parse` groups them into the
//! types below, and `edit` places dnspolicy's managed text between marker
//! comments so that every byte outside the markers is kept:
//!
//! ```text
//! .:53 {
//!     ...
//!     # dnspolicy:begin dot-block (managed by dnspolicy; edits here are reverted)
//!     rewrite stop { ... }
//!     # dnspolicy:end dot-block
//! }
//! # dnspolicy:begin server-blocks (managed by dnspolicy; edits here are reverted)
//! tailb45a71.ts.net:53 { ... }
//! # dnspolicy:end server-blocks
//! ```

mod edit;
mod lexer;
mod parse;

pub use edit::{
    Channel, DOT_BEGIN, DOT_END, DotServer, SERVER_BEGIN, SERVER_END, channel, corefile_hash,
    custom_keys, dot_block, dot_server, render, strip,
};
pub use lexer::{Token, tokenize};
pub use parse::parse;

/// Byte range in the Corefile text, with the 1-based line and column (in
/// characters) of its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub column: usize,
}

/// A parsed Corefile: server blocks in order, imports and snippets resolved
/// only as far as a single text allows (an `import` of files is kept as a
/// directive; callers decide what it means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corefile {
    pub blocks: Vec<ServerBlock>,
    /// Top-level `import` lines outside any server block (k3s: `import /etc/coredns/custom/*.server`).
    pub top_level_imports: Vec<Directive>,
}

/// `zone[:port] [zone[:port]...] { directives }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlock {
    pub keys: Vec<ServerKey>,
    pub directives: Vec<Directive>,
    pub span: Span,
}

/// One key of a server block, e.g. `.:53`, `cluster.local:53`, `dns://.:5353`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    /// As written.
    pub raw: String,
    /// `dns`, `tls`, `grpc`, `https`, ... when written.
    pub scheme: Option<String>,
    /// Lower-case, absolute with a trailing dot: `.`, `cluster.local.`.
    pub zone: String,
    /// `None` when the key has no port (CoreDNS then uses the scheme's default:
    /// `-dns.port`, 53, for dns; 853 for tls; 443 for grpc and https), or when the
    /// port comes from the environment (`.:{$PORT}`, visible in `raw`).
    pub port: Option<u16>,
}

/// `name args... [{ nested directives }]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    /// Arguments with quotes removed, `{$ENV}` placeholders kept as written.
    pub args: Vec<String>,
    pub block: Vec<Directive>,
    pub span: Span,
}

/// Text the renderer produces for the editor to place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManagedText {
    /// Directive lines for the `.` server block on the cluster DNS port,
    /// unindented, one directive (with its nested block) after another.
    pub dot_block: String,
    /// Whole server blocks appended at the end of the Corefile.
    pub server_blocks: String,
}

/// Why a Corefile could not be read or edited. Every variant names the place and
/// what to do; nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorefileError {
    #[error("line {line}, column {column}: quoted text is never closed; add the closing \"")]
    UnterminatedQuote { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: '}}' closes nothing; remove it or add the '{{' it belongs to"
    )]
    UnexpectedCloseBrace { line: usize, column: usize },
    #[error("line {line}, column {column}: '{{' is never closed; add the matching '}}'")]
    UnclosedBrace { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: '{{' must come after a directive or server key on the same line"
    )]
    StrayOpenBrace { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: import takes exactly one argument (a file, a glob or a snippet name) on the same line"
    )]
    ImportArguments { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: import of {pattern:?} among server keys cannot be resolved from the Corefile alone; put the import on its own line"
    )]
    ImportAmongKeys {
        pattern: String,
        line: usize,
        column: usize,
    },
    #[error(
        "line {line}, column {column}: a server key ends with ',' but no key follows; remove the comma or add the key"
    )]
    MissingServerKey { line: usize, column: usize },
    #[error(
        "line {line}, column {column}: snippet ({name}) is declared twice; rename or remove one"
    )]
    DuplicateSnippet {
        name: String,
        line: usize,
        column: usize,
    },
    #[error(
        "line {line}, column {column}: snippet ({name}) needs a body in braces: ({name}) {{ ... }}"
    )]
    SnippetWithoutBody {
        name: String,
        line: usize,
        column: usize,
    },
    #[error(
        "line {line}, column {column}: snippet imports expand more than {limit} times; a snippet probably imports itself"
    )]
    SnippetLoop {
        limit: usize,
        line: usize,
        column: usize,
    },
    #[error("line {line}, column {column}: blocks nest more than {limit} levels deep")]
    TooDeep {
        limit: usize,
        line: usize,
        column: usize,
    },
    #[error("line {line}, column {column}: server key {key:?} is invalid: {reason}")]
    InvalidServerKey {
        key: String,
        reason: String,
        line: usize,
        column: usize,
    },
    #[error(
        "no server block serves \".\" over plain DNS; add one (for example `.:53 {{ ... }}`) so dnspolicy has a place for its directives"
    )]
    NoDotBlock,
    #[error(
        "several server blocks could be the cluster DNS \".\" block ({candidates}); dnspolicy will not guess: keep one \".\" block on port 53 (or one in all)"
    )]
    AmbiguousDotBlock { candidates: String },
    #[error(
        "line {line}: the \".\" server block {reason}; write it as `.:53 {{` ... `}}` with its closing brace on a line of its own"
    )]
    DotBlockShape { line: usize, reason: &'static str },
    #[error(
        "line {line}: managed region {kind:?} begins here but never ends; put back `# dnspolicy:end {kind}` or delete the region by hand"
    )]
    MarkerNotClosed { kind: String, line: usize },
    #[error(
        "line {line}: managed region {kind:?} begins inside the region begun on line {outer_line}; remove one of the two begin markers"
    )]
    MarkerNested {
        kind: String,
        line: usize,
        outer_line: usize,
    },
    #[error(
        "line {line}: managed region {kind:?} ends here but never began; remove this end marker"
    )]
    MarkerNotOpened { kind: String, line: usize },
    #[error(
        "line {line}: end marker {end_kind:?} does not match begin marker {begin_kind:?} on line {begin_line}; make them name the same region"
    )]
    MarkerMismatch {
        begin_kind: String,
        end_kind: String,
        begin_line: usize,
        line: usize,
    },
    #[error(
        "line {line}: unknown managed region {found:?}; dnspolicy writes only \"dot-block\" and \"server-blocks\""
    )]
    MarkerUnknown { found: String, line: usize },
    #[error(
        "line {line}, column {column}: a dnspolicy marker must be alone on its line; move it to a line of its own"
    )]
    MarkerNotAlone { line: usize, column: usize },
    #[error(
        "lines {begin_line}-{end_line}: the managed region crosses a brace of the Corefile around it; restore the braces or delete the region by hand"
    )]
    MarkerCrossesBrace { begin_line: usize, end_line: usize },
    #[error("managed {part} text is invalid: {reason}")]
    ManagedText { part: &'static str, reason: String },
    #[error(
        "the Corefile imports {override_glob:?} but has no top-level import of *.server files, so server blocks cannot go into coredns-custom; add `import <dir>/*.server` at the top level"
    )]
    NoServerImport { override_glob: String },
}

/// An argument written into a Corefile as one token: quoted when CoreDNS's
/// lexer would split or misread it.
pub(crate) fn token(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg.contains(|c: char| c.is_whitespace() || c == '"' || c == '#' || c == '\\')
        && arg != "{"
        && arg != "}";
    if plain {
        arg.to_string()
    } else {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
