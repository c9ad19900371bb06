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
//! - `events`: [`Queue::events`](crate::Queue::events), following what
//!   happens to jobs.
//! - `flow_children`: flow children among what a drain or an obliterate
//!   removes, each removed with its parent settled.
//! - `follow`: one stream per partition read as one, oldest first, for
//!   the event reader and the dead-letter watcher.
//! - `lookup`: a tracked job by id.
//! - `pause`: pause and resume a queue.
//! - `recover`: put stalled jobs back in line now.
//! - `cancel`: cancel one job by id: remove it, or ask its worker to stop it.
//! - `remove`: clean old dead letters and completed jobs, drain, obliterate.
//! - `json` (feature `json`): jobs, dead letters and payloads as JSON for
//!   people, one shape for the CLI and the HTTP API.
//! - `partitions`: every call above on a partitioned queue covers all its
//!   partitions: merged reads, writes by id tried per partition.

pub(crate) mod cancel;
pub(crate) mod dead_letter_delete;
pub(crate) mod dead_letters;
pub(crate) mod events;
pub(crate) mod flow_children;
pub(crate) mod follow;
pub(crate) mod history;
pub(crate) mod inspect;
#[cfg(feature = "json")]
pub(crate) mod json;
pub(crate) mod lookup;
pub(crate) mod metrics;
pub(crate) mod partitions;
pub(crate) mod pause;
pub(crate) mod prometheus;
pub(crate) mod recover;
pub(crate) mod remove;
pub(crate) mod stats;
