//! What CoreDNS runs, read from the cluster for `explain --from-cluster`
//! (KUBECONFIG, as kubectl and its plugins do): the policies, their target
//! ConfigMap and Deployment, coredns-custom, a NodeLocal DNSCache ConfigMap
//! beside them, and the kube-dns Service.

use dnspolicy_crd::vocabulary::FIELD_MANAGER;
use dnspolicy_crd::{ClusterDNSPolicy, CoreDnsTarget};
use dnspolicy_dns::nodelocal;
use dnspolicy_dns::plan::{COREFILE_KEY, CUSTOM_CONFIGMAP};
use dnspolicy_dns::version::CoreDnsVersion;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::cli::{CliError, version_arg};
use crate::explain::{ExplainArgs, Inputs, cluster_inputs};

/// The Service in front of CoreDNS, by the name every distribution keeps.
const CLUSTER_DNS_SERVICE: &str = "kube-dns";

pub(crate) async fn read_for_explain(args: &ExplainArgs) -> Result<Inputs, CliError> {
    let client = crate::cli::client().await?;
    let failed =
        |what: String| move |e: kube::Error| CliError::Failed(format!("cannot read {what}: {e}"));
    let policies = Api::<ClusterDNSPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(failed("the ClusterDNSPolicies".into()))?
        .items;
    // Every policy names its target; with none, the default (kubeadm's).
    let mut targets: Vec<CoreDnsTarget> = policies.iter().map(|p| p.spec.target.clone()).collect();
    targets.sort();
    targets.dedup();
    let target = match targets.as_slice() {
        [] => CoreDnsTarget::default(),
        [one] => one.clone(),
        more => {
            let names: Vec<String> = more
                .iter()
                .map(|t| format!("{}/{}", t.namespace, t.config_map))
                .collect();
            return Err(CliError::Invalid(format!(
                "the policies target several CoreDNS ConfigMaps ({}); --from-cluster explains one: copy one out and use --corefile",
                names.join(", ")
            )));
        }
    };
    let ns = target.namespace.as_str();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let object = |kind: &str, name: &str| format!("{kind} {ns}/{name}");
    let cm = cms
        .get_opt(&target.config_map)
        .await
        .map_err(failed(object("ConfigMap", &target.config_map)))?
        .ok_or_else(|| {
            CliError::Invalid(format!(
                "{} not found; it is where CoreDNS's Corefile should be",
                object("ConfigMap", &target.config_map)
            ))
        })?;
    let corefile = corefile_of(&cm).ok_or_else(|| {
        CliError::Invalid(format!(
            "{} has no {COREFILE_KEY:?} key",
            object("ConfigMap", &target.config_map)
        ))
    })?;
    let (version, version_from) = match &args.coredns_version {
        Some(v) => (version_arg(Some(v))?, "--coredns-version".to_string()),
        None => {
            let image = Api::<Deployment>::namespaced(client.clone(), ns)
                .get_opt(&target.deployment)
                .await
                .map_err(failed(object("Deployment", &target.deployment)))?
                .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone())
                .ok_or_else(|| {
                    CliError::Invalid(format!(
                        "{} is missing or names no image; give --coredns-version",
                        object("Deployment", &target.deployment)
                    ))
                })?;
            let version = CoreDnsVersion::from_image(&image).map_err(|e| {
                CliError::Invalid(format!("image {image:?}: {e}; give --coredns-version"))
            })?;
            (version, format!("image {image}"))
        }
    };
    let custom = cms
        .get_opt(CUSTOM_CONFIGMAP)
        .await
        .map_err(failed(object("ConfigMap", CUSTOM_CONFIGMAP)))?;
    let custom_keys = custom
        .as_ref()
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    let managed_custom_keys = custom
        .as_ref()
        .map(keys_owned_by_dnspolicy)
        .unwrap_or_default();
    let mut node_local = None;
    for name in nodelocal::CONFIG_MAPS {
        if let Some(cm) = cms
            .get_opt(name)
            .await
            .map_err(failed(object("ConfigMap", name)))?
            && let Some(text) = corefile_of(&cm)
        {
            node_local = Some((object("ConfigMap", name), text));
            break;
        }
    }
    let cluster_dns_ips = Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(CLUSTER_DNS_SERVICE)
        .await
        .map_err(failed(object("Service", CLUSTER_DNS_SERVICE)))?
        .and_then(|s| s.spec)
        .map(|spec| {
            spec.cluster_ips
                .into_iter()
                .flatten()
                .chain(spec.cluster_ip)
                .filter_map(|ip| ip.parse().ok())
                .collect::<Vec<std::net::IpAddr>>()
        })
        .map(|mut ips| {
            ips.dedup();
            ips
        })
        .unwrap_or_default();
    Ok(cluster_inputs(
        (object("ConfigMap", &target.config_map), corefile),
        node_local,
        custom_keys,
        managed_custom_keys,
        version,
        version_from,
        cluster_dns_ips,
        policies.iter().map(|p| p.name_any()).collect(),
    ))
}

fn corefile_of(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get(COREFILE_KEY).cloned()
}

/// The data keys dnspolicy's field manager owns (the stanzas it wrote).
fn keys_owned_by_dnspolicy(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref()?.0.get("f:data")?.as_object().cloned())
        .flat_map(|d| {
            d.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}
