//! Following a queue's event stream ([`crate::QueueBuilder::events`]): what
//! happened to jobs, in order, from any process.
//!
//! The scripts write `enqueued`, `completed`, `failed`, `retried` and
//! `dead_lettered` in the same step as the change they describe, so those
//! are exactly as durable as the change itself. Workers write `started`,
//! `progress` and `reclaimed` after the fact, best-effort (a worker that
//! dies may not have written them). The stream is capped: a reader that
//! falls further behind than the cap misses the oldest events.

use std::collections::VecDeque;
use std::time::Duration;

use crate::protocol::cluster::Conn;
use futures_util::Stream;
use redis::Value;
use serde::de::DeserializeOwned;

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
            EventKind::Other(kind) => kind,
        }
    }
}

/// One event. Fields a kind does not carry are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Its position in the stream: pass it to [`EventsFrom::After`] to
    /// resume after it.
    pub id: String,
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
    /// Events after this one ([`Event::id`]): resume where a reader left off.
    After(String),
}

/// Events read per round trip.
const BATCH: usize = 100;

/// How long one blocking read waits before asking again.
const BLOCK: Duration = Duration::from_secs(5);

/// The reader's state between polls.
struct Reader {
    queue: Queue,
    key: String,
    conn: Option<Conn>,
    after: Option<String>,
    from_now: bool,
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
                self.conn = None;
                tokio::time::sleep(self.backoff.next_delay()).await;
                return Err(err);
            }
            self.backoff.reset();
        }
    }

    async fn read(&mut self) -> Result<(), Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(self.queue.redis().blocking_connection(BLOCK).await?),
        };
        if self.from_now {
            // The newest id now: reading from "$" on every call would miss
            // what arrives between two calls.
            let newest: Vec<(String, Value)> = redis::cmd("XREVRANGE")
                .arg(&self.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            self.after = Some(newest.into_iter().next().map_or("0-0".to_owned(), |e| e.0));
            self.from_now = false;
        }
        let after = self.after.clone().unwrap_or_else(|| "0-0".to_owned());
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&after)
            .query_async(conn)
            .await?;
        for (id, entry) in entries(reply) {
            self.after = Some(id.clone());
            if let Some(fields) = fields::fields(&entry) {
                self.ready.push_back(Event::parse(id, &fields));
            }
        }
        Ok(())
    }
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
    /// as they come; it never ends by itself. Each read holds a connection
    /// of its own. A failed read yields an error and the next poll tries
    /// again after a backoff, so a reader can ride out a Redis restart.
    ///
    /// Needs [`crate::QueueBuilder::events`] on the producers and workers of
    /// the queue; without it the stream stays empty.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream between events loses nothing still in the stream:
    /// start again with [`EventsFrom::After`] the last [`Event::id`] seen.
    pub fn events(&self, from: EventsFrom) -> impl Stream<Item = Result<Event, Error>> + Send {
        let (after, from_now) = match from {
            EventsFrom::Start => (None, false),
            EventsFrom::Now => (None, true),
            EventsFrom::After(id) => (Some(id), false),
        };
        let reader = Reader {
            queue: self.clone(),
            key: self.keys().events(),
            conn: None,
            after,
            from_now,
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
