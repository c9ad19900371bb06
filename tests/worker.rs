//! Workers against a real Redis: priority order, the concurrency bound,
//! graceful shutdown, exactly-once in the happy path, SCRIPT FLUSH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, WorkerConfig, WorkerReport};
use support::{Gate, Seen, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats, wait_for};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn jobs_run_most_urgent_first() {
    let redis = TestRedis::start();
    let queue = redis.queue("order").await;
    let mut batch = queue.batch();
    let order = [
        Priority::Low,
        Priority::Medium,
        Priority::Critical,
        Priority::High,
    ];
    for round in 0..25u32 {
        for p in order {
            batch
                .push(&(p.as_str(), round), &EnqueueOptions::new().priority(p))
                .unwrap();
        }
    }
    batch.send().await.unwrap();

    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = ran.clone();
    let (stop, worker) = spawn_worker(
        &queue,
        WorkerConfig::new().concurrency(1).prefetch(0),
        move |job: Job<(String, u32)>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((job.priority(), job.payload().1));
                Ok(())
            }
        },
    );
    wait_for("all 100 jobs ran", || ran.lock().unwrap().len() == 100).await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 100);

    let ran = ran.lock().unwrap().clone();
    let priorities: Vec<Priority> = ran.iter().map(|(p, _)| *p).collect();
    let mut sorted = priorities.clone();
    sorted.sort();
    assert_eq!(
        priorities, sorted,
        "a lower priority ran before a higher one"
    );
    for p in Priority::ALL {
        let rounds: Vec<u32> = ran
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| *r)
            .collect();
        assert_eq!(rounds, (0..25).collect::<Vec<_>>(), "{p} jobs out of order");
    }
}

#[tokio::test]
async fn a_late_critical_job_overtakes_waiting_low_ones() {
    let redis = TestRedis::start();
    let queue = redis.queue("overtake").await;
    let mut batch = queue.batch();
    for i in 0..20u32 {
        batch
            .push(&i, &EnqueueOptions::new().priority(Priority::Low))
            .unwrap();
    }
    batch.send().await.unwrap();
    // The first low job holds the only slot until the critical job is in:
    // it arrives while low ones wait, whatever the machine's speed.
    let (first_done, ran, stop, worker) =
        logging_worker(&queue, WorkerConfig::new().concurrency(1).prefetch(0), 0);
    wait_for("the first low job runs", || first_done.arrived() == 1).await;
    let waiting = until_stats("the rest wait", &queue, |s| {
        (s.waiting(), s.in_flight()) == (19, 1)
    })
    .await;
    assert_eq!(waiting.priorities[3].waiting, 19);
    queue
        .enqueue(&999u32, &EnqueueOptions::new().priority(Priority::Critical))
        .await
        .unwrap();
    first_done.release(1);
    wait_for("all ran", || ran.lock().unwrap().len() == 21).await;
    stop.cancel();
    worker.await.unwrap();
    let ran: Vec<Priority> = ran.lock().unwrap().iter().map(|(p, _)| *p).collect();
    let critical_at = ran.iter().position(|p| *p == Priority::Critical).unwrap();
    // Concurrency 1, no prefetch: only the low job running when it arrived
    // may start before it.
    assert_eq!(critical_at, 1, "critical job ran at {critical_at}: {ran:?}");
}

/// Each job's (priority, payload) in the order handlers started.
type StartLog = Arc<Mutex<Vec<(Priority, u32)>>>;

/// A worker whose handler logs each start, and holds the job whose payload
/// is `gated` at the returned gate.
fn logging_worker(
    queue: &Queue,
    config: WorkerConfig,
    gated: u32,
) -> (Gate, StartLog, CancellationToken, JoinHandle<WorkerReport>) {
    let first_done = Gate::default();
    let gate = first_done.clone();
    let ran = StartLog::default();
    let log = ran.clone();
    let (stop, worker) = spawn_worker(queue, config, move |job: Job<u32>| {
        let (log, gate) = (log.clone(), gate.clone());
        async move {
            log.lock().unwrap().push((job.priority(), *job.payload()));
            if *job.payload() == gated {
                gate.pass().await;
            }
            Ok(())
        }
    });
    (first_done, ran, stop, worker)
}

#[tokio::test]
async fn the_concurrency_limit_holds_and_is_reached() {
    let redis = TestRedis::start();
    let queue = redis.queue("bounded").await;
    let mut batch = queue.batch();
    for i in 0..200u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();

    // The first jobs hold their slots until the limit is reached and the
    // prefetched jobs are claimed beside them: reaching the limit does not
    // depend on scheduling, and a worker running more than 7 would show it.
    let hold = Gate::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p, gate) = (running.clone(), peak.clone(), hold.clone());
    let (stop, worker) = spawn_worker(
        &queue,
        WorkerConfig::new().concurrency(7).prefetch(5),
        move |_job: Job<u32>| {
            let (running, peak, gate) = (r.clone(), p.clone(), gate.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                gate.pass().await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        },
    );
    wait_for("seven running", || peak.load(Ordering::SeqCst) >= 7).await;
    until_stats("running and prefetched jobs claimed", &queue, |s| {
        s.in_flight() == 12
    })
    .await;
    hold.open();
    until_stats("queue drained", &queue, |s| s.completed() == 200).await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 200);
    assert_eq!(peak.load(Ordering::SeqCst), 7, "peak concurrency");
}

#[tokio::test]
async fn graceful_shutdown_under_load_loses_nothing_and_runs_nothing_twice() {
    graceful_shutdown_under_load(WorkerConfig::new()).await;
}

#[tokio::test]
async fn a_worker_on_a_thread_of_its_own_shuts_down_under_load_losing_nothing() {
    graceful_shutdown_under_load(WorkerConfig::new().own_thread(true)).await;
}

/// Dropping the future of a worker on a thread of its own shuts it down
/// there as cancelling its token does: jobs claimed but not started go back
/// at once, running ones finish and are acknowledged, and the consumer
/// leaves the group.
#[tokio::test]
async fn dropping_a_worker_on_a_thread_of_its_own_shuts_it_down_gracefully() {
    let redis = TestRedis::start();
    let queue = redis.queue("dropped").await;
    let mut batch = queue.batch();
    for i in 0..30u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let starts = started.clone();
    let config = WorkerConfig::new()
        .own_thread(true)
        .concurrency(4)
        .prefetch(4);
    let worker = streamq::Worker::new(&queue, config).unwrap();
    // Each job runs until the worker shuts down.
    let run = tokio::spawn(worker.run(
        move |job: Job<u32>| {
            starts.fetch_add(1, Ordering::SeqCst);
            async move {
                job.stopped().await;
                Ok::<(), JobError>(())
            }
        },
        CancellationToken::new(),
    ));
    wait_for("four jobs are running", || {
        started.load(Ordering::SeqCst) == 4
    })
    .await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let thresholds = streamq::HealthThresholds::default();
    eventually("the worker left the group", WAIT, || {
        let queue = queue.clone();
        async move {
            queue
                .inspect(&thresholds)
                .await
                .unwrap()
                .consumers
                .is_empty()
        }
    })
    .await;
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        started.load(Ordering::SeqCst),
        4,
        "a job started after the drop"
    );
    assert_eq!(
        (stats.completed(), stats.waiting(), stats.in_flight()),
        (4, 26, 0)
    );
}

/// Runs a worker set up by `config` while a producer adds 2,000 jobs,
/// stops it midway and starts another: every job runs exactly once.
async fn graceful_shutdown_under_load(config: WorkerConfig) {
    let redis = TestRedis::start();
    let queue = redis.queue("shutdown").await;
    let enqueued = Arc::new(Mutex::new(Vec::new()));

    // A producer that keeps going while the worker is stopped.
    let producer_queue = queue.clone();
    let producer_log = enqueued.clone();
    let producer = tokio::spawn(async move {
        for round in 0..40u32 {
            let mut batch = producer_queue.batch();
            for i in 0..50u32 {
                let p = Priority::ALL[(i % 4) as usize];
                batch
                    .push(&(round * 50 + i), &EnqueueOptions::new().priority(p))
                    .unwrap();
            }
            let ids = batch.send().await.unwrap();
            producer_log.lock().unwrap().extend(ids);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let seen = Seen::default();
    let handler = |seen: Seen| {
        move |job: Job<u32>| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(u64::from(*job.payload() % 3))).await;
                seen.record(job.id());
                Ok(())
            }
        }
    };
    let (stop, worker) = spawn_worker(
        &queue,
        config.clone().concurrency(16),
        handler(seen.clone()),
    );
    wait_for("the worker is busy", || seen.len() > 300).await;
    stop.cancel();
    let first = worker.await.unwrap();
    assert_eq!(
        first.completed as usize,
        seen.len(),
        "every job run was acknowledged"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        stats.in_flight(),
        0,
        "shutdown left claimed jobs unfinished"
    );

    producer.await.unwrap();
    let (stop, worker) = spawn_worker(&queue, config.concurrency(16), handler(seen.clone()));
    wait_for("the rest drained", || seen.len() == 2000).await;
    stop.cancel();
    worker.await.unwrap();

    assert!(
        seen.duplicates().is_empty(),
        "ran twice: {:?}",
        seen.duplicates()
    );
    let mut ran = seen.ids();
    let mut sent = enqueued.lock().unwrap().clone();
    ran.sort();
    sent.sort();
    assert_eq!(ran, sent);
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.waiting(), stats.in_flight()),
        (2000, 0, 0)
    );
    for p in &stats.priorities {
        assert_eq!(p.length, 0, "{} stream not emptied", p.priority);
    }
}

#[tokio::test]
async fn a_hundred_thousand_jobs_run_exactly_once() {
    let redis = TestRedis::start();
    let queue = redis.queue("bulk").await;
    let seen = Arc::new(
        (0..100_000)
            .map(|_| std::sync::atomic::AtomicU8::new(0))
            .collect::<Vec<_>>(),
    );
    let mut workers = Vec::new();
    for _ in 0..2 {
        let seen = seen.clone();
        workers.push(spawn_worker(
            &queue,
            WorkerConfig::new().concurrency(64).prefetch(64),
            move |job: Job<u32>| {
                let seen = seen.clone();
                async move {
                    seen[*job.payload() as usize].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
        ));
    }
    for chunk in 0..100u32 {
        let mut batch = queue.batch();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            let p = Priority::ALL[(i % 4) as usize];
            batch.push(&i, &EnqueueOptions::new().priority(p)).unwrap();
        }
        batch.send().await.unwrap();
    }
    // A failsafe against a hang, not a speed bound: generous for a loaded
    // machine.
    eventually("all processed", WAIT * 5, || {
        let queue = queue.clone();
        async move { queue.stats().await.unwrap().completed() == 100_000 }
    })
    .await;
    let mut completed = 0;
    for (stop, handle) in workers {
        stop.cancel();
        completed += handle.await.unwrap().completed;
    }
    assert_eq!(completed, 100_000);
    let counts: Vec<u8> = seen.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let wrong: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} jobs not run exactly once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let stats = queue.stats().await.unwrap();
    for p in &stats.priorities {
        assert_eq!(
            (p.enqueued, p.completed, p.length),
            (25_000, 25_000, 0),
            "{}",
            p.priority
        );
    }
}

#[tokio::test]
async fn script_flush_under_load_surfaces_no_error_and_loses_nothing() {
    let redis = TestRedis::start();
    let queue = redis.queue("flush").await;
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(
        &queue,
        WorkerConfig::new().concurrency(8),
        seen.handler::<u32>(),
    );
    let flusher_done = CancellationToken::new();
    let flushes = Arc::new(AtomicU32::new(0));
    let flusher = {
        let (done, flushes) = (flusher_done.clone(), flushes.clone());
        let mut raw = redis.raw().await;
        tokio::spawn(async move {
            while !done.is_cancelled() {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                flushes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut sent = Vec::new();
    for round in 0..60u32 {
        // At least one flush between rounds, however the tasks are
        // scheduled: enqueues and the worker keep meeting NOSCRIPT.
        let before = flushes.load(Ordering::SeqCst);
        wait_for("a flush between rounds", || {
            flushes.load(Ordering::SeqCst) > before
        })
        .await;
        // Mix single enqueues, one-call batches and multi-call pipelined batches.
        sent.push(queue.enqueue(&round, &EnqueueOptions::new()).await.unwrap());
        let mut batch = queue.batch();
        let size = if round % 10 == 0 { 2500 } else { 20 };
        for i in 0..size {
            batch
                .push(
                    &i,
                    &EnqueueOptions::new().priority(Priority::ALL[(i % 4) as usize]),
                )
                .unwrap();
        }
        sent.extend(batch.send().await.unwrap());
    }
    let total = sent.len();
    wait_for("all processed", || seen.len() == total).await;
    flusher_done.cancel();
    flusher.await.unwrap();
    let flushes = flushes.load(Ordering::SeqCst);
    assert!(flushes > 10, "only {flushes} flushes happened");
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.completed as usize, total);
    assert!(seen.duplicates().is_empty());
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.completed() as usize, stats.in_flight()), (total, 0));
}

#[tokio::test]
async fn a_failing_or_undecodable_job_is_dead_lettered_with_its_error() {
    let redis = TestRedis::start();
    let queue = redis.queue("fail").await;
    queue
        .enqueue(&"boom", &EnqueueOptions::new().max_attempts(1))
        .await
        .unwrap();
    queue.enqueue(&42u32, &EnqueueOptions::new()).await.unwrap();
    let (stop, worker) = spawn_worker(&queue, WorkerConfig::new(), |job: Job<String>| async move {
        Err(JobError::permanent(format!(
            "cannot handle {}",
            job.payload()
        )))
    });
    until_stats("both dead-lettered", &queue, |s| s.dead_letters == 2).await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!((report.completed, report.dead_lettered), (0, 2));
    let mut raw = redis.raw().await;
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(queue.keys().dead())
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let errors: Vec<String> = dead
        .ids
        .iter()
        .map(|e| e.get::<String>("error").unwrap())
        .collect();
    assert!(
        errors.contains(&"cannot handle boom".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("undecodable payload")),
        "{errors:?}"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.in_flight(), stats.waiting()), (0, 0));
}

#[tokio::test]
async fn buffered_jobs_start_as_slots_free_without_waiting_for_new_work() {
    let redis = TestRedis::start();
    let queue = redis.queue("buffered").await;
    // Every idle wait and upkeep tick is ten minutes long, far beyond WAIT:
    // if buffered jobs had to wait for one, this test would time out.
    let slow = Duration::from_secs(600);
    let config = WorkerConfig::new()
        .concurrency(1)
        .prefetch(8)
        .block(slow)
        .promote_interval(slow)
        .reclaim_interval(slow);
    let seen = Seen::default();
    let recorder = seen.clone();
    let (stop, worker) = spawn_worker(&queue, config, move |job: Job<u32>| {
        let seen = recorder.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.record(job.id());
            Ok(())
        }
    });
    // Wait until the worker is in its idle wait (its blocking read), then
    // give it one burst.
    eventually("the worker blocks for new work", WAIT, || {
        let r = &redis;
        async move { r.info("clients").await["blocked_clients"] == "1" }
    })
    .await;
    let mut batch = queue.batch();
    for i in 0..9u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    wait_for("the whole burst ran", || seen.len() == 9).await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 9);
}

/// Each priority's stream numbers its entries itself, so a batch enqueued
/// within a millisecond puts entries of the same id in several streams. A
/// worker holding two of them keeps both leases: finishing one must not
/// stop the heartbeat of the other (it did, when the worker's holdings were
/// keyed by entry id alone, and the other was reclaimed and ran twice).
#[tokio::test]
async fn same_entry_ids_in_two_priorities_keep_both_leases() {
    let redis = TestRedis::start();
    let queue = redis.queue("twins").await;
    let mut batch = queue.batch();
    for i in 0..100u32 {
        batch
            .push(&i, &EnqueueOptions::new().priority(Priority::Critical))
            .unwrap();
        batch
            .push(&i, &EnqueueOptions::new().priority(Priority::High))
            .unwrap();
    }
    batch.send().await.unwrap();
    let ids = |priority: Priority| {
        let key = queue.keys().stream(priority).to_owned();
        let redis = &redis;
        async move {
            let entries: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(&mut redis.raw().await)
                .await
                .unwrap();
            entries
                .into_iter()
                .map(|(id, _)| id)
                .collect::<HashSet<String>>()
        }
    };
    let twins = ids(Priority::Critical)
        .await
        .intersection(&ids(Priority::High).await)
        .count();
    assert!(twins > 0, "the batch should give both streams the same ids");

    // Critical jobs finish at once; high ones wait, held, past one lease.
    let lease = Duration::from_millis(900);
    let gate = Gate::default();
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&queue, fast().concurrency(200).prefetch(0).lease(lease), {
        let (gate, seen) = (gate.clone(), seen.clone());
        move |job: Job<u32>| {
            seen.record(job.id());
            let (gate, high) = (gate.clone(), job.priority() == Priority::High);
            async move {
                if high {
                    gate.pass().await;
                }
                Ok(())
            }
        }
    });
    until_stats("the critical jobs done", &queue, |s| s.completed() == 100).await;
    let acked = std::time::Instant::now();
    // Every held high job's lease is renewed after the acks of its twins.
    let high = queue.keys().stream(Priority::High).to_owned();
    eventually("every high job renewed since the acks", WAIT, || {
        let (redis, high) = (&redis, high.clone());
        async move {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(high)
                .arg("streamq")
                .arg("-")
                .arg("+")
                .arg(200)
                .query_async(&mut redis.raw().await)
                .await
                .unwrap();
            let since_ack = acked.elapsed().as_millis() as u64;
            // Renewed, not reclaimed: a reclaim resets the idle time too,
            // but counts a second delivery.
            pending.len() == 100
                && pending
                    .iter()
                    .all(|(_, _, idle, deliveries)| *idle < since_ack && *deliveries == 1)
        }
    })
    .await;
    gate.open();
    until_stats("all done", &queue, |s| s.completed() == 200).await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!((report.completed, report.reclaimed), (200, 0));
    assert!(seen.duplicates().is_empty());
}

/// Clients blocked in a read: idle workers waiting for jobs.
async fn blocked_clients(redis: &TestRedis) -> u64 {
    redis.info("clients").await["blocked_clients"]
        .parse()
        .unwrap()
}

/// Idle workers wait by claiming in a blocking `XREADGROUP`, which Redis
/// serves to one of them: a job arriving at an idle pool wakes one worker
/// and costs three script calls (enqueue, the fetch riding on the claim,
/// ack), not a peek and a fetch by every idle worker.
#[tokio::test]
async fn a_job_arriving_at_idle_workers_wakes_only_one() {
    const WORKERS: u64 = 4;
    const JOBS: usize = 20;
    let redis = TestRedis::start();
    let queue = redis.queue("idle-pool").await;
    // No upkeep during the test: every call counted is the jobs' own.
    let quiet = WorkerConfig::new()
        .promote_interval(Duration::from_secs(600))
        .reclaim_interval(Duration::from_secs(600))
        .block(Duration::from_secs(600));
    let seen = Seen::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| spawn_worker(&queue, quiet.clone(), seen.handler::<usize>()))
        .collect();
    eventually("every worker blocked", WAIT, || async {
        blocked_clients(&redis).await == WORKERS
    })
    .await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    for i in 0..JOBS {
        queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap();
        wait_for("the job ran", || seen.len() == i + 1).await;
        eventually("every worker blocked again", WAIT, || async {
            blocked_clients(&redis).await == WORKERS
        })
        .await;
    }
    let scripts = redis.script_calls().await;
    assert_eq!(
        redis.command_calls("xread").await,
        0,
        "an idle worker peeked"
    );
    // Per job its enqueue and its ack, and no `fetch`: the woken worker
    // claims the rest of its room outside the script, in the same round
    // trip. Slack for a lease renewal per worker on a slow machine.
    assert!(
        scripts <= 2 * JOBS as u64 + WORKERS,
        "{scripts} script calls for {JOBS} jobs: idle workers fetched"
    );
    for (stop, _) in &workers {
        stop.cancel();
    }
    let mut completed = 0;
    for (_, worker) in workers {
        completed += worker.await.unwrap().completed;
    }
    assert_eq!(completed, JOBS as u64);
    assert!(seen.duplicates().is_empty());
    // Shutdown ended the blocked reads (instead of dropping them).
    assert_eq!(redis.command_calls("client|unblock").await, WORKERS);
}

/// Pauses `queue` and adds one job to it in one step (a script), so that a
/// worker blocked in its read can only see both at once: whether its read
/// is served or times out first, it claims the job and learns of the pause
/// in the same round trip. (Pausing, then enqueueing, races with the read
/// timing out in between.)
async fn pause_and_add(redis: &TestRedis, queue: &Queue, payload: u8) {
    let scratch = redis.queue(&format!("{}-scratch", queue.name())).await;
    scratch
        .enqueue(&payload, &EnqueueOptions::new())
        .await
        .unwrap();
    let mut raw = redis.raw().await;
    let from = scratch.keys().stream(Priority::Medium).to_owned();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&from)
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let envelope: Vec<u8> = entries.ids[0].get("e").unwrap();
    let _: redis::Value = redis::cmd("DEL")
        .arg(&from)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: String = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])")
        .arg(2)
        .arg(queue.keys().paused())
        .arg(queue.keys().stream(Priority::Medium))
        .arg(1)
        .arg(envelope)
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// A job an idle worker's blocking read claims as the queue is paused does
/// not start until the queue is resumed; stopped meanwhile, the worker hands
/// it back.
#[tokio::test]
async fn a_job_claimed_by_an_idle_worker_as_the_queue_pauses_waits_for_resume() {
    let redis = TestRedis::start();
    let queue = redis.queue("pausing").await;
    let seen = Seen::default();
    let quiet = fast().block(Duration::from_secs(600));
    for round in 0..2u8 {
        let (stop, worker) = spawn_worker(&queue, quiet.clone(), seen.handler::<u8>());
        eventually("the worker blocked", WAIT, || async {
            blocked_clients(&redis).await == 1
        })
        .await;
        pause_and_add(&redis, &queue, round).await;
        until_stats("the blocked read claimed it", &queue, |s| {
            s.in_flight() == 1
        })
        .await;
        let polled = redis.script_calls().await;
        eventually("the worker polled the paused queue", WAIT, || {
            let r = &redis;
            async move { r.script_calls().await >= polled + 20 }
        })
        .await;
        assert_eq!(seen.len(), usize::from(round), "a job started while paused");
        if round == 0 {
            queue.resume().await.unwrap();
            wait_for("resumed, the held job ran", || seen.len() == 1).await;
            stop.cancel();
            let report = worker.await.unwrap();
            assert_eq!((report.completed, report.released), (1, 0));
        } else {
            stop.cancel();
            let report = worker.await.unwrap();
            assert_eq!((report.completed, report.released), (0, 1));
            let stats = queue.stats().await.unwrap();
            assert_eq!((stats.waiting(), stats.in_flight()), (1, 0), "handed back");
        }
    }
    queue.resume().await.unwrap();
    let (stop, worker) = spawn_worker(&queue, fast(), seen.handler::<u8>());
    wait_for("the handed-back job ran", || seen.len() == 2).await;
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 1);
    assert!(seen.duplicates().is_empty());
}

/// A burst of mixed priorities reaching a worker that waits in a blocking
/// read (one slot busy, one free) starts most urgent first: the read may
/// claim a low job, but it starts only once no critical one waits.
#[tokio::test]
async fn a_burst_reaching_a_waiting_worker_starts_most_urgent_first() {
    let redis = TestRedis::start();
    let queue = redis.queue("burst").await;
    let (first_done, ran, stop, worker) =
        logging_worker(&queue, WorkerConfig::new().concurrency(1).prefetch(1), 999);
    queue
        .enqueue(&999u32, &EnqueueOptions::new().priority(Priority::Medium))
        .await
        .unwrap();
    wait_for("the first job runs", || first_done.arrived() == 1).await;
    eventually("the worker waits in a blocking read", WAIT, || async {
        blocked_clients(&redis).await == 1
    })
    .await;
    // Low ones first in the call, so Redis signals the low stream first.
    let mut batch = queue.batch();
    for p in [Priority::Low, Priority::Critical] {
        for i in 0..10u32 {
            batch.push(&i, &EnqueueOptions::new().priority(p)).unwrap();
        }
    }
    batch.send().await.unwrap();
    first_done.release(1);
    wait_for("all ran", || ran.lock().unwrap().len() == 21).await;
    stop.cancel();
    worker.await.unwrap();
    let ran = ran.lock().unwrap().clone();
    let mut expected = vec![(Priority::Medium, 999)];
    expected.extend((0..10).map(|i| (Priority::Critical, i)));
    expected.extend((0..10).map(|i| (Priority::Low, i)));
    assert_eq!(ran, expected, "start order");
}

#[tokio::test]
async fn a_busy_worker_claims_its_backlog_outside_the_script_most_urgent_first() {
    let redis = TestRedis::start();
    let queue = redis.queue("native").await;
    let mut raw = redis.raw().await;
    // Every command is logged, those run by scripts too. `fetch.lua` reads
    // one stream per `XREADGROUP` and the idle claim blocks: a claim outside
    // the script is the one that reads several streams without `BLOCK`.
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "100000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let mut batch = queue.batch();
    for i in 0..100u32 {
        batch
            .push(&(1000 + i), &EnqueueOptions::new().priority(Priority::Low))
            .unwrap();
    }
    for i in 0..100u32 {
        batch
            .push(&i, &EnqueueOptions::new().priority(Priority::High))
            .unwrap();
    }
    batch.send().await.unwrap();
    // Job 5 holds one slot at its gate while the other works through the
    // high backlog; a critical job arrives meanwhile.
    let config = WorkerConfig::new().concurrency(2).prefetch(2);
    let (gate, ran, stop, worker) = logging_worker(&queue, config, 5);
    wait_for("the gated job runs", || gate.arrived() == 1).await;
    queue
        .enqueue(&500u32, &EnqueueOptions::new().priority(Priority::Critical))
        .await
        .unwrap();
    let started_before = ran.lock().unwrap().len();
    gate.open();
    wait_for("all ran", || ran.lock().unwrap().len() == 201).await;
    stop.cancel();
    worker.await.unwrap();

    let ran = ran.lock().unwrap().clone();
    let position = |p: Priority| ran.iter().position(|(q, _)| *q == p).unwrap();
    let first_low = position(Priority::Low);
    assert!(
        ran[..first_low]
            .iter()
            .filter(|(p, _)| *p == Priority::High)
            .count()
            == 100,
        "every high job started before the first low one: {ran:?}"
    );
    // Claimed before it arrived, at most: the four the worker held and one
    // claim's worth in flight.
    let critical = position(Priority::Critical);
    assert!(
        critical <= started_before + 8,
        "the critical job started {critical}th, {started_before} had started when it came"
    );
    assert!(critical < first_low);

    let log: Vec<Vec<Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(100_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    let native_claims = log
        .iter()
        .filter_map(|entry| match entry.get(3) {
            Some(Value::Array(args)) => Some(args),
            _ => None,
        })
        .filter(|args| {
            let words: Vec<String> = args
                .iter()
                .filter_map(|a| redis::from_redis_value::<String>(a.clone()).ok())
                .collect();
            words
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("xreadgroup"))
                && !words.iter().any(|w| w.eq_ignore_ascii_case("block"))
                && words
                    .iter()
                    .filter(|w| w.starts_with("streamq:{native}:"))
                    .count()
                    > 1
        })
        .count();
    assert!(native_claims > 0, "no claim outside the script");
}

/// Connections Redis has open now, and how many of them wait in a blocking
/// read, asked over `admin` (a connection of the test's own opened
/// meanwhile would be counted too).
async fn clients(admin: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let text: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(admin)
        .await
        .unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    };
    (field("connected_clients"), field("blocked_clients"))
}

/// A worker claims and acknowledges over a connection of its own, beside its
/// blocking read's: redis-rs reads each connection's replies in one task,
/// which, shared by every worker of a process, held them back.
#[tokio::test]
async fn a_worker_claims_and_acks_over_a_connection_of_its_own() {
    let (connections, blocked, report) = twenty_jobs_through_a_worker(false, false).await;
    assert_eq!((connections, blocked), (2, 1));
    assert_eq!(report.completed, 20);
}

/// A worker on a thread of its own runs its handlers there and connects
/// from there, with no more connections than a worker on the caller's
/// runtime (the one it reopens its queue over serves its claims and acks).
#[tokio::test]
async fn a_worker_on_a_thread_of_its_own_runs_its_jobs_there() {
    let (connections, blocked, report) = twenty_jobs_through_a_worker(true, false).await;
    assert_eq!((connections, blocked), (2, 1));
    assert_eq!(report.completed, 20);
}

/// When Redis takes no more connections, a worker shares its queue's, and
/// its jobs still run.
#[tokio::test]
async fn a_worker_shares_the_queues_connection_when_redis_takes_no_more() {
    let (connections, _, report) = twenty_jobs_through_a_worker(false, true).await;
    assert_eq!(connections, 0);
    assert_eq!(report.completed, 20);
}

/// When Redis takes no more connections, a worker set to run on a thread of
/// its own runs on the caller's runtime instead, and its jobs still run.
#[tokio::test]
async fn a_worker_for_its_own_thread_runs_on_the_callers_when_redis_takes_no_more() {
    let (connections, _, report) = twenty_jobs_through_a_worker(true, true).await;
    assert_eq!(connections, 0);
    assert_eq!(report.completed, 20);
}

/// Runs 20 jobs through one worker, on a thread of its own when
/// `own_thread`, with Redis at `maxclients` when `full`; returns the
/// connections the worker added once its jobs had run (and it was waiting
/// for more when it could), the clients blocked then, and its report.
/// Checks that the handlers ran on the worker's own thread when it has one
/// and on the test's otherwise.
async fn twenty_jobs_through_a_worker(own_thread: bool, full: bool) -> (u64, u64, WorkerReport) {
    let redis = TestRedis::start();
    let mut admin = redis.raw().await;
    let queue = redis.queue("own-connection").await;
    let mut batch = queue.batch();
    for i in 0..20u32 {
        batch.push(&i, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();
    let (before, _) = clients(&mut admin).await;
    if full {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(before)
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
    }
    let seen = Seen::default();
    let recorder = seen.clone();
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let ran_on = threads.clone();
    let config = WorkerConfig::new().own_thread(own_thread);
    let (stop, worker) = spawn_worker(&queue, config, move |job: Job<u32>| {
        let seen = recorder.clone();
        let thread = std::thread::current().name().map(str::to_owned);
        ran_on.lock().unwrap().insert(thread);
        async move {
            seen.record(job.id());
            Ok(())
        }
    });
    wait_for("every job ran", || seen.len() == 20).await;
    let threads = threads.lock().unwrap().clone();
    let expected = support::handler_thread(own_thread && !full);
    assert_eq!(threads, HashSet::from([expected]));
    let mut now = clients(&mut admin).await;
    if !full {
        // Its blocking read comes last, once it is idle.
        let deadline = tokio::time::Instant::now() + WAIT;
        while now.1 == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            now = clients(&mut admin).await;
        }
    }
    stop.cancel();
    let report = worker.await.unwrap();
    assert!(seen.duplicates().is_empty());
    (now.0 - before, now.1, report)
}
