//! DNS names as dnspolicy handles them: checking a spec's names, normalising
//! (lower case, no trailing dot), counting labels, and "is under zone",
//! compared label-wise, never string-wise. The one place for these in the crate.

/// A name has at most this many bytes (without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
/// A label has at most this many bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name cannot be used. Messages name the value; the caller adds the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be a DNS name, not empty or the root")]
    Empty,
    #[error("{name:?} must not end with a dot")]
    TrailingDot { name: String },
    #[error("{len} bytes long; a DNS name has at most {MAX_NAME_LEN}")]
    TooLong { len: usize },
    #[error("{name:?} has an empty label")]
    EmptyLabel { name: String },
    #[error("label {label:?} is longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong { label: String },
    #[error("{name:?} contains {found:?}; labels take a-z, 0-9, '-' and '_'{}", if found.is_ascii_uppercase() { " (write it in lower case)" } else { "" })]
    BadCharacter { name: String, found: char },
    #[error("label {label:?} must not start or end with '-'")]
    HyphenAtEdge { label: String },
}

/// Checks a DNS name as dnspolicy accepts it in a spec: lower-case labels of
/// `[a-z0-9_-]`, 1..=63 bytes, not starting or ending with `-`, at most 253
/// bytes, no trailing dot, not the root.
pub fn check_dns_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name == "." {
        return Err(NameError::Empty);
    }
    if name.ends_with('.') {
        return Err(NameError::TrailingDot { name: name.into() });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel { name: name.into() });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong {
                label: label.into(),
            });
        }
        if let Some(found) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadCharacter {
                name: name.into(),
                found,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::HyphenAtEdge {
                label: label.into(),
            });
        }
    }
    Ok(())
}

/// Lower case, without a trailing dot; the root is `""`.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Lower case, absolute (with a trailing dot), as CoreDNS writes zones; the root is `.`.
pub fn absolute(name: &str) -> String {
    let n = normalise(name);
    if n.is_empty() { ".".into() } else { n + "." }
}

/// Labels in a name (relative or absolute); the root has none.
pub fn label_count(name: &str) -> usize {
    let n = name.trim_end_matches('.');
    if n.is_empty() {
        0
    } else {
        n.split('.').count()
    }
}

/// `name` is `zone` or a name below it, label-wise and case-insensitively;
/// either may be absolute or relative. Every name is under the root.
pub fn is_under(name: &str, zone: &str) -> bool {
    let name = normalise(name);
    let zone = normalise(zone);
    if zone.is_empty() {
        return true;
    }
    name == zone
        || name
            .strip_suffix(zone.as_str())
            .is_some_and(|rest| rest.ends_with('.'))
}

/// One of the two names is the other or below it.
pub fn nested(a: &str, b: &str) -> bool {
    is_under(a, b) || is_under(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_label_wise_and_ignores_case_and_the_trailing_dot() {
        assert!(is_under("a.cluster.local", "cluster.local."));
        assert!(is_under("Cluster.Local.", "cluster.local"));
        assert!(!is_under("mycluster.local", "cluster.local"));
        assert!(is_under("anything", "."));
        assert!(nested("ts.net", "tailb45a71.ts.net"));
        assert!(!nested("ts.net", "ts.network"));
        assert_eq!(label_count("cluster.local."), 2);
        assert_eq!(label_count("."), 0);
        assert_eq!(absolute("Cluster.Local"), "cluster.local.");
        assert_eq!(absolute("."), ".");
    }

    #[test]
    fn names_are_refused_with_the_value() {
        assert_eq!(check_dns_name(""), Err(NameError::Empty));
        assert!(
            check_dns_name("Tail.ts.net")
                .unwrap_err()
                .to_string()
                .contains("lower case")
        );
        assert!(check_dns_name("a..b").is_err());
        assert!(check_dns_name("-a.b").is_err());
        assert!(check_dns_name("a_b.c-d").is_ok());
    }
}
