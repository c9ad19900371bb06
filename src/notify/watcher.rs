//! [`DeadLetterWatcher`]: following a queue's dead-letter stream from a
//! position saved in Redis, so that whatever handles each dead letter (a
//! webhook, a pager, your own code) sees it at least once across restarts.

use std::collections::VecDeque;
use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::admin::dead_letters::{DeadLetter, check_entry_id};
use crate::admin::follow::Follower;
use crate::admin::partitions;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::protocol::fields;
use crate::protocol::keys::validate_name;
use crate::queue::Queue;

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
pub struct DeadLetterWatcher {
    queue: Queue,
    name: String,
    /// One per partition, in partition order (one for a queue of one).
    cursors: Vec<Cursor>,
    /// Letters returned and not yet committed, oldest first.
    returned: VecDeque<(String, usize, String)>,
    /// The saved positions, as [`DeadLetterWatcher::position`] shows them.
    position: String,
    /// Reads the partitions' dead-letter streams in one order.
    follower: Follower,
}

/// The watcher's saved position in one partition's dead-letter stream.
#[derive(Debug)]
struct Cursor {
    key: String,
    committed: String,
}

impl std::fmt::Debug for DeadLetterWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterWatcher")
            .field("queue", &self.queue.name())
            .field("name", &self.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl DeadLetterWatcher {
    /// Opens the watcher `name` on `queue`, loading its saved position, or
    /// saving one `from` says when there is none. On a partitioned queue
    /// each partition keeps its own position, under its own hash tag.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `name` cannot be part of a key (empty,
    /// too long, braces, whitespace); [`Error::InvalidEntryId`] when the
    /// saved position is not a stream id; connection errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each position is saved with one atomic `SET NX`.
    pub async fn open(
        queue: &Queue,
        name: &str,
        from: WatchFrom,
    ) -> Result<DeadLetterWatcher, Error> {
        validate_name("notifier name", name)?;
        let parts = queue.partitions();
        let cursors: Vec<Cursor> =
            partitions::each(&parts, |part| Box::pin(open_cursor(part, name, from))).await?;
        let streams = parts.iter().map(|p| p.keys().dead().to_owned()).collect();
        let after = cursors.iter().map(|c| c.committed.clone()).collect();
        let mut watcher = DeadLetterWatcher {
            queue: queue.clone(),
            name: name.to_owned(),
            cursors,
            returned: VecDeque::new(),
            position: String::new(),
            follower: Follower::new(queue, streams, after),
        };
        watcher.show_position();
        Ok(watcher)
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
    /// `0-0` (from the start). On a partitioned queue, one such id per
    /// partition, each qualified with its partition (`<id>@<partition>`),
    /// joined by commas.
    pub fn position(&self) -> &str {
        &self.position
    }

    fn show_position(&mut self) {
        self.position = if self.cursors.len() == 1 {
            self.cursors[0].committed.clone()
        } else {
            let each: Vec<String> = self
                .cursors
                .iter()
                .enumerate()
                .map(|(p, c)| partitions::qualify(&c.committed, p))
                .collect();
            each.join(",")
        };
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
            let letters = self.read(max).await?;
            if !letters.is_empty() {
                return Ok(letters);
            }
            self.follower.wait().await?;
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
        self.read(max).await
    }

    /// Saves the position after `id` (a letter's [`DeadLetter::id`]) and
    /// after every letter returned before it: after a restart the watcher
    /// resumes there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEntryId`] when `id` is not a dead letter id of this
    /// queue; connection errors (the position stays where it was: letters
    /// after it come again, never fewer).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: one `SET` per partition, each applied or not.
    pub async fn commit(&mut self, id: &str) -> Result<(), Error> {
        let (entry, partition) = self.locate(id)?;
        let upto = self
            .returned
            .iter()
            .position(|(returned, _, _)| returned == id);
        let mut newest: Vec<Option<String>> = vec![None; self.cursors.len()];
        for (_, p, entry) in self.returned.iter().take(upto.map_or(0, |at| at + 1)) {
            newest[*p] = Some(entry.clone());
        }
        newest[partition] = Some(entry.to_owned());
        let saves = newest.iter().enumerate().filter_map(|(p, entry)| {
            let entry = entry.as_deref()?;
            let key = self.cursors[p].key.as_str();
            let mut conn = self.queue.conn();
            Some(async move {
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(entry)
                    .query_async(&mut conn)
                    .await?;
                Ok::<(), Error>(())
            })
        });
        futures_util::future::try_join_all(saves).await?;
        for (cursor, entry) in self.cursors.iter_mut().zip(newest) {
            if let Some(entry) = entry {
                cursor.committed = entry;
            }
        }
        if let Some(at) = upto {
            self.returned.drain(..=at);
        }
        self.show_position();
        Ok(())
    }

    /// The entry id and partition of a letter id of this queue.
    fn locate<'a>(&self, id: &'a str) -> Result<(&'a str, usize), Error> {
        if self.cursors.len() == 1 {
            check_entry_id(id)?;
            return Ok((id, 0));
        }
        partitions::unqualify(id, self.cursors.len())
    }

    /// Reads again from the saved position: letters returned but not
    /// committed come again.
    pub fn rewind(&mut self) {
        for (p, cursor) in self.cursors.iter().enumerate() {
            self.follower.set_after(p, &cursor.committed);
        }
        self.returned.clear();
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
        &self,
        err: Error,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<(), WatchError<E>> {
        if !err.is_retryable() {
            return Err(WatchError::Redis(err));
        }
        let delay = backoff.next_delay();
        tracing::warn!(notifier = %self.name, error = %err, ?delay, "reading dead letters failed; trying again");
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }

    /// Up to `max` letters after the read positions, oldest first over
    /// every partition, without waiting.
    async fn read(&mut self, max: usize) -> Result<Vec<DeadLetter>, Error> {
        let limit = self.queue.settings().max_payload_bytes;
        let qualified = self.cursors.len() > 1;
        let mut letters = Vec::new();
        for (p, entry, fields) in self.follower.read(max).await? {
            let Some(fields) = fields::fields(&fields) else {
                continue;
            };
            let mut letter = DeadLetter::from_entry(entry.clone(), fields, limit);
            if qualified {
                letter.id = partitions::qualify(&entry, p);
            }
            self.returned.push_back((letter.id.clone(), p, entry));
            letters.push(letter);
        }
        Ok(letters)
    }
}

/// Loads (or first saves) the watcher's position in one partition.
async fn open_cursor(part: &Queue, name: &str, from: WatchFrom) -> Result<Cursor, Error> {
    let key = part.keys().notifier(name);
    let mut conn = part.conn();
    let saved: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    let position = match saved {
        Some(saved) => saved,
        None => {
            let start = match from {
                WatchFrom::Start => "0-0".to_owned(),
                WatchFrom::Now => newest(part).await?,
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
    Ok(Cursor {
        key,
        committed: position,
    })
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
