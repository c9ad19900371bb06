//! On a real local Redis Cluster (3 masters, 3 replicas, from redis-server
//! processes): the same queue code as on a single server, routed by slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, QueueKeys, QueueStats};
use support::cluster::TestCluster;
use support::{Seen, fast, spawn_worker, until_stats, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_partition_queue_works_on_a_cluster() {
    let cluster = TestCluster::start();
    let queue = cluster.queue("plain").await;
    assert!(queue.is_cluster());
    let mut batch = queue.batch();
    for i in 0..500u32 {
        let p = Priority::ALL[i as usize % 4];
        batch.push(&i, &EnqueueOptions::new().priority(p)).unwrap();
    }
    let ids = batch.send().await.unwrap();
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&queue, fast(), {
        let seen = seen.clone();
        move |job: Job<u32>| {
            seen.record(job.id());
            async { Ok(()) }
        }
    });
    until_stats("all 500 completed", &queue, |s| s.completed() == 500).await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.completed, 500);
    assert_eq!(seen.len(), ids.len());
    assert!(seen.duplicates().is_empty());
}

fn rank(p: Priority) -> usize {
    Priority::ALL.iter().position(|q| *q == p).unwrap()
}

/// Whether `order` (priorities as their urgency rank, in the order handlers
/// started) is most urgent first, allowing the reordering `window` handler
/// tasks can cause between dispatch and start.
fn in_priority_order(order: &[usize], window: usize) -> Result<(), String> {
    let mut worst_so_far = 0;
    for j in window..order.len() {
        worst_so_far = worst_so_far.max(order[j - window]);
        if order[j] < worst_so_far {
            return Err(format!(
                "start {j} has rank {} after rank {worst_so_far} started",
                order[j]
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_over_16_partitions_complete_once_most_urgent_first() {
    const JOBS: u32 = 100_000;
    let cluster = TestCluster::start();
    let queue = cluster
        .open(Queue::builder("bulk").partitions(16).metrics(false))
        .await;
    // The 16 partitions spread over the 3 masters.
    let owners: HashSet<u16> = (0..16)
        .map(|p| {
            let keys = QueueKeys::partition("streamq", "bulk", p).unwrap();
            let slot = cluster.cli(
                cluster.nodes[0].port(),
                &["CLUSTER", "KEYSLOT", keys.stats()],
            );
            cluster.owner_of(slot.trim().parse().unwrap())
        })
        .collect();
    assert_eq!(owners.len(), 3, "partitions on every master");

    let mut sent = 0;
    while sent < JOBS {
        let mut batch = queue.batch();
        for i in sent..sent + 10_000 {
            let p = Priority::ALL[(i as usize * 7 + i as usize / 3) % 4];
            let options = EnqueueOptions::new()
                .priority(p)
                .partition_key(format!("tenant-{}", i % 97));
            batch.push(&i, &options).unwrap();
        }
        batch.send().await.unwrap();
        sent += 10_000;
    }
    assert_eq!(queue.stats().await.unwrap().waiting(), u64::from(JOBS));

    let concurrency = 16;
    let seen = Seen::default();
    let mut workers = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = Arc::new(Mutex::new(Vec::with_capacity(JOBS as usize)));
        let handler = {
            let (seen, order) = (seen.clone(), order.clone());
            move |job: Job<u32>| {
                order.lock().unwrap().push(rank(job.priority()));
                seen.record(job.id());
                async { Ok(()) }
            }
        };
        workers.push(spawn_worker(
            &queue,
            fast().concurrency(concurrency).prefetch(concurrency),
            handler,
        ));
        orders.push(order);
    }
    let stats = until_stats_for(Duration::from_secs(600), &queue, |s| {
        s.completed() == u64::from(JOBS)
    })
    .await;
    assert_eq!(stats.partitions.len(), 16);
    assert!(stats.is_idle(), "{stats:?}");
    let mut completed = 0;
    for (stop, worker) in workers {
        stop.cancel();
        completed += worker.await.unwrap().completed;
    }
    assert_eq!(completed, u64::from(JOBS));
    assert_eq!(seen.len(), JOBS as usize);
    assert!(seen.duplicates().is_empty(), "{:?}", seen.duplicates());
    for order in orders {
        let order = order.lock().unwrap();
        in_priority_order(&order, 2 * concurrency).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_flooding_tenant_does_not_starve_a_quiet_one() {
    let cluster = TestCluster::start();
    let queue = cluster.open(Queue::builder("fair").partitions(8)).await;
    let (flood, quiet) = ("flood", "quiet");
    assert_ne!(
        streamq::partition_of(flood, 8),
        streamq::partition_of(quiet, 8)
    );
    let mut batch = queue.batch();
    for i in 0..5_000u32 {
        batch
            .push(
                &(flood.to_owned(), i),
                &EnqueueOptions::new().partition_key(flood),
            )
            .unwrap();
    }
    batch.send().await.unwrap();
    let concurrency = 8;
    let started = Arc::new(AtomicUsize::new(0));
    let quiet_at = Arc::new(Mutex::new(None));
    let (stop, worker) = spawn_worker(&queue, fast().concurrency(concurrency), {
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
    // The bound stated in docs/guarantees.md: at most one flood job per
    // slot starts between the quiet job's enqueue and its start.
    assert!(
        at - before <= 2 * concurrency,
        "{} flood jobs first",
        at - before
    );
}

async fn until_stats_for(
    limit: Duration,
    queue: &Queue,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let stats = queue.stats().await.expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; last {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
