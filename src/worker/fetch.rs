//! Claiming jobs: the `fetch` script for strict-priority reads, and an idle
//! wait that blocks on a connection of its own until something new arrives.
//!
//! Strict priority and blocking reads: `XREADGROUP BLOCK` over four streams
//! would claim from every stream with data at once, so a low job could be
//! claimed while critical ones wait. Claims therefore only ever happen in the
//! `fetch` script, which reads critical first and lower streams only while it
//! has room. When it finds nothing it returns the group's last delivered id
//! per stream; the worker then blocks with a plain `XREAD` (which claims
//! nothing) from those ids, and calls `fetch` again as soon as it returns.
//! Entries added between the two calls are newer than those ids, so the
//! `XREAD` returns at once: no wake-up is missed.

use std::collections::VecDeque;
use std::time::Duration;

use redis::Value;
use tracing::Instrument;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::cluster::Conn;
use crate::protocol::keys::GROUP;
use crate::protocol::reply::{self, Reply};
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::{millis, now_ms};

use super::limit::RateLimit;

/// One claimed stream entry, not yet decoded.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) priority: Priority,
    pub(crate) entry_id: String,
    /// `None` when the entry has no envelope field: not written by streamq.
    pub(crate) envelope: Option<Vec<u8>>,
    /// Times the entry has been delivered, this one included.
    pub(crate) deliveries: u32,
    /// When it was claimed, Unix ms: the `now` the claiming script ran with.
    pub(crate) claimed_ms: u64,
}

/// What one reclaim pass over a stream took over.
#[derive(Debug, Default)]
pub(crate) struct Reclaimed {
    pub(crate) jobs: Vec<Claimed>,
    /// Entries Redis had deleted while they were pending: lost jobs.
    pub(crate) lost: Vec<String>,
}

/// What one fetch found.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// Jobs, and when fewer than asked were found, the group's last
    /// delivered id per stream (nothing else waits: block from there).
    Jobs(Vec<Claimed>, Option<[String; 4]>),
    /// Nothing waiting; the group's last delivered id per stream.
    Idle([String; 4]),
    /// The queue is paused: claim nothing until it is resumed.
    Paused,
    /// The rate limit's window is spent: claim nothing for this long.
    RateLimited(Duration),
}

pub(crate) struct Fetcher {
    queue: Queue,
    consumer: String,
    conn: Conn,
    blocking: Option<Conn>,
    max_block: Duration,
    reclaim_cursors: [String; 4],
}

impl Fetcher {
    pub(crate) fn new(queue: &Queue, consumer: &str, max_block: Duration) -> Fetcher {
        Fetcher {
            queue: queue.clone(),
            consumer: consumer.to_owned(),
            conn: queue.conn(),
            blocking: None,
            max_block,
            reclaim_cursors: Default::default(),
        }
    }

    /// Claims up to `count` jobs, most urgent first, within `limit`.
    pub(crate) async fn fetch(
        &mut self,
        count: usize,
        limit: Option<RateLimit>,
    ) -> Result<Fetched, Error> {
        let keys = self.queue.keys();
        let now = now_ms();
        let mut call = scripts().fetch.call(keys, &[keys.paused(), keys.rate()]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(count)
            .arg(limit.map_or(0, |l| l.max()))
            .arg(limit.map_or(1, |l| l.period_ms()))
            .arg(now);
        let span = tracing::debug_span!(
            "streamq.fetch",
            queue = self.queue.name(),
            room = count,
            jobs = tracing::field::Empty
        );
        let reply: Value = call.invoke(&mut self.conn).instrument(span.clone()).await?;
        let fetched = parse_fetch(reply, now)?;
        if let Fetched::Jobs(jobs, _) = &fetched {
            span.record("jobs", jobs.len());
            for job in jobs {
                tracing::trace!(parent: &span, entry = job.entry_id, priority = %job.priority, "claimed");
            }
        }
        Ok(fetched)
    }

    /// Takes over up to `count` jobs of `priority` idle for at least `lease`,
    /// continuing the scan where the last pass stopped.
    pub(crate) async fn reclaim(
        &mut self,
        priority: Priority,
        lease: Duration,
        count: usize,
    ) -> Result<Reclaimed, Error> {
        let cursor = &mut self.reclaim_cursors[priority.index()];
        if cursor.is_empty() {
            *cursor = "0-0".to_owned();
        }
        let mut call = scripts().reclaim.call(self.queue.keys(), &[] as &[&str]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(priority.lua_index())
            .arg(millis(lease))
            .arg(cursor.as_str())
            .arg(count);
        let reply: Value = call.invoke(&mut self.conn).await?;
        let (next, reclaimed) = parse_reclaim(reply, priority, now_ms())?;
        *cursor = next;
        Ok(reclaimed)
    }

    /// Waits until a stream has an entry newer than `last_ids`, or `block`
    /// (at most the configured block) passes. Claims nothing.
    ///
    /// Cancel safety: cancel-safe; the blocking connection is dropped with
    /// the read, so a late reply cannot reach a later call.
    pub(crate) async fn wait_for_new(
        &mut self,
        last_ids: &[String; 4],
        block: Duration,
    ) -> Result<(), Error> {
        let mut conn = match self.blocking.take() {
            Some(conn) => conn,
            None => {
                self.queue
                    .redis()
                    .blocking_connection(self.max_block)
                    .await?
            }
        };
        let block = block.clamp(Duration::from_millis(1), self.max_block);
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        let _: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.queue.keys().streams().as_slice())
            .arg(last_ids.as_slice())
            .query_async(&mut conn)
            .await?;
        self.blocking = Some(conn);
        Ok(())
    }
}

/// Reads `fetch`'s reply: claimed jobs, or the last delivered ids to wait
/// from, or paused.
fn parse_fetch(reply: Value, now: u64) -> Result<Fetched, Error> {
    let mut body = match reply::check(&scripts().fetch, reply)? {
        Reply::Paused => return Ok(Fetched::Paused),
        Reply::RateLimited(wait) => return Ok(Fetched::RateLimited(Duration::from_millis(wait))),
        Reply::Done(body) => body,
        Reply::Stale => {
            return Err(Error::UnexpectedReply {
                script: "fetch",
                detail: "stale status".to_owned(),
            });
        }
    };
    let mut triples = body.array()?;
    let mut jobs = Vec::with_capacity(triples.len() / 3);
    while !triples.is_empty() {
        let priority = triples.int()?;
        let priority =
            Priority::from_lua_index(priority).ok_or_else(|| Error::UnexpectedReply {
                script: "fetch",
                detail: format!("priority index {priority}"),
            })?;
        jobs.push(Claimed {
            priority,
            entry_id: triples.text()?,
            envelope: triples.optional_bytes()?,
            deliveries: 1,
            claimed_ms: now,
        });
    }
    let mut last = body.array()?;
    let ids = if last.is_empty() {
        None
    } else {
        let mut ids: [String; 4] = Default::default();
        for id in &mut ids {
            *id = last.text()?;
        }
        Some(ids)
    };
    match (jobs.is_empty(), ids) {
        (false, ids) => Ok(Fetched::Jobs(jobs, ids)),
        (true, Some(ids)) => Ok(Fetched::Idle(ids)),
        (true, None) => Err(Error::UnexpectedReply {
            script: "fetch",
            detail: "no jobs and no last ids".to_owned(),
        }),
    }
}

/// Reads `reclaim`'s reply: the next cursor, and what was taken over.
fn parse_reclaim(reply: Value, priority: Priority, now: u64) -> Result<(String, Reclaimed), Error> {
    let mut body = reply::done(&scripts().reclaim, reply)?;
    let cursor = body.text()?;
    let mut triples = body.array()?;
    let mut reclaimed = Reclaimed::default();
    while !triples.is_empty() {
        reclaimed.jobs.push(Claimed {
            priority,
            entry_id: triples.text()?,
            envelope: triples.optional_bytes()?,
            deliveries: u32::try_from(triples.int()?).unwrap_or(u32::MAX),
            claimed_ms: now,
        });
    }
    let mut deleted = body.array()?;
    while !deleted.is_empty() {
        reclaimed.lost.push(deleted.text()?);
    }
    Ok((cursor, reclaimed))
}

/// Claimed jobs waiting for a free handler slot, handed out most urgent
/// first, in claim order within a priority.
#[derive(Debug, Default)]
pub(crate) struct PriorityBuffer {
    lanes: [VecDeque<Claimed>; 4],
    len: usize,
}

impl PriorityBuffer {
    pub(crate) fn extend(&mut self, jobs: Vec<Claimed>) {
        self.len += jobs.len();
        for job in jobs {
            self.lanes[job.priority.index()].push_back(job);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Claimed> {
        let job = self.lanes.iter_mut().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(job)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The priority of the job [`PriorityBuffer::pop`] would hand out.
    pub(crate) fn peek_priority(&self) -> Option<Priority> {
        self.lanes
            .iter()
            .find_map(VecDeque::front)
            .map(|job| job.priority)
    }

    /// Takes every buffered job out, most urgent first.
    pub(crate) fn drain(&mut self) -> Vec<Claimed> {
        self.len = 0;
        self.lanes
            .iter_mut()
            .flat_map(|lane| lane.drain(..))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(priority: Priority, id: &str) -> Claimed {
        Claimed {
            priority,
            entry_id: id.to_owned(),
            envelope: None,
            deliveries: 1,
            claimed_ms: 0,
        }
    }

    #[test]
    fn buffer_hands_out_most_urgent_first() {
        let mut buffer = PriorityBuffer::default();
        buffer.extend(vec![
            claimed(Priority::Low, "l1"),
            claimed(Priority::High, "h1"),
        ]);
        buffer.extend(vec![
            claimed(Priority::Critical, "c1"),
            claimed(Priority::High, "h2"),
        ]);
        assert_eq!(buffer.len(), 4);
        let order: Vec<String> = std::iter::from_fn(|| buffer.pop())
            .map(|c| c.entry_id)
            .collect();
        assert_eq!(order, ["c1", "h1", "h2", "l1"]);
        assert!(buffer.is_empty());
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn fetch_replies_parse() {
        let reply = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![
                Value::Int(1),
                bulk("1-0"),
                bulk("env"),
                Value::Int(4),
                bulk("2-0"),
                Value::Nil,
            ]),
            Value::Array(vec![]),
        ]);
        let Ok(Fetched::Jobs(jobs, None)) = parse_fetch(reply, 7) else {
            panic!("jobs expected")
        };
        assert_eq!(jobs[0].priority, Priority::Critical);
        assert_eq!(jobs[0].envelope.as_deref(), Some(&b"env"[..]));
        assert_eq!(
            (jobs[1].priority, jobs[1].envelope.is_none()),
            (Priority::Low, true)
        );

        let last = ["1-0", "2-0", "3-0", "4-0"].map(bulk).to_vec();
        let idle = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![]),
            Value::Array(last),
        ]);
        assert_eq!(jobs[0].claimed_ms, 7);
        assert!(matches!(parse_fetch(idle, 0), Ok(Fetched::Idle(ids)) if ids[3] == "4-0"));
        assert!(matches!(
            parse_fetch(Value::Array(vec![Value::Int(2)]), 0),
            Ok(Fetched::Paused)
        ));
        assert!(matches!(
            parse_fetch(Value::Array(vec![Value::Int(3), Value::Int(40)]), 0),
            Ok(Fetched::RateLimited(wait)) if wait == Duration::from_millis(40)
        ));
        let bad_priority = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![Value::Int(5), bulk("1-0"), bulk("env")]),
            Value::Array(vec![]),
        ]);
        assert!(parse_fetch(bad_priority, 0).is_err());
    }

    #[test]
    fn reclaim_replies_parse_jobs_and_lost_ids() {
        let reply = Value::Array(vec![
            Value::Int(0),
            bulk("7-0"),
            Value::Array(vec![bulk("5-0"), bulk("env"), Value::Int(3)]),
            Value::Array(vec![bulk("6-0")]),
        ]);
        let (cursor, reclaimed) = parse_reclaim(reply, Priority::High, 0).expect("parses");
        assert_eq!(cursor, "7-0");
        assert_eq!(reclaimed.jobs.len(), 1);
        assert_eq!(reclaimed.jobs[0].deliveries, 3);
        assert_eq!(reclaimed.jobs[0].priority, Priority::High);
        assert_eq!(reclaimed.lost, ["6-0"]);
    }
}
