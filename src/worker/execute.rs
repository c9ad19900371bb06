//! Executing one claimed job: decode it (poison goes to the dead letters),
//! run the handler with its timeout, catch panics, and decide the outcome:
//! completed, retry later, or dead.

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::Instrument;

use super::config::RetryBackoff;
use super::fetch::Claimed;
use super::finish::{Counters, Finished, Outcome};
use super::job::{Handler, Job, JobError};
use super::run_loop::JobContext;
use super::stop::StopSignal;
use super::tracker::TrackEvent;
use crate::error::Error;
use crate::protocol::envelope::{Envelope, ParentRef};
use crate::queue::KeepResults;
use crate::time::{micros, now_us};

/// Decodes, runs and reports one claimed job.
///
/// Every job is a task of its own, and the runtime copies a task's future
/// whole several times over its life (into the task, out of it when done),
/// so what this holds across its waits is kept small: the handler runs
/// boxed, and the outcome goes to the finisher without waiting while the
/// finisher keeps up (docs/benchmarks.md, "Round two, eighth sitting").
pub(super) async fn run_job<T, R, H>(claimed: Claimed, context: Arc<JobContext<H>>)
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    H: Handler<T, R>,
{
    let mut report = Report {
        name: String::new(),
        job_id: String::new(),
        wait_us: 0,
        run_us: 0,
        parent: None,
        enqueued_ms: 0,
        started_ms: 0,
        leftovers: true,
    };
    let (outcome, ran) = match start::<T, R, H>(&claimed, &context, &mut report) {
        Ok(Started {
            run,
            at,
            reported,
            earlier_runs,
        }) => {
            let outcome = run.await;
            let leftovers = earlier_runs || reported.is_none_or(|r| r.load(Ordering::Relaxed));
            (outcome, Some((at.elapsed(), leftovers)))
        }
        Err(done) => (done, None),
    };
    if let Some((took, leftovers)) = ran {
        report.run_us = micros(took);
        report.leftovers = leftovers;
    }
    let finished = report.finished(claimed, outcome);
    let behind = match context.finished.try_send(finished) {
        Ok(()) => return,
        Err(TrySendError::Full(finished)) => Box::pin(context.finished.send(finished)),
        Err(TrySendError::Closed(_)) => return finisher_gone(),
    };
    if behind.await.is_err() {
        finisher_gone();
    }
}

/// Says that an outcome could not be recorded: its job's lease runs out and
/// another worker reclaims it.
fn finisher_gone() {
    tracing::error!("finisher stopped before a job's outcome was recorded; it will be reclaimed");
}

/// A job's handler, started.
struct Started<F> {
    /// The handler's run, boxed: a job's task would otherwise hold room for
    /// the handler's future for the whole of its life.
    run: Pin<Box<F>>,
    at: Instant,
    /// Set once the job reported progress or logged (tracking only).
    reported: Option<Arc<AtomicBool>>,
    /// Whether earlier runs of the job may have left tracking behind.
    earlier_runs: bool,
}

/// Decodes a claimed job and starts its handler, filling in `report`; or
/// its outcome when it cannot run (poison, or cancelled while it waited for
/// a slot).
fn start<'a, T, R, H>(
    claimed: &'a Claimed,
    context: &'a JobContext<H>,
    report: &'a mut Report,
) -> Result<Started<impl Future<Output = Outcome> + Send + 'a>, Outcome>
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    H: Handler<T, R>,
{
    let (stop, cancelled) = context
        .holdings
        .stop_signal(claimed.priority, &claimed.entry_id);
    let (mut job, ready_us) =
        decode::<T>(claimed, context.max_payload_bytes, stop, &mut report.parent)?;
    report.name.clone_from(&job.name);
    report.job_id = job.id.to_string();
    report.enqueued_ms = job.enqueued_ms;
    if cancelled {
        Counters::add(&context.counters.cancelled, 1);
        tracing::info!(job = report.job_id, "job cancelled before it started");
        return Err(Outcome::Dead {
            job_id: report.job_id.clone(),
            attempts: job.attempt.saturating_sub(1),
            error: "cancelled before it started".to_owned(),
            failed_run: false,
        });
    }
    let mut reported = None;
    if let Some(tracker) = &context.tracker {
        tracker.send(TrackEvent::Started {
            id: report.job_id.clone(),
            name: job.name.clone(),
            entry: claimed.entry_id.clone(),
            priority: claimed.priority,
            attempt: job.attempt,
            enqueued_ms: job.enqueued_ms,
        });
        job.tracker = Some(tracker.clone());
        let flag = Arc::new(AtomicBool::new(false));
        job.reported = Some(flag.clone());
        reported = Some(flag);
    }
    let earlier_runs = job.attempt > 1 || claimed.deliveries > 1;
    let at = Instant::now();
    let started_us = now_us();
    report.started_ms = started_us / 1000;
    report.wait_us = started_us.saturating_sub(ready_us);
    let span = tracing::info_span!(
        "streamq.process",
        job_id = %job.id,
        queue = context.queue.as_str(),
        priority = %job.priority,
        attempt = job.attempt,
        traceparent = job.traceparent.as_deref().unwrap_or(""),
    );
    let child = report.parent.is_some();
    let run = run_handler(claimed, context, job, &report.job_id, child).instrument(span);
    Ok(Started {
        run: Box::pin(run),
        at,
        reported,
        earlier_runs,
    })
}

/// A job's name, id and timings, for per-name metrics and tracking.
struct Report {
    name: String,
    job_id: String,
    wait_us: u64,
    run_us: u64,
    /// The flow parent, when the job is a flow child.
    parent: Option<ParentRef>,
    /// Unix ms; 0 until known.
    enqueued_ms: u64,
    started_ms: u64,
    /// Whether the job's `job:<id>` hash or log may exist (see `Finished`).
    leftovers: bool,
}

impl Report {
    /// What the finisher gets: the job's outcome with this report.
    fn finished(self, claimed: Claimed, outcome: Outcome) -> Finished {
        let job_id = if self.job_id.is_empty() {
            poison_job_id(&outcome)
        } else {
            self.job_id
        };
        Finished {
            priority: claimed.priority,
            entry_id: claimed.entry_id,
            job_id,
            outcome,
            name: self.name,
            wait_us: self.wait_us,
            run_us: self.run_us,
            deliveries: claimed.deliveries,
            parent: self.parent,
            enqueued_ms: self.enqueued_ms,
            started_ms: self.started_ms,
            leftovers: self.leftovers,
        }
    }
}

/// Runs the handler (with its timeout, catching panics) and decides the
/// job's outcome.
async fn run_handler<T, R, H>(
    claimed: &Claimed,
    context: &JobContext<H>,
    job: Job<T>,
    job_id: &str,
    flow_child: bool,
) -> Outcome
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    H: Handler<T, R>,
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
        Ok(value) => Outcome::Completed {
            // A flow child's result is for its parent, kept or not here.
            result: keep_result(
                &value,
                context.results.or(flow_child.then(KeepResults::default)),
                job_id,
            ),
        },
        // Cancelled (`Queue::cancel`): whatever the error, the job is done
        // with, neither retried nor handed back, and kept as a dead letter
        // so an operator can see it and requeue it. This wins over a
        // shutdown: a job someone cancelled must not run again elsewhere.
        Err(err)
            if context
                .holdings
                .cancel_requested(claimed.priority, &claimed.entry_id) =>
        {
            Counters::add(&context.counters.cancelled, 1);
            tracing::info!(job = job_id, error = %err, "job stopped after a cancel request");
            Outcome::Dead {
                job_id: job_id.to_owned(),
                attempts: attempt,
                error: format!("cancelled: {err}"),
                failed_run: false,
            }
        }
        Err(err) if err.retry_after().is_some() => {
            let after = err.retry_after().unwrap_or_default();
            super::limit::deferred_outcome(claimed, after, job_id)
        }
        Err(err) if err.is_permanent() => Outcome::Dead {
            job_id: job_id.to_owned(),
            attempts: attempt,
            error: err.message().to_owned(),
            failed_run: true,
        },
        // Stopped early because the worker is shutting down: not a failed
        // attempt, so the job goes back to the queue as it was.
        Err(err) if context.stopping.is_cancelled() => {
            tracing::info!(job = job_id, error = %err, "job stopped for shutdown; handing it back");
            Outcome::Release
        }
        Err(err) if attempt >= max_attempts => Outcome::Dead {
            job_id: job_id.to_owned(),
            attempts: attempt,
            error: format!("failed {attempt} of {max_attempts} attempts, last: {err}"),
            failed_run: true,
        },
        Err(err) => retry_outcome(claimed, &context.backoff, attempt, job_id.to_owned(), &err),
    }
}

/// The bytes to keep as a job's result: its MessagePack encoding, unless
/// the queue keeps no results, the handler returned nothing (`()`), or the
/// result is over the size limit (then it is dropped, with a warning).
fn keep_result<R: Serialize>(
    value: &R,
    policy: Option<KeepResults>,
    job_id: &str,
) -> Option<Vec<u8>> {
    let policy = policy?;
    let bytes = match rmp_serde::to_vec_named(value) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(job = job_id, %err, "cannot encode the job's result; it is not kept");
            return None;
        }
    };
    if bytes == NO_RESULT {
        return None;
    }
    if bytes.len() > policy.max_bytes {
        tracing::warn!(
            job = job_id,
            bytes = bytes.len(),
            limit = policy.max_bytes,
            "the job's result is over the size limit; it is not kept"
        );
        return None;
    }
    Some(bytes)
}

/// MessagePack `nil`: what `()` encodes to.
const NO_RESULT: &[u8] = &[0xc0];

/// The next attempt of a job that failed attempt `attempt`.
fn retry_outcome(
    claimed: &Claimed,
    backoff: &RetryBackoff,
    attempt: u32,
    job_id: String,
    err: &JobError,
) -> Outcome {
    let delay = backoff.delay(attempt, fastrand::f64());
    let due_us = now_us().saturating_add(micros(delay));
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
    stop: StopSignal,
    parent: &mut Option<ParentRef>,
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
    // `Error::Decode` says "cannot decode job: ..."; the dead letter says
    // what could not be decoded once.
    let why = |e: Error| match e {
        Error::Decode(detail) => detail,
        other => other.to_string(),
    };
    let envelope = Envelope::decode(bytes)
        .map_err(|e| poison("", 1, format!("undecodable job: {}", why(e))))?;
    parent.clone_from(&envelope.parent);
    let attempt = envelope.attempt + 1;
    let payload = envelope.payload::<T>(max_bytes).map_err(|e| {
        poison(
            &envelope.id,
            attempt,
            format!("undecodable payload: {}", why(e)),
        )
    })?;
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
        reported: None,
        stop,
        claimed_ms: claimed.claimed_ms,
        payload,
    };
    Ok((job, envelope.ready_us))
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
