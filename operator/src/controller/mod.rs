//! The controller: one policy's reconcile is a pipeline you can read on one
//! screen (`reconcile`): dereference -> validate -> plan -> apply -> status.
//! Validation and planning are the pure core's (`dnspolicy_dns`); the status
//! is a pure function (`status`); the target's I/O is in `target`;
//! `forwardToRef` objects are read into addresses in `references`, and the
//! forward targets are probed in `reachability`.

pub(crate) mod backoff;
mod reachability;
mod references;
mod status;
mod target;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dnspolicy_crd::vocabulary::{
    API_VERSION, EventReason, FIELD_MANAGER, FINALIZER, KIND, Reason, condition,
};
use dnspolicy_crd::{
    ClusterDNSPolicy, ClusterDNSPolicySpec, ClusterDNSPolicyStatus, CoreDnsTarget, ForwardRefKind,
    RolloutMode,
};
use dnspolicy_dns::nodelocal;
use dnspolicy_dns::plan::{self, CUSTOM_CONFIGMAP, Phase, PlanInput, TargetPlan};
use dnspolicy_dns::policy::{self, MergedPolicies, ValidPolicy};
use dnspolicy_dns::version::CoreDnsVersion;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

pub use status::{Finding, ForwardHealth, policy_status, warnings_message};

use crate::metrics::Metrics;
use crate::pollution::{PollutionIndex, policy_counts};

/// A reconcile that could not finish; retried by `error_policy`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {verb} {object}: {source}")]
    Api {
        verb: &'static str,
        /// e.g. `ConfigMap kube-system/coredns`
        object: String,
        #[source]
        source: kube::Error,
    },
    /// A watched cache that `forwardToRef` is read from holds no complete
    /// list yet: a reference cannot be judged missing.
    #[error("the {cache} cache that forwardToRef is resolved from is not synced: {why}")]
    NotSynced { cache: &'static str, why: String },
}

impl Error {
    /// Wraps an API error with what was being done to which object.
    fn api(verb: &'static str, object: String) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Api {
            verb,
            object,
            source,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { .. } => "kube",
            Error::NotSynced { .. } => "cache",
        }
    }
}

/// Settings of `dnspolicy-operator run` the controller needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rollout_deadline: Duration,
    pub coredns_version: Option<CoreDnsVersion>,
    /// The namespace whose ConfigMaps and Deployments are watched for drift.
    pub watch_namespace: String,
    /// How long after a write every node's NodeLocal DNSCache is taken to
    /// run it (kubelet's ConfigMap sync plus the `reload` interval).
    pub nodelocal_reload_window: Duration,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub policies: Store<ClusterDNSPolicy>,
    /// Pods and nodes folded from watches, with each policy's counts kept
    /// up to date; reading them is O(namespaces).
    pub pollution: Arc<Mutex<PollutionIndex>>,
    /// Consecutive failed reconciles by policy, for the retry backoff.
    pub failures: Mutex<std::collections::HashMap<String, u32>>,
    /// The watched Services and DNSConfigs `forwardToRef` is resolved from.
    pub references: references::Caches,
    /// The forward targets' last probes.
    pub probes: reachability::Probes,
    /// The `Warnings` message last published per policy: the policy in the
    /// store may not carry the status written a moment ago yet.
    pub warned: Mutex<std::collections::HashMap<String, String>>,
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
        .with_config(ControllerConfig::default().concurrency(1))
        // Resume within seconds after an apiserver outage (see WatchBackoff).
        .trigger_backoff(backoff::WatchBackoff::default());
    let store = controller.store();
    let pollution = Arc::new(Mutex::new(PollutionIndex::default()));
    // Pod churn that changes a policy's counts triggers its reconcile.
    let (trigger_tx, trigger_rx) =
        futures::channel::mpsc::channel::<ObjectRef<ClusterDNSPolicy>>(256);
    tokio::spawn(crate::pollution::watch(
        client.clone(),
        pollution.clone(),
        store.clone(),
        trigger_tx.clone(),
        metrics.clone(),
    ));
    // forwardToRef is resolved from these caches; a changed address
    // re-renders the policies that reference it.
    let (services, service_cache) = kube::runtime::reflector::store::<Service>();
    let (dns_configs, dns_config_cache, dns_config_crd, dns_config_crd_tx) =
        references::dns_config_cache();
    let recheck_crd = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(references::watch_dns_configs(
        client.clone(),
        store.clone(),
        dns_config_cache,
        dns_config_crd_tx,
        recheck_crd.clone(),
        trigger_tx,
    ));

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), FIELD_MANAGER.into()),
        metrics,
        settings,
        policies: store.clone(),
        pollution,
        references: references::Caches {
            services,
            dns_configs,
            dns_config_crd,
            recheck_crd,
            sync_wait: references::SYNC_WAIT,
        },
        failures: Mutex::default(),
        probes: reachability::Probes::default(),
        warned: Mutex::default(),
    });
    let cm_store = store.clone();
    let deploy_store = store.clone();
    let service_store = store.clone();
    controller
        .watches(
            config_maps,
            watcher::Config::default(),
            move |cm: ConfigMap| {
                let name = cm.metadata.name.as_deref();
                policies_targeting(&cm_store, cm.namespace().as_deref(), |t| {
                    Some(t.config_map.as_str()) == name
                        || name == Some(CUSTOM_CONFIGMAP)
                        || name.is_some_and(|n| nodelocal::CONFIG_MAPS.contains(&n))
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
        // forwardToRef Services: a recreated Service has a new ClusterIP.
        .watches_stream(
            references::service_watch(client.clone(), service_cache),
            move |svc: Service| {
                references::policies_referencing(
                    &service_store,
                    ForwardRefKind::Service,
                    svc.namespace().as_deref(),
                    &svc.name_any(),
                )
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
    let failures = {
        let mut f = ctx.failures.lock().expect("failures lock");
        let n = f.entry(policy.name_any()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff::retry_delay(failures, backoff::jitter_fraction());
    warn!(policy = %policy.name_any(), error = %error, failures, retry_in = ?delay, "reconcile error; retrying");
    ctx.metrics.reconcile_failure(error.metric_label());
    Action::requeue(delay)
}

/// Runs the pipeline; a success clears the policy's retry backoff.
async fn reconcile(policy: Arc<ClusterDNSPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = policy.name_any();
    let result = reconcile_policy(policy, ctx.clone()).await;
    if result.is_ok() {
        ctx.failures.lock().expect("failures lock").remove(&name);
    }
    result
}

/// One policy's reconcile. The target-wide part (plan and apply) is
/// idempotent, so whichever policy of a target runs it, the result is the same.
async fn reconcile_policy(
    policy: Arc<ClusterDNSPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let name = policy.name_any();
    let deleting = policy.metadata.deletion_timestamp.is_some();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }

    // 1. dereference: the live policies that share this target, their
    //    forwardToRef objects read into addresses from the watched caches
    let target = policy.spec.target.clone();
    let siblings = live_policies_of(&ctx.policies, &target);
    let caches = ctx
        .references
        .synced_for(siblings.iter().map(|p| &p.spec))
        .await?;
    let mut specs = Vec::with_capacity(siblings.len());
    let mut own_unresolved = Vec::new();
    for p in &siblings {
        let resolved = references::resolve(&p.spec, caches);
        specs.push((
            p.name_any(),
            policy::resolve_forward_refs(&p.spec, &resolved.addresses),
        ));
        if p.name_any() == name {
            own_unresolved = resolved.unresolved;
        }
    }

    // 2. validate (pure), before anything is written for this policy
    let (valid, own_invalid) = validate(&specs, &name);
    if let Some(message) = own_invalid {
        write_status(&ctx, &policy, Finding::Invalid { message: &message }).await?;
        publish(&ctx, &policy, EventReason::InvalidSpec, &message).await;
        ctx.metrics.reconciled("invalid", started.elapsed());
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer {
        add_finalizer(&ctx, &name).await?;
        target::failpoint("exit-after-finalizer-add");
    }

    // 3. plan (pure) over the target's objects
    let merged = policy::merge(&valid);
    let rollout = rollout_mode(&siblings);
    let observed = target::read(&ctx.client, &target).await?;
    // Every DNS path must be covered before Ready: NodeLocal DNSCache too.
    let now = chrono::Utc::now().timestamp();
    let window = ctx.settings.nodelocal_reload_window.as_secs() as i64;
    let node_local: Vec<(String, nodelocal::NodeLocalPlan)> = observed
        .as_ref()
        .map(|o| {
            o.node_local
                .iter()
                .map(|path| {
                    let plan = nodelocal::plan_path(path, &merged, now, window);
                    (path.config_map.clone(), plan)
                })
                .collect()
        })
        .unwrap_or_default();
    let plan = match observed {
        Ok(observed) => plan::plan_target(&PlanInput {
            merged: &merged,
            rollout,
            config_map: &observed.config_map,
            custom: &observed.custom,
            deployment: &observed.deployment,
            now,
            rollout_deadline_secs: ctx.settings.rollout_deadline.as_secs() as i64,
            version_override: ctx.settings.coredns_version,
            cluster_dns: observed.cluster_dns,
            previously_applied: siblings
                .iter()
                .any(|p| has_condition(p, condition::COREFILE_APPLIED, None)),
            stood_down: siblings.iter().find_map(|p| stood_down_message(p)),
        }),
        Err(missing) => TargetPlan::stalled(Reason::TargetNotFound, missing.to_string()),
    };

    // 4. apply, and tell the policies of the target
    if deleting {
        target::failpoint("exit-during-delete-before-restore");
    }
    target::apply(&ctx.client, &ctx.metrics, &target, &plan).await?;
    for (config_map, write) in node_local
        .iter()
        .filter_map(|(cm, p)| Some((cm, p.write.as_ref()?)))
    {
        target::apply_node_local(&ctx.client, &ctx.metrics, config_map, write).await?;
    }
    report(&ctx, &target, &plan, &merged, &siblings).await;
    report_node_local(&ctx, &node_local, &merged, &siblings).await;

    if deleting {
        if plan.writes() || !matches!(plan.phase, Phase::Stalled(_)) || merged.applied.is_empty() {
            remove_finalizer(&ctx, &policy).await?;
            info!(policy = %name, "finalizer removed after the target was re-rendered without it");
        }
        ctx.metrics.reconciled("deleted", started.elapsed());
        return Ok(Action::await_change());
    }

    // 5. status (pure), written only when it changed
    let conflict = merged.conflicts.iter().find(|c| c.policy == name);
    if let Some(c) = conflict.filter(|_| !already_stalled_by(&policy, Reason::Conflict)) {
        publish(&ctx, &policy, EventReason::Conflict, &c.message).await;
    }
    let probed = forward_health(&ctx, &name, &merged, &plan.phase, &own_unresolved).await;
    let forward = probed.as_ref().map(|(health, _)| health.as_health());
    if let Some(f) = forward {
        publish_forward_change(&ctx, &policy, f).await;
    }
    if conflict.is_none() {
        publish_warnings_change(&ctx, &policy, &plan).await;
    }
    let config_map = format!("{}/{}", target.namespace, target.config_map);
    let finding = Finding::Planned {
        plan: &plan,
        conflict: conflict.map(|c| c.message.as_str()),
        config_map: &config_map,
        node_local: &node_local,
        forward,
    };
    write_status(&ctx, &policy, finding).await?;

    let result = match &plan.phase {
        Phase::RolledOut => "rolled-out",
        Phase::Progressing => "progressing",
        Phase::RolledBack(_) => "rolled-back",
        Phase::Stalled(_) => "stalled",
        Phase::Unavailable(_) => "unavailable",
    };
    ctx.metrics.reconciled(result, started.elapsed());
    // Look again when the caches have had their reload window, or when the
    // next forward probe is due.
    let loading = node_local.iter().find_map(|(_, p)| match p.coverage {
        nodelocal::Coverage::Loading { seconds } => {
            Some(Duration::from_secs(seconds.max(1) as u64))
        }
        _ => None,
    });
    let next_probe = probed.and_then(|(_, next)| next);
    let later = [loading, next_probe].into_iter().flatten().min();
    Ok(match (plan.phase, later) {
        (Phase::Progressing, _) => Action::requeue(Duration::from_secs(1)),
        // Pods coming back are seen through the Deployment watch too.
        (Phase::Unavailable(_), _) => Action::requeue(Duration::from_secs(10)),
        (_, Some(after)) => Action::requeue(after),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// The `ForwardTargetsReachable` finding, owned.
struct ForwardFinding {
    answering: bool,
    reason: Reason,
    message: String,
}

impl ForwardFinding {
    fn as_health(&self) -> ForwardHealth<'_> {
        ForwardHealth {
            answering: self.answering,
            reason: self.reason,
            message: &self.message,
        }
    }
}

/// Whether real hosts in this policy's suffixes reach a resolver: its
/// forwardToRefs resolved, and (once CoreDNS runs the Corefile) each of its
/// forward targets answered a probe. `None` when it has no forward targets.
/// The second value is when the next probe is due.
async fn forward_health(
    ctx: &Context,
    name: &str,
    merged: &MergedPolicies,
    phase: &Phase,
    unresolved: &[references::Unresolved],
) -> Option<(ForwardFinding, Option<Duration>)> {
    let own: Vec<(String, std::net::SocketAddr)> = merged
        .rules
        .iter()
        .filter(|r| r.policy == name)
        .flat_map(|r| r.forward_to.iter().map(|t| (r.suffix.clone(), t.0)))
        .collect();
    if let Some(u) = unresolved.first() {
        let finding = ForwardFinding {
            answering: false,
            reason: Reason::ForwardRefUnresolved,
            message: format!(
                "{u}; real hosts in {:?} resolve as they did before the policy until it does",
                u.suffix
            ),
        };
        // Re-read on the same schedule as a silent target.
        return Some((finding, Some(reachability::FIRST_RETRY)));
    }
    if own.is_empty() {
        ctx.metrics.forward_targets(name, &[]);
        return None;
    }
    if !matches!(phase, Phase::RolledOut) {
        return None;
    }
    let now = Instant::now();
    let states = futures::future::join_all(
        own.iter()
            .map(|(suffix, target)| ctx.probes.check(suffix, *target, now)),
    )
    .await;
    let probed: Vec<(String, String, bool)> = own
        .iter()
        .zip(&states)
        .map(|((s, t), st)| (s.clone(), t.to_string(), st.answering))
        .collect();
    ctx.metrics.forward_targets(name, &probed);
    let next = states
        .iter()
        .map(|s| s.next_due.saturating_duration_since(Instant::now()))
        .min()
        .map(|d| d.max(Duration::from_secs(1)));
    let finding = match probed.iter().find(|(_, _, answering)| !answering) {
        Some((suffix, target, _)) => ForwardFinding {
            answering: false,
            reason: Reason::ForwardTargetUnreachable,
            message: format!(
                "forward target {target} for {suffix:?} did not answer a query for {suffix} within {}s: real hosts in {suffix} do not resolve",
                reachability::PROBE_TIMEOUT.as_secs()
            ),
        },
        None => ForwardFinding {
            answering: true,
            reason: Reason::ForwardTargetsAnswer,
            message: format!(
                "every forward target answered: {}",
                probed
                    .iter()
                    .map(|(s, t, _)| format!("{s} -> {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Some((finding, next))
}

/// A Warning Event when a forward target stops answering (or a reference
/// stops resolving), a Normal one when it answers again: once per change.
async fn publish_forward_change(ctx: &Context, policy: &ClusterDNSPolicy, f: ForwardHealth<'_>) {
    let old = policy.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::FORWARD_TARGETS_REACHABLE)
    });
    let changed = old.is_none_or(|c| (c.status == "True") != f.answering || c.message != f.message);
    let reason = match (f.answering, f.reason) {
        (true, _) => EventReason::ForwardTargetAnswers,
        (false, Reason::ForwardRefUnresolved) => EventReason::ForwardRefUnresolved,
        (false, _) => EventReason::ForwardTargetUnreachable,
    };
    // A first probe that answers is not news.
    if changed && (!f.answering || old.is_some_and(|c| c.status == "False")) {
        publish(ctx, policy, reason, f.message).await;
    }
}

/// A Warning Event when the planner's notes change to something new: not on
/// every reconcile, and not when they go away (the condition does). Judged
/// against the status and against what this process last published, since
/// the next reconcile may see the policy before its new status.
async fn publish_warnings_change(ctx: &Context, policy: &ClusterDNSPolicy, plan: &TargetPlan) {
    let name = policy.name_any();
    let Some(message) = warnings_message(plan) else {
        ctx.warned.lock().expect("warned lock").remove(&name);
        return;
    };
    let shown = policy.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::WARNINGS && c.status == "True" && c.message == message)
    });
    let published = ctx.warned.lock().expect("warned lock").get(&name) == Some(&message);
    if !shown && !published {
        publish(ctx, policy, EventReason::PlanWarning, &message).await;
    }
    ctx.warned
        .lock()
        .expect("warned lock")
        .insert(name, message);
}

fn live_policies_of(
    store: &Store<ClusterDNSPolicy>,
    target: &CoreDnsTarget,
) -> Vec<Arc<ClusterDNSPolicy>> {
    store
        .state()
        .into_iter()
        .filter(|p| &p.spec.target == target && p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The valid policies, and the message when `own` is not one of them.
/// Another policy's bad spec is its own reconcile's business.
fn validate(
    specs: &[(String, ClusterDNSPolicySpec)],
    own: &str,
) -> (Vec<ValidPolicy>, Option<String>) {
    let mut valid = Vec::new();
    let mut own_invalid = None;
    for (name, spec) in specs {
        match policy::validate(name, spec) {
            Ok(v) => valid.push(v),
            Err(e) if name == own => own_invalid = Some(e.to_string()),
            Err(_) => {}
        }
    }
    (valid, own_invalid)
}

/// Restart when any policy of the target asks for it, or none is left (the
/// restored Corefile must reach CoreDNS too).
fn rollout_mode(siblings: &[Arc<ClusterDNSPolicy>]) -> RolloutMode {
    if siblings.is_empty()
        || siblings
            .iter()
            .any(|p| p.spec.rollout == RolloutMode::Restart)
    {
        RolloutMode::Restart
    } else {
        RolloutMode::None
    }
}

fn already_stalled_by(policy: &ClusterDNSPolicy, reason: Reason) -> bool {
    has_condition(policy, condition::STALLED, Some(reason))
}

/// The policy's status has condition `type_` True (with `reason`, if given).
fn has_condition(policy: &ClusterDNSPolicy, type_: &str, reason: Option<Reason>) -> bool {
    policy.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == type_ && c.status == "True" && reason.is_none_or(|r| r == c.reason.as_str())
        })
    })
}

/// The `ForeignOwner` message the policy shows for its current spec: the
/// stand-down lasts until the spec changes.
fn stood_down_message(policy: &ClusterDNSPolicy) -> Option<String> {
    let status = policy.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == condition::STALLED
                && c.status == "True"
                && Reason::ForeignOwner == c.reason.as_str()
                && c.observed_generation == policy.metadata.generation
        })
        .map(|c| c.message.clone())
}

/// Metrics, logs and Events for what the plan did, on every policy of the
/// target whose rules it carries.
async fn report(
    ctx: &Context,
    target: &CoreDnsTarget,
    plan: &TargetPlan,
    merged: &MergedPolicies,
    siblings: &[Arc<ClusterDNSPolicy>],
) {
    match &plan.phase {
        Phase::RolledBack(_) => ctx.metrics.rollout("rolled-back"),
        Phase::RolledOut
            if plan
                .events
                .iter()
                .any(|(r, _)| *r == EventReason::RolloutFinished) =>
        {
            ctx.metrics.rollout("finished")
        }
        _ => {}
    }
    // A refusal is told once, when a policy first stalls on it (the policy's
    // Stalled condition then carries the same reason), not every reconcile.
    if let Phase::Stalled(refusal) = &plan.phase {
        let note = format!("{}: {}", refusal.reason, refusal.message);
        for p in siblings
            .iter()
            .filter(|p| merged.applied.contains(&p.name_any()) || merged.applied.is_empty())
            .filter(|p| !already_stalled_by(p, refusal.reason))
        {
            publish(ctx, p, EventReason::Refused, &note).await;
        }
    }
    for (reason, note) in &plan.events {
        for p in siblings
            .iter()
            .filter(|p| merged.applied.contains(&p.name_any()) || merged.applied.is_empty())
        {
            publish(ctx, p, *reason, note).await;
        }
        info!(target = %format!("{}/{}", target.namespace, target.config_map), reason = %reason, note, "target changed");
    }
}

/// Events for what the node-local plans did or refused. A refusal is told
/// once, when a policy first stalls on it, not on every periodic reconcile.
async fn report_node_local(
    ctx: &Context,
    node_local: &[(String, nodelocal::NodeLocalPlan)],
    merged: &MergedPolicies,
    siblings: &[Arc<ClusterDNSPolicy>],
) {
    for (config_map, (reason, note)) in node_local
        .iter()
        .filter_map(|(cm, p)| Some((cm, p.event.as_ref()?)))
    {
        for p in siblings
            .iter()
            .filter(|p| merged.applied.contains(&p.name_any()) || merged.applied.is_empty())
            .filter(|p| {
                *reason != EventReason::NodeLocalNotCovered
                    || !already_stalled_by(p, Reason::NodeLocalNotCovered)
            })
        {
            publish(ctx, p, *reason, note).await;
        }
        info!(config_map = %config_map, reason = %reason, note, "node-local cache");
    }
}

/// Drops dnspolicy's finalizer with a merge patch of the list without it,
/// guarded by the resourceVersion read (a 409 retries with a fresh copy), so
/// another controller's finalizer is kept. Not server-side apply: while the
/// CRD is being deleted (`kubectl delete -k manifests/`) the apiserver
/// refuses an apply patch as a create ("create not allowed while custom
/// resource definition is terminating"), which would leave the policy stuck.
async fn remove_finalizer(ctx: &Context, policy: &ClusterDNSPolicy) -> Result<(), Error> {
    let name = policy.name_any();
    let api: Api<ClusterDNSPolicy> = Api::all(ctx.client.clone());
    let kept: Vec<&String> = policy
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .collect();
    let patch = json!({
        "metadata": {"resourceVersion": policy.resource_version(), "finalizers": kept},
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to hold.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::api(
            "remove the finalizer of",
            format!("{KIND} {name}"),
        )(e)),
    }
}

async fn add_finalizer(ctx: &Context, name: &str) -> Result<(), Error> {
    let api: Api<ClusterDNSPolicy> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "finalizers": [FINALIZER]},
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
        Err(e) => Err(Error::api("set the finalizer of", format!("{KIND} {name}"))(e)),
    }
}

async fn write_status(
    ctx: &Context,
    policy: &ClusterDNSPolicy,
    finding: Finding<'_>,
) -> Result<(), Error> {
    // Kept current by the pod and node watches: O(namespaces) to read.
    let counts = policy_counts(
        &mut ctx.pollution.lock().expect("pollution index lock"),
        policy,
    );
    let status: ClusterDNSPolicyStatus = policy_status(
        policy.status.as_ref(),
        policy.metadata.generation,
        finding,
        &counts,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let name = policy.name_any();
    ctx.metrics.set_policy_ready(
        &name,
        status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::READY && c.status == "True"),
    );
    if policy.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({"apiVersion": API_VERSION, "kind": KIND, "status": status});
    Api::<ClusterDNSPolicy>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::api("write the status of", format!("{KIND} {name}")))?;
    target::failpoint("exit-after-status-write");
    Ok(())
}

async fn publish(ctx: &Context, policy: &ClusterDNSPolicy, reason: EventReason, note: &str) {
    let event = Event {
        type_: if reason.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note.into()),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(error = %e, reason = %reason, "could not publish event");
    }
}
