//! Claiming jobs: the `fetch` script for strict-priority reads, and an idle
//! wait that blocks on a connection of its own until something new arrives.
//!
//! Strict priority and blocking reads: `XREADGROUP BLOCK` over four streams
//! claims from every stream with data at once, so a low job could be claimed
//! while critical ones wait. Busy workers therefore claim with the `fetch`
//! script, which reads critical first and lower streams only while it has
//! room; while jobs keep coming, with a plain `XREADGROUP` down to where the
//! last claim ended (every stream once the backlog thins), holding what it
//! took beyond the first stream it read full ([`Fetcher::claim_native`],
//! [`next_native_claim`]). When `fetch` finds nothing, the worker
//! waits in one of two ways:
//!
//! - **Claiming in the wait** (the default): a blocking `XREADGROUP COUNT 1`
//!   over the four streams, pipelined with the pause flag and a plain
//!   `XREADGROUP` for the rest of the worker's room. Redis hands each new
//!   entry to exactly one blocked consumer, so a job wakes one idle worker,
//!   not all of them, and costs no extra round trip. The blocking read
//!   claims at most one job per stream, and only jobs that arrived while the
//!   worker was idle; the read right after it, in the same round trip, reads
//!   every stream at one instant, so only the most urgent stream it reads
//!   full may hold more. A claimed job starts only once nothing more urgent
//!   waits unclaimed and the queue is not paused; until then it waits in the
//!   worker, leased ([`Fetched::floor`]).
//! - **Waking, then fetching** (under a rate limit, which only `fetch`
//!   counts, or a per-group one, which admits each claimed job; with
//!   `prefetch(0)`, which must never hold more than it runs; and on
//!   partitioned workers): `fetch` returns the group's last delivered
//!   id per stream, and the worker blocks with a plain `XREAD` (which claims
//!   nothing) from those ids, then calls `fetch` again. Entries added between
//!   the two calls are newer than those ids, so the `XREAD` returns at once:
//!   no wake-up is missed.

use std::collections::VecDeque;
use std::time::Duration;

use redis::{RedisResult, Value};
use tracing::Instrument;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::cluster::Conn;
use crate::protocol::keys::GROUP;
use crate::protocol::reply::{self, Reply};
use crate::protocol::scripts::{ScriptCall, scripts};
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
    /// Jobs, and when fewer than asked were found (nothing else waits), how
    /// to wait for more.
    Jobs(Vec<Claimed>, Option<Wait>),
    /// Nothing waiting; how to wait for more.
    Idle(Wait),
    /// The queue is paused: claim nothing until it is resumed.
    Paused,
    /// The rate limit's window is spent: claim nothing for this long.
    RateLimited(Duration),
    /// A claim outside the script ([`Fetcher::claim_native`]) took jobs,
    /// now held; the most urgent stream it read full, where more may wait
    /// (`None`: it read every stream it named to its end).
    Claimed(Option<Priority>),
}

impl Fetched {
    /// The most urgent priority that may still wait unclaimed after this
    /// fetch (`fetch` claims most urgent first, so nothing more urgent than
    /// its last job is left); `None` when every stream was read to its end.
    pub(crate) fn floor(&self) -> Option<Priority> {
        match self {
            Fetched::Idle(_) | Fetched::Jobs(_, Some(_)) => None,
            Fetched::Jobs(jobs, None) => {
                Some(jobs.last().map_or(Priority::Critical, |j| j.priority))
            }
            Fetched::Paused | Fetched::RateLimited(_) => Some(Priority::Critical),
            Fetched::Claimed(full) => *full,
        }
    }
}

/// What [`Fetcher::claim_blocking`] brought.
#[derive(Debug)]
pub(crate) struct Claim {
    /// What the blocking read claimed: at most one job per stream, which may
    /// start only once nothing more urgent waits (see [`Fetched::floor`]).
    pub(crate) read: Vec<Claimed>,
    /// What the read behind it claimed, from every stream at one instant:
    /// held like `read`.
    pub(crate) more: Vec<Claimed>,
    /// What that says: paused; nothing more (wait by claiming again); or
    /// the most urgent stream it read full, where more may wait.
    pub(crate) then: Fetched,
}

/// How to wait once every stream was read to its end (module docs).
#[derive(Debug, PartialEq)]
pub(crate) enum Wait {
    /// Block with `XREAD` for entries newer than these (the group's last
    /// delivered ids), then fetch.
    After([String; 4]),
    /// Claim in the blocking read itself: [`Fetcher::claim_blocking`].
    Claim,
}

/// Ends a [`Fetcher::claim_blocking`] in flight early, for shutdown.
pub(crate) struct Unblocker {
    conn: Conn,
    /// The blocking connection's `CLIENT ID`; `None` on a cluster, or when
    /// the user may not run `CLIENT ID`.
    client: Option<i64>,
}

impl Unblocker {
    /// Asks Redis to end the blocking read now (`CLIENT UNBLOCK`), as if it
    /// had timed out. Best effort: a user without the `CLIENT UNBLOCK`
    /// permission waits for the read's block time instead.
    pub(crate) async fn unblock(mut self) {
        let Some(client) = self.client else { return };
        let unblocked: Result<i64, _> = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(client)
            .query_async(&mut self.conn)
            .await;
        if let Err(err) = unblocked {
            tracing::debug!(%err, "CLIENT UNBLOCK refused; the blocking read ends on its own");
        }
    }
}

pub(crate) struct Fetcher {
    queue: Queue,
    consumer: String,
    conn: Conn,
    /// The connection blocking reads use, and its `CLIENT ID` (see
    /// [`Unblocker`]).
    blocking: Option<(Conn, Option<i64>)>,
    max_block: Duration,
    reclaim_cursors: [String; 4],
}

impl Fetcher {
    /// A fetcher that claims over `conn`.
    pub(crate) fn new(queue: &Queue, conn: Conn, consumer: &str, max_block: Duration) -> Fetcher {
        Fetcher {
            queue: queue.clone(),
            consumer: consumer.to_owned(),
            conn,
            blocking: None,
            max_block,
            reclaim_cursors: Default::default(),
        }
    }

    /// Claims up to `count` jobs, most urgent first, within `limit`. With
    /// `claim_in_wait`, a fetch that reads every stream to its end answers
    /// [`Wait::Claim`], else [`Wait::After`] the last delivered ids.
    pub(crate) async fn fetch(
        &mut self,
        count: usize,
        limit: Option<RateLimit>,
        claim_in_wait: bool,
    ) -> Result<Fetched, Error> {
        let now = now_ms();
        let call = self.fetch_call(count, limit, claim_in_wait, now);
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

    fn fetch_call(
        &self,
        count: usize,
        limit: Option<RateLimit>,
        claim_in_wait: bool,
        now: u64,
    ) -> ScriptCall {
        let keys = self.queue.keys();
        let mut call = scripts().fetch.call(keys, &[keys.paused(), keys.rate()]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(count)
            .arg(limit.map_or(0, |l| l.max()))
            .arg(limit.map_or(1, |l| l.period_ms()))
            .arg(now)
            .arg(if claim_in_wait { "0" } else { "1" });
        call
    }

    /// Takes the blocking connection out (put it back after a read that
    /// completed), opening it and learning its `CLIENT ID` if needed.
    async fn take_blocking(&mut self) -> Result<(Conn, Option<i64>), Error> {
        if let Some(open) = self.blocking.take() {
            return Ok(open);
        }
        let mut conn = self
            .queue
            .redis()
            .blocking_connection(self.max_block)
            .await?;
        // On a cluster the id would name a client of some node.
        let client = match &conn {
            Conn::Plain(_) => redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await
                .ok(),
            Conn::Single(_) | Conn::Cluster(_) => None,
        };
        Ok((conn, client))
    }

    /// Opens the blocking connection if it is not open yet, and returns what
    /// can end a [`Fetcher::claim_blocking`] on it early.
    pub(crate) async fn unblocker(&mut self) -> Result<Unblocker, Error> {
        let (conn, client) = self.take_blocking().await?;
        self.blocking = Some((conn, client));
        Ok(Unblocker {
            conn: self.conn.clone(),
            client,
        })
    }

    /// Waits up to `block` (at most the configured block) for new jobs while
    /// the worker is idle, claiming in the read itself, then claims up to
    /// `room - 1` more (at least one) from each stream and reads the pause
    /// flag, in the same round trip. See the module docs.
    ///
    /// Cancel safety: not cancel-safe. Dropped mid-flight, the read may
    /// already have claimed jobs, which then wait for their lease to run out
    /// before another worker reclaims them: end it with [`Unblocker`] and
    /// await it instead.
    pub(crate) async fn claim_blocking(
        &mut self,
        room: usize,
        block: Duration,
    ) -> Result<Claim, Error> {
        let (mut conn, client) = self.take_blocking().await?;
        let keys = self.queue.keys();
        let block = block.clamp(Duration::from_millis(1), self.max_block);
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(keys.streams().as_slice())
            .arg([">"; 4].as_slice());
        // Run when the read returns: the pause flag, and the rest of the
        // room from every stream, outside the script as in `claim_native`.
        let count = room.saturating_sub(1).max(1);
        self.add_native_claim(&mut pipe, count, keys.streams());
        let span = tracing::debug_span!("streamq.claim", queue = self.queue.name(), room);
        let replies: Vec<RedisResult<Value>> = pipe
            .ignore_errors()
            .query_async(&mut conn)
            .instrument(span)
            .await?;
        self.blocking = Some((conn, client));
        let now = now_ms();
        let claimed = |reply: Option<RedisResult<Value>>| match reply {
            Some(reply) => parse_claim(reply?, keys.streams(), now),
            None => Ok(Vec::new()),
        };
        let mut replies = replies.into_iter();
        let read = claimed(replies.next());
        let paused = match replies.next() {
            Some(Ok(Value::Int(exists))) => Ok(exists > 0),
            Some(Ok(other)) => Err(format!("EXISTS answered {other:?}")),
            Some(Err(err)) => Err(err.to_string()),
            None => Err("no reply".to_owned()),
        };
        let more = claimed(replies.next());
        let (read, more, then) = match (read, paused, more) {
            (Ok(read), Ok(paused), Ok(more)) => {
                let then = if paused {
                    Fetched::Paused
                } else if more.is_empty() {
                    Fetched::Idle(Wait::Claim)
                } else {
                    Fetched::Claimed(most_urgent_full(&more, count))
                };
                (read, more, then)
            }
            // What was claimed is ours whatever else failed: keep it, start
            // only critical jobs (nothing is more urgent), and let the next
            // claim, a `fetch`, meet the error.
            (Ok(read), paused, Ok(more)) => {
                if let Err(err) = paused {
                    tracing::debug!(queue = self.queue.name(), %err, "pause check after a blocking claim failed");
                }
                (read, more, Fetched::Jobs(Vec::new(), None))
            }
            (Ok(jobs), _, Err(err)) | (Err(err), _, Ok(jobs)) if !jobs.is_empty() => {
                tracing::debug!(queue = self.queue.name(), %err, "blocking claim failed in part");
                (jobs, Vec::new(), Fetched::Jobs(Vec::new(), None))
            }
            (Err(err), ..) | (_, _, Err(err)) => return Err(err),
        };
        Ok(Claim { read, more, then })
    }

    /// Claims up to `room` jobs from each stream from critical down to
    /// `upto` with one `XREADGROUP`, outside the `fetch` script, so their
    /// envelopes never pass through Lua (docs/benchmarks.md, "Round two,
    /// sixth sitting"). For a busy worker whose last claim ended in
    /// `upto` with its room full: the streams above it were read to their
    /// end then, so they give what arrived since, and `upto` more of its
    /// backlog; or, with `upto` low, whose last claim read every stream to
    /// its end and still found jobs. One command reads the streams at one
    /// instant, so a stream that gives fewer than `room` entries was read to
    /// its end: jobs less urgent than the most urgent stream read full must
    /// wait until a later claim shows nothing more urgent waits
    /// ([`Fetched::floor`]). The
    /// caller holds every job claimed here until then.
    ///
    /// `XREADGROUP` does not know the pause flag: read in the same round
    /// trip, it says whether the claimed jobs must wait for resume.
    ///
    /// Cancel safety: not cancel-safe (what was claimed would wait for its
    /// lease to run out); the run loop never cancels it.
    pub(crate) async fn claim_native(
        &mut self,
        room: usize,
        upto: Priority,
    ) -> Result<(Vec<Claimed>, Fetched), Error> {
        let keys = self.queue.keys();
        let streams = &keys.streams()[..=upto.index()];
        let mut pipe = redis::pipe();
        self.add_native_claim(&mut pipe, room, streams);
        let span = tracing::debug_span!("streamq.claim_native", queue = self.queue.name(), room);
        let (paused, read): (bool, Value) =
            pipe.query_async(&mut self.conn).instrument(span).await?;
        let jobs = parse_claim(read, keys.streams(), now_ms())?;
        if paused {
            return Ok((jobs, Fetched::Paused));
        }
        let full = most_urgent_full(&jobs, room);
        Ok((jobs, Fetched::Claimed(full)))
    }

    /// Adds `EXISTS <paused>` and `XREADGROUP COUNT <count>` over `streams`
    /// (critical first, any number of them) to `pipe`: a claim outside the
    /// script, with the pause flag it cannot read itself.
    fn add_native_claim(&self, pipe: &mut redis::Pipeline, count: usize, streams: &[String]) {
        pipe.cmd("EXISTS").arg(self.queue.keys().paused());
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(streams)
            .arg(&[">"; 4][..streams.len()]);
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
        let (mut conn, client) = self.take_blocking().await?;
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
        self.blocking = Some((conn, client));
        Ok(())
    }
}

/// The most urgent stream of which one `XREADGROUP COUNT <count>` claimed
/// `count` jobs: where more may wait. The command reads every stream it
/// names at one instant, so the others were read to their end.
fn most_urgent_full(jobs: &[Claimed], count: usize) -> Option<Priority> {
    Priority::ALL
        .into_iter()
        .find(|&p| jobs.iter().filter(|job| job.priority == p).count() >= count.max(1))
}

/// After a claim outside the script ([`Fetcher::claim_native`]) that found
/// `found` jobs with `full` its most urgent stream read full: how far the
/// next such claim reads, or `None` to go back to `fetch`. Down to `full`
/// while a backlog lasts there; over every stream when each was read to its
/// end but some job came (the backlog is thin, not gone, and `fetch` would
/// pass each entry through Lua); `fetch` once a claim finds nothing, since
/// only it can say how to wait.
pub(crate) fn next_native_claim(full: Option<Priority>, found: usize) -> Option<Priority> {
    match (full, found) {
        (Some(p), _) => Some(p),
        (None, 0) => None,
        (None, _) => Some(Priority::Low),
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
    let wait = match last.len() {
        0 => None,
        1 => Some(Wait::Claim),
        _ => {
            let mut ids: [String; 4] = Default::default();
            for id in &mut ids {
                *id = last.text()?;
            }
            Some(Wait::After(ids))
        }
    };
    match (jobs.is_empty(), wait) {
        (false, wait) => Ok(Fetched::Jobs(jobs, wait)),
        (true, Some(wait)) => Ok(Fetched::Idle(wait)),
        (true, None) => Err(Error::UnexpectedReply {
            script: "fetch",
            detail: "no jobs and no last ids".to_owned(),
        }),
    }
}

/// Reads an `XREADGROUP`'s reply (nil when a blocking read timed out): new
/// entries of the streams named in `streams`, most urgent first. Walks the
/// reply by hand, moving each envelope out of it: redis-rs's typed
/// `StreamReadReply` builds a map per entry, a measurable share of a busy
/// worker's CPU.
fn parse_claim(reply: Value, streams: &[String; 4], now: u64) -> Result<Vec<Claimed>, Error> {
    let bad = |detail: &str| Error::UnexpectedReply {
        script: "XREADGROUP",
        detail: detail.to_owned(),
    };
    let per_stream: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    pair.next()
                        .zip(pair.next())
                        .ok_or_else(|| bad("a stream without entries"))
                }
                _ => Err(bad("a stream reply that is not a pair")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("neither streams nor nil")),
    };
    let mut jobs = Vec::new();
    for (key, entries) in per_stream {
        let key = text(key).ok_or_else(|| bad("a stream name that is not text"))?;
        let index = streams
            .iter()
            .position(|s| *s == key)
            .ok_or_else(|| bad(&format!("entries of an unknown stream {key}")))?;
        let Value::Array(entries) = entries else {
            return Err(bad("entries that are not a list"));
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                return Err(bad("an entry that is not a list"));
            };
            let mut entry = entry.into_iter();
            let entry_id = entry
                .next()
                .and_then(text)
                .ok_or_else(|| bad("an entry without an id"))?;
            jobs.push(Claimed {
                priority: Priority::ALL[index],
                entry_id,
                envelope: entry.next().and_then(envelope_field),
                deliveries: 1,
                claimed_ms: now,
            });
        }
    }
    jobs.sort_by_key(|job| job.priority.index());
    Ok(jobs)
}

/// A bulk or simple string reply as text.
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// The `e` field of an entry's fields (a flat list, or a map in RESP3):
/// `None` when it has none, an entry streamq did not write.
fn envelope_field(fields: Value) -> Option<Vec<u8>> {
    let flat: Vec<Value> = match fields {
        Value::Array(flat) => flat,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        if matches!(&name, Value::BulkString(n) if n.as_slice() == b"e") {
            return match value {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            };
        }
    }
    None
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
    fn native_claims_last_while_jobs_come() {
        assert_eq!(
            next_native_claim(Some(Priority::High), 64),
            Some(Priority::High)
        );
        assert_eq!(next_native_claim(None, 3), Some(Priority::Low));
        assert_eq!(next_native_claim(None, 0), None);
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
        assert!(
            matches!(parse_fetch(idle, 0), Ok(Fetched::Idle(Wait::After(ids))) if ids[3] == "4-0")
        );
        let claim = Value::Array(vec![
            Value::Int(0),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(0)]),
        ]);
        assert!(matches!(
            parse_fetch(claim, 0),
            Ok(Fetched::Idle(Wait::Claim))
        ));
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
    fn the_floor_is_what_may_still_wait() {
        let full = Fetched::Jobs(
            vec![
                claimed(Priority::Critical, "1-0"),
                claimed(Priority::High, "2-0"),
            ],
            None,
        );
        assert_eq!(full.floor(), Some(Priority::High));
        let drained = Fetched::Jobs(vec![claimed(Priority::Low, "3-0")], Some(Wait::Claim));
        assert_eq!(drained.floor(), None);
        assert_eq!(Fetched::Idle(Wait::Claim).floor(), None);
        // Nothing known: only critical jobs may start.
        assert_eq!(
            Fetched::Jobs(Vec::new(), None).floor(),
            Some(Priority::Critical)
        );
        assert_eq!(Fetched::Paused.floor(), Some(Priority::Critical));
    }

    #[test]
    fn blocking_claims_parse_most_urgent_first() {
        let streams = ["s:c", "s:h", "s:m", "s:l"].map(String::from);
        let entry =
            |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("s:l"),
                Value::Array(vec![entry("3-0", vec![bulk("e"), bulk("low")])]),
            ]),
            Value::Array(vec![
                bulk("s:c"),
                Value::Array(vec![entry("5-0", vec![bulk("x"), bulk("not ours")])]),
            ]),
        ]);
        let jobs = parse_claim(reply, &streams, 9).expect("parses");
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].priority, jobs[0].entry_id.as_str()),
            (Priority::Critical, "5-0")
        );
        assert!(jobs[0].envelope.is_none(), "an entry without e is poison");
        assert_eq!(jobs[1].envelope.as_deref(), Some(&b"low"[..]));
        assert_eq!((jobs[1].deliveries, jobs[1].claimed_ms), (1, 9));
        assert!(
            parse_claim(Value::Nil, &streams, 0)
                .expect("a timeout")
                .is_empty()
        );
        let stranger = Value::Array(vec![Value::Array(vec![
            bulk("other"),
            Value::Array(vec![]),
        ])]);
        assert!(parse_claim(stranger, &streams, 0).is_err());
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
