//! Policy applied -> ConfigMap written, and -> Ready with CoreDNS rolled:
//! alternating two specs so each apply changes the Corefile.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::table::*;
use super::*;
use crate::operator::{self as op, Operator};

impl Bench {
    pub(super) fn policy_api(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("dnspolicy.dev", "v1alpha1", "ClusterDNSPolicy");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "clusterdnspolicies");
        Api::all_with(self.client.clone(), &ar)
    }

    pub(super) async fn policy_json(&self) -> Result<Value> {
        Ok(serde_json::to_value(self.policy_api().get(POLICY).await?)?)
    }

    pub(super) async fn corefile_now(&self) -> Result<String> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        let cm = cms.get("coredns").await?;
        Ok(cm
            .data
            .and_then(|d| d.get("Corefile").cloned())
            .unwrap_or_default())
    }

    /// The coredns Deployment rolled out to its current template, every pod
    /// Ready, none terminating or left from an old ReplicaSet.
    pub(super) async fn coredns_rolled(&self) -> Result<bool> {
        let deps: Api<Deployment> = Api::namespaced(self.client.clone(), "kube-system");
        let d = deps.get("coredns").await?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let Some(st) = d.status else { return Ok(false) };
        if st.observed_generation.unwrap_or(0) < generation
            || st.updated_replicas.unwrap_or(0) != want
            || st.replicas.unwrap_or(0) != want
            || st.available_replicas.unwrap_or(0) != want
        {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
        let list = pods
            .list(&ListParams::default().labels("k8s-app=kube-dns"))
            .await?;
        Ok(list.items.len() as i32 == want
            && list.items.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            }))
    }

    pub(super) async fn wait_ready_rolled(
        &self,
        operator: &mut Operator,
        timeout: Duration,
    ) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let p = self.policy_json().await.unwrap_or(Value::Null);
            if op::is_ready(&p) && self.coredns_rolled().await? {
                return Ok(());
            }
            if let Some(st) = operator.exited() {
                bail!("operator exited ({st}): {}", operator.log_tail(20));
            }
            if t0.elapsed() > timeout {
                bail!("policy not Ready with CoreDNS rolled in {timeout:?}: {p}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn apply_iterations(
        &self,
        t: &mut Table,
        operator: &mut Operator,
        a: &str,
        b: &str,
    ) -> Result<()> {
        let n = self.p.apply_n;
        log(format!(
            "apply -> ConfigMap written / Ready with CoreDNS rolled: {n} applies (alternating two specs)"
        ));
        let (mut kubectl_t, mut cm_t, mut ready_t) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..n {
            // Alternate so that the last apply is `a`.
            let spec = if (n - 1 - k).is_multiple_of(2) { a } else { b };
            let before = self.corefile_now().await?;
            let t_start = Instant::now();
            op::apply(&self.c, spec)?;
            let t0 = Instant::now();
            kubectl_t.push(secs(t0 - t_start));
            let deadline = Duration::from_secs(60);
            loop {
                if self.corefile_now().await? != before {
                    cm_t.push(secs(t0.elapsed()));
                    break;
                }
                if t0.elapsed() > deadline {
                    bail!(
                        "ConfigMap not written within {deadline:?}: {}",
                        operator.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.wait_ready_rolled(operator, deadline).await?;
            ready_t.push(secs(t0.elapsed()));
            log(format!(
                "  apply {}: kubectl {}, ConfigMap {}, Ready+rolled {}",
                k + 1,
                fmt_secs(*kubectl_t.last().unwrap()),
                fmt_secs(*cm_t.last().unwrap()),
                fmt_secs(*ready_t.last().unwrap())
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let p50 = percentile(&cm_t, 50.0);
        t.at_most(
            "policy applied -> ConfigMap written (from `kubectl apply` returning)",
            format!(
                "p50 {} (worst {}) of {n}",
                fmt_secs(p50),
                fmt_secs(max(&cm_t))
            ),
            p50,
            0.2,
            "p50 <= 200 ms",
        );
        let med = median(&ready_t);
        t.at_most(
            "policy applied -> Ready=True, CoreDNS rolled (kwok)",
            format!(
                "median {} (worst {}) of {n}",
                fmt_secs(med),
                fmt_secs(max(&ready_t))
            ),
            med,
            10.0,
            "<= 10 s",
        );
        t.row(
            "`kubectl apply` itself (process start to exit; not in the figures above)",
            format!("median {}", fmt_secs(median(&kubectl_t))),
            "-",
            "context",
            Verdict::Info,
        );
        t.note("Applies alternate between the Tailscale example (forwardTo 127.0.54.2) and the same with action NXDomain, so each one changes the Corefile; the first creates the policy.");
        Ok(())
    }
}
