//! Capped exponential backoff: the one curve behind a job's retry delays
//! ([`crate::worker::RetryBackoff`]) and the pauses between tries of a Redis
//! call that failed (fetching, starting a worker, finishing jobs).

use std::time::Duration;

/// `base * 2^doublings`, at most `max`.
pub(crate) fn capped_exponential(base: Duration, max: Duration, doublings: u32) -> Duration {
    base.saturating_mul(1u32 << doublings.min(31)).min(max)
}

/// Successive delays for retrying a failing Redis call: no hot loop while
/// Redis is away, quick recovery once it is back.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    tries: u32,
}

impl Backoff {
    /// Starts at `base` and doubles up to `max`.
    pub(crate) const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            tries: 0,
        }
    }

    /// For a loop that talks to Redis: 50 ms doubling to 5 s.
    pub(crate) const fn redis() -> Backoff {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The delay before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = capped_exponential(self.base, self.max, self.tries);
        self.tries = self.tries.saturating_add(1);
        delay
    }

    /// Back to `base`, after a success.
    pub(crate) fn reset(&mut self) {
        self.tries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_stops_at_max() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(50));
        let huge = capped_exponential(Duration::from_secs(1), Duration::MAX, 400);
        assert_eq!(huge, Duration::from_secs(1).saturating_mul(1 << 31));
    }
}
