//! Cancelling one job by id ([`Queue::cancel`]): removing it while it waits
//! (in its stream or in the delayed set), or asking its worker to stop it
//! while it runs.
//!
//! Finding the job is Rust's part, since scripts never decode envelopes:
//! with job tracking the job's metadata names its entry or due time (one
//! lookup); otherwise, or when the job moved since, the delayed set and the
//! four streams are scanned in chunks and each envelope decoded. Deciding is
//! the `cancel` script's part, atomically: a fetch cannot slip in between.

use std::time::Duration;

use redis::Value;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::envelope::{Envelope, ParentRef};
use crate::protocol::keys::GROUP;
use crate::protocol::live::{LiveRecord, Place};
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::{millis, now_ms};

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancelled {
    /// The job was waiting and is gone: no worker will run it.
    Removed {
        /// Where it was removed from.
        from: RemovedFrom,
    },
    /// A worker holds the job (running, or claimed and about to run): it
    /// was not removed, and its worker is asked to stop it. The worker
    /// learns of it at its next lease heartbeat (within `lease / 3`); the
    /// job's handler then sees [`Job::stopped`](crate::Job::stopped)
    /// complete, and an error it returns ends the job in the dead letters
    /// as cancelled. A handler that finishes anyway completes the job.
    StopRequested {
        /// The job's priority.
        priority: Priority,
        /// Its stream entry id.
        entry_id: String,
    },
    /// The job is not waiting, delayed or active: it finished (completed,
    /// dead-lettered, cancelled), its id is unknown, or it was dropped.
    NotFound,
}

/// Where a removed job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovedFrom {
    /// Its priority stream, not yet delivered to any worker.
    Waiting {
        /// The job's priority.
        priority: Priority,
    },
    /// The delayed set (a scheduled job, or a retry waiting for its time).
    Delayed {
        /// The job's priority.
        priority: Priority,
        /// When it would have become due, Unix ms.
        due_ms: u64,
    },
}

/// How long a stop request is kept for the job's worker to see it: far
/// longer than any heartbeat interval, so that a worker that reclaims the
/// job later still sees it.
pub const STOP_REQUEST_TTL: Duration = Duration::from_secs(24 * 3600);

/// Entries or delayed members read per scan call.
const SCAN_CHUNK: usize = 500;

/// How often a job that moved while it was being cancelled is looked for
/// again (delayed to waiting, say).
const ROUNDS: usize = 4;

/// Why a job is removed: the `cancel` script's last argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// [`Queue::cancel`]: an active job is asked to stop.
    Cancelled,
    /// A drain or an obliterate: an active job is left alone.
    Drained,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Cancelled => "cancelled",
            Why::Drained => "drained",
        }
    }
}

/// Where a job was found.
#[derive(Debug)]
pub(super) enum Location {
    Entry {
        priority: Priority,
        entry_id: String,
    },
    Delayed {
        priority: Priority,
        due_ms: u64,
        member: Vec<u8>,
    },
}

impl Queue {
    /// Cancels a job by id: removes it if it is waiting or delayed, or, if a
    /// worker holds it, asks that worker to stop it. The result says which.
    ///
    /// Finding the job: with [`QueueBuilder::track_jobs`](crate::QueueBuilder::track_jobs)
    /// its metadata says where it is, a constant-time lookup. Without it (or
    /// when the job moved since its metadata was written), the delayed set
    /// and the four streams are scanned in chunks of 500 and each envelope
    /// decoded: O(jobs in the queue). A job that moves while it is looked for
    /// is looked for again; the removal itself is atomic, so a job is never
    /// both removed and run.
    ///
    /// A job handed back at shutdown (before its worker saw the stop
    /// request) is a new waiting entry: cancel it again.
    ///
    /// # Errors
    ///
    /// Connection, permission and out-of-memory errors (recording a stop
    /// request is a write); [`Error::WrongKeyType`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the removal or stop request is one atomic script; if
    /// dropped while it runs, it may or may not have been applied, and
    /// calling again reports the new state.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(queue: streamq::Queue, id: streamq::JobId) -> Result<(), streamq::Error> {
    /// use streamq::Cancelled;
    ///
    /// match queue.cancel(id.as_str()).await? {
    ///     Cancelled::Removed { from } => println!("removed from {from:?}"),
    ///     Cancelled::StopRequested { .. } => println!("running; asked to stop"),
    ///     Cancelled::NotFound => println!("already finished, or unknown"),
    ///     _ => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, Error> {
        if id.is_empty() {
            return Ok(Cancelled::NotFound);
        }
        if let Some(parts) = self.split() {
            let found = crate::admin::partitions::first(&parts, |p| {
                Box::pin(async move {
                    Ok(match p.cancel_one(id).await? {
                        Cancelled::NotFound => None,
                        other => Some(other),
                    })
                })
            })
            .await?;
            return Ok(found.unwrap_or(Cancelled::NotFound));
        }
        self.cancel_one(id).await
    }

    /// [`Queue::cancel`] on one partition (or a queue of one).
    async fn cancel_one(&self, id: &str) -> Result<Cancelled, Error> {
        for round in 0..ROUNDS {
            if round == 0 {
                match self.tracked_location(id).await? {
                    Tracked::Finished => return Ok(Cancelled::NotFound),
                    Tracked::At(location) => {
                        if let Some(done) = self.try_cancel(id, &location).await? {
                            return Ok(done);
                        }
                    }
                    Tracked::Unknown => {}
                }
            }
            let Some(location) = self.find(id).await? else {
                return Ok(Cancelled::NotFound);
            };
            if let Some(done) = self.try_cancel(id, &location).await? {
                return Ok(done);
            }
        }
        Ok(Cancelled::NotFound)
    }

    /// Runs the `cancel` script on one location; `None` when the job is no
    /// longer there.
    async fn try_cancel(&self, id: &str, location: &Location) -> Result<Option<Cancelled>, Error> {
        self.remove_at(id, location, Why::Cancelled).await
    }

    /// Removes the job at `location` with the `cancel` script, or (for
    /// [`Why::Cancelled`]) asks its worker to stop it; `None` when it is
    /// not there any more.
    pub(super) async fn remove_at(
        &self,
        id: &str,
        location: &Location,
        why: Why,
    ) -> Result<Option<Cancelled>, Error> {
        let keys = self.keys();
        let script = &scripts().cancel;
        let mut extra = vec![
            keys.delayed().to_owned(),
            keys.stop_requests(),
            keys.job(id),
            keys.live(),
        ];
        // A flow child's removal settles its parent in the same call.
        let parent = self.flow_parent(location).await?;
        if let Some(parent) = &parent {
            let parent_keys = keys.sibling(&parent.queue)?;
            let priority =
                Priority::from_lua_index(i64::from(parent.priority)).unwrap_or(Priority::Medium);
            extra.extend([
                parent_keys.flow(&parent.id),
                parent_keys.stream(priority).to_owned(),
                parent_keys.stats().to_owned(),
                parent_keys.dead().to_owned(),
            ]);
        }
        let mut call = script.call(keys, &extra);
        let finished_ttl = self
            .settings()
            .tracking
            .map_or(0, |t| millis(t.keep_finished).max(1));
        call.arg(GROUP)
            .arg(now_ms())
            .arg(millis(STOP_REQUEST_TTL))
            .arg(finished_ttl);
        match location {
            Location::Entry { priority, entry_id } => {
                call.arg("entry").arg(priority.lua_index()).arg(entry_id)
            }
            Location::Delayed {
                priority, member, ..
            } => call
                .arg("delayed")
                .arg(priority.lua_index())
                .arg(member.as_slice()),
        };
        call.arg(id)
            .arg(u8::from(parent.as_ref().is_some_and(|p| p.fail_parent)));
        call.arg(why.as_str());
        let reply = call.invoke(&mut self.conn()).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => return Err(self.name_wrong_key(Error::from(err)).await),
        };
        let outcome = reply::done(script, reply)?.int()?;
        Ok(match (outcome, location) {
            (1, Location::Entry { priority, .. }) => Some(Cancelled::Removed {
                from: RemovedFrom::Waiting {
                    priority: *priority,
                },
            }),
            (
                1,
                Location::Delayed {
                    priority, due_ms, ..
                },
            ) => Some(Cancelled::Removed {
                from: RemovedFrom::Delayed {
                    priority: *priority,
                    due_ms: *due_ms,
                },
            }),
            (2, Location::Entry { priority, entry_id }) => Some(Cancelled::StopRequested {
                priority: *priority,
                entry_id: entry_id.clone(),
            }),
            (0, _) => None,
            (other, _) => {
                return Err(Error::UnexpectedReply {
                    script: script.name,
                    detail: format!("unknown outcome {other}"),
                });
            }
        })
    }

    /// The flow parent of the job at `location`, read from its envelope:
    /// `None` for a job that is no flow child (or is gone from there).
    async fn flow_parent(&self, location: &Location) -> Result<Option<ParentRef>, Error> {
        let envelope = match location {
            Location::Delayed { member, .. } => member.get(1..).map(<[u8]>::to_vec),
            Location::Entry { priority, entry_id } => {
                let page: Value = redis::cmd("XRANGE")
                    .arg(self.keys().stream(*priority))
                    .arg(entry_id)
                    .arg(entry_id)
                    .query_async(&mut self.conn())
                    .await?;
                stream_entries(page).into_iter().next().and_then(|(_, e)| e)
            }
        };
        Ok(envelope
            .as_deref()
            .and_then(|bytes| Envelope::decode(bytes).ok())
            .and_then(|envelope| envelope.parent))
    }

    /// Where the job's live record (or, once it ended, its metadata) says
    /// it is.
    async fn tracked_location(&self, id: &str) -> Result<Tracked, Error> {
        if self.settings().tracking.is_none() {
            return Ok(Tracked::Unknown);
        }
        let keys = self.keys();
        let (meta, live): (Vec<Option<String>>, Option<String>) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.job(id))
            .arg(&["state", "p", "entry", "due"])
            .cmd("HGET")
            .arg(keys.live())
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        let field = |i: usize| meta.get(i).cloned().flatten();
        let priority = field(1).and_then(|p| p.parse::<Priority>().ok());
        let (state, priority, due) = match live.as_deref().and_then(LiveRecord::parse) {
            Some(LiveRecord {
                priority,
                place: Place::Entry(entry),
                ..
            }) => {
                return Ok(Tracked::At(Location::Entry {
                    priority,
                    entry_id: entry,
                }));
            }
            Some(LiveRecord {
                priority,
                place: Place::Delayed { due_ms },
                ..
            }) => ("delayed".to_owned(), priority, Some(due_ms)),
            None => match (field(0), priority) {
                (Some(state), Some(priority)) => (
                    state,
                    priority,
                    field(3).and_then(|d| d.parse::<u64>().ok()),
                ),
                _ => return Ok(Tracked::Unknown),
            },
        };
        match state.as_str() {
            "completed" | "cancelled" => Ok(Tracked::Finished),
            "delayed" => {
                let Some(due_ms) = due else {
                    return Ok(Tracked::Unknown);
                };
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(keys.delayed())
                    .arg(due_ms)
                    .arg(due_ms)
                    .arg("BYSCORE")
                    .query_async(&mut self.conn())
                    .await?;
                Ok(members
                    .into_iter()
                    .find(|m| member_job_id(m).is_some_and(|(_, found)| found == id))
                    .map_or(Tracked::Unknown, |member| {
                        Tracked::At(Location::Delayed {
                            priority,
                            due_ms,
                            member,
                        })
                    }))
            }
            "waiting" | "active" => Ok(field(2).map_or(Tracked::Unknown, |entry_id| {
                Tracked::At(Location::Entry { priority, entry_id })
            })),
            _ => Ok(Tracked::Unknown),
        }
    }

    /// Scans the delayed set, then every stream, for the job. The delayed
    /// set comes first: a job promoted meanwhile is appended to a stream,
    /// where the scan still finds it.
    async fn find(&self, id: &str) -> Result<Option<Location>, Error> {
        let keys = self.keys();
        let mut conn = self.conn();
        let mut cursor = "0".to_owned();
        loop {
            let (next, page): (String, Vec<Vec<u8>>) = redis::cmd("ZSCAN")
                .arg(keys.delayed())
                .arg(&cursor)
                .arg("COUNT")
                .arg(SCAN_CHUNK)
                .query_async(&mut conn)
                .await?;
            for pair in page.chunks_exact(2) {
                let (member, score) = (&pair[0], &pair[1]);
                if let Some((priority, found)) = member_job_id(member) {
                    if found == id {
                        let due_ms = std::str::from_utf8(score)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .map_or(0, |s| s as u64);
                        return Ok(Some(Location::Delayed {
                            priority,
                            due_ms,
                            member: member.clone(),
                        }));
                    }
                }
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        for priority in Priority::ALL {
            let stream = keys.stream(priority);
            let mut start = "-".to_owned();
            loop {
                let page: Value = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(SCAN_CHUNK)
                    .query_async(&mut conn)
                    .await?;
                let entries = stream_entries(page);
                for (entry_id, envelope) in &entries {
                    let found = envelope
                        .as_deref()
                        .and_then(|bytes| Envelope::decode(bytes).ok())
                        .is_some_and(|e| e.id == id);
                    if found {
                        return Ok(Some(Location::Entry {
                            priority,
                            entry_id: entry_id.clone(),
                        }));
                    }
                }
                match entries.last() {
                    Some((last, _)) if entries.len() == SCAN_CHUNK => start = format!("({last}"),
                    _ => break,
                }
            }
        }
        Ok(None)
    }
}

/// What a job's tracked metadata says.
#[derive(Debug)]
enum Tracked {
    /// It finished: nothing to cancel.
    Finished,
    /// Probably here (it may have moved since).
    At(Location),
    /// No metadata, or not enough: scan.
    Unknown,
}

/// The priority and job id of a delayed member (`<priority digit><envelope>`).
pub(super) fn member_job_id(member: &[u8]) -> Option<(Priority, String)> {
    let (digit, envelope) = member.split_first()?;
    let priority = Priority::from_lua_index(i64::from(digit.checked_sub(b'0')?))?;
    let envelope = Envelope::decode(envelope).ok()?;
    Some((priority, envelope.id.into_owned()))
}

/// An `XRANGE` reply as (entry id, envelope) pairs; entries without an
/// envelope field (not written by streamq) have `None`.
pub(super) fn stream_entries(page: Value) -> Vec<(String, Option<Vec<u8>>)> {
    let Value::Array(entries) = page else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id: String = redis::from_redis_value(parts.pop()?).ok()?;
            let envelope = match fields {
                Value::Array(fields) => {
                    fields
                        .chunks_exact(2)
                        .find_map(|kv| match (&kv[0], &kv[1]) {
                            (Value::BulkString(k), Value::BulkString(v)) if k == b"e" => {
                                Some(v.clone())
                            }
                            _ => None,
                        })
                }
                Value::Map(fields) => fields.into_iter().find_map(|(k, v)| match (k, v) {
                    (Value::BulkString(k), Value::BulkString(v)) if k == b"e" => Some(v),
                    _ => None,
                }),
                _ => None,
            };
            Some((id, envelope))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn stream_pages_read_with_and_without_envelopes() {
        let page = Value::Array(vec![
            Value::Array(vec![
                bulk(b"1-0"),
                Value::Array(vec![bulk(b"e"), bulk(b"xyz")]),
            ]),
            Value::Array(vec![
                bulk(b"2-0"),
                Value::Array(vec![bulk(b"other"), bulk(b"1")]),
            ]),
            Value::Int(3),
        ]);
        assert_eq!(
            stream_entries(page),
            vec![
                ("1-0".to_owned(), Some(b"xyz".to_vec())),
                ("2-0".to_owned(), None)
            ]
        );
        assert_eq!(member_job_id(b""), None);
        assert_eq!(member_job_id(b"9junk"), None);
        assert_eq!(member_job_id(b"1junk"), None);
    }
}
