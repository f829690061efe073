//! Corefile lexing, parsing and surgical editing.
//!
//! (Types fixed first so `stanza`, `serving` and `explain` can be written
//! against them; the lexer, parser and editor are being written.)

/// Byte range in the Corefile text, with the 1-based line and column of its start.
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
    /// `None` when the key has no port (CoreDNS then uses `-dns.port`, 53 by default).
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
