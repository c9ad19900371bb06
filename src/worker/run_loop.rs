//! The run loop: keeps the handler slots busy. Fetches when there is room,
//! starts buffered jobs most urgent first, promotes due delayed jobs,
//! reclaims stalled ones on a timer, waits without polling when idle, and
//! backs off while Redis is away.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Worker;
use super::config::RetryBackoff;
use super::execute::run_job;
use super::fetch::{Claim, Claimed, Fetched, Fetcher, PriorityBuffer, Wait, next_native_claim};
use super::finish::{Counters, Finished};
use super::job::Handler;
use super::lease::Holdings;
use super::limit;
use super::promote;
use super::share::Share;
use super::tracker::Tracker;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::KeepResults;
use tokio::sync::watch;

/// How long a loop of a partitioned worker that holds work may put off
/// fetching while it has room for less than a batch.
const FETCH_LINGER: Duration = Duration::from_millis(2);

/// What every job task needs.
pub(super) struct JobContext<H> {
    pub(super) handler: H,
    pub(super) queue: String,
    pub(super) tracker: Option<Tracker>,
    pub(super) finished: mpsc::Sender<Finished>,
    pub(super) counters: Arc<Counters>,
    pub(super) backoff: RetryBackoff,
    pub(super) max_payload_bytes: usize,
    /// Cancelled when the worker starts shutting down: jobs see it.
    pub(super) stopping: CancellationToken,
    /// What the worker holds, with each job's own stop signal.
    pub(super) holdings: Holdings,
    pub(super) results: Option<KeepResults>,
}

/// The worker's moving parts between fetching and running.
pub(super) struct Lane {
    pub(super) fetcher: Fetcher,
    pub(super) buffer: PriorityBuffer,
    /// Jobs a blocking read claimed that may not start yet: the queue is
    /// paused, or more urgent jobs may still wait unclaimed. A later fetch
    /// releases them (`Fetched::floor`).
    pub(super) held: Vec<Claimed>,
    pub(super) running: JoinSet<()>,
    pub(super) holdings: Holdings,
    /// For one loop of a partitioned worker: the slots it shares.
    pub(super) share: Option<LaneShare>,
}

/// One partition loop's view of the shared slots (`share`).
pub(super) struct LaneShare {
    pub(super) share: Arc<Share>,
    pub(super) lane: usize,
    pub(super) changes: watch::Receiver<u64>,
    /// The most urgent priority that may still wait unclaimed in this
    /// partition, as the last fetch left it.
    pub(super) floor: Option<Priority>,
}

/// [`Fetcher::claim_blocking`], ended early by shutdown without dropping
/// what it claimed: Redis is asked to end the read, and its reply awaited.
async fn claim_while_idle(
    fetcher: &mut Fetcher,
    room: usize,
    block: Duration,
    shutdown: &CancellationToken,
) -> Result<Claim, Error> {
    let unblocker = fetcher.unblocker().await?;
    let claim = fetcher.claim_blocking(room, block);
    tokio::pin!(claim);
    tokio::select! {
        claimed = &mut claim => claimed,
        () = shutdown.cancelled() => {
            unblocker.unblock().await;
            claim.await
        }
    }
}

/// The stream entries of claimed jobs, to hold.
fn entries(jobs: &[Claimed]) -> impl Iterator<Item = (Priority, &str)> {
    jobs.iter().map(|job| (job.priority, job.entry_id.as_str()))
}

/// Waits until the shared slots change; never, without a share.
async fn share_changed(share: &mut Option<LaneShare>) {
    match share {
        Some(s) => {
            if s.changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Worker {
    pub(super) async fn fetch_loop<T, R, H>(
        &self,
        lane: &mut Lane,
        context: &Arc<JobContext<H>>,
        shutdown: &CancellationToken,
    ) where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        // Under a rate limit, claim only what starts now: a claim is a start.
        let prefetch = match self.config.rate_limit {
            Some(_) => 0,
            None => self.config.prefetch,
        };
        let capacity = self.config.concurrency + prefetch;
        // Claim in the idle wait (fetch.rs) where nothing else must see
        // every claim: not under a rate limit (global or per group), not
        // with prefetch(0), not on a partition loop.
        let claim_in_wait =
            prefetch > 0 && lane.share.is_none() && self.config.group_rate_limit.is_none();
        let mut backoff = Backoff::redis();
        let mut next_promote = Instant::now();
        let mut next_reclaim = Instant::now();
        let mut paused = false;
        // Set when a fetch read every stream to its end: the next wait can
        // start without fetching again first (ids gone stale meanwhile only
        // make an XREAD return at once).
        let mut drained: Option<Wait> = None;
        // Set when the last claim filled the room and ended in this
        // priority: the next claims go outside the script, down to it
        // (`Fetcher::claim_native`), while the backlog lasts.
        let mut native_upto: Option<Priority> = None;
        let mut last_fetch = Instant::now();
        while !shutdown.is_cancelled() {
            while lane.running.try_join_next().is_some() {}
            self.dispatch::<T, R, H>(lane, context);
            let room = capacity.saturating_sub(lane.running.len() + lane.buffer.len());
            let now = Instant::now();
            // One loop of a partitioned worker sees a share of the
            // completions, each freeing room for one job: fetching at once
            // would cost a script call per job. While it holds work it
            // waits for a quarter of its capacity, or FETCH_LINGER, so that
            // more urgent work behind its buffer waits no longer than that.
            let batch = if lane.share.is_some() && !lane.buffer.is_empty() {
                (capacity / 4).max(1)
            } else {
                1
            };
            let linger_until = last_fetch + FETCH_LINGER;
            let hold_off = room == 0 || (room < batch && now < linger_until);
            if now >= next_promote {
                next_promote = now + self.promote().await;
            }
            // While paused, stalled jobs stay where they are: running them
            // would be fetching too.
            if now >= next_reclaim && !hold_off && !paused {
                self.reclaim::<T, R, H>(lane, context, room).await;
                next_reclaim = now + self.config.reclaim_interval;
                continue;
            }
            let upkeep_at = next_promote.min(next_reclaim);
            if hold_off {
                // Jobs may pile up meanwhile: claiming in a blocking read
                // then could take a low job before critical ones, so the
                // next claim is a fetch.
                if drained == Some(Wait::Claim) {
                    drained = None;
                }
                // Reclaiming waits for room: only promotion can be due now,
                // and the end of the linger when there is some room.
                let upkeep_at = if room == 0 {
                    next_promote
                } else {
                    next_promote.min(linger_until)
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = lane.running.join_next(), if !lane.running.is_empty() => {}
                    _ = share_changed(&mut lane.share) => {}
                    _ = tokio::time::sleep_until(upkeep_at) => {}
                }
                continue;
            }
            // Never cancelled: a fetch dropped mid-flight may have claimed jobs.
            let fetched = match drained.take() {
                Some(Wait::Claim) if lane.buffer.is_empty() => {
                    let block = upkeep_at.saturating_duration_since(now);
                    let claimed = claim_while_idle(&mut lane.fetcher, room, block, shutdown).await;
                    claimed.map(|Claim { read, more, then }| {
                        if let Fetched::Claimed(full) = then {
                            native_upto = next_native_claim(full, more.len());
                        }
                        lane.holdings.hold_all(entries(&read).chain(entries(&more)));
                        lane.held.extend(read);
                        lane.held.extend(more);
                        then
                    })
                }
                Some(wait) => Ok(Fetched::Idle(wait)),
                None => {
                    last_fetch = now;
                    match native_upto.take() {
                        Some(upto) if claim_in_wait => {
                            let claimed = lane.fetcher.claim_native(room, upto).await;
                            claimed.map(|(jobs, fetched)| {
                                if let Fetched::Claimed(full) = fetched {
                                    native_upto = next_native_claim(full, jobs.len());
                                }
                                lane.holdings.hold_all(entries(&jobs));
                                lane.held.extend(jobs);
                                fetched
                            })
                        }
                        _ => {
                            let limit = self.config.rate_limit;
                            let fetched = lane.fetcher.fetch(room, limit, claim_in_wait).await;
                            if let Ok(Fetched::Jobs(jobs, None)) = &fetched {
                                if claim_in_wait && jobs.len() >= room {
                                    native_upto = jobs.last().map(|job| job.priority);
                                }
                            }
                            fetched
                        }
                    }
                }
            };
            // Held jobs start once nothing more urgent waits (and the queue
            // runs), ahead of what this fetch claimed of their priority.
            if let Ok(fetched) = &fetched {
                if !lane.held.is_empty() && !matches!(fetched, Fetched::Paused) {
                    let floor = fetched.floor();
                    let (ready, wait): (Vec<_>, Vec<_>) = lane
                        .held
                        .drain(..)
                        .partition(|job| floor.is_none_or(|f| job.priority.index() <= f.index()));
                    lane.held = wait;
                    lane.buffer.extend(ready);
                    self.dispatch::<T, R, H>(lane, context);
                }
            }
            if let Some(s) = &mut lane.share {
                // A full fetch that did not read every stream to its end
                // may have left more behind, from the last claimed job's
                // priority down.
                s.floor = match &fetched {
                    Ok(Fetched::Jobs(jobs, None)) if jobs.len() >= room => {
                        jobs.last().map(|j| j.priority)
                    }
                    _ => None,
                };
                // Say so now: an idle loop is about to block, and must not
                // hold the others back with an old floor meanwhile.
                if !matches!(fetched, Ok(Fetched::Jobs(..))) {
                    s.share.announce(s.lane, lane.buffer.peek_priority());
                }
            }
            let now_paused = match &fetched {
                Ok(Fetched::Paused) => true,
                Ok(_) => false,
                Err(_) => paused,
            };
            if paused != now_paused {
                paused = now_paused;
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
                Ok(Fetched::Jobs(jobs, wait)) => {
                    drained = wait;
                    lane.holdings.hold_all(entries(&jobs));
                    let jobs = match self.config.group_rate_limit {
                        Some(limit) => {
                            let (queue, consumer) = (&self.queue, &self.consumer);
                            limit::admit(queue, consumer, limit, jobs, &lane.holdings, shutdown)
                                .await
                        }
                        None => jobs,
                    };
                    lane.buffer.extend(jobs);
                    Ok(())
                }
                // Tokens are due in `wait`: sleep exactly that, no polling.
                Ok(Fetched::RateLimited(wait)) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(upkeep_at.min(Instant::now() + wait)) => Ok(()),
                    }
                }
                // Nothing new, but claimed jobs wait for a slot: wait for a
                // slot, not for Redis.
                Ok(Fetched::Idle(_)) if !lane.buffer.is_empty() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = lane.running.join_next(), if !lane.running.is_empty() => Ok(()),
                        _ = share_changed(&mut lane.share) => Ok(()),
                        _ = tokio::time::sleep_until(upkeep_at) => Ok(()),
                    }
                }
                Ok(Fetched::Idle(Wait::After(last_ids))) => {
                    let block = upkeep_at.saturating_duration_since(Instant::now());
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        woken = lane.fetcher.wait_for_new(&last_ids, block) => woken,
                    }
                }
                Ok(Fetched::Idle(Wait::Claim)) => {
                    drained = Some(Wait::Claim);
                    Ok(())
                }
                // Held above; they start once a claim shows nothing more
                // urgent waits, this one included.
                Ok(Fetched::Claimed(_)) => Ok(()),
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) => backoff.reset(),
                Err(err) => {
                    let delay = backoff.next_delay();
                    let err = self.queue.name_wrong_key(err).await;
                    tracing::warn!(queue = self.queue.name(), %err, retry_in = ?delay, "fetching jobs failed");
                    if reply::is_nogroup(&err) {
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
    pub(super) async fn start(&self, shutdown: &CancellationToken) -> Result<bool, Error> {
        let mut backoff = Backoff::redis();
        loop {
            match self.queue.ensure_groups().await {
                Ok(()) => return Ok(true),
                Err(err) if err.is_retryable() => {
                    let delay = backoff.next_delay();
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
    pub(super) fn dispatch<T, R, H>(&self, lane: &mut Lane, context: &Arc<JobContext<H>>)
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        if let Some(s) = &mut lane.share {
            s.changes.borrow_and_update();
            while let Some(priority) = lane.buffer.peek_priority() {
                let Some(slot) = s.share.try_start(s.lane, priority) else {
                    break;
                };
                let Some(claimed) = lane.buffer.pop() else {
                    break;
                };
                let context = context.clone();
                lane.running.spawn(async move {
                    run_job::<T, R, H>(claimed, context).await;
                    drop(slot);
                });
            }
            let held = lane.buffer.peek_priority();
            let floor = match (held, s.floor) {
                (Some(a), Some(b)) => Some(if a.index() <= b.index() { a } else { b }),
                (a, b) => a.or(b),
            };
            s.share.announce(s.lane, floor);
            return;
        }
        while lane.running.len() < self.config.concurrency {
            let Some(claimed) = lane.buffer.pop() else {
                break;
            };
            lane.running
                .spawn(run_job::<T, R, H>(claimed, context.clone()));
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

    /// Leaves the consumer group where this worker owns nothing.
    pub(super) async fn retire(&self) {
        let script = &scripts().retire_consumer;
        let mut call = script.call(self.queue.keys(), &[] as &[&str]);
        call.arg(GROUP).arg(&self.consumer);
        let kept = match call.invoke(&mut self.queue.conn()).await {
            Ok(reply) => reply::done(script, reply).and_then(|mut body| body.int()),
            Err(err) => Err(Error::from(err)),
        };
        match kept {
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
