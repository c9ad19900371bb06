//! A job's life beyond one run, against a real Redis: graceful shutdown
//! that hands unfinished jobs back at once, and results kept, read and
//! awaited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamq::{EnqueueOptions, Job, JobError, KeepResults, Queue, Worker, WorkerConfig};
use support::{
    Gate, Seen, TestRedis, WAIT, fast, spawn_worker, until_metrics, until_stats, wait_for,
};
use tokio_util::sync::CancellationToken;

/// A lease no test outlives: a job can then only reach another worker by
/// being handed back, never by being reclaimed.
const NO_RECLAIM: Duration = Duration::from_secs(3600);

fn no_reclaim() -> WorkerConfig {
    fast().lease(NO_RECLAIM)
}

#[tokio::test]
async fn a_stopping_worker_hands_back_the_jobs_it_did_not_start_at_once() {
    let redis = TestRedis::start();
    let queue = redis.queue("handback").await;
    let mut ids = Vec::new();
    for i in 0..10u32 {
        ids.push(queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap());
    }
    let gate = Gate::default();
    let first_ran = Seen::default();
    let (stop_a, worker_a) = {
        let (gate, seen) = (gate.clone(), first_ran.clone());
        spawn_worker(
            &queue,
            no_reclaim()
                .concurrency(1)
                .prefetch(9)
                .shutdown_grace(NO_RECLAIM),
            move |job: Job<u32>| {
                let (gate, seen) = (gate.clone(), seen.clone());
                async move {
                    seen.record(job.id());
                    gate.pass().await;
                    Ok(())
                }
            },
        )
    };
    until_stats("worker A holds all ten jobs", &queue, |s| {
        s.in_flight() == 10
    })
    .await;
    wait_for("worker A runs one", || gate.arrived() == 1).await;

    stop_a.cancel();
    let seen_b = Seen::default();
    let (stop_b, worker_b) = spawn_worker(&queue, no_reclaim(), seen_b.handler::<u32>());
    // With hour-long leases, worker B can only get these jobs if A handed
    // them back; A is still running its first job meanwhile.
    wait_for("worker B ran the nine handed back", || seen_b.len() == 9).await;
    assert!(!worker_a.is_finished(), "A waits for its running job");
    gate.open();
    let report_a = worker_a.await.unwrap();
    assert_eq!((report_a.completed, report_a.released), (1, 9));
    stop_b.cancel();
    assert_eq!(worker_b.await.unwrap().completed, 9);

    let mut ran: Vec<_> = first_ran.ids().into_iter().chain(seen_b.ids()).collect();
    ran.sort();
    ids.sort();
    assert_eq!(ran, ids, "every job ran once, on one worker or the other");
    let metrics = queue.metrics().await.unwrap().total();
    assert_eq!(
        (metrics.completed, metrics.released, metrics.failed),
        (10, 9, 0)
    );
    assert_eq!(queue.stats().await.unwrap().in_flight(), 0);
}

#[tokio::test]
async fn jobs_still_running_when_the_grace_period_ends_are_handed_back() {
    let redis = TestRedis::start();
    let queue = redis.queue("grace").await;
    let id = queue
        .enqueue(&"slow", &EnqueueOptions::new())
        .await
        .unwrap();
    let stuck = Gate::default();
    let (stop_a, worker_a) = {
        let stuck = stuck.clone();
        spawn_worker(
            &queue,
            no_reclaim().shutdown_grace(Duration::from_millis(200)),
            move |_job: Job<String>| {
                let stuck = stuck.clone();
                async move {
                    // Never let through: this handler ignores the stop signal.
                    stuck.pass().await;
                    Ok(())
                }
            },
        )
    };
    wait_for("worker A runs the job", || stuck.arrived() == 1).await;
    stop_a.cancel();
    let report_a = worker_a.await.unwrap();
    assert_eq!((report_a.completed, report_a.released), (0, 1));

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (stop_b, worker_b) = {
        let attempts = attempts.clone();
        spawn_worker(&queue, no_reclaim(), move |job: Job<String>| {
            attempts
                .lock()
                .unwrap()
                .push((job.id().clone(), job.attempt()));
            std::future::ready(Ok(()))
        })
    };
    until_stats("worker B completed it", &queue, |s| s.completed() == 1).await;
    stop_b.cancel();
    worker_b.await.unwrap();
    assert_eq!(
        *attempts.lock().unwrap(),
        [(id, 1)],
        "handed back as it was: the dropped run spent no attempt"
    );
    let metrics = queue.metrics().await.unwrap().total();
    assert_eq!(
        (metrics.released, metrics.failed, metrics.retried),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn a_handler_that_stops_when_asked_hands_its_job_back_without_spending_an_attempt() {
    let redis = TestRedis::start();
    let queue = redis.queue("polite").await;
    queue
        .enqueue(&"long", &EnqueueOptions::new())
        .await
        .unwrap();
    let started = Gate::default();
    let (stop_a, worker_a) = {
        let started = started.clone();
        spawn_worker(
            &queue,
            no_reclaim().shutdown_grace(NO_RECLAIM),
            move |job: Job<String>| {
                let started = started.clone();
                async move {
                    started.open();
                    job.stopped().await;
                    assert!(job.is_stopping());
                    Err(JobError::retry("stopped for shutdown"))
                }
            },
        )
    };
    started.pass().await;
    stop_a.cancel();
    let report_a = worker_a.await.unwrap();
    assert_eq!(
        (report_a.released, report_a.retried, report_a.dead_lettered),
        (1, 0, 0)
    );
    let seen = Seen::default();
    let (stop_b, worker_b) = {
        let seen = seen.clone();
        spawn_worker(&queue, no_reclaim(), move |job: Job<String>| {
            assert_eq!(job.attempt(), 1, "no attempt was spent");
            seen.record(job.id());
            std::future::ready(Ok(()))
        })
    };
    wait_for("worker B ran it", || seen.len() == 1).await;
    stop_b.cancel();
    assert_eq!(worker_b.await.unwrap().completed, 1);
    let metrics = until_metrics("the counters", &queue, |m| m.total().completed == 1).await;
    assert_eq!((metrics.total().failed, metrics.total().released), (0, 1));
}

/// Runs a worker whose handler returns a value, on its own task.
fn spawn_with_results<R, F, Fut>(
    queue: &Queue,
    handler: F,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<streamq::WorkerReport>,
)
where
    R: serde::Serialize + Send + 'static,
    F: Fn(Job<String>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, JobError>> + Send,
{
    let stop = CancellationToken::new();
    let worker = Worker::new(queue, fast()).unwrap();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run(handler, token).await.unwrap() });
    (stop, handle)
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Outcome {
    success: bool,
    event_id: String,
}

#[tokio::test]
async fn results_are_kept_read_by_id_and_awaited() {
    let redis = TestRedis::start();
    let ttl = Duration::from_secs(600);
    let queue = redis
        .open(Queue::builder("results").keep_results(KeepResults::default().ttl(ttl)))
        .await;
    let id = queue
        .enqueue(&"evt-7", &EnqueueOptions::new())
        .await
        .unwrap();
    assert_eq!(queue.job_result::<Outcome>(&id).await.unwrap(), None);

    let (stop, worker) = spawn_with_results(&queue, |job: Job<String>| async move {
        Ok(Outcome {
            success: true,
            event_id: job.payload().clone(),
        })
    });
    let result = queue.wait_for_result::<Outcome>(&id, WAIT).await.unwrap();
    assert_eq!(
        result,
        Some(Outcome {
            success: true,
            event_id: "evt-7".to_owned()
        })
    );
    stop.cancel();
    assert_eq!(worker.await.unwrap().completed, 1);

    let pttl: i64 = redis::cmd("PTTL")
        .arg(queue.keys().result(id.as_str()))
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 600_000, "kept for the ttl: {pttl}");
    let wrong_type = queue.job_result::<u64>(&id).await;
    assert!(
        matches!(wrong_type, Err(streamq::Error::Decode(_))),
        "{wrong_type:?}"
    );
}

#[tokio::test]
async fn results_are_kept_only_when_asked_and_within_the_size_limit() {
    let redis = TestRedis::start();
    let small = redis
        .open(Queue::builder("small").keep_results(KeepResults::default().max_bytes(16)))
        .await;
    let plain = redis.queue("plain").await;
    let unit = redis
        .open(Queue::builder("unit").keep_results(KeepResults::default()))
        .await;
    let big = small.enqueue(&"x", &EnqueueOptions::new()).await.unwrap();
    let fits = small.enqueue(&"y", &EnqueueOptions::new()).await.unwrap();
    let unkept = plain.enqueue(&"z", &EnqueueOptions::new()).await.unwrap();
    let nothing = unit.enqueue(&"w", &EnqueueOptions::new()).await.unwrap();

    let (stop_small, worker_small) = spawn_with_results(&small, |job: Job<String>| async move {
        Ok(if job.payload() == "x" {
            "a".repeat(100)
        } else {
            "ok".to_owned()
        })
    });
    let (stop_plain, worker_plain) =
        spawn_with_results(&plain, |_job: Job<String>| async move { Ok("kept?") });
    let (stop_unit, worker_unit) =
        spawn_with_results(&unit, |_job: Job<String>| async move { Ok(()) });
    for queue in [&small, &plain, &unit] {
        until_stats("the jobs completed", queue, |s| {
            s.waiting() == 0 && s.in_flight() == 0
        })
        .await;
    }
    for stop in [stop_small, stop_plain, stop_unit] {
        stop.cancel();
    }
    let completed = [worker_small, worker_plain, worker_unit];
    let mut total = 0;
    for worker in completed {
        total += worker.await.unwrap().completed;
    }
    assert_eq!(total, 4, "every job completed, kept result or not");

    assert_eq!(
        small.job_result::<String>(&fits).await.unwrap().as_deref(),
        Some("ok")
    );
    assert_eq!(
        small.job_result::<String>(&big).await.unwrap(),
        None,
        "over the limit"
    );
    assert_eq!(
        plain.job_result::<String>(&unkept).await.unwrap(),
        None,
        "not asked for"
    );
    assert_eq!(
        unit.job_result::<()>(&nothing).await.unwrap(),
        None,
        "() is no result"
    );
    let results: Vec<String> = redis::cmd("KEYS")
        .arg("*:result:*")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    assert_eq!(results, [small.keys().result(fits.as_str())]);
}
