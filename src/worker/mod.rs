//! [`Worker`]: runs a handler over a queue's jobs, most urgent first.
//!
//! - `fetch`: claims jobs in strict priority order; blocks on its own
//!   connection when idle.
//! - `finish`: acknowledges completed jobs in batches and dead-letters failed
//!   ones, in one script call each.
//! - `job`: what a handler receives and returns.

mod fetch;
mod finish;
mod job;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::error::{ConfigCheck, ConfigError};
use crate::keys::GROUP;
use crate::scripts::scripts;
use crate::{Error, Queue};
use fetch::{Claimed, Fetched, Fetcher, PriorityBuffer};
use finish::{Counters, Finished, Finisher, Outcome};

pub use job::{Handler, Job, JobError};

/// How a worker runs. Every setter's doc ends with its default.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    concurrency: usize,
    prefetch: usize,
    block: Duration,
    ack_batch: usize,
    consumer: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 16,
            prefetch: 16,
            block: Duration::from_secs(5),
            ack_batch: 256,
            consumer: None,
        }
    }
}

impl WorkerConfig {
    /// The default configuration.
    pub fn new() -> WorkerConfig {
        WorkerConfig::default()
    }

    /// How many jobs run at once. Default: 16.
    pub fn concurrency(mut self, jobs: usize) -> WorkerConfig {
        self.concurrency = jobs;
        self
    }

    /// How many claimed jobs may wait for a free slot beyond those running.
    /// More keeps slots busy across fetch round trips; fewer lets a newly
    /// arrived urgent job overtake sooner. Default: 16.
    pub fn prefetch(mut self, jobs: usize) -> WorkerConfig {
        self.prefetch = jobs;
        self
    }

    /// How long one idle wait for new jobs blocks before checking again.
    /// Default: 5 s.
    pub fn block(mut self, block: Duration) -> WorkerConfig {
        self.block = block;
        self
    }

    /// The most completed jobs acknowledged in one script call. Default: 256.
    pub fn ack_batch(mut self, jobs: usize) -> WorkerConfig {
        self.ack_batch = jobs;
        self
    }

    /// The consumer name in the group. Must be unique among live workers.
    /// Default: host name, process id and a random suffix.
    pub fn consumer_name(mut self, name: impl Into<String>) -> WorkerConfig {
        self.consumer = Some(name.into());
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut check = ConfigCheck::default();
        check.positive("concurrency", self.concurrency);
        check.positive("ack batch", self.ack_batch);
        check.require(self.ack_batch <= 1000, || {
            format!("ack batch is {}, the most is 1000", self.ack_batch)
        });
        check.nonzero("block", self.block);
        if let Some(name) = &self.consumer {
            check.require(
                !name.is_empty() && !name.chars().any(char::is_control),
                || format!("consumer name {name:?} must be non-empty text"),
            );
        }
        check.finish()
    }
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs completed and acknowledged.
    pub completed: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
    /// Jobs this worker ran but could not finish because another worker had
    /// reclaimed them (they are that worker's now).
    pub ownership_lost: u64,
    /// Handler runs that panicked.
    pub panicked: u64,
}

/// Runs a handler over one queue. Start as many workers as you like, in one
/// process or many: they share the queue's consumer group.
#[derive(Debug)]
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    consumer: String,
}

impl Worker {
    /// Checks the configuration and prepares a worker.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every invalid setting.
    pub fn new(queue: &Queue, config: WorkerConfig) -> Result<Worker, ConfigError> {
        config.validate()?;
        let consumer = config
            .consumer
            .clone()
            .unwrap_or_else(default_consumer_name);
        Ok(Worker {
            queue: queue.clone(),
            config,
            consumer,
        })
    }

    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Processes jobs until `shutdown` is cancelled, then stops fetching,
    /// runs the jobs it has already claimed, acknowledges everything and
    /// leaves the consumer group if it owns nothing there.
    ///
    /// Redis errors while fetching are logged and retried with capped backoff;
    /// the worker keeps running.
    ///
    /// # Errors
    ///
    /// Only when it cannot start: [`Error`] from the first group check.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future abandons claimed jobs, which
    /// stay pending until reclaimed. Cancel `shutdown` instead.
    pub async fn run<T, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        self.queue.ensure_groups().await?;
        let handler = Arc::new(handler);
        let counters = Arc::new(Counters::default());
        let (finished_tx, finished_rx) = mpsc::channel(self.config.ack_batch * 4);
        let finisher = Finisher::new(
            &self.queue,
            &self.consumer,
            counters.clone(),
            self.config.ack_batch,
        );
        let finisher = tokio::spawn(finisher.run(finished_rx));

        let mut fetcher = Fetcher::new(&self.queue, &self.consumer, self.config.block);
        let mut buffer = PriorityBuffer::default();
        let mut running = JoinSet::new();
        let capacity = self.config.concurrency + self.config.prefetch;
        let mut backoff = Backoff::default();
        let start_job = |claimed: Claimed, running: &mut JoinSet<()>| {
            running.spawn(run_job(
                claimed,
                handler.clone(),
                finished_tx.clone(),
                counters.clone(),
            ));
        };

        while !shutdown.is_cancelled() {
            while running.try_join_next().is_some() {}
            while running.len() < self.config.concurrency {
                match buffer.pop() {
                    Some(claimed) => start_job(claimed, &mut running),
                    None => break,
                }
            }
            let room = capacity.saturating_sub(running.len() + buffer.len());
            if room == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = running.join_next() => continue,
                }
            }
            // Never cancelled: a fetch dropped mid-flight may have claimed jobs.
            let outcome = match fetcher.fetch(room).await {
                Ok(Fetched::Jobs(jobs)) => {
                    buffer.extend(jobs);
                    Ok(())
                }
                Ok(Fetched::Idle(last_ids)) => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    woken = fetcher.wait_for_new(&last_ids) => woken,
                },
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    let delay = backoff.next();
                    tracing::warn!(queue = self.queue.name(), %err, retry_in = ?delay, "fetching jobs failed");
                    if is_nogroup(&err) {
                        if let Err(err) = self.queue.ensure_groups().await {
                            tracing::warn!(queue = self.queue.name(), %err, "recreating consumer groups failed");
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }

        // Shutting down: run what was claimed, then flush every outcome.
        loop {
            while running.len() < self.config.concurrency {
                match buffer.pop() {
                    Some(claimed) => start_job(claimed, &mut running),
                    None => break,
                }
            }
            if running.join_next().await.is_none() && buffer.is_empty() {
                break;
            }
        }
        drop(finished_tx);
        if let Err(err) = finisher.await {
            tracing::error!(%err, "finishing task failed");
        }
        self.retire().await;
        Ok(WorkerReport {
            completed: counters.completed.load(Ordering::Relaxed),
            dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
            ownership_lost: counters.ownership_lost.load(Ordering::Relaxed),
            panicked: counters.panicked.load(Ordering::Relaxed),
        })
    }

    /// Leaves the consumer group where this worker owns nothing.
    async fn retire(&self) {
        let mut call = scripts().retire_consumer.call(self.queue.keys().streams());
        call.arg(GROUP).arg(&self.consumer);
        match call.invoke::<i64, _>(&mut self.queue.conn()).await {
            Ok(0) => {}
            Ok(kept) => tracing::info!(
                consumer = self.consumer,
                streams = kept,
                "consumer kept in the group: it still owns pending jobs"
            ),
            Err(err) => tracing::warn!(%err, "could not retire consumer"),
        }
    }
}

/// Decodes, runs and reports one claimed job.
async fn run_job<T, H>(
    claimed: Claimed,
    handler: Arc<H>,
    finished: mpsc::Sender<Finished>,
    counters: Arc<Counters>,
) where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let outcome = match decode::<T>(&claimed) {
        Err(poison) => poison,
        Ok(job) => {
            let (job_id, attempt, max_attempts, timeout) = (
                job.id.to_string(),
                job.attempt,
                job.max_attempts,
                job.timeout,
            );
            let run = AssertUnwindSafe(handler.handle(job)).catch_unwind();
            let result = match timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                    Ok(Err(JobError::retry(format!("timed out after {limit:?}"))))
                }),
                None => run.await,
            };
            let result = result.unwrap_or_else(|panic| {
                Counters::add(&counters.panicked, 1);
                Err(JobError::retry(format!(
                    "handler panicked: {}",
                    panic_message(&panic)
                )))
            });
            match result {
                Ok(()) => Outcome::Completed,
                Err(err) => {
                    let _ = max_attempts;
                    Outcome::Dead {
                        job_id,
                        attempts: attempt,
                        error: err.message().to_owned(),
                    }
                }
            }
        }
    };
    let finished_job = Finished {
        priority: claimed.priority,
        entry_id: claimed.entry_id,
        outcome,
    };
    if finished.send(finished_job).await.is_err() {
        tracing::error!(
            "finisher stopped before a job's outcome was recorded; it will be reclaimed"
        );
    }
}

/// Turns a claimed entry into a [`Job`], or into a dead-letter outcome when
/// it cannot be decoded (poison: no retry can fix it).
fn decode<T: DeserializeOwned>(claimed: &Claimed) -> Result<Job<T>, Outcome> {
    let poison = |job_id: &str, attempts: u32, error: String| Outcome::Dead {
        job_id: job_id.to_owned(),
        attempts,
        error,
    };
    let Some(bytes) = &claimed.envelope else {
        return Err(poison(
            "",
            1,
            "undecodable job: stream entry has no envelope".to_owned(),
        ));
    };
    let envelope =
        Envelope::decode(bytes).map_err(|e| poison("", 1, format!("undecodable job: {e}")))?;
    let attempt = envelope.attempt + 1;
    let payload = envelope
        .payload::<T>()
        .map_err(|e| poison(&envelope.id, attempt, format!("undecodable payload: {e}")))?;
    Ok(Job {
        id: envelope.id.into_owned().into(),
        name: envelope.name.into_owned(),
        priority: claimed.priority,
        attempt,
        max_attempts: envelope.max_attempts,
        enqueued_ms: envelope.enqueued_ms,
        timeout: envelope.timeout_ms.map(Duration::from_millis),
        payload,
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_owned())
}

fn is_nogroup(err: &Error) -> bool {
    matches!(err, Error::Redis(e) if e.code() == Some("NOGROUP"))
}

fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 8..]
    )
}

/// Capped exponential backoff for the fetch loop: no hot loop while Redis is
/// away, quick recovery once it is back.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        delay
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}
