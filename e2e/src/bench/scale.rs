//! Operator memory, time to first status and idle CPU at 10k, 50k and 150k
//! pods (kwok nodes, pods created over the API); the last operator is handed
//! to churn, and a baseline operator (`--baseline-operator`) is measured
//! the same way on the largest scale.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::churn::ChurnState;
use super::pods::{self, PodSpec};
use super::table::*;
use super::*;
use crate::operator::{Launch, Operator};

impl Bench {
    /// status.pods of the policy, if any.
    pub(super) async fn status_counts(&self) -> Result<Option<(u64, u64)>> {
        let p = self.policy_json().await?;
        let pods = &p["status"]["pods"];
        Ok(match (pods["total"].as_u64(), pods["polluted"].as_u64()) {
            (Some(t), Some(pl)) => Some((t, pl)),
            _ => None,
        })
    }

    pub(super) async fn wait_counts(
        &self,
        want: (u64, u64),
        timeout: Duration,
        operator: &mut Operator,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = None;
        loop {
            let got = self.status_counts().await?;
            if got == Some(want) {
                return Ok(t0.elapsed());
            }
            last = got.or(last);
            if let Some(st) = operator.exited() {
                bail!("operator exited ({st}): {}", operator.log_tail(20));
            }
            if t0.elapsed() > timeout {
                bail!(
                    "status.pods {last:?}, want {want:?} after {timeout:?}: {}",
                    operator.log_tail(10)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn scale(&mut self, t: &mut Table) -> Result<()> {
        let p = &self.p;
        let nns = p.namespaces;
        let conc = p.concurrency;
        // Baseline: pods already in the cluster, as a running operator counts them.
        let mut base_op = Operator::start_with(&self.c, "bench-base", &[], &self.launch)?;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let base_total = pods
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len() as u64;
        let t0 = Instant::now();
        let base = loop {
            if let Some((total, polluted)) = self.status_counts().await?
                && total == base_total
            {
                break (total, polluted);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "status never counted the {base_total} pods already there: {:?}",
                    self.status_counts().await?
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let base_rss = base_op
            .pid()
            .and_then(pods::vm_rss_hwm)
            .map(|x| x.0)
            .unwrap_or(0);
        base_op.stop()?;
        t.row(
            "operator RSS with no bench pods",
            format!("{} ({} pods in the cluster)", fmt_mib(base_rss), base.0),
            "-",
            "context",
            Verdict::Info,
        );

        self.scale_started = true;
        log(format!(
            "scale: {} kwok nodes ({} polluted), {nns} namespaces",
            pods::BENCH_NODES,
            pods::POLLUTED_NODES
        ));
        pods::create_nodes(&self.client).await?;
        pods::create_namespaces(&self.client, nns, conc).await?;
        let mut created = 0usize;
        let mut polluted_created = 0u64;
        let mut rss_points: Vec<(usize, u64)> = Vec::new();
        let mut operator: Option<Operator> = None;
        for (si, &n) in p.scales.iter().enumerate() {
            log(format!(
                "scale: creating pods {created}..{n} ({conc} in flight)"
            ));
            let rate = pods::create_pods(&self.client, created..n, nns, conc).await?;
            polluted_created += (created..n)
                .filter(|&i| PodSpec::new(i, nns).polluted())
                .count() as u64;
            log(format!("  {:.0} pods/s", rate));
            created = n;
            let want = (base.0 + n as u64, base.1 + polluted_created);
            let launch = self.launch.clone();
            let (mut o, rss) = self
                .measure_operator(t, &launch, &human(n), want, "")
                .await?;
            rss_points.push((n, rss));
            if si + 1 < p.scales.len() {
                o.stop()?;
            } else {
                operator = Some(o);
            }
        }
        // Memory per pod: slope between the smallest and largest scale.
        if let (Some(&(n0, r0)), Some(&(n1, r1))) = (rss_points.first(), rss_points.last())
            && n1 > n0
        {
            let per_pod = (r1 as f64 - r0 as f64) * 1024.0 / (n1 - n0) as f64;
            t.at_most(
                "operator memory per watched pod (RSS slope)",
                format!("{per_pod:.0} B ({} -> {} pods)", human(n0), human(n1)),
                per_pod,
                256.0,
                "<= 256 B",
            );
            let whole = (r1.saturating_sub(base_rss)) as f64 * 1024.0 / n1 as f64;
            t.row(
                "operator RSS above its no-pod baseline, per pod",
                format!("{whole:.0} B at {}", human(n1)),
                "-",
                "context",
                Verdict::Info,
            );
        }

        let mut o = operator.context("no operator")?;
        let mut state = ChurnState {
            live: (0..created).collect(),
            next: created,
            expected: (base.0 + created as u64, base.1 + polluted_created),
        };
        let label = human(created);
        self.steady_churn(t, &mut o, &mut state, &label, "").await?;
        self.churn(t, o, &mut state).await?;
        if let Some(baseline) = self.baseline.clone() {
            let who = format!(
                ", baseline {}",
                baseline.bin.as_deref().unwrap_or(Path::new("?")).display()
            );
            log(format!("scale: the baseline operator at {label} pods"));
            let (mut o, _) = self
                .measure_operator(t, &baseline, &label, state.expected, &who)
                .await?;
            self.steady_churn(t, &mut o, &mut state, &label, &who)
                .await?;
            o.stop()?;
        }
        Ok(())
    }

    /// Starts an operator on `pods` pods and reports its time to the right
    /// counts, its RSS 10 s later and its CPU over 20 idle seconds; returns
    /// it running, with its RSS (KiB).
    async fn measure_operator(
        &self,
        t: &mut Table,
        launch: &Launch,
        pods: &str,
        want: (u64, u64),
        who: &str,
    ) -> Result<(Operator, u64)> {
        let nns = self.p.namespaces;
        let mut o = Operator::start_with(&self.c, &format!("bench-{pods}"), &[], launch)?;
        let pid = o.pid().context("operator pid")?;
        self.wait_counts(want, Duration::from_secs(600), &mut o)
            .await?;
        let first = o.started.elapsed();
        // Settle, then read resident memory.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, hwm) = pods::vm_rss_hwm(pid).context("operator /proc status")?;
        let at_target = pods == "150k";
        t.at_most(
            &format!("operator RSS with {pods} bench pods in {nns} namespaces{who}"),
            format!("{} (peak VmHWM {})", fmt_mib(rss), fmt_mib(hwm)),
            rss as f64 / 1024.0,
            64.0,
            if at_target {
                "<= 64 MiB RSS"
            } else {
                "<= 64 MiB RSS (the 150k target)"
            },
        );
        t.row(
            &format!("operator start -> first status with the right counts, {pods} pods{who}"),
            format!(
                "{} (total {}, polluted {})",
                fmt_secs(secs(first)),
                want.0,
                want.1
            ),
            "-",
            "context",
            Verdict::Info,
        );
        // Idle: nothing changes, so the operator should do nothing.
        const IDLE: Duration = Duration::from_secs(20);
        let cpu0 = pods::cpu_secs(pid).context("operator /proc stat")?;
        tokio::time::sleep(IDLE).await;
        let cpu1 = pods::cpu_secs(pid).context("operator /proc stat")?;
        let idle_pct = (cpu1 - cpu0) * 100.0 / IDLE.as_secs_f64();
        t.at_most(
            &format!("operator CPU while idle, {pods} pods{who}"),
            format!("{idle_pct:.2}% of a core over {}", fmt_secs(secs(IDLE))),
            idle_pct,
            1.0,
            "<= 1% of a core (the 150k target)",
        );
        Ok((o, rss))
    }
}
