//! Unit tests of `plan`.

use super::*;
use crate::policy::{merge, validate};

const KUBEADM: &str = include_str!("../../tests/fixtures/corefiles/kubeadm-v1.36.3.Corefile");
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

static NO_CUSTOM: CustomView = CustomView {
    exists: false,
    managed_keys: BTreeMap::new(),
};

/// The input the tests plan with: rollout Restart, a 60 s deadline, no
/// custom keys; tests change single fields with `..input(..)`.
fn input<'a>(
    merged: &'a MergedPolicies,
    cm: &'a ConfigMapView,
    d: &'a DeploymentView,
    now: i64,
) -> PlanInput<'a> {
    PlanInput {
        merged,
        rollout: RolloutMode::Restart,
        config_map: cm,
        custom: &NO_CUSTOM,
        deployment: d,
        now,
        rollout_deadline_secs: 60,
        version_override: None,
        cluster_dns: ClusterDns::default(),
        previously_applied: false,
        stood_down: None,
    }
}

fn plan(merged: &MergedPolicies, cm: &ConfigMapView, d: &DeploymentView, now: i64) -> TargetPlan {
    plan_target(&input(merged, cm, d, now))
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

/// The plan at t=1000 on the stock ConfigMap, and the ConfigMap after its write.
fn first_apply(merged: &MergedPolicies) -> (TargetPlan, ConfigMapView) {
    let first = plan(merged, &stock(), &deployment(None, true), 1000);
    let cm = after(first.write_config_map.as_ref().unwrap());
    (first, cm)
}

#[test]
fn first_apply_writes_the_corefile_keeps_the_original_and_rolls() {
    let merged = tailnet();
    let p = plan(&merged, &stock(), &deployment(None, true), 1000);
    let write = p.write_config_map.as_ref().expect("a ConfigMap write");
    assert!(write.corefile.contains("tailb45a71"));
    assert_eq!(write.annotations[annotation::ORIGINAL_COREFILE], KUBEADM);
    assert_eq!(write.annotations[annotation::LAST_GOOD_COREFILE], KUBEADM);
    assert_eq!(
        write.annotations[annotation::ROLLOUT_STARTED],
        format!("{}@1000", p.desired_hash.as_ref().unwrap())
    );
    assert_eq!(p.roll_to, p.desired_hash);
    assert_eq!(p.phase, Phase::Progressing);
}

#[test]
fn a_crash_before_the_rollout_only_rolls_on_restart() {
    let merged = tailnet();
    let (first, cm) = first_apply(&merged);
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
    let (first, cm) = first_apply(&merged);
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
    let (first, cm) = first_apply(&merged);
    let hash = first.desired_hash.clone();
    // 60 s plus 10 s for each of the 2 replicas.
    let in_time = plan(&merged, &cm, &deployment(hash.as_deref(), false), 1080);
    assert_eq!(in_time.phase, Phase::Progressing);
    let late = plan(&merged, &cm, &deployment(hash.as_deref(), false), 1081);
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
    let (first, cm) = first_apply(&merged);
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
fn a_named_owner_reverting_twice_makes_dnspolicy_stand_down_at_any_interval() {
    let merged = tailnet();
    let (first, cm) = first_apply(&merged);
    let hash = first.desired_hash.clone();
    let argo = |cm: &ConfigMapView| ConfigMapView {
        corefile: Some(KUBEADM.into()),
        other_corefile_managers: vec!["argocd-controller".into()],
        ..cm.clone()
    };
    // Argo CD syncs the stock Corefile back: one attempt to put the stanzas back.
    let p = plan(
        &merged,
        &argo(&cm),
        &deployment(hash.as_deref(), true),
        1100,
    );
    assert!(
        p.events
            .iter()
            .any(|(r, _)| *r == EventReason::DriftCorrected),
        "{p:?}"
    );
    let cm = after(p.write_config_map.as_ref().unwrap());
    assert_eq!(
        cm.annotations[annotation::REVERTS],
        "1100:argocd-controller"
    );
    // An hour later (outside any window) it syncs again: stand down.
    let p = plan(
        &merged,
        &argo(&cm),
        &deployment(hash.as_deref(), true),
        4700,
    );
    let Phase::Stalled(r) = &p.phase else {
        panic!("{p:?}")
    };
    assert_eq!(r.reason, Reason::ForeignOwner);
    assert!(
        r.message.contains("argocd-controller")
            && r.message.contains("managedFieldsManagers")
            && r.message.contains("IfNotPresent"),
        "{}",
        r.message
    );
    assert!(!p.writes());
    // While the policy shows it, dnspolicy stays stood down...
    let (cm, d) = (argo(&cm), deployment(hash.as_deref(), true));
    let stood = plan_target(&PlanInput {
        previously_applied: true,
        stood_down: Some(r.message.clone()),
        ..input(&merged, &cm, &d, 9000)
    });
    assert!(matches!(stood.phase, Phase::Stalled(ref s) if s.reason == Reason::ForeignOwner));
    assert!(!stood.writes());
}

#[test]
fn a_whole_object_replace_that_drops_the_annotations_is_a_foreign_owner() {
    let merged = tailnet();
    let replaced = ConfigMapView {
        corefile: Some(KUBEADM.into()),
        annotations: BTreeMap::new(),
        other_corefile_managers: vec!["kubectl-replace".into()],
    };
    let d = deployment(None, true);
    let input = |previously_applied| PlanInput {
        previously_applied,
        ..input(&merged, &replaced, &d, 2000)
    };
    let p = plan_target(&input(true));
    assert!(
        matches!(p.phase, Phase::Stalled(ref r) if r.reason == Reason::ForeignOwner && r.message.contains("replaced the whole ConfigMap")),
        "{p:?}"
    );
    assert!(!p.writes());
    // A first policy on a ConfigMap someone else created is just applied.
    assert!(plan_target(&input(false)).write_config_map.is_some());
}

#[test]
fn unnamed_writers_are_fought_only_a_few_times_in_a_window() {
    let merged = tailnet();
    let (first, mut cm) = first_apply(&merged);
    let hash = first.desired_hash.clone();
    for round in 0..CONTEST_MAX_REVERTS {
        cm.corefile = Some(KUBEADM.into());
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
        cm = after(p.write_config_map.as_ref().unwrap());
    }
    cm.corefile = Some(KUBEADM.into());
    let p = plan(&merged, &cm, &deployment(hash.as_deref(), true), 1200);
    let Phase::Stalled(r) = &p.phase else {
        panic!("{p:?}")
    };
    assert_eq!(r.reason, Reason::CorefileContested);
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

#[test]
fn a_corefile_too_large_for_its_kept_copies_writes_nothing() {
    let merged = tailnet();
    let mut big = stock();
    let padding: String = (0..3000)
        .map(|i| format!("# a comment line a team keeps, number {i}\n"))
        .collect();
    big.corefile = Some(padding + big.corefile.as_deref().unwrap());
    let p = plan(&merged, &big, &deployment(None, true), 1000);
    assert!(
        matches!(p.phase, Phase::Stalled(ref r) if r.reason == Reason::CorefileTooLarge && r.message.contains("bytes")),
        "{p:?}"
    );
    assert!(!p.writes());
}

/// The ConfigMap after the whole rollout of `merged` finished at t=1020.
fn rolled_out(merged: &MergedPolicies) -> (String, ConfigMapView) {
    let (first, cm) = first_apply(merged);
    let hash = first.desired_hash.unwrap();
    let done = plan(merged, &cm, &deployment(Some(&hash), true), 1020);
    let cm = after(done.write_config_map.as_ref().expect("last good recorded"));
    assert!(
        !cm.annotations.contains_key(annotation::ROLLOUT_STARTED),
        "a finished rollout is no longer judged: {:?}",
        cm.annotations
    );
    (hash, cm)
}

#[test]
fn a_pod_crashing_after_the_rollout_finished_rolls_nothing_back() {
    let merged = tailnet();
    let (hash, cm) = rolled_out(&merged);
    // An hour later a CoreDNS pod crashes.
    let crashed = plan(&merged, &cm, &deployment(Some(&hash), false), 4600);
    assert!(!crashed.writes(), "{crashed:?}");
    let Phase::Unavailable(r) = &crashed.phase else {
        panic!("{crashed:?}")
    };
    assert_eq!(r.reason, Reason::CoreDNSUnavailable);
    assert!(r.message.contains("1 of 2"), "{}", r.message);
    let back = plan(&merged, &cm, &deployment(Some(&hash), true), 4700);
    assert_eq!(back.phase, Phase::RolledOut);
    assert!(!back.writes());
}

#[test]
fn switching_from_rollout_none_to_restart_gets_a_deadline_of_its_own() {
    let merged = tailnet();
    let none = |cm: &ConfigMapView, d: &DeploymentView, now| {
        plan_target(&PlanInput {
            rollout: RolloutMode::None,
            ..input(&merged, cm, d, now)
        })
    };
    let written = none(&stock(), &deployment(None, true), 1000);
    assert_eq!(written.roll_to, None);
    let cm = after(written.write_config_map.as_ref().unwrap());
    assert_eq!(
        none(&cm, &deployment(None, true), 1010).phase,
        Phase::RolledOut
    );
    // An hour later the policy switches to Restart.
    let switch = plan(&merged, &cm, &deployment(None, true), 4600);
    let hash = switch.roll_to.clone().expect("a rollout starts");
    let cm = after(
        switch
            .write_config_map
            .as_ref()
            .expect("the start is recorded"),
    );
    assert_eq!(
        cm.annotations[annotation::ROLLOUT_STARTED],
        format!("{hash}@4600")
    );
    let rolling = plan(&merged, &cm, &deployment(Some(&hash), false), 4610);
    assert_eq!(rolling.phase, Phase::Progressing, "{rolling:?}");
    assert!(!rolling.writes());
    let done = plan(&merged, &cm, &deployment(Some(&hash), true), 4620);
    assert_eq!(done.phase, Phase::RolledOut);
}

#[test]
fn the_deadline_grows_with_the_replicas() {
    let merged = tailnet();
    let (first, cm) = first_apply(&merged);
    let hash = first.desired_hash.unwrap();
    let many = DeploymentView {
        replicas: 50,
        updated_replicas: 30,
        available_replicas: 30,
        total_replicas: 55,
        ..deployment(Some(&hash), false)
    };
    assert_eq!(rollout_deadline(60, 50), 560);
    assert_eq!(plan(&merged, &cm, &many, 1560).phase, Phase::Progressing);
    assert!(matches!(
        plan(&merged, &cm, &many, 1561).phase,
        Phase::RolledBack(_)
    ));
}

#[test]
fn a_rollout_onto_the_last_good_corefile_is_not_rolled_back() {
    let merged = tailnet();
    let (hash, mut cm) = rolled_out(&merged);
    // Someone reset the pod template; dnspolicy rolls again onto the same Corefile.
    let again = plan(&merged, &cm, &deployment(Some("sha256:other"), true), 5000);
    assert_eq!(again.roll_to.as_deref(), Some(hash.as_str()));
    cm = after(again.write_config_map.as_ref().unwrap());
    let late = plan(&merged, &cm, &deployment(Some(&hash), false), 5200);
    assert!(!late.writes(), "{late:?}");
    assert!(
        matches!(late.phase, Phase::Unavailable(ref r) if r.message.contains("nothing to roll back")),
        "{late:?}"
    );
}

#[test]
fn an_old_bare_seconds_record_is_not_judged() {
    let merged = tailnet();
    let (first, mut cm) = first_apply(&merged);
    let hash = first.desired_hash.unwrap();
    cm.annotations
        .insert(annotation::ROLLOUT_STARTED.into(), "1000".into());
    let p = plan(&merged, &cm, &deployment(Some(&hash), false), 9000);
    assert!(matches!(p.phase, Phase::Unavailable(_)), "{p:?}");
    assert!(!p.writes());
}

#[test]
fn the_plan_carries_the_warnings_for_the_controller_to_show() {
    let merged = tailnet();
    let v1_8 = CoreDnsVersion::parse("1.8.4").unwrap();
    let d = deployment(None, true);
    let cm = stock();
    // kubeadm's `.` block has `cache`: the 1.8 SERVFAIL keeps the question.
    let with_cache = plan_target(&PlanInput {
        version_override: Some(v1_8),
        ..input(&merged, &cm, &d, 1000)
    });
    assert_eq!(with_cache.warnings, Vec::<String>::new());
    let no_cache = ConfigMapView {
        corefile: Some(KUBEADM.replace(
            "    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n",
            "",
        )),
        ..Default::default()
    };
    let warned = plan_target(&PlanInput {
        version_override: Some(v1_8),
        ..input(&merged, &no_cache, &d, 1000)
    });
    assert_eq!(warned.phase, Phase::Progressing);
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    assert!(warned.warnings[0].contains("CoreDNS 1.8.4 without `cache`"));
    assert!(warned.warnings[0].contains("tailb45a71.ts.net"));
    // 1.14.2 writes failures through the reverter: nothing to say.
    let new = plan_target(&input(&merged, &no_cache, &d, 1000));
    assert!(new.warnings.is_empty(), "{:?}", new.warnings);
}
