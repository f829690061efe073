//! The regexes a stanza matches names with. Labels are `[^.]+`, dots `[.]`
//! (never `\.`, never `#`); names as CoreDNS sees them: lower case, absolute.

use super::suffix::Stanza;

impl Stanza<'_> {
    /// Names with more than `hostLabels` labels before the suffix.
    pub(super) fn artifact(&self) -> String {
        self.artifact_grouped("", "")
    }

    /// Names below `<cluster domain>.<suffix>.` that `artifact` misses.
    pub(super) fn cluster(&self) -> Option<String> {
        self.cluster_grouped("", "")
    }

    /// `artifact` with group 1 the name without the suffix and its dot.
    pub(super) fn artifact_capture(&self) -> String {
        self.artifact_grouped("(", ")")
    }

    /// `cluster` with group 1 the name without the suffix and its dot.
    pub(super) fn cluster_capture(&self) -> Option<String> {
        self.cluster_grouped("(", ")")
    }

    /// `artifact`, the name before the suffix between `open` and `close`.
    fn artifact_grouped(&self, open: &str, close: &str) -> String {
        format!(
            "^{open}{}.+{close}[.]{}[.]$",
            exactly_labels(self.rule.host_labels),
            self.suffix_re
        )
    }

    /// `cluster`, the name before the suffix between `open` and `close`.
    fn cluster_grouped(&self, open: &str, close: &str) -> Option<String> {
        self.cluster_re
            .as_ref()
            .map(|d| format!("^{open}.+[.]{d}{close}[.]{}[.]$", self.suffix_re))
    }

    /// The names the suffix's own resolvers answer: the suffix itself and up
    /// to `hostLabels` labels before it.
    pub(super) fn real_host(&self) -> String {
        format!(
            "^{}{}[.]$",
            up_to_labels(self.rule.host_labels),
            self.suffix_re
        )
    }
}

/// A DNS name as a regex literal: `tailb45a71[.]ts[.]net`. Names passed
/// `check_dns_name`, so `[a-z0-9_-]` and dots are all there is.
pub(super) fn literal(name: &str) -> String {
    name.replace('.', "[.]")
}

/// Exactly `n` labels, each with its dot.
pub(super) fn exactly_labels(n: u8) -> String {
    match n {
        0 => String::new(),
        1 => "[^.]+[.]".to_string(),
        n => format!("(?:[^.]+[.]){{{n}}}"),
    }
}

/// Zero to `n` labels, each with its dot.
pub(super) fn up_to_labels(n: u8) -> String {
    match n {
        0 => String::new(),
        1 => "(?:[^.]+[.])?".to_string(),
        n => format!("(?:[^.]+[.]){{0,{n}}}"),
    }
}
