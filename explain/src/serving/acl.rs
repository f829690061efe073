//! The `acl` plugin (plugin/acl, 1.8.4 and 1.14.2): each `acl [ZONES...]`
//! line is a rule for names in its zones (the block's when none); its
//! policies (`allow|block|filter|drop [type T...] [net CIDR...]`, no `type`
//! or `net` meaning all) are tried in order and the first that matches the
//! query type and the client address decides: allow passes the query on,
//! block answers REFUSED, filter an empty NOERROR, drop nothing (after 1.10.0).
//! A rule where no policy matches leaves the decision to the next rule; no
//! decision passes the query on.

use std::net::IpAddr;

use dnspolicy_dns::corefile::Directive;

use super::plugins::Run;
use super::{Outcome, Reply, in_zone};

/// What one policy line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Block,
    Filter,
    Drop,
}

impl Run<'_, '_> {
    pub(super) fn acl(&mut self, lines: &[&Directive]) -> Option<Reply> {
        let client = self.hop.client;
        let who = client.map_or("CoreDNS's own pod address".to_string(), |ip| ip.to_string());
        for d in lines {
            let zones = self.zones_or_block(&d.args);
            let Some(zone) = zones.iter().find(|z| in_zone(&self.name, z)).cloned() else {
                continue;
            };
            for policy in &d.block {
                let action = match policy.name.to_ascii_lowercase().as_str() {
                    "allow" => Action::Allow,
                    "block" => Action::Block,
                    "filter" => Action::Filter,
                    "drop" => Action::Drop,
                    other => {
                        self.steps.push(format!(
                            "acl {zone}: policy {other:?} on line {} not modelled; passed over",
                            policy.span.line
                        ));
                        continue;
                    }
                };
                let (types, nets) = sections(&policy.args);
                let type_ok = types.is_empty()
                    || types
                        .iter()
                        .any(|t| *t == "*" || t.eq_ignore_ascii_case(&self.qtype.name()));
                if !type_ok {
                    continue;
                }
                let net_ok = nets.is_empty()
                    || nets
                        .iter()
                        .any(|n| *n == "*" || client.is_some_and(|ip| net_contains(n, ip)));
                if !net_ok {
                    continue;
                }
                let line = policy.span.line;
                return match action {
                    Action::Allow => {
                        self.steps.push(format!(
                            "acl {zone}: allows {} from {who} (line {line})",
                            self.name
                        ));
                        None
                    }
                    Action::Block => {
                        self.steps.push(format!(
                            "acl {zone}: blocks {} from {who} (line {line}): REFUSED",
                            self.name
                        ));
                        Some(Outcome::Refused.into())
                    }
                    Action::Filter => {
                        self.steps.push(format!(
                            "acl {zone}: filters {} from {who} (line {line}): empty NOERROR",
                            self.name
                        ));
                        Some(Outcome::NoData.into())
                    }
                    Action::Drop => {
                        self.steps.push(format!(
                            "acl {zone}: drops {} from {who} (line {line}): no reply",
                            self.name
                        ));
                        Some(Outcome::Timeout.into())
                    }
                };
            }
        }
        None
    }
}

/// The `type` and `net` sections of a policy line.
fn sections(args: &[String]) -> (Vec<&str>, Vec<&str>) {
    let (mut types, mut nets) = (Vec::new(), Vec::new());
    let mut into = &mut types;
    for a in args {
        match a.to_ascii_lowercase().as_str() {
            "type" => into = &mut types,
            "net" => into = &mut nets,
            _ => into.push(a.as_str()),
        }
    }
    (types, nets)
}

/// `net` is a CIDR, or one address (CoreDNS adds /32 or /128), holding `ip`.
fn net_contains(net: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match net.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (net, None),
    };
    let Ok(base) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(b) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(b) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_hold_addresses_as_coredns_reads_them() {
        let pod: IpAddr = "10.244.1.7".parse().unwrap();
        assert!(net_contains("10.244.0.0/16", pod));
        assert!(!net_contains("10.96.0.0/12", pod));
        assert!(net_contains("10.244.1.7", pod), "one address is a /32");
        assert!(!net_contains("10.244.1.8", pod));
        assert!(net_contains("0.0.0.0/0", pod));
        assert!(!net_contains("::/0", pod), "families never mix");
        assert!(net_contains("127.0.0.0/8", "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn sections_split_types_from_nets() {
        let args: Vec<String> = ["type", "A", "AAAA", "net", "10.0.0.0/8"]
            .map(String::from)
            .to_vec();
        assert_eq!(sections(&args), (vec!["A", "AAAA"], vec!["10.0.0.0/8"]));
    }
}
