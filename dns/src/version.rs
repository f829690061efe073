//! CoreDNS versions: read from the Deployment's image reference or given on
//! the command line, and what each version's Corefile syntax allows.
//!
//! The features the stanzas depend on, with the release that brought them
//! (checked in CoreDNS's source and release notes):
//! - `rewrite ... answer auto`: 1.8.4, so replies carry the queried name.
//! - `rewrite` writes later plugins' failures through its reverter: 1.9.0.
//! - `template` without a match or `fallthrough` answers SERVFAIL: 1.9.3.
//! - `view` (server-block routing by expression): 1.10.0.
//! - `forward`'s `max_connect_attempts` (a cap on the tries for one query):
//!   1.13.2 (PR 7722, release notes); proven on 1.14.2.

use std::fmt;
use std::str::FromStr;

/// A CoreDNS release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreDnsVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl CoreDnsVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        CoreDnsVersion {
            major,
            minor,
            patch,
        }
    }

    /// The oldest release the stanzas work on: `rewrite ... answer auto`
    /// first shipped in 1.8.4.
    pub const OLDEST_SUPPORTED: CoreDnsVersion = CoreDnsVersion::new(1, 8, 4);
    /// The newest release the stanzas were checked against; the command
    /// line's default when no version is given.
    pub const NEWEST_CHECKED: CoreDnsVersion = CoreDnsVersion::new(1, 14, 2);
    /// `rewrite` writes failures of the plugins after it through its
    /// reverter, so their SERVFAIL carries the original question (PR 5150).
    pub const REWRITE_REVERTS_FAILURES: CoreDnsVersion = CoreDnsVersion::new(1, 9, 0);
    /// `template` answers SERVFAIL (before: no reply) for a name in its zone
    /// that no `match` takes when there is no `fallthrough` (PR 5180).
    pub const TEMPLATE_SERVFAIL: CoreDnsVersion = CoreDnsVersion::new(1, 9, 3);
    /// The `view` plugin, which lets a server block take only some names of
    /// its zone (real hosts of a suffix, for `forwardTo` with `Rewrite`).
    pub const VIEW_PLUGIN: CoreDnsVersion = CoreDnsVersion::new(1, 10, 0);
    /// `forward`'s `max_connect_attempts`: without it, a query to a silent
    /// resolver is tried every 2 s until 5 s have passed (3 tries, SERVFAIL
    /// after 6 s), whatever else the block says (PR 7722).
    pub const FORWARD_CONNECT_ATTEMPTS: CoreDnsVersion = CoreDnsVersion::new(1, 13, 2);

    /// Whether the `view` plugin exists in this release.
    pub fn has_view(self) -> bool {
        self >= Self::VIEW_PLUGIN
    }

    /// Whether `forward` takes `max_connect_attempts` in this release.
    pub fn has_forward_connect_attempts(self) -> bool {
        self >= Self::FORWARD_CONNECT_ATTEMPTS
    }

    /// Parses `1.12.1`, `v1.12.1`, `1.12` (patch 0), and vendor tags that
    /// append to the version: `v1.11.3-eksbuild.1`, `v1.9.4-hotfix.20240704`.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let unparseable = || VersionError::Unparseable {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
        // The version is the leading `N.N[.N]`; whatever follows a `-` or `+`
        // is a vendor build suffix.
        let core = bare.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(unparseable());
        }
        let num = |p: &str| p.parse::<u32>().map_err(|_| unparseable());
        Ok(CoreDnsVersion {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: if parts.len() == 3 { num(parts[2])? } else { 0 },
        })
    }

    /// Reads the version from a container image reference's tag:
    /// `registry.k8s.io/coredns/coredns:v1.12.1`,
    /// `602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.3-eksbuild.1`,
    /// `rancher/mirrored-coredns-coredns:1.12.0`, `localhost:5000/coredns:1.8.7`.
    /// A reference pinned only by digest names no version.
    pub fn from_image(image: &str) -> Result<Self, VersionError> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image, None),
        };
        // The tag is after the last ':' of the last path component, so a
        // registry port (`localhost:5000/...`) is never taken for a tag.
        let last = name.rsplit('/').next().unwrap_or(name);
        let Some((_, tag)) = last.split_once(':') else {
            return Err(match digest {
                Some(_) => VersionError::DigestOnly {
                    image: image.to_string(),
                },
                None => VersionError::NoTag {
                    image: image.to_string(),
                },
            });
        };
        CoreDnsVersion::parse(tag).map_err(|_| VersionError::TagNotAVersion {
            image: image.to_string(),
            tag: tag.to_string(),
        })
    }

    /// Refuses releases the stanzas cannot be written for, saying why.
    pub fn check_supported(self) -> Result<Self, VersionError> {
        if self.major != 1 {
            return Err(VersionError::Unsupported {
                version: self,
                reason: format!(
                    "dnspolicy knows CoreDNS 1.x ({} to {}); a major version {} may read the Corefile differently",
                    Self::OLDEST_SUPPORTED,
                    Self::NEWEST_CHECKED,
                    self.major
                ),
            });
        }
        if self < Self::OLDEST_SUPPORTED {
            return Err(VersionError::Unsupported {
                version: self,
                reason: format!(
                    "its rewrite plugin has no `answer auto`, so replies to rewritten queries would not carry the name the pod asked for; upgrade CoreDNS to {} or newer",
                    Self::OLDEST_SUPPORTED
                ),
            });
        }
        Ok(self)
    }
}

impl fmt::Display for CoreDnsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for CoreDnsVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CoreDnsVersion::parse(s)
    }
}

/// Why no usable CoreDNS version is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("{text:?} is not a CoreDNS version; write it as 1.12.1 or v1.12.1")]
    Unparseable { text: String },
    #[error(
        "image {image:?} has no tag, so its CoreDNS version is unknown; tag the image with its version (coredns:v1.12.1) or pass --coredns-version"
    )]
    NoTag { image: String },
    #[error(
        "image {image:?} is pinned by digest only, so its CoreDNS version is unknown; reference it as coredns:v1.12.1@sha256:... or pass --coredns-version"
    )]
    DigestOnly { image: String },
    #[error(
        "image {image:?} has tag {tag:?}, which is not a CoreDNS version; tag the image with its version (coredns:v1.12.1) or pass --coredns-version"
    )]
    TagNotAVersion { image: String, tag: String },
    #[error("CoreDNS {version} is not supported: {reason}")]
    Unsupported {
        version: CoreDnsVersion,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> CoreDnsVersion {
        CoreDnsVersion::new(major, minor, patch)
    }

    #[test]
    fn versions_are_read_from_the_images_clusters_run() {
        for (image, version) in [
            ("registry.k8s.io/coredns/coredns:v1.12.1", v(1, 12, 1)),
            ("registry.k8s.io/coredns/coredns:v1.14.2", v(1, 14, 2)),
            ("k8s.gcr.io/coredns:1.7.0", v(1, 7, 0)),
            ("coredns/coredns:1.8.7", v(1, 8, 7)),
            (
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.3-eksbuild.1",
                v(1, 11, 3),
            ),
            (
                "mcr.microsoft.com/oss/kubernetes/coredns:v1.9.4-hotfix.20240704",
                v(1, 9, 4),
            ),
            ("rancher/mirrored-coredns-coredns:1.12.0", v(1, 12, 0)),
            ("localhost:5000/coredns/coredns:1.10.1", v(1, 10, 1)),
            (
                "registry.k8s.io/coredns/coredns:v1.12.1@sha256:0123456789abcdef",
                v(1, 12, 1),
            ),
        ] {
            assert_eq!(CoreDnsVersion::from_image(image), Ok(version), "{image}");
        }
    }

    #[test]
    fn images_without_a_version_say_what_to_do() {
        let digest = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:0123456789abcdef";
        let err = CoreDnsVersion::from_image(digest).unwrap_err();
        assert!(matches!(err, VersionError::DigestOnly { .. }));
        assert!(err.to_string().contains("--coredns-version"), "{err}");
        assert!(matches!(
            CoreDnsVersion::from_image("localhost:5000/coredns"),
            Err(VersionError::NoTag { .. })
        ));
        let err = CoreDnsVersion::from_image("coredns/coredns:latest").unwrap_err();
        assert_eq!(
            err,
            VersionError::TagNotAVersion {
                image: "coredns/coredns:latest".into(),
                tag: "latest".into()
            }
        );
    }

    #[test]
    fn command_line_versions() {
        assert_eq!("1.12.1".parse(), Ok(v(1, 12, 1)));
        assert_eq!("v1.9".parse(), Ok(v(1, 9, 0)));
        for bad in [
            "", "1", "one.two", "1..2", "1.2.3.4", "latest", "v", "1.2.x",
        ] {
            assert!(bad.parse::<CoreDnsVersion>().is_err(), "{bad:?}");
        }
        assert_eq!(v(1, 10, 0).to_string(), "1.10.0");
        assert!(v(1, 9, 10) < v(1, 10, 0));
    }

    #[test]
    fn releases_before_answer_auto_are_refused_with_the_reason() {
        let err = v(1, 8, 3).check_supported().unwrap_err();
        assert!(err.to_string().contains("answer auto"), "{err}");
        assert!(err.to_string().contains("1.8.4"), "{err}");
        assert!(v(2, 0, 0).check_supported().is_err());
        assert_eq!(v(1, 8, 4).check_supported(), Ok(v(1, 8, 4)));
        assert_eq!(v(1, 15, 0).check_supported(), Ok(v(1, 15, 0)));
        assert!(!v(1, 9, 4).has_view());
        assert!(v(1, 10, 0).has_view());
        assert!(!v(1, 13, 1).has_forward_connect_attempts());
        assert!(v(1, 13, 2).has_forward_connect_attempts());
    }
}
