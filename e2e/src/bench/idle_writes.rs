//! API writes by the operator while nothing changes: counted from the
//! audit log over an idle window after the policy converged (Lease renewals
//! left out); the target is zero.

use std::time::Instant;

use anyhow::{Result, bail};

use super::table::*;
use super::*;
use crate::operator::{self as op, Operator};

impl Bench {
    /// The window began at `idle_start` with the audit log at `mark`; sleep
    /// out the rest of it, then count. `traffic_inside`: lookups or dnsperf
    /// ran in the window.
    pub(super) async fn idle_writes(
        &self,
        t: &mut Table,
        operator: &mut Operator,
        mark: u64,
        idle_start: Instant,
        traffic_inside: bool,
    ) -> Result<()> {
        let left = self.p.idle.saturating_sub(idle_start.elapsed());
        log(format!(
            "idle: {}s more with nothing changing",
            left.as_secs()
        ));
        tokio::time::sleep(left).await;
        if let Some(st) = operator.exited() {
            bail!(
                "operator exited ({st}) during the idle window: {}",
                operator.log_tail(20)
            );
        }
        let writes = op::operator_writes_since(&self.c, mark)?;
        let shown: Vec<&String> = writes.iter().take(5).collect();
        let figure = if writes.is_empty() {
            format!("0 in {} s", self.p.idle.as_secs())
        } else {
            format!("{} in {} s: {shown:?}", writes.len(), self.p.idle.as_secs())
        };
        let ok = writes.is_empty();
        t.row(
            "API writes by the operator while nothing changes (Leases excluded)",
            figure,
            "0",
            if ok { "0 = 0 ok" } else { "MISS" },
            if ok { Verdict::Met } else { Verdict::Missed },
        );
        if traffic_inside {
            t.note("The idle window starts 3 s after Ready and contains the after-policy lookups and the dnsperf runs (DNS traffic only, no API writes).");
        }
        Ok(())
    }
}
