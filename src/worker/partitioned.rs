//! A worker on a partitioned queue: one run loop per partition it reads,
//! all sharing the handler and the worker's slots (`share`).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::job::{Handler, Job, JobError};
use super::share::Share;
use super::{Worker, WorkerReport};
use crate::error::{ConfigError, Error};

/// One handler shared by the loops of every partition.
struct Shared<H>(Arc<H>);

impl<T, R, H: Handler<T, R>> Handler<T, R> for Shared<H> {
    fn handle(&self, job: Job<T>) -> impl Future<Output = Result<R, JobError>> + Send {
        self.0.handle(job)
    }
}

impl Worker {
    /// Reads only these partitions of a partitioned queue (indexes from 0),
    /// for example to give a set of tenants workers of their own. Default:
    /// every partition.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the list is empty or names a partition the queue
    /// does not have.
    pub fn only_partitions(
        mut self,
        partitions: impl IntoIterator<Item = u32>,
    ) -> Result<Worker, ConfigError> {
        let mut chosen: Vec<u32> = partitions.into_iter().collect();
        chosen.sort_unstable();
        chosen.dedup();
        let count = self.queue.partition_count();
        if chosen.is_empty() {
            return Err(ConfigError::single("no partition chosen"));
        }
        if let Some(bad) = chosen.iter().find(|&&p| p >= count) {
            return Err(ConfigError::single(format!(
                "partition {bad} does not exist: the queue has {count}"
            )));
        }
        self.only = Some(chosen);
        Ok(self)
    }

    /// [`Worker::run`] on a queue of several partitions.
    pub(super) async fn run_partitioned<T, R, H>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        let parts = self.queue.partitions();
        let chosen: Vec<u32> = match &self.only {
            Some(only) => only.clone(),
            None => (0..self.queue.partition_count()).collect(),
        };
        let share = Share::new(self.config.concurrency, chosen.len());
        let handler = Arc::new(handler);
        // A JoinSet aborts its tasks when dropped: dropping this future
        // stops every loop, as it stops a queue of one's.
        let mut runs = tokio::task::JoinSet::new();
        // One connection of the worker's own for every loop's claims and
        // acks (partitions share one server; on a cluster, the shared one).
        let conn = self.queue.worker_connection().await;
        for (lane, &p) in chosen.iter().enumerate() {
            let worker = Worker {
                queue: parts[p as usize].clone(),
                config: self.config.clone(),
                consumer: self.consumer.clone(),
                only: None,
                share: Some((share.clone(), lane)),
            };
            // A task each: the loops run in parallel on a multi-threaded
            // runtime, and one busy loop cannot hold the others up.
            runs.spawn(worker.run_one(
                Shared(handler.clone()),
                shutdown.clone(),
                Some(conn.clone()),
            ));
        }
        let mut total = WorkerReport::default();
        let mut first_error = None;
        while let Some(report) = runs.join_next().await {
            let report = match report {
                Ok(report) => report,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => continue, // cancelled: only at runtime shutdown
            };
            match report {
                Ok(r) => {
                    total.completed += r.completed;
                    total.retried += r.retried;
                    total.dead_lettered += r.dead_lettered;
                    total.ownership_lost += r.ownership_lost;
                    total.panicked += r.panicked;
                    total.reclaimed += r.reclaimed;
                    total.lost += r.lost;
                    total.released += r.released;
                    total.cancelled += r.cancelled;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}
