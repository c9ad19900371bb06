//! A worker on a thread of its own ([`WorkerConfig::own_thread`]): a
//! single-threaded runtime that runs the worker, its handlers and its
//! connections' tasks, so that no job's path crosses between threads.
//!
//! [`WorkerConfig::own_thread`]: super::WorkerConfig::own_thread

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::job::Handler;
use super::{Worker, WorkerReport};
use crate::backoff::Backoff;
use crate::error::Error;

/// How a worker's thread ended.
enum Ended<H> {
    /// The worker ran there, to this outcome.
    Ran(Result<WorkerReport, Error>),
    /// It could not connect from there: the worker and its handler come
    /// back, for the caller to tell Redis being away (try again later)
    /// from Redis taking no more connections (run on the caller's runtime).
    NotConnected(Box<Worker>, H, Error),
}

impl Worker {
    /// [`Worker::run`] on a new thread; dropping the returned future shuts
    /// the worker down there as cancelling `shutdown` does.
    pub(super) async fn run_on_own_thread<T, R, H>(
        mut self,
        mut handler: H,
        shutdown: CancellationToken,
    ) -> Result<WorkerReport, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        let stop = shutdown.child_token();
        let _stop_when_dropped = stop.clone().drop_guard();
        let mut backoff = Backoff::redis();
        loop {
            let (worker, unused, err) =
                match self.spawn_thread::<T, R, H>(handler, stop.clone())?.await {
                    Ok(Ok(Ended::Ran(outcome))) => return outcome,
                    Ok(Ok(Ended::NotConnected(worker, handler, err))) => (worker, handler, err),
                    Ok(Err(panic)) => resume_unwind(panic),
                    Err(_) => {
                        return Err(Error::WorkerThread(
                            "the thread ended without reporting".to_owned(),
                        ));
                    }
                };
            // Redis up (the queue's connection answers, asked on this
            // runtime, where its reconnects belong) yet refusing the
            // thread's connection: it takes no more. Refused outright,
            // Redis is away or just restarting.
            let refused = matches!(&err, Error::Unavailable(e) if e.is_connection_refusal());
            let full = !refused
                && redis::cmd("PING")
                    .query_async::<()>(&mut worker.queue.conn())
                    .await
                    .is_ok();
            if full {
                tracing::warn!(
                    queue = worker.queue.name(),
                    %err,
                    "the worker cannot connect from a thread of its own; it runs on the caller's runtime"
                );
                return worker.run_here(unused, shutdown).await;
            }
            let delay = backoff.next_delay();
            tracing::warn!(queue = worker.queue.name(), %err, retry_in = ?delay, "worker cannot start yet");
            tokio::select! {
                () = stop.cancelled() => return Ok(WorkerReport::default()),
                () = tokio::time::sleep(delay) => {}
            }
            (self, handler) = (*worker, unused);
        }
    }

    /// Starts a thread with a runtime of its own that reopens the queue
    /// and runs the worker there; its end arrives on the returned channel
    /// (a panic as the panic).
    fn spawn_thread<T, R, H>(
        self,
        handler: H,
        stop: CancellationToken,
    ) -> Result<tokio::sync::oneshot::Receiver<std::thread::Result<Ended<H>>>, Error>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        let thread_error = |e: std::io::Error| Error::WorkerThread(e.to_string());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(thread_error)?;
        let (done, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("streamq-worker".to_owned())
            .spawn(move || {
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        match self.queue.reopen_for_worker().await {
                            Ok(queue) => {
                                let worker = Worker { queue, ..self };
                                Ended::Ran(worker.run_here(handler, stop).await)
                            }
                            Err(err) => Ended::NotConnected(Box::new(self), handler, err),
                        }
                    })
                }));
                // Its tasks, connections included, end before the caller
                // hears the worker did.
                drop(runtime);
                let _ = done.send(ended);
            })
            .map_err(thread_error)?;
        Ok(ended)
    }
}
