//! The watches that feed the pollution index: Pods and Nodes, folded into
//! `PollutionIndex` as events arrive (the index keeps each policy's counts
//! up to date), and a once-a-second tick that reads the counts when
//! something changed, publishes them to the metrics, and wakes the policies
//! whose counts changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dnspolicy_crd::ClusterDNSPolicy;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::index::{NodeFacts, PolicyCounts, PollutionIndex, node_facts, pod_facts, policy_counts};
use crate::controller::backoff::WatchBackoff;
use crate::metrics::Metrics;

/// What the last count saw: the index's change number and each policy's
/// (name, generation).
type CountedAt = (u64, Vec<(String, Option<i64>)>);

/// Folds pod and node watches into `index`, and every second reads each
/// policy's counts (O(namespaces); a policy new to the index or changed is
/// counted once over every pod), publishes them to the metric, and asks for
/// a reconcile of each policy whose counts changed.
pub async fn watch(
    client: Client,
    index: Arc<Mutex<PollutionIndex>>,
    policies: Store<ClusterDNSPolicy>,
    mut trigger: futures::channel::mpsc::Sender<ObjectRef<ClusterDNSPolicy>>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(watch_pods(Api::<Pod>::all(client.clone()), index.clone()));
    tokio::spawn(watch_nodes(Api::<Node>::all(client), index.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut counted_at: Option<CountedAt> = None;
    // Each policy's counts as last published.
    let mut latest: HashMap<String, PolicyCounts> = HashMap::new();
    loop {
        tick.tick().await;
        let policies = policies.state();
        let counted: HashMap<String, PolicyCounts> = {
            let mut index = index.lock().expect("pollution index lock");
            // Counts change only with the facts or the policies' specs.
            let mut specs: Vec<(String, Option<i64>)> = policies
                .iter()
                .map(|p| (p.name_any(), p.metadata.generation))
                .collect();
            specs.sort();
            let now = (index.changes(), specs);
            if counted_at.as_ref() == Some(&now) {
                continue;
            }
            counted_at = Some(now);
            metrics.watched_pods(index.pod_count());
            index.retain_policies(|name| policies.iter().any(|p| p.name_any() == name));
            policies
                .iter()
                .map(|p| (p.name_any(), policy_counts(&mut index, p)))
                .collect()
        };
        // A deleted policy's series and counts go with it.
        for gone in latest.keys().filter(|n| !counted.contains_key(*n)) {
            metrics.forget_policy(gone);
        }
        let changed: Vec<ObjectRef<ClusterDNSPolicy>> = policies
            .iter()
            .filter(|p| latest.get(&p.name_any()) != counted.get(&p.name_any()))
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect();
        for (name, counts) in &counted {
            metrics.polluted_pods(name, counts.polluted);
        }
        latest = counted;
        for r in changed {
            if trigger.send(r).await.is_err() {
                return;
            }
        }
    }
}

async fn watch_pods(api: Api<Pod>, index: Arc<Mutex<PollutionIndex>>) {
    // A relist is gathered in an index of its own (no policies: no counting
    // yet), then swapped in: status never shows a half-listed cluster.
    let mut relist: Option<PollutionIndex> = None;
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .backoff(WatchBackoff::default())
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => relist = Some(PollutionIndex::default()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(r) = relist.as_mut() {
                    r.apply_pod(
                        &pod.namespace().unwrap_or_default(),
                        &pod.name_any(),
                        pod_facts(&pod),
                    );
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = relist.take() {
                    index.lock().expect("pollution index lock").replace_pods(r);
                }
            }
            Ok(watcher::Event::Apply(pod)) => {
                index.lock().expect("pollution index lock").apply_pod(
                    &pod.namespace().unwrap_or_default(),
                    &pod.name_any(),
                    pod_facts(&pod),
                )
            }
            Ok(watcher::Event::Delete(pod)) => index
                .lock()
                .expect("pollution index lock")
                .delete_pod(&pod.namespace().unwrap_or_default(), &pod.name_any()),
            Err(e) => warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

async fn watch_nodes(api: Api<Node>, index: Arc<Mutex<PollutionIndex>>) {
    let mut relist: Option<HashMap<String, NodeFacts>> = None;
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .backoff(WatchBackoff::default())
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => relist = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let Some(r) = relist.as_mut() {
                    r.insert(node.name_any(), node_facts(&node));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = relist.take() {
                    index.lock().expect("pollution index lock").replace_nodes(r);
                }
            }
            Ok(watcher::Event::Apply(node)) => index
                .lock()
                .expect("pollution index lock")
                .apply_node(&node.name_any(), node_facts(&node)),
            Ok(watcher::Event::Delete(node)) => index
                .lock()
                .expect("pollution index lock")
                .delete_node(&node.name_any()),
            Err(e) => warn!(error = %e, "node watch failed; retrying"),
        }
    }
}
