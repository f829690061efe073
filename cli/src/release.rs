//! `dnspolicy release-overlay`: the kustomize overlay that installs a
//! release with its image pinned by digest (release/), and the
//! check that an overlay does pin it.
//!
//! A tag can be moved to other contents after the release; a digest names
//! one manifest, so the pods run what was tested and kubelet's imageID says
//! which.

use std::fmt;

/// The image name the kustomize base (manifests/operator.yaml,
/// manifests/node-agent.yaml) uses; the overlay's `images` entry matches it.
pub const BASE_IMAGE: &str = "ghcr.io/dnspolicy/dnspolicy";

/// What main's release/ holds between releases: no image has this
/// digest, so applying it fails at the pull instead of running an image
/// nobody pinned. The release commit replaces it (docs/operations.md).
pub const PLACEHOLDER_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// An image reference by digest: `name@sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRef {
    /// Registry and repository, without tag or digest.
    pub name: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
}

impl fmt::Display for DigestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.digest)
    }
}

const FIX: &str = "pass IMAGE@sha256:<64 hex digits>, the digest the registry printed when the release image was pushed (or `crane digest IMAGE:TAG`)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageRefError {
    #[error(
        "IMAGE {image:?} is a tag only: a tag can be moved after the release, so the release overlay pins a digest; {FIX}"
    )]
    TagOnly { image: String },
    #[error("IMAGE {image:?} has no digest; {FIX}")]
    NoDigest { image: String },
    #[error(
        "IMAGE {image:?}: the digest {digest:?} is not sha256: followed by 64 lowercase hex digits; {FIX}"
    )]
    BadDigest { image: String, digest: String },
    #[error(
        "IMAGE {image:?}: {name:?} is not an image name (lowercase registry/path, e.g. ghcr.io/dnspolicy/dnspolicy); {FIX}"
    )]
    BadName { image: String, name: String },
}

/// Parses `name[:tag]@sha256:<hex>`. A tag next to the digest is dropped:
/// the digest alone decides what runs, and kustomize's `digest` replaces
/// the tag anyway.
pub fn parse_digest_ref(image: &str) -> Result<DigestRef, ImageRefError> {
    let image = image.trim();
    let Some((named, digest)) = image.split_once('@') else {
        return Err(if tag_of(image).is_some() {
            ImageRefError::TagOnly {
                image: image.into(),
            }
        } else {
            ImageRefError::NoDigest {
                image: image.into(),
            }
        });
    };
    if !is_sha256_digest(digest) {
        return Err(ImageRefError::BadDigest {
            image: image.into(),
            digest: digest.into(),
        });
    }
    let name = match tag_of(named) {
        Some(tag) => &named[..named.len() - tag.len() - 1],
        None => named,
    };
    if !is_image_name(name) {
        return Err(ImageRefError::BadName {
            image: image.into(),
            name: name.into(),
        });
    }
    Ok(DigestRef {
        name: name.into(),
        digest: digest.into(),
    })
}

/// The tag of `name:tag`: after the last `:` that comes after the last `/`
/// (a registry's `:port` is not a tag).
fn tag_of(named: &str) -> Option<&str> {
    let last = named.rsplit('/').next().unwrap_or(named);
    last.rsplit_once(':').map(|(_, tag)| tag)
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A registry host (with an optional port) and lowercase path components
/// of `[a-z0-9._-]` that start and end alphanumeric, as the distribution
/// reference grammar allows (simplified: no uppercase hosts).
fn is_image_name(name: &str) -> bool {
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = host.split_once(':').unwrap_or((host, "0"));
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            || port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
    }
    !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// The overlay's kustomization.yaml: `base` (the kustomize base, relative to
/// the overlay's directory) with the image pinned to `image`.
pub fn overlay(image: &DigestRef, base: &str) -> String {
    format!(
        "# Written by `just release-overlay {image}` (dnspolicy release-overlay):\n\
         # the base with its image pinned by digest. Between releases the digest is a\n\
         # placeholder that no image has; see docs/operations.md, \"Installing a release by digest\".\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n\
         - {base}\n\
         images:\n\
         - name: {BASE_IMAGE}\n  \
           newName: {name}\n  \
           digest: {digest}\n",
        name = image.name,
        digest = image.digest,
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("not a kustomization: {0}")]
    Yaml(String),
    #[error(
        "images has no entry with name {BASE_IMAGE}: the base's tag would be installed; write the overlay with `just release-overlay IMAGE@sha256:...`"
    )]
    NoEntry,
    #[error(
        "images[{index}] ({BASE_IMAGE}) sets newTag {tag:?}: a release overlay pins the image by digest; drop newTag and set digest (`just release-overlay IMAGE@sha256:...`)"
    )]
    Tag { index: usize, tag: String },
    #[error(
        "images[{index}] ({BASE_IMAGE}) has no digest; set it with `just release-overlay IMAGE@sha256:...`"
    )]
    NoDigest { index: usize },
    #[error("images[{index}].digest: {source}")]
    Digest { index: usize, source: ImageRefError },
}

/// The image `text` (a kustomization.yaml) pins the base's image to, or why
/// it does not pin it by digest.
pub fn check_overlay(text: &str) -> Result<DigestRef, OverlayError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| OverlayError::Yaml(e.to_string()))?;
    let images = doc
        .get("images")
        .and_then(|i| i.as_sequence())
        .cloned()
        .unwrap_or_default();
    let (index, entry) = images
        .iter()
        .enumerate()
        .find(|(_, e)| e.get("name").and_then(|n| n.as_str()) == Some(BASE_IMAGE))
        .ok_or(OverlayError::NoEntry)?;
    let field = |k: &str| {
        entry.get(k).map(|v| match v {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
    };
    if let Some(tag) = field("newTag") {
        return Err(OverlayError::Tag { index, tag });
    }
    let digest = field("digest").ok_or(OverlayError::NoDigest { index })?;
    let name = field("newName").unwrap_or_else(|| BASE_IMAGE.to_string());
    parse_digest_ref(&format!("{name}@{digest}"))
        .map_err(|source| OverlayError::Digest { index, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn a_digest_reference_parses_and_a_tag_beside_it_is_dropped() {
        for (image, name) in [
            (
                format!("ghcr.io/dnspolicy/dnspolicy@{}", d()),
                "ghcr.io/dnspolicy/dnspolicy",
            ),
            (
                format!("ghcr.io/dnspolicy/dnspolicy:0.1.0@{}", d()),
                "ghcr.io/dnspolicy/dnspolicy",
            ),
            (
                format!("localhost/dnspolicy@{}", d()),
                "localhost/dnspolicy",
            ),
            (
                format!("registry.local:5000/a/b:1@{}", d()),
                "registry.local:5000/a/b",
            ),
        ] {
            let r = parse_digest_ref(&image).unwrap();
            assert_eq!(r.name, name, "{image}");
            assert_eq!(r.digest, d());
        }
    }

    #[test]
    fn tag_only_and_malformed_references_are_refused_naming_the_fix() {
        let e = parse_digest_ref("ghcr.io/dnspolicy/dnspolicy:0.1.0").unwrap_err();
        assert!(matches!(e, ImageRefError::TagOnly { .. }));
        assert!(e.to_string().contains("IMAGE@sha256:"), "{e}");
        // A registry port is not a tag.
        assert!(matches!(
            parse_digest_ref("registry.local:5000/dnspolicy").unwrap_err(),
            ImageRefError::NoDigest { .. }
        ));
        for digest in [
            "sha256:abc",
            "sha512:00",
            "ABCD",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(
                matches!(
                    parse_digest_ref(&format!("ghcr.io/x/y@{digest}")).unwrap_err(),
                    ImageRefError::BadDigest { .. }
                ),
                "{digest}"
            );
        }
        for name in ["GHCR.io/x", "ghcr.io//x", "ghcr.io/-x", "", "ghcr.io/x/"] {
            assert!(
                matches!(
                    parse_digest_ref(&format!("{name}@{}", d())).unwrap_err(),
                    ImageRefError::BadName { .. }
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_overlay_written_passes_its_check_and_a_tag_only_one_fails() {
        let r = parse_digest_ref(&format!("localhost/dnspolicy@{}", d())).unwrap();
        assert_eq!(check_overlay(&overlay(&r, "../")), Ok(r));
        let tagged = "resources: [../]\nimages:\n- name: ghcr.io/dnspolicy/dnspolicy\n  newName: localhost/dnspolicy\n  newTag: dev-1\n";
        assert_eq!(
            check_overlay(tagged),
            Err(OverlayError::Tag {
                index: 0,
                tag: "dev-1".into()
            })
        );
        assert_eq!(
            check_overlay("resources: [../]\n"),
            Err(OverlayError::NoEntry)
        );
        let bad = "images:\n- name: ghcr.io/dnspolicy/dnspolicy\n  digest: sha256:abc\n";
        assert!(matches!(
            check_overlay(bad),
            Err(OverlayError::Digest { index: 0, .. })
        ));
    }
}
