//! `forwardToRef`: the objects that publish a suffix's resolver, read into
//! plain addresses before validation, so the pure planner only ever sees
//! `forwardTo` addresses.
//!
//! - `DNSConfig` (`tailscale.com/v1alpha1`, cluster-scoped): Tailscale's
//!   operator runs an in-cluster nameserver for the tailnet and publishes its
//!   address in `status.nameserver.ip`.
//! - `Service`: its ClusterIP.
//!
//! References are resolved from reflector caches, not by a GET per reference
//! per reconcile: the Service watch the controller runs anyway
//! (`service_watch`) feeds a `Store<Service>`, and `watch_dns_configs` feeds
//! a `Store<DynamicObject>` of DNSConfigs. The DNSConfig CRD may not be
//! installed, so that watch runs only while it is served, and is looked for
//! again every `CRD_RECHECK` (or at once when a policy names a DNSConfig).
//! A cache is read only once it holds a complete list (`Caches::synced_for`),
//! so nothing is reported missing because it was not listed yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dnspolicy_crd::{ClusterDNSPolicy, ClusterDNSPolicySpec, ForwardRefKind, ForwardToRef};
use futures::channel::mpsc::Sender;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::Error;

/// How often a missing DNSConfig CRD is looked for again.
pub const CRD_RECHECK: Duration = Duration::from_secs(60);

/// How long a reconcile waits for a cache's first complete list before it
/// fails (and is retried): long enough for a start-up list, short enough
/// that one policy does not hold up the others (the controller runs one
/// reconcile at a time).
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

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

/// Whether the DNSConfig CRD is served, and whether its cache holds a
/// complete list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsConfigCrd {
    /// Not looked at yet, or the last look failed with this error.
    Unknown(Option<String>),
    /// The apiserver does not serve `dnsconfigs.tailscale.com`.
    NotServed,
    /// Served; the first list is under way.
    Listing,
    /// Served, and the cache holds a complete list.
    Synced,
}

/// The watched caches references are resolved from.
#[derive(Clone)]
pub struct Caches {
    pub services: Store<Service>,
    pub dns_configs: Store<DynamicObject>,
    pub dns_config_crd: watch::Receiver<DnsConfigCrd>,
    /// Asks `watch_dns_configs` to look for the CRD now.
    pub recheck_crd: Arc<Notify>,
    /// How long a reconcile waits for a cache's first list (`SYNC_WAIT`).
    pub sync_wait: Duration,
}

/// The caches, read once each is complete: what `resolve` looks into.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub services: &'a Store<Service>,
    /// `None`: the DNSConfig CRD is not served.
    pub dns_configs: Option<&'a Store<DynamicObject>>,
}

impl Caches {
    /// Waits (up to `sync_wait` each) for the caches of the kinds `specs`
    /// reference to hold a complete list. A cache that does not is an error,
    /// retried, never a reference reported missing.
    pub async fn synced_for<'a>(
        &'a self,
        specs: impl IntoIterator<Item = &ClusterDNSPolicySpec>,
    ) -> Result<View<'a>, Error> {
        let kinds: Vec<ForwardRefKind> = specs
            .into_iter()
            .flat_map(|s| &s.foreign_suffixes)
            .filter_map(|f| f.forward_to_ref.as_ref().map(|r| r.kind))
            .collect();
        if kinds.contains(&ForwardRefKind::Service) {
            let ready =
                tokio::time::timeout(self.sync_wait, self.services.wait_until_ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                return Err(Error::NotSynced {
                    cache: "Services",
                    why: format!("no complete list within {:?}", self.sync_wait),
                });
            }
        }
        let mut dns_configs = None;
        if kinds.contains(&ForwardRefKind::DNSConfig) {
            let mut crd = self.dns_config_crd.clone();
            let settled = tokio::time::timeout(
                self.sync_wait,
                crd.wait_for(|s| matches!(s, DnsConfigCrd::Synced | DnsConfigCrd::NotServed)),
            )
            .await;
            match settled.as_ref().map(|r| r.as_ref().map(|s| (**s).clone())) {
                Ok(Ok(DnsConfigCrd::Synced)) => dns_configs = Some(&self.dns_configs),
                Ok(Ok(_)) => {
                    // Installed since the last look? Look now; the watch
                    // then triggers the referencing policies.
                    self.recheck_crd.notify_one();
                }
                _ => {
                    let why = match &*self.dns_config_crd.borrow() {
                        DnsConfigCrd::Unknown(Some(e)) => format!("cannot list them: {e}"),
                        _ => format!("no complete list within {:?}", self.sync_wait),
                    };
                    return Err(Error::NotSynced {
                        cache: "DNSConfigs",
                        why,
                    });
                }
            }
        }
        Ok(View {
            services: &self.services,
            dns_configs,
        })
    }
}

/// Reads every `forwardToRef` of `spec` from complete caches: a missing
/// object or address is `unresolved`, naming the field and the object.
pub fn resolve(spec: &ClusterDNSPolicySpec, view: View<'_>) -> Resolved {
    let mut resolved = Resolved::default();
    for (index, entry) in spec.foreign_suffixes.iter().enumerate() {
        let Some(reference) = &entry.forward_to_ref else {
            continue;
        };
        match address_of(view, reference) {
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
    resolved
}

/// The IP the object publishes, or why it publishes none.
fn address_of(view: View<'_>, reference: &ForwardToRef) -> Result<std::net::IpAddr, String> {
    let object = reference.to_string();
    match reference.kind {
        ForwardRefKind::Service => {
            let namespace = reference.namespace.as_deref().unwrap_or("default");
            let key = ObjectRef::new(&reference.name).within(namespace);
            let service = view
                .services
                .get(&key)
                .ok_or_else(|| format!("{object} does not exist"))?;
            service_address(&service, reference.port()).map_err(|why| format!("{object} {why}"))
        }
        ForwardRefKind::DNSConfig => {
            let Some(configs) = view.dns_configs else {
                return Err(format!(
                    "{object}: the DNSConfig CRD (dnsconfigs.tailscale.com, v1alpha1) is not served by the apiserver; install Tailscale's Kubernetes operator or name a Service"
                ));
            };
            let config = configs
                .find(|c| c.name_any() == reference.name)
                .ok_or_else(|| format!("{object} does not exist"))?;
            dns_config_address(&config).map_err(|why| format!("{object} {why}"))
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

/// The controller's Service watch, feeding `writer` (the cache `resolve`
/// reads) on its way to the triggers. Only what resolution and the trigger
/// mapping read is kept: a cluster's Services are many, and their
/// annotations and managed fields are most of their size.
pub fn service_watch(
    client: Client,
    writer: reflector::store::Writer<Service>,
) -> impl Stream<Item = Result<Service, watcher::Error>> + Send + 'static {
    let services: Api<Service> = Api::all(client);
    watcher::watcher(services, watcher::Config::default())
        .modify(keep_address_fields)
        .reflect(writer)
        .touched_objects()
}

/// A Service reduced to its name, ClusterIP and ports.
fn keep_address_fields(service: &mut Service) {
    let meta = &mut service.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    service.spec = service.spec.take().map(|s| ServiceSpec {
        cluster_ip: s.cluster_ip,
        ports: s.ports,
        ..ServiceSpec::default()
    });
    service.status = None;
}

/// A DNSConfig cache and the state of its CRD, with the writer that
/// `watch_dns_configs` feeds and the sender it reports the CRD's state on.
pub fn dns_config_cache() -> (
    Store<DynamicObject>,
    reflector::store::Writer<DynamicObject>,
    watch::Receiver<DnsConfigCrd>,
    watch::Sender<DnsConfigCrd>,
) {
    let writer = reflector::store::Writer::new(dns_config_resource());
    let (crd_tx, crd_rx) = watch::channel(DnsConfigCrd::Unknown(None));
    (writer.as_reader(), writer, crd_rx, crd_tx)
}

/// Feeds the DNSConfig cache and triggers the reconcile of the policies that
/// reference a DNSConfig when it changes. The CRD may be absent (no Tailscale
/// operator): then it is looked for again every `CRD_RECHECK` or when
/// `recheck` is notified, and a watch that fails because the CRD was removed
/// empties the cache and falls back to that.
pub async fn watch_dns_configs(
    client: Client,
    policies: Store<ClusterDNSPolicy>,
    mut cache: reflector::store::Writer<DynamicObject>,
    crd: watch::Sender<DnsConfigCrd>,
    recheck: Arc<Notify>,
    mut trigger: Sender<ObjectRef<ClusterDNSPolicy>>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &dns_config_resource());
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                info!("watching Tailscale DNSConfigs for forwardToRef");
                crd.send_replace(DnsConfigCrd::Listing);
                // Reconnects within seconds (an apiserver restart); only a
                // CRD that is gone falls back to the slow re-check.
                let mut events = std::pin::pin!(
                    watcher::watcher(api.clone(), watcher::Config::default())
                        .backoff(super::backoff::WatchBackoff::default())
                );
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(e) if crd_gone(&e) => {
                            warn!(error = %e, "DNSConfig watch failed; checking the CRD again later");
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, "DNSConfig watch failed; retrying");
                            continue;
                        }
                    };
                    cache.apply_watcher_event(&event);
                    let touched = match event {
                        watcher::Event::Apply(o)
                        | watcher::Event::Delete(o)
                        | watcher::Event::InitApply(o) => Some(o.name_any()),
                        watcher::Event::InitDone => {
                            crd.send_replace(DnsConfigCrd::Synced);
                            None
                        }
                        watcher::Event::Init => None,
                    };
                    let referencing = touched.map(|name| {
                        policies_referencing(&policies, ForwardRefKind::DNSConfig, None, &name)
                    });
                    if send_all(&mut trigger, referencing.unwrap_or_default())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // Gone: nothing stale may resolve, and the policies that
                // name a DNSConfig now say the CRD is not served.
                cache.apply_watcher_event(&watcher::Event::Init);
                cache.apply_watcher_event(&watcher::Event::InitDone);
                crd.send_replace(DnsConfigCrd::NotServed);
                if send_all(
                    &mut trigger,
                    policies_referencing_kind(&policies, ForwardRefKind::DNSConfig),
                )
                .await
                .is_err()
                {
                    return;
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                crd.send_replace(DnsConfigCrd::NotServed);
            }
            Err(e) => {
                warn!(error = %e, "cannot list DNSConfigs; checking again later");
                crd.send_replace(DnsConfigCrd::Unknown(Some(e.to_string())));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CRD_RECHECK) => {}
            () = recheck.notified() => {}
        }
    }
}

/// Sends each policy to the controller; `Err` once the controller is gone.
async fn send_all(
    trigger: &mut Sender<ObjectRef<ClusterDNSPolicy>>,
    policies: Vec<ObjectRef<ClusterDNSPolicy>>,
) -> Result<(), futures::channel::mpsc::SendError> {
    for p in policies {
        trigger.send(p).await?;
    }
    Ok(())
}

/// The policies with any reference of `kind`.
fn policies_referencing_kind(
    store: &Store<ClusterDNSPolicy>,
    kind: ForwardRefKind,
) -> Vec<ObjectRef<ClusterDNSPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| {
            p.spec
                .foreign_suffixes
                .iter()
                .any(|f| f.forward_to_ref.as_ref().is_some_and(|r| r.kind == kind))
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
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

    fn spec(references: &[serde_json::Value]) -> ClusterDNSPolicySpec {
        let suffixes: Vec<_> = references
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"suffix": format!("s{i}.example"), "forwardToRef": r}))
            .collect();
        serde_json::from_value(json!({"foreignSuffixes": suffixes})).unwrap()
    }

    /// A cache that has listed `objects`.
    fn listed<K>(objects: Vec<K>, writer: &mut reflector::store::Writer<K>) -> Store<K>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        writer.as_reader()
    }

    fn dns_config(name: &str, ip: Option<&str>) -> DynamicObject {
        let mut config = DynamicObject::new(name, &dns_config_resource());
        if let Some(ip) = ip {
            config.data = json!({"status": {"nameserver": {"ip": ip}}});
        }
        config
    }

    #[test]
    fn references_resolve_from_the_caches_and_name_the_field_and_object_when_they_do_not() {
        let (_, mut services) = reflector::store::<Service>();
        let services = listed(vec![service("10.96.0.77", &[53, 5353])], &mut services);
        let mut configs = reflector::store::Writer::new(dns_config_resource());
        let configs = listed(
            vec![
                dns_config("ts-dns", Some("10.96.12.34")),
                dns_config("starting", None),
            ],
            &mut configs,
        );
        let view = View {
            services: &services,
            dns_configs: Some(&configs),
        };
        let resolved = resolve(
            &spec(&[
                json!({"kind": "Service", "namespace": "dns", "name": "corp-dns", "port": 5353}),
                json!({"kind": "DNSConfig", "name": "ts-dns"}),
                json!({"kind": "Service", "namespace": "other", "name": "corp-dns"}),
                json!({"kind": "DNSConfig", "name": "gone"}),
                json!({"kind": "DNSConfig", "name": "starting"}),
            ]),
            view,
        );
        assert_eq!(
            resolved.addresses,
            BTreeMap::from([
                ("s0.example".to_string(), "10.96.0.77:5353".to_string()),
                ("s1.example".to_string(), "10.96.12.34:53".to_string()),
            ])
        );
        let messages: Vec<String> = resolved.unresolved.iter().map(|u| u.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0]
                .starts_with("spec.foreignSuffixes[2].forwardToRef (Service other/corp-dns)")
                && messages[0].ends_with("Service other/corp-dns does not exist"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].starts_with("spec.foreignSuffixes[3].forwardToRef (DNSConfig gone)")
                && messages[1].ends_with("DNSConfig gone does not exist"),
            "{}",
            messages[1]
        );
        assert!(
            messages[2].contains("DNSConfig starting publishes no status.nameserver.ip"),
            "{}",
            messages[2]
        );
    }

    #[test]
    fn a_dns_config_reference_without_the_crd_says_the_crd_is_not_served() {
        let (_, mut services) = reflector::store::<Service>();
        let services = listed(vec![], &mut services);
        let view = View {
            services: &services,
            dns_configs: None,
        };
        let resolved = resolve(
            &spec(&[json!({"kind": "DNSConfig", "name": "ts-dns"})]),
            view,
        );
        assert!(resolved.addresses.is_empty());
        let message = resolved.unresolved[0].to_string();
        assert!(
            message.contains("spec.foreignSuffixes[0].forwardToRef")
                && message
                    .contains("DNSConfig CRD (dnsconfigs.tailscale.com, v1alpha1) is not served"),
            "{message}"
        );
    }

    fn caches(
        services: Store<Service>,
        crd: DnsConfigCrd,
    ) -> (Caches, watch::Sender<DnsConfigCrd>) {
        let (dns_configs, _, dns_config_crd, crd_tx) = dns_config_cache();
        crd_tx.send_replace(crd);
        let caches = Caches {
            services,
            dns_configs,
            dns_config_crd,
            recheck_crd: Arc::new(Notify::new()),
            sync_wait: Duration::from_millis(20),
        };
        (caches, crd_tx)
    }

    /// Nothing is judged missing before a cache has listed: the reconcile
    /// fails (and is retried) instead.
    #[tokio::test]
    async fn an_unlisted_cache_is_an_error_never_a_missing_reference() {
        let (unlisted, _writer) = reflector::store::<Service>();
        let (c, _crd) = caches(unlisted, DnsConfigCrd::Listing);
        let service_ref =
            spec(&[json!({"kind": "Service", "namespace": "dns", "name": "corp-dns"})]);
        let dns_config_ref = spec(&[json!({"kind": "DNSConfig", "name": "ts-dns"})]);
        for (s, cache) in [(&service_ref, "Services"), (&dns_config_ref, "DNSConfigs")] {
            match c.synced_for([s]).await {
                Err(Error::NotSynced { cache: got, .. }) => assert_eq!(got, cache),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("{cache}: an unlisted cache was read"),
            }
        }
        // A policy without references waits for nothing.
        assert!(c.synced_for([&spec(&[])]).await.is_ok());
    }

    #[tokio::test]
    async fn listed_caches_are_read_and_an_unserved_crd_is_looked_for_again() {
        let (_, mut writer) = reflector::store::<Service>();
        let services = listed(vec![service("10.96.0.77", &[53])], &mut writer);
        let service_ref =
            spec(&[json!({"kind": "Service", "namespace": "dns", "name": "corp-dns"})]);
        let dns_config_ref = spec(&[json!({"kind": "DNSConfig", "name": "ts-dns"})]);

        let (c, crd) = caches(services, DnsConfigCrd::Synced);
        let view = c.synced_for([&service_ref, &dns_config_ref]).await.unwrap();
        assert!(view.dns_configs.is_some());
        assert_eq!(
            resolve(&service_ref, view).addresses["s0.example"],
            "10.96.0.77:53"
        );

        crd.send_replace(DnsConfigCrd::NotServed);
        let view = c.synced_for([&dns_config_ref]).await.unwrap();
        assert!(view.dns_configs.is_none(), "an unserved CRD reads as none");
        // ...and the DNSConfig watch is asked to look for the CRD now.
        tokio::time::timeout(Duration::from_secs(60), c.recheck_crd.notified())
            .await
            .expect("a recheck was requested");

        crd.send_replace(DnsConfigCrd::Unknown(Some("forbidden".into())));
        let e = c
            .synced_for([&dns_config_ref])
            .await
            .err()
            .expect("an error");
        assert!(e.to_string().contains("cannot list them: forbidden"), "{e}");
    }

    #[test]
    fn a_cached_service_keeps_only_its_name_cluster_ip_and_ports() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "corp-dns", "namespace": "dns",
                "annotations": {"big": "x".repeat(1000)}, "labels": {"app": "dns"}},
            "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 53}], "selector": {"app": "dns"}},
            "status": {"loadBalancer": {}},
        }))
        .unwrap();
        keep_address_fields(&mut s);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "corp-dns", "namespace": "dns"},
                "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 53}]},
            })
        );
        assert_eq!(service_address(&s, 53).unwrap().to_string(), "10.96.0.77");
    }

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
