//! Finishing jobs: one task receives every outcome, acknowledges completed
//! jobs in batches (one `ack` script call per batch), schedules retries and
//! moves failed jobs to the dead letters, one script call each. Every call is
//! fenced: only the entry's current owner can finish it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::cluster::Conn;
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::config::{DeadLettered, WorkerConfig};
use super::lease::{Holdings, hand_back};
use super::tracker::{Run, TrackEvent, Tracker};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::envelope::ParentRef;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::{COMMON_KEYS, ScriptCall, scripts};
use crate::queue::Queue;
use crate::time::{millis, now_ms};

mod ack_args;
mod flow_child;

/// How one run of a job ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done; `result`: the bytes to keep as its result, if any.
    Completed { result: Option<Vec<u8>> },
    /// Not finished, to be handed back to the queue as it is (the worker is
    /// shutting down): no attempt spent.
    Release,
    /// Failed, with attempts left: run again at `due_ms` with this envelope.
    Retry {
        envelope: Vec<u8>,
        due_ms: u64,
        attempt: u32,
        error: String,
    },
    /// A downstream rate-limited it: run again at `due_ms` with this
    /// envelope, attempt count unchanged.
    Defer { envelope: Vec<u8>, due_ms: u64 },
    /// Failed for good (or poison): dead-letter it with this error.
    Dead {
        job_id: String,
        attempts: u32,
        error: String,
        /// Whether a handler run failed (false for poison deliveries and
        /// undecodable entries), for the failed-attempts counter.
        failed_run: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) priority: Priority,
    pub(crate) entry_id: String,
    /// The job's id ("" when its envelope could not be read).
    pub(crate) job_id: String,
    pub(crate) outcome: Outcome,
    /// The job's name ("" when unreadable), for per-name metrics.
    pub(crate) name: String,
    /// Microseconds from ready to start, and from start to finish.
    pub(crate) wait_us: u64,
    pub(crate) run_us: u64,
    /// Deliveries of this entry, this one included.
    pub(crate) deliveries: u32,
    /// When the job was first enqueued, and when this run started (0 when
    /// it did not), Unix ms: for its tracked metadata.
    pub(crate) enqueued_ms: u64,
    pub(crate) started_ms: u64,
    /// Whether its tracked `job:<id>` hash or log may exist: its handler
    /// reported progress or logged, or an earlier attempt or delivery ran
    /// (which may have). When not, a completion has nothing to delete.
    pub(crate) leftovers: bool,
    /// The flow parent, when the job is a flow child: it is then completed
    /// or dead-lettered by `flow_child`, which settles the parent.
    pub(crate) parent: Option<ParentRef>,
}

/// What a worker did, counted as it happened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) ownership_lost: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// How long acks keep retrying a Redis error before giving up and leaving
/// the jobs pending (to be reclaimed and run again).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// How long a stopping worker keeps trying deferred moves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A retry or dead-letter move Redis refused, waiting to be tried again.
struct Deferred {
    finished: Finished,
    backoff: Backoff,
    due: Instant,
}

impl Deferred {
    fn new(finished: Finished) -> Deferred {
        Deferred {
            finished,
            backoff: Backoff::redis(),
            due: Instant::now(),
        }
    }

    /// Schedules the next try.
    fn backoff(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        self.due = Instant::now() + delay;
        delay
    }
}

impl Finisher {
    /// Records a tracked job's new state (when the queue tracks jobs).
    fn track(&self, event: impl FnOnce(String) -> TrackEvent, job: &Finished) {
        if let Some(tracker) = &self.tracker {
            if !job.job_id.is_empty() {
                tracker.send(event(job.job_id.clone()));
            }
        }
    }
}

/// A stream id `ms-seq` as numbers, for sorting; unparsable ids sort last.
fn stream_id_order(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .unwrap_or((u64::MAX, u64::MAX))
}

async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

pub(crate) struct Finisher {
    queue: Queue,
    consumer: String,
    conn: Conn,
    counters: Arc<Counters>,
    holdings: Holdings,
    config: WorkerConfig,
    tracker: Option<Tracker>,
    /// How long to gather more outcomes after the first of a batch.
    gather: Duration,
}

/// How long the finisher of one partition's loop gathers outcomes before
/// acknowledging them. It sees only its partition's share of the
/// completions, too few at a time to batch on their own: without it, each
/// job cost an `ack` call of its own.
const PARTITION_GATHER: Duration = Duration::from_millis(2);

impl Finisher {
    /// A finisher that sends its calls over `conn`.
    pub(crate) fn new(
        queue: &Queue,
        conn: Conn,
        consumer: &str,
        counters: Arc<Counters>,
        holdings: Holdings,
        config: &WorkerConfig,
        tracker: Option<Tracker>,
    ) -> Finisher {
        Finisher {
            queue: queue.clone(),
            consumer: consumer.to_owned(),
            conn,
            counters,
            holdings,
            config: config.clone(),
            tracker,
            gather: Duration::ZERO,
        }
    }

    /// Gathers outcomes for [`PARTITION_GATHER`] before finishing them (for
    /// the loops of a partitioned worker).
    pub(crate) fn gathering(mut self) -> Finisher {
        self.gather = PARTITION_GATHER;
        self
    }

    /// Runs until every sender is dropped and everything received is finished.
    ///
    /// Acks never wait behind a retry or dead-letter move that Redis refused
    /// (when full, say): such a move is deferred and tried again with
    /// backoff, its job still held and leased by this worker.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Finished>) {
        let max_batch = self.config.ack_batch;
        let mut batch = Vec::with_capacity(max_batch);
        // Kept across batches: a batch of outcomes is tens of KiB.
        let mut acks = Vec::with_capacity(max_batch);
        let mut deferred = Vec::new();
        loop {
            let next_due = deferred.iter().map(|d: &Deferred| d.due).min();
            tokio::select! {
                received = rx.recv_many(&mut batch, max_batch) => {
                    if received == 0 {
                        break;
                    }
                }
                _ = sleep_until_some(next_due) => {}
            }
            if !self.gather.is_zero() && !batch.is_empty() {
                let until = Instant::now() + self.gather;
                while batch.len() < max_batch {
                    let room = max_batch - batch.len();
                    tokio::select! {
                        received = rx.recv_many(&mut batch, room) => {
                            if received == 0 {
                                break;
                            }
                        }
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
            let mut releases = Vec::new();
            for finished in batch.drain(..) {
                match finished.outcome {
                    Outcome::Completed { .. } if finished.parent.is_none() => acks.push(finished),
                    Outcome::Release => releases.push((finished.priority, finished.entry_id)),
                    _ => {
                        self.apply_or_defer(Deferred::new(finished), &mut deferred)
                            .await;
                    }
                }
            }
            if !acks.is_empty() {
                self.ack(&mut acks).await;
                let acked = acks.iter().map(|f| (f.priority, f.entry_id.as_str()));
                self.holdings.forget_all(acked);
                acks.clear();
            }
            if !releases.is_empty() {
                self.release(&releases).await;
            }
            self.retry_due(&mut deferred, Instant::now()).await;
        }
        // Shutting down: a last chance for deferred moves; the jobs of those
        // that still fail stay held, for the worker to hand back.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !deferred.is_empty() && Instant::now() < deadline {
            let due = deferred.iter().map(|d| d.due).min().unwrap_or(deadline);
            tokio::time::sleep_until(due.min(deadline)).await;
            self.retry_due(&mut deferred, Instant::now()).await;
        }
        for d in deferred {
            tracing::error!(
                queue = self.queue.name(),
                entry = d.finished.entry_id,
                "could not finish a failed job before shutdown; it will be handed back or reclaimed"
            );
        }
    }

    /// Hands back jobs their handlers stopped early for shutdown.
    async fn release(&mut self, entries: &[(Priority, String)]) {
        match hand_back(&self.queue, &self.consumer, &self.holdings, entries).await {
            Ok(n) => Counters::add(&self.counters.released, n as u64),
            Err(err) => tracing::warn!(
                queue = self.queue.name(),
                %err,
                "could not hand jobs back; they will be reclaimed after their lease"
            ),
        }
    }

    async fn retry_due(&mut self, deferred: &mut Vec<Deferred>, now: Instant) {
        let (due, later): (Vec<Deferred>, Vec<Deferred>) =
            deferred.drain(..).partition(|d| d.due <= now);
        *deferred = later;
        for d in due {
            self.apply_or_defer(d, deferred).await;
        }
    }

    /// Tries a retry or dead-letter move once; defers it on a Redis error.
    async fn apply_or_defer(&mut self, mut item: Deferred, deferred: &mut Vec<Deferred>) {
        let result = match &item.finished.outcome {
            Outcome::Completed { .. } | Outcome::Dead { .. } if item.finished.parent.is_some() => {
                self.finish_child(&item.finished).await
            }
            Outcome::Completed { .. } | Outcome::Release => return,
            Outcome::Retry {
                envelope,
                due_ms,
                attempt,
                error,
            } => {
                let applied = self
                    .retry(&item.finished, envelope, *due_ms, *attempt, error)
                    .await;
                if applied.as_ref().is_ok_and(|&ours| ours) {
                    let event = |id| TrackEvent::Retrying {
                        id,
                        due_ms: *due_ms,
                        attempt: *attempt,
                        error: error.clone(),
                        run: Run::of(&item.finished),
                    };
                    self.track(event, &item.finished);
                }
                applied.map(drop)
            }
            Outcome::Defer { envelope, due_ms } => {
                let call = super::limit::defer_call(
                    &self.queue,
                    &self.consumer,
                    &item.finished,
                    envelope,
                    *due_ms,
                );
                self.fenced_call("defer", &call).await.map(drop)
            }
            Outcome::Dead {
                job_id,
                attempts,
                error,
                failed_run,
            } => {
                let applied = self
                    .dead_letter(&item.finished, job_id, *attempts, error, *failed_run)
                    .await;
                if let Ok(Some(dead_id)) = &applied {
                    let event = |id| TrackEvent::Dead {
                        id,
                        error: error.clone(),
                        attempts: *attempts,
                        dead_id: dead_id.clone(),
                        run: Run::of(&item.finished),
                    };
                    self.track(event, &item.finished);
                }
                applied.map(drop)
            }
        };
        match result {
            Ok(()) => self
                .holdings
                .forget(item.finished.priority, &item.finished.entry_id),
            Err(err) => {
                let delay = item.backoff();
                tracing::warn!(queue = self.queue.name(), entry = item.finished.entry_id, %err, retry_in = ?delay, "could not move a failed job yet; it stays pending and held");
                deferred.push(item);
            }
        }
    }

    async fn ack(&mut self, acks: &mut [Finished]) {
        // Sorted, each stream's ids form one range the script reads at once.
        // Each id parsed once, not once per comparison.
        acks.sort_by_cached_key(|f| (f.priority, stream_id_order(&f.entry_id)));
        let keys = self.queue.keys();
        let settings = self.queue.settings();
        let mut extra = vec![keys.latency().to_owned(), keys.events()];
        let mut result_keys = Vec::with_capacity(acks.len());
        for f in acks.iter() {
            match &f.outcome {
                Outcome::Completed { result: Some(_) } if !f.job_id.is_empty() => {
                    extra.push(keys.result(&f.job_id));
                    result_keys.push(COMMON_KEYS + extra.len());
                }
                _ => result_keys.push(0),
            }
        }
        let mut call = scripts().ack.call(keys, &extra);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(u8::from(settings.metrics))
            .arg(settings.results.map_or(0, |r| millis(r.ttl)))
            .arg(settings.events_cap())
            .arg(now_ms());
        let details = settings.events_cap() > 0 || result_keys.iter().any(|&k| k > 0);
        ack_args::push(&mut call, acks, &result_keys, details, settings.metrics);
        let span =
            tracing::debug_span!("streamq.ack", queue = self.queue.name(), jobs = acks.len());
        for f in acks.iter() {
            tracing::trace!(parent: &span, job_id = f.job_id, entry = f.entry_id, priority = %f.priority, name = f.name, "ack");
        }
        let Some(reply) = self.send("ack", &call).instrument(span).await else {
            return;
        };
        let lost = match reply::done(&scripts().ack, reply).and_then(|mut body| body.lost()) {
            Ok(lost) => lost,
            Err(err) => {
                tracing::error!(%err, "cannot read the ack reply; the jobs' state is unknown");
                return;
            }
        };
        let fenced = lost.len();
        Counters::add(
            &self.counters.completed,
            acks.len().saturating_sub(fenced) as u64,
        );
        if let Some(tracker) = &self.tracker {
            let refused: std::collections::HashSet<String> = lost.into_iter().collect();
            let acked = acks
                .iter()
                .filter(|f| !f.job_id.is_empty() && !refused.contains(&f.entry_id));
            for f in acked {
                tracker.send(TrackEvent::Completed {
                    id: f.job_id.clone(),
                    run: Run::of(f),
                });
            }
        }
        if fenced > 0 {
            Counters::add(&self.counters.ownership_lost, fenced as u64);
            tracing::warn!(
                queue = self.queue.name(),
                jobs = fenced,
                "finished jobs were no longer ours to ack (reclaimed by another worker)"
            );
        }
    }

    /// Schedules the retry: `Ok(true)` when applied, `Ok(false)` when the
    /// job was no longer ours.
    async fn retry(
        &mut self,
        job: &Finished,
        envelope: &[u8],
        due_ms: u64,
        attempt: u32,
        error: &str,
    ) -> Result<bool, Error> {
        let priority = job.priority;
        let keys = self.queue.keys();
        let mut call = scripts()
            .retry
            .call(keys, &[keys.delayed(), keys.events().as_str()]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(&job.entry_id)
            .arg(priority.lua_index())
            .arg(due_ms)
            .arg(envelope)
            .arg(&job.name)
            .arg(job.deliveries.saturating_sub(1))
            .arg(u8::from(self.queue.settings().metrics))
            .arg(self.queue.settings().events_cap())
            .arg(&job.job_id)
            .arg(attempt)
            .arg(error)
            .arg(now_ms());
        let applied = self.fenced_call("retry", &call).await?.is_some();
        if applied {
            Counters::add(&self.counters.retried, 1);
        }
        Ok(applied)
    }

    async fn dead_letter(
        &mut self,
        job: &Finished,
        job_id: &str,
        attempts: u32,
        error: &str,
        failed_run: bool,
    ) -> Result<Option<String>, Error> {
        let priority = job.priority;
        let keys = self.queue.keys();
        let mut call = scripts()
            .dead_letter
            .call(keys, &[keys.dead(), keys.events().as_str()]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(&job.entry_id)
            .arg(priority.lua_index())
            .arg(error)
            .arg(now_ms())
            .arg(job_id)
            .arg(attempts)
            .arg(self.queue.settings().max_dead_letters.unwrap_or(0))
            .arg(&job.name)
            .arg(u8::from(failed_run))
            .arg(job.deliveries.saturating_sub(1))
            .arg(u8::from(self.queue.settings().metrics))
            .arg(self.queue.settings().events_cap());
        let Some(mut body) = self.fenced_call("dead_letter", &call).await? else {
            return Ok(None);
        };
        let dead_id = body.text()?;
        Counters::add(&self.counters.dead_lettered, 1);
        tracing::warn!(
            queue = self.queue.name(),
            job = job_id,
            error,
            "job dead-lettered"
        );
        if let Some(hook) = &self.config.on_dead_letter {
            hook(&DeadLettered {
                job_id: JobId::from(job_id.to_owned()),
                priority,
                attempts,
                error: error.to_owned(),
            });
        }
        Ok(Some(dead_id))
    }

    /// Sends a fenced single-job call once: `Some(rest of the body)` when
    /// applied, `None` when the job is no longer ours (counted and logged).
    async fn fenced_call(
        &mut self,
        what: &'static str,
        call: &ScriptCall,
    ) -> Result<Option<reply::Body>, Error> {
        let reply = call.invoke(&mut self.conn).await?;
        let mut body = reply::done(call.script(), reply)?;
        if body.lost()?.is_empty() {
            return Ok(Some(body));
        }
        Counters::add(&self.counters.ownership_lost, 1);
        tracing::warn!(
            queue = self.queue.name(),
            what,
            "job was reclaimed by another worker; its new owner finishes it"
        );
        Ok(None)
    }

    /// Sends `call` until it succeeds, with capped exponential backoff, for
    /// up to [`GIVE_UP_AFTER`]. Returns `None` (after logging) when it gave
    /// up: the job then stays pending and is reclaimed later, so it is
    /// delayed or repeated, never lost. Out-of-memory refusals land here too.
    async fn send(&mut self, what: &str, call: &ScriptCall) -> Option<Value> {
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(2));
        loop {
            match call
                .invoke::<Value, _>(&mut self.conn)
                .await
                .map_err(Error::from)
            {
                Ok(value) => return Some(value),
                Err(err) if started.elapsed() < GIVE_UP_AFTER => {
                    let delay = backoff.next_delay();
                    let err = self.queue.name_wrong_key(err).await;
                    tracing::warn!(%err, what, retry_in = ?delay, "finishing a job failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(err) => {
                    tracing::error!(%err, what, "gave up finishing a job; it stays pending and will be reclaimed");
                    return None;
                }
            }
        }
    }
}
