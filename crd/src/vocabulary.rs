//! The words the operator, the command line and the tests share: condition
//! types, condition and Event reasons, annotation keys, the field manager,
//! the finalizer. One definition each, so a test asserts what the code writes.

use std::fmt;

/// `apiVersion` of every ClusterDNSPolicy.
pub const API_VERSION: &str = "dnspolicy.dev/v1alpha1";
pub const KIND: &str = "ClusterDNSPolicy";

/// The one field manager for every write dnspolicy makes.
pub const FIELD_MANAGER: &str = "dnspolicy";
/// Held on a policy until the target's Corefile no longer carries its stanzas.
pub const FINALIZER: &str = "dnspolicy.dev/cleanup";

/// Condition types, kstatus's three first.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const COREFILE_APPLIED: &str = "CorefileApplied";
    pub const ROLLED_OUT: &str = "RolledOut";
    /// Every forward target of the policy answered its last probe; present
    /// only while the policy has forward targets.
    pub const FORWARD_TARGETS_REACHABLE: &str = "ForwardTargetsReachable";
    /// True, with the planner's notes as the message, while the written
    /// Corefile works but an admin should know something (`render` prints the
    /// same lines on stderr); present only while there are notes.
    pub const WARNINGS: &str = "Warnings";
    /// False while a node agent publishes that it cannot read the
    /// resolv.conf kubelet hands pods (its pods are counted with the last
    /// list it published); present only then.
    pub const PODS_COUNTED: &str = "PodsCounted";
    /// The order status lists them in, so equal statuses compare equal.
    pub const ALL: [&str; 8] = [
        READY,
        RECONCILING,
        STALLED,
        COREFILE_APPLIED,
        ROLLED_OUT,
        FORWARD_TARGETS_REACHABLE,
        WARNINGS,
        PODS_COUNTED,
    ];
}

/// Annotation keys dnspolicy writes.
pub mod annotation {
    /// On the target ConfigMap: the Corefile before dnspolicy's first edit.
    pub const ORIGINAL_COREFILE: &str = "dnspolicy.dev/original-corefile";
    /// On the target ConfigMap: the hash of what dnspolicy last wrote.
    pub const APPLIED_HASH: &str = "dnspolicy.dev/applied-hash";
    /// On the target ConfigMap: the last Corefile CoreDNS ran well.
    pub const LAST_GOOD_COREFILE: &str = "dnspolicy.dev/last-good-corefile";
    /// On the target ConfigMap: a hash CoreDNS refused; never written again.
    pub const FAILED_HASH: &str = "dnspolicy.dev/failed-hash";
    /// On the target ConfigMap: when the current rollout started (unix seconds).
    pub const ROLLOUT_STARTED: &str = "dnspolicy.dev/rollout-started";
    /// On the target ConfigMap: times of recent reverts of foreign edits.
    pub const REVERTS: &str = "dnspolicy.dev/reverts";
    /// On a NodeLocal DNSCache ConfigMap: when dnspolicy last changed its
    /// Corefile (unix seconds); the caches load it within the reload window.
    pub const NODE_LOCAL_WRITTEN: &str = "dnspolicy.dev/node-local-written";
    /// On the Deployment's pod template: the Corefile hash, so a change rolls CoreDNS.
    pub const TEMPLATE_HASH: &str = "dnspolicy.dev/corefile-hash";
    /// On a Node: its host search list, published by the node agent.
    pub const HOST_SEARCH: &str = "dnspolicy.dev/host-search";
    /// On a Node: since when the host search list has been what it is.
    pub const HOST_SEARCH_SINCE: &str = "dnspolicy.dev/host-search-since";
    /// On a Node: the host search list before the last change, for pods
    /// created before it (kubelet wrote their resolv.conf then).
    pub const HOST_SEARCH_PREVIOUS: &str = "dnspolicy.dev/host-search-previous";
    /// On a Node: why the node agent could not read the resolv.conf kubelet
    /// hands pods (absent while it can), so counts are never silently 0.
    pub const HOST_SEARCH_ERROR: &str = "dnspolicy.dev/host-search-error";
    /// Every key dnspolicy owns starts with this.
    pub const PREFIX: &str = "dnspolicy.dev/";
}

/// Why a condition is what it is. The CamelCase name is the API value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Working.
    Progressing,
    RolledOut,
    Applied,
    // Refused: the policy.
    InvalidSpec,
    Conflict,
    InvalidName,
    ZoneTaken,
    /// spec.clusterDomain is not a zone of the Corefile's `kubernetes` plugin.
    ClusterDomainNotServed,
    /// Two declared suffixes nest (`ts.net` and `tailb45a71.ts.net`).
    NestedSuffixes,
    /// A forwardTo target is CoreDNS itself or the cluster DNS Service.
    ForwardLoops,
    // Refused: the target.
    /// `autopath` in the `.` block walks the search list inside CoreDNS.
    AutopathInDotBlock,
    /// `acl` or a client-IP `view` in the `.` block would see CoreDNS's own
    /// address on the self-forwarded Rewrite path.
    ClientIPPolicyInDotBlock,
    /// The `.` block fallback would strip names other server blocks serve,
    /// without routing them there.
    StrippedNameNotRouted,
    /// A user `rewrite` in the `.` block of CoreDNS before 1.9.0.
    UserRewriteOnOldCoreDNS,
    TargetNotFound,
    CorefileMissing,
    CorefileUnparseable,
    NoDotServerBlock,
    NoSelfAddress,
    UnknownCoreDNSVersion,
    UnsupportedCoreDNS,
    NeedsNewerCoreDNS,
    CorefileContested,
    /// Another field manager (a GitOps tool, a person) owns the Corefile:
    /// dnspolicy stood down after one attempt.
    ForeignOwner,
    /// The Corefile is too large to keep its copies in annotations.
    CorefileTooLarge,
    /// A NodeLocal DNSCache sends the suffixes upstream itself.
    NodeLocalNotCovered,
    /// A forwardToRef names an object that is missing or publishes no address.
    ForwardRefUnresolved,
    /// A forward target did not answer a query for its suffix.
    ForwardTargetUnreachable,
    /// Every forward target answered its last probe.
    ForwardTargetsAnswer,
    /// The planner has notes for the admin though nothing is refused
    /// (condition `Warnings`).
    PlanWarnings,
    /// A node agent cannot read the resolv.conf kubelet hands pods.
    NodeAgentFailed,
    // Rolled back.
    RolloutFailed,
    /// CoreDNS pods are unavailable on a Corefile that rolled out before (or
    /// that this rollout did not change): Ready is False, nothing rolled back.
    CoreDNSUnavailable,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Progressing => "Progressing",
            Reason::RolledOut => "RolledOut",
            Reason::Applied => "Applied",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Conflict => "Conflict",
            Reason::InvalidName => "InvalidName",
            Reason::ZoneTaken => "ZoneTaken",
            Reason::ClusterDomainNotServed => "ClusterDomainNotServed",
            Reason::NestedSuffixes => "NestedSuffixes",
            Reason::ForwardLoops => "ForwardLoops",
            Reason::AutopathInDotBlock => "AutopathInDotBlock",
            Reason::ClientIPPolicyInDotBlock => "ClientIPPolicyInDotBlock",
            Reason::StrippedNameNotRouted => "StrippedNameNotRouted",
            Reason::UserRewriteOnOldCoreDNS => "UserRewriteOnOldCoreDNS",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::CorefileMissing => "CorefileMissing",
            Reason::CorefileUnparseable => "CorefileUnparseable",
            Reason::NoDotServerBlock => "NoDotServerBlock",
            Reason::NoSelfAddress => "NoSelfAddress",
            Reason::UnknownCoreDNSVersion => "UnknownCoreDNSVersion",
            Reason::UnsupportedCoreDNS => "UnsupportedCoreDNS",
            Reason::NeedsNewerCoreDNS => "NeedsNewerCoreDNS",
            Reason::CorefileContested => "CorefileContested",
            Reason::ForeignOwner => "ForeignOwner",
            Reason::NodeLocalNotCovered => "NodeLocalNotCovered",
            Reason::CorefileTooLarge => "CorefileTooLarge",
            Reason::ForwardRefUnresolved => "ForwardRefUnresolved",
            Reason::ForwardTargetUnreachable => "ForwardTargetUnreachable",
            Reason::ForwardTargetsAnswer => "ForwardTargetsAnswer",
            Reason::PlanWarnings => "PlanWarnings",
            Reason::NodeAgentFailed => "NodeAgentFailed",
            Reason::RolloutFailed => "RolloutFailed",
            Reason::CoreDNSUnavailable => "CoreDNSUnavailable",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why an Event was published on a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    CorefileApplied,
    RolloutStarted,
    RolloutFinished,
    Rollback,
    DriftCorrected,
    Conflict,
    InvalidSpec,
    /// A NodeLocal DNSCache still sends the suffixes upstream.
    NodeLocalNotCovered,
    /// A forward target stopped answering (or never answered).
    ForwardTargetUnreachable,
    /// A forward target that did not answer answers again.
    ForwardTargetAnswers,
    /// A forwardToRef cannot be resolved to an address.
    ForwardRefUnresolved,
    /// The planner's notes for the admin changed (and are not empty).
    PlanWarning,
    /// The planner refused the target's Corefile or the policies (Stalled):
    /// the note starts with the condition reason.
    Refused,
}

impl EventReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::CorefileApplied => "CorefileApplied",
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::RolloutFinished => "RolloutFinished",
            EventReason::Rollback => "Rollback",
            EventReason::DriftCorrected => "DriftCorrected",
            EventReason::Conflict => "Conflict",
            EventReason::InvalidSpec => "InvalidSpec",
            EventReason::NodeLocalNotCovered => "NodeLocalNotCovered",
            EventReason::ForwardTargetUnreachable => "ForwardTargetUnreachable",
            EventReason::ForwardTargetAnswers => "ForwardTargetAnswers",
            EventReason::ForwardRefUnresolved => "ForwardRefUnresolved",
            EventReason::PlanWarning => "PlanWarning",
            EventReason::Refused => "Refused",
        }
    }

    /// Warnings are what a person should look at.
    pub const fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::Rollback
                | EventReason::DriftCorrected
                | EventReason::Conflict
                | EventReason::InvalidSpec
                | EventReason::NodeLocalNotCovered
                | EventReason::ForwardTargetUnreachable
                | EventReason::ForwardRefUnresolved
                | EventReason::PlanWarning
                | EventReason::Refused
        )
    }
}

impl fmt::Display for EventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
