//! `forwardToRef`: the objects that publish a suffix's resolver, read into
//! plain addresses before validation, so the pure planner only ever sees
//! `forwardTo` addresses.
//!
//! - `DNSConfig` (`tailscale.com/v1alpha1`, cluster-scoped): Tailscale's
//!   operator runs an in-cluster nameserver for the tailnet and publishes its
//!   address in `status.nameserver.ip`.
//! - `Service`: its ClusterIP.
//!
//! Services are watched by the controller (`Controller::watches`). The
//! DNSConfig CRD may not be installed, so `watch_dns_configs` watches it only
//! while it is served, and checks again every `CRD_RECHECK` when it is not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dnspolicy_crd::{ClusterDNSPolicy, ClusterDNSPolicySpec, ForwardRefKind, ForwardToRef};
use futures::channel::mpsc::Sender;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::Error;

/// How often a missing DNSConfig CRD is looked for again.
pub const CRD_RECHECK: Duration = Duration::from_secs(60);

/// Tailscale's DNSConfig, as the dynamic API addresses it.
pub fn dns_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tailscale.com", "v1alpha1", "DNSConfig"),
        "dnsconfigs",
    )
}

/// A reference that gives no address now; the policy is not Ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.foreignSuffixes[{index}].forwardToRef ({reference}) for {suffix:?}: {why}")]
pub struct Unresolved {
    pub index: usize,
    pub suffix: String,
    pub reference: String,
    pub why: String,
}

/// Each referencing suffix's address (`IP:port`), and the references that
/// gave none.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addresses: BTreeMap<String, String>,
    pub unresolved: Vec<Unresolved>,
}

/// Reads every `forwardToRef` of `spec`. API errors other than "not found"
/// fail the reconcile (retried); a missing object or address is `unresolved`.
pub async fn resolve(client: &Client, spec: &ClusterDNSPolicySpec) -> Result<Resolved, Error> {
    let mut resolved = Resolved::default();
    for (index, entry) in spec.foreign_suffixes.iter().enumerate() {
        let Some(reference) = &entry.forward_to_ref else {
            continue;
        };
        match address_of(client, reference).await? {
            Ok(ip) => {
                let addr = std::net::SocketAddr::new(ip, reference.port());
                resolved
                    .addresses
                    .insert(entry.suffix.clone(), addr.to_string());
            }
            Err(why) => resolved.unresolved.push(Unresolved {
                index,
                suffix: entry.suffix.clone(),
                reference: reference.to_string(),
                why,
            }),
        }
    }
    Ok(resolved)
}

/// The IP the object publishes, or why it publishes none.
async fn address_of(
    client: &Client,
    reference: &ForwardToRef,
) -> Result<Result<std::net::IpAddr, String>, Error> {
    let object = reference.to_string();
    match reference.kind {
        ForwardRefKind::Service => {
            let namespace = reference.namespace.as_deref().unwrap_or("default");
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            let service = match api.get_opt(&reference.name).await {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(Err(format!("{object} does not exist"))),
                Err(e) => return Err(Error::api("get", object)(e)),
            };
            Ok(
                service_address(&service, reference.port())
                    .map_err(|why| format!("{object} {why}")),
            )
        }
        ForwardRefKind::DNSConfig => {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &dns_config_resource());
            let config = match api.get_opt(&reference.name).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(Err(format!("{object} does not exist"))),
                // No such resource: the DNSConfig CRD (Tailscale's operator) is not installed.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Ok(Err(format!(
                        "{object}: the DNSConfig CRD (tailscale.com/v1alpha1) is not installed; install Tailscale's Kubernetes operator or name a Service"
                    )));
                }
                Err(e) => return Err(Error::api("get", object)(e)),
            };
            Ok(dns_config_address(&config).map_err(|why| format!("{object} {why}")))
        }
    }
}

/// A Service's ClusterIP, when it has one and declares `port`.
pub fn service_address(service: &Service, port: u16) -> Result<std::net::IpAddr, String> {
    let spec = service.spec.as_ref();
    let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    if ip.is_empty() || ip == "None" {
        return Err("has no ClusterIP (a headless Service has no single address)".into());
    }
    let declares = spec
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p.port == i32::from(port)));
    if !declares {
        return Err(format!(
            "declares no port {port}; set forwardToRef.port to one of its ports"
        ));
    }
    ip.parse()
        .map_err(|_| format!("has ClusterIP {ip:?}, which is not an IP address"))
}

/// `status.nameserver.ip` of a DNSConfig, as Tailscale's operator writes it.
pub fn dns_config_address(config: &DynamicObject) -> Result<std::net::IpAddr, String> {
    let ip = config
        .data
        .pointer("/status/nameserver/ip")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if ip.is_empty() {
        return Err("publishes no status.nameserver.ip yet (Tailscale's operator writes it once its nameserver runs)".into());
    }
    ip.parse()
        .map_err(|_| format!("publishes status.nameserver.ip {ip:?}, which is not an IP address"))
}

/// The policies whose references name this object.
pub fn policies_referencing(
    store: &Store<ClusterDNSPolicy>,
    kind: ForwardRefKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<ClusterDNSPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| {
            p.spec.foreign_suffixes.iter().any(|f| {
                f.forward_to_ref.as_ref().is_some_and(|r| {
                    r.kind == kind
                        && r.name == name
                        && (kind == ForwardRefKind::DNSConfig
                            || r.namespace.as_deref().unwrap_or("default")
                                == namespace.unwrap_or("default"))
                })
            })
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Triggers the reconcile of the policies that reference a DNSConfig when it
/// changes. The CRD may be absent (no Tailscale operator): then it is looked
/// for again every `CRD_RECHECK`, and a watch that fails (the CRD was
/// removed) falls back to that.
pub async fn watch_dns_configs(
    client: Client,
    store: Store<ClusterDNSPolicy>,
    mut trigger: Sender<ObjectRef<ClusterDNSPolicy>>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &dns_config_resource());
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                info!("watching Tailscale DNSConfigs for forwardToRef");
                // Reconnects within seconds (an apiserver restart); only a
                // CRD that is gone falls back to the slow re-check.
                let mut events = std::pin::pin!(
                    watcher::watcher(api.clone(), watcher::Config::default())
                        .backoff(super::backoff::WatchBackoff::default())
                );
                while let Some(event) = events.next().await {
                    let objects: Vec<Arc<DynamicObject>> = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                            vec![Arc::new(o)]
                        }
                        Ok(watcher::Event::InitApply(o)) => vec![Arc::new(o)],
                        Ok(_) => vec![],
                        Err(e) if crd_gone(&e) => {
                            warn!(error = %e, "DNSConfig watch failed; checking the CRD again later");
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, "DNSConfig watch failed; retrying");
                            vec![]
                        }
                    };
                    for o in objects {
                        for p in policies_referencing(
                            &store,
                            ForwardRefKind::DNSConfig,
                            None,
                            &o.name_any(),
                        ) {
                            if trigger.send(p).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(error = %e, "cannot list DNSConfigs; checking again later"),
        }
        tokio::time::sleep(CRD_RECHECK).await;
    }
}

/// The watch failed because DNSConfigs are no longer served (404).
fn crd_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(cluster_ip: &str, ports: &[i32]) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "corp-dns", "namespace": "dns"},
            "spec": {"clusterIP": cluster_ip, "ports": ports.iter().map(|p| json!({"port": p})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    #[test]
    fn a_service_gives_its_cluster_ip_when_it_declares_the_port() {
        assert_eq!(
            service_address(&service("10.96.0.77", &[53]), 53).unwrap(),
            "10.96.0.77".parse::<std::net::IpAddr>().unwrap()
        );
        assert!(
            service_address(&service("10.96.0.77", &[53]), 5353)
                .unwrap_err()
                .contains("no port 5353")
        );
        assert!(
            service_address(&service("None", &[53]), 53)
                .unwrap_err()
                .contains("headless")
        );
    }

    #[test]
    fn a_dns_config_gives_status_nameserver_ip() {
        let mut config = DynamicObject::new("ts-dns", &dns_config_resource());
        assert!(
            dns_config_address(&config)
                .unwrap_err()
                .contains("status.nameserver.ip")
        );
        config.data = json!({"status": {"nameserver": {"ip": "10.96.12.34"}}});
        assert_eq!(
            dns_config_address(&config).unwrap(),
            "10.96.12.34".parse::<std::net::IpAddr>().unwrap()
        );
    }
}
