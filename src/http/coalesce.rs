//! Coalescing: concurrent single-job requests share one batch enqueue.
//!
//! Handlers hand their job to one collector task and wait for its answer.
//! The collector takes a send slot, then the first job, then whatever else
//! has arrived (up to [`HttpConfig::coalesce_jobs`] jobs or about 3 MiB,
//! waiting at most [`HttpConfig::coalesce_wait`] for more), and sends them
//! as one [`Batch`](crate::producer::Batch) in a task of its own. With every
//! slot busy, new jobs pile up and the next batch is bigger: under load,
//! one round trip carries hundreds of requests; when idle, a job goes out
//! at once. A batch of at most 1,000 jobs is one script call, so it is
//! applied whole or not at all, and each handler answers only after Redis
//! acknowledged the batch holding its job.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::Error;
use crate::http::config::HttpConfig;
use crate::http::error::ApiError;
use crate::http::payload::Payload;
use crate::job_id::JobId;
use crate::producer::{Batch, EnqueueOptions};
use crate::queue::Queue;

/// Batches sent at once; more jobs wait and join the next batch.
const SEND_SLOTS: usize = 2;

/// A batch stops growing past this many body bytes, below the 4 MiB a
/// script call carries.
const MAX_BATCH_BYTES: usize = 3 << 20;

struct Pending {
    payload: Payload,
    options: EnqueueOptions,
    bytes: usize,
    reply: Reply,
}

/// The handlers' side of the collector.
#[derive(Clone)]
pub(crate) struct Coalescer {
    jobs: mpsc::Sender<Pending>,
}

impl Coalescer {
    /// Spawns the collector; it ends when every `Coalescer` clone is gone.
    pub(crate) fn start(queue: Queue, config: &HttpConfig) -> Coalescer {
        let max_jobs = config.coalesce_jobs;
        let (tx, rx) = mpsc::channel(max_jobs * SEND_SLOTS * 2);
        tokio::spawn(collect(queue, rx, max_jobs, config.coalesce_wait));
        Coalescer { jobs: tx }
    }

    /// Enqueues one job with others arriving at the same time, and returns
    /// its id once Redis acknowledged it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call's job is still enqueued (the client
    /// who went away never learns its id).
    pub(crate) async fn enqueue(
        &self,
        payload: Payload,
        options: EnqueueOptions,
        bytes: usize,
    ) -> Result<JobId, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Pending {
            payload,
            options,
            bytes,
            reply,
        };
        let stopped = || {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn collect(queue: Queue, mut jobs: mpsc::Receiver<Pending>, max_jobs: usize, wait: Duration) {
    let slots = Arc::new(Semaphore::new(SEND_SLOTS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut gathered = Gathered {
            batch: queue.batch(),
            waiting: Vec::new(),
            bytes: 0,
        };
        gathered.add(first);
        let deadline = tokio::time::Instant::now() + wait;
        while gathered.waiting.len() < max_jobs && gathered.bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => gathered.add(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if wait.is_zero() => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, jobs.recv()).await {
                        Ok(Some(job)) => gathered.add(job),
                        _ => break,
                    }
                }
            }
        }
        let Gathered { batch, waiting, .. } = gathered;
        if waiting.is_empty() {
            continue;
        }
        tokio::spawn(async move {
            answer(batch.send().await, waiting);
            drop(slot);
        });
    }
}

type Reply = oneshot::Sender<Result<JobId, ApiError>>;

/// One batch being gathered, and who waits for it.
struct Gathered {
    batch: Batch,
    waiting: Vec<(JobId, Reply)>,
    bytes: usize,
}

impl Gathered {
    /// Encodes the job into the batch; a job that cannot be encoded is
    /// answered at once and sent nowhere.
    fn add(&mut self, job: Pending) {
        self.bytes += job.bytes;
        match self.batch.push(&job.payload, &job.options) {
            Ok(id) => self.waiting.push((id, job.reply)),
            Err(e) => {
                let _ = job.reply.send(Err(e.into()));
            }
        }
    }
}

/// Tells each waiting handler what became of its job.
fn answer(sent: Result<Vec<JobId>, Error>, waiting: Vec<(JobId, Reply)>) {
    match sent {
        Ok(ids) => {
            for ((_, reply), id) in waiting.into_iter().zip(ids) {
                let _ = reply.send(Ok(id));
            }
        }
        // Only when a batch was split in several script calls (large
        // payloads): those whose own id came back were enqueued.
        Err(Error::PartialBatch { enqueued, source }) => {
            let done: HashSet<JobId> = enqueued.into_iter().collect();
            let error = ApiError::from(*source);
            for (id, reply) in waiting {
                let outcome = if done.contains(&id) {
                    Ok(id)
                } else {
                    Err(error.clone())
                };
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let error = ApiError::from(e);
            for (_, reply) in waiting {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
