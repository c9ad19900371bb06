//! What a handler receives ([`Job`]) and returns ([`JobError`]), and the
//! [`Handler`] trait itself. None of it needs Redis, so handlers are tested
//! by calling them directly.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stop::{JobStop, StopSignal};
use super::tracker::{MAX_LOG_LINE, TrackEvent, Tracker};
use crate::job_id::JobId;
use crate::priority::Priority;

/// One delivery of a job to a handler.
#[derive(Debug, Clone)]
pub struct Job<T> {
    pub(crate) id: JobId,
    pub(crate) name: String,
    pub(crate) priority: Priority,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) deliveries: u32,
    pub(crate) enqueued_ms: u64,
    pub(crate) timeout: Option<Duration>,
    pub(crate) traceparent: Option<String>,
    pub(crate) tracker: Option<Tracker>,
    /// With a tracker: set once its handler reported progress or logged.
    pub(crate) reported: Option<Arc<AtomicBool>>,
    pub(crate) stop: StopSignal,
    pub(crate) claimed_ms: u64,
    pub(crate) payload: T,
}

impl<T> Job<T> {
    /// A job as a handler would see it on its first attempt, for testing
    /// handlers without Redis.
    pub fn new(payload: T) -> Job<T> {
        Job {
            id: JobId::from(String::from("test-job")),
            name: String::new(),
            priority: Priority::default(),
            attempt: 1,
            max_attempts: 3,
            deliveries: 1,
            enqueued_ms: crate::time::now_ms(),
            timeout: None,
            traceparent: None,
            tracker: None,
            reported: None,
            stop: StopSignal::default(),
            claimed_ms: crate::time::now_ms(),
            payload,
        }
    }

    /// Uses `token` as the job's stop signal (for tests of handlers that
    /// watch [`Job::stopped`]).
    pub fn with_stop_signal(mut self, token: CancellationToken) -> Job<T> {
        self.stop = StopSignal::new(Arc::new(token), Arc::new(JobStop::default()));
        self
    }

    /// Sets the priority (for tests).
    pub fn with_priority(mut self, priority: Priority) -> Job<T> {
        self.priority = priority;
        self
    }

    /// Sets the name (for tests).
    pub fn with_name(mut self, name: impl Into<String>) -> Job<T> {
        self.name = name.into();
        self
    }

    /// Sets the attempt number (for tests).
    pub fn with_attempt(mut self, attempt: u32) -> Job<T> {
        self.attempt = attempt;
        self
    }

    /// The job's id, the same on every attempt.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The name or type given at enqueue (empty if none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The priority the job was read from.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Which attempt this is: 1 on the first run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many times this stream entry has been delivered, this time
    /// included: above 1 when a worker holding it died or hung and it was
    /// reclaimed. (Retries are new entries; see [`Job::attempt`].)
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// How many attempts the job may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// When the job was first enqueued, in Unix milliseconds.
    pub fn enqueued_ms(&self) -> u64 {
        self.enqueued_ms
    }

    /// When this worker claimed the job, Unix ms (the time the claiming
    /// script ran with; under a group rate limit, when its group's token
    /// was spent): the moment a rate limit counts it as started.
    pub fn claimed_ms(&self) -> u64 {
        self.claimed_ms
    }

    /// How long this run may take, if the job set a limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The producer's W3C `traceparent`, if it sent one
    /// ([`crate::EnqueueOptions::traceparent`]). The worker also records it
    /// on the job's `streamq.process` span.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// Reports how far along the job is, 0 to 100 (larger values count as
    /// 100), readable by anyone through [`crate::Queue::job`] and as a
    /// `progress` event ([`crate::Queue::events`]). Recorded only when the
    /// queue tracks jobs ([`crate::QueueBuilder::track_jobs`]) or records
    /// events ([`crate::QueueBuilder::events`]); otherwise, and in tests, it
    /// does nothing. Never blocks.
    pub fn progress(&self, percent: u8) {
        if let Some(tracker) = &self.tracker {
            self.mark_reported();
            tracker.send(TrackEvent::Progress {
                id: self.id.to_string(),
                percent: percent.min(100),
            });
        }
    }

    /// Appends a line to the job's log, readable through
    /// [`crate::Queue::job`]. Lines are cut at 1 KiB; the last 100 are kept.
    /// Recorded only when the queue tracks jobs. Never blocks.
    pub fn log(&self, line: impl Into<String>) {
        if let Some(tracker) = &self.tracker {
            let mut line = line.into();
            if line.len() > MAX_LOG_LINE {
                let mut cut = MAX_LOG_LINE;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
            }
            self.mark_reported();
            tracker.send(TrackEvent::Log {
                id: self.id.to_string(),
                line,
            });
        }
    }

    fn mark_reported(&self) {
        if let Some(reported) = &self.reported {
            reported.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the worker has asked this job to stop: it is shutting down,
    /// or the job was cancelled ([`crate::Queue::cancel`]). See
    /// [`Job::stopped`].
    pub fn is_stopping(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Completes when the worker asks this job to stop, for one of two
    /// reasons:
    ///
    /// - **The worker is shutting down.** A handler may finish anyway
    ///   within the worker's
    ///   [`WorkerConfig::shutdown_grace`](crate::WorkerConfig::shutdown_grace);
    ///   or it may stop early by returning a retryable [`JobError`], and the
    ///   job is then handed back to the queue at once without spending an
    ///   attempt. Handlers still running when the grace period ends are
    ///   dropped and their jobs handed back the same way.
    /// - **The job was cancelled** ([`crate::Queue::cancel`]; only this job
    ///   is signalled, within a heartbeat, `lease / 3`). Any error the
    ///   handler then returns ends the job as cancelled: it moves to the
    ///   dead letters with the error `cancelled: <message>`, and is neither
    ///   retried nor handed back. Returning `Ok` completes it as usual.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: made for `tokio::select!`.
    pub async fn stopped(&self) {
        self.stop.stopped().await;
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> T {
        self.payload
    }
}

/// Why a job failed, and whether it is worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl JobError {
    /// A failure another attempt may fix (a timeout, a dependency down).
    pub fn retry(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            permanent: false,
            retry_after: None,
        }
    }

    /// A failure no retry will fix: the job goes straight to the dead letters.
    pub fn permanent(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            permanent: true,
            retry_after: None,
        }
    }

    /// Not a failure: a downstream rate-limited the job (an HTTP 429 with
    /// `Retry-After`, say). The job runs again after `after`, without
    /// spending an attempt and without counting as failed.
    pub fn rate_limited(after: Duration) -> JobError {
        JobError {
            message: format!("rate-limited, retry after {after:?}"),
            permanent: false,
            retry_after: Some(after),
        }
    }

    /// When the job should run again, for [`JobError::rate_limited`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, as stored with the dead letter.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

/// Processes jobs. Implemented for every `Fn(Job<T>) -> impl Future<Output =
/// Result<R, JobError>>`, so an async closure is a handler.
///
/// Returning `Ok` completes the job, and its value `R` is its result: kept
/// for [`crate::Queue::job_result`] when the queue keeps results
/// ([`crate::QueueBuilder::keep_results`]); `()` is no result. An error is
/// retried or dead-lettered by its [`JobError`]; a panic counts as a
/// retryable failure.
pub trait Handler<T, R = ()>: Send + Sync + 'static {
    /// Runs one job.
    fn handle(&self, job: Job<T>) -> impl Future<Output = Result<R, JobError>> + Send;
}

impl<T, R, F, Fut> Handler<T, R> for F
where
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send,
{
    fn handle(&self, job: Job<T>) -> impl Future<Output = Result<R, JobError>> + Send {
        self(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closures_are_handlers_and_run_without_redis() {
        let handler = |job: Job<u32>| async move {
            if *job.payload() > 10 {
                Err(JobError::permanent("too big"))
            } else {
                Ok(())
            }
        };
        assert_eq!(handler.handle(Job::new(3)).await, Ok(()));
        let err = handler.handle(Job::new(11)).await.expect_err("fails");
        assert!(err.is_permanent());
        assert_eq!(err.to_string(), "too big");
    }
}
