//! [`Worker`]: runs a handler over a queue's jobs, most urgent first.
//!
//! - `config`: [`WorkerConfig`] and [`RetryBackoff`].
//! - `fetch`: claims jobs in strict priority order, reclaims expired leases,
//!   and blocks on its own connection when idle.
//! - `lease`: what the worker holds, and the heartbeat that keeps it.
//! - `promote`: moves due retries and scheduled jobs into their streams.
//! - `finish`: acknowledges, retries and dead-letters, fenced by owner.
//! - `job`: what a handler receives and returns.

mod config;
mod fetch;
mod finish;
mod job;
mod lease;
mod promote;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::borrow::Cow;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::envelope::{Envelope, now_us};
use crate::error::ConfigError;
use crate::keys::GROUP;
use crate::scripts::scripts;
use crate::tracking::{TrackEvent, Tracker};
use crate::{Error, Priority, Queue};
use fetch::{Claimed, Fetched, Fetcher, PriorityBuffer};
use finish::{Counters, Finished, Finisher, Outcome};
use lease::Holdings;

pub use config::{DeadLettered, RetryBackoff, WorkerConfig};
pub use job::{Handler, Job, JobError};

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs completed and acknowledged.
    pub completed: u64,
    /// Failed attempts scheduled to run again.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
    /// Jobs this worker ran but could not finish because another worker had
    /// reclaimed them (they are that worker's now).
    pub ownership_lost: u64,
    /// Handler runs that panicked (each counted as a failed attempt).
    pub panicked: u64,
    /// Jobs taken over from workers whose lease ran out.
    pub reclaimed: u64,
    /// Pending jobs Redis reported deleted (trimmed by someone): lost.
    pub lost: u64,
}

/// Runs a handler over one queue. Start as many workers as you like, in one
/// process or many: they share the queue's consumer group.
#[derive(Debug)]
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    consumer: String,
}

/// What every job task needs.
struct JobContext<H> {
    handler: H,
    queue: String,
    consumer: Arc<str>,
    tracker: Option<Tracker>,
    finished: mpsc::Sender<Finished>,
    counters: Arc<Counters>,
    backoff: RetryBackoff,
    max_payload_bytes: usize,
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
    /// runs the jobs it has already claimed, finishes everything and leaves
    /// the consumer group if it owns nothing there.
    ///
    /// Along the way it promotes due retries and scheduled jobs, reclaims
    /// jobs whose worker died, and renews the leases of what it holds. Redis
    /// errors are logged and retried with capped backoff; the worker keeps
    /// running through restarts and dropped connections.
    ///
    /// # Errors
    ///
    /// Only when it cannot start for a reason no retry fixes: a queue key of
    /// the wrong type, a missing permission. While Redis is unreachable it
    /// keeps trying (or returns an empty report if shut down meanwhile).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future abandons claimed jobs, which
    /// stay pending until another worker reclaims them after the lease.
    /// Cancel `shutdown` instead.
    pub async fn run<T, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        if !self.start(&shutdown).await? {
            return Ok(WorkerReport::default());
        }
        let counters = Arc::new(Counters::default());
        let holdings = Holdings::default();
        let (finished_tx, finished_rx) = mpsc::channel(self.config.ack_batch * 4);
        let tracking = self.queue.settings().tracking;
        let (tracker, tracker_task) = match tracking {
            Some(tracking) => {
                let (tracker, task) = Tracker::spawn(&self.queue, tracking);
                (Some(tracker), Some(task))
            }
            None => (None, None),
        };
        let finisher = Finisher::new(
            &self.queue,
            &self.consumer,
            counters.clone(),
            holdings.clone(),
            &self.config,
            tracker.clone(),
        );
        let finisher = tokio::spawn(finisher.run(finished_rx));
        // Stops the heartbeat even if this future is dropped mid-run, so the
        // jobs it abandons can be reclaimed.
        let heartbeat_stop = CancellationToken::new();
        let heartbeat_guard = heartbeat_stop.clone().drop_guard();
        let heartbeat = self.config.heartbeat.then(|| {
            tokio::spawn(lease::heartbeat(
                self.queue.clone(),
                self.consumer.clone(),
                holdings.clone(),
                self.config.lease,
                heartbeat_stop.clone(),
            ))
        });
        let context = Arc::new(JobContext {
            handler,
            queue: self.queue.name().to_owned(),
            consumer: Arc::from(self.consumer.as_str()),
            tracker,
            finished: finished_tx,
            counters: counters.clone(),
            backoff: self.config.backoff,
            max_payload_bytes: self.queue.settings().max_payload_bytes,
        });

        let mut lane = Lane {
            fetcher: Fetcher::new(&self.queue, &self.consumer, self.config.block),
            buffer: PriorityBuffer::default(),
            running: JoinSet::new(),
            holdings,
        };
        self.fetch_loop(&mut lane, &context, &shutdown).await;

        // Shutting down: run what was claimed, then flush every outcome.
        loop {
            self.dispatch(&mut lane, &context);
            if lane.running.join_next().await.is_none() && lane.buffer.is_empty() {
                break;
            }
        }
        drop(context);
        if let Err(err) = finisher.await {
            tracing::error!(%err, "finishing task failed");
        }
        if let Some(task) = tracker_task {
            // Every sender is gone with the finisher and the jobs: it drains.
            let _ = task.await;
        }
        drop(heartbeat_guard);
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        self.retire().await;
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Ok(WorkerReport {
            completed: count(&counters.completed),
            retried: count(&counters.retried),
            dead_lettered: count(&counters.dead_lettered),
            ownership_lost: count(&counters.ownership_lost),
            panicked: count(&counters.panicked),
            reclaimed: count(&counters.reclaimed),
            lost: count(&counters.lost),
        })
    }

    async fn fetch_loop<T, H>(
        &self,
        lane: &mut Lane,
        context: &Arc<JobContext<H>>,
        shutdown: &CancellationToken,
    ) where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        let capacity = self.config.concurrency + self.config.prefetch;
        let mut backoff = Backoff::default();
        let mut next_promote = Instant::now();
        let mut next_reclaim = Instant::now();
        let mut paused = false;
        while !shutdown.is_cancelled() {
            while lane.running.try_join_next().is_some() {}
            self.dispatch(lane, context);
            let room = capacity.saturating_sub(lane.running.len() + lane.buffer.len());
            let now = Instant::now();
            if now >= next_promote {
                next_promote = now + self.promote().await;
            }
            // While paused, stalled jobs stay where they are: running them
            // would be fetching too.
            if now >= next_reclaim && room > 0 && !paused {
                self.reclaim(lane, context, room).await;
                next_reclaim = now + self.config.reclaim_interval;
                continue;
            }
            let upkeep_at = next_promote.min(next_reclaim);
            if room == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = lane.running.join_next() => {}
                    _ = tokio::time::sleep_until(upkeep_at) => {}
                }
                continue;
            }
            // Never cancelled: a fetch dropped mid-flight may have claimed jobs.
            let fetched = lane.fetcher.fetch(room).await;
            if paused != matches!(fetched, Ok(Fetched::Paused)) {
                paused = !paused;
                tracing::info!(
                    queue = self.queue.name(),
                    paused,
                    "queue pause state changed"
                );
            }
            let outcome = match fetched {
                Ok(Fetched::Paused) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(upkeep_at.min(Instant::now() + self.config.promote_interval)) => Ok(()),
                    }
                }
                Ok(Fetched::Jobs(jobs)) => {
                    for job in &jobs {
                        lane.holdings.hold(job.priority, &job.entry_id);
                    }
                    lane.buffer.extend(jobs);
                    Ok(())
                }
                // Nothing new, but claimed jobs wait for a slot: wait for a
                // slot, not for Redis.
                Ok(Fetched::Idle(_)) if !lane.buffer.is_empty() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = lane.running.join_next() => Ok(()),
                        _ = tokio::time::sleep_until(upkeep_at) => Ok(()),
                    }
                }
                Ok(Fetched::Idle(last_ids)) => {
                    let block = upkeep_at.saturating_duration_since(Instant::now());
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        woken = lane.fetcher.wait_for_new(&last_ids, block) => woken,
                    }
                }
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
    }

    /// Checks the queue's keys and groups before the first fetch, riding out
    /// Redis being away (a restart, say) with capped backoff. `Ok(false)`
    /// when shut down before Redis came back.
    async fn start(&self, shutdown: &CancellationToken) -> Result<bool, Error> {
        let mut backoff = Backoff::default();
        loop {
            match self.queue.ensure_groups().await {
                Ok(()) => return Ok(true),
                Err(err) if err.is_retryable() => {
                    let delay = backoff.next();
                    tracing::warn!(queue = self.queue.name(), %err, retry_in = ?delay, "worker cannot start yet");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Starts buffered jobs, most urgent first, while slots are free.
    fn dispatch<T, H>(&self, lane: &mut Lane, context: &Arc<JobContext<H>>)
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        while lane.running.len() < self.config.concurrency {
            let Some(claimed) = lane.buffer.pop() else {
                break;
            };
            lane.running.spawn(run_job(claimed, context.clone()));
        }
    }

    /// Moves due delayed jobs; returns how long until the next pass.
    async fn promote(&self) -> Duration {
        let interval = self.config.promote_interval;
        for _ in 0..10 {
            match promote::promote(&self.queue).await {
                Ok(p) if p.moved == promote::PROMOTE_LIMIT => continue,
                Ok(p) => return p.next_due_in.map_or(interval, |due| due.min(interval)),
                Err(err @ Error::OutOfMemory(_)) => {
                    // Expected while Redis is full; due jobs wait in the set.
                    tracing::debug!(queue = self.queue.name(), %err, "cannot promote delayed jobs yet");
                    return interval;
                }
                Err(err) => {
                    tracing::warn!(queue = self.queue.name(), %err, "promoting delayed jobs failed");
                    return interval;
                }
            }
        }
        Duration::ZERO
    }

    /// Takes over jobs whose lease ran out, up to `room`, most urgent first.
    /// Those delivered too often without finishing are dead-lettered.
    async fn reclaim<T, H>(&self, lane: &mut Lane, context: &Arc<JobContext<H>>, room: usize)
    where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        let mut room = room;
        for priority in Priority::ALL {
            if room == 0 {
                break;
            }
            let reclaimed = match lane
                .fetcher
                .reclaim(priority, self.config.lease, room)
                .await
            {
                Ok(reclaimed) => reclaimed,
                Err(err) => {
                    tracing::warn!(queue = self.queue.name(), %err, "reclaiming stalled jobs failed");
                    return;
                }
            };
            if !reclaimed.lost.is_empty() {
                Counters::add(&context.counters.lost, reclaimed.lost.len() as u64);
                tracing::error!(
                    queue = self.queue.name(),
                    %priority,
                    lost = reclaimed.lost.len(),
                    ids = ?reclaimed.lost,
                    "jobs lost: Redis deleted these entries while they were pending (was the stream trimmed?)"
                );
            }
            room = room.saturating_sub(reclaimed.jobs.len());
            Counters::add(&context.counters.reclaimed, reclaimed.jobs.len() as u64);
            for job in reclaimed.jobs {
                lane.holdings.hold(job.priority, &job.entry_id);
                if job.deliveries > self.config.max_deliveries {
                    let outcome = poison_outcome(&job, self.config.max_deliveries);
                    let (name, job_id) = job
                        .envelope
                        .as_deref()
                        .and_then(|bytes| Envelope::decode(bytes).ok())
                        .map(|e| (e.name.into_owned(), e.id.into_owned()))
                        .unwrap_or_default();
                    let finished = Finished {
                        priority: job.priority,
                        entry_id: job.entry_id,
                        job_id,
                        outcome,
                        name,
                        wait_us: 0,
                        run_us: 0,
                        deliveries: job.deliveries,
                    };
                    if context.finished.send(finished).await.is_err() {
                        tracing::error!("finisher stopped; the job stays pending");
                    }
                } else {
                    tracing::info!(
                        queue = self.queue.name(),
                        entry = job.entry_id,
                        deliveries = job.deliveries,
                        "reclaimed a stalled job"
                    );
                    lane.buffer.extend(vec![job]);
                }
            }
        }
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

/// The worker's moving parts between fetching and running.
struct Lane {
    fetcher: Fetcher,
    buffer: PriorityBuffer,
    running: JoinSet<()>,
    holdings: Holdings,
}

/// Decodes, runs and reports one claimed job.
async fn run_job<T, H>(claimed: Claimed, context: Arc<JobContext<H>>)
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let mut report = Report {
        name: String::new(),
        job_id: String::new(),
        wait_us: 0,
        run_us: 0,
    };
    let outcome = match decode::<T>(&claimed, context.max_payload_bytes) {
        Err(poison) => poison,
        Ok((mut job, ready_us)) => {
            report.name.clone_from(&job.name);
            report.job_id = job.id.to_string();
            if let Some(tracker) = &context.tracker {
                tracker.send(TrackEvent::Started {
                    id: report.job_id.clone(),
                    entry: claimed.entry_id.clone(),
                    priority: claimed.priority,
                    attempt: job.attempt,
                    consumer: context.consumer.clone(),
                });
                job.tracker = Some(tracker.clone());
            }
            let started = Instant::now();
            report.wait_us = now_us().saturating_sub(ready_us);
            let span = tracing::info_span!(
                "streamq.process",
                job_id = %job.id,
                queue = context.queue.as_str(),
                priority = %job.priority,
                attempt = job.attempt,
                traceparent = job.traceparent.as_deref().unwrap_or(""),
            );
            let outcome = run_handler(&claimed, &context, job, &report.job_id)
                .instrument(span)
                .await;
            report.run_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            outcome
        }
    };
    let job_id = if report.job_id.is_empty() {
        poison_job_id(&outcome)
    } else {
        report.job_id
    };
    let finished = Finished {
        priority: claimed.priority,
        entry_id: claimed.entry_id,
        job_id,
        outcome,
        name: report.name,
        wait_us: report.wait_us,
        run_us: report.run_us,
        deliveries: claimed.deliveries,
    };
    if context.finished.send(finished).await.is_err() {
        tracing::error!(
            "finisher stopped before a job's outcome was recorded; it will be reclaimed"
        );
    }
}

/// A job's name, id and timings, for per-name metrics and tracking.
struct Report {
    name: String,
    job_id: String,
    wait_us: u64,
    run_us: u64,
}

/// Runs the handler (with its timeout, catching panics) and decides the
/// job's outcome.
async fn run_handler<T, H>(
    claimed: &Claimed,
    context: &JobContext<H>,
    job: Job<T>,
    job_id: &str,
) -> Outcome
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let (attempt, max_attempts, timeout) = (job.attempt, job.max_attempts, job.timeout);
    let run = AssertUnwindSafe(context.handler.handle(job)).catch_unwind();
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Ok(Err(JobError::retry(format!("timed out after {limit:?}"))))),
        None => run.await,
    };
    let result = result.unwrap_or_else(|panic| {
        Counters::add(&context.counters.panicked, 1);
        Err(JobError::retry(format!(
            "handler panicked: {}",
            panic_message(&panic)
        )))
    });
    match result {
        Ok(()) => Outcome::Completed,
        Err(err) if err.is_permanent() => Outcome::Dead {
            job_id: job_id.to_owned(),
            attempts: attempt,
            error: err.message().to_owned(),
            failed_run: true,
        },
        Err(err) if attempt >= max_attempts => Outcome::Dead {
            job_id: job_id.to_owned(),
            attempts: attempt,
            error: format!("failed {attempt} of {max_attempts} attempts, last: {err}"),
            failed_run: true,
        },
        Err(err) => retry_outcome(claimed, &context.backoff, attempt, job_id.to_owned(), &err),
    }
}

/// The next attempt of a job that failed attempt `attempt`.
fn retry_outcome(
    claimed: &Claimed,
    backoff: &RetryBackoff,
    attempt: u32,
    job_id: String,
    err: &JobError,
) -> Outcome {
    let delay = backoff.delay(attempt, fastrand::f64());
    let due_us = now_us().saturating_add(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX));
    let next = claimed
        .envelope
        .as_deref()
        .ok_or_else(|| Error::Decode("no envelope".to_owned()))
        .and_then(Envelope::decode)
        .and_then(|mut envelope| {
            envelope.attempt = attempt;
            envelope.ready_us = due_us;
            envelope.encode(usize::MAX)
        });
    match next {
        Ok(envelope) => {
            tracing::info!(job = job_id, attempt, retry_in = ?delay, error = %err, "job failed; will retry");
            Outcome::Retry {
                envelope,
                due_ms: due_us / 1000,
                attempt,
                error: err.message().to_owned(),
            }
        }
        Err(e) => Outcome::Dead {
            job_id,
            attempts: attempt,
            error: format!("{err}; cannot schedule a retry: {e}"),
            failed_run: true,
        },
    }
}

/// Turns a claimed entry into a [`Job`], or into a dead-letter outcome when
/// it cannot be decoded (poison: no retry can fix it).
fn decode<T: DeserializeOwned>(
    claimed: &Claimed,
    max_bytes: usize,
) -> Result<(Job<T>, u64), Outcome> {
    let poison = |job_id: &str, attempts: u32, error: String| Outcome::Dead {
        job_id: job_id.to_owned(),
        attempts,
        error,
        failed_run: true,
    };
    let Some(bytes) = &claimed.envelope else {
        return Err(poison(
            "",
            1,
            "undecodable job: stream entry has no envelope".to_owned(),
        ));
    };
    // An envelope adds a few dozen bytes to the payload limit; anything far
    // larger did not come from a streamq producer with this limit.
    if bytes.len() > max_bytes.saturating_add(4096) {
        return Err(poison(
            "",
            1,
            format!(
                "undecodable job: {} bytes, over the limit of {max_bytes}",
                bytes.len()
            ),
        ));
    }
    let envelope =
        Envelope::decode(bytes).map_err(|e| poison("", 1, format!("undecodable job: {e}")))?;
    let attempt = envelope.attempt + 1;
    let payload = envelope
        .payload::<T>(max_bytes)
        .map_err(|e| poison(&envelope.id, attempt, format!("undecodable payload: {e}")))?;
    let job = Job {
        id: envelope.id.into_owned().into(),
        name: envelope.name.into_owned(),
        priority: claimed.priority,
        attempt,
        max_attempts: envelope.max_attempts,
        deliveries: claimed.deliveries,
        enqueued_ms: envelope.enqueued_us / 1000,
        timeout: envelope.timeout_ms.map(Duration::from_millis),
        traceparent: envelope.trace.map(Cow::into_owned),
        tracker: None,
        payload,
    };
    Ok((job, envelope.ready_us))
}

/// The dead-letter outcome for a job delivered too often without finishing.
fn poison_outcome(job: &Claimed, max_deliveries: u32) -> Outcome {
    let envelope = job.envelope.as_deref().map(Envelope::decode);
    let (job_id, attempts) = match envelope {
        Some(Ok(e)) => (e.id.into_owned(), e.attempt + 1),
        _ => (String::new(), 1),
    };
    Outcome::Dead {
        job_id,
        attempts,
        error: format!(
            "delivered {} times without finishing (max {max_deliveries}): each worker holding it died or hung",
            job.deliveries - 1
        ),
        failed_run: false,
    }
}

/// The job id a poison outcome carries, if its envelope named one.
fn poison_job_id(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Dead { job_id, .. } => job_id.clone(),
        _ => String::new(),
    }
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
