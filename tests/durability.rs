//! Enqueue durability on a real server: what `Replicated` and `Persisted`
//! answer when the server cannot give what they ask, and that the jobs are
//! enqueued all the same (the error lists them). `Persisted` (`WAITAOF`)
//! is checked on whatever server runs the suite: refused at connect before
//! Redis 7.2, waited for on 7.2+ and Valkey (`.ci/compat`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

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
