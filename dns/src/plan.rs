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
use crate::stanza::{self, RenderContext};
use crate::version::CoreDnsVersion;

/// The key of the main Corefile in the target ConfigMap.
pub const COREFILE_KEY: &str = "Corefile";
/// The ConfigMap k3s and AKS import customisations from.
pub const CUSTOM_CONFIGMAP: &str = "coredns-custom";

/// How long the operator lets another writer revert its Corefile before it
/// stops and reports `Stalled`.
pub const CONTEST_WINDOW_SECS: i64 = 300;
pub const CONTEST_MAX_REVERTS: usize = 3;

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
}

/// Why nothing (more) can be done until a person acts. Reasons are
/// CamelCase condition reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
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
    version: Result<CoreDnsVersion, String>,
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
        });
    }
    let version = version.map_err(|e| Refusal {
        reason: Reason::UnknownCoreDNSVersion,
        message: format!("{e}; set the operator's --coredns-version to the version the image runs"),
    })?;
    let parsed = corefile::parse(&base).map_err(|e| Refusal {
        reason: Reason::CorefileUnparseable,
        message: format!("the Corefile does not parse: {e}; nothing was written"),
    })?;
    let dot = corefile::dot_server(&parsed).map_err(|e| Refusal {
        reason: Reason::NoDotServerBlock,
        message: format!("{e}; nothing was written"),
    })?;
    let ctx = RenderContext::for_block(&parsed, dot.index, version);
    let managed = stanza::render(merged, &ctx).map_err(|e| Refusal {
        reason: e.reason(),
        message: format!("{e}; nothing was written"),
    })?;
    let channel = corefile::channel(&parsed).map_err(|e| Refusal {
        reason: Reason::NoDotServerBlock,
        message: format!("{e}; nothing was written"),
    })?;
    match channel {
        Channel::Main => {
            let corefile = corefile::render(&base, &managed).map_err(|e| Refusal {
                reason: Reason::CorefileUnparseable,
                message: format!("the managed text cannot be placed: {e}; nothing was written"),
            })?;
            let hash = effective_hash(&corefile, &BTreeMap::new());
            Ok(Desired {
                base,
                corefile,
                custom_keys: BTreeMap::new(),
                hash,
            })
        }
        channel @ Channel::Custom { .. } => {
            let custom_keys: BTreeMap<String, String> = corefile::custom_keys(&managed, &channel)
                .map_err(|e| Refusal {
                    reason: Reason::CorefileUnparseable,
                    message: format!(
                        "the coredns-custom keys cannot be written: {e}; nothing was written"
                    ),
                })?
                .into_iter()
                .collect();
            let hash = effective_hash(&base, &custom_keys);
            Ok(Desired {
                corefile: base.clone(),
                base,
                custom_keys,
                hash,
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
        (None, Some(image)) => CoreDnsVersion::from_image(image)
            .map_err(|e| format!("the CoreDNS version cannot be read from image {image:?}: {e}")),
        (None, None) => Err("the CoreDNS Deployment names no image".to_string()),
    };

    let desired = match desired(current, input.merged, version) {
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
                },
                None => return TargetPlan::stalled(refusal.reason, refusal.message),
            }
        }
        Err(refusal) => return TargetPlan::stalled(refusal.reason, refusal.message),
    };

    let mut plan = TargetPlan {
        phase: Phase::Progressing,
        desired_hash: Some(desired.hash.clone()),
        write_config_map: None,
        write_custom: None,
        roll_to: None,
        events: vec![],
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
    let applied_hash = cm.annotations.get(annotation::APPLIED_HASH);
    let mut reverts = parse_reverts(cm.annotations.get(annotation::REVERTS), input.now);
    let drifted = applied_hash.is_some_and(|h| *h != current_hash) && current_hash != desired.hash;
    if drifted {
        reverts.push(input.now);
        if reverts.len() > CONTEST_MAX_REVERTS && !releasing {
            let who = if cm.other_corefile_managers.is_empty() {
                "another writer".to_string()
            } else {
                format!("field manager {}", cm.other_corefile_managers.join(", "))
            };
            return TargetPlan::stalled(
                Reason::CorefileContested,
                format!(
                    "{who} rewrote the Corefile {} times in {} s; dnspolicy stopped writing it. Let one owner keep it: put dnspolicy's stanzas in the coredns-custom ConfigMap, tell your GitOps tool to ignore data.Corefile, or stop the other writer",
                    reverts.len(),
                    CONTEST_WINDOW_SECS
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
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let started = if corefile_changes || custom_changes || applied_hash != Some(&desired.hash) {
            input.now.to_string()
        } else {
            cm.annotations
                .get(annotation::ROLLOUT_STARTED)
                .cloned()
                .unwrap_or_else(|| input.now.to_string())
        };
        a.insert(annotation::ROLLOUT_STARTED.to_string(), started);
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
    if deployment.template_hash.as_deref() != Some(desired.hash.as_str()) {
        plan.roll_to = Some(desired.hash.clone());
        plan.events.push((
            EventReason::RolloutStarted,
            format!("rolling CoreDNS onto Corefile {}", desired.hash),
        ));
        return plan;
    }
    if deployment.rolled_out() {
        plan.phase = Phase::RolledOut;
        if !releasing
            && cm.annotations.get(annotation::LAST_GOOD_COREFILE) != Some(&desired.corefile)
        {
            let mut annotations = annotations;
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
    let started: i64 = cm
        .annotations
        .get(annotation::ROLLOUT_STARTED)
        .and_then(|s| s.parse().ok())
        .unwrap_or(input.now);
    if !releasing && input.now - started > input.rollout_deadline_secs {
        let last_good = cm
            .annotations
            .get(annotation::LAST_GOOD_COREFILE)
            .cloned()
            .unwrap_or_else(|| desired.base.clone());
        let good_hash = effective_hash(&last_good, &BTreeMap::new());
        let mut annotations = annotations;
        annotations.insert(annotation::FAILED_HASH.to_string(), desired.hash.clone());
        annotations.insert(annotation::APPLIED_HASH.to_string(), good_hash.clone());
        annotations.insert(
            annotation::ROLLOUT_STARTED.to_string(),
            input.now.to_string(),
        );
        let refusal = rollout_failed(&desired.hash, &good_hash);
        plan.events.push((
            EventReason::Rollback,
            format!(
                "{} ({} of {} pods available after {} s)",
                refusal.message,
                deployment
                    .available_replicas
                    .min(deployment.updated_replicas),
                deployment.replicas,
                input.rollout_deadline_secs
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
    }
    plan
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

/// Revert times (seconds) still inside the contest window.
fn parse_reverts(text: Option<&String>, now: i64) -> Vec<i64> {
    text.map(|t| {
        t.split(',')
            .filter_map(|s| s.trim().parse::<i64>().ok())
            .filter(|at| now - at <= CONTEST_WINDOW_SECS)
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{merge, validate};

    const KUBEADM: &str = include_str!("../tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
    const IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.14.2";

    fn tailnet() -> MergedPolicies {
        let spec = serde_yaml::from_str("foreignSuffixes: [{suffix: tailb45a71.ts.net}]").unwrap();
        merge(&[validate("tailnet", &spec).unwrap()])
    }

    fn deployment(template_hash: Option<&str>, rolled: bool) -> DeploymentView {
        DeploymentView {
            image: Some(IMAGE.into()),
            template_hash: template_hash.map(str::to_string),
            generation: 2,
            observed_generation: 2,
            replicas: 2,
            updated_replicas: if rolled { 2 } else { 1 },
            available_replicas: if rolled { 2 } else { 1 },
            total_replicas: if rolled { 2 } else { 3 },
        }
    }

    fn plan(
        merged: &MergedPolicies,
        cm: &ConfigMapView,
        d: &DeploymentView,
        now: i64,
    ) -> TargetPlan {
        plan_target(&PlanInput {
            merged,
            rollout: RolloutMode::Restart,
            config_map: cm,
            custom: &CustomView::default(),
            deployment: d,
            now,
            rollout_deadline_secs: 60,
            version_override: None,
        })
    }

    fn stock() -> ConfigMapView {
        ConfigMapView {
            corefile: Some(KUBEADM.into()),
            ..Default::default()
        }
    }

    /// The ConfigMap after `write` was applied by dnspolicy's field manager.
    fn after(write: &ConfigMapWrite) -> ConfigMapView {
        ConfigMapView {
            corefile: Some(write.corefile.clone()),
            annotations: write.annotations.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn first_apply_writes_the_corefile_keeps_the_original_and_rolls() {
        let merged = tailnet();
        let p = plan(&merged, &stock(), &deployment(None, true), 1000);
        let write = p.write_config_map.as_ref().expect("a ConfigMap write");
        assert!(write.corefile.contains("tailb45a71"));
        assert_eq!(write.annotations[annotation::ORIGINAL_COREFILE], KUBEADM);
        assert_eq!(write.annotations[annotation::LAST_GOOD_COREFILE], KUBEADM);
        assert_eq!(write.annotations[annotation::ROLLOUT_STARTED], "1000");
        assert_eq!(p.roll_to, p.desired_hash);
        assert_eq!(p.phase, Phase::Progressing);
    }

    #[test]
    fn a_crash_before_the_rollout_only_rolls_on_restart() {
        let merged = tailnet();
        let first = plan(&merged, &stock(), &deployment(None, true), 1000);
        let cm = after(first.write_config_map.as_ref().unwrap());
        let again = plan(&merged, &cm, &deployment(None, true), 1005);
        assert_eq!(
            again.write_config_map, None,
            "the Corefile is already written"
        );
        assert_eq!(again.roll_to, first.desired_hash);
    }

    #[test]
    fn a_finished_rollout_records_the_last_good_corefile_then_nothing_is_written() {
        let merged = tailnet();
        let first = plan(&merged, &stock(), &deployment(None, true), 1000);
        let cm = after(first.write_config_map.as_ref().unwrap());
        let hash = first.desired_hash.clone();
        let rolling = plan(&merged, &cm, &deployment(hash.as_deref(), false), 1010);
        assert!(!rolling.writes());
        assert_eq!(rolling.phase, Phase::Progressing);
        let done = plan(&merged, &cm, &deployment(hash.as_deref(), true), 1020);
        assert_eq!(done.phase, Phase::RolledOut);
        let write = done.write_config_map.as_ref().expect("last good recorded");
        assert_eq!(
            write.annotations[annotation::LAST_GOOD_COREFILE],
            write.corefile
        );
        let settled = plan(
            &merged,
            &after(write),
            &deployment(hash.as_deref(), true),
            1030,
        );
        assert!(
            !settled.writes(),
            "an unchanged world writes nothing: {settled:?}"
        );
        assert_eq!(settled.phase, Phase::RolledOut);
    }

    #[test]
    fn a_rollout_past_its_deadline_puts_the_last_good_corefile_back_once() {
        let merged = tailnet();
        let first = plan(&merged, &stock(), &deployment(None, true), 1000);
        let cm = after(first.write_config_map.as_ref().unwrap());
        let hash = first.desired_hash.clone();
        let late = plan(&merged, &cm, &deployment(hash.as_deref(), false), 1061);
        let Phase::RolledBack(r) = &late.phase else {
            panic!("{late:?}")
        };
        assert_eq!(r.reason, Reason::RolloutFailed);
        let write = late.write_config_map.as_ref().unwrap();
        assert_eq!(write.corefile, KUBEADM);
        assert_eq!(late.roll_to, Some(corefile::corefile_hash(KUBEADM)));
        // Next time: Stalled, no retry loop until the spec changes.
        let next = plan(
            &merged,
            &after(write),
            &deployment(late.roll_to.as_deref(), true),
            1070,
        );
        assert!(
            matches!(next.phase, Phase::Stalled(ref r) if r.reason == Reason::RolloutFailed),
            "{next:?}"
        );
        assert!(!next.writes());
    }

    #[test]
    fn deleting_the_last_policy_restores_the_original_byte_for_byte() {
        let merged = tailnet();
        let first = plan(&merged, &stock(), &deployment(None, true), 1000);
        let cm = after(first.write_config_map.as_ref().unwrap());
        let released = plan(
            &MergedPolicies::default(),
            &cm,
            &deployment(first.desired_hash.as_deref(), true),
            1100,
        );
        let write = released.write_config_map.as_ref().unwrap();
        assert_eq!(write.corefile, KUBEADM);
        assert!(
            write.annotations.is_empty(),
            "dnspolicy's annotations are dropped"
        );
        assert_eq!(released.roll_to, Some(corefile::corefile_hash(KUBEADM)));
        // Even when someone damaged the markers, the kept original comes back.
        let mut damaged = cm.clone();
        damaged.corefile = Some(
            cm.corefile
                .unwrap()
                .replace("# dnspolicy:end dot-block", ""),
        );
        let restored = plan(
            &MergedPolicies::default(),
            &damaged,
            &deployment(None, true),
            1100,
        );
        assert_eq!(restored.write_config_map.unwrap().corefile, KUBEADM);
    }

    #[test]
    fn another_writer_reverting_the_corefile_is_fought_only_a_few_times() {
        let merged = tailnet();
        let first = plan(&merged, &stock(), &deployment(None, true), 1000);
        let mut cm = after(first.write_config_map.as_ref().unwrap());
        let hash = first.desired_hash.clone();
        for round in 0..CONTEST_MAX_REVERTS {
            // Argo CD syncs the stock Corefile back.
            cm.corefile = Some(KUBEADM.into());
            cm.other_corefile_managers = vec!["argocd-controller".into()];
            let p = plan(
                &merged,
                &cm,
                &deployment(hash.as_deref(), true),
                1100 + round as i64,
            );
            assert!(
                p.events
                    .iter()
                    .any(|(r, _)| *r == EventReason::DriftCorrected),
                "round {round}: {p:?}"
            );
            cm = ConfigMapView {
                other_corefile_managers: vec![],
                ..after(p.write_config_map.as_ref().unwrap())
            };
        }
        cm.corefile = Some(KUBEADM.into());
        cm.other_corefile_managers = vec!["argocd-controller".into()];
        let p = plan(&merged, &cm, &deployment(hash.as_deref(), true), 1200);
        let Phase::Stalled(r) = &p.phase else {
            panic!("{p:?}")
        };
        assert_eq!(r.reason, Reason::CorefileContested);
        assert!(
            r.message.contains("argocd-controller") && r.message.contains("coredns-custom"),
            "{}",
            r.message
        );
        assert!(!p.writes());
    }

    #[test]
    fn an_unparseable_corefile_or_unknown_version_writes_nothing() {
        let merged = tailnet();
        let broken = ConfigMapView {
            corefile: Some(".:53 {\n    forward . 8.8.8.8 {\n".into()),
            ..Default::default()
        };
        let p = plan(&merged, &broken, &deployment(None, true), 1000);
        assert!(
            matches!(p.phase, Phase::Stalled(ref r) if r.reason == Reason::CorefileUnparseable),
            "{p:?}"
        );
        assert!(!p.writes());
        let mut digest = deployment(None, true);
        digest.image = Some("registry.k8s.io/coredns/coredns@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into());
        let p = plan(&merged, &stock(), &digest, 1000);
        assert!(
            matches!(p.phase, Phase::Stalled(ref r) if r.reason == Reason::UnknownCoreDNSVersion && r.message.contains("--coredns-version")),
            "{p:?}"
        );
        assert!(!p.writes());
    }
}
