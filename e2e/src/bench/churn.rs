//! Pod churn: bursts of creations and deletions on the largest scale; the
//! policy's status counts must be right again within 5 s.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::pods::{self, PodSpec};
use super::table::*;
use super::*;
use crate::operator::Operator;

impl Bench {
    /// `o` watches `created` pods; `expected` is status.pods (total, polluted).
    pub(super) async fn churn(
        &mut self,
        t: &mut Table,
        mut o: Operator,
        created: usize,
        mut expected: (u64, u64),
    ) -> Result<()> {
        let p = &self.p;
        let nns = p.namespaces;
        let conc = p.concurrency;
        let mut live: Vec<usize> = (0..created).collect();
        let mut next = created;
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
        t.note("Scale pods: kwok-managed bench nodes (4 of 10 publish `dnspolicy.dev/host-search: tailb45a71.ts.net`), pods bound by spec.nodeName (no scheduler), 80% ClusterFirst, 10% dnsPolicy None, 10% with the suffix in dnsConfig.searches; created with POST (kube-rs, bounded concurrency). Each scale starts a fresh operator process; first status = status.pods equal to the expected total/polluted; RSS read 10 s later. Churn deletes use grace period 0; the time runs from the last create/delete returning.");
        o.stop()?;
        Ok(())
    }
}
