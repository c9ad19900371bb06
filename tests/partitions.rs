//! One logical queue of several partitions on a single Redis: routing,
//! the layout record, exactly once, priority across partitions, fairness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamq::{EnqueueOptions, Error, Job, JobError, Priority, Queue, QueueKeys};
use support::{Seen, TestRedis, WAIT, eventually, fast, spawn_worker};

async fn total_completed(queue: &Queue) -> u64 {
    queue.stats().await.unwrap().completed()
}

#[tokio::test]
async fn one_partition_keeps_todays_keys_and_the_layout_is_enforced() {
    let redis = TestRedis::start();
    let plain = redis.queue("tenants").await;
    assert_eq!(plain.partition_count(), 1);
    assert_eq!(plain.keys(), &QueueKeys::new("streamq", "tenants").unwrap());
    plain.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();

    // Growing to 4: partition 0 is the old key set, so the old job is there.
    let four = redis.open(Queue::builder("tenants").partitions(4)).await;
    assert_eq!(four.partition_count(), 4);
    assert_eq!(four.keys(), plain.keys());
    // Every process now agrees on 4, and refuses another count.
    let adopted = redis.queue("tenants").await;
    assert_eq!(adopted.partition_count(), 4);
    match Queue::builder("tenants")
        .partitions(3)
        .connect(&redis.config())
        .await
    {
        Err(Error::PartitionMismatch {
            stored: 4,
            requested: 3,
            ..
        }) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // A layout version this build does not know is refused.
    let _: () = redis::cmd("HSET")
        .arg(four.keys().layout())
        .arg("version")
        .arg(99)
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    assert!(matches!(
        Queue::builder("tenants").connect(&redis.config()).await,
        Err(Error::UnknownLayout { .. })
    ));
}

#[tokio::test]
async fn jobs_route_by_key_and_spread_without_one() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("route").partitions(4)).await;
    let mut batch = queue.batch();
    for i in 0..400u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    for i in 0..40u32 {
        batch
            .push(&i, &EnqueueOptions::new().partition_key("tenant-a"))
            .unwrap();
    }
    assert_eq!(batch.send().await.unwrap().len(), 440);
    let home = streamq::partition_of("tenant-a", 4);
    let mut lens = Vec::new();
    for p in 0..4 {
        let keys = QueueKeys::partition("streamq", "route", p).unwrap();
        lens.push(redis.len(keys.stream(Priority::Medium)).await);
    }
    // Round-robin: 100 each; the keyed 40 all in one partition.
    for (p, len) in lens.iter().enumerate() {
        let expected = if p as u32 == home { 140 } else { 100 };
        assert_eq!(*len, expected, "partition {p}: {lens:?}");
    }
    assert_eq!(queue.stats().await.unwrap().waiting(), 440);
}

#[tokio::test]
async fn a_worker_runs_every_partition_once_most_urgent_first() {
    every_partition_once_most_urgent_first(false).await;
}

#[tokio::test]
async fn a_worker_on_a_thread_of_its_own_runs_every_partition_there() {
    every_partition_once_most_urgent_first(true).await;
}

/// 400 jobs over 4 partitions through one worker (on a thread of its own
/// when `own_thread`) running one job at a time: each runs once, most
/// urgent first across partitions, on the thread asked for.
async fn every_partition_once_most_urgent_first(own_thread: bool) {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("urgent").partitions(4)).await;
    let mut batch = queue.batch();
    for i in 0..400u32 {
        let p = Priority::ALL[(i as usize * 7) % 4];
        let options = EnqueueOptions::new()
            .priority(p)
            .partition_key(format!("t{}", i % 13));
        batch.push(&(p.as_str().to_owned(), i), &options).unwrap();
    }
    batch.send().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Seen::default();
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let config = fast().concurrency(1).prefetch(0).own_thread(own_thread);
    let (stop, worker) = spawn_worker(&queue, config, {
        let (order, seen, threads) = (order.clone(), seen.clone(), threads.clone());
        move |job: Job<(String, u32)>| {
            order.lock().unwrap().push(job.priority());
            seen.record(job.id());
            let thread = std::thread::current().name().map(str::to_owned);
            threads.lock().unwrap().insert(thread);
            async { Ok(()) }
        }
    });
    eventually("400 completed", WAIT, || async {
        total_completed(&queue).await == 400
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.completed, 400);
    assert_eq!(seen.len(), 400);
    assert!(seen.duplicates().is_empty());
    let order = order.lock().unwrap().clone();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "priorities out of order across partitions: {order:?}"
    );
    let expected = support::handler_thread(own_thread);
    assert_eq!(*threads.lock().unwrap(), HashSet::from([expected]));
}

#[tokio::test]
async fn a_flooding_tenant_does_not_starve_a_quiet_one() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("fair").partitions(4)).await;
    support::fairness::a_quiet_tenant_is_not_starved(&queue, 4, 2_000, 4).await;
}

#[tokio::test]
async fn operators_see_the_whole_partitioned_queue() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("ops")
                .partitions(4)
                .track_jobs(streamq::JobTracking::default()),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..40u32 {
        let options = EnqueueOptions::new()
            .partition_key(format!("t{i}"))
            .max_attempts(1);
        ids.push(queue.enqueue(&i, &options).await.unwrap());
    }
    // Lookup by id finds jobs in any partition.
    for id in &ids {
        assert!(queue.job(id.as_str()).await.unwrap().is_some(), "{id}");
    }
    // Pausing pauses every partition; a worker claims nothing.
    queue.pause().await.unwrap();
    assert!(queue.is_paused().await.unwrap());
    let report = queue.inspect(&Default::default()).await.unwrap();
    assert!(report.paused);
    assert_eq!(report.waiting(), 40);
    queue.resume().await.unwrap();
    assert!(!queue.is_paused().await.unwrap());

    // Every job fails once: 40 dead letters over 4 partitions.
    let (stop, worker) = spawn_worker(&queue, fast(), |_job: Job<u32>| async {
        Err::<(), JobError>(JobError::permanent("no"))
    });
    eventually("40 dead letters", WAIT, || async {
        queue.stats().await.unwrap().dead_letters == 40
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        stats
            .partitions
            .iter()
            .filter(|p| p.dead_letters > 0)
            .count(),
        4
    );
    let metrics = queue.metrics().await.unwrap();
    let dead: u64 = metrics.by_priority.values().map(|c| c.dead_lettered).sum();
    assert_eq!(dead, 40);

    // Paging the dead letters walks all partitions, each letter once.
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = queue.dead_letters(after.as_deref(), 7).await.unwrap();
        for letter in &page.letters {
            assert!(seen.insert(letter.id.clone()), "{} twice", letter.id);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40);
    let text = queue.prometheus(&Default::default()).await.unwrap();
    assert!(
        text.contains("streamq_partition_waiting{queue=\"ops\",partition=\"3\""),
        "{text}"
    );
    assert_eq!(queue.requeue_all_dead_letters().await.unwrap(), 40);
    eventually("requeued", WAIT, || async {
        queue.stats().await.unwrap().waiting() == 40
    })
    .await;
}

#[tokio::test]
async fn growing_and_shrinking_the_partition_count_loses_no_job() {
    let redis = TestRedis::start();
    // Grow 1 -> 4: record the count, reopen; old jobs stay in partition 0.
    let one = redis.queue("resize").await;
    let mut batch = one.batch();
    for i in 0..100u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    one.set_partitions(4).await.unwrap();
    let four = redis.queue("resize").await;
    assert_eq!(four.partition_count(), 4);
    let mut batch = four.batch();
    for i in 100..200u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    assert_eq!(four.stats().await.unwrap().waiting(), 200);

    // Shrink 4 -> 2 while a worker opened with 4 runs: new producers use 2,
    // the old worker drains partitions 2 and 3, then workers reopen with 2.
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&four, fast(), seen.handler::<u32>());
    four.set_partitions(2).await.unwrap();
    let two = redis.queue("resize").await;
    assert_eq!(two.partition_count(), 2);
    let mut batch = two.batch();
    for i in 200..300u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    eventually("partitions 2 and 3 drained", WAIT, || async {
        let stats = four.stats().await.unwrap();
        stats.partitions[2..]
            .iter()
            .all(|p| p.is_idle() && p.dead_letters == 0)
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let seen_after = Seen::default();
    let (stop, worker) = spawn_worker(&two, fast(), {
        let (a, b) = (seen.clone(), seen_after.clone());
        move |job: Job<u32>| {
            a.record(job.id());
            b.record(job.id());
            async { Ok::<(), JobError>(()) }
        }
    });
    eventually("all 300 done", WAIT, || async {
        four.stats().await.unwrap().completed() == 300
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(seen.len(), 300);
    assert!(seen.duplicates().is_empty());
}

#[tokio::test]
async fn recover_drain_clean_and_obliterate_cover_every_partition() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("rm").partitions(4)).await;
    let keyed = |i: u32| EnqueueOptions::new().partition_key(format!("t{i}"));

    // A worker with an hour-long lease claims 12 jobs, then vanishes.
    for i in 0..12u32 {
        queue.enqueue(&i, &keyed(i)).await.unwrap();
    }
    let (_stop, doomed) = spawn_worker(
        &queue,
        fast()
            .lease(Duration::from_secs(3600))
            .concurrency(16)
            .prefetch(16),
        |_: Job<u32>| async {
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    support::until_stats("all 12 held", &queue, |s| s.in_flight() == 12).await;
    doomed.abort();
    let held_in = queue
        .stats()
        .await
        .unwrap()
        .partitions
        .iter()
        .filter(|p| p.in_flight() > 0)
        .count();
    assert!(held_in > 1, "the jobs should span partitions");
    let recovered = Arc::new(Mutex::new(0));
    eventually("every stalled job recovered", WAIT, || {
        let (queue, recovered) = (&queue, recovered.clone());
        async move {
            let r = queue
                .recover_stalled(Duration::from_millis(50))
                .await
                .unwrap();
            assert_eq!(r.lost, 0);
            let mut total = recovered.lock().unwrap();
            *total += r.recovered;
            *total == 12
        }
    })
    .await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting(), stats.in_flight()), (12, 0));
    // The vanished worker holds nothing now: it leaves every partition.
    assert_eq!(
        queue.prune_consumers(Duration::ZERO).await.unwrap().len(),
        1
    );
    assert!(
        queue
            .inspect(&Default::default())
            .await
            .unwrap()
            .consumers
            .is_empty()
    );

    // Eight delayed jobs beside the twelve waiting; drain takes all twenty.
    for i in 0..8u32 {
        let options = keyed(i).delay(Duration::from_secs(3600));
        queue.enqueue(&i, &options).await.unwrap();
    }
    let drained = queue.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (12, 8));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting(), stats.delayed), (0, 0));

    // Dead letters in every partition; clean removes them all.
    for i in 0..8u32 {
        queue.enqueue(&i, &keyed(i).max_attempts(1)).await.unwrap();
    }
    let (stop, worker) = spawn_worker(&queue, fast(), |_: Job<u32>| async {
        Err::<(), JobError>(JobError::permanent("no"))
    });
    support::until_stats("8 dead letters", &queue, |s| s.dead_letters == 8).await;
    stop.cancel();
    worker.await.unwrap();
    let cleaned = queue
        .clean(&streamq::Clean::new().dead_letters_older_than(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(cleaned.dead_letters, 8);
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);

    // Obliterate leaves no key of any partition, the layout included, and
    // spares another queue.
    let other = redis.queue("rm-other").await;
    other.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    let before = all_keys(&redis).await;
    assert!(before.iter().any(|k| k.contains("{rm#")), "{before:?}");
    let gone = queue.obliterate(true).await.unwrap();
    let after = all_keys(&redis).await;
    let others = other.keys().pattern();
    assert!(
        after
            .iter()
            .all(|k| k.starts_with(others.trim_end_matches('*'))),
        "left behind: {after:?}"
    );
    assert_eq!(gone.keys as usize, before.len() - after.len());
}

async fn all_keys(redis: &TestRedis) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn paging_dead_letters_reads_a_partition_that_holds_them_all() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("one-sided").partitions(4)).await;
    // Every job in one partition: each page of the others is empty, and the
    // full one has more than a page.
    let options = EnqueueOptions::new().partition_key("tenant-a");
    for n in 0..10u32 {
        queue.enqueue(&n, &options).await.unwrap();
    }
    let (stop, worker) = spawn_worker(&queue, fast(), |_job: Job<u32>| async {
        Err::<(), JobError>(JobError::permanent("no"))
    });
    eventually("10 dead letters", WAIT, || async {
        queue.stats().await.unwrap().dead_letters == 10
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = queue.dead_letters(after.as_deref(), 3).await.unwrap();
        for letter in &page.letters {
            assert!(seen.insert(letter.id.clone()), "{} twice", letter.id);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
}
