//! Enqueueing: one job, or a batch of thousands in one round trip; now, after
//! a delay, or at a time; at most once per idempotency key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::Instrument;

use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::envelope::{Envelope, NewJob, ParentRef};
use crate::protocol::keys::validate_name;
use crate::protocol::partition::partition_of;
use crate::protocol::reply;
use crate::protocol::scripts::{self, COMMON_KEYS, ScriptCall, scripts};
use crate::queue::Queue;
use crate::time::{micros, millis, now_ms, now_us};

mod coalesce;
mod ledger;
mod plain;

use ledger::{Ledger, Numbered};

pub(crate) use coalesce::Fill;

/// Options for one enqueued job. Cheap to reuse across many jobs.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    priority: Priority,
    name: String,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    run_at: Option<RunAt>,
    idempotency: Option<(String, Duration)>,
    traceparent: Option<String>,
    rate_group: Option<String>,
    partition_key: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum RunAt {
    After(Duration),
    At(SystemTime),
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 512;

impl EnqueueOptions {
    /// Medium priority, no name, the queue's max attempts, no timeout, run now.
    pub fn new() -> EnqueueOptions {
        EnqueueOptions::default()
    }

    /// The job's priority. Default: [`Priority::Medium`].
    pub fn priority(mut self, priority: Priority) -> EnqueueOptions {
        self.priority = priority;
        self
    }

    /// The job's name or type, for handlers that route on it and for
    /// per-name metrics. Default: empty.
    pub fn name(mut self, name: impl Into<String>) -> EnqueueOptions {
        self.name = name.into();
        self
    }

    /// How many times the job may run in all. Default: the queue's setting.
    pub fn max_attempts(mut self, attempts: u32) -> EnqueueOptions {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// How long one run of the job may take; a run over it counts as a
    /// failed attempt. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> EnqueueOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Run no sooner than `delay` from now. Default: run now.
    pub fn delay(mut self, delay: Duration) -> EnqueueOptions {
        self.run_at = Some(RunAt::After(delay));
        self
    }

    /// Run at or after `time`. Default: run now.
    pub fn run_at(mut self, time: SystemTime) -> EnqueueOptions {
        self.run_at = Some(RunAt::At(time));
        self
    }

    /// Enqueue at most one job per `key` within `ttl`: a later enqueue with
    /// the same key adds nothing and returns the first job's id. Default:
    /// no key.
    pub fn idempotency_key(mut self, key: impl Into<String>, ttl: Duration) -> EnqueueOptions {
        self.idempotency = Some((key.into(), ttl));
        self
    }

    /// Carry this W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) to
    /// the consumer, which records it on its processing span
    /// ([`crate::Job::traceparent`]). Default: none.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> EnqueueOptions {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The rate group the job counts against when workers apply a
    /// per-group rate limit (`WorkerConfig::group_rate_limit`): a tenant,
    /// a customer, a downstream account. 1 to 128 bytes, no braces,
    /// whitespace or control characters. Jobs without a group are not
    /// limited per group. Default: none.
    pub fn rate_group(mut self, group: impl Into<String>) -> EnqueueOptions {
        self.rate_group = Some(group.into());
        self
    }

    /// The partition key of a partitioned queue
    /// ([`crate::QueueBuilder::partitions`]): a tenant, a source, any
    /// string. Jobs with the same key go to the same partition, in every
    /// process and across restarts (`partition_of`, documented in
    /// `docs/design.md`). Ignored by a queue of one partition. Default:
    /// none: the idempotency key when there is one, else round-robin.
    pub fn partition_key(mut self, key: impl Into<String>) -> EnqueueOptions {
        self.partition_key = Some(key.into());
        self
    }

    /// When the job may run, Unix microseconds; `None` for now.
    fn due_us(&self) -> Option<u64> {
        match self.run_at {
            None => None,
            Some(RunAt::After(delay)) => Some(now_us().saturating_add(micros(delay))),
            Some(RunAt::At(time)) => Some(time.duration_since(UNIX_EPOCH).map(micros).unwrap_or(0)),
        }
    }
}

/// One encoded job waiting in a [`Batch`].
#[derive(Debug)]
struct Pending {
    id: JobId,
    name: String,
    priority: Priority,
    due_ms: u64,
    idempotency: Option<(String, u64)>,
    envelope: Vec<u8>,
    /// The partition the job goes to.
    partition: u32,
}

/// Jobs encoded and checked, waiting to be sent together with
/// [`Batch::send`]. Every job is validated when pushed, so a bad one is
/// refused before anything reaches Redis.
#[derive(Debug)]
pub struct Batch {
    queue: Queue,
    jobs: Vec<Pending>,
    bytes: usize,
}

/// Jobs per script call: bounds how long one call holds Redis.
const CHUNK_JOBS: usize = 1000;
/// Bytes per script call, for the same reason.
const CHUNK_BYTES: usize = 4 << 20;

impl Batch {
    /// Encodes and adds a job, returning the id it will have (unless its
    /// idempotency key is taken: [`Batch::send`] returns the final ids).
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`], [`Error::Encode`], or
    /// [`Error::InvalidName`] for an empty or overlong idempotency key or an
    /// invalid rate group; the batch is unchanged.
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        payload: &T,
        options: &EnqueueOptions,
    ) -> Result<JobId, Error> {
        let settings = self.queue.settings();
        let idempotency = match &options.idempotency {
            None => None,
            Some((key, _)) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN => {
                return Err(Error::InvalidName {
                    what: "idempotency key",
                    name: key.chars().take(64).collect(),
                    reason: format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
                });
            }
            Some((key, ttl)) => Some((key.clone(), millis(*ttl).max(1))),
        };
        if let Some(group) = &options.rate_group {
            validate_name("rate group", group)?;
        }
        let id = JobId::generate();
        let due_us = options.due_us();
        let job = NewJob {
            id: &id,
            name: &options.name,
            max_attempts: options.max_attempts.unwrap_or(settings.max_attempts),
            timeout_ms: options.timeout.map(millis),
            ready_us: due_us.unwrap_or_else(now_us),
            trace: options.traceparent.as_deref(),
            group: options.rate_group.as_deref(),
            parent: None,
        };
        let envelope = Envelope::encode_new(job, payload, settings.payload_limits())?;
        self.bytes += envelope.len();
        let partitions = self.queue.partition_count();
        let partition = match (&options.partition_key, &options.idempotency) {
            _ if partitions == 1 => 0,
            (Some(key), _) | (None, Some((key, _))) => partition_of(key, partitions),
            (None, None) => self.queue.next_partition(),
        };
        self.jobs.push(Pending {
            partition,
            id: id.clone(),
            name: options.name.clone(),
            priority: options.priority,
            due_ms: due_us.map_or(0, |us| us / 1000),
            idempotency,
            envelope,
        });
        Ok(id)
    }

    /// How many jobs the batch holds.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether the batch holds no job.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Sends every job in one round trip and returns their ids, in push
    /// order. A job whose idempotency key was already taken is not added; its
    /// place holds the id of the job that took the key.
    ///
    /// Jobs go out in script calls of up to 1,000 jobs or 4 MiB, pipelined;
    /// each call is atomic.
    ///
    /// # Errors
    ///
    /// When nothing was added: [`Error::QueueFull`], [`Error::OutOfMemory`],
    /// or the connection error. When only some calls were applied,
    /// [`Error::PartialBatch`] lists the ids that were enqueued.
    /// On a timeout or dropped connection the outcome is unknown; sending
    /// again is safe but may duplicate ([`Error::is_retryable`]); an
    /// idempotency key prevents that duplicate.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may have enqueued any of its chunks.
    pub async fn send(self) -> Result<Vec<JobId>, Error> {
        if self.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let span = tracing::info_span!(
            "streamq.enqueue",
            queue = self.queue.name(),
            jobs = self.jobs.len(),
            job_id = tracing::field::Empty,
            priority = tracing::field::Empty,
        );
        if let [job] = self.jobs.as_slice() {
            span.record("job_id", job.id.as_str());
            span.record("priority", job.priority.as_str());
        }
        for job in &self.jobs {
            tracing::trace!(parent: &span, job_id = %job.id, priority = %job.priority, "enqueue");
        }
        self.send_inner().instrument(span).await
    }

    async fn send_inner(self) -> Result<Vec<JobId>, Error> {
        if self.queue.partition_count() == 1 {
            return self.send_partition().await;
        }
        let parts = self.queue.partitions();
        let mut groups: Vec<Batch> = parts
            .iter()
            .map(|queue| Batch {
                queue: queue.clone(),
                jobs: Vec::new(),
                bytes: 0,
            })
            .collect();
        let mut order = Vec::with_capacity(self.jobs.len());
        for job in self.jobs {
            let group = &mut groups[job.partition as usize];
            order.push((job.partition as usize, group.jobs.len()));
            group.bytes += job.envelope.len();
            group.jobs.push(job);
        }
        // Every partition at once: the connection pipelines concurrent calls
        // to one node, so this is one round trip per node.
        let sent =
            futures_util::future::join_all(groups.into_iter().filter(|g| !g.jobs.is_empty()).map(
                |g| async move { (g.queue.partition_index() as usize, g.send_partition().await) },
            ))
            .await;
        let mut results: Vec<Option<Result<Vec<JobId>, Error>>> =
            (0..parts.len()).map(|_| None).collect();
        for (index, result) in sent {
            results[index] = Some(result);
        }
        let mut enqueued = Vec::with_capacity(order.len());
        let mut first_error = None;
        let mut complete = true;
        for (partition, at) in order {
            match &results[partition] {
                Some(Ok(ids)) => enqueued.extend(ids.get(at).cloned()),
                Some(Err(
                    Error::PartialBatch { enqueued: some, .. }
                    | Error::NotReplicated { enqueued: some, .. },
                )) if at == 0 => {
                    enqueued.extend(some.iter().cloned());
                    complete = false;
                }
                _ => complete = false,
            }
        }
        // Every partition enqueued but some fell short of the durability
        // asked: one NotReplicated with every id, the fewest replicas reached.
        let mut short: Option<(u64, u64)> = None;
        for result in results.into_iter().flatten() {
            match result {
                Err(Error::NotReplicated {
                    reached, wanted, ..
                }) if first_error.is_none() => {
                    let (r, _) = short.get_or_insert((reached, wanted));
                    *r = (*r).min(reached);
                }
                Err(e) => {
                    first_error = Some(e);
                    short = None;
                }
                Ok(_) => {}
            }
        }
        if let Some((reached, wanted)) = short {
            return Err(Error::NotReplicated {
                enqueued,
                reached,
                wanted,
            });
        }
        match first_error {
            None if complete => Ok(enqueued),
            None => Err(Error::UnexpectedReply {
                script: "enqueue",
                detail: "a partition returned fewer ids than jobs".to_owned(),
            }),
            Some(e) if enqueued.is_empty() => Err(e),
            Some(e) => Err(Error::PartialBatch {
                enqueued,
                source: Box::new(e),
            }),
        }
    }

    /// Sends jobs of one partition (`self.queue` is that partition).
    async fn send_partition(self) -> Result<Vec<JobId>, Error> {
        self.queue.ensure_groups_once().await?;
        let mut conn = self.queue.conn();
        let per_call = self.jobs_per_call();
        let ledger = ledger(&self.queue);
        let epoch = ledger.map(Ledger::epoch).unwrap_or_default();
        let replies: Vec<Result<redis::Value, Error>> = if plain::applies(&self.queue, &self.jobs) {
            // One transaction per chunk, all at once: the connection
            // pipelines them.
            let sends = self
                .jobs
                .chunks(per_call)
                .map(|chunk| plain::send(&self.queue, conn.clone(), chunk, &epoch));
            futures_util::future::join_all(sends).await
        } else {
            let calls: Vec<ScriptCall> = self
                .jobs
                .chunks(per_call)
                .map(|c| self.call(c, &epoch))
                .collect();
            match calls.as_slice() {
                [call] => vec![call.invoke(&mut conn).await.map_err(Error::from)],
                _ => scripts::invoke_pipelined(&mut conn, &calls)
                    .await?
                    .into_iter()
                    .map(|result| result.map_err(Error::from))
                    .collect(),
            }
        };
        let durability = self.queue.settings().durability;
        let mut rolled_back = Vec::new();
        let mut enqueued = Vec::with_capacity(self.jobs.len());
        let mut first_error = None;
        for (chunk, reply) in self.jobs.chunks(per_call).zip(replies) {
            let checked = reply.and_then(|reply| job_ids(chunk, reply));
            match checked {
                Ok((ids, added, numbered)) => {
                    let added = chunk
                        .iter()
                        .zip(&ids)
                        .zip(&added)
                        .filter(|(_, added)| **added)
                        .map(|((job, id), _)| (job.priority, id));
                    rolled_back.extend(ledger.and_then(|l| l.record(&epoch, &numbered, added)));
                    enqueued.extend(ids);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        ledger::report(&self.queue, rolled_back).await;
        match first_error {
            None => crate::durability::wait(&self.queue, durability, enqueued).await,
            Some(e) if enqueued.is_empty() => Err(e),
            Some(e) => Err(Error::PartialBatch {
                enqueued,
                source: Box::new(e),
            }),
        }
    }

    fn jobs_per_call(&self) -> usize {
        if self.bytes > CHUNK_BYTES {
            (CHUNK_BYTES * self.jobs.len() / self.bytes).clamp(1, CHUNK_JOBS)
        } else {
            CHUNK_JOBS
        }
    }

    fn call(&self, chunk: &[Pending], epoch: &str) -> ScriptCall {
        let keys = self.queue.keys();
        let mut extra: Vec<String> =
            vec![keys.delayed().to_owned(), keys.events(), keys.sequence()];
        // The script finds these keys by their index in KEYS (1-based, after
        // the common keys); a key repeated within the chunk is passed once.
        let key_of = |key: String, extra: &mut Vec<String>| {
            let at = match extra.iter().position(|k| *k == key) {
                Some(at) => at,
                None => {
                    extra.push(key);
                    extra.len() - 1
                }
            };
            COMMON_KEYS + at + 1
        };
        let tracking = self.queue.settings().tracking;
        let mut indexes = Vec::with_capacity(chunk.len());
        for job in chunk {
            let dedup = match &job.idempotency {
                Some((key, _)) => key_of(keys.dedup(key), &mut extra),
                None => 0,
            };
            let live = match tracking {
                Some(_) => key_of(keys.live(), &mut extra),
                None => 0,
            };
            indexes.push((dedup, live));
        }
        let mut call = scripts().enqueue.call(keys, &extra);
        let settings = self.queue.settings();
        call.arg(settings.max_backlog.unwrap_or(0))
            .arg(now_ms())
            .arg(u8::from(settings.metrics))
            .arg(u8::from(tracking.is_some()))
            .arg(settings.events_cap())
            .arg(epoch);
        for (job, (dedup, live)) in chunk.iter().zip(indexes) {
            call.arg(job.priority.lua_index())
                .arg(job.due_ms)
                .arg(dedup)
                .arg(job.idempotency.as_ref().map_or(0, |(_, ttl)| *ttl))
                .arg(job.id.as_str())
                .arg(&job.name)
                .arg(live)
                .arg(job.envelope.as_slice());
        }
        call
    }
}

/// The final ids of a chunk from its `enqueue` reply: each job's own,
/// except duplicates, which the script reports as (1-based position, id of
/// the job holding the key); which jobs were added (not duplicates); and
/// how those were numbered.
fn job_ids(
    chunk: &[Pending],
    reply: redis::Value,
) -> Result<(Vec<JobId>, Vec<bool>, Numbered), Error> {
    let mut ids: Vec<JobId> = chunk.iter().map(|job| job.id.clone()).collect();
    let mut added = vec![true; chunk.len()];
    let mut body = reply::done(&scripts().enqueue, reply)?;
    let mut duplicates = body.array()?;
    while !duplicates.is_empty() {
        let position = duplicates.count()?;
        let holder = duplicates.text()?;
        let slot = position
            .checked_sub(1)
            .and_then(|i| ids.get_mut(i))
            .ok_or_else(|| Error::UnexpectedReply {
                script: "enqueue",
                detail: format!("duplicate at position {position}"),
            })?;
        *slot = JobId::from(holder);
        added[position - 1] = false;
    }
    let numbered = Numbered {
        epoch: body.text()?,
        first: u64::try_from(body.int()?).unwrap_or(0),
        kept: body.int()?,
    };
    Ok((ids, added, numbered))
}

/// The producer layer's state kept with each queue handle.
#[derive(Default)]
struct ProducerState {
    coalescer: coalesce::Coalescer,
    ledger: Ledger,
}

fn producer_state(queue: &Queue) -> Option<&ProducerState> {
    queue.producer_state(ProducerState::default)
}

fn ledger(queue: &Queue) -> Option<&Ledger> {
    producer_state(queue).map(|state| &state.ledger)
}

impl Queue {
    /// An empty batch for this queue.
    pub fn batch(&self) -> Batch {
        Batch {
            queue: self.clone(),
            jobs: Vec::new(),
            bytes: 0,
        }
    }

    /// Enqueues one job and returns its id (for a duplicate idempotency key,
    /// the first job's id). When it returns `Ok`, the job is in Redis and
    /// will be completed, retried or dead-lettered.
    ///
    /// Concurrent calls on one queue handle (and its clones) share script
    /// calls: while earlier enqueues are in flight, new jobs wait and go out
    /// together in the next call (at most 1,000 jobs, applied whole or not at
    /// all). A call with nothing else in flight is sent at once.
    ///
    /// # Errors
    ///
    /// As [`Batch::push`] (before any Redis call) and [`Batch::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may or may not have enqueued the job.
    pub async fn enqueue<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        options: &EnqueueOptions,
    ) -> Result<JobId, Error> {
        self.enqueue_filling(payload, options, Fill::ADAPTIVE).await
    }

    /// [`Queue::enqueue`], with the leader of a shared call filling it as
    /// `fill` says.
    pub(crate) async fn enqueue_filling<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        options: &EnqueueOptions,
        fill: Fill,
    ) -> Result<JobId, Error> {
        let mut batch = self.batch();
        batch.push(payload, options)?;
        let Some(job) = batch.jobs.pop() else {
            return Err(Error::UnexpectedReply {
                script: "enqueue",
                detail: "no job to send".to_owned(),
            });
        };
        coalesce::enqueue(self, job, fill).await
    }
}

/// One job of a flow ([`crate::Flow`]), encoded and checked.
#[derive(Debug)]
pub(crate) struct FlowJob {
    pub(crate) id: JobId,
    pub(crate) priority: Priority,
    pub(crate) name: String,
    pub(crate) envelope: Vec<u8>,
}

/// Encodes and checks a flow job like [`Batch::push`]. A flow job runs when
/// its flow lets it, so a delay, a run time and an idempotency key are
/// refused.
pub(crate) fn encode_flow_job<T: Serialize + ?Sized>(
    queue: &Queue,
    payload: &T,
    options: &EnqueueOptions,
    parent: Option<&ParentRef>,
) -> Result<FlowJob, Error> {
    if options.run_at.is_some() || options.idempotency.is_some() {
        return Err(Error::InvalidFlow(
            "a flow job cannot have a delay, a run time or an idempotency key".to_owned(),
        ));
    }
    if let Some(group) = &options.rate_group {
        validate_name("rate group", group)?;
    }
    let settings = queue.settings();
    let id = JobId::generate();
    let job = NewJob {
        id: &id,
        name: &options.name,
        max_attempts: options.max_attempts.unwrap_or(settings.max_attempts),
        timeout_ms: options.timeout.map(millis),
        ready_us: now_us(),
        trace: options.traceparent.as_deref(),
        group: options.rate_group.as_deref(),
        parent,
    };
    let envelope = Envelope::encode_new(job, payload, settings.payload_limits())?;
    Ok(FlowJob {
        id,
        priority: options.priority,
        name: options.name.clone(),
        envelope,
    })
}
