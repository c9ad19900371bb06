//! Job lookup by id, with progress and logs, on a queue that tracks jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use streamq::{EnqueueOptions, JobError, JobState, JobTracking, Priority, Queue, RetryBackoff};
use support::{Gate, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats};

async fn tracked(redis: &TestRedis, name: &str, tracking: JobTracking) -> Queue {
    redis.open(Queue::builder(name).track_jobs(tracking)).await
}

async fn state_of(queue: &Queue, id: &str) -> Option<JobState> {
    queue.job(id).await.unwrap().map(|info| info.state)
}

#[tokio::test]
async fn a_job_is_found_waiting_then_active_with_progress_and_logs_then_completed() {
    let redis = TestRedis::start();
    let keep = JobTracking::default().keep_completed(100, Duration::from_secs(3600));
    let queue = tracked(&redis, "lookup", keep).await;
    let id = queue
        .enqueue(
            &"work",
            &EnqueueOptions::new()
                .priority(Priority::High)
                .name("report"),
        )
        .await
        .unwrap();
    let info = queue.job(id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        info.state,
        JobState::Waiting {
            priority: Priority::High
        }
    );
    assert_eq!((info.name.as_str(), info.attempts), ("report", 0));
    assert!(info.enqueued_ms.is_some() && info.started_ms.is_none());

    let finish = Gate::default();
    let go = finish.clone();
    let config = fast().consumer_name("tracker-test");
    let (stop, worker) = spawn_worker(&queue, config, move |job: streamq::Job<String>| {
        let go = go.clone();
        async move {
            job.log("loading data");
            job.progress(50);
            job.log("x".repeat(5000));
            go.pass().await;
            job.progress(100);
            Ok(())
        }
    });
    // Progress and logs are written by the tracker after the handler sent
    // them: wait on what Redis shows, logs included.
    eventually("progress recorded", WAIT, || {
        let q = queue.clone();
        let id = id.clone();
        async move {
            let info = q.job(id.as_str()).await.unwrap().unwrap();
            info.progress == Some(50) && info.logs.len() == 2
        }
    })
    .await;
    let info = queue.job(id.as_str()).await.unwrap().unwrap();
    match &info.state {
        JobState::Active {
            owner, deliveries, ..
        } => {
            assert_eq!((owner.as_str(), *deliveries), ("tracker-test", 1));
        }
        other => panic!("expected active, got {other:?}"),
    }
    assert_eq!(info.attempts, 1);
    assert!(info.started_ms.is_some());
    assert_eq!(info.logs.len(), 2);
    assert_eq!(info.logs[0], "loading data");
    assert_eq!(info.logs[1].len(), 1024, "long lines are cut at 1 KiB");

    finish.release(1);
    eventually("completed", WAIT, || {
        let q = queue.clone();
        let id = id.clone();
        async move { state_of(&q, id.as_str()).await == Some(JobState::Completed) }
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let info = queue.job(id.as_str()).await.unwrap().unwrap();
    assert!(info.finished_ms >= info.started_ms);
    assert!(info.enqueued_ms.is_some() && info.started_ms.is_some());
    assert_eq!((info.name.as_str(), info.progress), ("report", Some(100)));
    assert!(queue.job("no-such-job").await.unwrap().is_none());
}

#[tokio::test]
async fn delayed_retried_and_dead_lettered_jobs_are_found() {
    let redis = TestRedis::start();
    let queue = tracked(&redis, "states", JobTracking::default()).await;
    let later = queue
        .enqueue(
            &"later",
            &EnqueueOptions::new().delay(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    match state_of(&queue, later.as_str()).await {
        Some(JobState::Delayed { due_ms }) => assert!(due_ms > 0),
        other => panic!("{other:?}"),
    }
    let doomed = queue
        .enqueue(
            &"doomed",
            &EnqueueOptions::new().max_attempts(2).name("bill"),
        )
        .await
        .unwrap();
    // The retry waits an hour: the job stays delayed while the test looks,
    // however slow the machine. The test then makes it due itself.
    let config = fast().backoff(RetryBackoff::Fixed(Duration::from_secs(3600)));
    let (stop, worker) = spawn_worker(&queue, config, |_: streamq::Job<String>| async {
        Err(JobError::retry("card declined"))
    });
    // The delayed set (the retry script) and the error (the tracker) are
    // written apart: wait for both.
    eventually("retrying, with the error recorded", WAIT, || {
        let q = queue.clone();
        let id = doomed.clone();
        async move {
            let info = q.job(id.as_str()).await.unwrap().unwrap();
            matches!(info.state, JobState::Delayed { .. })
                && info.error.as_deref() == Some("card declined")
        }
    })
    .await;
    let info = queue.job(doomed.as_str()).await.unwrap().unwrap();
    assert!(matches!(info.state, JobState::Delayed { .. }), "{info:?}");
    assert_eq!(info.error.as_deref(), Some("card declined"));
    // Due now: the worker promotes it and runs the last attempt.
    let mut raw = redis.raw().await;
    let delayed = queue.keys().delayed();
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(delayed)
        .arg(&["0", "-1"])
        .query_async(&mut raw)
        .await
        .unwrap();
    // By score: the job due in ten minutes, then the retry due in an hour.
    assert_eq!(members.len(), 2, "the job for later and the retry");
    let retry = &members[1];
    let _: i64 = redis::cmd("ZADD")
        .arg(delayed)
        .arg(&["XX", "0"])
        .arg(retry)
        .query_async(&mut raw)
        .await
        .unwrap();
    eventually("dead-lettered", WAIT, || {
        let q = queue.clone();
        let id = doomed.clone();
        async move {
            matches!(
                state_of(&q, id.as_str()).await,
                Some(JobState::DeadLettered { .. })
            )
        }
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let info = queue.job(doomed.as_str()).await.unwrap().unwrap();
    let JobState::DeadLettered {
        error,
        dead_letter_id,
    } = info.state
    else {
        panic!("{:?}", info.state)
    };
    assert!(error.contains("card declined"), "{error}");
    assert_eq!((info.attempts, info.name.as_str()), (2, "bill"));
    assert!(info.enqueued_ms.is_some() && info.started_ms.is_some());
    let letter = queue
        .dead_letter(&dead_letter_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(letter.job_id, doomed);
}

#[tokio::test]
async fn without_retention_completed_jobs_are_forgotten_and_with_it_bounded_by_count() {
    let redis = TestRedis::start();
    let forget = tracked(&redis, "forget", JobTracking::default()).await;
    let keep = tracked(
        &redis,
        "keep",
        JobTracking::default().keep_completed(3, Duration::from_secs(3600)),
    )
    .await;
    let mut ids = Vec::new();
    for queue in [&forget, &keep] {
        let mut batch = queue.batch();
        for i in 0..8u32 {
            batch.push(&i, &EnqueueOptions::new()).unwrap();
        }
        ids.push(batch.send().await.unwrap());
    }
    for queue in [&forget, &keep] {
        let (stop, worker) = spawn_worker(
            queue,
            fast().concurrency(1).prefetch(0),
            |_: streamq::Job<u32>| async { Ok(()) },
        );
        until_stats("drained", queue, |s| s.completed() == 8).await;
        // A stopped worker has drained its tracker: every metadata write
        // and deletion is in Redis once it returns.
        stop.cancel();
        worker.await.unwrap();
    }
    for id in &ids[0] {
        assert!(
            forget.job(id.as_str()).await.unwrap().is_none(),
            "metadata kept without retention"
        );
    }
    let mut kept = 0;
    for id in &ids[1] {
        if let Some(info) = keep.job(id.as_str()).await.unwrap() {
            assert_eq!(info.state, JobState::Completed);
            kept += 1;
        }
    }
    assert_eq!(kept, 3, "retention keeps the last 3 completed jobs");
    assert_eq!(redis.len(&keep.keys().completed()).await, 3);
}

#[tokio::test]
async fn an_untracked_queue_knows_no_job_and_handlers_may_still_report() {
    let redis = TestRedis::start();
    let queue = redis.queue("untracked").await;
    let id = queue.enqueue(&1u8, &EnqueueOptions::new()).await.unwrap();
    let (stop, worker) = spawn_worker(&queue, fast(), |job: streamq::Job<u8>| async move {
        job.progress(10);
        job.log("ignored without tracking");
        Ok(())
    });
    until_stats("done", &queue, |s| s.completed() == 1).await;
    stop.cancel();
    worker.await.unwrap();
    assert!(queue.job(id.as_str()).await.unwrap().is_none());
    assert_eq!(redis.len(&queue.keys().job_log(id.as_str())).await, 0);
}

/// The fields of the queue's `live` hash (tracked jobs that have not ended).
async fn live_ids(redis: &TestRedis, queue: &Queue) -> Vec<String> {
    let mut ids: Vec<String> = redis::cmd("HKEYS")
        .arg(queue.keys().live())
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    ids.sort();
    ids
}

async fn exists(redis: &TestRedis, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<u8>(&mut redis.raw().await)
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn live_jobs_are_one_field_each_until_they_end_are_cancelled_or_drained() {
    let redis = TestRedis::start();
    let queue = tracked(&redis, "live", JobTracking::default()).await;
    let named = |name: &str| EnqueueOptions::new().name(name);
    let a = queue.enqueue(&1u8, &named("alpha one")).await.unwrap();
    let b = queue.enqueue(&2u8, &named("beta")).await.unwrap();
    let c = queue.enqueue(&3u8, &named("gamma")).await.unwrap();
    let later = named("delta").delay(Duration::from_secs(3600));
    let d = queue.enqueue(&4u8, &later).await.unwrap();

    // Waiting and delayed jobs are fields of one hash, with no key each.
    let mut all = vec![a.to_string(), b.to_string(), c.to_string(), d.to_string()];
    all.sort();
    assert_eq!(live_ids(&redis, &queue).await, all);
    for id in [&a, &b, &c, &d] {
        assert!(!exists(&redis, &queue.keys().job(id.as_str())).await);
    }
    let info = queue.job(a.as_str()).await.unwrap().unwrap();
    assert_eq!(info.name, "alpha one");
    assert!(matches!(info.state, JobState::Waiting { .. }));
    assert!(info.enqueued_ms.is_some() && info.started_ms.is_none());
    let info = queue.job(d.as_str()).await.unwrap().unwrap();
    assert_eq!(info.name, "delta");
    assert!(matches!(info.state, JobState::Delayed { .. }), "{info:?}");

    // Cancelling moves the record into a finished job's metadata.
    queue.cancel(b.as_str()).await.unwrap();
    let info = queue.job(b.as_str()).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.name.as_str()),
        (JobState::Cancelled, "beta")
    );
    assert!(!live_ids(&redis, &queue).await.contains(&b.to_string()));

    // Draining clears the records of what it removed, delayed jobs included.
    let drained = queue.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (2, 1));
    assert!(live_ids(&redis, &queue).await.is_empty());
    assert!(queue.job(c.as_str()).await.unwrap().is_none());

    // A started job keeps its record, marked started, and no key of its
    // own; a finished one has neither.
    let e = queue.enqueue(&5u8, &named("epsilon")).await.unwrap();
    let finish = Gate::default();
    let go = finish.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |_job: streamq::Job<u8>| {
        let go = go.clone();
        async move {
            go.pass().await;
            Ok(())
        }
    });
    eventually("the start recorded", WAIT, || {
        let (q, e) = (queue.clone(), e.clone());
        async move {
            q.job(e.as_str())
                .await
                .unwrap()
                .is_some_and(|info| info.started_ms.is_some())
        }
    })
    .await;
    let info = queue.job(e.as_str()).await.unwrap().unwrap();
    assert!(matches!(info.state, JobState::Active { .. }), "{info:?}");
    assert_eq!((info.name.as_str(), info.attempts), ("epsilon", 1));
    assert!(info.enqueued_ms.is_some());
    assert_eq!(live_ids(&redis, &queue).await, vec![e.to_string()]);
    assert!(!exists(&redis, &queue.keys().job(e.as_str())).await);
    finish.open();
    until_stats("done", &queue, |s| s.completed() == 1).await;
    eventually("the finish recorded", WAIT, || {
        let (q, e) = (queue.clone(), e.clone());
        async move { q.job(e.as_str()).await.unwrap().is_none() }
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert!(live_ids(&redis, &queue).await.is_empty());
}

#[tokio::test]
async fn a_completed_job_leaves_nothing_and_one_that_reported_nothing_costs_no_delete() {
    let redis = TestRedis::start();
    let queue = tracked(&redis, "quiet", JobTracking::default()).await;
    let mut batch = queue.batch();
    for i in 0..6u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    let ids = batch.send().await.unwrap();
    let deletes_before = redis.command_calls("del").await;
    // Only job 0 writes a log line (and so a key of its own).
    let (stop, worker) = spawn_worker(&queue, fast(), |job: streamq::Job<u32>| async move {
        if *job.payload() == 0 {
            job.log("the only line");
        }
        Ok(())
    });
    until_stats("done", &queue, |s| s.completed() == 6).await;
    // A stopped worker has drained its tracker.
    stop.cancel();
    worker.await.unwrap();
    assert!(live_ids(&redis, &queue).await.is_empty());
    for id in &ids {
        assert!(queue.job(id.as_str()).await.unwrap().is_none());
        assert!(!exists(&redis, &queue.keys().job_log(id.as_str())).await);
    }
    assert_eq!(
        redis.command_calls("del").await - deletes_before,
        1,
        "one DEL: job 0's log"
    );
}

#[tokio::test]
async fn a_large_tracked_batch_writes_its_live_records_in_a_few_commands() {
    let redis = TestRedis::start();
    let queue = tracked(&redis, "bulk", JobTracking::default()).await;
    let mut batch = queue.batch();
    for i in 0..1500u32 {
        batch
            .push(&i, &EnqueueOptions::new().name(format!("job {i}")))
            .unwrap();
    }
    let ids = batch.send().await.unwrap();
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(live_ids(&redis, &queue).await, expected);
    let hsets = redis.command_calls("hset").await;
    assert!(hsets < 10, "{hsets} HSET calls for 1,500 jobs");
    for (i, id) in ids.iter().enumerate().step_by(499) {
        let info = queue.job(id.as_str()).await.unwrap().unwrap();
        assert_eq!(info.name, format!("job {i}"));
        assert!(matches!(info.state, JobState::Waiting { .. }), "{info:?}");
    }
}

#[tokio::test]
async fn a_worker_that_does_not_track_still_removes_the_records_of_jobs_it_ends() {
    let redis = TestRedis::start();
    let producer = tracked(&redis, "mixed", JobTracking::default()).await;
    let untracked = redis.queue("mixed").await;
    let mut batch = producer.batch();
    for i in 0..5u32 {
        batch
            .push(&i, &EnqueueOptions::new().max_attempts(1))
            .unwrap();
    }
    batch.send().await.unwrap();
    assert_eq!(live_ids(&redis, &producer).await.len(), 5);
    // Job 4 fails for good: a dead letter ends a job too.
    let (stop, worker) = spawn_worker(&untracked, fast(), |job: streamq::Job<u32>| async move {
        match *job.payload() {
            4 => Err(JobError::permanent("no")),
            _ => Ok(()),
        }
    });
    until_stats("ended", &untracked, |s| {
        s.completed() == 4 && s.dead_letters == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert!(live_ids(&redis, &producer).await.is_empty());
}
