//! Leases: which entries this worker holds (claimed, not yet finished), the
//! heartbeat that keeps them from being reclaimed while it lives, and the
//! hand-back of those it will not finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stop::{JobStop, StopSignal};
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;

/// Entries this worker holds, running or waiting for a slot, each with its
/// job's stop request. One map per priority: each priority's stream numbers
/// its entries itself, so one batch enqueued within a millisecond gives
/// entries of the same id in several streams.
#[derive(Debug, Default, Clone)]
pub(crate) struct Holdings {
    held: Arc<Mutex<HeldEntries>>,
    /// The worker's shutdown signal: part of every job's stop signal.
    stopping: Arc<CancellationToken>,
}

/// Per priority, each held entry's id and its job's stop request.
type HeldEntries = [HashMap<String, Arc<JobStop>>; 4];

impl Holdings {
    /// Holdings whose jobs also stop when `stopping` is cancelled.
    pub(crate) fn new(stopping: CancellationToken) -> Holdings {
        Holdings {
            held: Arc::default(),
            stopping: Arc::new(stopping),
        }
    }

    /// Holds an entry: claimed, not yet finished.
    pub(crate) fn hold(&self, priority: Priority, entry_id: &str) {
        self.hold_all([(priority, entry_id)]);
    }

    /// Holds a claim's entries, under one lock.
    pub(crate) fn hold_all<'a>(&self, entries: impl IntoIterator<Item = (Priority, &'a str)>) {
        let mut held = self.lock();
        for (priority, entry_id) in entries {
            held[priority.index()]
                .entry(entry_id.to_owned())
                .or_default();
        }
    }

    /// Stops holding an entry: it was finished, or handed back.
    pub(crate) fn forget(&self, priority: Priority, entry_id: &str) {
        self.forget_all([(priority, entry_id)]);
    }

    /// Stops holding a batch of entries, under one lock.
    pub(crate) fn forget_all<'a>(&self, entries: impl IntoIterator<Item = (Priority, &'a str)>) {
        let mut held = self.lock();
        for (priority, entry_id) in entries {
            held[priority.index()].remove(entry_id);
        }
    }

    /// Every entry held now.
    pub(crate) fn snapshot(&self) -> Vec<(Priority, String)> {
        let held = self.lock();
        Priority::ALL
            .into_iter()
            .flat_map(|p| held[p.index()].keys().map(move |id| (p, id.clone())))
            .collect()
    }

    /// The stop signal of a held entry's job: set on shutdown or when the
    /// job is cancelled; and whether it was cancelled already.
    pub(crate) fn stop_signal(&self, priority: Priority, entry_id: &str) -> (StopSignal, bool) {
        let job = self.lock()[priority.index()]
            .get(entry_id)
            .cloned()
            .unwrap_or_default();
        let cancelled = job.is_requested();
        (StopSignal::new(self.stopping.clone(), job), cancelled)
    }

    /// Whether a stop request reached this entry's job.
    pub(crate) fn cancel_requested(&self, priority: Priority, entry_id: &str) -> bool {
        self.lock()[priority.index()]
            .get(entry_id)
            .is_some_and(|stop| stop.is_requested())
    }

    /// Records a stop request for a held entry and signals its job (only
    /// that job). Returns whether it was new.
    fn request_stop(&self, priority: Priority, entry_id: &str) -> bool {
        self.lock()[priority.index()]
            .get(entry_id)
            .is_some_and(|stop| stop.request())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeldEntries> {
        // The maps stay consistent even if a holder panicked mid-update.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Entries renewed per script call.
const HEARTBEAT_CHUNK: usize = 500;

/// Renews the lease on every held entry each `lease / 3` until `stop`, and
/// signals the jobs whose entries have a stop request (`Queue::cancel`):
/// `lease / 3` is how long a stop request takes to be seen.
pub(crate) async fn heartbeat(
    queue: Queue,
    consumer: String,
    holdings: Holdings,
    lease: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = queue.conn();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held = holdings.snapshot();
        let script = &scripts().heartbeat;
        for chunk in held.chunks(HEARTBEAT_CHUNK) {
            let mut call = script.call(queue.keys(), &[queue.keys().stop_requests()]);
            call.arg(GROUP).arg(&consumer);
            for (priority, id) in chunk {
                call.arg(priority.lua_index()).arg(id);
            }
            let reply = call
                .invoke(&mut conn)
                .await
                .map_err(Error::from)
                .and_then(|reply| {
                    let mut body = reply::done(script, reply)?;
                    Ok((body.lost()?, body.lost()?))
                });
            match reply {
                Ok((lost, stop)) => {
                    if !lost.is_empty() {
                        tracing::debug!(
                            queue = queue.name(),
                            lost = lost.len(),
                            "leases already taken over by another worker"
                        );
                    }
                    // Each as its stop request's member: `<priority index>:<entry id>`.
                    let stop = stop.iter().filter_map(|member| {
                        let (p, entry) = member.split_once(':')?;
                        Some((Priority::from_lua_index(p.parse().ok()?)?, entry))
                    });
                    for (priority, entry) in stop {
                        if holdings.request_stop(priority, entry) {
                            tracing::info!(
                                queue = queue.name(),
                                entry,
                                "job cancelled; asking it to stop"
                            );
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(queue = queue.name(), %err, "lease heartbeat failed; retrying next beat");
                    break;
                }
            }
        }
    }
}

/// Hands entries back to the queue at once (the `release` script): each one
/// this consumer still owns becomes a new waiting entry that any worker can
/// fetch now, with its attempt count unchanged. They are no longer held
/// afterwards, handed back or not. Returns how many were handed back; on a
/// Redis error (out of memory, say) the rest stay pending and are reclaimed
/// after their lease.
pub(crate) async fn hand_back(
    queue: &Queue,
    consumer: &str,
    holdings: &Holdings,
    entries: &[(Priority, String)],
) -> Result<usize, Error> {
    let script = &scripts().release;
    let mut conn = queue.conn();
    let mut handed_back = 0;
    for chunk in entries.chunks(HEARTBEAT_CHUNK) {
        let mut call = script.call(queue.keys(), &[] as &[&str]);
        call.arg(GROUP).arg(consumer);
        for (priority, id) in chunk {
            call.arg(priority.lua_index()).arg(id);
        }
        let result = match call.invoke(&mut conn).await {
            Ok(reply) => reply::done(script, reply).and_then(|mut body| body.lost()),
            Err(err) => Err(Error::from(err)),
        };
        for (priority, id) in chunk {
            holdings.forget(*priority, id);
        }
        let lost = result?;
        handed_back += chunk.len() - lost.len();
        if !lost.is_empty() {
            tracing::debug!(
                queue = queue.name(),
                lost = lost.len(),
                "jobs to hand back were taken over by another worker already"
            );
        }
    }
    Ok(handed_back)
}
