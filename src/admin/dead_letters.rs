//! Reading and repairing a queue's dead letters: list (paged), show, requeue
//! (one or all, back to their priority with attempts reset) and purge.
//!
//! This is an operator's API; workers never call it.

use std::collections::HashMap;

use redis::Value;
use serde::de::DeserializeOwned;

use crate::admin::partitions;
use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::envelope::Envelope;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;

/// One job in the dead letters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead letter's own id (its entry in the dead-letter stream), used
    /// to show, requeue or page past it.
    pub id: String,
    /// The job's id (empty when its envelope could not be read).
    pub job_id: JobId,
    /// The job's name, from its envelope.
    pub name: String,
    /// The priority it ran at, and will be requeued to.
    pub priority: Priority,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When the job was first enqueued, in Unix ms (0 when unreadable).
    pub enqueued_ms: u64,
    /// When it was dead-lettered, in Unix ms.
    pub failed_ms: u64,
    envelope: Vec<u8>,
    payload_limit: usize,
}

impl DeadLetter {
    /// Decodes the job's payload.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the envelope or payload does not decode as `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Envelope::decode(&self.envelope)?.payload(self.payload_limit)
    }

    /// The job's raw envelope bytes, exactly as they were in its stream.
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }

    pub(crate) fn from_entry(
        id: String,
        mut fields: HashMap<String, Value>,
        payload_limit: usize,
    ) -> DeadLetter {
        let mut text = |name: &str| -> String {
            fields
                .remove(name)
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default()
        };
        let job_id = text("job");
        let priority = text("priority").parse().unwrap_or(Priority::Low);
        let error = text("error");
        let failed_ms = text("failed_ms").parse().unwrap_or(0);
        let attempts = text("attempts").parse().unwrap_or(0);
        let envelope: Vec<u8> = fields
            .remove("e")
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let (name, enqueued_ms) = Envelope::decode(&envelope)
            .map(|e| (e.name.into_owned(), e.enqueued_us / 1000))
            .unwrap_or_default();
        DeadLetter {
            id,
            job_id: JobId::from(job_id),
            name,
            priority,
            attempts,
            error,
            enqueued_ms,
            failed_ms,
            envelope,
            payload_limit,
        }
    }

    /// The envelope to enqueue again: attempts reset when it decodes, the
    /// original bytes when it does not (it will fail the same way, visibly).
    fn requeue_envelope(&self) -> Vec<u8> {
        match Envelope::decode(&self.envelope) {
            Ok(mut envelope) => {
                envelope.attempt = 0;
                envelope.ready_us = crate::time::now_us();
                envelope
                    .encode(usize::MAX)
                    .unwrap_or_else(|_| self.envelope.clone())
            }
            Err(_) => self.envelope.clone(),
        }
    }
}

/// Checks that `id` is a stream entry id, `<ms>` or `<ms>-<seq>`, before it
/// reaches Redis (which would answer with a bare "Invalid stream ID").
pub(crate) fn check_entry_id(id: &str) -> Result<(), Error> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match id.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(id),
    } && id.split('-').all(|part| part.parse::<u64>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEntryId(id.to_owned()))
    }
}

/// One page of dead letters, oldest first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// The letters on this page.
    pub letters: Vec<DeadLetter>,
    /// Pass this as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Letters requeued per script call.
const REQUEUE_CHUNK: usize = 100;

impl Queue {
    /// Lists up to `count` dead letters, oldest first, starting after the
    /// letter id `after` (`None`: from the start).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEntryId`] when `after` is not a stream entry id;
    /// connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<DeadLetterPage, Error> {
        if let Some(parts) = self.split() {
            // Each partition's next page, interleaved by (entry id,
            // partition); ids are qualified `<entry id>@<partition>`.
            let after = match after {
                Some(after) => Some(partitions::unqualify(after, parts.len())?),
                None => None,
            };
            let starts: Vec<Option<String>> = (0..parts.len())
                .map(|q| after.map(|(id, p)| partitions::start_after(id, p, q)))
                .collect();
            let each = partitions::each(&parts, |p| {
                let start = starts[p.partition_index() as usize].clone();
                Box::pin(async move { p.dead_letters_one(start.as_deref(), count).await })
            })
            .await?;
            // A partition with more to read bounds the page: its next
            // letters come after its last one here, but may come before
            // other partitions' letters.
            let cut = each
                .iter()
                .enumerate()
                .filter(|(_, page)| page.next.is_some())
                .filter_map(|(q, page)| {
                    let last = page.letters.last()?;
                    Some(partitions::qualified_order(&partitions::qualify(
                        &last.id, q,
                    )))
                })
                .min();
            let mut letters: Vec<DeadLetter> = each
                .into_iter()
                .enumerate()
                .flat_map(|(q, page)| {
                    page.letters.into_iter().map(move |mut l| {
                        l.id = partitions::qualify(&l.id, q);
                        l
                    })
                })
                .collect();
            letters.sort_by_key(|l| partitions::qualified_order(&l.id));
            let read = letters.len();
            if let Some(cut) = cut {
                letters.retain(|l| partitions::qualified_order(&l.id) <= cut);
            }
            letters.truncate(count);
            let more = cut.is_some() || letters.len() < read;
            let next = more.then(|| letters.last().map(|l| l.id.clone())).flatten();
            return Ok(DeadLetterPage { letters, next });
        }
        if let Some(after) = after {
            check_entry_id(after)?;
        }
        self.dead_letters_one(after, count).await
    }

    /// [`Queue::dead_letters`] on one partition (or a queue of one).
    async fn dead_letters_one(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<DeadLetterPage, Error> {
        let start = after.map_or_else(
            || "-".to_owned(),
            |id| {
                // `[id` (inclusive) comes from `start_after`; others exclude.
                match id.strip_prefix('[') {
                    Some(inclusive) => inclusive.to_owned(),
                    None => format!("({id}"),
                }
            },
        );
        let mut letters = self.read_dead(&start, "+", count + 1).await?;
        let next = if letters.len() > count {
            letters.truncate(count);
            letters.last().map(|l| l.id.clone())
        } else {
            None
        };
        Ok(DeadLetterPage { letters, next })
    }

    /// The dead letter with this id, if it is there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEntryId`] when `id` is not a stream entry id;
    /// connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        if let Some(parts) = self.split() {
            let (id, p) = partitions::unqualify(id, parts.len())?;
            let letter = parts[p].dead_letter_one(id).await?;
            return Ok(letter.map(|mut l| {
                l.id = partitions::qualify(&l.id, p);
                l
            }));
        }
        check_entry_id(id)?;
        self.dead_letter_one(id).await
    }

    /// [`Queue::dead_letter`] on one partition (or a queue of one).
    async fn dead_letter_one(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        Ok(self.read_dead(id, id, 1).await?.pop())
    }

    /// Moves one dead letter back to its priority stream with its attempts
    /// reset. Returns `false` when no such letter exists (already requeued or
    /// purged).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEntryId`] when `id` is not a stream entry id;
    /// connection errors, [`Error::OutOfMemory`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: requeueing is atomic and skips letters already gone.
    pub async fn requeue_dead_letter(&self, id: &str) -> Result<bool, Error> {
        if let Some(parts) = self.split() {
            let (id, p) = partitions::unqualify(id, parts.len())?;
            return parts[p].requeue_dead_letter_one(id).await;
        }
        check_entry_id(id)?;
        self.requeue_dead_letter_one(id).await
    }

    /// [`Queue::requeue_dead_letter`] on one partition (or a queue of one).
    async fn requeue_dead_letter_one(&self, id: &str) -> Result<bool, Error> {
        let letters = self.read_dead(id, id, 1).await?;
        Ok(self.requeue(&letters).await? == 1)
    }

    /// Moves every dead letter present when called back to its priority
    /// stream with attempts reset, oldest first, and returns how many were
    /// moved. Jobs that fail again meanwhile stay in the dead letters.
    ///
    /// # Errors
    ///
    /// Connection errors, [`Error::OutOfMemory`]; letters moved before the
    /// error stay moved.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each chunk is atomic; call again to finish.
    pub async fn requeue_all_dead_letters(&self) -> Result<u64, Error> {
        if let Some(parts) = self.split() {
            let each = crate::admin::partitions::each(&parts, |p| {
                Box::pin(p.requeue_all_dead_letters_one())
            })
            .await?;
            return Ok(each.into_iter().sum());
        }
        self.requeue_all_dead_letters_one().await
    }

    /// [`Queue::requeue_all_dead_letters`] on one partition (or a queue of one).
    async fn requeue_all_dead_letters_one(&self) -> Result<u64, Error> {
        // Only the letters there now: jobs that fail again while this runs
        // are dead-lettered after `end`, and must not be chased.
        let Some(end) = self.last_entry_id(self.keys().dead()).await? else {
            return Ok(0);
        };
        let mut moved = 0;
        let mut start = "-".to_owned();
        loop {
            let letters = self.read_dead(&start, &end, REQUEUE_CHUNK).await?;
            let Some(last) = letters.last() else {
                return Ok(moved);
            };
            start = format!("({}", last.id);
            moved += self.requeue(&letters).await?;
        }
    }

    /// Deletes every dead letter and returns how many there were.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it is one atomic transaction.
    pub async fn purge_dead_letters(&self) -> Result<u64, Error> {
        if let Some(parts) = self.split() {
            let each =
                crate::admin::partitions::each(&parts, |p| Box::pin(p.purge_dead_letters_one()))
                    .await?;
            return Ok(each.into_iter().sum());
        }
        self.purge_dead_letters_one().await
    }

    /// [`Queue::purge_dead_letters`] on one partition (or a queue of one).
    async fn purge_dead_letters_one(&self) -> Result<u64, Error> {
        let dead = self.keys().dead();
        let (count, _): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(dead)
            .cmd("DEL")
            .arg(dead)
            .query_async(&mut self.conn())
            .await?;
        Ok(count)
    }

    async fn requeue(&self, letters: &[DeadLetter]) -> Result<u64, Error> {
        if letters.is_empty() {
            return Ok(0);
        }
        let keys = self.keys();
        let script = &scripts().requeue_dead;
        let mut call = script.call(keys, &[keys.dead()]);
        for letter in letters {
            call.arg(&letter.id)
                .arg(letter.priority.lua_index())
                .arg(letter.requeue_envelope());
        }
        let reply = call.invoke(&mut self.conn()).await?;
        let requeued = reply::done(script, reply)?.int()?;
        Ok(u64::try_from(requeued).unwrap_or(0))
    }

    async fn read_dead(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        let limit = self.settings().max_payload_bytes;
        let reply: Vec<(String, HashMap<String, Value>)> = redis::cmd("XRANGE")
            .arg(self.keys().dead())
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await?;
        Ok(reply
            .into_iter()
            .map(|(id, fields)| DeadLetter::from_entry(id, fields, limit))
            .collect())
    }
}
