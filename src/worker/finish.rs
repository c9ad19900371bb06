//! Finishing jobs: one task receives every outcome, acknowledges completed
//! jobs in batches (one `ack` script call per batch) and moves failed ones to
//! the dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::envelope::now_ms;
use crate::keys::GROUP;
use crate::scripts::{self, scripts};
use crate::{Error, Priority, Queue};

/// How one run of a job ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Completed,
    /// Failed for good: dead-letter it with this error.
    Dead {
        job_id: String,
        attempts: u32,
        error: String,
    },
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) priority: Priority,
    pub(crate) entry_id: String,
    pub(crate) outcome: Outcome,
}

/// What a worker did, counted as it happened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) ownership_lost: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// How long finishing keeps retrying a Redis error before it gives up and
/// leaves the job pending (to be reclaimed and run again).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

pub(crate) struct Finisher {
    queue: Queue,
    consumer: String,
    conn: ConnectionManager,
    counters: Arc<Counters>,
    max_batch: usize,
}

impl Finisher {
    pub(crate) fn new(
        queue: &Queue,
        consumer: &str,
        counters: Arc<Counters>,
        max_batch: usize,
    ) -> Finisher {
        Finisher {
            queue: queue.clone(),
            consumer: consumer.to_owned(),
            conn: queue.conn(),
            counters,
            max_batch,
        }
    }

    /// Runs until every sender is dropped and everything received is finished.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut batch, self.max_batch).await > 0 {
            let mut acks = Vec::with_capacity(batch.len());
            for finished in batch.drain(..) {
                match finished.outcome {
                    Outcome::Completed => acks.push((finished.priority, finished.entry_id)),
                    Outcome::Dead {
                        job_id,
                        attempts,
                        error,
                    } => {
                        self.dead_letter(
                            finished.priority,
                            &finished.entry_id,
                            &job_id,
                            attempts,
                            &error,
                        )
                        .await;
                    }
                }
            }
            if !acks.is_empty() {
                self.ack(&acks).await;
            }
        }
    }

    async fn ack(&mut self, acks: &[(Priority, String)]) {
        let keys = self.queue.keys();
        let mut call = scripts().ack.call(&[
            keys.stats(),
            keys.stream(Priority::Critical),
            keys.stream(Priority::High),
            keys.stream(Priority::Medium),
            keys.stream(Priority::Low),
        ]);
        call.arg(GROUP).arg(&self.consumer);
        for (priority, id) in acks {
            call.arg(priority.lua_index()).arg(id);
        }
        let reply = retrying("ack", || {
            let call = &call;
            let mut conn = self.conn.clone();
            async move {
                call.invoke::<Vec<Value>, _>(&mut conn)
                    .await
                    .map_err(Error::from)
            }
        })
        .await;
        let Some(reply) = reply else { return };
        let acked: u64 = reply
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or(0);
        Counters::add(&self.counters.completed, acked);
        let fenced = reply.len().saturating_sub(1);
        if fenced > 0 {
            Counters::add(&self.counters.ownership_lost, fenced as u64);
            tracing::warn!(
                queue = self.queue.name(),
                jobs = fenced,
                "finished jobs were no longer ours to ack (reclaimed by another worker)"
            );
        }
    }

    async fn dead_letter(
        &mut self,
        priority: Priority,
        entry_id: &str,
        job_id: &str,
        attempts: u32,
        error: &str,
    ) {
        let keys = self.queue.keys();
        let mut call =
            scripts()
                .dead_letter
                .call(&[keys.stats(), keys.stream(priority), keys.dead()]);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(entry_id)
            .arg(priority.as_str())
            .arg(error)
            .arg(now_ms())
            .arg(job_id)
            .arg(attempts)
            .arg(self.queue.settings().max_dead_letters.unwrap_or(0));
        let settings = self.queue.settings().clone();
        let moved = retrying("dead_letter", || {
            let call = &call;
            let settings = &settings;
            let mut conn = self.conn.clone();
            async move {
                let reply: Value = call.invoke(&mut conn).await?;
                match scripts::check_status(call.script(), reply, settings) {
                    Err(Error::OwnershipLost) => Ok(false),
                    other => other.map(|_| true),
                }
            }
        })
        .await;
        match moved {
            Some(true) => {
                Counters::add(&self.counters.dead_lettered, 1);
                tracing::warn!(
                    queue = self.queue.name(),
                    job = job_id,
                    error,
                    "job dead-lettered"
                );
            }
            Some(false) => {
                Counters::add(&self.counters.ownership_lost, 1);
                tracing::warn!(
                    queue = self.queue.name(),
                    job = job_id,
                    "dead-letter fenced: job reclaimed by another worker"
                );
            }
            None => {}
        }
    }
}

/// Runs `op` until it succeeds, with capped exponential backoff, for up to
/// [`GIVE_UP_AFTER`]. Returns `None` (after logging) when it gave up: the
/// job then stays pending and is reclaimed later, so it is delayed, not lost.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(err) if started.elapsed() < GIVE_UP_AFTER => {
                tracing::warn!(%err, what, retry_in = ?delay, "finishing jobs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                tracing::error!(%err, what, "gave up finishing jobs; they stay pending and will be reclaimed");
                return None;
            }
        }
    }
}
