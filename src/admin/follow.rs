//! Following one stream per partition as if it were one: [`Follower`]
//! reads every partition's stream after its own position and returns the
//! entries oldest first, and waits for new ones with one blocking `XREAD`
//! per partition (on a cluster the streams live on different nodes, so one
//! read cannot cover them). The event reader and the dead-letter watcher
//! are built on it.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Value;
use std::time::Duration;
use tokio::task::JoinHandle;

use crate::admin::events::entries;
use crate::admin::partitions;
use crate::error::Error;
use crate::protocol::cluster::Conn;
use crate::queue::Queue;

/// How long one blocking read waits before asking again.
const BLOCK: Duration = Duration::from_secs(5);

/// One entry read: its partition, its id in that partition's stream, and
/// its fields (unparsed).
pub(crate) type Entry = (usize, String, Value);

/// Reads a set of streams, one per partition, in one order.
pub(crate) struct Follower {
    queue: Queue,
    streams: Vec<String>,
    after: Vec<String>,
    /// Each partition's blocking connection, while no wait holds it.
    conns: Vec<Option<Conn>>,
    waiting: Vec<bool>,
    /// At most one blocking read per partition, each a task owning its
    /// connection, so that a wait can outlive the call that started it.
    waits: FuturesUnordered<JoinHandle<(usize, Result<Conn, Error>)>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        for wait in self.waits.iter() {
            wait.abort();
        }
    }
}

impl Follower {
    /// Follows `streams` (one per partition of `queue`, in partition order)
    /// after the ids in `after`.
    pub(crate) fn new(queue: &Queue, streams: Vec<String>, after: Vec<String>) -> Follower {
        let n = streams.len();
        Follower {
            queue: queue.clone(),
            streams,
            after,
            conns: (0..n).map(|_| None).collect(),
            waiting: vec![false; n],
            waits: FuturesUnordered::new(),
        }
    }

    /// The id each partition's stream is read after.
    pub(crate) fn after(&self) -> &[String] {
        &self.after
    }

    /// Moves partition `p`'s position to `id` (backwards too).
    pub(crate) fn set_after(&mut self, p: usize, id: &str) {
        id.clone_into(&mut self.after[p]);
    }

    /// Up to `max` entries after the positions, oldest first over every
    /// partition (by id, then partition), without waiting. Only entries
    /// returned move a position; the rest are read again next time.
    pub(crate) async fn read(&mut self, max: usize) -> Result<Vec<Entry>, Error> {
        let max = max.max(1);
        let conn = self.queue.conn();
        let reads = self.streams.iter().zip(&self.after).map(|(stream, after)| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(max)
                .arg("STREAMS")
                .arg(stream)
                .arg(after);
            async move { cmd.query_async::<Value>(&mut conn).await }
        });
        let replies = futures_util::future::try_join_all(reads).await?;
        let mut found: Vec<Entry> = Vec::new();
        for (p, reply) in replies.into_iter().enumerate() {
            found.extend(
                entries(reply)
                    .into_iter()
                    .map(|(id, fields)| (p, id, fields)),
            );
        }
        if self.streams.len() > 1 {
            found.sort_by_key(|(p, id, _)| {
                partitions::qualified_order(&partitions::qualify(id, *p))
            });
            found.truncate(max);
        }
        for (p, id, _) in &found {
            id.clone_into(&mut self.after[*p]);
        }
        Ok(found)
    }

    /// Waits until some partition may have an entry after its position, or
    /// a block time passed. A wait that has not ended stays in flight for
    /// the next call; its position may be older than the current one, so
    /// it may wake early, never late.
    ///
    /// # Errors
    ///
    /// Connection errors; that partition's connection is made anew next
    /// time.
    pub(crate) async fn wait(&mut self) -> Result<(), Error> {
        for p in 0..self.streams.len() {
            if self.waiting[p] {
                continue;
            }
            let mut conn = match self.conns[p].take() {
                Some(conn) => conn,
                None => self.queue.redis().blocking_connection(BLOCK).await?,
            };
            self.waiting[p] = true;
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(u64::MAX))
                .arg("STREAMS")
                .arg(&self.streams[p])
                .arg(&self.after[p]);
            self.waits.push(tokio::spawn(async move {
                let read = cmd.query_async::<Value>(&mut conn).await;
                (p, read.map(|_| conn).map_err(Error::from))
            }));
        }
        // A wait fails to join only when aborted, and only on drop.
        if let Some(Ok((p, conn))) = self.waits.next().await {
            self.waiting[p] = false;
            self.conns[p] = Some(conn?);
        }
        Ok(())
    }
}
