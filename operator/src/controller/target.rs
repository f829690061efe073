//! The target's objects in and out: read the CoreDNS ConfigMap, the
//! `coredns-custom` ConfigMap and the Deployment into the planner's views,
//! and carry out a plan's writes. Every write is a server-side apply by
//! dnspolicy's one field manager.

use std::collections::BTreeMap;

use dnspolicy_crd::CoreDnsTarget;
use dnspolicy_crd::vocabulary::{FIELD_MANAGER, annotation};
use dnspolicy_dns::nodelocal::{self, NodeLocalPath};
use dnspolicy_dns::plan::{
    COREFILE_KEY, CUSTOM_CONFIGMAP, ClusterDns, ConfigMapView, ConfigMapWrite, CustomView,
    DeploymentView, TargetPlan,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Error;
use crate::metrics::Metrics;

/// The target's objects as the planner sees them.
pub struct Observed {
    pub config_map: ConfigMapView,
    pub custom: CustomView,
    pub deployment: DeploymentView,
    /// The kube-dns Service's IPs and CoreDNS's `-dns.port`: what a
    /// forwardTo must never point back at.
    pub cluster_dns: ClusterDns,
    /// NodeLocal DNSCache ConfigMaps found beside CoreDNS: a second DNS path.
    pub node_local: Vec<NodeLocalPath>,
}

/// The Service in front of CoreDNS, by the name every distribution keeps.
pub const CLUSTER_DNS_SERVICE: &str = "kube-dns";

/// An object `spec.target` names that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object} not found; spec.target names the CoreDNS to configure")]
pub struct TargetMissing {
    /// e.g. `ConfigMap kube-system/coredns`
    pub object: String,
}

/// Reads the target. `Ok(Err(_))` when an object the spec names is missing.
pub async fn read(
    client: &Client,
    target: &CoreDnsTarget,
) -> Result<Result<Observed, TargetMissing>, Error> {
    // The Deployment lives beside its ConfigMap.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &target.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
    let object = |kind: &str, name: &str| format!("{kind} {}/{name}", target.namespace);
    let missing = |kind: &str, name: &str| TargetMissing {
        object: object(kind, name),
    };
    let Some(cm) = cms
        .get_opt(&target.config_map)
        .await
        .map_err(Error::api("get", object("ConfigMap", &target.config_map)))?
    else {
        return Ok(Err(missing("ConfigMap", &target.config_map)));
    };
    let Some(deployment) = deployments
        .get_opt(&target.deployment)
        .await
        .map_err(Error::api("get", object("Deployment", &target.deployment)))?
    else {
        return Ok(Err(missing("Deployment", &target.deployment)));
    };
    let custom = cms
        .get_opt(CUSTOM_CONFIGMAP)
        .await
        .map_err(Error::api("get", object("ConfigMap", CUSTOM_CONFIGMAP)))?;
    let service = Api::<Service>::namespaced(client.clone(), &target.namespace)
        .get_opt(CLUSTER_DNS_SERVICE)
        .await
        .map_err(Error::api("get", object("Service", CLUSTER_DNS_SERVICE)))?;
    let mut node_local = Vec::new();
    for name in nodelocal::CONFIG_MAPS {
        if let Some(cm) = cms
            .get_opt(name)
            .await
            .map_err(Error::api("get", object("ConfigMap", name)))?
        {
            node_local.push(NodeLocalPath {
                config_map: format!("{}/{name}", target.namespace),
                corefile: cm.data.as_ref().and_then(|d| d.get(COREFILE_KEY).cloned()),
                addon_mode: cm
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(nodelocal::ADDON_MANAGER_MODE).cloned()),
                annotations: cm.metadata.annotations.clone().unwrap_or_default(),
            });
        }
    }
    Ok(Ok(Observed {
        node_local,
        config_map: config_map_view(&cm),
        custom: custom_view(custom.as_ref()),
        cluster_dns: ClusterDns {
            service_ips: service_ips(service.as_ref()),
            dns_port: dns_port(&deployment),
        },
        deployment: deployment_view(&deployment),
    }))
}

/// Carries out the plan's writes, in the order that keeps DNS working: the
/// Corefile (and custom keys) first, then the rollout that picks them up.
pub async fn apply(
    client: &Client,
    metrics: &Metrics,
    target: &CoreDnsTarget,
    plan: &TargetPlan,
) -> Result<(), Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &target.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let object = |kind: &str, name: &str| format!("{kind} {}/{name}", target.namespace);

    if let Some(write) = &plan.write_config_map {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": target.config_map, "namespace": target.namespace, "annotations": write.annotations},
            "data": {COREFILE_KEY: write.corefile},
        });
        cms.patch(&target.config_map, &params, &Patch::Apply(&patch))
            .await
            .map_err(Error::api("apply", object("ConfigMap", &target.config_map)))?;
        metrics.write("configmap");
        failpoint("exit-after-configmap-write");
    }
    if let Some(keys) = &plan.write_custom {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CUSTOM_CONFIGMAP, "namespace": target.namespace},
            "data": keys,
        });
        cms.patch(CUSTOM_CONFIGMAP, &params, &Patch::Apply(&patch))
            .await
            .map_err(Error::api("apply", object("ConfigMap", CUSTOM_CONFIGMAP)))?;
        metrics.write("configmap");
    }
    if let Some(hash) = &plan.roll_to {
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": target.deployment, "namespace": target.namespace},
            "spec": {"template": {"metadata": {"annotations": {annotation::TEMPLATE_HASH: hash}}}},
        });
        deployments
            .patch(&target.deployment, &params, &Patch::Apply(&patch))
            .await
            .map_err(Error::api(
                "apply",
                object("Deployment", &target.deployment),
            ))?;
        metrics.write("deployment");
        metrics.rollout("started");
        failpoint("exit-after-rollout-patch");
    }
    Ok(())
}

/// Writes a node-local cache's ConfigMap (`namespace/name`): exactly this
/// Corefile and these dnspolicy annotations, by dnspolicy's field manager.
/// No rollout: the cache's `reload` plugin loads it.
pub async fn apply_node_local(
    client: &Client,
    metrics: &Metrics,
    config_map: &str,
    write: &ConfigMapWrite,
) -> Result<(), Error> {
    let (namespace, name) = config_map
        .split_once('/')
        .expect("node-local paths are read as namespace/name");
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "annotations": write.annotations},
        "data": {COREFILE_KEY: write.corefile},
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::api("apply", format!("ConfigMap {config_map}")))?;
    metrics.write("configmap");
    Ok(())
}

/// For the crash-safety end-to-end tests (`e2e/tests/faults.rs`): exit at
/// once, as `kill -9` would, when `DNSPOLICY_FAILPOINT` names this step of
/// the reconcile. Compiled in only with the test-only `failpoints` feature.
#[cfg(feature = "failpoints")]
pub(super) fn failpoint(name: &str) {
    if std::env::var("DNSPOLICY_FAILPOINT").as_deref() == Ok(name) {
        std::process::exit(86);
    }
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn failpoint(_name: &str) {}

fn service_ips(service: Option<&Service>) -> Vec<std::net::IpAddr> {
    service
        .and_then(|s| s.spec.as_ref())
        .map(|spec| {
            spec.cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CoreDNS's `-dns.port N` / `-dns.port=N`: the port of server keys without one.
fn dns_port(d: &Deployment) -> Option<u16> {
    let containers = &d.spec.as_ref()?.template.spec.as_ref()?.containers;
    let c = containers
        .iter()
        .find(|c| c.name == "coredns")
        .or_else(|| containers.first())?;
    let args: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    args.iter().enumerate().find_map(|(i, a)| {
        let a = a.trim_start_matches('-');
        match a.strip_prefix("dns.port") {
            Some(rest) if rest.starts_with('=') => rest[1..].parse().ok(),
            Some("") => args.get(i + 1)?.parse().ok(),
            _ => None,
        }
    })
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
    let data: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
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
            .and_then(|a| a.get(annotation::TEMPLATE_HASH).cloned()),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        total_replicas: status.replicas.unwrap_or(0),
    }
}
