//! Queue statistics: what is waiting, what is in flight, and the counters
//! the scripts keep. Read-only, a handful of O(1) commands in one round trip.

use std::collections::HashMap;

use redis::Value;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::queue::{Queue, check_types};

/// A snapshot of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// One entry per priority, most urgent first.
    pub priorities: Vec<PriorityStats>,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Jobs waiting for their time: retries and scheduled jobs.
    pub delayed: u64,
    /// Flow parents of this queue waiting for their children
    /// ([`crate::Flow`]): in no stream yet, and not in `waiting`.
    pub waiting_children: u64,
    /// For a queue of several partitions, each partition's own snapshot, by
    /// index (the fields above are their sums); empty for a queue of one.
    pub partitions: Vec<QueueStats>,
}

/// A snapshot of one priority stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PriorityStats {
    /// Which stream.
    pub priority: Priority,
    /// Entries in the stream: waiting plus in flight.
    pub length: u64,
    /// Jobs not yet delivered to any worker (the group's lag).
    pub waiting: u64,
    /// Jobs delivered and not yet finished (the group's pending entries).
    pub in_flight: u64,
    /// Jobs ever enqueued at this priority.
    pub enqueued: u64,
    /// Jobs ever completed at this priority.
    pub completed: u64,
    /// Jobs ever dead-lettered from this priority.
    pub dead_lettered: u64,
}

impl QueueStats {
    /// Jobs waiting over all priorities.
    pub fn waiting(&self) -> u64 {
        self.priorities.iter().map(|p| p.waiting).sum()
    }

    /// Jobs in flight over all priorities.
    pub fn in_flight(&self) -> u64 {
        self.priorities.iter().map(|p| p.in_flight).sum()
    }

    /// Jobs completed over all priorities.
    pub fn completed(&self) -> u64 {
        self.priorities.iter().map(|p| p.completed).sum()
    }

    /// Whether nothing is waiting, in flight or delayed.
    pub fn is_idle(&self) -> bool {
        self.waiting() == 0 && self.in_flight() == 0 && self.delayed == 0
    }

    /// Jobs enqueued over all priorities.
    pub fn enqueued(&self) -> u64 {
        self.priorities.iter().map(|p| p.enqueued).sum()
    }
}

impl Queue {
    /// Reads the queue's statistics in one round trip.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        if self.partition_count() == 1 {
            return self.partition_stats().await;
        }
        let parts = self.partitions();
        let each = futures_util::future::join_all(parts.iter().map(Queue::partition_stats)).await;
        let each = each
            .into_iter()
            .collect::<Result<Vec<QueueStats>, Error>>()?;
        let mut total = QueueStats {
            priorities: Priority::ALL
                .into_iter()
                .map(|priority| PriorityStats {
                    priority,
                    length: 0,
                    waiting: 0,
                    in_flight: 0,
                    enqueued: 0,
                    completed: 0,
                    dead_lettered: 0,
                })
                .collect(),
            dead_letters: 0,
            delayed: 0,
            waiting_children: 0,
            partitions: Vec::new(),
        };
        for part in &each {
            total.dead_letters += part.dead_letters;
            total.delayed += part.delayed;
            total.waiting_children += part.waiting_children;
            for (sum, p) in total.priorities.iter_mut().zip(&part.priorities) {
                sum.length += p.length;
                sum.waiting += p.waiting;
                sum.in_flight += p.in_flight;
                sum.enqueued += p.enqueued;
                sum.completed += p.completed;
                sum.dead_lettered += p.dead_lettered;
            }
        }
        total.partitions = each;
        Ok(total)
    }

    /// [`Queue::stats`] of one partition (or a queue of one).
    async fn partition_stats(&self) -> Result<QueueStats, Error> {
        let keys = self.keys();
        // Errors come back per command: a stream nobody has worked on has no
        // group yet, and reads as nothing in flight.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in keys.streams() {
            pipe.cmd("TYPE").arg(key);
            pipe.cmd("XLEN").arg(key);
            pipe.cmd("XPENDING").arg(key).arg(GROUP);
            pipe.cmd("XINFO").arg("GROUPS").arg(key);
        }
        pipe.cmd("HGETALL").arg(keys.stats());
        pipe.cmd("XLEN").arg(keys.dead());
        pipe.cmd("ZCARD").arg(keys.delayed());
        let raw: Vec<Value> = pipe.query_async(&mut self.conn()).await?;
        let mut replies = Vec::with_capacity(raw.len());
        let mut stream_exists = true;
        for (i, value) in raw.into_iter().enumerate() {
            let (key, expected) = match keys.streams().get(i / 4) {
                Some(stream) => (stream.as_str(), "stream"),
                None => [
                    (keys.stats(), "hash"),
                    (keys.dead(), "stream"),
                    (keys.delayed(), "zset"),
                ][(i - 16).min(2)],
            };
            if i < 16 && i % 4 == 0 {
                let found: String =
                    redis::from_redis_value(reply::pipeline_item(value, key, expected)?)
                        .unwrap_or_default();
                stream_exists = check_types(&[(key, expected)], &[found])?[0];
                continue;
            }
            let missing = i < 16 && !stream_exists;
            replies.push(if missing || reply::is_nogroup_item(&value) {
                Value::Nil
            } else {
                reply::pipeline_item(value, key, expected)?
            });
        }
        let delayed = redis::from_redis_value(replies.pop().unwrap_or(Value::Nil)).unwrap_or(0);
        let dead_letters =
            redis::from_redis_value(replies.pop().unwrap_or(Value::Nil)).unwrap_or(0);
        let counters: HashMap<String, u64> =
            redis::from_redis_value(replies.pop().unwrap_or(Value::Nil)).unwrap_or_default();
        let counter =
            |name: &str, p: Priority| counters.get(&format!("{name}:{p}")).copied().unwrap_or(0);

        let mut priorities = Vec::with_capacity(4);
        for (priority, chunk) in Priority::ALL.into_iter().zip(replies.chunks(3)) {
            let length: u64 = redis::from_redis_value_ref(&chunk[0]).unwrap_or(0);
            let in_flight = pending_count(&chunk[1]);
            // The lag can be stale after undelivered entries were deleted
            // (a drain, a cancel): it never exceeds what the stream holds.
            let undelivered = length.saturating_sub(in_flight);
            let waiting = group_lag(&chunk[2]).map_or(undelivered, |lag| lag.min(undelivered));
            priorities.push(PriorityStats {
                priority,
                length,
                waiting,
                in_flight,
                enqueued: counter("enqueued", priority),
                completed: counter("completed", priority),
                dead_lettered: counter("dead", priority),
            });
        }
        Ok(QueueStats {
            priorities,
            dead_letters,
            delayed,
            waiting_children: counters.get("waiting_children").copied().unwrap_or(0),
            partitions: Vec::new(),
        })
    }
}

impl Queue {
    /// One section of `INFO` from the queue's server (on a cluster: the node
    /// holding partition 0), as field/value pairs
    /// (for example `"memory"` for `used_memory`).
    ///
    /// # Errors
    ///
    /// Connection errors, or [`Error::NoPermission`] where an ACL denies `INFO`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn server_info(&self, section: &str) -> Result<HashMap<String, String>, Error> {
        // Behind a read of the queue's key: on a cluster the pipeline goes to
        // the node holding it (partition 0), not to every node.
        let (_, text): (Value, String) = redis::pipe()
            .cmd("EXISTS")
            .arg(self.keys().stats())
            .cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn())
            .await?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }
}

/// The count from an `XPENDING key group` summary reply.
fn pending_count(reply: &Value) -> u64 {
    match reply {
        Value::Array(items) => items
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Our group's `lag` from `XINFO GROUPS`; `None` when Redis cannot tell.
fn group_lag(reply: &Value) -> Option<u64> {
    crate::protocol::fields::our_group(reply)?
        .get("lag")
        .and_then(|v| redis::from_redis_value_ref(v).ok())
}
