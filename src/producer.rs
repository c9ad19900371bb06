//! Enqueueing: one job, or a batch of thousands in one round trip.

use std::time::Duration;

use serde::Serialize;

use crate::envelope::{Envelope, JobId};
use crate::scripts::{self, ScriptCall, scripts};
use crate::{Error, Priority, Queue};

/// Options for one enqueued job. Cheap to reuse across many jobs.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    priority: Priority,
    name: String,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
}

impl EnqueueOptions {
    /// Medium priority, no name, the queue's max attempts, no timeout.
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

    /// How many times the job may run. Default: the queue's setting.
    pub fn max_attempts(mut self, attempts: u32) -> EnqueueOptions {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// How long one run of the job may take. Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> EnqueueOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// Jobs encoded and checked, waiting to be sent together with
/// [`Batch::send`]. Every job is validated when pushed, so a bad one is
/// refused before anything reaches Redis.
#[derive(Debug)]
pub struct Batch {
    queue: Queue,
    ids: Vec<JobId>,
    jobs: Vec<(Priority, Vec<u8>)>,
    bytes: usize,
}

/// Jobs per script call: bounds how long one call holds Redis.
const CHUNK_JOBS: usize = 1000;
/// Bytes per script call, for the same reason.
const CHUNK_BYTES: usize = 4 << 20;

impl Batch {
    /// Encodes and adds a job, returning the id it will have.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`] or [`Error::Encode`]; the batch is unchanged.
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        payload: &T,
        options: &EnqueueOptions,
    ) -> Result<JobId, Error> {
        let settings = self.queue.settings();
        let id = JobId::generate();
        let bytes = Envelope::encode_new(
            &id,
            &options.name,
            payload,
            options.max_attempts.unwrap_or(settings.max_attempts),
            options
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            settings.max_payload_bytes,
        )?;
        self.bytes += bytes.len();
        self.jobs.push((options.priority, bytes));
        self.ids.push(id.clone());
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

    /// Sends every job in one round trip and returns their ids, in push order.
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
    /// again is safe but may duplicate ([`Error::is_retryable`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may have enqueued any of its chunks.
    pub async fn send(self) -> Result<Vec<JobId>, Error> {
        if self.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.queue.conn();
        let calls = self.calls();
        if calls.len() == 1 {
            let reply: redis::Value = calls[0].invoke(&mut conn).await?;
            scripts::check_status(calls[0].script(), reply, self.queue.settings())?;
            return Ok(self.ids);
        }
        let per_call = self.jobs_per_call();
        let mut enqueued = Vec::with_capacity(self.ids.len());
        let mut first_error = None;
        let mut ids = self.ids.into_iter();
        let settings = self.queue.settings();
        let results = scripts::invoke_pipelined(&mut conn, &calls).await?;
        for (chunk, result) in self.jobs.chunks(per_call).zip(results) {
            let chunk_ids = ids.by_ref().take(chunk.len());
            let checked = result
                .map_err(Error::from)
                .and_then(|r| scripts::check_status(&scripts().enqueue, r, settings));
            match checked {
                Ok(_) => enqueued.extend(chunk_ids),
                Err(e) => {
                    chunk_ids.for_each(drop);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(enqueued),
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

    fn calls(&self) -> Vec<ScriptCall> {
        let keys = self.queue.keys();
        let all_keys = [
            keys.stats(),
            keys.stream(Priority::Critical),
            keys.stream(Priority::High),
            keys.stream(Priority::Medium),
            keys.stream(Priority::Low),
        ];
        let max_backlog = self.queue.settings().max_backlog.unwrap_or(0);
        self.jobs
            .chunks(self.jobs_per_call())
            .map(|chunk| {
                let mut call = scripts().enqueue.call(&all_keys);
                call.arg(max_backlog);
                for (priority, bytes) in chunk {
                    call.arg(priority.lua_index()).arg(bytes.as_slice());
                }
                call
            })
            .collect()
    }
}

impl Queue {
    /// An empty batch for this queue.
    pub fn batch(&self) -> Batch {
        Batch {
            queue: self.clone(),
            ids: Vec::new(),
            jobs: Vec::new(),
            bytes: 0,
        }
    }

    /// Enqueues one job and returns its id. When it returns `Ok`, the job is
    /// in Redis and will be completed, retried or dead-lettered.
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
        let mut batch = self.batch();
        let id = batch.push(payload, options)?;
        batch.send().await?;
        Ok(id)
    }
}
