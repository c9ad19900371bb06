//! [`Worker`]: runs a handler over a queue's jobs, most urgent first.
//!
//! - `config`: [`WorkerConfig`] and [`RetryBackoff`].
//! - `run_loop`: the loop that keeps handler slots busy: fetch, dispatch,
//!   promote, reclaim, back off while Redis is away.
//! - `fetch`: claims jobs in strict priority order and blocks on its own
//!   connection when idle.
//! - `reclaim`: takes over jobs whose worker died, dead-letters poison.
//! - `execute`: decodes a job, runs the handler, decides the outcome.
//! - `finish`: acknowledges, retries and dead-letters, fenced by owner.
//! - `lease`: what the worker holds, and the heartbeat that keeps it.
//! - `promote`: moves due retries and scheduled jobs into their streams.
//! - `limit`: [`RateLimit`], per-group admission, deferring rate-limited jobs.
//! - `tracker`: writes tracked jobs' state, off the job's path.
//! - `job`: what a handler receives and returns.
//! - `share`: one worker over many partitions: shared slots, priority
//!   across partitions, fair share between them.
//! - `partitioned`: running one loop per partition of a partitioned queue.
//! - `thread`: running a worker on a thread of its own.

mod config;
mod execute;
mod fetch;
mod finish;
mod job;
mod lease;
mod limit;
mod partitioned;
mod promote;
mod reclaim;
mod run_loop;
mod share;
mod stop;
mod thread;
mod tracker;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigError, Error};
use crate::protocol::cluster::Conn;
use crate::queue::Queue;
use fetch::{Fetcher, PriorityBuffer};
use finish::{Counters, Finisher};
use lease::Holdings;
use run_loop::{JobContext, Lane};
use tracker::Tracker;

pub use config::{DeadLettered, RetryBackoff, WorkerConfig};
pub use job::{Handler, Job, JobError};
pub use limit::RateLimit;

/// What a worker did before it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs completed and acknowledged.
    pub completed: u64,
    /// Failed attempts scheduled to run again.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
    /// Jobs this worker ran but could not finish because another worker had
    /// reclaimed them (they are that worker's now).
    pub ownership_lost: u64,
    /// Handler runs that panicked (each counted as a failed attempt).
    pub panicked: u64,
    /// Jobs taken over from workers whose lease ran out.
    pub reclaimed: u64,
    /// Pending jobs Redis reported deleted (trimmed by someone): lost.
    pub lost: u64,
    /// Jobs handed back to the queue unfinished at shutdown, for another
    /// worker to run at once.
    pub released: u64,
    /// Jobs cancelled while this worker held them ([`Queue::cancel`]):
    /// moved to the dead letters with a `cancelled` error, not retried.
    pub cancelled: u64,
}

/// Runs a handler over one queue. Start as many workers as you like, in one
/// process or many: they share the queue's consumer group.
#[derive(Debug)]
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    consumer: String,
    /// The partitions to read (indexes); `None` for all.
    only: Option<Vec<u32>>,
    /// Set on the loops of a partitioned worker: the shared slots and
    /// this loop's place among them.
    share: Option<(Arc<share::Share>, usize)>,
}

impl std::fmt::Debug for share::Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Share")
    }
}

impl Worker {
    /// Checks the configuration and prepares a worker.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] listing every invalid setting.
    pub fn new(queue: &Queue, config: WorkerConfig) -> Result<Worker, ConfigError> {
        config.validate()?;
        let consumer = config
            .consumer
            .clone()
            .unwrap_or_else(config::default_consumer_name);
        Ok(Worker {
            queue: queue.clone(),
            config,
            consumer,
            only: None,
            share: None,
        })
    }

    /// This worker's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Processes jobs until `shutdown` is cancelled, then shuts down
    /// gracefully: it stops fetching, hands the jobs it claimed but did not
    /// start back to the queue at once, asks running jobs to stop
    /// ([`Job::stopped`]) and gives them [`WorkerConfig::shutdown_grace`] to
    /// finish, hands back those still running, acknowledges everything that
    /// finished, and leaves the consumer group if it owns nothing there.
    ///
    /// Along the way it promotes due retries and scheduled jobs, reclaims
    /// jobs whose worker died, and renews the leases of what it holds. Redis
    /// errors are logged and retried with capped backoff; the worker keeps
    /// running through restarts and dropped connections.
    ///
    /// # Errors
    ///
    /// Only when it cannot start for a reason no retry fixes: a queue key of
    /// the wrong type, a missing permission. While Redis is unreachable it
    /// keeps trying (or returns an empty report if shut down meanwhile).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future abandons claimed jobs, which
    /// stay pending until another worker reclaims them after the lease.
    /// Cancel `shutdown` instead. A worker on a thread of its own
    /// ([`WorkerConfig::own_thread`]) is the exception: dropping the
    /// future shuts it down there as cancelling `shutdown` would, though
    /// nothing then waits for it to finish.
    ///
    /// # Panics
    ///
    /// A handler's panic fails its job's attempt; only a panic of the
    /// worker's own code reaches the caller, also from its own thread.
    pub async fn run<T, R, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        if self.config.own_thread {
            return self.run_on_own_thread(handler, shutdown).await;
        }
        self.run_here(handler, shutdown).await
    }

    /// [`Worker::run`] on the calling runtime.
    async fn run_here<T, R, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        if self.queue.partition_count() > 1 {
            return self.run_partitioned(handler, shutdown).await;
        }
        self.run_one(handler, shutdown, None).await
    }

    /// [`Worker::run`] over one partition (or a queue of one), claiming and
    /// acknowledging over `conn`, or over a connection of its own when
    /// `None` ([`Queue::worker_connection`]).
    async fn run_one<T, R, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
        conn: Option<Conn>,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        if !self.start(&shutdown).await? {
            return Ok(WorkerReport::default());
        }
        let conn = match conn {
            Some(conn) => conn,
            None => self.queue.worker_connection().await,
        };
        let counters = Arc::new(Counters::default());
        // Part of every job's stop signal (see `Holdings`).
        let stopping = CancellationToken::new();
        let holdings = Holdings::new(stopping.clone());
        let (finished_tx, finished_rx) = mpsc::channel(self.config.ack_batch * 4);
        let clear_live = tracker::untracked_records(&self.queue).await;
        let (tracker, tracker_task) = Tracker::spawn(&self.queue, clear_live).unzip();
        let mut finisher = Finisher::new(
            &self.queue,
            conn.clone(),
            &self.consumer,
            counters.clone(),
            holdings.clone(),
            &self.config,
            tracker.clone(),
        );
        if self.share.is_some() {
            finisher = finisher.gathering();
        }
        let finisher = tokio::spawn(finisher.run(finished_rx));
        // Stops the heartbeat even if this future is dropped mid-run, so the
        // jobs it abandons can be reclaimed.
        let heartbeat_stop = CancellationToken::new();
        let heartbeat_guard = heartbeat_stop.clone().drop_guard();
        let heartbeat = self.config.heartbeat.then(|| {
            tokio::spawn(lease::heartbeat(
                self.queue.clone(),
                self.consumer.clone(),
                holdings.clone(),
                self.config.lease,
                heartbeat_stop.clone(),
            ))
        });
        let context = Arc::new(JobContext {
            handler,
            queue: self.queue.name().to_owned(),
            // Handlers report to it only when something records what they
            // say: a tracker that only clears live records needs no starts.
            tracker: tracker.filter(|_| {
                let settings = self.queue.settings();
                settings.tracking.is_some() || settings.events.is_some()
            }),
            finished: finished_tx,
            counters: counters.clone(),
            backoff: self.config.backoff,
            max_payload_bytes: self.queue.settings().max_payload_bytes,
            stopping,
            holdings: holdings.clone(),
            results: self.queue.settings().results,
        });

        let mut lane = Lane {
            fetcher: Fetcher::new(&self.queue, conn, &self.consumer, self.config.block),
            buffer: PriorityBuffer::default(),
            held: Vec::new(),
            running: JoinSet::new(),
            holdings,
            share: self
                .share
                .as_ref()
                .map(|(share, lane)| run_loop::LaneShare {
                    share: share.clone(),
                    lane: *lane,
                    changes: share.subscribe(),
                    floor: Some(crate::priority::Priority::Critical),
                }),
        };
        self.fetch_loop::<T, R, H>(&mut lane, &context, &shutdown)
            .await;

        // Shutting down. Jobs not started go back to the queue now; running
        // ones are asked to stop and get the grace period to finish.
        let waiting: Vec<_> = lane
            .buffer
            .drain()
            .into_iter()
            .chain(lane.held.drain(..))
            .map(|job| (job.priority, job.entry_id))
            .collect();
        self.hand_back(&counters, &lane.holdings, &waiting).await;
        context.stopping.cancel();
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = lane.running.join_next() => if joined.is_none() { break },
                () = &mut grace => {
                    tracing::warn!(
                        queue = self.queue.name(),
                        jobs = lane.running.len(),
                        grace = ?self.config.shutdown_grace,
                        "jobs still running after the shutdown grace period; handing them back"
                    );
                    lane.running.abort_all();
                    while lane.running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        drop(context);
        if let Err(err) = finisher.await {
            tracing::error!(%err, "finishing task failed");
        }
        if let Some(task) = tracker_task {
            // Every sender is gone with the finisher and the jobs: it drains.
            let _ = task.await;
        }
        // What is still held was never finished: dropped at the end of the
        // grace period, or a move Redis kept refusing.
        self.hand_back(&counters, &lane.holdings, &lane.holdings.snapshot())
            .await;
        drop(heartbeat_guard);
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        self.retire().await;
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Ok(WorkerReport {
            completed: count(&counters.completed),
            retried: count(&counters.retried),
            dead_lettered: count(&counters.dead_lettered),
            ownership_lost: count(&counters.ownership_lost),
            panicked: count(&counters.panicked),
            reclaimed: count(&counters.reclaimed),
            lost: count(&counters.lost),
            released: count(&counters.released),
            cancelled: count(&counters.cancelled),
        })
    }

    /// Hands jobs back to the queue at once, counting them.
    async fn hand_back(
        &self,
        counters: &Counters,
        holdings: &Holdings,
        entries: &[(crate::priority::Priority, String)],
    ) {
        if entries.is_empty() {
            return;
        }
        match lease::hand_back(&self.queue, &self.consumer, holdings, entries).await {
            Ok(n) => Counters::add(&counters.released, n as u64),
            Err(err) => tracing::warn!(
                queue = self.queue.name(),
                %err,
                jobs = entries.len(),
                "could not hand jobs back; they will be reclaimed after their lease"
            ),
        }
    }
}
