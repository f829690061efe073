//! Query logs the servers write, read back by tests per step.

use std::path::{Path, PathBuf};

use super::codec::fqdn;

/// One logged question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedQuery {
    pub unix_ms: u128,
    pub proto: String,
    pub qtype: String,
    /// Lower-case, with trailing dot.
    pub name: String,
    pub verdict: String,
}

/// A query log file written by a server; `mark()`/`since()` scope reads to a test step.
#[derive(Clone, Debug)]
pub struct QueryLog {
    pub path: PathBuf,
}

impl QueryLog {
    pub fn new(path: impl AsRef<Path>) -> Self {
        QueryLog {
            path: path.as_ref().to_path_buf(),
        }
    }
    fn parse(text: &str) -> Vec<LoggedQuery> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6).then(|| LoggedQuery {
                    unix_ms: f[0].parse().unwrap_or(0),
                    proto: f[1].into(),
                    qtype: f[3].into(),
                    name: f[4].into(),
                    verdict: f[5].into(),
                })
            })
            .collect()
    }
    pub fn all(&self) -> Vec<LoggedQuery> {
        self.since(0)
    }
    /// Current end of the log, for `since`.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
    /// Queries logged after `mark`.
    pub fn since(&self, mark: u64) -> Vec<LoggedQuery> {
        let s = std::fs::read(&self.path).unwrap_or_default();
        Self::parse(&String::from_utf8_lossy(
            s.get(mark as usize..).unwrap_or(&[]),
        ))
    }
    /// Names (deduplicated, in order) ending with `suffix` (dot-insensitive).
    pub fn names_ending_with(&self, mark: u64, suffix: &str) -> Vec<String> {
        let suf = fqdn(suffix);
        let mut out: Vec<String> = Vec::new();
        for q in self.since(mark) {
            if q.name.ends_with(&suf) && !out.contains(&q.name) {
                out.push(q.name);
            }
        }
        out
    }
}
