//! Exponential backoff with full jitter for retryable failures.

/// Backoff policy: attempt `n` (1-based) waits a random time in
/// `[0, min(cap, base × 2^(n-1))]`, or exactly what the provider asked for.
///
/// Full jitter (AWS architecture blog, "Exponential Backoff and Jitter") spreads
/// retries of many items that failed together, so a 429 storm does not come
/// back as a synchronized wave.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay ceiling, in milliseconds.
    pub base_ms: u64,
    /// Largest delay, in milliseconds.
    pub cap_ms: u64,
}

impl Backoff {
    /// The ceiling of the random delay before retry number `attempt` (1-based).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(32);
        self.base_ms.saturating_mul(1u64 << shift).min(self.cap_ms)
    }

    /// The delay before retry `attempt`, given a uniform random `unit` in
    /// `[0, 1)` and the provider's own `retry_after_ms` if it sent one.
    ///
    /// A provider's `retry-after` is honoured as a floor: retrying earlier only
    /// earns another 429.
    pub fn delay_ms(&self, attempt: u32, unit: f64, retry_after_ms: Option<u64>) -> u64 {
        let jittered = (self.ceiling_ms(attempt) as f64 * unit.clamp(0.0, 1.0)) as u64;
        match retry_after_ms {
            Some(after) => after + jittered.min(after / 4 + 1),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff {
            base_ms: 500,
            cap_ms: 60_000,
        };
        assert_eq!(b.ceiling_ms(1), 500);
        assert_eq!(b.ceiling_ms(2), 1_000);
        assert_eq!(b.ceiling_ms(5), 8_000);
        assert_eq!(b.ceiling_ms(60), 60_000);
    }

    #[test]
    fn retry_after_is_a_floor_with_a_little_spread() {
        let b = Backoff {
            base_ms: 500,
            cap_ms: 60_000,
        };
        assert_eq!(b.delay_ms(1, 0.0, Some(2_000)), 2_000);
        let d = b.delay_ms(3, 0.99, Some(2_000));
        assert!((2_000..=2_501).contains(&d), "{d}");
        assert!(b.delay_ms(3, 0.5, None) <= 2_000);
    }
}
