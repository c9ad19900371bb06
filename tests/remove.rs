//! Cancelling and cleaning, against a real Redis: cancel by id (waiting,
//! delayed, active, racing a fetch), clean, drain and obliterate, each with
//! its typed result and the Redis state it leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use streamq::{
    Cancelled, Clean, Cleaned, Drained, EnqueueOptions, Error, Job, JobError, JobId, JobState,
    JobTracking, KeepResults, Priority, Queue, RemovedFrom,
};
use support::{Gate, Seen, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats, wait_for};

/// A lease whose heartbeat (a third of it) is how fast a worker sees a stop
/// request. Long enough that a busy machine never lets it run out.
const LEASE: Duration = Duration::from_millis(1500);

/// A handler that records its run, then holds the job until it is asked to
/// stop and stops with a retryable error.
type Stopping = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>;

fn until_stopped(seen: &Seen) -> impl Fn(Job<u32>) -> Stopping + Send + Sync + 'static {
    let seen = seen.clone();
    move |job: Job<u32>| {
        let seen = seen.clone();
        Box::pin(async move {
            seen.record(job.id());
            job.stopped().await;
            Err(JobError::retry("stopped as asked"))
        })
    }
}

async fn all_dead_letters(queue: &Queue) -> HashMap<JobId, String> {
    let page = queue.dead_letters(None, 10_000).await.unwrap();
    page.letters
        .into_iter()
        .map(|l| (l.job_id, l.error))
        .collect()
}

async fn stream_lengths(redis: &TestRedis, queue: &Queue) -> u64 {
    let mut total = 0;
    for stream in queue.keys().streams() {
        total += redis.len(stream).await;
    }
    total
}

#[tokio::test]
async fn cancel_removes_waiting_and_delayed_jobs_by_id_with_and_without_tracking() {
    let redis = TestRedis::start();
    for (name, tracked) in [("untracked", false), ("tracked", true)] {
        let mut builder = Queue::builder(name);
        if tracked {
            builder = builder.track_jobs(JobTracking::default());
        }
        let queue = redis.open(builder).await;
        let waiting = queue
            .enqueue(&1u32, &EnqueueOptions::new().priority(Priority::High))
            .await
            .unwrap();
        let delayed = queue
            .enqueue(
                &2u32,
                &EnqueueOptions::new()
                    .priority(Priority::Low)
                    .delay(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        let kept = queue.enqueue(&3u32, &EnqueueOptions::new()).await.unwrap();

        assert_eq!(
            queue.cancel(waiting.as_str()).await.unwrap(),
            Cancelled::Removed {
                from: RemovedFrom::Waiting {
                    priority: Priority::High
                }
            },
            "{name}"
        );
        match queue.cancel(delayed.as_str()).await.unwrap() {
            Cancelled::Removed {
                from: RemovedFrom::Delayed { priority, due_ms },
            } => {
                assert_eq!(priority, Priority::Low, "{name}");
                assert!(due_ms > 0, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        for gone in [waiting.as_str(), delayed.as_str(), "no-such-job", ""] {
            assert_eq!(
                queue.cancel(gone).await.unwrap(),
                Cancelled::NotFound,
                "{name}: {gone}"
            );
        }

        assert_eq!(redis.len(queue.keys().stream(Priority::High)).await, 0);
        assert_eq!(redis.len(queue.keys().delayed()).await, 0);
        assert_eq!(redis.len(queue.keys().stream(Priority::Medium)).await, 1);
        let counters = redis.counters(&queue).await;
        assert_eq!(counters.get("cancelled:high"), Some(&1), "{name}");
        assert_eq!(counters.get("cancelled:low"), Some(&1), "{name}");
        if tracked {
            let info = queue.job(waiting.as_str()).await.unwrap().unwrap();
            assert_eq!(info.state, JobState::Cancelled);
            assert!(info.finished_ms.is_some());
        }

        // The job left alone still runs; the cancelled ones never do.
        let seen = Seen::default();
        let (stop, worker) = spawn_worker(&queue, fast(), seen.handler::<u32>());
        until_stats("the kept job completes", &queue, |s| {
            s.priorities.iter().map(|p| p.completed).sum::<u64>() == 1
        })
        .await;
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(seen.ids(), vec![kept], "{name}");
    }
}

#[tokio::test]
async fn cancelling_an_active_job_stops_only_that_job_and_dead_letters_it_as_cancelled() {
    let redis = TestRedis::start();
    let queue = redis.queue("active").await;
    let doomed = queue.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    let spared = queue.enqueue(&2u32, &EnqueueOptions::new()).await.unwrap();
    let seen = Seen::default();
    let gate = Gate::default();
    let stopped_early = Seen::default();
    let (stop, worker) = {
        let (seen, gate, stopped_early) = (seen.clone(), gate.clone(), stopped_early.clone());
        spawn_worker(
            &queue,
            fast().lease(LEASE).concurrency(2).prefetch(0),
            move |job: Job<u32>| {
                let (seen, gate, stopped_early) =
                    (seen.clone(), gate.clone(), stopped_early.clone());
                async move {
                    seen.record(job.id());
                    tokio::select! {
                        () = job.stopped() => {
                            stopped_early.record(job.id());
                            Err(JobError::retry("stopped as asked"))
                        }
                        () = gate.pass() => Ok(()),
                    }
                }
            },
        )
    };
    wait_for("both jobs run", || seen.len() == 2).await;

    match queue.cancel(doomed.as_str()).await.unwrap() {
        Cancelled::StopRequested { priority, entry_id } => {
            assert_eq!(priority, Priority::Medium);
            assert!(!entry_id.is_empty());
        }
        other => panic!("{other:?}"),
    }
    until_stats("the cancelled job is dead-lettered", &queue, |s| {
        s.dead_letters == 1
    })
    .await;
    let letters = all_dead_letters(&queue).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters.get(&doomed).map(String::as_str),
        Some("cancelled: stopped as asked")
    );
    assert_eq!(
        stopped_early.ids(),
        vec![doomed.clone()],
        "only the cancelled job was signalled"
    );

    gate.open();
    until_stats("the other job completes", &queue, |s| {
        s.priorities.iter().map(|p| p.completed).sum::<u64>() == 1
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.cancelled, 1);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.completed, 1);
    assert_eq!(report.retried, 0, "a cancelled job is not retried");
    assert_eq!(report.released, 0, "nor handed back");
    assert_eq!(seen.count(&doomed), 1);
    assert_eq!(seen.count(&spared), 1);
    assert_eq!(stream_lengths(&redis, &queue).await, 0);
    // Finished: nothing left to cancel.
    assert_eq!(
        queue.cancel(doomed.as_str()).await.unwrap(),
        Cancelled::NotFound
    );
}

/// Cancels racing a worker's fetch, many rounds: every job is either
/// removed and never run, or reported active and ends cancelled by its
/// worker; never both, never neither. Three kinds of rounds:
///
/// 0. cancel right after the enqueue (one batch), while the blocked worker
///    wakes up to fetch;
/// 1. cancel once the worker holds a job of the round (it can hold two, so
///    the rest surely wait: both outcomes occur in every such round);
/// 2. enqueue into a paused queue, then resume it and cancel at once: the
///    worker's next fetch (within its 20 ms pause poll) lands anywhere in
///    or after the cancels, so the interleavings vary from round to round.
#[tokio::test]
async fn cancel_racing_with_a_fetch_removes_or_stops_each_job_never_both_never_neither() {
    const ROUNDS: usize = 24;
    const PER_ROUND: usize = 8;
    let redis = TestRedis::start();
    let queue = redis.queue("race").await;
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(
        &queue,
        fast().lease(LEASE).concurrency(2).prefetch(0),
        until_stopped(&seen),
    );
    let mut outcomes: HashMap<JobId, Cancelled> = HashMap::new();
    let mut stop_requests = 0;
    for round in 0..ROUNDS {
        // One round trip: the worker's wake-up and fetch race the cancels
        // below for the first jobs of the round.
        let kind = round % 3;
        if kind == 2 {
            queue.pause().await.unwrap();
        }
        let mut batch = queue.batch();
        for i in 0..PER_ROUND {
            batch.push(&(i as u32), &EnqueueOptions::new()).unwrap();
        }
        let ids = batch.send().await.unwrap();
        if kind == 2 {
            queue.resume().await.unwrap();
        }
        if kind == 1 {
            let seen = seen.clone();
            let ids = ids.clone();
            wait_for("the worker runs a job of this round", move || {
                ids.iter().any(|id| seen.count(id) > 0)
            })
            .await;
        }
        let cancels: Vec<_> = ids
            .iter()
            .map(|id| {
                let (queue, id) = (queue.clone(), id.clone());
                tokio::spawn(async move { (id.clone(), queue.cancel(id.as_str()).await.unwrap()) })
            })
            .collect();
        for cancel in cancels {
            let (id, outcome) = cancel.await.unwrap();
            if matches!(outcome, Cancelled::StopRequested { .. }) {
                stop_requests += 1;
            }
            outcomes.insert(id, outcome);
        }
        until_stats(
            "every stopped job of the round is dead-lettered",
            &queue,
            |s| s.dead_letters == stop_requests,
        )
        .await;
    }
    stop.cancel();
    let report = worker.await.unwrap();

    let letters = all_dead_letters(&queue).await;
    let (mut removed, mut stopped) = (0, 0);
    for (id, outcome) in &outcomes {
        match outcome {
            Cancelled::Removed {
                from: RemovedFrom::Waiting { .. },
            } => {
                removed += 1;
                assert_eq!(seen.count(id), 0, "{id}: removed, yet it ran");
                assert!(
                    !letters.contains_key(id),
                    "{id}: removed, yet dead-lettered"
                );
            }
            Cancelled::StopRequested { .. } => {
                stopped += 1;
                assert!(seen.count(id) <= 1, "{id} ran twice");
                let error = letters.get(id).map(String::as_str);
                assert!(
                    error.is_some_and(|e| e.starts_with("cancelled")),
                    "{id}: reported active, but ended as {error:?}"
                );
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(removed + stopped, ROUNDS * PER_ROUND);
    eprintln!("removed {removed}, stopped {stopped}");
    assert!(
        removed > 0 && stopped > 0,
        "removed {removed}, stopped {stopped}"
    );
    for id in seen.ids() {
        assert!(
            matches!(outcomes.get(&id), Some(Cancelled::StopRequested { .. })),
            "{id} ran but was reported {:?}",
            outcomes.get(&id)
        );
    }
    assert_eq!(report.cancelled, stopped as u64);
    assert_eq!(report.completed + report.retried + report.released, 0);
    assert_eq!(
        stream_lengths(&redis, &queue).await,
        0,
        "nothing left behind"
    );
}

#[tokio::test]
async fn clean_removes_dead_letters_and_completed_jobs_older_than_the_age_only() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("clean")
                .track_jobs(JobTracking::default().keep_completed(100, Duration::from_secs(3600)))
                .keep_results(KeepResults::default()),
        )
        .await;
    let mut completed = Vec::new();
    for i in 0..3u32 {
        completed.push(queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap());
    }
    let mut failing = Vec::new();
    for i in 100..102u32 {
        failing.push(
            queue
                .enqueue(&i, &EnqueueOptions::new().priority(Priority::Low))
                .await
                .unwrap(),
        );
    }
    let worker = streamq::Worker::new(&queue, fast()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            worker
                .run(
                    |job: Job<u32>| async move {
                        if *job.payload() >= 100 {
                            Err(JobError::permanent("bad input"))
                        } else {
                            Ok(*job.payload() * 10)
                        }
                    },
                    shutdown,
                )
                .await
                .unwrap()
        }
    });
    until_stats("three complete, two dead", &queue, |s| {
        s.dead_letters == 2 && s.priorities.iter().map(|p| p.completed).sum::<u64>() == 3
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
    eventually("the tracker records every completion", WAIT, || async {
        let mut done = 0;
        for id in &completed {
            if let Some(info) = queue.job(id.as_str()).await.unwrap() {
                done += usize::from(info.state == JobState::Completed);
            }
        }
        done == completed.len()
    })
    .await;

    // Younger than an hour: nothing goes.
    let hour = Duration::from_secs(3600);
    let none = queue
        .clean(
            &Clean::new()
                .dead_letters_older_than(hour)
                .completed_older_than(hour),
        )
        .await
        .unwrap();
    assert_eq!(none, Cleaned::default());
    assert_eq!(all_dead_letters(&queue).await.len(), 2);

    // Older than nothing: everything finished before now goes. Wait until
    // the clock has moved past the last finish, so "older" is strict.
    let last = std::time::SystemTime::now();
    eventually("the clock moves on", WAIT, || async {
        last.elapsed().is_ok_and(|e| e >= Duration::from_millis(2))
    })
    .await;
    let all = queue
        .clean(&Clean::new().dead_letters_older_than(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!((all.dead_letters, all.completed, all.results), (2, 0, 0));
    assert!(all_dead_letters(&queue).await.is_empty());
    let all = queue
        .clean(&Clean::new().completed_older_than(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!((all.dead_letters, all.completed, all.results), (0, 3, 3));
    for id in &completed {
        assert_eq!(queue.job(id.as_str()).await.unwrap(), None);
        assert_eq!(queue.job_result::<u32>(id).await.unwrap(), None);
    }
    assert_eq!(redis.len(&queue.keys().completed()).await, 0);
    // Dead-lettered jobs' metadata is not the completed index's: it stays
    // until it expires.
    assert!(queue.job(failing[0].as_str()).await.unwrap().is_some());
}

#[tokio::test]
async fn drain_removes_waiting_and_delayed_jobs_but_never_active_ones() {
    let redis = TestRedis::start();
    let queue = redis.queue("drain").await;

    // Before any worker: no group yet, every entry is waiting.
    for p in [Priority::Critical, Priority::Low] {
        queue
            .enqueue(&0u32, &EnqueueOptions::new().priority(p))
            .await
            .unwrap();
    }
    let drained = queue.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (2, 0));
    assert_eq!(queue.drain().await.unwrap(), Drained::default());

    let seen = Seen::default();
    let gate = Gate::default();
    let (stop, worker) = {
        let (seen, gate) = (seen.clone(), gate.clone());
        spawn_worker(
            &queue,
            fast().concurrency(2).prefetch(0),
            move |job: Job<u32>| {
                let (seen, gate) = (seen.clone(), gate.clone());
                async move {
                    seen.record(job.id());
                    gate.pass().await;
                    Ok(())
                }
            },
        )
    };
    let mut active = Vec::new();
    for i in 0..2u32 {
        active.push(queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap());
    }
    wait_for("two jobs are active", || gate.arrived() == 2).await;
    for (i, p) in Priority::ALL.iter().cycle().take(10).enumerate() {
        queue
            .enqueue(&(i as u32), &EnqueueOptions::new().priority(*p))
            .await
            .unwrap();
    }
    for i in 0..3u32 {
        queue
            .enqueue(&i, &EnqueueOptions::new().delay(Duration::from_secs(3600)))
            .await
            .unwrap();
    }

    let drained = queue.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (10, 3));
    assert_eq!(redis.len(queue.keys().delayed()).await, 0);
    assert_eq!(
        stream_lengths(&redis, &queue).await,
        2,
        "the active two stay"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.in_flight(), 2, "{stats:?}");

    gate.open();
    until_stats("the active jobs complete", &queue, |s| {
        s.priorities.iter().map(|p| p.completed).sum::<u64>() == 2
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.completed, 2);
    let mut ran = seen.ids();
    ran.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    active.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ran, active, "only the two active jobs ran");
    assert_eq!(stream_lengths(&redis, &queue).await, 0);
    let counters = redis.counters(&queue).await;
    let drained: i64 = counters
        .iter()
        .filter(|(k, _)| k.starts_with("drained:"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(drained, 15);
}

async fn key_count(redis: &TestRedis, pattern: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn obliterate_is_refused_while_workers_are_active_unless_forced_and_spares_other_queues() {
    let redis = TestRedis::start();
    // A name with glob characters: its pattern must not match `xy`'s keys.
    let queue = redis.queue("x*").await;
    let neighbour = redis.queue("xy").await;
    neighbour
        .enqueue(&0u32, &EnqueueOptions::new())
        .await
        .unwrap();
    let neighbour_keys = key_count(&redis, "streamq:{xy}:*").await;
    assert!(neighbour_keys > 0);

    queue.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    let gate = Gate::default();
    let (stop, worker) = {
        let gate = gate.clone();
        spawn_worker(&queue, fast(), move |_job: Job<u32>| {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                Ok(())
            }
        })
    };
    wait_for("the worker holds the job", || gate.arrived() == 1).await;
    let before = redis::cmd("DBSIZE")
        .query_async::<u64>(&mut redis.raw().await)
        .await
        .unwrap();
    match queue.obliterate(false).await {
        Err(Error::QueueInUse { consumers }) => assert_eq!(consumers.len(), 1),
        other => panic!("{other:?}"),
    }
    let after = redis::cmd("DBSIZE")
        .query_async::<u64>(&mut redis.raw().await)
        .await
        .unwrap();
    assert_eq!(before, after, "a refusal deletes nothing");

    // Stopped cleanly, the worker left the group: nothing is in use.
    gate.open();
    stop.cancel();
    worker.await.unwrap();
    queue
        .enqueue(&2u32, &EnqueueOptions::new().delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let ours = key_count(&redis, r"streamq:{x\*}:*").await;
    let done = queue.obliterate(false).await.unwrap();
    assert_eq!(done.keys, ours as u64);
    assert_eq!(key_count(&redis, r"streamq:{x\*}:*").await, 0);
    assert_eq!(key_count(&redis, "streamq:{xy}:*").await, neighbour_keys);

    // Forced: deleted even while a consumer holds a job (one that claimed
    // it and died: nothing else would ever finish it).
    let forced = redis.queue("forced").await;
    forced.enqueue(&3u32, &EnqueueOptions::new()).await.unwrap();
    let medium = forced.keys().stream(Priority::Medium);
    let mut raw = redis.raw().await;
    // The producer's first enqueue created the consumer group.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("streamq")
        .arg("died-holding")
        .arg("STREAMS")
        .arg(medium)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    match forced.obliterate(false).await {
        Err(Error::QueueInUse { consumers }) => assert_eq!(consumers, ["died-holding"]),
        other => panic!("{other:?}"),
    }
    let done = forced.obliterate(true).await.unwrap();
    assert_eq!(
        done.keys, 6,
        "the four streams (made with the groups at the first enqueue), the stats hash and the enqueue sequence"
    );
    assert_eq!(key_count(&redis, "streamq:{forced}:*").await, 0);
}
