//! The words the resolver model, the serving model and explain share: the
//! query type, what a stub resolver gets back, and how CoreDNS served one
//! query.

use std::fmt;
use std::str::FromStr;

/// A query type. Stub resolvers send A and AAAA; the serving model reads any
/// (`template`, `view` and `hosts` look at it); others go by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QType {
    A,
    Aaaa,
    Srv,
    Ptr,
    Txt,
    Mx,
    Cname,
    Ns,
    Soa,
    Any,
    Other(u16),
}

impl QType {
    /// The type as CoreDNS writes it (`AAAA`, `TYPE65`).
    pub fn name(self) -> String {
        match self {
            QType::A => "A".into(),
            QType::Aaaa => "AAAA".into(),
            QType::Srv => "SRV".into(),
            QType::Ptr => "PTR".into(),
            QType::Txt => "TXT".into(),
            QType::Mx => "MX".into(),
            QType::Cname => "CNAME".into(),
            QType::Ns => "NS".into(),
            QType::Soa => "SOA".into(),
            QType::Any => "ANY".into(),
            QType::Other(n) => format!("TYPE{n}"),
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A query type nobody has a name or number for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a DNS query type (A, AAAA, SRV, ... or TYPEn)")]
pub struct QTypeError(pub String);

impl FromStr for QType {
    type Err = QTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        Ok(match upper.as_str() {
            "A" => QType::A,
            "AAAA" => QType::Aaaa,
            "SRV" => QType::Srv,
            "PTR" => QType::Ptr,
            "TXT" => QType::Txt,
            "MX" => QType::Mx,
            "CNAME" => QType::Cname,
            "NS" => QType::Ns,
            "SOA" => QType::Soa,
            "ANY" => QType::Any,
            _ => match upper.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
                Some(n) => QType::Other(n),
                None => return Err(QTypeError(s.to_string())),
            },
        })
    }
}

/// What a stub resolver gets back for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records of the type asked for.
    Answer,
    NxDomain,
    /// NOERROR without records of the type asked for.
    NoData,
    ServFail,
    Refused,
    /// No reply within the stub's timeout (CoreDNS wrote none, or the
    /// resolver dropped it).
    Timeout,
}

impl Outcome {
    /// NOERROR or NXDOMAIN: a reply both libraries accept as final.
    pub(crate) fn is_response(self) -> bool {
        matches!(self, Outcome::Answer | Outcome::NxDomain | Outcome::NoData)
    }

    /// The serving model's word for it in a step (`answers NXDOMAIN`).
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Answer => "an answer",
            Outcome::NxDomain => "NXDOMAIN",
            Outcome::NoData => "NODATA",
            Outcome::ServFail => "SERVFAIL",
            Outcome::Refused => "REFUSED",
            Outcome::Timeout => "no reply",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Answer => "answer",
            Outcome::NxDomain => "NXDOMAIN",
            Outcome::NoData => "NODATA",
            Outcome::ServFail => "SERVFAIL",
            Outcome::Refused => "REFUSED",
            Outcome::Timeout => "timeout",
        })
    }
}

/// Where CoreDNS's handling of one query ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// CoreDNS writes the reply itself (or, for `Timeout`, writes none).
    Local(Outcome),
    /// The query leaves CoreDNS: the reply is whatever `targets` (as the
    /// Corefile names them) answer for `name` (the name after rewrites), or a
    /// timeout if they never do.
    Upstream { targets: Vec<String>, name: String },
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Reply {
        Reply::Local(outcome)
    }
}

/// How CoreDNS served one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The server key of the block that took the query, as written (`.:53`,
    /// `tailb45a71.ts.net:53`); empty from `serving::serve` when no block did.
    pub block: String,
    /// The plugin that ended the query (`kubernetes`, `template`, `forward`,
    /// ...); empty when none did (REFUSED, or SERVFAIL at the chain's end).
    /// `explain` writes the plugins the query passed (`rewrite > kubernetes`).
    pub plugin: String,
    /// What happened, plugin by plugin.
    pub steps: Vec<String>,
    pub reply: Reply,
    /// Whether the reply's question section is the query's (a resolver drops
    /// a reply whose question differs, and waits for its timeout).
    pub question_matches: bool,
    /// For `Reply::Upstream`: whether the question still matches when the
    /// upstream never answers and `forward` itself fails. CoreDNS writes that
    /// SERVFAIL from the rewritten query unless a `stop` rule's reverter
    /// writes it (1.9.0 on); before, a resolver drops the reply and times out.
    pub question_matches_if_upstream_fails: bool,
    /// The name the answering plugin saw, after rewrites; lower-case, absolute.
    pub resolved_name: String,
}
