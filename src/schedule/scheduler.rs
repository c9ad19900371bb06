//! [`Scheduler`]: enqueues the jobs of a queue's schedules, one per tick
//! however many schedulers run, waking at the next tick or when a schedule
//! changes, never polling.
//!
//! Each tick is claimed by `schedule_tick.lua`, a compare-and-set of the
//! schedule's due time: a scheduler says which due time it read and what the
//! next one is; only the first to arrive moves it on and enqueues the job,
//! the others get `STALE`. The idle wait is a blocking `XREAD` on the
//! changes stream from the id read before the schedules, so a change made
//! between the read and the wait wakes it at once.

use std::time::Duration;

use crate::protocol::cluster::Conn;
use redis::Value;
use tokio_util::sync::CancellationToken;

use super::store::{Definition, read_schedules};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::job_id::JobId;
use crate::protocol::envelope::{Envelope, NewJob};
use crate::protocol::reply::{self, Reply};
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::now_ms;

/// The longest one idle wait blocks before reading the schedules again.
const MAX_BLOCK: Duration = Duration::from_secs(30);

/// How long a tick's idempotency key lives, at least and at most.
const TICK_TTL_MIN_MS: u64 = 10_000;
const TICK_TTL_MAX_MS: u64 = 24 * 3600 * 1000;

/// Runs a queue's schedules ([`crate::Schedule`]): enqueues one job per
/// tick. Run one in every process that should keep schedules going (as many
/// as you like: a tick is claimed atomically, so each makes one job), or
/// call [`Scheduler::run_once`] from a loop of your own.
///
/// It is its own task, not part of [`crate::Worker`]: schedules may belong
/// to a queue whose workers run elsewhere (or are paused), and computing
/// cron ticks has no business in a worker's fetch loop.
///
/// # Examples
///
/// ```no_run
/// # async fn example(queue: streamq::Queue) -> Result<(), streamq::Error> {
/// use streamq::Scheduler;
/// use tokio_util::sync::CancellationToken;
///
/// let shutdown = CancellationToken::new();
/// let scheduler = tokio::spawn(Scheduler::new(&queue).run(shutdown.clone()));
/// // ... later
/// shutdown.cancel();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    queue: Queue,
}

/// What a scheduler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerReport {
    /// Jobs enqueued, one per tick this scheduler claimed.
    pub enqueued: u64,
    /// Ticks this scheduler claimed without a job: missed under
    /// [`crate::CatchUp::Skip`].
    pub skipped: u64,
    /// Ticks another scheduler claimed first (or whose schedule changed).
    pub stale: u64,
    /// When the next tick is due, Unix ms, after a [`Scheduler::run_once`].
    pub next_due_ms: Option<u64>,
}

impl Scheduler {
    /// A scheduler for `queue`'s schedules. Jobs get the queue handle's
    /// settings (max attempts, payload limit).
    pub fn new(queue: &Queue) -> Scheduler {
        Scheduler {
            queue: queue.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled: enqueues every due tick, then
    /// sleeps until the next one or until a schedule changes. Redis errors
    /// are logged and retried with capped backoff.
    ///
    /// # Errors
    ///
    /// None so far; the `Result` leaves room for errors no retry fixes.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: every tick is one atomic script call, so a dropped
    /// scheduler leaves each tick either claimed with its job or still due.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SchedulerReport, Error> {
        let mut total = SchedulerReport::default();
        let mut backoff = Backoff::redis();
        let mut blocking: Option<Conn> = None;
        while !shutdown.is_cancelled() {
            let pass = async {
                let last_change = last_change(&self.queue).await?;
                let pass = self.run_once().await?;
                Ok::<_, Error>((last_change, pass))
            };
            let (last_change, pass) = match pass.await {
                Ok(done) => {
                    backoff.reset();
                    done
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(queue = self.queue.name(), %err, retry_in = ?delay, "running schedules failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            total.enqueued += pass.enqueued;
            total.skipped += pass.skipped;
            total.stale += pass.stale;
            let wait = pass.next_due_ms.map_or(MAX_BLOCK, |due| {
                Duration::from_millis(due.saturating_sub(now_ms())).min(MAX_BLOCK)
            });
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                woken = self.wait_for_change(&mut blocking, &last_change, wait) => {
                    if let Err(err) = woken {
                        blocking = None;
                        tracing::warn!(queue = self.queue.name(), %err, "waiting for schedule changes failed");
                    }
                }
            }
        }
        Ok(total)
    }

    /// One pass: enqueues a job for every tick due now (as the catch-up
    /// policies say) and reports when the next is due.
    ///
    /// # Errors
    ///
    /// Redis errors. Ticks claimed before the error stay claimed, with their
    /// jobs; the rest stay due.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`Scheduler::run`].
    pub async fn run_once(&self) -> Result<SchedulerReport, Error> {
        let (definitions, due) = read_schedules(&self.queue).await?;
        let now = now_ms();
        let mut report = SchedulerReport::default();
        let mut next: Option<u64> = None;
        for (id, due_ms) in due {
            let Some(bytes) = definitions.get(&id) else {
                continue;
            };
            let definition = match Definition::decode(bytes) {
                Ok(definition) => definition,
                Err(err) => {
                    tracing::warn!(queue = self.queue.name(), schedule = id, %err, "skipping a schedule this build cannot read");
                    continue;
                }
            };
            let ticks = match definition.timing().parse() {
                Ok(ticks) => ticks,
                Err(problems) => {
                    tracing::warn!(
                        queue = self.queue.name(),
                        schedule = id,
                        ?problems,
                        "skipping an invalid schedule"
                    );
                    continue;
                }
            };
            if due_ms > now {
                next = Some(next.map_or(due_ms, |n| n.min(due_ms)));
                continue;
            }
            let next_due = ticks.after(now.max(due_ms));
            // A later tick passed too: the schedule missed ticks.
            let missed = ticks.after(due_ms).is_some_and(|t| t <= now);
            let run = !missed || definition.run_once;
            match self.tick(&id, &definition, due_ms, next_due, run).await? {
                Tick::Enqueued => report.enqueued += 1,
                Tick::Skipped => report.skipped += 1,
                Tick::Stale => report.stale += 1,
            }
            if let Some(due) = next_due {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        report.next_due_ms = next;
        Ok(report)
    }

    async fn tick(
        &self,
        id: &str,
        definition: &Definition,
        due_ms: u64,
        next_due: Option<u64>,
        run: bool,
    ) -> Result<Tick, Error> {
        let settings = self.queue.settings();
        let job_id = JobId::generate();
        let envelope = Envelope::encode_new_raw(
            NewJob {
                id: &job_id,
                name: &definition.name,
                max_attempts: definition.max_attempts.unwrap_or(settings.max_attempts),
                timeout_ms: definition.timeout_ms,
                ready_us: due_ms.saturating_mul(1000),
                trace: None,
                group: definition.rate_group.as_deref(),
                parent: None,
            },
            &definition.payload,
            settings.payload_limits(),
        )?;
        // A schedule with no tick to come keeps a due time it never reaches.
        let next = next_due.unwrap_or(i64::MAX as u64 / 2);
        let ttl = next
            .saturating_sub(due_ms)
            .saturating_mul(2)
            .clamp(TICK_TTL_MIN_MS, TICK_TTL_MAX_MS);
        let keys = self.queue.keys();
        let script = &scripts().schedule_tick;
        let mut call = script.call(
            keys,
            &[
                keys.schedule_due().to_owned(),
                keys.schedule_tick(id, due_ms),
            ],
        );
        call.arg(id)
            .arg(due_ms)
            .arg(next)
            .arg(u8::from(run))
            .arg(definition.priority().lua_index())
            .arg(job_id.as_str())
            .arg(ttl)
            .arg(&definition.name)
            .arg(u8::from(settings.metrics))
            .arg(envelope);
        match reply::check(script, call.invoke(&mut self.queue.conn()).await?)? {
            Reply::Stale => Ok(Tick::Stale),
            Reply::Done(mut body) => match body.optional_bytes()? {
                Some(_) => {
                    tracing::debug!(queue = self.queue.name(), schedule = id, job = %job_id, due_ms, "schedule tick enqueued");
                    Ok(Tick::Enqueued)
                }
                None => Ok(Tick::Skipped),
            },
            other => Err(Error::UnexpectedReply {
                script: "schedule_tick",
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Blocks until the changes stream has an entry after `last`, or `wait`
    /// passes.
    async fn wait_for_change(
        &self,
        blocking: &mut Option<Conn>,
        last: &str,
        wait: Duration,
    ) -> Result<(), Error> {
        let mut conn = match blocking.take() {
            Some(conn) => conn,
            None => self.queue.redis().blocking_connection(MAX_BLOCK).await?,
        };
        let block_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.queue.keys().schedule_changes())
            .arg(last)
            .query_async(&mut conn)
            .await?;
        *blocking = Some(conn);
        Ok(())
    }
}

enum Tick {
    Enqueued,
    Skipped,
    Stale,
}

/// The id of the newest change entry, or `0-0` when there is none.
async fn last_change(queue: &Queue) -> Result<String, Error> {
    queue.newest_entry_id(queue.keys().schedule_changes()).await
}
