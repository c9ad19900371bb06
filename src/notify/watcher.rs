//! [`DeadLetterWatcher`]: following a queue's dead-letter stream from a
//! position saved in Redis, so that whatever handles each dead letter (a
//! webhook, a pager, your own code) sees it at least once across restarts.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::dead_letters::{DeadLetter, check_entry_id};
use crate::admin::events::entries;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::protocol::cluster::Conn;
use crate::protocol::fields;
use crate::protocol::keys::validate_name;
use crate::queue::Queue;

/// How long one blocking read waits before asking again.
const BLOCK: Duration = Duration::from_secs(5);

/// Where a notifier with no saved position starts. A saved position always
/// wins: this only matters the first time a name is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WatchFrom {
    /// Dead letters added from now on (the position is saved at once, so
    /// letters that arrive before the first one is handled are not missed).
    #[default]
    Now,
    /// Every dead letter still in the stream, oldest first.
    Start,
}

/// Follows one queue's dead letters, oldest first, from a position saved in
/// Redis under the watcher's name (`<prefix>:{<queue>}:notify:<name>`).
///
/// Read with [`DeadLetterWatcher::next_batch`], then
/// [`DeadLetterWatcher::commit`] the last letter you delivered: after a
/// restart the watcher resumes after it. A letter read but not committed
/// comes again after a restart, so delivery is at least once; run one
/// process per name (two would each deliver every letter).
/// [`DeadLetterWatcher::run`] does both around an async hook.
///
/// It follows the dead-letter stream rather than the event stream
/// ([`Queue::events`]): every queue writes dead letters, with the full
/// error and the payload, and never trims them, while the event stream is
/// off by default and capped. A letter requeued, deleted or purged before
/// the watcher reads it is not seen: someone dealt with it already.
///
/// # Examples
///
/// ```no_run
/// # async fn example(queue: streamq::Queue) -> Result<(), Box<dyn std::error::Error>> {
/// use streamq::notify::{DeadLetterWatcher, WatchFrom};
/// use tokio_util::sync::CancellationToken;
///
/// let watcher = DeadLetterWatcher::open(&queue, "pager", WatchFrom::Now).await?;
/// watcher
///     .run(
///         |letter| async move {
///             println!("{} failed: {}", letter.job_id, letter.error);
///             Ok::<(), std::io::Error>(())
///         },
///         CancellationToken::new(),
///     )
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DeadLetterWatcher {
    queue: Queue,
    name: String,
    key: String,
    committed: String,
    read_after: String,
    conn: Option<Conn>,
}

impl DeadLetterWatcher {
    /// Opens the watcher `name` on `queue`, loading its saved position, or
    /// saving one `from` says when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `name` cannot be part of a key (empty,
    /// too long, braces, whitespace); [`Error::InvalidEntryId`] when the
    /// saved position is not a stream id; connection errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the position is saved with one atomic `SET NX`.
    pub async fn open(
        queue: &Queue,
        name: &str,
        from: WatchFrom,
    ) -> Result<DeadLetterWatcher, Error> {
        validate_name("notifier name", name)?;
        let key = queue.keys().notifier(name);
        let mut conn = queue.conn();
        let saved: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let position = match saved {
            Some(saved) => saved,
            None => {
                let start = match from {
                    WatchFrom::Start => "0-0".to_owned(),
                    WatchFrom::Now => newest(queue).await?,
                };
                // Another process opening the same name may have won.
                let (saved,): (Option<String>,) = redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&start)
                    .arg("NX")
                    .ignore()
                    .cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?;
                saved.unwrap_or(start)
            }
        };
        check_entry_id(&position)?;
        Ok(DeadLetterWatcher {
            queue: queue.clone(),
            name: name.to_owned(),
            key,
            read_after: position.clone(),
            committed: position,
            conn: None,
        })
    }

    /// The watcher's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue it watches.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The saved position: the id of the last dead letter committed, or
    /// `0-0` (from the start).
    pub fn position(&self) -> &str {
        &self.committed
    }

    /// Up to `max` dead letters after the last one returned, oldest first,
    /// waiting for at least one.
    ///
    /// # Errors
    ///
    /// Connection errors; the next call reads the same letters again.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the read position moves only when letters are returned.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<DeadLetter>, Error> {
        loop {
            let letters = self.read(max, Some(BLOCK)).await?;
            if !letters.is_empty() {
                return Ok(letters);
            }
        }
    }

    /// Up to `max` dead letters after the last one returned, without
    /// waiting: none when there are none yet.
    ///
    /// # Errors
    ///
    /// Connection errors; the next call reads the same letters again.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`DeadLetterWatcher::next_batch`].
    pub async fn ready(&mut self, max: usize) -> Result<Vec<DeadLetter>, Error> {
        self.read(max, None).await
    }

    /// Saves `id` (a letter's [`DeadLetter::id`]) as the position: after a
    /// restart the watcher resumes after it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEntryId`] when `id` is not a stream id; connection
    /// errors (the position stays where it was: letters after it come
    /// again, never fewer).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: one `SET`, applied or not.
    pub async fn commit(&mut self, id: &str) -> Result<(), Error> {
        check_entry_id(id)?;
        let () = redis::cmd("SET")
            .arg(&self.key)
            .arg(id)
            .query_async(&mut self.queue.conn())
            .await?;
        id.clone_into(&mut self.committed);
        Ok(())
    }

    /// Reads again from the saved position: letters returned but not
    /// committed come again.
    pub fn rewind(&mut self) {
        self.read_after.clone_from(&self.committed);
    }

    /// Calls `hook` with each dead letter, oldest first, committing each
    /// one the hook accepted, until `shutdown` is cancelled. Redis errors
    /// that may pass (an unavailable or restarting Redis) are retried with
    /// backoff; a hook error stops the run with that letter not committed,
    /// so it comes again on the next run. Returns how many letters the hook
    /// accepted.
    ///
    /// # Errors
    ///
    /// [`WatchError::Hook`] with the hook's error; [`WatchError::Redis`]
    /// for a Redis error that will not pass by itself (permissions, a key
    /// of the wrong type).
    ///
    /// # Cancel safety
    ///
    /// Cancel `shutdown` rather than dropping the future: a hook already
    /// running finishes and its letter is committed first. Dropping it
    /// loses nothing either (an uncommitted letter comes again).
    pub async fn run<F, Fut, E>(
        mut self,
        mut hook: F,
        shutdown: CancellationToken,
    ) -> Result<u64, WatchError<E>>
    where
        F: FnMut(DeadLetter) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut delivered = 0;
        let mut backoff = Backoff::redis();
        loop {
            let letters = tokio::select! {
                () = shutdown.cancelled() => return Ok(delivered),
                letters = self.next_batch(100) => letters,
            };
            let letters = match letters {
                Ok(letters) => letters,
                Err(e) => {
                    self.pause_after(e, &mut backoff, &shutdown).await?;
                    continue;
                }
            };
            for letter in letters {
                let id = letter.id.clone();
                hook(letter).await.map_err(WatchError::Hook)?;
                delivered += 1;
                while let Err(e) = self.commit(&id).await {
                    self.pause_after(e, &mut backoff, &shutdown).await?;
                    if shutdown.is_cancelled() {
                        return Ok(delivered);
                    }
                }
                backoff.reset();
            }
        }
    }

    /// After a Redis error: a pause when it may pass, the error when not.
    async fn pause_after<E>(
        &mut self,
        err: Error,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<(), WatchError<E>> {
        if !err.is_retryable() {
            return Err(WatchError::Redis(err));
        }
        let delay = backoff.next_delay();
        tracing::warn!(notifier = %self.name, error = %err, ?delay, "reading dead letters failed; trying again");
        self.conn = None;
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    async fn read(
        &mut self,
        max: usize,
        block: Option<Duration>,
    ) -> Result<Vec<DeadLetter>, Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(self.queue.redis().blocking_connection(BLOCK).await?),
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(max.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        let reply = cmd
            .arg("STREAMS")
            .arg(self.queue.keys().dead())
            .arg(&self.read_after)
            .query_async(conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.conn = None;
                return Err(e.into());
            }
        };
        let limit = self.queue.settings().max_payload_bytes;
        let mut letters = Vec::new();
        for (id, entry) in entries(reply) {
            id.clone_into(&mut self.read_after);
            if let Some(fields) = fields::fields(&entry) {
                letters.push(DeadLetter::from_entry(id, fields, limit));
            }
        }
        Ok(letters)
    }
}

/// The newest dead letter's id, or `0-0` when there is none.
async fn newest(queue: &Queue) -> Result<String, Error> {
    queue.newest_entry_id(queue.keys().dead()).await
}

/// Why [`DeadLetterWatcher::run`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError<E> {
    /// Redis refused in a way that will not pass by itself.
    #[error("reading dead letters: {0}")]
    Redis(Error),
    /// The hook failed; its letter was not committed.
    #[error("the hook failed: {0}")]
    Hook(E),
}
