//! streamq: a priority job queue on Redis Streams, for high-volume alert and
//! event pipelines.
//!
//! # A short tour
//!
//! - [`Queue`] is a handle on one named queue: open it with
//!   [`Queue::builder`] and a [`RedisConfig`]. It enqueues jobs
//!   ([`Queue::enqueue`], or thousands in one round trip with a [`Batch`])
//!   and reads [`QueueStats`].
//! - [`Worker`] runs your [`Handler`] (any async closure taking a [`Job`])
//!   over the queue, most urgent [`Priority`] first, with bounded concurrency
//!   and graceful shutdown through a cancellation token.
//! - Jobs live in one Redis stream per priority and are read through a
//!   consumer group. Every change that touches more than one key is a Lua
//!   script from the crate's `lua/` folder, run atomically by SHA1.
//! - [`LocalRedis`] starts a private redis-server for demos, benchmarks and
//!   tests.
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

#[doc(hidden)]
pub mod bench_support;
mod connection;
mod dead_letters;
mod envelope;
mod error;
mod inspect;
mod keys;
mod local_redis;
mod lookup;
mod metrics;
mod pause;
mod priority;
mod producer;
mod prometheus;
mod queue;
mod recover;
mod reply;
mod scripts;
mod stats;
mod tracking;
mod worker;

pub use connection::{MIN_REDIS, MIN_VALKEY, RedisConfig, ServerInfo, Version};
pub use dead_letters::{DeadLetter, DeadLetterPage};
pub use envelope::JobId;
pub use error::{ConfigError, Error};
pub use inspect::{ConsumerReport, Health, HealthThresholds, PriorityReport, QueueReport};
pub use keys::{MAX_NAME_LEN, QueueKeys};
pub use local_redis::{LocalRedis, LocalRedisBuilder, SERVER_ENV, TlsFiles};
pub use lookup::{JobInfo, JobState};
pub use metrics::{Counts, JobLatency, LatencyHistogram, QueueMetrics, bucket_upper_bound};
pub use priority::Priority;
pub use producer::{Batch, EnqueueOptions, MAX_IDEMPOTENCY_KEY_LEN};
pub use queue::{DEFAULT_MAX_PAYLOAD_BYTES, JobTracking, Queue, QueueBuilder};
pub use recover::Recovered;
pub use stats::{PriorityStats, QueueStats};
pub use worker::{
    DeadLettered, Handler, Job, JobError, RetryBackoff, Worker, WorkerConfig, WorkerReport,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
