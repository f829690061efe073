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

fn plan(merged: &MergedPolicies, cm: &ConfigMapView, d: &DeploymentView, now: i64) -> TargetPlan {
    plan_target(&PlanInput {
        merged,
        rollout: RolloutMode::Restart,
        config_map: cm,
        custom: &CustomView::default(),
        deployment: d,
        now,
        rollout_deadline_secs: 60,
        version_override: None,
        cluster_dns: ClusterDns::default(),
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
    assert_eq!(write.annotations[annotation::ROLLOUT_STARTED], "1000");
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
fn another_writer_reverting_the_corefile_is_fought_only_a_few_times() {
    let merged = tailnet();
    let (first, mut cm) = first_apply(&merged);
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
