//! The Corefile CoreDNS actually runs when the managed stanzas live in the
//! `coredns-custom` ConfigMap (k3s, AKS) rather than in the Corefile itself.

use std::collections::BTreeMap;

use dnspolicy_dns::corefile::{self, Corefile, CorefileError, Directive};

/// A `coredns-custom` key whose text CoreDNS could not read either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomKeyError {
    /// A `*.server` key: whole server blocks.
    #[error("coredns-custom key {key}: {source}")]
    ServerBlocks {
        key: String,
        #[source]
        source: CorefileError,
    },
    /// A `*.override` key: directives inside an importing block. The line
    /// numbers count one wrapper line before the key's text.
    #[error("coredns-custom key {key}: override text: {source}")]
    Override {
        key: String,
        #[source]
        source: CorefileError,
    },
}

/// The Corefile with its `coredns-custom` keys spliced in: each `import` of a
/// custom glob replaced by the keys it matches, `*.override` keys inside their
/// block, `*.server` keys as server blocks.
pub fn with_custom_keys(
    corefile: &Corefile,
    keys: &BTreeMap<String, String>,
) -> Result<Corefile, CustomKeyError> {
    if keys.is_empty() {
        return Ok(corefile.clone());
    }
    let matching = |glob: &str| -> Vec<(&String, &String)> {
        keys.iter().filter(|(k, _)| glob_matches(glob, k)).collect()
    };
    let mut out = corefile.clone();
    for block in &mut out.blocks {
        let mut directives = Vec::new();
        for directive in block.directives.drain(..) {
            let matched = match (directive.name.as_str(), directive.args.as_slice()) {
                ("import", [glob]) => matching(glob),
                _ => vec![],
            };
            if matched.is_empty() {
                directives.push(directive);
            }
            for (key, text) in matched {
                directives.extend(parse_directives(key, text)?);
            }
        }
        block.directives = directives;
    }
    let mut imports = Vec::new();
    for import in out.top_level_imports.drain(..) {
        let matched = match import.args.as_slice() {
            [glob] => matching(glob),
            _ => vec![],
        };
        if matched.is_empty() {
            imports.push(import);
        }
        for (key, text) in matched {
            let parsed = corefile::parse(text).map_err(|source| CustomKeyError::ServerBlocks {
                key: key.clone(),
                source,
            })?;
            out.blocks.extend(parsed.blocks);
        }
    }
    out.top_level_imports = imports;
    Ok(out)
}

/// `custom/*.override` against the key `dnspolicy.override`: the file part, one `*`.
fn glob_matches(glob: &str, key: &str) -> bool {
    let file = glob.rsplit('/').next().unwrap_or(glob);
    match file.split_once('*') {
        Some((prefix, suffix)) => {
            key.len() >= prefix.len() + suffix.len()
                && key.starts_with(prefix)
                && key.ends_with(suffix)
        }
        None => file == key,
    }
}

/// An override key's text as the directives of a block.
fn parse_directives(key: &str, text: &str) -> Result<Vec<Directive>, CustomKeyError> {
    let wrapped = format!(".:1 {{\n{text}\n}}\n");
    let parsed = corefile::parse(&wrapped).map_err(|source| CustomKeyError::Override {
        key: key.to_string(),
        source,
    })?;
    Ok(parsed
        .blocks
        .into_iter()
        .next()
        .map(|b| b.directives)
        .unwrap_or_default())
}
