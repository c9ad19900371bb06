//! Looking a job up by id: where it is now, and what its handler reported.
//! Needs [`crate::QueueBuilder::track_jobs`]. Off the hot path.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::live::{LiveRecord, Place};
use crate::protocol::reply;
use crate::queue::Queue;
use crate::time::now_ms;

/// Where a tracked job is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// In its priority stream, not yet claimed.
    Waiting {
        /// Its priority.
        priority: Priority,
    },
    /// Claimed by a worker.
    Active {
        /// The worker's consumer name.
        owner: String,
        /// Time since the worker claimed it or renewed its lease.
        idle: Duration,
        /// Deliveries of its stream entry (above 1 after a reclaim).
        deliveries: u64,
    },
    /// Waiting for its time (a retry or a scheduled job).
    Delayed {
        /// When it becomes due, Unix ms.
        due_ms: u64,
    },
    /// In the dead letters.
    DeadLettered {
        /// The last error.
        error: String,
        /// Its dead-letter id, for `dlq show` and requeue.
        dead_letter_id: Option<String>,
    },
    /// Completed (only with completed-job retention).
    Completed,
    /// Removed by [`Queue::cancel`] before any worker ran it.
    Cancelled,
    /// Its metadata exists but its entry is gone from the stream without
    /// a recorded finish yet: finishing this instant, or lost.
    Unknown,
}

impl JobState {
    /// The state's name: `waiting`, `active`, `delayed`, `dead_lettered`,
    /// `completed`, `cancelled` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Waiting { .. } => "waiting",
            JobState::Active { .. } => "active",
            JobState::Delayed { .. } => "delayed",
            JobState::DeadLettered { .. } => "dead_lettered",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Unknown => "unknown",
        }
    }
}

/// A tracked job's state and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// When it was first enqueued, Unix ms.
    pub enqueued_ms: Option<u64>,
    /// When its latest attempt started, Unix ms.
    pub started_ms: Option<u64>,
    /// When it finished (completed or dead-lettered), Unix ms.
    pub finished_ms: Option<u64>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last progress its handler reported, 0 to 100.
    pub progress: Option<u8>,
    /// The last error, if any attempt failed.
    pub error: Option<String>,
    /// Its handler's log lines, oldest first (at most 100).
    pub logs: Vec<String>,
}

impl Queue {
    /// Looks a tracked job up by id: `None` when nothing is known about it
    /// (never tracked, or its metadata expired). O(log n).
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, Error> {
        if let Some(parts) = self.split() {
            return crate::admin::partitions::first(&parts, |p| Box::pin(p.job_one(id))).await;
        }
        self.job_one(id).await
    }

    /// [`Queue::job`] on one partition (or a queue of one).
    async fn job_one(&self, id: &str) -> Result<Option<JobInfo>, Error> {
        let keys = self.keys();
        let (meta, logs, live): (HashMap<String, String>, Vec<String>, Option<String>) =
            redis::pipe()
                .cmd("HGETALL")
                .arg(keys.job(id))
                .cmd("LRANGE")
                .arg(keys.job_log(id))
                .arg(0)
                .arg(-1)
                .cmd("HGET")
                .arg(keys.live())
                .arg(id)
                .query_async(&mut self.conn())
                .await?;
        let ended = matches!(
            meta.get("state").map(String::as_str),
            Some("completed" | "cancelled" | "dead")
        );
        if !ended {
            if let Some(record) = live.as_deref().and_then(LiveRecord::parse) {
                return Ok(Some(self.job_from_record(id, record, &meta, logs).await?));
            }
        }
        if meta.is_empty() {
            return Ok(None);
        }
        // An ended job, or one tracked by a version that kept every job's
        // metadata in its own hash.
        let number = |field: &str| meta.get(field).and_then(|v| v.parse::<u64>().ok());
        let priority = meta
            .get("p")
            .and_then(|p| p.parse::<Priority>().ok())
            .unwrap_or_default();
        let state = match meta.get("state").map(String::as_str) {
            Some("completed") => JobState::Completed,
            Some("cancelled") => JobState::Cancelled,
            Some("dead") => JobState::DeadLettered {
                error: meta.get("err").cloned().unwrap_or_default(),
                dead_letter_id: meta.get("dead").filter(|d| !d.is_empty()).cloned(),
            },
            Some("delayed") => delayed_or_due(number("due"), priority),
            _ => match meta.get("entry") {
                Some(entry) => self.live_state(priority, entry).await?,
                None => JobState::Unknown,
            },
        };
        Ok(Some(JobInfo {
            id: JobId::from(id.to_owned()),
            name: meta.get("name").cloned().unwrap_or_default(),
            state,
            enqueued_ms: number("enq"),
            started_ms: number("start"),
            finished_ms: number("fin"),
            attempts: number("att")
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            progress: number("prog").and_then(|p| u8::try_from(p).ok()),
            error: meta.get("err").cloned(),
            logs,
        }))
    }

    /// A job that has not ended, from its live record, with what its
    /// metadata hash adds (progress, the last error and attempt).
    async fn job_from_record(
        &self,
        id: &str,
        record: LiveRecord,
        meta: &HashMap<String, String>,
        logs: Vec<String>,
    ) -> Result<JobInfo, Error> {
        let number = |field: &str| meta.get(field).and_then(|v| v.parse::<u64>().ok());
        let state = match &record.place {
            Place::Entry(entry) => self.live_state(record.priority, entry).await?,
            Place::Delayed { due_ms } => delayed_or_due(Some(*due_ms), record.priority),
        };
        let attempts = match record.started {
            Some(started) => started.attempt,
            None => number("att")
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
        };
        Ok(JobInfo {
            id: JobId::from(id.to_owned()),
            name: record.name,
            state,
            enqueued_ms: record.enqueued_ms,
            started_ms: record.started.map(|s| s.at_ms),
            finished_ms: None,
            attempts,
            progress: number("prog").and_then(|p| u8::try_from(p).ok()),
            error: meta.get("err").cloned(),
            logs,
        })
    }

    /// Whether a stream entry is claimed, waiting, or gone.
    async fn live_state(&self, priority: Priority, entry: &str) -> Result<JobState, Error> {
        let stream = self.keys().stream(priority);
        // Errors per command: a stream without the group (no worker has
        // started yet) means nothing is in flight there.
        let (pending, exists): (Value, Value) = redis::pipe()
            .ignore_errors()
            .cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg(entry)
            .arg(entry)
            .arg(1)
            .cmd("XRANGE")
            .arg(stream)
            .arg(entry)
            .arg(entry)
            .query_async(&mut self.conn())
            .await?;
        let pending = match pending {
            ref nogroup if reply::is_nogroup_item(nogroup) => Vec::new(),
            other => redis::from_redis_value::<Vec<Value>>(reply::pipeline_item(
                other, stream, "stream",
            )?)
            .unwrap_or_default(),
        };
        let exists: Vec<Value> =
            redis::from_redis_value(reply::pipeline_item(exists, stream, "stream")?)
                .unwrap_or_default();
        if let Some(Value::Array(p)) = pending.first() {
            let owner: String = p
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or_default();
            let idle: u64 = p
                .get(2)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(0);
            let deliveries: u64 = p
                .get(3)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(0);
            return Ok(JobState::Active {
                owner,
                idle: Duration::from_millis(idle),
                deliveries,
            });
        }
        Ok(if exists.is_empty() {
            JobState::Unknown
        } else {
            JobState::Waiting { priority }
        })
    }
}

/// A delayed job's state: delayed until its due time, then waiting (a
/// worker moves it into its stream at its next pass).
fn delayed_or_due(due_ms: Option<u64>, priority: Priority) -> JobState {
    match due_ms {
        Some(due) if due > now_ms() => JobState::Delayed { due_ms: due },
        _ => JobState::Waiting { priority },
    }
}
