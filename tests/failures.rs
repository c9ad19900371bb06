//! Failure handling in one process against a real Redis: retries, timeouts,
//! panics, delays, idempotency, dead letters, reclaim, leases, poison jobs,
//! lost entries and out-of-memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use streamq::{
    DeadLettered, EnqueueOptions, Error, Job, JobError, LocalRedis, Priority, Queue, QueueKeys,
};
use support::{Gate, Seen, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats, wait_for};

#[tokio::test]
async fn a_failing_job_is_retried_until_it_succeeds() {
    let redis = TestRedis::start();
    let queue = redis.queue("retry").await;
    let id = queue
        .enqueue(
            &"flaky",
            &EnqueueOptions::new()
                .max_attempts(3)
                .priority(Priority::High),
        )
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = attempts.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<String>| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((job.id().clone(), job.attempt()));
            if job.attempt() < 3 {
                Err(JobError::retry("not yet"))
            } else {
                Ok(())
            }
        }
    });
    eventually("completed", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().completed() == 1 }
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(
        (report.completed, report.retried, report.dead_lettered),
        (1, 2, 0)
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts, vec![(id.clone(), 1), (id.clone(), 2), (id, 3)]);
    let counters = redis.counters(&queue).await;
    assert_eq!(counters.get("retried:high"), Some(&2));
    assert_eq!(counters.get("completed:high"), Some(&1));
    let keys = queue.keys();
    assert_eq!(redis.len(keys.delayed()).await, 0);
    assert_eq!(redis.len(keys.stream(Priority::High)).await, 0);
}

#[tokio::test]
async fn exhausted_retries_timeouts_and_panics_end_in_the_dead_letters_with_the_error() {
    let redis = TestRedis::start();
    let queue = redis.queue("exhaust").await;
    let always = queue
        .enqueue(
            &"always fails",
            &EnqueueOptions::new().max_attempts(3).name("flaky"),
        )
        .await
        .unwrap();
    let slow = queue
        .enqueue(
            &"too slow",
            &EnqueueOptions::new()
                .max_attempts(2)
                .timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let panics = queue
        .enqueue(&"panics", &EnqueueOptions::new().max_attempts(2))
        .await
        .unwrap();
    let permanent = queue
        .enqueue(
            &"bad input",
            &EnqueueOptions::new()
                .max_attempts(5)
                .priority(Priority::Critical),
        )
        .await
        .unwrap();
    let told = Arc::new(Mutex::new(Vec::<DeadLettered>::new()));
    let hook_log = told.clone();
    let config = fast().on_dead_letter(move |d| hook_log.lock().unwrap().push(d.clone()));
    let (stop, worker) = spawn_worker(&queue, config, |job: Job<String>| async move {
        match job.payload().as_str() {
            "too slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }
            "panics" => panic!("handler bug on attempt {}", job.attempt()),
            "bad input" => Err(JobError::permanent("schema mismatch")),
            _ => Err(JobError::retry(format!("boom {}", job.attempt()))),
        }
    });
    eventually("all four dead-lettered", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 4 }
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.dead_lettered, 4);
    assert_eq!(report.retried, 2 + 1 + 1);
    assert_eq!(report.panicked, 2, "the worker kept running through panics");

    let page = queue.dead_letters(None, 10).await.unwrap();
    let by_job = |id: &streamq::JobId| {
        page.letters
            .iter()
            .find(|l| &l.job_id == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered"))
            .clone()
    };
    let letter = by_job(&always);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.name, "flaky");
    assert_eq!(letter.priority, Priority::Medium);
    assert!(
        letter
            .error
            .contains("failed 3 of 3 attempts, last: boom 3"),
        "{}",
        letter.error
    );
    assert_eq!(letter.payload::<String>().unwrap(), "always fails");
    assert!(letter.enqueued_ms > 0 && letter.failed_ms >= letter.enqueued_ms);
    assert!(
        by_job(&slow).error.contains("timed out after 50ms"),
        "{}",
        by_job(&slow).error
    );
    assert!(
        by_job(&panics)
            .error
            .contains("handler panicked: handler bug on attempt 2")
    );
    let bad = by_job(&permanent);
    assert_eq!(
        (bad.attempts, bad.error.as_str(), bad.priority),
        (1, "schema mismatch", Priority::Critical)
    );

    let mut hooked: Vec<String> = told
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.job_id.to_string())
        .collect();
    hooked.sort();
    let mut expected: Vec<String> = [&always, &slow, &panics, &permanent]
        .iter()
        .map(|i| i.to_string())
        .collect();
    expected.sort();
    assert_eq!(hooked, expected, "the dead-letter hook saw every job");
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting(), stats.in_flight()), (0, 0));
}

#[tokio::test]
async fn delayed_and_scheduled_jobs_wait_for_their_time() {
    let redis = TestRedis::start();
    let queue = redis.queue("later").await;
    let started = Instant::now();
    let delayed = queue
        .enqueue(
            &1u8,
            &EnqueueOptions::new().delay(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    let scheduled = queue
        .enqueue(
            &2u8,
            &EnqueueOptions::new().run_at(SystemTime::now() + Duration::from_millis(600)),
        )
        .await
        .unwrap();
    let now = queue.enqueue(&3u8, &EnqueueOptions::new()).await.unwrap();
    // The undelayed job went straight to its stream; the other two wait.
    assert_eq!(redis.len(queue.keys().delayed()).await, 2);
    assert_eq!(redis.len(queue.keys().stream(Priority::Medium)).await, 1);
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = ran.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<u8>| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push((job.id().clone(), started.elapsed()));
            Ok(())
        }
    });
    wait_for("all three ran", || ran.lock().unwrap().len() == 3).await;
    stop.cancel();
    worker.await.unwrap();
    let ran = ran.lock().unwrap().clone();
    let at = |id| ran.iter().find(|(j, _)| j == id).unwrap().1;
    assert!(ran.iter().any(|(j, _)| j == &now), "the undelayed job ran");
    assert!(
        at(&delayed) >= Duration::from_millis(400),
        "ran early: {:?}",
        at(&delayed)
    );
    assert!(
        at(&scheduled) >= Duration::from_millis(600),
        "ran early: {:?}",
        at(&scheduled)
    );
    assert_eq!(redis.counters(&queue).await.get("scheduled"), Some(&2));
}

#[tokio::test]
async fn concurrent_promoters_move_each_due_job_exactly_once() {
    let redis = TestRedis::start();
    let queue = redis.queue("promote").await;
    let mut batch = queue.batch();
    for i in 0..3000u32 {
        let options = EnqueueOptions::new()
            .delay(Duration::from_millis(300))
            .priority(Priority::ALL[(i % 4) as usize]);
        batch.push(&i, &options).unwrap();
    }
    let ids = batch.send().await.unwrap();
    let seen = Seen::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(spawn_worker(
            &queue,
            fast().concurrency(32),
            seen.handler::<u32>(),
        ));
    }
    wait_for("all promoted and run", || seen.len() == 3000).await;
    for (stop, handle) in workers {
        stop.cancel();
        handle.await.unwrap();
    }
    assert!(
        seen.duplicates().is_empty(),
        "{:?}",
        &seen.duplicates()[..1]
    );
    assert!(ids.iter().all(|id| seen.count(id) == 1));
    assert_eq!(redis.len(queue.keys().delayed()).await, 0);
    assert_eq!(queue.stats().await.unwrap().completed(), 3000);
}

#[tokio::test]
async fn a_duplicate_idempotency_key_returns_the_first_id_and_adds_nothing() {
    let redis = TestRedis::start();
    let queue = redis.queue("dedup").await;
    // Long enough that no stall between the enqueues below can expire it.
    let ttl = Duration::from_secs(3600);
    let options = EnqueueOptions::new().idempotency_key("alert-42", ttl);
    let first = queue.enqueue(&"first", &options).await.unwrap();
    let again = queue.enqueue(&"second", &options).await.unwrap();
    assert_eq!(first, again);

    let mut batch = queue.batch();
    batch
        .push(&"a", &EnqueueOptions::new().idempotency_key("k2", ttl))
        .unwrap();
    batch
        .push(&"b", &EnqueueOptions::new().idempotency_key("k2", ttl))
        .unwrap();
    batch.push(&"c", &options).unwrap();
    let ids = batch.send().await.unwrap();
    assert_eq!(
        ids[0], ids[1],
        "a repeat within one batch is a duplicate too"
    );
    assert_eq!(ids[2], first);
    assert_eq!(queue.stats().await.unwrap().enqueued(), 2);
    assert_eq!(redis.counters(&queue).await.get("deduplicated"), Some(&3));

    // The key lives as long as asked for, then is free again.
    let mut raw = redis.raw().await;
    let dedup = queue.keys().dedup("alert-42");
    let left: i64 = redis::cmd("PTTL")
        .arg(&dedup)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(left > 0 && left <= 3_600_000, "PTTL {left}");
    let brief = EnqueueOptions::new().idempotency_key("brief", Duration::from_millis(200));
    let before = queue.enqueue(&"brief", &brief).await.unwrap();
    let brief_key = queue.keys().dedup("brief");
    eventually("the brief key expired", WAIT, || {
        let mut raw = raw.clone();
        let key = brief_key.clone();
        async move {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            exists == 0
        }
    })
    .await;
    let later = queue.enqueue(&"after ttl", &brief).await.unwrap();
    assert_ne!(later, before, "after the TTL the key is free again");
    assert_eq!(queue.stats().await.unwrap().enqueued(), 4);

    let err = queue
        .enqueue(&1, &EnqueueOptions::new().idempotency_key("", ttl))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidName {
                what: "idempotency key",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dead_letters_can_be_paged_shown_requeued_and_purged() {
    let redis = TestRedis::start();
    let queue = redis.queue("dlq").await;
    let mut batch = queue.batch();
    for i in 0..7u32 {
        let p = if i % 2 == 0 {
            Priority::High
        } else {
            Priority::Low
        };
        batch
            .push(&i, &EnqueueOptions::new().priority(p).max_attempts(1))
            .unwrap();
    }
    batch.send().await.unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let failing = fail.clone();
    let seen = Seen::default();
    let recorder = seen.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<u32>| {
        let (fail, seen) = (failing.clone(), recorder.clone());
        async move {
            if fail.load(Ordering::SeqCst) {
                return Err(JobError::retry("downstream is down"));
            }
            assert_eq!(job.attempt(), 1, "requeued jobs start over");
            seen.record(job.id());
            Ok(())
        }
    });
    eventually("all dead", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 7 }
    })
    .await;

    let first = queue.dead_letters(None, 3).await.unwrap();
    assert_eq!(first.letters.len(), 3);
    let second = queue.dead_letters(first.next.as_deref(), 3).await.unwrap();
    let third = queue.dead_letters(second.next.as_deref(), 3).await.unwrap();
    assert_eq!(
        (
            second.letters.len(),
            third.letters.len(),
            third.next.clone()
        ),
        (3, 1, None)
    );
    let one = &first.letters[0];
    let shown = queue.dead_letter(&one.id).await.unwrap().unwrap();
    assert_eq!(&shown, one);
    assert!(queue.dead_letter("1-1").await.unwrap().is_none());

    fail.store(false, Ordering::SeqCst);
    assert!(queue.requeue_dead_letter(&one.id).await.unwrap());
    assert!(
        !queue.requeue_dead_letter(&one.id).await.unwrap(),
        "a letter requeues once"
    );
    wait_for("the requeued job ran", || seen.len() == 1).await;
    assert_eq!(seen.ids(), vec![one.job_id.clone()]);

    fail.store(true, Ordering::SeqCst);
    // Back to failing: everything requeued now dies again, then is purged.
    assert_eq!(queue.requeue_all_dead_letters().await.unwrap(), 6);
    eventually("dead again", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 6 }
    })
    .await;
    let counters = redis.counters(&queue).await;
    assert_eq!(
        counters.get("requeued:high").copied().unwrap_or(0)
            + counters.get("requeued:low").copied().unwrap_or(0),
        7
    );
    assert_eq!(queue.purge_dead_letters().await.unwrap(), 6);
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn jobs_of_a_worker_that_vanished_are_reclaimed_and_completed() {
    let redis = TestRedis::start();
    let queue = redis.queue("reclaim").await;
    let mut batch = queue.batch();
    for i in 0..50u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    let ids = batch.send().await.unwrap();
    // Long enough that the rescuer's own jobs (run and acknowledged at once,
    // with a heartbeat) cannot go idle that long under a stalled CPU: only
    // the vanished worker's 16 can be reclaimed, so the count is exact.
    let lease = Duration::from_secs(3);
    // The first worker claims jobs and hangs; then its task is dropped, as a
    // crashed process would vanish (heartbeat and all).
    let (_stop, doomed) = spawn_worker(
        &queue,
        fast().lease(lease).concurrency(8).prefetch(8),
        |_: Job<u32>| async {
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    until_stats("the doomed worker holds jobs", &queue, |s| {
        s.in_flight() == 16
    })
    .await;
    doomed.abort();
    let seen = Seen::default();
    let (stop, rescuer) = spawn_worker(&queue, fast().lease(lease), seen.handler::<u32>());
    until_stats("all completed", &queue, |s| s.completed() == 50).await;
    stop.cancel();
    let report = rescuer.await.unwrap();
    assert_eq!(report.reclaimed, 16);
    assert!(seen.duplicates().is_empty());
    assert!(ids.iter().all(|id| seen.count(id) == 1));
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.in_flight(), stats.waiting()),
        (50, 0, 0)
    );
    assert_eq!(
        redis.counters(&queue).await.get("reclaimed:medium"),
        Some(&16)
    );
}

/// Runs one job lasting three leases on two workers until it is finished
/// (completed, or dead-lettered after too many deliveries); returns how many
/// times it ran and whether it completed. Without a heartbeat every run is
/// reclaimed before it ends, so the job may bounce until dead-lettered.
///
/// The lease is long against a stalled CPU: with the heartbeat renewing
/// every third of it, a stall would have to last two thirds of a lease
/// (1.3 s) to let the other worker take the job.
async fn long_job_runs(heartbeat: bool) -> (u32, bool) {
    let redis = TestRedis::start();
    let queue = redis.queue("lease").await;
    queue
        .enqueue(&"long", &EnqueueOptions::new())
        .await
        .unwrap();
    let lease = Duration::from_secs(2);
    let runs = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let runs = runs.clone();
        workers.push(spawn_worker(
            &queue,
            fast().lease(lease).heartbeat(heartbeat).max_deliveries(2),
            move |_: Job<String>| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(lease * 3).await;
                    Ok(())
                }
            },
        ));
    }
    until_stats("the job finished", &queue, |s| {
        s.completed() + s.dead_letters == 1
    })
    .await;
    // Stopping a worker runs what it claimed to the end: every run counted
    // below has finished, and its outcome is written.
    for (stop, handle) in workers {
        stop.cancel();
        handle.await.unwrap();
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.in_flight(), 0);
    (runs.load(Ordering::SeqCst), stats.completed() == 1)
}

#[tokio::test]
async fn a_job_three_leases_long_runs_once_with_the_heartbeat() {
    assert_eq!(long_job_runs(true).await, (1, true));
}

#[tokio::test]
async fn without_the_heartbeat_the_same_long_job_runs_twice() {
    // The negative control: proves the test above can fail.
    let (runs, _) = long_job_runs(false).await;
    assert!(runs >= 2, "ran {runs} time(s) without a heartbeat");
}

#[tokio::test]
async fn a_poison_job_is_dead_lettered_after_exactly_max_deliveries() {
    let redis = TestRedis::start();
    let queue = redis.queue("poison").await;
    let id = queue
        .enqueue(&"hangs", &EnqueueOptions::new())
        .await
        .unwrap();
    // Each delivery hangs (as if its worker died) until the job is
    // dead-lettered; with no heartbeat the same worker reclaims it after
    // each lease, until the delivery limit. No run can end early, however
    // slow the machine: the counts below are exact.
    let hang = Gate::default();
    let held = hang.clone();
    let config = fast()
        .lease(Duration::from_millis(200))
        .heartbeat(false)
        .max_deliveries(3);
    let (stop, worker) = spawn_worker(&queue, config, move |_: Job<String>| {
        let held = held.clone();
        async move {
            held.pass().await;
            Ok(())
        }
    });
    until_stats("dead-lettered", &queue, |s| s.dead_letters == 1).await;
    hang.open();
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(hang.arrived(), 3, "ran once per delivery, up to the limit");
    let letter = &queue.dead_letters(None, 1).await.unwrap().letters[0];
    assert_eq!(letter.job_id, id);
    assert!(
        letter.error.contains("delivered 3 times"),
        "{}",
        letter.error
    );
    // Every late finish of the hung runs was fenced.
    assert_eq!(report.ownership_lost, 3);
    assert_eq!(report.completed, 0);
    assert_eq!(queue.stats().await.unwrap().in_flight(), 0);
}

#[tokio::test]
async fn entries_deleted_while_pending_are_counted_as_lost_not_hidden() {
    let redis = TestRedis::start();
    let queue = redis.queue("trimmed").await;
    for i in 0..5u32 {
        queue
            .enqueue(&i, &EnqueueOptions::new().priority(Priority::Low))
            .await
            .unwrap();
    }
    // One worker holds the five jobs (an hour-long lease and reclaim
    // interval: after its first pass it never scans the pending list again,
    // so the loss is the second worker's to find; no heartbeat touches
    // them) ...
    let hang = Gate::default();
    let held = hang.clone();
    let (hold, holder) = spawn_worker(
        &queue,
        fast()
            .lease(Duration::from_secs(3600))
            .reclaim_interval(Duration::from_secs(3600))
            .heartbeat(false),
        move |_: Job<u32>| {
            let held = held.clone();
            async move {
                held.pass().await;
                Ok(())
            }
        },
    );
    until_stats("claimed", &queue, |s| s.in_flight() == 5).await;
    // ... someone trims the stream under its feet ...
    let _: i64 = redis::cmd("XTRIM")
        .arg(queue.keys().stream(Priority::Low))
        .arg(&["MAXLEN", "0"])
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    // ... and a second worker, whose short lease lets it reclaim them, finds
    // them gone.
    let (stop, worker) = spawn_worker(
        &queue,
        fast().lease(Duration::from_millis(200)),
        |_: Job<u32>| async { Ok(()) },
    );
    eventually("loss reported", WAIT, || {
        let r = &redis;
        let q = &queue;
        async move { r.counters(q).await.get("lost:low") == Some(&5) }
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.lost, 5);
    hang.open();
    hold.cancel();
    let held = holder.await.unwrap();
    assert_eq!(
        (held.completed, held.ownership_lost),
        (0, 5),
        "the holder's late finishes were fenced"
    );
    assert_eq!(queue.stats().await.unwrap().in_flight(), 0);
}

#[tokio::test]
async fn out_of_memory_refuses_enqueues_with_a_typed_error_while_acks_go_on() {
    let redis = TestRedis::with(
        LocalRedis::builder()
            .config("maxmemory", ["8mb"])
            .config("maxmemory-policy", ["noeviction"]),
    );
    let queue = redis.queue("oom").await;
    let payload = vec![7u8; 16 * 1024];
    let mut accepted = Vec::new();
    let err = loop {
        let mut batch = queue.batch();
        for _ in 0..20 {
            batch.push(&payload, &EnqueueOptions::new()).unwrap();
        }
        match batch.send().await {
            Ok(ids) => accepted.extend(ids),
            Err(err) => break err,
        }
        assert!(accepted.len() < 10_000, "never ran out of memory");
    };
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    assert!(err.is_retryable());
    let enqueued = queue.stats().await.unwrap().enqueued() as usize;
    assert_eq!(enqueued, accepted.len(), "a refused batch adds nothing");

    // A job that fails for good while Redis is full cannot be dead-lettered
    // yet: it stays pending, then moves once memory is back.
    let raw = redis.raw().await;
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&queue, fast(), seen.handler::<Vec<u8>>());
    // The completed counter is written by the batched ack, after the handler
    // ran: wait on the counter itself.
    let total = accepted.len() as u64;
    let stats = until_stats("acks drain the queue while full", &queue, |s| {
        s.completed() >= total
    })
    .await;
    assert_eq!(stats.completed(), total);
    assert_eq!(seen.len(), accepted.len());
    assert!(
        queue
            .enqueue(&payload, &EnqueueOptions::new())
            .await
            .is_ok(),
        "memory came back"
    );
    stop.cancel();
    worker.await.unwrap();

    // Redis is full (maxmemory set below what it uses): ordinary jobs still
    // complete, but a job failing for good cannot be dead-lettered yet. It
    // stays pending, and moves once memory is back.
    let mut batch = queue.batch();
    for _ in 0..10 {
        batch.push(&vec![1u8; 100], &EnqueueOptions::new()).unwrap();
    }
    batch.push(&vec![1u8; 8], &EnqueueOptions::new()).unwrap();
    batch.send().await.unwrap();
    let set_maxmemory = |bytes: &'static str| {
        let mut raw = raw.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", bytes])
                .query_async(&mut raw)
                .await
                .unwrap();
        }
    };
    set_maxmemory("1mb").await;
    let err = queue
        .enqueue(&1u8, &EnqueueOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    let poison_ran = Arc::new(AtomicBool::new(false));
    let ran = poison_ran.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<Vec<u8>>| {
        let ran = ran.clone();
        async move {
            if job.payload().len() == 8 {
                ran.store(true, Ordering::SeqCst);
                Err(JobError::permanent("poison"))
            } else {
                Ok(())
            }
        }
    });
    let done = accepted.len() as u64 + 1 + 10;
    until_stats("the ten ordinary jobs completed while full", &queue, |s| {
        s.completed() == done
    })
    .await;
    wait_for("the poison job failed", || {
        poison_ran.load(Ordering::SeqCst)
    })
    .await;
    // Nothing to wait on for a move that must not happen: give the refused
    // move time to be tried. Neither state below can change while Redis is
    // full, so this pause can only make the check meaningful, never flaky.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.dead_letters, stats.in_flight()),
        (0, 1),
        "the refused move kept the job pending"
    );
    set_maxmemory("0").await;
    eventually("dead-lettered once memory is back", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 1 }
    })
    .await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().dead_lettered, 1);
    assert_eq!(queue.stats().await.unwrap().in_flight(), 0);
}

#[tokio::test]
async fn an_old_queue_name_with_a_custom_prefix_keeps_its_own_keys() {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("alerts").prefix("tenant-a"))
        .await;
    queue
        .enqueue(&1u8, &EnqueueOptions::new().delay(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(queue.keys(), &QueueKeys::new("tenant-a", "alerts").unwrap());
    let tenant = QueueKeys::new("tenant-a", "alerts").unwrap();
    let default = QueueKeys::new("streamq", "alerts").unwrap();
    assert_eq!(redis.len(tenant.delayed()).await, 1);
    assert_eq!(redis.len(default.delayed()).await, 0);
}

#[tokio::test]
async fn requeue_all_does_not_chase_jobs_that_fail_again_meanwhile() {
    let redis = TestRedis::start();
    let queue = redis.queue("chase").await;
    let mut batch = queue.batch();
    for i in 0..300u32 {
        batch
            .push(&i, &EnqueueOptions::new().max_attempts(1))
            .unwrap();
    }
    batch.send().await.unwrap();
    // A handler that keeps failing at once: requeued jobs die again while
    // requeue_all is still paging through the dead letters.
    let (stop, worker) = spawn_worker(&queue, fast().concurrency(64), |_: Job<u32>| async {
        Err(JobError::permanent("still broken"))
    });
    eventually("all dead", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 300 }
    })
    .await;
    // Chasing would never end: bound the call so the test fails instead.
    let moved = tokio::time::timeout(WAIT, queue.requeue_all_dead_letters())
        .await
        .expect("requeue_all kept chasing letters that died again")
        .unwrap();
    assert_eq!(moved, 300);
    eventually("all dead again", WAIT, || {
        let q = queue.clone();
        async move { q.stats().await.unwrap().dead_letters == 300 }
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_worker_started_while_redis_is_down_starts_once_it_is_back() {
    worker_started_while_redis_is_down(false).await;
}

/// The same for a worker on a thread of its own, which then runs there.
#[tokio::test]
async fn a_worker_for_its_own_thread_started_while_redis_is_down_runs_there_once_it_is_back() {
    worker_started_while_redis_is_down(true).await;
}

/// Starts a worker (on a thread of its own when `own_thread`) while Redis is
/// down, restarts Redis, and checks a job enqueued then runs once, on the
/// thread asked for.
async fn worker_started_while_redis_is_down(own_thread: bool) {
    let mut redis = TestRedis::start();
    let queue = redis.queue("late").await;
    redis.server.kill();
    let seen = Seen::default();
    let recorder = seen.clone();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let ran_on = threads.clone();
    let handler = move |job: Job<u32>| {
        ran_on
            .lock()
            .unwrap()
            .push(std::thread::current().name().map(str::to_owned));
        recorder.handler()(job)
    };
    let config = fast().own_thread(own_thread);
    let (stop, worker) = spawn_worker(&queue, config, handler);
    // A window for the worker to give up in, if it would (nothing to wait on
    // while Redis is away); the outcome that matters is asserted below.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !worker.is_finished(),
        "the worker gave up while Redis was away"
    );
    redis.server.restart().unwrap();
    let deadline = Instant::now() + WAIT;
    let id = loop {
        match queue.enqueue(&1u32, &EnqueueOptions::new()).await {
            Ok(id) => break id,
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                assert!(
                    Instant::now() < deadline,
                    "enqueue never worked once Redis was back: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for("the job ran", || seen.count(&id) == 1).await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 1);
    let expected = support::handler_thread(own_thread);
    assert_eq!(*threads.lock().unwrap(), [expected]);
}
