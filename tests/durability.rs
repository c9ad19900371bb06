//! Enqueue durability on a real server: what `Replicated` and `Persisted`
//! answer when the server cannot give what they ask, and that the jobs are
//! enqueued all the same (the error lists them). `Persisted` (`WAITAOF`)
//! is checked on whatever server runs the suite: refused at connect before
//! Redis 7.2, waited for on 7.2+ and Valkey (`.ci/compat`). A restart that
//! loses acknowledged jobs is reported job by job; one that keeps them
//! reports nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;

use streamq::{Durability, EnqueueOptions, Error, LocalRedis, Queue, Version};
use support::TestRedis;

fn has_waitaof(queue: &Queue) -> bool {
    let server = queue.server();
    server.is_valkey() || server.version >= Version::new(7, 2, 0)
}

#[tokio::test]
async fn replicated_without_a_replica_names_the_jobs_it_enqueued() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("replicated").durability(Durability::Replicated {
                replicas: 1,
                timeout: Duration::from_millis(20),
            }),
        )
        .await;
    match queue.enqueue(&1u32, &EnqueueOptions::new()).await {
        Err(Error::NotReplicated {
            enqueued,
            reached: 0,
            wanted: 1,
        }) => assert_eq!(enqueued.len(), 1),
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    let mut batch = queue.batch();
    for i in 0..5u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    match batch.send().await {
        Err(Error::NotReplicated { enqueued, .. }) => assert_eq!(enqueued.len(), 5),
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    // Not replicated is not lost: all six wait on the master.
    assert_eq!(queue.stats().await.unwrap().waiting(), 6);
}

#[tokio::test]
async fn persisted_waits_for_the_append_only_file_where_the_server_can() {
    let plain = TestRedis::start();
    let probe = plain.queue("probe").await;
    let local = Durability::Persisted {
        local: true,
        replicas: 0,
        timeout: Duration::from_secs(5),
    };
    let refused = Queue::builder("persisted")
        .durability(local)
        .connect(&plain.config())
        .await;
    let Err(Error::Config(refused)) = refused else {
        panic!("expected a configuration error, got {refused:?}");
    };
    if !has_waitaof(&probe) {
        // Redis 7.0 and 7.1 have no WAITAOF: refused before any enqueue.
        assert!(
            refused.to_string().contains("WAITAOF needs Redis 7.2"),
            "{refused}"
        );
        return;
    }
    // WAITAOF is there, but `appendonly no` refuses a local wait.
    assert!(refused.to_string().contains("appendonly yes"), "{refused}");

    let aof = TestRedis::with(LocalRedis::builder().config("appendonly", ["yes"]));
    let queue = aof
        .open(Queue::builder("persisted").durability(local))
        .await;
    let id = queue.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    assert!(queue.job(id.as_str()).await.is_ok());

    let with_replica = aof
        .open(
            Queue::builder("persisted").durability(Durability::Persisted {
                local: true,
                replicas: 1,
                timeout: Duration::from_millis(20),
            }),
        )
        .await;
    match with_replica.enqueue(&2u32, &EnqueueOptions::new()).await {
        Err(Error::NotReplicated {
            enqueued,
            reached: 0,
            wanted: 1,
        }) => assert_eq!(enqueued.len(), 1),
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert_eq!(queue.stats().await.unwrap().waiting(), 2);
}

/// Jobs counted rolled back on the queue, over every priority.
async fn rolled_back(queue: &Queue) -> u64 {
    let metrics = queue.metrics().await.unwrap();
    metrics.by_priority.values().map(|c| c.rolled_back).sum()
}

#[tokio::test]
async fn a_restart_that_loses_the_data_is_reported_job_by_job() {
    let mut redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("restart").events(streamq::EventLog::default()))
        .await;
    let mut batch = queue.batch();
    for n in 0..50u32 {
        batch.push(&n, &EnqueueOptions::new()).unwrap();
    }
    let mut gone = queue.batch().send().await.unwrap();
    gone.extend(batch.send().await.unwrap());
    gone.push(queue.enqueue(&50u32, &EnqueueOptions::new()).await.unwrap());
    // No persistence: the restarted server has nothing of them.
    redis.server.kill();
    redis.server.restart().unwrap();
    let survivor = loop {
        match queue.enqueue(&51u32, &EnqueueOptions::new()).await {
            Ok(id) => break id,
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    };
    assert_eq!(rolled_back(&queue).await, 51);
    let mut reported = Vec::new();
    let mut events = Box::pin(queue.events(streamq::EventsFrom::Start));
    while reported.len() < 51 {
        let event = tokio::time::timeout(support::WAIT, events.next())
            .await
            .expect("the rolled back jobs' events")
            .unwrap()
            .unwrap();
        if event.kind == streamq::EventKind::RolledBack {
            reported.push(event.job_id);
        }
    }
    reported.sort();
    gone.sort();
    assert_eq!(reported, gone);
    assert!(!reported.contains(&survivor));
}

#[tokio::test]
async fn a_restart_that_keeps_the_data_reports_nothing() {
    let mut redis = TestRedis::with(
        LocalRedis::builder()
            .config("appendonly", ["yes"])
            .config("appendfsync", ["always"]),
    );
    let queue = redis.queue("kept").await;
    for n in 0..20u32 {
        queue.enqueue(&n, &EnqueueOptions::new()).await.unwrap();
    }
    redis.server.kill();
    redis.server.restart().unwrap();
    loop {
        match queue.enqueue(&20u32, &EnqueueOptions::new()).await {
            Ok(_) => break,
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    // A new server (a new replication id, so a second epoch), with every
    // number it had.
    let mut conn = redis::Client::open(redis.server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let epochs: String = redis::cmd("HGET")
        .arg(queue.keys().sequence())
        .arg("epochs")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(epochs.matches(';').count(), 2, "{epochs}");
    assert!(epochs.ends_with(" 21;"), "{epochs}");
    assert_eq!(rolled_back(&queue).await, 0);
    assert_eq!(queue.stats().await.unwrap().waiting(), 21);
}
