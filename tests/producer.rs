//! Enqueueing against a real Redis: batches, priorities, typed refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use redis::AsyncCommands;
use streamq::{EnqueueOptions, Error, Priority, Queue, QueueKeys};
use support::TestRedis;

#[tokio::test]
async fn a_batch_of_thousands_goes_out_in_one_call_and_is_counted() {
    let redis = TestRedis::start();
    let queue = redis.queue("batch").await;
    let mut batch = queue.batch();
    let mut expected = [0u64; 4];
    for i in 0..5000u32 {
        let priority = Priority::ALL[(i % 4) as usize];
        expected[priority as usize] += 1;
        batch
            .push(&i, &EnqueueOptions::new().priority(priority).name("n"))
            .unwrap();
    }
    let ids = batch.send().await.unwrap();
    assert_eq!(ids.len(), 5000);
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 5000);

    let stats = queue.stats().await.unwrap();
    for (p, stat) in stats.priorities.iter().enumerate() {
        assert_eq!(stat.length, expected[p], "{:?}", stat.priority);
        assert_eq!(stat.waiting, expected[p]);
        assert_eq!(stat.enqueued, expected[p]);
        assert_eq!(stat.in_flight, 0);
    }
    let mut raw = redis.raw().await;
    let len: u64 = raw.xlen(queue.stream_key(Priority::Low)).await.unwrap();
    assert_eq!(len, expected[3]);
}

#[tokio::test]
async fn an_oversized_payload_is_refused_before_redis_and_nothing_is_added() {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("small").max_payload_bytes(1024))
        .await;
    let big = vec![1u8; 4096];
    let err = queue
        .enqueue(&big, &EnqueueOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 1024, size } if size > 4096),
        "{err}"
    );
    assert!(!err.is_retryable());
    let mut batch = queue.batch();
    batch.push(&1u8, &EnqueueOptions::new()).unwrap();
    assert!(batch.push(&big, &EnqueueOptions::new()).is_err());
    assert_eq!(batch.len(), 1, "a refused job leaves the batch unchanged");
    assert_eq!(queue.stats().await.unwrap().enqueued(), 0);
}

#[tokio::test]
async fn bad_queue_names_are_typed_errors_before_any_connection() {
    // Port 1 has no server: validation must fail first.
    let nowhere = streamq::RedisConfig::from_url("redis://127.0.0.1:1").unwrap();
    for bad in ["", "a{b}", "new\nline", &"x".repeat(200)] {
        let err = Queue::builder(bad).connect(&nowhere).await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
    }
    let err = Queue::builder("ok")
        .prefix("p}")
        .connect(&nowhere)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidName {
                what: "key prefix",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_queue_key_of_the_wrong_type_is_a_typed_error() {
    let redis = TestRedis::start();
    let mut raw = redis.raw().await;
    let typed = QueueKeys::new("streamq", "typed").unwrap();
    let high = typed.stream(Priority::High);
    let _: () = raw.set(high, "not a stream").await.unwrap();
    let err = Queue::builder("typed")
        .connect(&redis.config())
        .await
        .unwrap_err();
    match err {
        Error::WrongKeyType {
            key,
            found,
            expected,
        } => {
            assert_eq!(key, high);
            assert_eq!(found, "string");
            assert_eq!(expected, "stream");
        }
        other => panic!("{other}"),
    }

    // Broken after connect: the enqueue script's XADD meets the wrong type.
    let queue = redis.queue("later").await;
    let low = queue.keys().stream(Priority::Low);
    let _: () = raw.del(low).await.unwrap();
    let _: () = raw.set(low, "x").await.unwrap();
    let err = queue
        .enqueue(&1, &EnqueueOptions::new().priority(Priority::Low))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongKeyType { .. }), "{err}");
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_batch() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("bounded").max_backlog(10)).await;
    let mut batch = queue.batch();
    for i in 0..8 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    let mut batch = queue.batch();
    for i in 0..3 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    let err = batch.send().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueFull {
                backlog: 8,
                limit: 10
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(queue.stats().await.unwrap().enqueued(), 8);
}

#[tokio::test]
async fn unknown_priority_names_are_typed_errors() {
    let err = "urgent".parse::<Priority>().unwrap_err();
    assert!(matches!(err, Error::UnknownPriority(_)));
    assert_eq!(Priority::from_severity("error"), Priority::High);
}

#[tokio::test]
async fn concurrent_single_enqueues_share_script_calls() {
    let redis = TestRedis::start();
    let queue = redis.queue("coalesce").await;
    queue.enqueue(&0u32, &EnqueueOptions::new()).await.unwrap();
    let calls_before = redis.script_calls().await;
    // On this single-threaded runtime every task adds its job before the
    // first script call can answer: at most two calls are in flight, the
    // rest wait and leave together.
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let queue = queue.clone();
            let priority = Priority::ALL[(i % 4) as usize];
            tokio::spawn(async move {
                queue
                    .enqueue(&i, &EnqueueOptions::new().priority(priority))
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 200);
    let calls = redis.script_calls().await - calls_before;
    assert!(calls < 100, "{calls} script calls for 200 enqueues");
    assert_eq!(queue.stats().await.unwrap().enqueued(), 201);
}

#[tokio::test]
async fn coalesced_enqueues_keep_idempotency_and_refusals_per_job() {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("coalesce-refusals").max_backlog(150))
        .await;
    let keyed = EnqueueOptions::new().idempotency_key("same", std::time::Duration::from_secs(60));
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let queue = queue.clone();
            let options = if i % 2 == 0 {
                keyed.clone()
            } else {
                EnqueueOptions::new()
            };
            tokio::spawn(async move { queue.enqueue(&i, &options).await })
        })
        .collect();
    let mut keyed_ids = std::collections::HashSet::new();
    let (mut keyed_ok, mut added, mut full) = (0u64, 0u64, 0u64);
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(id) if i % 2 == 0 => {
                keyed_ok += 1;
                keyed_ids.insert(id);
            }
            Ok(_) => added += 1,
            Err(Error::QueueFull { .. }) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(keyed_ok + added + full, 200);
    // Every job with the key got the one id that took it, however the
    // jobs were grouped into calls; a refused call added none of its jobs.
    assert!(keyed_ids.len() <= 1, "{keyed_ids:?}");
    let waiting = queue.stats().await.unwrap().waiting();
    assert_eq!(waiting, added + keyed_ids.len() as u64);
    assert!(waiting <= 150, "{waiting}");
}

#[tokio::test]
async fn plain_jobs_go_out_in_one_transaction_counted_and_numbered() {
    let redis = TestRedis::start();
    let queue = redis.queue("plain").await;
    let mut raw = redis.raw().await;
    // An empty script cache: the transaction must not depend on it.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    let (exec_before, xadd_before) = (
        redis.command_calls("exec").await,
        redis.command_calls("xadd").await,
    );
    let mut batch = queue.batch();
    for i in 0..24u32 {
        let options = EnqueueOptions::new()
            .priority(Priority::ALL[(i % 3) as usize])
            .name(if i % 2 == 0 { "even" } else { "odd" });
        batch.push(&i, &options).unwrap();
    }
    assert_eq!(batch.send().await.unwrap().len(), 24);
    assert_eq!(redis.command_calls("exec").await - exec_before, 1);
    assert_eq!(redis.command_calls("xadd").await - xadd_before, 24);

    let counters = redis.counters(&queue).await;
    for p in ["critical", "high", "medium"] {
        assert_eq!(counters[&format!("enqueued:{p}")], 8, "{p}");
    }
    assert_eq!(counters["name:enqueued:even"], 12);
    assert_eq!(counters["name:enqueued:odd"], 12);
    let numbered: u64 = raw.hget(queue.keys().sequence(), "n").await.unwrap();
    assert_eq!(numbered, 24);
    let waiting: u64 = raw.xlen(queue.stream_key(Priority::High)).await.unwrap();
    assert_eq!(waiting, 8);

    // One job alone is not worth the transaction: the script adds it.
    queue.enqueue(&24u32, &EnqueueOptions::new()).await.unwrap();
    assert_eq!(redis.command_calls("exec").await - exec_before, 1);

    // A job with an idempotency key needs the script to decide: the whole
    // batch goes through it, numbered after the others.
    let mut batch = queue.batch();
    for i in 25..45u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    let keyed = EnqueueOptions::new().idempotency_key("k", std::time::Duration::from_secs(60));
    batch.push(&45u32, &keyed).unwrap();
    assert_eq!(batch.send().await.unwrap().len(), 21);
    assert_eq!(redis.command_calls("exec").await - exec_before, 1);
    let numbered: u64 = raw.hget(queue.keys().sequence(), "n").await.unwrap();
    assert_eq!(numbered, 46);
    assert_eq!(queue.stats().await.unwrap().enqueued(), 46);
}
