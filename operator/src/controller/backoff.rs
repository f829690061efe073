//! How long a failed reconcile waits before the next try.

use std::time::Duration;

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
}
