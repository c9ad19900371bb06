//! A job's stop signal: the worker's shutdown, or a stop request for that
//! job alone (`Queue::cancel`).
//!
//! Made for one job each, so cheap to make and to drop: the worker's token
//! is shared behind an `Arc` (cloning or dropping a `CancellationToken`
//! takes its node's lock, and every job of every runtime thread took that
//! one lock), and a job's own request is a flag and a `Notify`, not a token
//! of its own (docs/benchmarks.md, "Round two, seventh sitting").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A stop request for one job: set once, awaited by its handler.
#[derive(Debug, Default)]
pub(crate) struct JobStop {
    requested: AtomicBool,
    notify: Notify,
}

impl JobStop {
    /// Sets the request and wakes whoever waits on it. Returns whether it
    /// was new.
    pub(crate) fn request(&self) -> bool {
        let new = !self.requested.swap(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        new
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Completes once the request is set. Cancel-safe.
    async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a request set between
            // the two still wakes this wait.
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// What a job watches to know it should stop.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopSignal {
    worker: Arc<CancellationToken>,
    job: Arc<JobStop>,
}

impl StopSignal {
    pub(crate) fn new(worker: Arc<CancellationToken>, job: Arc<JobStop>) -> StopSignal {
        StopSignal { worker, job }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.worker.is_cancelled() || self.job.is_requested()
    }

    /// Completes once the worker shuts down or the job's stop is requested.
    /// Cancel-safe.
    pub(crate) async fn stopped(&self) {
        tokio::select! {
            () = self.worker.cancelled() => {}
            () = self.job.requested() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_or_the_workers_shutdown_stops_the_job() {
        let worker = Arc::new(CancellationToken::new());
        let job = Arc::new(JobStop::default());
        let signal = StopSignal::new(worker.clone(), job.clone());
        let other = StopSignal::new(worker.clone(), Arc::new(JobStop::default()));
        assert!(!signal.is_stopped());

        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.stopped().await }
        });
        assert!(job.request());
        assert!(!job.request(), "a second request is not new");
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the request wakes the waiting job")
            .expect("no panic");
        assert!(signal.is_stopped());
        assert!(!other.is_stopped(), "only that job is asked to stop");

        worker.cancel();
        assert!(other.is_stopped());
        tokio::time::timeout(Duration::from_secs(10), other.stopped())
            .await
            .expect("shutdown stops every job");
    }
}
