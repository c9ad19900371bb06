//! The latency histogram's buckets, shared by the writer (`ack.lua`, fed
//! bucket numbers by the worker) and every reader.
//!
//! Bucket `b` holds durations `d` (in microseconds) with
//! `floor(4 * log2(d)) == b`: four buckets per doubling, about 19% wide.

use std::time::Duration;

/// The bucket of a duration in microseconds; under 1 us counts as 1 us.
pub(crate) fn bucket(us: u64) -> i32 {
    (4.0 * (us.max(1) as f64).log2()).floor() as i32
}

/// The upper bound of histogram bucket `b`: `2^((b + 1) / 4)` microseconds.
pub fn bucket_upper_bound(b: i32) -> Duration {
    Duration::from_secs_f64(2f64.powf(f64::from(b + 1) / 4.0) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_four_per_doubling() {
        assert_eq!(bucket_upper_bound(-1), Duration::from_micros(1));
        assert_eq!(bucket_upper_bound(3), Duration::from_micros(2));
        assert_eq!(bucket_upper_bound(39), Duration::from_micros(1024));
        for us in [1, 2, 3, 1000, 1024, 1025, 5_000_000] {
            let b = bucket(us);
            assert!(bucket_upper_bound(b - 1).as_secs_f64() * 1e6 <= us as f64 + 1e-6);
            assert!(bucket_upper_bound(b).as_secs_f64() * 1e6 >= us as f64 - 1e-6);
        }
    }
}
