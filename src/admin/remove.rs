//! Removing many jobs at once: cleaning finished jobs and dead letters older
//! than an age ([`Queue::clean`]), draining every waiting and delayed job
//! ([`Queue::drain`]), and deleting a whole queue ([`Queue::obliterate`]).
//! None of them touches a job a worker holds, except obliterate when forced.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;

use crate::admin::partitions;
use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::envelope::Envelope;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;
use crate::time::{millis, now_ms};

/// What [`Queue::clean`] removes: each kind only when given an age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clean {
    dead_letters: Option<Duration>,
    completed: Option<Duration>,
}

impl Clean {
    /// Removes nothing until told what.
    pub fn new() -> Clean {
        Clean::default()
    }

    /// Removes dead letters older than `age` (by when they were
    /// dead-lettered). Default: none.
    pub fn dead_letters_older_than(mut self, age: Duration) -> Clean {
        self.dead_letters = Some(age);
        self
    }

    /// Forgets retained completed jobs ([`JobTracking::keep_completed`](crate::JobTracking::keep_completed))
    /// that finished more than `age` ago: their metadata, log and kept
    /// result. Default: none.
    pub fn completed_older_than(mut self, age: Duration) -> Clean {
        self.completed = Some(age);
        self
    }
}

/// What [`Queue::clean`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleaned {
    /// Dead letters removed.
    pub dead_letters: u64,
    /// Completed jobs forgotten (metadata and log).
    pub completed: u64,
    /// Kept results deleted with those completed jobs.
    pub results: u64,
}

/// What [`Queue::drain`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Waiting jobs removed (never delivered to a worker).
    pub waiting: u64,
    /// Delayed jobs removed (scheduled, or retries waiting for their time).
    pub delayed: u64,
}

/// What [`Queue::obliterate`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Obliterated {
    /// Keys deleted: every key of the queue.
    pub keys: u64,
}

/// A consumer that was seen this recently counts as a live worker for
/// [`Queue::obliterate`]. A running worker talks to Redis at least once per
/// block time (5 s by default) while the queue is not paused.
pub const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// Jobs removed per script call, and keys deleted per `UNLINK`.
const CHUNK: usize = 1000;

impl Queue {
    /// Removes old dead letters and forgets old completed jobs, as `clean`
    /// says. Dead letters go with one `XTRIM MINID` (a dead letter's id is
    /// the time it was dead-lettered); completed jobs are read from the
    /// retained-jobs index and removed in atomic chunks with their metadata,
    /// log and kept result. Results of untracked jobs expire by their own
    /// TTL ([`KeepResults::ttl`](crate::KeepResults::ttl)).
    ///
    /// # Errors
    ///
    /// Connection and permission errors; what was removed before an error
    /// stays removed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each step is atomic; call again to finish.
    pub async fn clean(&self, clean: &Clean) -> Result<Cleaned, Error> {
        if let Some(parts) = self.split() {
            let each = partitions::each(&parts, |p| Box::pin(p.clean_one(clean))).await?;
            return Ok(each.into_iter().fold(Cleaned::default(), |sum, c| Cleaned {
                dead_letters: sum.dead_letters + c.dead_letters,
                completed: sum.completed + c.completed,
                results: sum.results + c.results,
            }));
        }
        self.clean_one(clean).await
    }

    /// [`Queue::clean`] on one partition (or a queue of one).
    async fn clean_one(&self, clean: &Clean) -> Result<Cleaned, Error> {
        let mut cleaned = Cleaned::default();
        let mut conn = self.conn();
        let keys = self.keys();
        if let Some(age) = clean.dead_letters {
            let cutoff = now_ms().saturating_sub(millis(age));
            cleaned.dead_letters = redis::cmd("XTRIM")
                .arg(keys.dead())
                .arg("MINID")
                .arg(format!("{cutoff}-0"))
                .query_async(&mut conn)
                .await?;
        }
        if let Some(age) = clean.completed {
            let cutoff = now_ms().saturating_sub(millis(age));
            let index = keys.completed();
            loop {
                let ids: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg("-inf")
                    .arg(format!("({cutoff}"))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(CHUNK)
                    .query_async(&mut conn)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let script = &scripts().clean_completed;
                let mut extra = vec![index.clone()];
                for id in &ids {
                    extra.extend([keys.job(id), keys.job_log(id), keys.result(id)]);
                }
                let mut call = script.call(keys, &extra);
                call.arg(cutoff).arg(&ids);
                let mut body = reply::done(script, call.invoke(&mut conn).await?)?;
                let (removed, results) = (body.count()?, body.count()?);
                cleaned.completed += removed as u64;
                cleaned.results += results as u64;
                if ids.len() < CHUNK || removed == 0 {
                    break;
                }
            }
        }
        Ok(cleaned)
    }

    /// Removes every waiting job (in a stream, never delivered to a worker)
    /// and every delayed job; never a job a worker holds. Each chunk of up
    /// to 1,000 jobs is removed atomically (the `drain` script), so a
    /// concurrent fetch gets a job or the drain removes it, never both.
    /// Jobs enqueued while it runs may stay: each stream is drained up to
    /// its last entry when the drain began, and the delayed set by as many
    /// jobs as it held then. Tracking records of removed jobs are cleared
    /// (drained jobs are then unknown to [`Queue::job`]). Flow children go
    /// first, one call each, settling their parents
    /// (as children that failed with the error `drained`).
    ///
    /// # Errors
    ///
    /// Connection and permission errors; [`Error::WrongKeyType`]. What was
    /// removed before an error stays removed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each chunk is atomic; call again to finish.
    pub async fn drain(&self) -> Result<Drained, Error> {
        if let Some(parts) = self.split() {
            let each = partitions::each(&parts, |p| Box::pin(p.drain_one())).await?;
            return Ok(each.into_iter().fold(Drained::default(), |sum, d| Drained {
                waiting: sum.waiting + d.waiting,
                delayed: sum.delayed + d.delayed,
            }));
        }
        self.drain_one().await
    }

    /// [`Queue::drain`] on one partition (or a queue of one).
    async fn drain_one(&self) -> Result<Drained, Error> {
        let keys = self.keys();
        let mut conn = self.conn();
        let (upto, delayed_then) = self.drain_bounds().await?;
        // Flow children first, one by one, each settling its parent.
        let mut drained = self.drain_flow_children(&upto, delayed_then).await?;
        let mut delayed_left = delayed_then.saturating_sub(drained.delayed);
        let mut streams_done = false;
        let tracked = self.settings().tracking.is_some();
        loop {
            let delayed_count = delayed_left.min(CHUNK as u64);
            let count = if streams_done { 0 } else { CHUNK };
            if count == 0 && delayed_count == 0 {
                break;
            }
            let script = &scripts().drain;
            let mut call = script.call(keys, &[keys.delayed()]);
            call.arg(GROUP)
                .arg(count)
                .arg(&upto)
                .arg(delayed_count)
                .arg(u8::from(tracked));
            let reply = match call.invoke(&mut conn).await {
                Ok(reply) => reply,
                Err(err) => return Err(self.name_wrong_key(Error::from(err)).await),
            };
            let mut body = reply::done(script, reply)?;
            let mut waiting = body.array()?;
            let mut removed = 0;
            while !waiting.is_empty() {
                removed += waiting.count()?;
            }
            let delayed = body.count()? as u64;
            if tracked {
                self.forget_live(body.array()?).await?;
            }
            drained.waiting += removed as u64;
            drained.delayed += delayed;
            streams_done = streams_done || removed < count;
            delayed_left = if delayed < delayed_count {
                0
            } else {
                delayed_left - delayed
            };
        }
        Ok(drained)
    }

    /// Clears the live records of drained jobs (their envelopes, as the
    /// `drain` script returned them).
    async fn forget_live(&self, mut envelopes: reply::Body) -> Result<(), Error> {
        let mut ids = Vec::new();
        while !envelopes.is_empty() {
            let bytes = envelopes.optional_bytes()?.unwrap_or_default();
            if let Ok(envelope) = Envelope::decode(&bytes) {
                ids.push(envelope.id.into_owned());
            }
        }
        if !ids.is_empty() {
            let _: u64 = redis::cmd("HDEL")
                .arg(self.keys().live())
                .arg(&ids)
                .query_async(&mut self.conn())
                .await?;
        }
        Ok(())
    }

    /// Deletes every key of the queue: jobs in every state, dead letters,
    /// counters, metadata, results, the consumer group. Refused with
    /// [`Error::QueueInUse`] while any consumer holds jobs or was seen
    /// within [`ACTIVE_WITHIN`], unless `force`. Workers that shut down
    /// cleanly have left the group; stop them all first.
    ///
    /// Waiting and delayed flow children are removed first, settling their
    /// parents (as [`Queue::drain`] does). Keys are found with `SCAN` and
    /// deleted with `UNLINK` in chunks, so this is not atomic: keys written meanwhile (a producer enqueueing, a
    /// forced-through worker recreating its group) may remain.
    ///
    /// # Errors
    ///
    /// [`Error::QueueInUse`] (nothing deleted); connection and permission
    /// errors (what was deleted before stays deleted).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in that each chunk is one command; call again to finish.
    pub async fn obliterate(&self, force: bool) -> Result<Obliterated, Error> {
        let parts = self.partitions();
        if !force {
            let busy = partitions::each(&parts, |p| Box::pin(p.busy_consumers())).await?;
            let busy: BTreeSet<String> = busy.into_iter().flatten().collect();
            if !busy.is_empty() {
                return Err(Error::QueueInUse {
                    consumers: busy.into_iter().collect(),
                });
            }
        }
        // Partition 0 last: it holds the layout record, which the others
        // need to be found again should this stop half-way.
        let mut deleted = 0;
        for part in parts.iter().rev() {
            deleted += part.obliterate_one().await?;
        }
        Ok(Obliterated { keys: deleted })
    }

    /// Deletes one partition's keys (or a queue of one's), returning how
    /// many. `SCAN` names no key, so on a cluster it is sent to the node
    /// holding the partition's slot.
    async fn obliterate_one(&self) -> Result<u64, Error> {
        // Waiting and delayed flow children go first, settling their
        // parents on other queues.
        let (upto, delayed) = self.drain_bounds().await?;
        self.drain_flow_children(&upto, delayed).await?;
        let keys = self.keys();
        let pattern = keys.literal_pattern();
        let mut conn = self.conn();
        let mut cursor = "0".to_owned();
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CHUNK);
            let (next, found): (String, Vec<String>) = conn.query_at(&keys.layout(), scan).await?;
            let ours: Vec<&String> = found.iter().filter(|k| keys.owns(k)).collect();
            if !ours.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&ours)
                    .query_async(&mut conn)
                    .await?;
                deleted += n;
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(deleted)
    }

    /// What a drain removes: each stream's newest entry id now (`0-0` for
    /// an empty one), and how many jobs the delayed set holds now.
    async fn drain_bounds(&self) -> Result<(Vec<String>, u64), Error> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        for priority in Priority::ALL {
            pipe.cmd("XREVRANGE")
                .arg(keys.stream(priority))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        pipe.cmd("ZCARD").arg(keys.delayed());
        let mut replies: Vec<Value> = match pipe.query_async(&mut self.conn()).await {
            Ok(replies) => replies,
            Err(err) => return Err(self.name_wrong_key(Error::from(err)).await),
        };
        let delayed = replies
            .pop()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(0);
        let upto = replies
            .into_iter()
            .map(|page| match page {
                Value::Array(mut entries) if !entries.is_empty() => match entries.swap_remove(0) {
                    Value::Array(mut parts) if !parts.is_empty() => {
                        redis::from_redis_value(parts.swap_remove(0)).unwrap_or_default()
                    }
                    _ => String::new(),
                },
                _ => String::new(),
            })
            .map(|id| if id.is_empty() { "0-0".to_owned() } else { id })
            .collect();
        Ok((upto, delayed))
    }

    /// Consumers that hold jobs or were seen within [`ACTIVE_WITHIN`].
    async fn busy_consumers(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self
            .consumer_summary()
            .await?
            .into_iter()
            .filter(|(_, (idle, pending))| *pending > 0 || *idle < ACTIVE_WITHIN)
            .map(|(name, _)| name)
            .collect())
    }
}
