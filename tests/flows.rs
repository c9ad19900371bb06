//! Flows: a parent job that runs once, after all its children, with their
//! results; children on other queues and workers; a duplicate completion; the
//! failure policies; refused input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;
use streamq::{
    ChildOutcome, EnqueueOptions, Error, Flow, FlowState, Job, JobError, JobId, OnChildFailure,
    Priority, Queue, Worker, WorkerConfig, WorkerReport,
};
use support::{TestRedis, fast, until_stats, wait_for};
use tokio_util::sync::CancellationToken;

/// Runs a worker whose handler returns a result, on its own task.
fn spawn<T, R, F, Fut>(
    queue: &Queue,
    config: WorkerConfig,
    handler: F,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>)
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, JobError>> + Send,
{
    let token = CancellationToken::new();
    let worker = Worker::new(queue, config).unwrap();
    let stop = token.clone();
    let handle = tokio::spawn(async move { worker.run(handler, stop).await.unwrap() });
    (token, handle)
}

async fn stop(workers: Vec<(CancellationToken, tokio::task::JoinHandle<WorkerReport>)>) {
    for (token, handle) in workers {
        token.cancel();
        handle.await.unwrap();
    }
}

/// Stream entries as XRANGE returns them: (id, field/value pairs).
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// What parent runs saw: (parent id, the children's outcomes), one per run.
type ParentRuns = Arc<Mutex<Vec<(JobId, BTreeMap<JobId, ChildOutcome<u32>>)>>>;

/// A parent worker on `queue`: each run records its children's outcomes.
fn parent_worker(
    queue: &Queue,
    runs: &ParentRuns,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>) {
    let (reader, runs) = (queue.clone(), runs.clone());
    spawn(queue, fast(), move |job: Job<String>| {
        let (reader, runs) = (reader.clone(), runs.clone());
        async move {
            let children = reader.children_results::<u32>(job.id()).await.unwrap();
            runs.lock().unwrap().push((job.id().clone(), children));
            Ok::<_, JobError>(())
        }
    })
}

fn runs_of(runs: &ParentRuns) -> Vec<(JobId, BTreeMap<JobId, ChildOutcome<u32>>)> {
    runs.lock().unwrap().clone()
}

#[tokio::test]
async fn the_parent_runs_once_after_all_its_children_with_their_results() {
    let redis = TestRedis::start();
    let queue = redis.queue("jobs").await;
    let mut flow = Flow::new(&queue, &0u32, &EnqueueOptions::new().name("parent")).unwrap();
    let mut children = Vec::new();
    for n in 1..=3u32 {
        children.push(
            flow.child(&queue, &n, &EnqueueOptions::new().name("child"))
                .unwrap(),
        );
    }
    let ids = flow.send().await.unwrap();
    assert_eq!(ids.children, children);

    // Waiting: in no stream, visible in stats and by lookup.
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting_children, stats.waiting()), (1, 3));
    let info = queue.flow(&ids.parent).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.children, info.pending),
        (FlowState::Waiting, 3, 3)
    );

    // One worker runs both kinds: children return ten times their payload.
    let runs: ParentRuns = Arc::default();
    let (reader, seen) = (queue.clone(), runs.clone());
    let worker = spawn(&queue, fast(), move |job: Job<u32>| {
        let (reader, seen) = (reader.clone(), seen.clone());
        async move {
            if job.name() == "parent" {
                let results = reader.children_results::<u32>(job.id()).await.unwrap();
                seen.lock().unwrap().push((job.id().clone(), results));
                Ok::<u32, JobError>(0)
            } else {
                Ok(job.payload() * 10)
            }
        }
    });
    let stats = until_stats("children and parent completed", &queue, |s| {
        s.completed() == 4
    })
    .await;
    assert_eq!((stats.waiting_children, stats.enqueued()), (0, 4));
    stop(vec![worker]).await;

    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 1, "the parent ran once");
    let expected: BTreeMap<JobId, ChildOutcome<u32>> = children
        .iter()
        .zip([10, 20, 30])
        .map(|(id, r)| (id.clone(), ChildOutcome::Completed(Some(r))))
        .collect();
    assert_eq!(runs[0], (ids.parent.clone(), expected));
    let info = queue.flow(&ids.parent).await.unwrap().unwrap();
    assert_eq!((info.state, info.pending), (FlowState::Released, 0));
    // Done: the record expires with its retention.
    let ttl: i64 = redis
        .raw()
        .await
        .pttl(queue.keys().flow(ids.parent.as_str()))
        .await
        .unwrap();
    assert!(ttl > 0, "record retention {ttl}");
}

#[tokio::test]
async fn children_on_another_queue_run_on_two_workers_and_the_parent_on_a_third() {
    let redis = TestRedis::start();
    let parents = redis.queue("reports").await;
    let fetches = redis.queue("fetches").await;
    let mut flow = Flow::new(
        &parents,
        &"weekly".to_owned(),
        &EnqueueOptions::new().priority(Priority::High),
    )
    .unwrap();
    let a = flow.child(&fetches, &1u32, &EnqueueOptions::new()).unwrap();
    let b = flow
        .child(
            &fetches,
            &2u32,
            &EnqueueOptions::new().priority(Priority::Low),
        )
        .unwrap();
    let ids = flow.send().await.unwrap();
    assert_eq!(parents.stats().await.unwrap().waiting(), 0);
    assert_eq!(fetches.stats().await.unwrap().waiting(), 2);

    // Each child worker takes one job at a time, and its handler waits for
    // the other's: the two children can only finish on two workers.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let ran_on: Arc<Mutex<Vec<(u32, &'static str)>>> = Arc::default();
    let child_worker = |name: &'static str| {
        let (barrier, ran_on) = (barrier.clone(), ran_on.clone());
        let config = fast().concurrency(1).prefetch(0).consumer_name(name);
        spawn(&fetches, config, move |job: Job<u32>| {
            let (barrier, ran_on) = (barrier.clone(), ran_on.clone());
            async move {
                ran_on.lock().unwrap().push((*job.payload(), name));
                barrier.wait().await;
                Ok::<u32, JobError>(job.payload() + 100)
            }
        })
    };
    let workers = vec![
        child_worker("child-worker-1"),
        child_worker("child-worker-2"),
    ];
    let runs: ParentRuns = Arc::default();
    let parent = parent_worker(&parents, &runs);
    wait_for("the parent ran", || !runs_of(&runs).is_empty()).await;
    let stats = until_stats("the parent completed", &parents, |s| s.completed() == 1).await;
    let high = stats
        .priorities
        .iter()
        .find(|p| p.priority == Priority::High);
    assert_eq!(high.map(|p| p.completed), Some(1));
    stop(workers).await;
    stop(vec![parent]).await;

    let mut workers: Vec<&str> = ran_on.lock().unwrap().iter().map(|(_, w)| *w).collect();
    workers.sort_unstable();
    assert_eq!(workers, ["child-worker-1", "child-worker-2"]);
    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, ids.parent);
    assert_eq!(
        runs[0].1,
        BTreeMap::from([
            (a, ChildOutcome::Completed(Some(101))),
            (b, ChildOutcome::Completed(Some(102))),
        ])
    );
    assert_eq!(fetches.stats().await.unwrap().completed(), 2);
}

#[tokio::test]
async fn a_child_that_completes_twice_counts_once() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis.queue("children").await;
    let mut flow = Flow::new(&parents, &"p".to_owned(), &EnqueueOptions::new()).unwrap();
    let first = flow
        .child(&children, &1u32, &EnqueueOptions::new())
        .unwrap();
    let second = flow
        .child(&children, &2u32, &EnqueueOptions::new())
        .unwrap();
    let ids = flow.send().await.unwrap();

    // A second delivery of the first child, as a reclaim after a lost ack
    // would run it again: the same envelope in a new entry, right after it.
    let mut raw = redis.raw().await;
    let stream = children.keys().stream(Priority::Medium);
    let entries: Entries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let first_envelope = entries[0].1[0].1.clone();
    redis::cmd("XDEL")
        .arg(stream)
        .arg(&entries[1].0)
        .query_async::<i64>(&mut raw)
        .await
        .unwrap();
    for envelope in [first_envelope, entries[1].1[0].1.clone()] {
        let _: String = raw.xadd(stream, "*", &[("e", envelope)]).await.unwrap();
    }
    // Order now: first, first again, second, which waits for the test.
    // Counted twice, the first would release the parent before the second.
    let second_may_finish = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = second_may_finish.clone();
    let config = fast().concurrency(1).prefetch(0);
    let child_worker = spawn(&children, config, move |job: Job<u32>| {
        let gate = gate.clone();
        async move {
            if *job.payload() == 2 {
                let _permit = gate.acquire().await.unwrap();
            }
            Ok::<u32, JobError>(*job.payload())
        }
    });
    let runs: ParentRuns = Arc::default();
    let parent = parent_worker(&parents, &runs);
    until_stats("the first child completed twice", &children, |s| {
        s.completed() == 2
    })
    .await;
    let info = parents.flow(&ids.parent).await.unwrap().unwrap();
    assert_eq!((info.state, info.pending), (FlowState::Waiting, 1));
    assert_eq!(parents.stats().await.unwrap().enqueued(), 0);

    second_may_finish.add_permits(1);
    until_stats("the parent completed", &parents, |s| s.completed() == 1).await;
    stop(vec![child_worker, parent]).await;

    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 1, "released once");
    assert_eq!(
        runs[0].1,
        BTreeMap::from([
            (first, ChildOutcome::Completed(Some(1))),
            (second, ChildOutcome::Completed(Some(2))),
        ])
    );
    let stats = parents.stats().await.unwrap();
    assert_eq!((stats.enqueued(), stats.waiting_children), (1, 0));
    let info = parents.flow(&ids.parent).await.unwrap().unwrap();
    assert_eq!((info.state, info.pending), (FlowState::Released, 0));
}

#[tokio::test]
async fn a_failed_child_dead_letters_its_parent_by_default() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis.queue("children").await;
    let mut flow = Flow::new(&parents, &"p".to_owned(), &EnqueueOptions::new()).unwrap();
    let good = flow
        .child(&children, &1u32, &EnqueueOptions::new())
        .unwrap();
    let bad = flow
        .child(&children, &2u32, &EnqueueOptions::new())
        .unwrap();
    let ids = flow.send().await.unwrap();

    let child_worker = spawn(&children, fast(), |job: Job<u32>| async move {
        match job.payload() {
            2 => Err(JobError::permanent("disk on fire")),
            n => Ok(*n),
        }
    });
    let runs: ParentRuns = Arc::default();
    let parent = parent_worker(&parents, &runs);
    until_stats("the parent dead-lettered", &parents, |s| {
        s.dead_letters == 1
    })
    .await;
    until_stats("both children finished", &children, |s| {
        s.completed() == 1 && s.dead_letters == 1
    })
    .await;
    stop(vec![child_worker, parent]).await;

    assert!(runs_of(&runs).is_empty(), "the parent never ran");
    let letters = parents.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(letters[0].job_id, ids.parent);
    assert_eq!(
        letters[0].error,
        format!("child {bad} failed: disk on fire")
    );
    assert_eq!(letters[0].payload::<String>().unwrap(), "p");
    let stats = parents.stats().await.unwrap();
    assert_eq!(
        (stats.waiting(), stats.completed(), stats.waiting_children),
        (0, 0, 0)
    );
    let info = parents.flow(&ids.parent).await.unwrap().unwrap();
    assert_eq!(info.state, FlowState::Failed);
    let results = parents.children_results::<u32>(&ids.parent).await.unwrap();
    assert_eq!(
        results.get(&bad),
        Some(&ChildOutcome::Failed("disk on fire".to_owned()))
    );
    // The good child may have finished before or after the failure; either
    // way it never runs the parent.
    assert!(matches!(
        results.get(&good),
        None | Some(ChildOutcome::Completed(Some(1)))
    ));
}

#[tokio::test]
async fn an_ignored_failure_runs_the_parent_with_the_error_visible() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis.queue("children").await;
    let mut flow = Flow::new(&parents, &"p".to_owned(), &EnqueueOptions::new()).unwrap();
    let good = flow
        .child(&children, &1u32, &EnqueueOptions::new())
        .unwrap();
    let bad = flow
        .child_with(
            &children,
            &2u32,
            &EnqueueOptions::new().max_attempts(2),
            OnChildFailure::Ignore,
        )
        .unwrap();
    let ids = flow.send().await.unwrap();

    let child_worker = spawn(&children, fast(), |job: Job<u32>| async move {
        match job.payload() {
            2 => Err(JobError::retry("flaky")),
            n => Ok(*n),
        }
    });
    let runs: ParentRuns = Arc::default();
    let parent = parent_worker(&parents, &runs);
    until_stats("the parent completed", &parents, |s| s.completed() == 1).await;
    stop(vec![child_worker, parent]).await;

    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, ids.parent);
    assert_eq!(
        runs[0].1,
        BTreeMap::from([
            (good, ChildOutcome::Completed(Some(1))),
            (
                bad,
                ChildOutcome::Failed("failed 2 of 2 attempts, last: flaky".to_owned())
            ),
        ])
    );
    let child_stats = children.stats().await.unwrap();
    assert_eq!((child_stats.completed(), child_stats.dead_letters), (1, 1));
    assert_eq!(parents.stats().await.unwrap().dead_letters, 0);
}

#[tokio::test]
async fn cancelling_a_waiting_child_settles_its_parent() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis.queue("children").await;

    // Ignore: the parent runs once its other child is done, the cancelled
    // one recorded as failed with "cancelled".
    let mut flow = Flow::new(&parents, &"ignored".to_owned(), &EnqueueOptions::new()).unwrap();
    let kept = flow
        .child(&children, &1u32, &EnqueueOptions::new())
        .unwrap();
    let dropped = flow
        .child_with(
            &children,
            &2u32,
            &EnqueueOptions::new(),
            OnChildFailure::Ignore,
        )
        .unwrap();
    let ignored = flow.send().await.unwrap();
    assert!(matches!(
        children.cancel(dropped.as_str()).await.unwrap(),
        streamq::Cancelled::Removed { .. }
    ));

    // Fail the parent (the default): cancelling a waiting child dead-letters
    // the parent at once, with the reason, though its other child waits.
    let mut flow = Flow::new(&parents, &"failed".to_owned(), &EnqueueOptions::new()).unwrap();
    flow.child(&children, &3u32, &EnqueueOptions::new())
        .unwrap();
    let cancelled = flow
        .child(&children, &4u32, &EnqueueOptions::new())
        .unwrap();
    let failed = flow.send().await.unwrap();
    assert!(matches!(
        children.cancel(cancelled.as_str()).await.unwrap(),
        streamq::Cancelled::Removed { .. }
    ));
    let letters = parents.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, failed.parent);
    assert_eq!(
        letters[0].error,
        format!("child {cancelled} failed: cancelled")
    );
    let info = parents.flow(&failed.parent).await.unwrap().unwrap();
    assert_eq!(info.state, FlowState::Failed);

    let child_worker = spawn(&children, fast(), |job: Job<u32>| async move {
        Ok::<_, JobError>(*job.payload())
    });
    let runs: ParentRuns = Arc::default();
    let parent = parent_worker(&parents, &runs);
    until_stats("the ignoring parent completed", &parents, |s| {
        s.completed() == 1
    })
    .await;
    until_stats("the remaining children completed", &children, |s| {
        s.completed() == 2
    })
    .await;
    stop(vec![child_worker, parent]).await;

    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 1, "only the ignoring parent ran, once");
    assert_eq!(runs[0].0, ignored.parent);
    assert_eq!(
        runs[0].1,
        BTreeMap::from([
            (kept, ChildOutcome::Completed(Some(1))),
            (dropped, ChildOutcome::Failed("cancelled".to_owned())),
        ])
    );
    let stats = parents.stats().await.unwrap();
    assert_eq!((stats.waiting_children, stats.dead_letters), (0, 1));
}

#[tokio::test]
async fn a_flow_without_children_is_refused_and_writes_nothing() {
    let redis = TestRedis::start();
    let queue = redis.queue("jobs").await;
    let flow = Flow::new(&queue, &"p".to_owned(), &EnqueueOptions::new()).unwrap();
    let parent = flow.parent_id().clone();
    let err = flow.send().await.expect_err("no children");
    assert!(matches!(err, Error::InvalidFlow(_)), "{err}");
    assert!(queue.flow(&parent).await.unwrap().is_none());
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.enqueued(), stats.waiting_children), (0, 0));
}

#[tokio::test]
async fn bad_flow_input_is_a_typed_error() {
    let redis = TestRedis::start();
    let small = redis
        .open(Queue::builder("small").max_payload_bytes(64))
        .await;
    let other_prefix = redis.open(Queue::builder("jobs").prefix("other")).await;
    let queue = redis.queue("jobs").await;

    let big = "x".repeat(1000);
    let err = Flow::new(&small, &big, &EnqueueOptions::new()).expect_err("too large");
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");

    let err = Flow::new(
        &queue,
        &1u8,
        &EnqueueOptions::new().delay(std::time::Duration::from_secs(5)),
    )
    .expect_err("a parent cannot be delayed");
    assert!(matches!(err, Error::InvalidFlow(_)), "{err}");

    let mut flow = Flow::new(&queue, &1u8, &EnqueueOptions::new()).unwrap();
    let err = flow
        .child(&small, &big, &EnqueueOptions::new())
        .expect_err("child too large");
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    let err = flow
        .child(&queue, &1u8, &EnqueueOptions::new().rate_group("a b"))
        .expect_err("bad rate group");
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = flow
        .child(
            &queue,
            &1u8,
            &EnqueueOptions::new().idempotency_key("k", std::time::Duration::from_secs(5)),
        )
        .expect_err("no idempotency key in a flow");
    assert!(matches!(err, Error::InvalidFlow(_)), "{err}");
    let err = flow
        .child(&other_prefix, &1u8, &EnqueueOptions::new())
        .expect_err("another prefix");
    assert!(matches!(err, Error::InvalidFlow(_)), "{err}");

    // The refused children left the flow as it was: still no child.
    assert!(matches!(flow.send().await, Err(Error::InvalidFlow(_))));
}

#[tokio::test]
async fn draining_or_obliterating_a_childrens_queue_settles_the_parents() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis.queue("children").await;
    // Fail the parent: draining its waiting child dead-letters it.
    let mut failing = Flow::new(&parents, &"failing".to_owned(), &EnqueueOptions::new()).unwrap();
    failing
        .child(&children, &1u32, &EnqueueOptions::new())
        .unwrap();
    let failing = failing.send().await.unwrap();
    // Ignore: the drained child counts as done, and the parent is released.
    let mut ignoring = Flow::new(&parents, &"ignoring".to_owned(), &EnqueueOptions::new()).unwrap();
    ignoring
        .child_with(
            &children,
            &2u32,
            &EnqueueOptions::new(),
            OnChildFailure::Ignore,
        )
        .unwrap();
    let ignoring = ignoring.send().await.unwrap();
    // An ordinary job beside them, and one delayed.
    children
        .enqueue(&3u32, &EnqueueOptions::new())
        .await
        .unwrap();
    let later = EnqueueOptions::new().delay(std::time::Duration::from_secs(3600));
    children.enqueue(&4u32, &later).await.unwrap();

    let drained = children.drain().await.unwrap();
    assert_eq!((drained.waiting, drained.delayed), (3, 1));
    let state = |id| {
        let parents = parents.clone();
        async move { parents.flow(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(&failing.parent).await, FlowState::Failed);
    assert_eq!(state(&ignoring.parent).await, FlowState::Released);
    let letters = parents.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, failing.parent);
    assert!(
        letters[0].error.ends_with("failed: drained"),
        "{}",
        letters[0].error
    );
    let stats = parents.stats().await.unwrap();
    assert_eq!((stats.waiting(), stats.waiting_children), (1, 0));

    // Obliterating the children's queue settles a waiting parent as well.
    let mut third = Flow::new(&parents, &"third".to_owned(), &EnqueueOptions::new()).unwrap();
    third
        .child(&children, &5u32, &EnqueueOptions::new())
        .unwrap();
    let third = third.send().await.unwrap();
    children.obliterate(false).await.unwrap();
    assert_eq!(state(&third.parent).await, FlowState::Failed);
    assert_eq!(parents.stats().await.unwrap().dead_letters, 2);
}

#[tokio::test]
async fn flow_children_are_tracked_announced_and_bounded_like_any_job() {
    let redis = TestRedis::start();
    let parents = redis.queue("parents").await;
    let children = redis
        .open(
            Queue::builder("children")
                .track_jobs(streamq::JobTracking::default())
                .events(streamq::EventLog::default())
                .max_backlog(3),
        )
        .await;
    let mut flow = Flow::new(&parents, &"p".to_owned(), &EnqueueOptions::new()).unwrap();
    let named = EnqueueOptions::new().name("fetch");
    let first = flow.child(&children, &1u32, &named).unwrap();
    let second = flow.child(&children, &2u32, &named).unwrap();
    flow.send().await.unwrap();

    // Tracked from creation, and announced on the event stream.
    let info = children
        .job(first.as_str())
        .await
        .unwrap()
        .expect("tracked");
    assert!(
        matches!(info.state, streamq::JobState::Waiting { .. }),
        "{:?}",
        info.state
    );
    assert_eq!(info.name, "fetch");
    let mut events = Box::pin(children.events(streamq::EventsFrom::Start));
    let mut announced = Vec::new();
    while announced.len() < 2 {
        let event = futures_util::StreamExt::next(&mut events)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.kind, streamq::EventKind::Enqueued);
        announced.push(event.job_id);
    }
    assert_eq!(announced, [first, second]);

    // Two more children would pass the bound of 3: the whole flow is refused.
    let mut over = Flow::new(&parents, &"over".to_owned(), &EnqueueOptions::new()).unwrap();
    over.child(&children, &3u32, &named).unwrap();
    over.child(&children, &4u32, &named).unwrap();
    match over.send().await {
        Err(Error::QueueFull {
            backlog: 2,
            limit: 3,
        }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(children.stats().await.unwrap().waiting(), 2);
    assert_eq!(parents.stats().await.unwrap().waiting_children, 1);
}
