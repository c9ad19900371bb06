//! The flooding-tenant check shared by the one-Redis and the cluster tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamq::{EnqueueOptions, Job, JobError, Queue};

use super::{fast, spawn_worker, wait_for};

/// Floods one partition of `queue` (of `partitions`) with `flood_jobs`, works
/// it with `concurrency` slots of 100 ms handlers, then enqueues one job for
/// a quiet tenant on another partition, and checks the bound stated in
/// docs/guarantees.md: flood jobs that start between the quiet job's enqueue
/// and its start are at most two per slot (handlers outlast a round trip).
pub async fn a_quiet_tenant_is_not_starved(
    queue: &Queue,
    partitions: u32,
    flood_jobs: u32,
    concurrency: usize,
) {
    let (flood, quiet) = ("flood", "quiet");
    assert_ne!(
        streamq::partition_of(flood, partitions),
        streamq::partition_of(quiet, partitions),
        "the test needs two partitions"
    );
    let mut batch = queue.batch();
    for i in 0..flood_jobs {
        batch
            .push(
                &(flood.to_owned(), i),
                &EnqueueOptions::new().partition_key(flood),
            )
            .unwrap();
    }
    batch.send().await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let quiet_at = Arc::new(Mutex::new(None));
    let (stop, worker) = spawn_worker(queue, fast().concurrency(concurrency), {
        let (started, quiet_at) = (started.clone(), quiet_at.clone());
        move |job: Job<(String, u32)>| {
            let n = started.fetch_add(1, Ordering::SeqCst);
            if job.payload().0 == "quiet" {
                *quiet_at.lock().unwrap() = Some(n);
            }
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<(), JobError>(())
            }
        }
    });
    wait_for("the flood is being worked", || {
        started.load(Ordering::SeqCst) >= 2 * concurrency
    })
    .await;
    let before = started.load(Ordering::SeqCst);
    queue
        .enqueue(
            &(quiet.to_owned(), 0u32),
            &EnqueueOptions::new().partition_key(quiet),
        )
        .await
        .unwrap();
    wait_for("the quiet job started", || {
        quiet_at.lock().unwrap().is_some()
    })
    .await;
    let at = quiet_at.lock().unwrap().unwrap();
    stop.cancel();
    worker.await.unwrap();
    assert!(
        at - before <= 2 * concurrency,
        "{} flood jobs started before the quiet one",
        at - before
    );
}
