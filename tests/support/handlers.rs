//! Workers and handlers for tests: a quick worker configuration, a worker
//! on a task, a record of what handlers saw, and a gate that holds handlers
//! until the test lets them go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamq::{Job, JobError, JobId, Queue, RetryBackoff, Worker, WorkerConfig, WorkerReport};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Quick retries and upkeep, so tests spend their time on outcomes, not on
/// default intervals. The lease stays the default (30 s) unless a test sets
/// one: a short lease is a timing assumption and must be chosen on purpose.
pub fn fast() -> WorkerConfig {
    WorkerConfig::new()
        .backoff(RetryBackoff::Fixed(Duration::from_millis(30)))
        .promote_interval(Duration::from_millis(20))
        .reclaim_interval(Duration::from_millis(50))
        .block(Duration::from_millis(200))
}

/// The name of the thread a worker's handlers run on: the worker's own
/// when `own_thread` ([`WorkerConfig::own_thread`]), else the caller's (a
/// test's runtime has one thread).
pub fn handler_thread(own_thread: bool) -> Option<String> {
    if own_thread {
        Some("streamq-worker".to_owned())
    } else {
        std::thread::current().name().map(str::to_owned)
    }
}

/// Runs a worker on its own task; cancel the token, then await the handle
/// for its report (by then every outcome is written to Redis).
pub fn spawn_worker<T, F, Fut>(
    queue: &Queue,
    config: WorkerConfig,
    handler: F,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>)
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send,
{
    let token = CancellationToken::new();
    let worker = Worker::new(queue, config).unwrap();
    let stop = token.clone();
    let handle = tokio::spawn(async move { worker.run(handler, stop).await.unwrap() });
    (token, handle)
}

/// Records every job id a handler saw, with how many times. A handler's
/// record comes before the job's acknowledgement: wait on Redis (or stop the
/// worker) before asserting what Redis holds.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<HashMap<JobId, u32>>>);

impl Seen {
    pub fn record(&self, id: &JobId) {
        *self.0.lock().unwrap().entry(id.clone()).or_default() += 1;
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn duplicates(&self) -> Vec<(JobId, u32)> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    }
    pub fn count(&self, id: &JobId) -> u32 {
        self.0.lock().unwrap().get(id).copied().unwrap_or(0)
    }
    pub fn ids(&self) -> Vec<JobId> {
        self.0.lock().unwrap().keys().cloned().collect()
    }

    /// A handler that records each job and completes it.
    pub fn handler<T>(
        &self,
    ) -> impl Fn(Job<T>) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
        let seen = self.clone();
        move |job: Job<T>| {
            seen.record(job.id());
            std::future::ready(Ok(()))
        }
    }
}

/// Holds handlers until the test lets them through. Permits are counted (a
/// semaphore), so a permit handed out before a handler arrives is still
/// there when it does: no wake-up is lost, unlike `Notify::notify_waiters`.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    arrived: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(0)),
            arrived: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Gate {
    /// Counts the caller as arrived, then waits for a permit (or for
    /// [`Gate::open`]).
    pub async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }

    /// How many callers have reached the gate so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Lets `n` callers through, whether they wait already or come later.
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// Lets every caller through, now and from now on.
    pub fn open(&self) {
        self.permits.close();
    }
}
