//! Reconcile planning: what to write to one CoreDNS target, given what the
//! cluster holds now. Pure: the controller reads the objects into the views
//! below, calls `plan_target`, and carries out the returned `TargetPlan`.
//!
//! All state the plan needs between runs lives in annotations on the target
//! ConfigMap (the original Corefile, what was last applied, the last Corefile
//! that rolled out well, a failed hash, recent reverts) and on the Deployment's
//! pod template (the hash it runs), so a restarted operator converges the same way.

use std::collections::BTreeMap;

use dnspolicy_crd::RolloutMode;
use dnspolicy_crd::vocabulary::{EventReason, Reason, annotation};

use crate::corefile::{self, Channel};
use crate::policy::MergedPolicies;
use crate::served::{self, ServedZones};
use crate::stanza::{self, RenderContext};
use crate::version::{CoreDnsVersion, VersionError};

/// The key of the main Corefile in the target ConfigMap.
pub const COREFILE_KEY: &str = "Corefile";
/// The ConfigMap k3s and AKS import customisations from.
pub const CUSTOM_CONFIGMAP: &str = "coredns-custom";

/// How long the operator lets another writer revert its Corefile before it
/// stops and reports `Stalled`.
pub const CONTEST_WINDOW_SECS: i64 = 300;
pub const CONTEST_MAX_REVERTS: usize = 3;

/// The largest Corefile dnspolicy edits: two copies of it (the original and
/// the last good one) must fit the 256 KiB annotation limit beside the rest.
pub const MAX_COREFILE_BYTES: usize = 100 * 1024;

/// Seconds added to the rollout deadline for each CoreDNS replica.
pub const ROLLOUT_SECS_PER_REPLICA: i64 = 10;

/// The target ConfigMap as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigMapView {
    pub corefile: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Field managers other than dnspolicy that own `data.Corefile`.
    pub other_corefile_managers: Vec<String>,
}

/// `coredns-custom`, when the Corefile imports it: only the keys dnspolicy owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomView {
    pub exists: bool,
    pub managed_keys: BTreeMap<String, String>,
}

/// The CoreDNS Deployment as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentView {
    pub image: Option<String>,
    pub template_hash: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
    /// All pods, old and new (`status.replicas`).
    pub total_replicas: i32,
}

impl DeploymentView {
    /// Rolled out as `kubectl rollout status` judges it.
    pub fn rolled_out(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated_replicas >= self.replicas
            && self.total_replicas <= self.updated_replicas
            && self.available_replicas >= self.replicas
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput<'a> {
    pub merged: &'a MergedPolicies,
    pub rollout: RolloutMode,
    pub config_map: &'a ConfigMapView,
    pub custom: &'a CustomView,
    pub deployment: &'a DeploymentView,
    /// Seconds since the epoch.
    pub now: i64,
    pub rollout_deadline_secs: i64,
    /// `--coredns-version` override when the image tag says nothing.
    pub version_override: Option<CoreDnsVersion>,
    /// Where the cluster DNS is reached, read by the controller.
    pub cluster_dns: ClusterDns,
    /// A policy of this target has had its stanzas in the Corefile before
    /// (its status says so): a ConfigMap without dnspolicy's annotations was
    /// then replaced whole by someone else.
    pub previously_applied: bool,
    /// The message of a `ForeignOwner` a policy of this target shows for its
    /// current generation: dnspolicy stays stood down.
    pub stood_down: Option<String>,
}

/// What the controller knows about how pods reach this CoreDNS, beyond the
/// Corefile: checked so that no `forwardTo` leads back into it, and so the
/// stanzas listen where CoreDNS does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster IPs of the Service in front of CoreDNS (kube-dns).
    pub service_ips: Vec<std::net::IpAddr>,
    /// CoreDNS's `-dns.port` from the Deployment's container args, when set:
    /// the port of server keys without one.
    pub dns_port: Option<u16>,
}

/// Why nothing (more) can be done until a person acts. Reasons are
/// CamelCase condition reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

/// Turns an error that stops `desired` into a refusal for `reason`, its
/// message `context` and the error, then that nothing was written.
fn nothing_written<E: std::fmt::Display>(
    reason: Reason,
    context: &'static str,
) -> impl FnOnce(E) -> Refusal {
    move |e| Refusal {
        reason,
        message: format!("{context}{e}; nothing was written"),
    }
}

/// Where a target stands after the plan is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// CoreDNS runs the desired Corefile.
    RolledOut,
    /// The Corefile is written; CoreDNS is rolling (or reloading) onto it.
    Progressing,
    /// The new Corefile did not roll out in time: the last good one is back.
    RolledBack(Refusal),
    /// Nothing written; a person must act.
    Stalled(Refusal),
    /// CoreDNS is not all available, but not because of a Corefile this
    /// rollout introduced: nothing is rolled back, Ready is False.
    Unavailable(Refusal),
}

/// A write to the target ConfigMap, applied server-side by dnspolicy's field
/// manager: exactly these annotations and this Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapWrite {
    pub corefile: String,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    pub phase: Phase,
    /// `sha256:` of what CoreDNS should run (Corefile plus custom keys).
    pub desired_hash: Option<String>,
    pub write_config_map: Option<ConfigMapWrite>,
    /// Keys of `coredns-custom` to own (empty: release them all).
    pub write_custom: Option<BTreeMap<String, String>>,
    /// Set the Deployment's pod-template hash to this.
    pub roll_to: Option<String>,
    /// (reason, note) for Events on every policy of the target.
    pub events: Vec<(EventReason, String)>,
    /// What an admin should know though nothing is refused (`Desired::warnings`).
    pub warnings: Vec<String>,
}

impl TargetPlan {
    pub fn stalled(reason: Reason, message: String) -> Self {
        TargetPlan {
            phase: Phase::Stalled(Refusal { reason, message }),
            desired_hash: None,
            write_config_map: None,
            write_custom: None,
            roll_to: None,
            events: vec![],
            warnings: vec![],
        }
    }

    pub fn writes(&self) -> bool {
        self.write_config_map.is_some() || self.write_custom.is_some() || self.roll_to.is_some()
    }
}

/// What CoreDNS should run: the Corefile and, for k3s/AKS, the custom keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The Corefile with managed text outside policies' reach removed: the base.
    pub base: String,
    pub corefile: String,
    pub custom_keys: BTreeMap<String, String>,
    pub hash: String,
    /// What an admin should know though nothing is refused, one line each.
    pub warnings: Vec<String>,
}

/// Why the CoreDNS version is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownVersion {
    #[error("the CoreDNS version cannot be read from image {image:?}: {error}")]
    Image { image: String, error: VersionError },
    #[error("the CoreDNS Deployment names no image")]
    NoImage,
}

/// The hash that stands for a Corefile plus the custom keys CoreDNS imports.
pub fn effective_hash(corefile: &str, custom_keys: &BTreeMap<String, String>) -> String {
    if custom_keys.is_empty() {
        return corefile::corefile_hash(corefile);
    }
    let mut text = corefile.to_string();
    for (k, v) in custom_keys {
        text.push_str(&format!("\n--- {k}\n{v}"));
    }
    corefile::corefile_hash(&text)
}

/// The Corefile (and custom keys) the merged policies produce from `current`.
pub fn desired(
    current: &str,
    merged: &MergedPolicies,
    version: Result<CoreDnsVersion, UnknownVersion>,
    cluster_dns: &ClusterDns,
) -> Result<Desired, Refusal> {
    let base = corefile::strip(current).map_err(|e| Refusal {
        reason: Reason::CorefileUnparseable,
        message: format!(
            "the Corefile cannot be edited safely: {e}; fix it or restore it, nothing was written"
        ),
    })?;
    if merged.applied.is_empty() {
        let hash = effective_hash(&base, &BTreeMap::new());
        return Ok(Desired {
            corefile: base.clone(),
            base,
            custom_keys: BTreeMap::new(),
            hash,
            warnings: Vec::new(),
        });
    }
    let version = version.map_err(|e| Refusal {
        reason: Reason::UnknownCoreDNSVersion,
        message: format!("{e}; set the operator's --coredns-version to the version the image runs"),
    })?;
    let parsed = corefile::parse(&base).map_err(nothing_written(
        Reason::CorefileUnparseable,
        "the Corefile does not parse: ",
    ))?;
    let dot =
        corefile::dot_server(&parsed).map_err(nothing_written(Reason::NoDotServerBlock, ""))?;
    let ctx = RenderContext::for_block_on(&parsed, dot.index, version, cluster_dns.dns_port);
    let served = ServedZones::new(&parsed, dot.index, &ctx);
    let checked = served::check(merged, &served, &ctx, &cluster_dns.service_ips)?;
    let adopted;
    let merged = if checked.cluster_domain == merged.cluster_domain {
        merged
    } else {
        adopted = MergedPolicies {
            cluster_domain: checked.cluster_domain.clone(),
            ..merged.clone()
        };
        &adopted
    };
    let dot_has_cache = parsed.blocks[dot.index]
        .directives
        .iter()
        .any(|d| d.name == "cache");
    let mut warnings = checked.warnings;
    warnings.extend(stanza::warnings_for_block(merged, version, dot_has_cache));
    let managed = stanza::render(merged, &ctx).map_err(|e| Refusal {
        reason: e.reason(),
        message: format!("{e}; nothing was written"),
    })?;
    let channel =
        corefile::channel(&parsed).map_err(nothing_written(Reason::NoDotServerBlock, ""))?;
    match channel {
        Channel::Main => {
            let corefile = corefile::render(&base, &managed).map_err(nothing_written(
                Reason::CorefileUnparseable,
                "the managed text cannot be placed: ",
            ))?;
            let hash = effective_hash(&corefile, &BTreeMap::new());
            Ok(Desired {
                base,
                corefile,
                custom_keys: BTreeMap::new(),
                hash,
                warnings,
            })
        }
        channel @ Channel::Custom { .. } => {
            let custom_keys: BTreeMap<String, String> = corefile::custom_keys(&managed, &channel)
                .map_err(nothing_written(
                    Reason::CorefileUnparseable,
                    "the coredns-custom keys cannot be written: ",
                ))?
                .into_iter()
                .collect();
            let hash = effective_hash(&base, &custom_keys);
            Ok(Desired {
                corefile: base.clone(),
                base,
                custom_keys,
                hash,
                warnings,
            })
        }
    }
}

/// Plans one target. The order of writes it implies (ConfigMap, then the
/// Deployment) keeps a crash between them harmless: the next run sees the
/// Corefile applied and the template behind, and rolls.
pub fn plan_target(input: &PlanInput<'_>) -> TargetPlan {
    let cm = input.config_map;
    let Some(current) = cm.corefile.as_deref() else {
        return TargetPlan::stalled(
            Reason::CorefileMissing,
            format!("the ConfigMap has no {COREFILE_KEY:?} key; nothing was written"),
        );
    };
    let version = match (input.version_override, input.deployment.image.as_deref()) {
        (Some(v), _) => Ok(v),
        (None, Some(image)) => {
            CoreDnsVersion::from_image(image).map_err(|error| UnknownVersion::Image {
                image: image.to_string(),
                error,
            })
        }
        (None, None) => Err(UnknownVersion::NoImage),
    };

    let desired = match desired(current, input.merged, version, &input.cluster_dns) {
        Ok(d) => d,
        // With no policy left, a damaged Corefile is put back from the copy
        // kept before the first edit.
        Err(refusal) if input.merged.applied.is_empty() => {
            match cm.annotations.get(annotation::ORIGINAL_COREFILE) {
                Some(original) => Desired {
                    base: original.clone(),
                    corefile: original.clone(),
                    custom_keys: BTreeMap::new(),
                    hash: effective_hash(original, &BTreeMap::new()),
                    warnings: Vec::new(),
                },
                None => return TargetPlan::stalled(refusal.reason, refusal.message),
            }
        }
        Err(refusal) => return TargetPlan::stalled(refusal.reason, refusal.message),
    };
    // The original and the last good Corefile are kept in annotations, which
    // share one 256 KiB limit per object: refuse before the apiserver would.
    let largest = desired.corefile.len().max(desired.base.len());
    if !input.merged.applied.is_empty() && largest > MAX_COREFILE_BYTES {
        return TargetPlan::stalled(
            Reason::CorefileTooLarge,
            format!(
                "the Corefile would be {largest} bytes; dnspolicy keeps two copies in the ConfigMap's annotations (256 KiB in all), so it manages Corefiles up to {MAX_COREFILE_BYTES} bytes; nothing was written"
            ),
        );
    }

    let mut plan = TargetPlan {
        phase: Phase::Progressing,
        desired_hash: Some(desired.hash.clone()),
        write_config_map: None,
        write_custom: None,
        roll_to: None,
        events: vec![],
        warnings: desired.warnings.clone(),
    };
    let releasing = input.merged.applied.is_empty();

    if cm.annotations.get(annotation::FAILED_HASH) == Some(&desired.hash) {
        let good = cm
            .annotations
            .get(annotation::APPLIED_HASH)
            .cloned()
            .unwrap_or_default();
        plan.phase = Phase::Stalled(rollout_failed(&desired.hash, &good));
        plan.desired_hash = Some(good);
        return plan;
    }

    let current_custom = &input.custom.managed_keys;
    let current_hash = effective_hash(current, current_custom);
    if let Some(message) = &input.stood_down
        && current_hash != desired.hash
        && !releasing
    {
        // Stood down for another owner: stay so until the policy changes
        // or the Corefile is what dnspolicy would write.
        return TargetPlan::stalled(Reason::ForeignOwner, message.clone());
    }
    let applied_hash = cm.annotations.get(annotation::APPLIED_HASH);
    let others = &cm.other_corefile_managers;
    if !releasing
        && input.previously_applied
        && applied_hash.is_none()
        && !others.is_empty()
        && current_hash != desired.hash
    {
        return TargetPlan::stalled(
            Reason::ForeignOwner,
            foreign_owner(
                others,
                "replaced the whole ConfigMap, dropping dnspolicy's stanzas and the copies it keeps in annotations",
            ),
        );
    }
    let mut reverts = parse_reverts(cm.annotations.get(annotation::REVERTS), input.now);
    let drifted = applied_hash.is_some_and(|h| *h != current_hash) && current_hash != desired.hash;
    if drifted {
        // One attempt per owner: a field manager that reverts dnspolicy a
        // second time (at any interval) owns the Corefile; stand down.
        let again: Vec<String> = others
            .iter()
            .filter(|m| reverts.iter().any(|r| r.by.contains(m)))
            .cloned()
            .collect();
        if !again.is_empty() && !releasing {
            return TargetPlan::stalled(
                Reason::ForeignOwner,
                foreign_owner(
                    &again,
                    "rewrote the Corefile again after dnspolicy put its stanzas back",
                ),
            );
        }
        reverts.push(Revert {
            at: input.now,
            by: others.clone(),
        });
        let recent = reverts
            .iter()
            .filter(|r| input.now - r.at <= CONTEST_WINDOW_SECS)
            .count();
        if recent > CONTEST_MAX_REVERTS && !releasing {
            // Writers that leave no field manager (rare): only a count.
            return TargetPlan::stalled(
                Reason::CorefileContested,
                format!(
                    "another writer rewrote the Corefile {recent} times in {CONTEST_WINDOW_SECS} s; dnspolicy stopped writing it. Let one owner keep it: put dnspolicy's stanzas in the coredns-custom ConfigMap, tell your GitOps tool to ignore data.Corefile, or stop the other writer"
                ),
            );
        }
        plan.events.push((
            EventReason::DriftCorrected,
            "the Corefile was changed by someone else; dnspolicy's stanzas were put back".into(),
        ));
    }

    let corefile_changes = current != desired.corefile;
    let custom_changes = *current_custom != desired.custom_keys;
    let annotations = if releasing {
        BTreeMap::new()
    } else {
        let mut a = BTreeMap::new();
        a.insert(
            annotation::ORIGINAL_COREFILE.to_string(),
            cm.annotations
                .get(annotation::ORIGINAL_COREFILE)
                .cloned()
                .unwrap_or_else(|| desired.base.clone()),
        );
        a.insert(annotation::APPLIED_HASH.to_string(), desired.hash.clone());
        a.insert(
            annotation::LAST_GOOD_COREFILE.to_string(),
            cm.annotations
                .get(annotation::LAST_GOOD_COREFILE)
                .cloned()
                .unwrap_or_else(|| current.to_string()),
        );
        if !reverts.is_empty() {
            a.insert(
                annotation::REVERTS.to_string(),
                reverts
                    .iter()
                    .map(Revert::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        // The rollout record is dnspolicy's own: kept as it is here, set
        // below when a rollout starts, dropped when it finished.
        if let Some(started) = cm.annotations.get(annotation::ROLLOUT_STARTED) {
            a.insert(annotation::ROLLOUT_STARTED.to_string(), started.clone());
        }
        a
    };
    let owned: BTreeMap<String, String> = cm
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(annotation::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if corefile_changes || owned != annotations {
        plan.write_config_map = Some(ConfigMapWrite {
            corefile: desired.corefile.clone(),
            annotations: annotations.clone(),
        });
        if corefile_changes && !drifted {
            plan.events.push((
                EventReason::CorefileApplied,
                format!("Corefile {} written", desired.hash),
            ));
        }
    }
    if custom_changes || (!input.custom.exists && !desired.custom_keys.is_empty()) {
        plan.write_custom = Some(desired.custom_keys.clone());
        if !drifted {
            plan.events.push((
                EventReason::CorefileApplied,
                format!("coredns-custom keys {} written", desired.hash),
            ));
        }
    }

    let deployment = input.deployment;
    if input.rollout == RolloutMode::None {
        plan.phase = if plan.writes() {
            Phase::Progressing
        } else {
            Phase::RolledOut
        };
        return plan;
    }
    let mut annotations = annotations;
    if deployment.template_hash.as_deref() != Some(desired.hash.as_str()) {
        // The deadline runs from here, the rollout's start, not from the
        // Corefile write: a switch from `rollout: None` rolls long after it.
        // (A record for this hash is kept: the patch of a run that crashed
        // just before it is seconds old.)
        let recorded = cm
            .annotations
            .get(annotation::ROLLOUT_STARTED)
            .and_then(|s| RolloutRecord::parse(s))
            .is_some_and(|r| r.hash == desired.hash);
        if !releasing && !recorded {
            annotations.insert(
                annotation::ROLLOUT_STARTED.to_string(),
                RolloutRecord::new(&desired.hash, input.now).to_string(),
            );
            plan.write_config_map = Some(ConfigMapWrite {
                corefile: desired.corefile.clone(),
                annotations,
            });
        }
        plan.roll_to = Some(desired.hash.clone());
        plan.events.push((
            EventReason::RolloutStarted,
            format!("rolling CoreDNS onto Corefile {}", desired.hash),
        ));
        return plan;
    }
    let ours = cm
        .annotations
        .get(annotation::ROLLOUT_STARTED)
        .and_then(|s| RolloutRecord::parse(s))
        .filter(|r| r.hash == desired.hash);
    if deployment.rolled_out() {
        plan.phase = Phase::RolledOut;
        let record_good = !releasing
            && cm.annotations.get(annotation::LAST_GOOD_COREFILE) != Some(&desired.corefile);
        if record_good || (!releasing && ours.is_some()) {
            annotations.remove(annotation::ROLLOUT_STARTED);
            annotations.insert(
                annotation::LAST_GOOD_COREFILE.to_string(),
                desired.corefile.clone(),
            );
            plan.write_config_map = Some(ConfigMapWrite {
                corefile: desired.corefile.clone(),
                annotations,
            });
            plan.events.push((
                EventReason::RolloutFinished,
                format!("CoreDNS runs Corefile {}", desired.hash),
            ));
        }
        return plan;
    }
    let available = deployment
        .available_replicas
        .min(deployment.updated_replicas);
    let Some(started) = ours.filter(|_| !releasing) else {
        // Not a rollout dnspolicy is judging: its own finished earlier (a pod
        // that crashes later is not the Corefile's fault: a rollback would
        // mark a good Corefile failed), or another actor rolls CoreDNS.
        if releasing {
            return plan;
        }
        plan.phase = Phase::Unavailable(Refusal {
            reason: Reason::CoreDNSUnavailable,
            message: format!(
                "{available} of {} CoreDNS pods are available on Corefile {}; it rolled out before, so dnspolicy does not roll it back. Check the CoreDNS pods",
                deployment.replicas, desired.hash
            ),
        });
        return plan;
    };
    let deadline = rollout_deadline(input.rollout_deadline_secs, deployment.replicas);
    if input.now - started.at <= deadline {
        return plan;
    }
    let last_good = cm
        .annotations
        .get(annotation::LAST_GOOD_COREFILE)
        .cloned()
        .unwrap_or_else(|| desired.base.clone());
    let good_hash = effective_hash(&last_good, &BTreeMap::new());
    if good_hash == desired.hash {
        // Nothing this rollout introduced to take back.
        plan.phase = Phase::Unavailable(Refusal {
            reason: Reason::CoreDNSUnavailable,
            message: format!(
                "{available} of {} CoreDNS pods are available after {deadline} s on Corefile {}, the one CoreDNS ran before this rollout, so there is nothing to roll back. Check the CoreDNS pods",
                deployment.replicas, desired.hash
            ),
        });
        return plan;
    }
    annotations.insert(annotation::FAILED_HASH.to_string(), desired.hash.clone());
    annotations.insert(annotation::APPLIED_HASH.to_string(), good_hash.clone());
    annotations.insert(
        annotation::ROLLOUT_STARTED.to_string(),
        RolloutRecord::new(&good_hash, input.now).to_string(),
    );
    let refusal = rollout_failed(&desired.hash, &good_hash);
    plan.events.push((
        EventReason::Rollback,
        format!(
            "{} ({available} of {} pods available after {deadline} s)",
            refusal.message, deployment.replicas,
        ),
    ));
    plan.write_config_map = Some(ConfigMapWrite {
        corefile: last_good,
        annotations,
    });
    plan.write_custom = if desired.custom_keys.is_empty() {
        None
    } else {
        Some(BTreeMap::new())
    };
    plan.roll_to = Some(good_hash.clone());
    plan.desired_hash = Some(good_hash);
    plan.phase = Phase::RolledBack(refusal);
    plan
}

/// Seconds a rollout of `replicas` CoreDNS pods may take: the configured
/// base plus `ROLLOUT_SECS_PER_REPLICA` for each pod, since a Deployment
/// replaces its pods a few at a time (maxSurge/maxUnavailable), so a
/// 100-replica CoreDNS needs far longer than a 2-replica one.
pub fn rollout_deadline(base_secs: i64, replicas: i32) -> i64 {
    base_secs + ROLLOUT_SECS_PER_REPLICA * i64::from(replicas.max(0))
}

/// The rollout dnspolicy started, kept in the `rollout-started` annotation as
/// `<hash>@<unix seconds>`: only a rollout onto this hash is judged against
/// the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RolloutRecord {
    hash: String,
    at: i64,
}

impl RolloutRecord {
    fn new(hash: &str, at: i64) -> Self {
        RolloutRecord {
            hash: hash.to_string(),
            at,
        }
    }

    /// `None` for anything else, including the bare seconds older versions wrote.
    fn parse(text: &str) -> Option<Self> {
        let (hash, at) = text.rsplit_once('@')?;
        Some(RolloutRecord::new(hash, at.parse().ok()?))
    }
}

impl std::fmt::Display for RolloutRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.hash, self.at)
    }
}

/// The same words when the rollback happens and on every run after it, so
/// status settles and is not rewritten.
fn rollout_failed(bad: &str, good: &str) -> Refusal {
    Refusal {
        reason: Reason::RolloutFailed,
        message: format!(
            "CoreDNS did not become available on Corefile {bad} within the rollout deadline; the last good Corefile {good} was put back. Check the CoreDNS pods' logs, then change the policy to try again"
        ),
    }
}

/// The message of `ForeignOwner`: who, what they did, and how to hand over.
fn foreign_owner(managers: &[String], what: &str) -> String {
    format!(
        "field manager {} {what}; dnspolicy stopped writing the Corefile and will not fight over it. To hand it over: put the stanzas in Git (`dnspolicy render` prints them), or make the other tool leave data.Corefile to dnspolicy (Argo CD: ignoreDifferences with managedFieldsManagers [{FIELD}] and the RespectIgnoreDifferences=true sync option; Flux: the annotation kustomize.toolkit.fluxcd.io/ssa: IfNotPresent on the ConfigMap), or on k3s/AKS let dnspolicy use coredns-custom. Then change the policy to try again",
        managers.join(", "),
        FIELD = dnspolicy_crd::vocabulary::FIELD_MANAGER,
    )
}

/// One revert of dnspolicy's Corefile by someone else: when, and the field
/// managers that owned `data.Corefile` then. Kept as `<unix>:<m1>+<m2>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Revert {
    at: i64,
    by: Vec<String>,
}

impl std::fmt::Display for Revert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.at)?;
        if !self.by.is_empty() {
            write!(f, ":{}", self.by.join("+"))?;
        }
        Ok(())
    }
}

/// The reverts worth keeping: named ones at any age (a GitOps tool may
/// resync every few minutes), unnamed ones inside the contest window; at
/// most the last ten.
fn parse_reverts(text: Option<&String>, now: i64) -> Vec<Revert> {
    let mut reverts: Vec<Revert> = text
        .map(|t| {
            t.split(',')
                .filter_map(|entry| {
                    let (at, by) = entry.trim().split_once(':').unwrap_or((entry.trim(), ""));
                    Some(Revert {
                        at: at.parse().ok()?,
                        by: by
                            .split('+')
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect(),
                    })
                })
                .filter(|r| !r.by.is_empty() || now - r.at <= CONTEST_WINDOW_SECS)
                .collect()
        })
        .unwrap_or_default();
    let excess = reverts.len().saturating_sub(10);
    reverts.drain(..excess);
    reverts
}

#[cfg(test)]
mod tests;
