//! Following a queue's event stream ([`crate::QueueBuilder::events`]): what
//! happened to jobs, in order, from any process.
//!
//! The scripts write `enqueued`, `completed`, `failed`, `retried` and
//! `dead_lettered` in the same step as the change they describe, so those
//! are exactly as durable as the change itself. Workers write `started`,
//! `progress` and `reclaimed` after the fact, best-effort (a worker that
//! dies may not have written them); producers write `rolled_back` when a
//! failover took away jobs they had been told were enqueued. The stream is capped: a reader that
//! falls further behind than the cap misses the oldest events.

use std::collections::VecDeque;

use futures_util::Stream;
use redis::Value;
use serde::de::DeserializeOwned;

use crate::admin::dead_letters::check_entry_id;
use crate::admin::follow::Follower;
use crate::admin::partitions;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::fields;
use crate::queue::Queue;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// Added to the queue (waiting, or delayed until `due_ms`).
    Enqueued,
    /// A worker started a run.
    Started,
    /// The handler reported progress.
    Progress,
    /// Done and acknowledged; `result` holds the result when kept.
    Completed,
    /// A run failed (`attempt`, `error`).
    Failed,
    /// Scheduled to run again at `due_ms`.
    Retried,
    /// Moved to the dead letters (`error`, `dead_letter_id`).
    DeadLettered,
    /// Taken over after its worker's lease ran out (`deliveries`).
    Reclaimed,
    /// Acknowledged to its producer, then rolled back by a failover or a
    /// restart: the server now holding its partition never had it. Written
    /// by the producer that finds out (docs/guarantees.md).
    RolledBack,
    /// A kind this version does not know (written by a newer one).
    Other(String),
}

impl EventKind {
    fn parse(kind: &str) -> EventKind {
        match kind {
            "enqueued" => EventKind::Enqueued,
            "started" => EventKind::Started,
            "progress" => EventKind::Progress,
            "completed" => EventKind::Completed,
            "failed" => EventKind::Failed,
            "retried" => EventKind::Retried,
            "dead_lettered" => EventKind::DeadLettered,
            "reclaimed" => EventKind::Reclaimed,
            "rolled_back" => EventKind::RolledBack,
            other => EventKind::Other(other.to_owned()),
        }
    }

    /// The name the event stream uses (`dead_lettered`, say).
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Reclaimed => "reclaimed",
            EventKind::RolledBack => "rolled_back",
            EventKind::Other(kind) => kind,
        }
    }
}

/// One event. Fields a kind does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Its id in the event stream; on a partitioned queue qualified with
    /// its partition (`<id>@<partition>`).
    pub id: String,
    /// Where a reader resumes right after this event: pass it to
    /// [`EventsFrom::After`]. On a queue of one it is [`Event::id`]; on a
    /// partitioned queue it names a position in every partition.
    pub position: String,
    /// What happened.
    pub kind: EventKind,
    /// The job it happened to.
    pub job_id: JobId,
    /// The job's name ("" when none or not recorded).
    pub name: String,
    /// The job's priority, when recorded.
    pub priority: Option<Priority>,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The attempt (started, failed, retried, dead-lettered).
    pub attempt: Option<u32>,
    /// Why it failed (failed, dead-lettered).
    pub error: Option<String>,
    /// When it is due, Unix ms (enqueued: 0 for now; retried).
    pub due_ms: Option<u64>,
    /// Percent done (progress).
    pub progress: Option<u8>,
    /// Deliveries so far (reclaimed).
    pub deliveries: Option<u32>,
    /// The dead letter's id (dead-lettered).
    pub dead_letter_id: Option<String>,
    /// The kept result, MessagePack (completed; empty when not kept).
    pub result: Option<Vec<u8>>,
}

impl Event {
    /// The kept result of a completed job, decoded; `None` when the event
    /// carries none.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the result does not decode as `R`.
    pub fn result<R: DeserializeOwned>(&self) -> Result<Option<R>, Error> {
        match self.result.as_deref() {
            None | Some([]) => Ok(None),
            Some(bytes) => rmp_serde::from_slice(bytes)
                .map(Some)
                .map_err(|e| Error::Decode(format!("result in event {}: {e}", self.id))),
        }
    }

    fn parse(id: String, fields: &fields::Fields) -> Event {
        let text = |name: &str| fields::text(fields, name);
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let small = |name: &str| number(name).and_then(|n| u32::try_from(n).ok());
        Event {
            kind: EventKind::parse(&text("ev").unwrap_or_default()),
            job_id: JobId::from(text("job").unwrap_or_default()),
            name: text("name").unwrap_or_default(),
            priority: text("p").and_then(|p| p.parse().ok()),
            at_ms: number("at").unwrap_or(0),
            attempt: small("attempt"),
            error: text("error"),
            due_ms: number("due"),
            progress: number("progress").and_then(|n| u8::try_from(n).ok()),
            deliveries: small("deliveries"),
            dead_letter_id: text("dead"),
            result: fields
                .get("result")
                .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok()),
            position: id.clone(),
            id,
        }
    }
}

/// Where to start reading a queue's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsFrom {
    /// The oldest event still kept.
    Start,
    /// Only events recorded from now on.
    Now,
    /// Events after this position ([`Event::position`]): resume where a
    /// reader left off.
    After(String),
}

/// Events read per round trip.
const BATCH: usize = 100;

/// The reader's state between polls.
struct Reader {
    queue: Queue,
    parts: Vec<Queue>,
    /// Set up on the first read (a start "from now" needs Redis).
    follower: Option<Follower>,
    from: EventsFrom,
    ready: VecDeque<Event>,
    backoff: Backoff,
}

impl Reader {
    /// The next event, waiting for one; an error after a failed read (the
    /// next poll tries again, after a backoff).
    async fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if let Err(err) = self.read().await {
                tokio::time::sleep(self.backoff.next_delay()).await;
                return Err(err);
            }
            self.backoff.reset();
        }
    }

    async fn read(&mut self) -> Result<(), Error> {
        let follower = match &mut self.follower {
            Some(follower) => follower,
            None => {
                let after = self.start().await?;
                let streams = self.parts.iter().map(|p| p.keys().events()).collect();
                self.follower
                    .insert(Follower::new(&self.queue, streams, after))
            }
        };
        // Moved one event at a time, so that each event carries where to
        // resume after it.
        let mut after = follower.after().to_vec();
        let found = follower.read(BATCH).await?;
        if found.is_empty() {
            return follower.wait().await;
        }
        let qualified = self.parts.len() > 1;
        for (p, id, entry) in found {
            let Some(fields) = fields::fields(&entry) else {
                continue;
            };
            let mut event = Event::parse(id.clone(), &fields);
            after[p].clone_from(&id);
            if qualified {
                event.id = partitions::qualify(&id, p);
                event.position = position(&after);
            } else {
                event.position.clone_from(&event.id);
            }
            self.ready.push_back(event);
        }
        Ok(())
    }

    /// Where each partition's stream is read after, as `self.from` says.
    async fn start(&self) -> Result<Vec<String>, Error> {
        match &self.from {
            EventsFrom::Start => Ok(vec!["0-0".to_owned(); self.parts.len()]),
            // The newest id now: reading from "$" on every call would miss
            // what arrives between two calls.
            EventsFrom::Now => {
                partitions::each(&self.parts, |p| {
                    Box::pin(async move { p.newest_entry_id(&p.keys().events()).await })
                })
                .await
            }
            EventsFrom::After(at) => parse_position(at, self.parts.len()),
        }
    }
}

/// A partitioned queue's position: each partition's last event id,
/// qualified with its partition, joined by commas.
fn position(after: &[String]) -> String {
    let each: Vec<String> = after
        .iter()
        .enumerate()
        .map(|(p, id)| partitions::qualify(id, p))
        .collect();
    each.join(",")
}

/// The ids to read after from [`Event::position`] (or, on a queue of one,
/// an [`Event::id`]). Partitions a position does not name start from their
/// first event.
fn parse_position(at: &str, partitions: usize) -> Result<Vec<String>, Error> {
    if partitions == 1 {
        check_entry_id(at)?;
        return Ok(vec![at.to_owned()]);
    }
    let mut after = vec!["0-0".to_owned(); partitions];
    for each in at.split(',') {
        let (id, p) = partitions::unqualify(each, partitions)?;
        id.clone_into(&mut after[p]);
    }
    Ok(after)
}

/// The `(id, fields)` entries of an `XREAD` reply over one stream (RESP2
/// arrays or RESP3 maps); none on a timeout.
pub(crate) fn entries(reply: Value) -> Vec<(String, Value)> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams,
        Value::Map(streams) => streams
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        let Some(Value::Array(items)) = parts.pop() else {
            continue;
        };
        for item in items {
            let Value::Array(mut pair) = item else {
                continue;
            };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop().unwrap_or(Value::Nil);
            if let Some(Ok(id)) = pair.pop().map(redis::from_redis_value::<String>) {
                out.push((id, fields));
            }
        }
    }
    out
}

impl Queue {
    /// Follows the queue's event stream from `from`, waiting for new events
    /// as they come; it never ends by itself. A partitioned queue has one
    /// event stream per partition: they are followed together, oldest
    /// first, and each event's [`Event::position`] covers all of them.
    /// Waiting holds a connection of its own (one per partition). A failed read yields an error and the next poll tries
    /// again after a backoff, so a reader can ride out a Redis restart.
    ///
    /// Needs [`crate::QueueBuilder::events`] on the producers and workers of
    /// the queue; without it the stream stays empty.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream between events loses nothing still in the stream:
    /// start again with [`EventsFrom::After`] the last [`Event::position`]
    /// seen. A position that is not one yields [`Error::InvalidEntryId`].
    pub fn events(&self, from: EventsFrom) -> impl Stream<Item = Result<Event, Error>> + Send {
        let reader = Reader {
            queue: self.clone(),
            parts: self.partitions(),
            follower: None,
            from,
            ready: VecDeque::new(),
            backoff: Backoff::redis(),
        };
        futures_util::stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_become_events() {
        let entry = Value::Array(vec![
            bulk("5-0"),
            Value::Array(
                [
                    "ev", "failed", "job", "j1", "name", "send", "p", "high", "at", "7",
                ]
                .into_iter()
                .chain(["attempt", "2", "error", "boom"])
                .map(bulk)
                .collect(),
            ),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("streamq:{q}:events"),
            Value::Array(vec![entry]),
        ])]);
        let parsed = entries(reply);
        assert_eq!(parsed.len(), 1);
        let (id, fields) = &parsed[0];
        let event = Event::parse(id.clone(), &fields::fields(fields).expect("fields"));
        assert_eq!(event.kind, EventKind::Failed);
        assert_eq!(event.job_id.as_str(), "j1");
        assert_eq!(event.priority, Some(Priority::High));
        assert_eq!(
            (event.attempt, event.error.as_deref()),
            (Some(2), Some("boom"))
        );
        assert_eq!(event.result::<String>().expect("no result"), None);
        assert!(entries(Value::Nil).is_empty());
        assert_eq!(
            EventKind::parse("later"),
            EventKind::Other("later".to_owned())
        );
    }
}
