//! The worker's side records, written off the job's path: tracked jobs as
//! they move (started, retrying, completed, dead-lettered: their live
//! record, then their final metadata; progress and log lines from
//! handlers), and the events only the worker knows of (started, progress,
//! reclaimed; the scripts write the others).
//!
//! Writes are single-key commands, batched into one pipeline per round trip
//! by a task of their own, and best-effort: a full channel drops an update
//! (counted in a log line), never slows a job. Lookups ([`crate::Queue::job`])
//! cross-check the live streams, so a late or lost update can make a state
//! unknown, never wrong about whether a job waits or runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::finish::Finished;

use crate::priority::Priority;
use crate::protocol::event_log;
use crate::protocol::keys::QueueKeys;
use crate::protocol::live::{LiveRecord, Started};
use crate::queue::JobTracking;
use crate::queue::Queue;
use crate::time::millis;
use crate::time::now_ms;

/// The most log lines kept per job, and the longest line (bytes).
pub(crate) const MAX_LOG_LINES: usize = 100;
pub(crate) const MAX_LOG_LINE: usize = 1024;

/// One change to a tracked job.
#[derive(Debug)]
pub(crate) enum TrackEvent {
    Started {
        id: String,
        name: String,
        entry: String,
        priority: Priority,
        attempt: u32,
        enqueued_ms: u64,
    },
    /// Taken over after its lease ran out (an event only).
    Reclaimed {
        id: String,
        name: String,
        priority: Priority,
        deliveries: u32,
    },
    Completed {
        id: String,
        run: Run,
    },
    Retrying {
        id: String,
        due_ms: u64,
        attempt: u32,
        error: String,
        run: Run,
    },
    Dead {
        id: String,
        error: String,
        attempts: u32,
        dead_id: String,
        run: Run,
    },
    Progress {
        id: String,
        percent: u8,
    },
    Log {
        id: String,
        line: String,
    },
}

/// What an ended job's metadata keeps of its last run (until it ends, its
/// live record holds this).
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) name: String,
    pub(crate) priority: Priority,
    pub(crate) entry: String,
    pub(crate) enqueued_ms: u64,
    /// 0 when it never started (poison, cancelled before it started).
    pub(crate) started_ms: u64,
    /// See `Finished::leftovers`.
    pub(crate) leftovers: bool,
}

impl Run {
    pub(crate) fn of(finished: &Finished) -> Run {
        Run {
            name: finished.name.clone(),
            priority: finished.priority,
            entry: finished.entry_id.clone(),
            enqueued_ms: finished.enqueued_ms,
            started_ms: finished.started_ms,
            leftovers: finished.leftovers,
        }
    }

    /// The run's fields in an ended job's metadata hash.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("name", self.name.clone()),
            ("p", self.priority.as_str().to_owned()),
            ("entry", self.entry.clone()),
            ("enq", self.enqueued_ms.to_string()),
        ];
        if self.started_ms > 0 {
            fields.push(("start", self.started_ms.to_string()));
        }
        fields
    }
}

/// Sends updates to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    tx: mpsc::Sender<TrackEvent>,
    dropped: Arc<AtomicU64>,
}

impl Tracker {
    /// Starts the writer task for `queue`, when it tracks jobs, records
    /// events, or (`clear_live`) must remove the live records that tracking
    /// producers wrote for the jobs this worker ends; `None` when there is
    /// nothing to write.
    pub(crate) fn spawn(
        queue: &Queue,
        clear_live: bool,
    ) -> Option<(Tracker, tokio::task::JoinHandle<()>)> {
        let settings = queue.settings();
        if settings.tracking.is_none() && settings.events.is_none() && !clear_live {
            return None;
        }
        let (tx, rx) = mpsc::channel(10_000);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(write(queue.clone(), rx, dropped.clone(), clear_live));
        Some((Tracker { tx, dropped }, writer))
    }

    /// Queues an update; drops it if the writer is far behind.
    pub(crate) fn send(&self, event: TrackEvent) {
        if self.tx.try_send(event).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "job tracking is behind; updates dropped");
            }
        }
    }
}

/// Whether a worker of `queue`, which does not track jobs, finds live
/// records that producers which do wrote: it must then remove those of the
/// jobs it ends, or they would stay. Logged, as a hint to turn tracking on.
pub(crate) async fn untracked_records(queue: &Queue) -> bool {
    if queue.settings().tracking.is_some() {
        return false;
    }
    let found: Result<bool, _> = redis::cmd("EXISTS")
        .arg(queue.keys().live())
        .query_async(&mut queue.conn())
        .await;
    let found = found.unwrap_or(false);
    if found {
        tracing::warn!(
            queue = queue.name(),
            "this queue's producers track jobs but this worker does not: it removes the \
             records of the jobs it ends; open the queue with track_jobs here as well to \
             keep their state readable"
        );
    }
    found
}

async fn write(
    queue: Queue,
    mut rx: mpsc::Receiver<TrackEvent>,
    dropped: Arc<AtomicU64>,
    clear_live: bool,
) {
    let keys = queue.keys().clone();
    let (tracking, events_cap) = (queue.settings().tracking, queue.settings().events_cap());
    let mut conn = queue.conn();
    let mut batch = Vec::with_capacity(512);
    let mut live = LiveWrites::new(keys.live());
    while rx.recv_many(&mut batch, 512).await > 0 {
        let mut pipe = redis::pipe();
        let mut completed_any = false;
        for event in batch.drain(..) {
            if events_cap > 0 {
                record_event(&mut pipe, &keys, events_cap, &event);
            }
            if let Some(tracking) = &tracking {
                completed_any |= record_metadata(&mut pipe, &mut live, &keys, tracking, event);
            } else if clear_live {
                if let TrackEvent::Completed { id, .. } | TrackEvent::Dead { id, .. } = event {
                    live.remove(id);
                }
            }
        }
        live.flush(&mut pipe);
        if let Err(err) = pipe.ignore_errors().exec_async(&mut conn).await {
            tracing::warn!(queue = queue.name(), %err, "could not record job tracking updates or events");
        }
        if let (true, Some(tracking)) = (completed_any, &tracking) {
            if let Err(err) = trim_completed(&mut conn, &keys, tracking).await {
                tracing::warn!(queue = queue.name(), %err, "could not trim retained completed jobs");
            }
        }
    }
    let lost = dropped.load(Ordering::Relaxed);
    if lost > 0 {
        tracing::warn!(
            queue = queue.name(),
            dropped = lost,
            "job tracking updates or events were dropped"
        );
    }
}

/// Adds the event the worker alone knows of (started, progress,
/// reclaimed) to the pipeline; the scripts write every other event.
fn record_event(pipe: &mut redis::Pipeline, keys: &QueueKeys, cap: u64, event: &TrackEvent) {
    let (kind, id, name, priority, detail) = match event {
        TrackEvent::Started {
            id,
            name,
            priority,
            attempt,
            ..
        } => (
            "started",
            id,
            name.as_str(),
            Some(*priority),
            ("attempt", *attempt),
        ),
        TrackEvent::Progress { id, percent } => {
            ("progress", id, "", None, ("progress", u32::from(*percent)))
        }
        TrackEvent::Reclaimed {
            id,
            name,
            priority,
            deliveries,
        } => (
            "reclaimed",
            id,
            name.as_str(),
            Some(*priority),
            ("deliveries", *deliveries),
        ),
        _ => return,
    };
    event_log::add(pipe, keys, cap, kind, id)
        .arg("name")
        .arg(name)
        .arg("p")
        .arg(priority.map_or("", Priority::as_str))
        .arg("at")
        .arg(now_ms())
        .arg(detail.0)
        .arg(detail.1);
}

/// Adds a tracked job's metadata update to the pipeline; true when a job
/// completed (the retained completed jobs then need trimming).
fn record_metadata(
    pipe: &mut redis::Pipeline,
    live_writes: &mut LiveWrites,
    keys: &QueueKeys,
    tracking: &JobTracking,
    event: TrackEvent,
) -> bool {
    let live = millis(tracking.keep_live);
    let finished = millis(tracking.keep_finished);
    let mut completed_any = false;
    match event {
        TrackEvent::Started {
            id,
            name,
            entry,
            priority,
            attempt,
            enqueued_ms,
        } => {
            let started = Started {
                at_ms: now_ms(),
                attempt,
            };
            let record = LiveRecord::started(priority, &entry, started, enqueued_ms, &name);
            live_writes.set(pipe, id, record);
        }
        // An ended job's metadata is written before its live record goes,
        // so that a lookup meanwhile finds one or both.
        TrackEvent::Completed { id, run } => {
            let (meta, log) = (keys.job(&id), keys.job_log(&id));
            if tracking.keep_completed == 0 {
                if run.leftovers {
                    pipe.cmd("DEL").arg(&meta).arg(&log);
                }
            } else {
                let now = now_ms();
                pipe.cmd("HSET")
                    .arg(&meta)
                    .arg(run.fields())
                    .arg("state")
                    .arg("completed")
                    .arg("fin")
                    .arg(now);
                pipe.cmd("PEXPIRE").arg(&meta).arg(finished);
                pipe.cmd("PEXPIRE").arg(&log).arg(finished);
                pipe.cmd("ZADD").arg(keys.completed()).arg(now).arg(&id);
                completed_any = true;
            }
            live_writes.remove(id);
        }
        TrackEvent::Retrying {
            id,
            due_ms,
            attempt,
            error,
            run,
        } => {
            let meta = keys.job(&id);
            let record = LiveRecord::delayed(run.priority, due_ms, run.enqueued_ms, &run.name);
            live_writes.set(pipe, id, record);
            pipe.cmd("HSET")
                .arg(&meta)
                .arg("att")
                .arg(attempt)
                .arg("err")
                .arg(&error);
            pipe.cmd("PEXPIRE").arg(&meta).arg(live);
        }
        TrackEvent::Dead {
            id,
            error,
            attempts,
            dead_id,
            run,
        } => {
            let (meta, log) = (keys.job(&id), keys.job_log(&id));
            pipe.cmd("HSET")
                .arg(&meta)
                .arg(run.fields())
                .arg(&[
                    ("state", "dead"),
                    ("err", error.as_str()),
                    ("dead", dead_id.as_str()),
                ])
                .arg("att")
                .arg(attempts)
                .arg("fin")
                .arg(now_ms());
            pipe.cmd("PEXPIRE").arg(&meta).arg(finished);
            pipe.cmd("PEXPIRE").arg(&log).arg(finished);
            live_writes.remove(id);
        }
        TrackEvent::Progress { id, percent } => {
            let meta = keys.job(&id);
            pipe.cmd("HSET").arg(&meta).arg("prog").arg(percent);
            pipe.cmd("PEXPIRE").arg(&meta).arg(live);
        }
        TrackEvent::Log { id, line } => {
            let log = keys.job_log(&id);
            pipe.cmd("RPUSH").arg(&log).arg(&line);
            pipe.cmd("LTRIM")
                .arg(&log)
                .arg(-(MAX_LOG_LINES as i64))
                .arg(-1);
            pipe.cmd("PEXPIRE").arg(&log).arg(live);
        }
        TrackEvent::Reclaimed { .. } => {}
    }
    completed_any
}

/// One round trip's writes to the live hash, sent as one `HSET` and one
/// `HDEL` at the end of its pipeline instead of a command per job: at
/// saturation a batch holds hundreds of starts and ends, and each command
/// costs Redis and the client more than each field in it.
///
/// The `HSET` goes before the `HDEL`, so a job that starts and ends in one
/// batch ends removed; a record set for a job already removed in the batch
/// (it cannot end twice, but a retry may start again) first sends both, to
/// keep their order. Ended jobs' metadata, written by the commands before,
/// so lands before their records go.
struct LiveWrites {
    key: String,
    set: Vec<(String, String)>,
    removed: HashSet<String>,
}

impl LiveWrites {
    fn new(key: String) -> LiveWrites {
        LiveWrites {
            key,
            set: Vec::new(),
            removed: HashSet::new(),
        }
    }

    fn set(&mut self, pipe: &mut redis::Pipeline, id: String, record: String) {
        if self.removed.contains(&id) {
            self.flush(pipe);
        }
        self.set.push((id, record));
    }

    fn remove(&mut self, id: String) {
        self.removed.insert(id);
    }

    /// Adds what was gathered to `pipe` and starts over.
    fn flush(&mut self, pipe: &mut redis::Pipeline) {
        if !self.set.is_empty() {
            pipe.cmd("HSET").arg(&self.key).arg(&self.set);
            self.set.clear();
        }
        if !self.removed.is_empty() {
            pipe.cmd("HDEL").arg(&self.key).arg(&self.removed);
            self.removed.clear();
        }
    }
}

/// Bounds retained completed jobs by count and age: the evicted jobs'
/// metadata and logs are deleted with their index entries.
async fn trim_completed(
    conn: &mut crate::protocol::cluster::Conn,
    keys: &QueueKeys,
    tracking: &JobTracking,
) -> redis::RedisResult<()> {
    let index = keys.completed();
    let keep = i64::try_from(tracking.keep_completed).unwrap_or(i64::MAX);
    let oldest_kept = now_ms().saturating_sub(millis(tracking.keep_finished));
    let (over_count, too_old): (Vec<String>, Vec<String>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-keep - 1)
        .cmd("ZRANGE")
        .arg(&index)
        .arg("-inf")
        .arg(format!("({oldest_kept}"))
        .arg("BYSCORE")
        .query_async(conn)
        .await?;
    let evicted: Vec<&String> = over_count.iter().chain(&too_old).collect();
    if evicted.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in &evicted {
        pipe.cmd("DEL")
            .arg(keys.job(id))
            .arg(keys.job_log(id))
            .ignore();
        pipe.cmd("ZREM").arg(&index).arg(*id).ignore();
    }
    pipe.exec_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each command of `pipe`, its words joined by spaces.
    fn commands(pipe: &redis::Pipeline) -> Vec<String> {
        pipe.cmd_iter()
            .map(|cmd| {
                let words: Vec<String> = cmd
                    .args_iter()
                    .map(|arg| match arg {
                        redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                        _ => "<cursor>".to_owned(),
                    })
                    .collect();
                words.join(" ")
            })
            .collect()
    }

    #[test]
    fn a_batch_of_live_writes_is_one_hset_then_one_hdel() {
        let mut pipe = redis::pipe();
        let mut live = LiveWrites::new("q:live".to_owned());
        live.set(&mut pipe, "a".to_owned(), "1 started".to_owned());
        live.set(&mut pipe, "b".to_owned(), "2 started".to_owned());
        live.remove("a".to_owned());
        live.flush(&mut pipe);
        assert_eq!(
            commands(&pipe),
            ["HSET q:live a 1 started b 2 started", "HDEL q:live a"]
        );
    }

    #[test]
    fn a_record_set_after_its_removal_in_the_batch_keeps_the_order() {
        let mut pipe = redis::pipe();
        let mut live = LiveWrites::new("q:live".to_owned());
        live.set(&mut pipe, "a".to_owned(), "1 retrying".to_owned());
        live.remove("a".to_owned());
        live.set(&mut pipe, "a".to_owned(), "1 started".to_owned());
        live.flush(&mut pipe);
        assert_eq!(
            commands(&pipe),
            [
                "HSET q:live a 1 retrying",
                "HDEL q:live a",
                "HSET q:live a 1 started"
            ]
        );
        let mut next = redis::pipe();
        live.flush(&mut next);
        assert!(commands(&next).is_empty(), "a flush starts over");
    }
}
