//! Pod churn on the largest scale: a steady trickle of creations and
//! deletions, with the operator's CPU over it (what a busy cluster costs it
//! even when no count moves much), and bursts of creations and deletions
//! after which the policy's status counts must be right again within 5 s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::pods::{self, PodSpec};
use super::table::*;
use super::*;
use crate::operator::Operator;

/// The bench pods as churn leaves them.
pub(super) struct ChurnState {
    /// Indexes of the pods that exist.
    pub live: Vec<usize>,
    /// The next new pod's index.
    pub next: usize,
    /// status.pods (total, polluted) they make.
    pub expected: (u64, u64),
}

impl Bench {
    /// `per_sec` creates and as many deletes every second for the steady
    /// window, with `o`'s CPU over it; then the counts must be right.
    pub(super) async fn steady_churn(
        &mut self,
        t: &mut Table,
        o: &mut Operator,
        state: &mut ChurnState,
        pods_label: &str,
        who: &str,
    ) -> Result<()> {
        let nns = self.p.namespaces;
        let per_sec = self.p.steady_per_sec;
        let window = self.p.steady;
        log(format!(
            "steady churn: {per_sec} creates + {per_sec} deletes per second for {window:?}{who}"
        ));
        let pid = o.pid().context("operator pid")?;
        let cpu0 = pods::cpu_secs(pid).context("operator /proc stat")?;
        let t0 = Instant::now();
        let mut second = tokio::time::interval(Duration::from_secs(1));
        let mut slow_seconds = 0;
        for s in 0..window.as_secs() as usize {
            second.tick().await;
            let t_sec = Instant::now();
            let add = state.next..state.next + per_sec;
            state.next += per_sec;
            // Spread the deletions over namespaces and nodes.
            let del: Vec<usize> = (0..per_sec)
                .map(|j| {
                    let at = (s * 7919 + j * 104_729) % state.live.len();
                    state.live.swap_remove(at)
                })
                .collect();
            for i in add.clone() {
                state.live.push(i);
                state.expected.0 += 1;
                state.expected.1 += u64::from(PodSpec::new(i, nns).polluted());
            }
            for &i in &del {
                state.expected.0 -= 1;
                state.expected.1 -= u64::from(PodSpec::new(i, nns).polluted());
            }
            let client = self.client.clone();
            let (r1, r2) = tokio::join!(
                pods::create_pods(&client, add, nns, per_sec),
                pods::delete_pods(&client, &del, nns, per_sec)
            );
            r1?;
            r2?;
            if t_sec.elapsed() > Duration::from_secs(1) {
                slow_seconds += 1;
            }
        }
        let took = t0.elapsed();
        let cpu1 = pods::cpu_secs(pid).context("operator /proc stat")?;
        let pct = (cpu1 - cpu0) * 100.0 / took.as_secs_f64();
        let right = self
            .wait_counts(state.expected, Duration::from_secs(120), o)
            .await?;
        t.row(
            &format!("operator CPU under steady churn, {pods_label} pods{who}"),
            format!(
                "{pct:.2}% of a core over {} ({per_sec} creates + {per_sec} deletes a second{}); status right {} after the last",
                fmt_secs(secs(took)),
                if slow_seconds > 0 {
                    format!(", {slow_seconds} seconds took longer")
                } else {
                    String::new()
                },
                fmt_secs(secs(right))
            ),
            "-",
            "context",
            Verdict::Info,
        );
        Ok(())
    }

    /// Bursts of creations and deletions; `o` is stopped at the end.
    pub(super) async fn churn(
        &mut self,
        t: &mut Table,
        mut o: Operator,
        state: &mut ChurnState,
    ) -> Result<()> {
        let p = &self.p;
        let nns = p.namespaces;
        let conc = p.concurrency;
        let created = state.live.len();
        let live = &mut state.live;
        let mut next = state.next;
        let mut expected = state.expected;
        let mut lat = Vec::new();
        let mut burst_t = Vec::new();
        for k in 0..p.bursts {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let add: Vec<usize> = (next..next + p.burst_each).collect();
            next += p.burst_each;
            // Delete every k-th live pod from a spread of namespaces.
            let step = (live.len() / p.burst_each).max(1);
            let del: Vec<usize> = live
                .iter()
                .copied()
                .skip(k)
                .step_by(step)
                .take(p.burst_each)
                .collect();
            let gone: std::collections::HashSet<usize> = del.iter().copied().collect();
            live.retain(|i| !gone.contains(i));
            live.extend(add.iter().copied());
            for &i in &add {
                expected.0 += 1;
                expected.1 += u64::from(PodSpec::new(i, nns).polluted());
            }
            for &i in &del {
                expected.0 -= 1;
                expected.1 -= u64::from(PodSpec::new(i, nns).polluted());
            }
            let t_start = Instant::now();
            let client = self.client.clone();
            let c2 = client.clone();
            let (r1, r2) = tokio::join!(
                pods::create_pods(&client, next - p.burst_each..next, nns, conc / 2),
                pods::delete_pods(&c2, &del, nns, conc / 2)
            );
            r1?;
            r2?;
            let t_end = Instant::now();
            burst_t.push(secs(t_end - t_start));
            let d = self
                .wait_counts(expected, Duration::from_secs(120), &mut o)
                .await?;
            lat.push(secs(d));
            log(format!(
                "  burst {}: +{} -{} pods in {}, status right {} after",
                k + 1,
                add.len(),
                del.len(),
                fmt_secs(secs(t_end - t_start)),
                fmt_secs(secs(d))
            ));
        }
        let worst = max(&lat);
        t.at_most(
            &format!(
                "pod churn -> status counts right ({}k pods)",
                created / 1000
            ),
            format!(
                "worst {} (median {}) of {} bursts of +{} / -{} pods (each burst took {})",
                fmt_secs(worst),
                fmt_secs(median(&lat)),
                p.bursts,
                p.burst_each,
                p.burst_each,
                fmt_secs(median(&burst_t))
            ),
            worst,
            5.0,
            "<= 5 s",
        );
        state.next = next;
        state.expected = expected;
        t.note("Scale pods: kwok-managed bench nodes (4 of 10 publish `dnspolicy.dev/host-search: tailb45a71.ts.net`), pods bound by spec.nodeName (no scheduler), 80% ClusterFirst, 10% dnsPolicy None, 10% with the suffix in dnsConfig.searches; created with POST (kube-rs, bounded concurrency). Each scale starts a fresh operator process; first status = status.pods equal to the expected total/polluted; RSS read 10 s later. Churn deletes use grace period 0; the time runs from the last create/delete returning. Steady churn paces its creates and deletes once a second and measures the operator's CPU (utime+stime from /proc) over the whole window; a baseline operator (`--baseline-operator`) is started after the bursts on the same pods.");
        o.stop()?;
        Ok(())
    }
}
