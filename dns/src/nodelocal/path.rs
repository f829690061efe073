//! The node-local cache as a DNS path of the cluster: what to write to its
//! ConfigMap for the merged policies, and whether lookups through it are
//! covered. Pure; the controller reads the ConfigMap into a [`NodeLocalPath`]
//! and carries out the [`NodeLocalPlan`].
//!
//! The same safety as the CoreDNS path (`crate::plan`): dnspolicy's text sits
//! between its markers, the Corefile before the first edit is kept in the
//! `dnspolicy.dev/original-corefile` annotation, the write is a server-side
//! apply by dnspolicy's field manager, and with no policy left the Corefile
//! is stripped back to the original byte for byte. No rollout: both the
//! addon's and Kubespray's Corefiles carry `reload` in every block, and
//! node-cache copies a changed ConfigMap into the Corefile it runs.

use std::collections::BTreeMap;

use dnspolicy_crd::vocabulary::{EventReason, annotation};

use super::{Listen, recognise, render};
use crate::corefile;
use crate::plan::{ConfigMapWrite, MAX_COREFILE_BYTES};
use crate::policy::MergedPolicies;

/// The ConfigMaps NodeLocal DNSCache reads its Corefile from, in the target's
/// namespace: the upstream addon's and Kubespray's.
pub const CONFIG_MAPS: [&str; 2] = ["node-local-dns", "nodelocaldns"];

/// The addon manager's label: `Reconcile` puts the shipped ConfigMap back.
pub const ADDON_MANAGER_MODE: &str = "addonmanager.kubernetes.io/mode";

/// A node-local cache found in the cluster, as the controller read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLocalPath {
    /// `kube-system/node-local-dns`
    pub config_map: String,
    /// Its `Corefile` key.
    pub corefile: Option<String>,
    /// Its `addonmanager.kubernetes.io/mode` label.
    pub addon_mode: Option<String>,
    /// Its annotations: dnspolicy keeps the original Corefile there.
    pub annotations: BTreeMap<String, String>,
}

/// Whether lookups of the policies' names through the cache reach CoreDNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// The Corefile holds a block per suffix, and the caches have had the
    /// reload window to load it.
    Covered,
    /// The blocks were written less than the reload window ago: a cache may
    /// still run the old Corefile. Ready waits; look again in `seconds`.
    Loading { seconds: i64 },
    /// No policy is left: the Corefile is (being) restored.
    Released,
    /// The cache still sends the names upstream; why, and what to do.
    /// Ready must not be True.
    Uncovered(String),
}

/// What to do about one node-local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocalPlan {
    /// Where the cache listens, when its Corefile has the shape dnspolicy knows.
    pub listen: Option<Listen>,
    pub coverage: Coverage,
    /// Exactly this Corefile and these dnspolicy annotations, applied
    /// server-side by dnspolicy's field manager.
    pub write: Option<ConfigMapWrite>,
    /// (reason, note) for an Event on the policies of the target.
    pub event: Option<(EventReason, String)>,
}

impl NodeLocalPlan {
    fn uncovered(listen: Option<Listen>, message: String) -> Self {
        NodeLocalPlan {
            listen,
            event: Some((EventReason::NodeLocalNotCovered, message.clone())),
            coverage: Coverage::Uncovered(message),
            write: None,
        }
    }
}

/// Plans one node-local cache for the merged policies at `now` (unix
/// seconds), taking `reload_window` seconds for every cache to load a write
/// (the operator's `--nodelocal-reload-window`, 120 s: kubelet's ConfigMap
/// volume sync, 1 min, node-cache's copy of it, and the `reload` plugin's
/// 30 s interval with up to 15 s of jitter).
/// Refusals write nothing and say which ConfigMap and what to change.
pub fn plan_path(
    path: &NodeLocalPath,
    merged: &MergedPolicies,
    now: i64,
    reload_window: i64,
) -> NodeLocalPlan {
    let name = &path.config_map;
    let releasing = merged.applied.is_empty();
    let owned: BTreeMap<String, String> = path
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(annotation::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let original = path.annotations.get(annotation::ORIGINAL_COREFILE);
    let Some(current) = path.corefile.as_deref() else {
        if releasing {
            return released(None, None, name);
        }
        return NodeLocalPlan::uncovered(
            None,
            format!(
                "NodeLocal DNSCache ConfigMap {name} has no Corefile key; dnspolicy cannot tell where its queries go"
            ),
        );
    };
    let base = corefile::strip(current);
    let listen = base
        .as_ref()
        .ok()
        .and_then(|b| corefile::parse(b).ok())
        .and_then(|parsed| recognise(&parsed))
        .map(|layout| layout.listen);

    if releasing {
        // Stripped back to the original; the kept copy only when the
        // markers were damaged.
        let restored = base.ok().or_else(|| original.cloned());
        let write = restored
            .filter(|r| r != current || !owned.is_empty())
            .map(|corefile| ConfigMapWrite {
                corefile,
                annotations: BTreeMap::new(),
            });
        return released(listen, write, name);
    }

    let Some(listen) = listen else {
        return NodeLocalPlan::uncovered(
            None,
            format!(
                "NodeLocal DNSCache ConfigMap {name}: its Corefile does not have the shape dnspolicy knows (a cluster-domain block forwarding to the cluster DNS and a `.` block forwarding upstream), so the names it sends upstream are not covered; nothing was written"
            ),
        );
    };
    let desired = match render(current, merged) {
        Ok(desired) => desired,
        Err(e) => {
            return NodeLocalPlan::uncovered(
                Some(listen),
                format!(
                    "NodeLocal DNSCache ConfigMap {name} cannot take the policies' blocks: {e}; nothing was written"
                ),
            );
        }
    };
    let changes = desired != current;
    if changes && path.addon_mode.as_deref() == Some("Reconcile") {
        let message = format!(
            "NodeLocal DNSCache ({listen}) sends the policies' suffixed names straight to the node's upstream, not to CoreDNS, and ConfigMap {name} is labelled {ADDON_MANAGER_MODE}=Reconcile: the addon manager would revert dnspolicy's blocks, so nothing was written. Set the label to EnsureExists (in the addon's manifest too)"
        );
        return NodeLocalPlan::uncovered(Some(listen), message);
    }
    // One copy (the original) is kept, under the same limit as CoreDNS's.
    let largest = desired.len().max(current.len());
    if largest > MAX_COREFILE_BYTES {
        return NodeLocalPlan::uncovered(
            Some(listen),
            format!(
                "NodeLocal DNSCache ConfigMap {name}: its Corefile would be {largest} bytes; dnspolicy edits Corefiles up to {MAX_COREFILE_BYTES} bytes, so nothing was written"
            ),
        );
    }
    let base = corefile::strip(current).expect("render stripped it already");
    let mut annotations = BTreeMap::from([(
        annotation::ORIGINAL_COREFILE.to_string(),
        original.cloned().unwrap_or(base),
    )]);
    // Blocks found in place without a time (applied by hand) count as loaded.
    let written = if changes {
        Some(now)
    } else {
        path.annotations
            .get(annotation::NODE_LOCAL_WRITTEN)
            .and_then(|t| t.parse::<i64>().ok())
    };
    if let Some(at) = written {
        annotations.insert(annotation::NODE_LOCAL_WRITTEN.to_string(), at.to_string());
    }
    let coverage = match written.map(|at| at + reload_window - now) {
        Some(seconds) if seconds > 0 => Coverage::Loading { seconds },
        _ => Coverage::Covered,
    };
    let write = (changes || owned != annotations).then_some(ConfigMapWrite {
        corefile: desired,
        annotations,
    });
    NodeLocalPlan {
        event: changes.then(|| {
            (
                EventReason::CorefileApplied,
                format!(
                    "NodeLocal DNSCache ConfigMap {name} written: a server block per suffix sends the names to CoreDNS; the cache's reload plugin loads it"
                ),
            )
        }),
        listen: Some(listen),
        coverage,
        write,
    }
}

fn released(listen: Option<Listen>, write: Option<ConfigMapWrite>, name: &str) -> NodeLocalPlan {
    let event = write.as_ref().map(|_| {
        (
            EventReason::CorefileApplied,
            format!(
                "NodeLocal DNSCache ConfigMap {name} restored to its Corefile before dnspolicy"
            ),
        )
    });
    NodeLocalPlan {
        listen,
        coverage: Coverage::Released,
        write,
        event,
    }
}
