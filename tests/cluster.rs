//! On a real local Redis Cluster (3 masters, 3 replicas, from redis-server
//! processes): the same queue code as on a single server, routed by slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use streamq::{EnqueueOptions, Job, Priority};
use support::cluster::TestCluster;
use support::{Seen, fast, spawn_worker, until_stats};

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
