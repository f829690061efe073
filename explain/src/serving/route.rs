//! Server-block routing: which block of a Corefile takes a query (longest
//! zone on the listener's port, filtered by `view`).

use dnspolicy_dns::corefile::{Corefile, ServerBlock};

use super::{QType, expr};

/// The block (and the key as written) that takes the query: longest zone
/// first, each zone's blocks in file order, a block with a `view` only when
/// its expression admits the query; `.` last. A key without a port listens
/// on `default_port` (CoreDNS's `-dns.port`, 53 by default).
pub(super) fn route<'c>(
    corefile: &'c Corefile,
    port: u16,
    default_port: u16,
    name: &str,
    qtype: QType,
) -> Option<(&'c ServerBlock, String)> {
    let mut candidates: Vec<&str> = Vec::new();
    let mut rest = name;
    while rest != "." && !rest.is_empty() {
        candidates.push(rest);
        rest = rest
            .split_once('.')
            .map_or(".", |(_, r)| if r.is_empty() { "." } else { r });
    }
    candidates.push(".");
    for zone in candidates {
        for b in &corefile.blocks {
            let key = b.keys.iter().find(|k| {
                k.zone == zone
                    && k.port.unwrap_or(default_port) == port
                    && k.scheme.as_deref().is_none_or(|s| s == "dns")
            });
            if let Some(key) = key
                && view_admits(b, name, qtype)
            {
                return Some((b, key.raw.clone()));
            }
        }
    }
    None
}

/// Whether a block's `view` (if any) admits the query. An expression the
/// model cannot read admits nothing, so the model never sends a query to a
/// block CoreDNS might not.
fn view_admits(block: &ServerBlock, name: &str, qtype: QType) -> bool {
    block
        .directives
        .iter()
        .filter(|d| d.name == "view")
        .flat_map(|d| d.block.iter().filter(|e| e.name == "expr"))
        .all(|e| expr::eval(&e.args.join(" "), name, qtype).unwrap_or(false))
}
