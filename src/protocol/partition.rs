//! Partitions: where each partition of a queue lives, and which partition a
//! job goes to. Both are specified precisely here (and in `docs/design.md`)
//! because clients in other languages must compute the same answers.
//!
//! **Hash tags.** Partition 0 uses the queue's own tag `{<queue>}`, so a
//! queue of one partition is today's queue, and growing a queue keeps its old
//! jobs where they are. Partition `i > 0` uses `{<queue>#<i>.<s>}`, where `s`
//! is the smallest integer `>= 0` that puts the tag's cluster slot in the
//! window `[t, t + 64)` (modulo 16384) with `t = (slot(<queue>) +
//! reverse14(i)) mod 16384`, and `reverse14(i)` reverses the low 14 bits of
//! `i` (1 -> 8192, 2 -> 4096, 3 -> 12288, 4 -> 2048 ...). Partitions thus sit
//! evenly around the slot ring whatever N is (exactly evenly for powers of
//! two), so they spread over a cluster's masters, and a partition's tag never
//! depends on N.
//!
//! **Routing.** A job with a partition key `k` goes to partition
//! `jump(fnv1a64(k), N)`: FNV-1a 64 over the key's UTF-8 bytes (offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3), then Lamping and Veach's jump
//! consistent hash, which moves only about 1/N of the keys when N grows. A
//! job without a partition key but with an idempotency key is routed by the
//! idempotency key (a duplicate must meet the first job's dedup record); a
//! job with neither goes round-robin from a random start, which spreads
//! evenly.

use crate::protocol::cluster::{SLOTS, slot};

/// The layout version written in the layout key. Readers refuse a version
/// they do not know.
pub const LAYOUT_VERSION: u32 = 1;

/// The most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Width of the slot window a partition's tag is searched in.
const WINDOW: u16 = 64;

/// The hash tag (without braces) of partition `index` of `queue`.
pub(crate) fn tag(queue: &str, index: u32) -> String {
    if index == 0 {
        return queue.to_owned();
    }
    let offset = ((index & 0x3fff) as u16).reverse_bits() >> 2;
    let target = (slot(queue) + offset) % SLOTS;
    (0u32..)
        .map(|s| format!("{queue}#{index}.{s}"))
        .find(|t| (slot(t) + SLOTS - target) % SLOTS < WINDOW)
        .unwrap_or_default()
}

/// FNV-1a, 64 bits, over `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Jump consistent hash (Lamping and Veach, 2014): a bucket in `0..buckets`.
pub(crate) fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b).unwrap_or(0)
}

/// The partition of a job with partition key `key`, among `partitions`.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    jump(fnv1a64(key.as_bytes()), partitions.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_zero_is_the_queue_itself_and_tags_spread() {
        assert_eq!(tag("alerts", 0), "alerts");
        let base = slot("alerts");
        for i in 1..16u32 {
            let t = tag("alerts", i);
            assert!(t.starts_with(&format!("alerts#{i}.")), "{t}");
            let offset = (slot(&t) + SLOTS - base) % SLOTS;
            let ideal = (i as u16).reverse_bits() >> 2;
            assert!(
                (offset + SLOTS - ideal) % SLOTS < WINDOW,
                "{i}: {offset} vs {ideal}"
            );
        }
        // Stable: the same answer every time (other clients depend on it).
        assert_eq!(tag("alerts", 1), tag("alerts", 1));
    }

    #[test]
    fn routing_is_the_documented_hash() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // Jump hash reference values (from the paper's C++ implementation).
        assert_eq!(jump(0, 1), 0);
        assert_eq!(jump(1, 1), 0);
        assert_eq!(jump(0xdead_beef, 1), 0);
        for n in 1..50 {
            assert!(jump(12345, n) < n);
        }
        // Growing N moves a key only to the new bucket.
        for k in 0..1000u64 {
            let (a, b) = (jump(k, 10), jump(k, 11));
            assert!(a == b || b == 10);
        }
        let counts = (0..16_000)
            .map(|i| partition_of(&format!("tenant-{i}"), 16))
            .fold([0u32; 16], |mut c, p| {
                c[p as usize] += 1;
                c
            });
        assert!(counts.iter().all(|&c| c > 800 && c < 1200), "{counts:?}");
    }
}
