//! The operator's API: reading and repairing a queue. Workers and producers
//! never call anything here; it is what the CLI, dashboards and scrapers use,
//! and each read is cheap enough to poll every few seconds.
//!
//! - `stats`: [`Queue::stats`](crate::Queue::stats), the one-round-trip
//!   snapshot.
//! - `inspect`: [`Queue::inspect`](crate::Queue::inspect), the full picture
//!   with consumers and [`Health`](inspect::Health).
//! - `metrics`: counters and latency histograms kept by the scripts.
//! - `prometheus`: all of that in the Prometheus text format.
//! - `dead_letters`: list, show, requeue and purge dead letters;
//!   `dead_letter_delete`: delete one.
//! - `history`: the queue's recent past, one snapshot per step, in Redis.
//! - `lookup`: a tracked job by id.
//! - `pause`: pause and resume a queue.
//! - `recover`: put stalled jobs back in line now.

pub(crate) mod dead_letter_delete;
pub(crate) mod dead_letters;
pub(crate) mod history;
pub(crate) mod inspect;
pub(crate) mod lookup;
pub(crate) mod metrics;
pub(crate) mod pause;
pub(crate) mod prometheus;
pub(crate) mod recover;
pub(crate) mod stats;
