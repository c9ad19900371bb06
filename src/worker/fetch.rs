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
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tracing::Instrument;

use crate::keys::GROUP;
use crate::scripts::scripts;
use crate::{Error, Priority, Queue};

/// One claimed stream entry, not yet decoded.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) priority: Priority,
    pub(crate) entry_id: String,
    /// `None` when the entry has no envelope field: not written by streamq.
    pub(crate) envelope: Option<Vec<u8>>,
    /// Times the entry has been delivered, this one included.
    pub(crate) deliveries: u32,
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
    Jobs(Vec<Claimed>),
    /// Nothing waiting; the group's last delivered id per stream.
    Idle([String; 4]),
    /// The queue is paused: claim nothing until it is resumed.
    Paused,
}

pub(crate) struct Fetcher {
    queue: Queue,
    consumer: String,
    conn: ConnectionManager,
    blocking: Option<MultiplexedConnection>,
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

    /// Claims up to `count` jobs, most urgent first.
    pub(crate) async fn fetch(&mut self, count: usize) -> Result<Fetched, Error> {
        let keys = self.queue.keys();
        let [c, h, m, l] = keys.streams();
        let mut call = scripts().fetch.call(&[c, h, m, l, keys.paused()]);
        call.arg(GROUP).arg(&self.consumer).arg(count);
        let span = tracing::debug_span!(
            "streamq.fetch",
            queue = self.queue.name(),
            room = count,
            jobs = tracing::field::Empty
        );
        let reply: Value = call.invoke(&mut self.conn).instrument(span.clone()).await?;
        let fetched = parse_fetch(reply)?;
        if let Fetched::Jobs(jobs) = &fetched {
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
        let keys = self.queue.keys();
        let cursor = &mut self.reclaim_cursors[priority.index()];
        if cursor.is_empty() {
            *cursor = "0-0".to_owned();
        }
        let mut call = scripts()
            .reclaim
            .call(&[keys.stats(), keys.stream(priority)]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(cursor.as_str())
            .arg(count)
            .arg(priority.as_str());
        let reply: Value = call.invoke(&mut self.conn).await?;
        let (next, reclaimed) = parse_reclaim(reply, priority)?;
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

fn parse_fetch(reply: Value) -> Result<Fetched, Error> {
    let unexpected = |detail: String| Error::UnexpectedReply {
        script: "fetch",
        detail,
    };
    let Value::Array(items) = reply else {
        return Err(unexpected(format!("{reply:?}")));
    };
    let mut items = items.into_iter();
    let count = match items.next() {
        Some(Value::Int(-1)) => return Ok(Fetched::Paused),
        Some(Value::Int(n)) => usize::try_from(n).map_err(|_| unexpected(format!("count {n}")))?,
        other => return Err(unexpected(format!("count {other:?}"))),
    };
    if count == 0 {
        let mut ids: [String; 4] = Default::default();
        for (slot, value) in ids.iter_mut().zip(items) {
            *slot = redis::from_redis_value(value).map_err(|e| unexpected(e.to_string()))?;
        }
        return Ok(Fetched::Idle(ids));
    }
    let mut jobs = Vec::with_capacity(count);
    while let (Some(p), Some(id), Some(envelope)) = (items.next(), items.next(), items.next()) {
        let priority = match p {
            Value::Int(i) => Priority::from_lua_index(i),
            _ => None,
        }
        .ok_or_else(|| unexpected(format!("priority {p:?}")))?;
        let entry_id = redis::from_redis_value(id).map_err(|e| unexpected(e.to_string()))?;
        let envelope = match envelope {
            Value::BulkString(bytes) => Some(bytes),
            _ => None,
        };
        jobs.push(Claimed {
            priority,
            entry_id,
            envelope,
            deliveries: 1,
        });
    }
    if jobs.len() != count {
        return Err(unexpected(format!(
            "{count} jobs announced, {} sent",
            jobs.len()
        )));
    }
    Ok(Fetched::Jobs(jobs))
}

fn parse_reclaim(reply: Value, priority: Priority) -> Result<(String, Reclaimed), Error> {
    let unexpected = |detail: String| Error::UnexpectedReply {
        script: "reclaim",
        detail,
    };
    let Value::Array(items) = reply else {
        return Err(unexpected(format!("{reply:?}")));
    };
    let mut items = items.into_iter();
    let cursor: String = items
        .next()
        .map(redis::from_redis_value)
        .transpose()
        .map_err(|e| unexpected(e.to_string()))?
        .unwrap_or_else(|| "0-0".to_owned());
    let count: usize = items
        .next()
        .map(redis::from_redis_value)
        .transpose()
        .map_err(|e| unexpected(e.to_string()))?
        .unwrap_or(0);
    let mut reclaimed = Reclaimed::default();
    for _ in 0..count {
        let (Some(id), Some(envelope), Some(deliveries)) =
            (items.next(), items.next(), items.next())
        else {
            return Err(unexpected(format!("{count} jobs announced, fewer sent")));
        };
        reclaimed.jobs.push(Claimed {
            priority,
            entry_id: redis::from_redis_value(id).map_err(|e| unexpected(e.to_string()))?,
            envelope: match envelope {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            },
            deliveries: redis::from_redis_value(deliveries).unwrap_or(1),
        });
    }
    for id in items {
        reclaimed
            .lost
            .push(redis::from_redis_value(id).map_err(|e| unexpected(e.to_string()))?);
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

    #[test]
    fn fetch_replies_parse() {
        let reply = Value::Array(vec![
            Value::Int(2),
            Value::Int(1),
            Value::BulkString(b"1-0".to_vec()),
            Value::BulkString(b"env".to_vec()),
            Value::Int(4),
            Value::BulkString(b"2-0".to_vec()),
            Value::Nil,
        ]);
        let Ok(Fetched::Jobs(jobs)) = parse_fetch(reply) else {
            panic!("jobs expected")
        };
        assert_eq!(jobs[0].priority, Priority::Critical);
        assert_eq!(jobs[0].envelope.as_deref(), Some(&b"env"[..]));
        assert_eq!(
            (jobs[1].priority, jobs[1].envelope.is_none()),
            (Priority::Low, true)
        );

        let idle = Value::Array(
            [0, 1, 2, 3, 4]
                .map(|i| match i {
                    0 => Value::Int(0),
                    _ => Value::BulkString(format!("{i}-0").into_bytes()),
                })
                .to_vec(),
        );
        assert!(matches!(parse_fetch(idle), Ok(Fetched::Idle(ids)) if ids[3] == "4-0"));
        assert!(parse_fetch(Value::Array(vec![Value::Int(1)])).is_err());
    }

    #[test]
    fn reclaim_replies_parse_jobs_and_lost_ids() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("7-0"),
            Value::Int(1),
            bulk("5-0"),
            bulk("env"),
            Value::Int(3),
            bulk("6-0"),
        ]);
        let (cursor, reclaimed) = parse_reclaim(reply, Priority::High).expect("parses");
        assert_eq!(cursor, "7-0");
        assert_eq!(reclaimed.jobs.len(), 1);
        assert_eq!(reclaimed.jobs[0].deliveries, 3);
        assert_eq!(reclaimed.jobs[0].priority, Priority::High);
        assert_eq!(reclaimed.lost, ["6-0"]);
    }
}
