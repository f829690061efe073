//! How long a failed reconcile waits before the next try, and how long a
//! failed watch waits before it reconnects.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// 1 s doubling to 5 min, plus up to half again, so many policies failing at
/// once (an apiserver restart) do not retry in lockstep.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(8))
        .min(Duration::from_secs(300));
    base.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A fraction in [0, 1) from the clock's nanoseconds: spread is all the
/// jitter needs, not randomness.
pub fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// The watches' reconnect delay: 250 ms doubling to a 3 s cap, plus up to
/// half again, reset by the first event that arrives. kube-runtime's
/// `default_backoff` (client-go's: 800 ms doubling to 30 s, jitter up to
/// 100 %, reset only after 120 s) grew to about a minute during an apiserver
/// outage, so watches resumed minutes after the apiserver did. A reconnect
/// every few seconds is one cheap request: the apiserver refuses it when it is
/// down, and it resumes the watch within seconds when it is back.
#[derive(Debug, Clone, Default)]
pub struct WatchBackoff {
    failures: u32,
}

/// The cap of [`WatchBackoff`] before its jitter.
pub const WATCH_BACKOFF_CAP: Duration = Duration::from_secs(3);

impl WatchBackoff {
    /// The delay after `failures` consecutive failures (the first is 1).
    pub fn delay(failures: u32, jitter: f64) -> Duration {
        let base = Duration::from_millis(250)
            .saturating_mul(1u32 << failures.saturating_sub(1).min(8))
            .min(WATCH_BACKOFF_CAP);
        base.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    /// Never `None`: a watch is retried for as long as the operator runs.
    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(Self::delay(self.failures, jitter_fraction()))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_five_minutes_with_up_to_half_again() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(4, 0.0), Duration::from_secs(8));
        assert_eq!(retry_delay(9, 0.0), Duration::from_secs(256));
        assert_eq!(retry_delay(40, 0.0), Duration::from_secs(256));
        assert_eq!(retry_delay(1, 1.0), Duration::from_millis(1500));
        assert!(retry_delay(3, 0.999) < Duration::from_secs(6));
    }

    #[test]
    fn watches_reconnect_from_a_quarter_second_to_three_seconds_and_reset_on_an_event() {
        assert_eq!(WatchBackoff::delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(WatchBackoff::delay(3, 0.0), Duration::from_secs(1));
        assert_eq!(WatchBackoff::delay(5, 0.0), WATCH_BACKOFF_CAP);
        assert_eq!(WatchBackoff::delay(u32::MAX, 0.0), WATCH_BACKOFF_CAP);
        assert_eq!(WatchBackoff::delay(9, 1.0), Duration::from_millis(4500));
        let mut b = WatchBackoff::default();
        let during_an_outage: Vec<Duration> = (0..100).map_while(|_| b.next()).collect();
        assert_eq!(during_an_outage.len(), 100, "a watch is never given up");
        assert!(
            during_an_outage
                .iter()
                .all(|d| *d < Duration::from_millis(4500))
        );
        b.reset();
        assert!(b.next().expect("a delay") < Duration::from_millis(375));
    }
}
