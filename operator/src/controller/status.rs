//! The status a policy should show, as a pure function of what the reconcile
//! found. Conditions keep their transition time while their status does not
//! change, so an unchanged world computes an equal status and writes nothing.

use std::collections::BTreeMap;

use dnspolicy_crd::vocabulary::{Reason, condition};
use dnspolicy_crd::{ClusterDNSPolicyStatus, DnsPath, DnsPathKind, NamespacePollution, PodCounts};
use dnspolicy_dns::nodelocal::{Coverage, NodeLocalPlan};
use dnspolicy_dns::plan::{Phase, TargetPlan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::pollution::PolicyCounts;

/// What the reconcile found for one policy.
#[derive(Debug, Clone, Copy)]
pub enum Finding<'a> {
    /// The policy's own spec is unusable; nothing was planned for it.
    Invalid { message: &'a str },
    /// The target was planned (and the plan carried out); `conflict` when this
    /// policy's rules lost the merge to an earlier one.
    Planned {
        plan: &'a TargetPlan,
        conflict: Option<&'a str>,
        /// The target's CoreDNS ConfigMap, `namespace/name`.
        config_map: &'a str,
        /// Each NodeLocal DNSCache found, by its ConfigMap `namespace/name`:
        /// while one still sends the suffixes upstream, CoreDNS may be done
        /// but Ready is not True.
        node_local: &'a [(String, NodeLocalPlan)],
        /// Whether real hosts reach the policy's forward targets; `None`
        /// when it has none.
        forward: Option<ForwardHealth<'a>>,
    },
}

/// The `ForwardTargetsReachable` condition: every forwardToRef resolved and
/// every forward target answered its last probe, or the first that did not.
/// Not answering keeps Ready False (DESIGN: Ready means lookups work, and
/// real hosts in the suffix do not resolve).
#[derive(Debug, Clone, Copy)]
pub struct ForwardHealth<'a> {
    pub answering: bool,
    pub reason: Reason,
    pub message: &'a str,
}

/// The policy's next status. `now` stamps conditions that change.
pub fn policy_status(
    old: Option<&ClusterDNSPolicyStatus>,
    generation: Option<i64>,
    finding: Finding<'_>,
    counts: &PolicyCounts,
    now: Time,
) -> ClusterDNSPolicyStatus {
    let old = old.cloned().unwrap_or_default();
    let mut conds = Conditions {
        old: &old.conditions,
        new: BTreeMap::new(),
        generation,
        now,
    };
    let (plan, dns_paths) = match finding {
        Finding::Invalid { message } => {
            conds.refused(Reason::InvalidSpec, message);
            (None, Vec::new())
        }
        Finding::Planned {
            plan,
            conflict,
            config_map,
            node_local,
            forward,
        } => {
            match conflict {
                Some(message) => conds.refused(Reason::Conflict, message),
                None => conds.phase(&plan.phase),
            }
            let uncovered = node_local.iter().find_map(|(_, p)| match &p.coverage {
                Coverage::Uncovered(message) => Some(message.as_str()),
                _ => None,
            });
            if let (None, Some(message), Phase::RolledOut | Phase::Progressing) =
                (conflict, uncovered, &plan.phase)
            {
                conds.stalled(Reason::NodeLocalNotCovered, message);
            }
            let loading = node_local.iter().find_map(|(name, p)| match p.coverage {
                Coverage::Loading { .. } => Some(name),
                _ => None,
            });
            if let (None, None, Some(name), Phase::RolledOut) =
                (conflict, uncovered, loading, &plan.phase)
            {
                let message = format!(
                    "CoreDNS runs the new Corefile; NodeLocal DNSCache {name} is written and its caches are loading it (reload window)"
                );
                conds.working(false, Reason::Progressing, &message);
            }
            if let (None, Some(message)) = (conflict, warnings_message(plan)) {
                conds.set(condition::WARNINGS, true, Reason::PlanWarnings, &message);
            }
            if let Some(f) = forward {
                conds.set(
                    condition::FORWARD_TARGETS_REACHABLE,
                    f.answering,
                    f.reason,
                    f.message,
                );
                if let (None, false, Phase::RolledOut | Phase::Progressing) =
                    (conflict, f.answering, &plan.phase)
                {
                    conds.stalled(f.reason, f.message);
                }
            }
            (Some(plan), dns_paths(plan, config_map, node_local))
        }
    };
    if let Some(message) = unread_nodes_message(counts) {
        conds.set(
            condition::PODS_COUNTED,
            false,
            Reason::NodeAgentFailed,
            &message,
        );
    }
    ClusterDNSPolicyStatus {
        observed_generation: generation,
        conditions: conds.into_vec(),
        corefile_hash: plan
            .and_then(|p| p.desired_hash.clone())
            .or(old.corefile_hash.clone()),
        pods: Some(PodCounts {
            total: counts.total,
            polluted: counts.polluted,
        }),
        namespaces: counts
            .namespaces
            .iter()
            .map(|(name, pods, polluted)| NamespacePollution {
                name: name.clone(),
                pods: *pods,
                polluted: *polluted,
            })
            .collect(),
        dns_paths,
    }
}

/// The `PodsCounted` condition's message while node agents cannot read the
/// file kubelet hands pods: the counts are not silently 0 for those nodes.
fn unread_nodes_message(counts: &PolicyCounts) -> Option<String> {
    if counts.unread_nodes_total == 0 {
        return None;
    }
    let named: Vec<String> = counts
        .unread_nodes
        .iter()
        .map(|(node, error)| format!("{node}: {error}"))
        .collect();
    let more = counts.unread_nodes_total - counts.unread_nodes.len() as u64;
    Some(format!(
        "the node agent on {} node(s) cannot read the resolv.conf kubelet hands pods, so their pods are counted with the last search list it published: {}{}; check the agent's logs on those nodes (kubectl -n dnspolicy-system logs ds/dnspolicy-node-agent)",
        counts.unread_nodes_total,
        named.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        },
    ))
}

/// The `Warnings` condition's message: the planner's notes for a Corefile
/// that is written (or being written), one sentence each; `None` without notes.
pub fn warnings_message(plan: &TargetPlan) -> Option<String> {
    let written = matches!(
        plan.phase,
        Phase::RolledOut | Phase::Progressing | Phase::Unavailable(_)
    );
    (written && !plan.warnings.is_empty()).then(|| plan.warnings.join(" | "))
}

/// CoreDNS and each node-local cache, and whether the policies hold on it.
fn dns_paths(
    plan: &TargetPlan,
    config_map: &str,
    node_local: &[(String, NodeLocalPlan)],
) -> Vec<DnsPath> {
    let coredns_message = match &plan.phase {
        Phase::RolledOut => None,
        Phase::Progressing => Some("CoreDNS is rolling onto the new Corefile".to_string()),
        Phase::Stalled(r) | Phase::RolledBack(r) | Phase::Unavailable(r) => Some(r.message.clone()),
    };
    let coredns = DnsPath {
        kind: DnsPathKind::CoreDNS,
        config_map: config_map.to_string(),
        mode: None,
        addresses: Vec::new(),
        covered: coredns_message.is_none(),
        message: coredns_message,
    };
    let caches = node_local.iter().map(|(name, p)| DnsPath {
        kind: DnsPathKind::NodeLocalDNSCache,
        config_map: name.clone(),
        mode: p.listen.as_ref().map(|l| l.mode().to_string()),
        addresses: p.listen.as_ref().map(|l| l.addresses()).unwrap_or_default(),
        covered: matches!(p.coverage, Coverage::Covered | Coverage::Released),
        message: match &p.coverage {
            Coverage::Uncovered(message) => Some(message.clone()),
            Coverage::Loading { seconds } => Some(format!(
                "written; every node's cache loads it within the reload window ({seconds} s left)"
            )),
            Coverage::Covered | Coverage::Released => None,
        },
    });
    std::iter::once(coredns).chain(caches).collect()
}

struct Conditions<'a> {
    old: &'a [Condition],
    new: BTreeMap<&'static str, Condition>,
    generation: Option<i64>,
    now: Time,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &'static str, status: bool, reason: Reason, message: &str) {
        let status = if status { "True" } else { "False" }.to_string();
        let last_transition_time = self
            .old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        self.new.insert(
            type_,
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: self.generation,
                last_transition_time,
            },
        );
    }

    /// kstatus's Stalled: not Ready, not progressing, a person must act.
    fn stalled(&mut self, reason: Reason, message: &str) {
        self.set(condition::READY, false, reason, message);
        self.set(condition::RECONCILING, false, reason, message);
        self.set(condition::STALLED, true, reason, message);
    }

    /// Stalled, and nothing of this policy is in the Corefile.
    fn refused(&mut self, reason: Reason, message: &str) {
        self.stalled(reason, message);
        self.set(condition::COREFILE_APPLIED, false, reason, message);
    }

    fn phase(&mut self, phase: &Phase) {
        match phase {
            Phase::Stalled(r) | Phase::RolledBack(r) => {
                self.refused(r.reason, &r.message);
                self.set(condition::ROLLED_OUT, false, r.reason, &r.message);
            }
            // The Corefile is CoreDNS's; its pods are not all up.
            Phase::Unavailable(r) => self.working(false, r.reason, &r.message),
            Phase::Progressing => self.working(
                false,
                Reason::Progressing,
                "the Corefile is written; CoreDNS is rolling out",
            ),
            Phase::RolledOut => self.working(
                true,
                Reason::RolledOut,
                "CoreDNS runs the Corefile with this policy's stanzas",
            ),
        }
    }

    /// The Corefile holds the stanzas; `rolled_out` once CoreDNS runs it.
    fn working(&mut self, rolled_out: bool, reason: Reason, message: &str) {
        const APPLIED: &str = "the Corefile holds this policy's stanzas";
        self.set(condition::READY, rolled_out, reason, message);
        self.set(condition::RECONCILING, !rolled_out, reason, message);
        self.set(condition::STALLED, false, reason, message);
        self.set(condition::COREFILE_APPLIED, true, Reason::Applied, APPLIED);
        self.set(condition::ROLLED_OUT, rolled_out, reason, message);
    }

    fn into_vec(self) -> Vec<Condition> {
        condition::ALL
            .iter()
            .filter_map(|t| {
                // Forward reachability, warnings and unread nodes are only
                // ever this reconcile's findings.
                let carried = *t != condition::FORWARD_TARGETS_REACHABLE
                    && *t != condition::WARNINGS
                    && *t != condition::PODS_COUNTED;
                self.new
                    .get(t)
                    .cloned()
                    .or_else(|| self.old.iter().find(|c| carried && c.type_ == *t).cloned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnspolicy_dns::plan::Refusal;

    const COREDNS: &str = "kube-system/coredns";

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn plan(phase: Phase) -> TargetPlan {
        TargetPlan {
            phase,
            desired_hash: Some("sha256:abc".into()),
            write_config_map: None,
            write_custom: None,
            roll_to: None,
            events: vec![],
            warnings: vec![],
        }
    }

    /// `p` planned for the CoreDNS ConfigMap alone: no conflict, no
    /// NodeLocal DNSCache, no forward targets.
    fn planned(p: &TargetPlan) -> Finding<'_> {
        Finding::Planned {
            plan: p,
            conflict: None,
            config_map: COREDNS,
            node_local: &[],
            forward: None,
        }
    }

    /// A new policy's first status after `p` was planned.
    fn first_status(
        p: &TargetPlan,
        node_local: &[(String, NodeLocalPlan)],
        counts: &PolicyCounts,
    ) -> ClusterDNSPolicyStatus {
        let finding = Finding::Planned {
            plan: p,
            conflict: None,
            config_map: COREDNS,
            node_local,
            forward: None,
        };
        policy_status(None, Some(1), finding, counts, at(1))
    }

    fn get<'a>(s: &'a ClusterDNSPolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn rolled_out_is_ready_and_an_unchanged_world_gives_an_equal_status() {
        let p = plan(Phase::RolledOut);
        let finding = Finding::Planned {
            plan: &p,
            conflict: None,
            config_map: COREDNS,
            node_local: &[],
            forward: None,
        };
        let first = policy_status(None, Some(2), finding, &PolicyCounts::default(), at(100));
        assert_eq!(get(&first, "Ready").status, "True");
        assert_eq!(get(&first, "Stalled").status, "False");
        assert_eq!(first.corefile_hash.as_deref(), Some("sha256:abc"));
        let again = policy_status(
            Some(&first),
            Some(2),
            finding,
            &PolicyCounts::default(),
            at(200),
        );
        assert_eq!(again, first, "no change, no new transition time");
    }

    #[test]
    fn an_invalid_spec_is_stalled_and_keeps_the_last_hash() {
        let old = ClusterDNSPolicyStatus {
            corefile_hash: Some("sha256:old".into()),
            ..Default::default()
        };
        let s = policy_status(
            Some(&old),
            Some(3),
            Finding::Invalid {
                message: "spec.foreignSuffixes[0].suffix: bad",
            },
            &PolicyCounts::default(),
            at(1),
        );
        assert_eq!(get(&s, "Stalled").status, "True");
        assert_eq!(get(&s, "Ready").reason, "InvalidSpec");
        assert_eq!(get(&s, "CorefileApplied").status, "False");
        assert_eq!(s.corefile_hash.as_deref(), Some("sha256:old"));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn a_rollback_is_stalled_with_its_reason_and_counts_are_carried() {
        let p = plan(Phase::RolledBack(Refusal {
            reason: Reason::RolloutFailed,
            message: "new pods crashed".into(),
        }));
        let counts = PolicyCounts {
            total: 5,
            polluted: 2,
            namespaces: vec![("workflow-engine".into(), 3, 2)],
            ..Default::default()
        };
        let s = first_status(&p, &[], &counts);
        assert_eq!(get(&s, "RolledOut").reason, "RolloutFailed");
        assert_eq!(get(&s, "Stalled").status, "True");
        assert_eq!(s.pods.unwrap().polluted, 2);
        assert_eq!(s.namespaces[0].name, "workflow-engine");
    }

    fn cache(coverage: Coverage) -> (String, NodeLocalPlan) {
        let listen =
            dnspolicy_dns::nodelocal::Listen::LinkLocal(vec!["169.254.20.10".parse().unwrap()]);
        let plan = NodeLocalPlan {
            listen: Some(listen),
            coverage,
            write: None,
            event: None,
        };
        ("kube-system/node-local-dns".to_string(), plan)
    }

    #[test]
    fn an_uncovered_node_local_path_keeps_ready_false_though_coredns_rolled_out() {
        let p = plan(Phase::RolledOut);
        let why = "NodeLocal DNSCache ... kube-system/node-local-dns";
        let s = first_status(
            &p,
            &[cache(Coverage::Uncovered(why.into()))],
            &PolicyCounts::default(),
        );
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Ready").reason, "NodeLocalNotCovered");
        assert!(get(&s, "Ready").message.contains("node-local-dns"));
        assert_eq!(get(&s, "Stalled").status, "True");
        assert_eq!(get(&s, "CorefileApplied").status, "True");
        assert_eq!(get(&s, "RolledOut").status, "True");
        let paths: Vec<_> = s.dns_paths.iter().map(|d| (d.kind, d.covered)).collect();
        assert_eq!(
            paths,
            [
                (DnsPathKind::CoreDNS, true),
                (DnsPathKind::NodeLocalDNSCache, false)
            ]
        );
        assert_eq!(s.dns_paths[1].message.as_deref(), Some(why));
    }

    #[test]
    fn a_cache_loading_the_edit_keeps_ready_false_and_reconciling() {
        let p = plan(Phase::RolledOut);
        let s = first_status(
            &p,
            &[cache(Coverage::Loading { seconds: 90 })],
            &PolicyCounts::default(),
        );
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Reconciling").status, "True");
        assert_eq!(get(&s, "Stalled").status, "False");
        assert!(get(&s, "Ready").message.contains("node-local-dns"));
        assert!(!s.dns_paths[1].covered);
        assert!(s.dns_paths[1].message.as_deref().unwrap().contains("90 s"));
    }

    #[test]
    fn a_covered_cache_is_listed_with_its_mode_and_ready() {
        let p = plan(Phase::RolledOut);
        let s = first_status(&p, &[cache(Coverage::Covered)], &PolicyCounts::default());
        assert_eq!(get(&s, "Ready").status, "True");
        let cache = &s.dns_paths[1];
        assert_eq!(cache.config_map, "kube-system/node-local-dns");
        assert_eq!(cache.mode.as_deref(), Some("LinkLocal"));
        assert_eq!(cache.addresses, ["169.254.20.10"]);
        assert!(cache.covered && cache.message.is_none());
        assert_eq!(s.dns_paths[0].config_map, COREDNS);
    }

    #[test]
    fn a_silent_forward_target_is_named_and_keeps_ready_false() {
        let p = plan(Phase::RolledOut);
        let message = "forward target 10.96.0.77:53 for tailb45a71.ts.net did not answer";
        let finding = |answering| Finding::Planned {
            plan: &p,
            conflict: None,
            config_map: COREDNS,
            node_local: &[],
            forward: Some(ForwardHealth {
                answering,
                reason: if answering {
                    Reason::ForwardTargetsAnswer
                } else {
                    Reason::ForwardTargetUnreachable
                },
                message,
            }),
        };
        let silent = policy_status(
            None,
            Some(1),
            finding(false),
            &PolicyCounts::default(),
            at(1),
        );
        assert_eq!(get(&silent, "Ready").status, "False");
        assert_eq!(get(&silent, "Ready").reason, "ForwardTargetUnreachable");
        assert_eq!(get(&silent, "ForwardTargetsReachable").status, "False");
        assert!(
            get(&silent, "ForwardTargetsReachable")
                .message
                .contains("10.96.0.77:53")
        );
        assert_eq!(get(&silent, "RolledOut").status, "True");
        let back = policy_status(
            Some(&silent),
            Some(1),
            finding(true),
            &PolicyCounts::default(),
            at(2),
        );
        assert_eq!(get(&back, "Ready").status, "True");
        assert_eq!(get(&back, "ForwardTargetsReachable").status, "True");
        let gone = policy_status(
            Some(&back),
            Some(2),
            planned(&p),
            &PolicyCounts::default(),
            at(3),
        );
        assert!(
            gone.conditions
                .iter()
                .all(|c| c.type_ != "ForwardTargetsReachable"),
            "no forward targets, no condition"
        );
    }

    #[test]
    fn planner_warnings_show_in_their_own_condition_while_ready_and_go_with_them() {
        let note = "CoreDNS 1.8.4 without `cache` in the `.` block answers a rewritten query whose upstream fails ...";
        let mut p = plan(Phase::RolledOut);
        p.warnings = vec![note.to_string()];
        let warned = first_status(&p, &[], &PolicyCounts::default());
        assert_eq!(
            get(&warned, "Ready").status,
            "True",
            "a note is not a refusal"
        );
        let w = get(&warned, "Warnings");
        assert_eq!(
            (w.status.as_str(), w.reason.as_str()),
            ("True", "PlanWarnings")
        );
        assert_eq!(w.message, note);
        assert_eq!(warnings_message(&p).as_deref(), Some(note));

        p.warnings.clear();
        let quiet = policy_status(
            Some(&warned),
            Some(1),
            Finding::Planned {
                plan: &p,
                conflict: None,
                config_map: COREDNS,
                node_local: &[],
                forward: None,
            },
            &PolicyCounts::default(),
            at(2),
        );
        assert!(
            quiet.conditions.iter().all(|c| c.type_ != "Warnings"),
            "no notes, no condition: {:?}",
            quiet.conditions
        );
    }

    #[test]
    fn a_refused_plan_shows_its_reason_not_warnings() {
        let mut p = plan(Phase::Stalled(Refusal {
            reason: Reason::ZoneTaken,
            message: "suffix taken".into(),
        }));
        p.warnings = vec!["a note".into()];
        let s = first_status(&p, &[], &PolicyCounts::default());
        assert!(s.conditions.iter().all(|c| c.type_ != "Warnings"));
        assert_eq!(warnings_message(&p), None);
    }

    #[test]
    fn nodes_whose_agent_cannot_read_are_named_not_counted_as_clean() {
        let p = plan(Phase::RolledOut);
        let clean = first_status(&p, &[], &PolicyCounts::default());
        assert!(clean.conditions.iter().all(|c| c.type_ != "PodsCounted"));
        let counts = PolicyCounts {
            unread_nodes: vec![(
                "node-a".into(),
                "/etc/resolv.conf: cannot read: permission denied".into(),
            )],
            unread_nodes_total: 7,
            ..Default::default()
        };
        let s = first_status(&p, &[], &counts);
        let c = get(&s, "PodsCounted");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NodeAgentFailed")
        );
        assert!(
            c.message.contains("7 node(s)")
                && c.message.contains("node-a: /etc/resolv.conf: cannot read")
                && c.message.contains("and 6 more"),
            "{}",
            c.message
        );
        // Ready is about lookups: unaffected.
        assert_eq!(get(&s, "Ready").status, "True");
        // Gone with the error: not carried from the old status.
        let healed = policy_status(
            Some(&s),
            Some(1),
            planned(&p),
            &PolicyCounts::default(),
            at(2),
        );
        assert!(healed.conditions.iter().all(|c| c.type_ != "PodsCounted"));
    }
}
