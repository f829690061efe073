//! The controller: read a target's objects, call the planner, carry out the
//! plan, write status. Every write is a server-side apply by one field
//! manager, `dnspolicy`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnspolicy_crd::{
    ClusterDNSPolicy, ClusterDNSPolicyStatus, CoreDnsTarget, NamespacePollution, PodCounts,
    RolloutMode,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::pollution::{PolicyCounts, PollutionIndex};
use dnspolicy_dns::plan::{
    self, ANN_TEMPLATE_HASH, COREFILE_KEY, CUSTOM_CONFIGMAP, ConfigMapView, CustomView,
    DeploymentView, Phase, PlanInput, TargetPlan,
};
use dnspolicy_dns::policy::{self, MergedPolicies, ValidPolicy};
use dnspolicy_dns::version::CoreDnsVersion;

/// The one field manager for every write dnspolicy makes.
pub const FIELD_MANAGER: &str = "dnspolicy";
pub const FINALIZER: &str = "dnspolicy.dev/cleanup";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{object}: {message}")]
    Object { object: String, message: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Object { .. } => "object",
        }
    }
}

/// Settings of `dnspolicy run` the controller needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rollout_deadline: Duration,
    pub coredns_version: Option<CoreDnsVersion>,
    /// The namespace whose ConfigMaps and Deployments are watched for drift.
    pub watch_namespace: String,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub policies: Store<ClusterDNSPolicy>,
    pub pollution: Arc<Mutex<PollutionIndex>>,
}

/// Runs the controller until shutdown.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<ClusterDNSPolicy> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.watch_namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.watch_namespace);

    let controller = Controller::new(policies, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(1));
    let store = controller.store();
    let pollution = Arc::new(Mutex::new(PollutionIndex::default()));
    // Pod churn that changes a policy's counts triggers its reconcile.
    let (trigger_tx, trigger_rx) =
        futures::channel::mpsc::channel::<ObjectRef<ClusterDNSPolicy>>(256);
    tokio::spawn(crate::pollution::watch(
        client.clone(),
        pollution.clone(),
        store.clone(),
        trigger_tx,
        metrics.clone(),
    ));

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), FIELD_MANAGER.into()),
        metrics,
        settings,
        policies: store.clone(),
        pollution,
    });
    let cm_store = store.clone();
    let deploy_store = store.clone();
    controller
        .watches(
            config_maps,
            watcher::Config::default(),
            move |cm: ConfigMap| {
                policies_targeting(&cm_store, cm.namespace().as_deref(), |t| {
                    Some(t.config_map.as_str()) == cm.metadata.name.as_deref()
                        || cm.metadata.name.as_deref() == Some(CUSTOM_CONFIGMAP)
                })
            },
        )
        .watches(
            deployments,
            watcher::Config::default(),
            move |d: Deployment| {
                policies_targeting(&deploy_store, d.namespace().as_deref(), |t| {
                    Some(t.deployment.as_str()) == d.metadata.name.as_deref()
                })
            },
        )
        .reconcile_on(trigger_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

fn policies_targeting(
    store: &Store<ClusterDNSPolicy>,
    namespace: Option<&str>,
    matches: impl Fn(&CoreDnsTarget) -> bool,
) -> Vec<ObjectRef<ClusterDNSPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| Some(p.spec.target.namespace.as_str()) == namespace && matches(&p.spec.target))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn error_policy(policy: Arc<ClusterDNSPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(policy = %policy.name_any(), error = %error, "reconcile error; retrying");
    ctx.metrics.reconcile_failure(error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One policy's reconcile: the target-wide work (idempotent, so whichever
/// policy of a target runs it, the result is the same), then this policy's status.
async fn reconcile(policy: Arc<ClusterDNSPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = policy.name_any();
    let api: Api<ClusterDNSPolicy> = Api::all(ctx.client.clone());
    let deleting = policy.metadata.deletion_timestamp.is_some();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer {
        apply_finalizers(&api, &name, &[FINALIZER]).await?;
    }

    // dereference: this target's live policies
    let target = policy.spec.target.clone();
    let siblings: Vec<Arc<ClusterDNSPolicy>> = ctx
        .policies
        .state()
        .into_iter()
        .filter(|p| p.spec.target == target && p.metadata.deletion_timestamp.is_none())
        .collect();
    // validate
    let mut valid: Vec<ValidPolicy> = Vec::new();
    let mut own_invalid = None;
    for p in &siblings {
        match policy::validate(&p.name_any(), &p.spec) {
            Ok(v) => valid.push(v),
            Err(e) if p.name_any() == name => own_invalid = Some(e.to_string()),
            Err(_) => {}
        }
    }
    if let Some(message) = own_invalid {
        let status = status_for(
            &policy,
            &ctx,
            None,
            Some(("InvalidSpec", message.clone())),
            None,
        );
        write_status(&api, &policy, status).await?;
        publish(&ctx, &policy, EventType::Warning, "InvalidSpec", &message).await;
        ctx.metrics.reconciled("invalid", started.elapsed());
        return Ok(Action::await_change());
    }
    let merged = policy::merge(&valid);
    let rollout = if siblings
        .iter()
        .any(|p| p.spec.rollout == RolloutMode::Restart)
        || siblings.is_empty()
    {
        RolloutMode::Restart
    } else {
        RolloutMode::None
    };

    // read the target, plan, apply
    let plan = plan_and_apply(&ctx, &target, &merged, rollout, &siblings).await?;

    if deleting {
        if plan.writes() || !matches!(plan.phase, Phase::Stalled(_)) || merged.applied.is_empty() {
            apply_finalizers(&api, &name, &[]).await?;
            info!(policy = %name, "finalizer removed after the target was re-rendered without it");
        }
        ctx.metrics.reconciled("deleted", started.elapsed());
        return Ok(Action::await_change());
    }

    let conflict = merged.conflicts.iter().find(|c| c.policy == name).cloned();
    let conflict_condition = conflict.as_ref().map(|c| ("Conflict", c.message.clone()));
    let already_reported = policy.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "Conflict")
    });
    if let Some(c) = conflict.as_ref().filter(|_| !already_reported) {
        publish(&ctx, &policy, EventType::Warning, "Conflict", &c.message).await;
    }
    let status = status_for(
        &policy,
        &ctx,
        Some(&plan),
        conflict_condition,
        Some(&merged),
    );
    write_status(&api, &policy, status).await?;

    let result = match &plan.phase {
        Phase::RolledOut => "rolled-out",
        Phase::Progressing => "progressing",
        Phase::RolledBack(_) => "rolled-back",
        Phase::Stalled(_) => "stalled",
    };
    ctx.metrics.reconciled(result, started.elapsed());
    Ok(match plan.phase {
        Phase::Progressing => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

async fn apply_finalizers(
    api: &Api<ClusterDNSPolicy>,
    name: &str,
    finalizers: &[&str],
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "dnspolicy.dev/v1alpha1",
        "kind": "ClusterDNSPolicy",
        "metadata": {"name": name, "finalizers": finalizers},
    });
    match api
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to hold.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads the target, plans, and carries out the plan. Events go to every
/// policy of the target that the plan concerns.
async fn plan_and_apply(
    ctx: &Context,
    target: &CoreDnsTarget,
    merged: &MergedPolicies,
    rollout: RolloutMode,
    siblings: &[Arc<ClusterDNSPolicy>],
) -> Result<TargetPlan, Error> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let deployments: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &target.deployment_namespace());
    let cm = cms.get_opt(&target.config_map).await?;
    let Some(cm) = cm else {
        return Ok(stalled_plan(
            "TargetNotFound",
            format!(
                "ConfigMap {}/{} not found; spec.target names the CoreDNS to configure",
                target.namespace, target.config_map
            ),
        ));
    };
    let Some(deployment) = deployments.get_opt(&target.deployment).await? else {
        return Ok(stalled_plan(
            "TargetNotFound",
            format!(
                "Deployment {}/{} not found; spec.target names the CoreDNS to configure",
                target.namespace, target.deployment
            ),
        ));
    };
    let custom = cms.get_opt(CUSTOM_CONFIGMAP).await?;

    let cm_view = config_map_view(&cm);
    let custom_view = custom_view(custom.as_ref());
    let deployment_view = deployment_view(&deployment);
    let input = PlanInput {
        merged,
        rollout,
        config_map: &cm_view,
        custom: &custom_view,
        deployment: &deployment_view,
        now: now_secs(),
        rollout_deadline_secs: ctx.settings.rollout_deadline.as_secs() as i64,
        version_override: ctx.settings.coredns_version,
    };
    let plan = plan::plan_target(&input);
    let params = PatchParams::apply(FIELD_MANAGER).force();

    if let Some(write) = &plan.write_config_map {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": target.config_map, "namespace": target.namespace, "annotations": write.annotations},
            "data": {COREFILE_KEY: write.corefile},
        });
        cms.patch(&target.config_map, &params, &Patch::Apply(&patch))
            .await?;
        ctx.metrics.write("configmap");
        // For the crash-safety end-to-end test: die where a crash hurts most,
        // between the Corefile write and the rollout.
        if std::env::var("DNSPOLICY_FAILPOINT").as_deref() == Ok("exit-after-configmap-write") {
            std::process::exit(86);
        }
    }
    if let Some(keys) = &plan.write_custom {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CUSTOM_CONFIGMAP, "namespace": target.namespace},
            "data": keys,
        });
        cms.patch(CUSTOM_CONFIGMAP, &params, &Patch::Apply(&patch))
            .await?;
        ctx.metrics.write("configmap");
    }
    if let Some(hash) = &plan.roll_to {
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": target.deployment, "namespace": target.namespace},
            "spec": {"template": {"metadata": {"annotations": {ANN_TEMPLATE_HASH: hash}}}},
        });
        deployments
            .patch(&target.deployment, &params, &Patch::Apply(&patch))
            .await?;
        ctx.metrics.write("deployment");
        ctx.metrics.rollout("started");
    }
    match &plan.phase {
        Phase::RolledBack(_) => ctx.metrics.rollout("rolled-back"),
        Phase::RolledOut if plan.events.iter().any(|(r, _)| *r == "RolloutFinished") => {
            ctx.metrics.rollout("finished")
        }
        _ => {}
    }
    for (reason, note) in &plan.events {
        let kind = if matches!(*reason, "Rollback" | "DriftCorrected") {
            EventType::Warning
        } else {
            EventType::Normal
        };
        for p in siblings
            .iter()
            .filter(|p| merged.applied.contains(&p.name_any()) || merged.applied.is_empty())
        {
            publish(ctx, p, kind, reason, note).await;
        }
        info!(target = %format!("{}/{}", target.namespace, target.config_map), reason, note, "target changed");
    }
    Ok(plan)
}

fn stalled_plan(reason: &'static str, message: String) -> TargetPlan {
    TargetPlan {
        phase: Phase::Stalled(plan::Refusal { reason, message }),
        desired_hash: None,
        write_config_map: None,
        write_custom: None,
        roll_to: None,
        events: vec![],
    }
}

trait TargetExt {
    fn deployment_namespace(&self) -> String;
}

impl TargetExt for CoreDnsTarget {
    /// The Deployment lives beside its ConfigMap.
    fn deployment_namespace(&self) -> String {
        self.namespace.clone()
    }
}

fn config_map_view(cm: &ConfigMap) -> ConfigMapView {
    let other_corefile_managers = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:data"))
                .and_then(|d| d.get(format!("f:{COREFILE_KEY}")))
                .is_some()
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    ConfigMapView {
        corefile: cm.data.as_ref().and_then(|d| d.get(COREFILE_KEY).cloned()),
        annotations: cm.metadata.annotations.clone().unwrap_or_default(),
        other_corefile_managers,
    }
}

fn custom_view(cm: Option<&ConfigMap>) -> CustomView {
    let Some(cm) = cm else {
        return CustomView::default();
    };
    let owned: Vec<String> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:data"))
                .and_then(|d| d.as_object())
                .cloned()
        })
        .flat_map(|d| {
            d.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let data = cm.data.clone().unwrap_or_default();
    CustomView {
        exists: true,
        managed_keys: data
            .into_iter()
            .filter(|(k, _)| owned.contains(k))
            .collect(),
    }
}

fn deployment_view(d: &Deployment) -> DeploymentView {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    let pod_spec = spec.and_then(|s| s.template.spec.as_ref());
    let image = pod_spec.and_then(|p| {
        p.containers
            .iter()
            .find(|c| c.name == "coredns")
            .or_else(|| p.containers.first())
            .and_then(|c| c.image.clone())
    });
    DeploymentView {
        image,
        template_hash: spec
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(ANN_TEMPLATE_HASH).cloned()),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        total_replicas: status.replicas.unwrap_or(0),
    }
}

/// The status a policy should show. Conditions keep their transition time
/// while their status does not change, so an unchanged world writes nothing.
fn status_for(
    policy: &ClusterDNSPolicy,
    ctx: &Context,
    plan: Option<&TargetPlan>,
    own_problem: Option<(&'static str, String)>,
    merged: Option<&MergedPolicies>,
) -> ClusterDNSPolicyStatus {
    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let mut conds = Conditions::new(&old.conditions, generation);

    match (own_problem, plan.map(|p| &p.phase)) {
        (Some((reason, message)), _) => {
            conds.stalled(reason, &message);
            conds.set("CorefileApplied", false, reason, &message);
        }
        (None, Some(Phase::Stalled(r))) | (None, Some(Phase::RolledBack(r))) => {
            conds.stalled(r.reason, &r.message);
            conds.set("CorefileApplied", false, r.reason, &r.message);
            conds.set("RolledOut", false, r.reason, &r.message);
        }
        (None, Some(Phase::Progressing)) => {
            let msg = "the Corefile is written; CoreDNS is rolling out";
            conds.set("Ready", false, "Progressing", msg);
            conds.set("Reconciling", true, "Progressing", msg);
            conds.set("Stalled", false, "Progressing", msg);
            conds.set(
                "CorefileApplied",
                true,
                "Applied",
                "the Corefile holds this policy's stanzas",
            );
            conds.set("RolledOut", false, "Progressing", msg);
        }
        (None, Some(Phase::RolledOut)) => {
            let msg = "CoreDNS runs the Corefile with this policy's stanzas";
            conds.set("Ready", true, "RolledOut", msg);
            conds.set("Reconciling", false, "RolledOut", msg);
            conds.set("Stalled", false, "RolledOut", msg);
            conds.set(
                "CorefileApplied",
                true,
                "Applied",
                "the Corefile holds this policy's stanzas",
            );
            conds.set("RolledOut", true, "RolledOut", msg);
        }
        (None, None) => {}
    }

    let counts: PolicyCounts = {
        let suffixes: Vec<String> = policy
            .spec
            .foreign_suffixes
            .iter()
            .map(|s| s.suffix.clone())
            .collect();
        let index = ctx.pollution.lock().expect("pollution index lock");
        index.counts(
            &suffixes,
            &policy.spec.node_selector,
            merged
                .map(|m| m.cluster_domain.as_str())
                .unwrap_or(&policy.spec.cluster_domain),
        )
    };
    ClusterDNSPolicyStatus {
        observed_generation: generation,
        conditions: conds.into_vec(),
        corefile_hash: plan
            .and_then(|p| p.desired_hash.clone())
            .or(old.corefile_hash),
        pods: Some(PodCounts {
            total: counts.total,
            polluted: counts.polluted,
        }),
        namespaces: counts
            .namespaces
            .into_iter()
            .map(|(name, pods, polluted)| NamespacePollution {
                name,
                pods,
                polluted,
            })
            .collect(),
    }
}

struct Conditions {
    old: Vec<Condition>,
    new: BTreeMap<String, Condition>,
    generation: Option<i64>,
}

impl Conditions {
    fn new(old: &[Condition], generation: Option<i64>) -> Self {
        Self {
            old: old.to_vec(),
            new: BTreeMap::new(),
            generation,
        }
    }

    fn set(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" }.to_string();
        let last_transition_time = self
            .old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
        self.new.insert(
            type_.to_string(),
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

    fn stalled(&mut self, reason: &str, message: &str) {
        self.set("Ready", false, reason, message);
        self.set("Reconciling", false, reason, message);
        self.set("Stalled", true, reason, message);
    }

    fn into_vec(self) -> Vec<Condition> {
        // Fixed order so equal statuses compare equal.
        [
            "Ready",
            "Reconciling",
            "Stalled",
            "CorefileApplied",
            "RolledOut",
        ]
        .iter()
        .filter_map(|t| {
            self.new
                .get(*t)
                .cloned()
                .or_else(|| self.old.iter().find(|c| c.type_ == *t).cloned())
        })
        .collect()
    }
}

async fn write_status(
    api: &Api<ClusterDNSPolicy>,
    policy: &ClusterDNSPolicy,
    status: ClusterDNSPolicyStatus,
) -> Result<(), Error> {
    if policy.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "dnspolicy.dev/v1alpha1",
        "kind": "ClusterDNSPolicy",
        "status": status,
    });
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    policy: &ClusterDNSPolicy,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}
