//! The event stream against a real Redis: every kind recorded, in order per
//! job where the scripts write them; resuming after the last event seen;
//! reading from now on; off by default; capped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use streamq::{
    EnqueueOptions, Event, EventKind, EventLog, EventsFrom, Job, JobError, KeepResults, Priority,
    Queue, Worker,
};
use support::{Gate, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats};
use tokio_util::sync::CancellationToken;

/// Reads events until `done` holds for what was read; fails after [`WAIT`].
async fn read_until(
    queue: &Queue,
    from: EventsFrom,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let mut events = Box::pin(queue.events(from));
    let mut seen = Vec::new();
    let read = async {
        while !done(&seen) {
            seen.push(events.next().await.expect("never ends").expect("reads"));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("timed out; read {seen:#?}"));
    seen
}

fn kinds(events: &[Event], job: &streamq::JobId) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| &e.job_id == job)
        .map(|e| e.kind.clone())
        .collect()
}

fn without_worker_events(kinds: Vec<EventKind>) -> Vec<EventKind> {
    kinds
        .into_iter()
        .filter(|k| !matches!(k, EventKind::Started | EventKind::Progress))
        .collect()
}

#[tokio::test]
async fn every_kind_of_event_is_recorded_in_order() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("events")
                .events(EventLog::default())
                .keep_results(KeepResults::default()),
        )
        .await;
    let ok = queue
        .enqueue(
            &"ok",
            &EnqueueOptions::new().name("send").priority(Priority::High),
        )
        .await
        .unwrap();
    let flaky = queue
        .enqueue(&"flaky", &EnqueueOptions::new())
        .await
        .unwrap();
    let doomed = queue
        .enqueue(&"doomed", &EnqueueOptions::new())
        .await
        .unwrap();
    let later = queue
        .enqueue(
            &"later",
            &EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let worker = Worker::new(&queue, fast()).unwrap();
    let handle = tokio::spawn(worker.run(
        |job: Job<String>| async move {
            match job.payload().as_str() {
                "ok" => {
                    job.progress(50);
                    Ok(format!("done {}", job.payload()))
                }
                "flaky" if job.attempt() == 1 => Err(JobError::retry("flaked")),
                "doomed" => Err(JobError::permanent("no such account")),
                _ => Ok(String::new()),
            }
        },
        stop.clone(),
    ));
    let events = read_until(&queue, EventsFrom::Start, |seen| {
        let has = |job: &streamq::JobId, kind: EventKind| {
            seen.iter().any(|e| &e.job_id == job && e.kind == kind)
        };
        has(&ok, EventKind::Completed)
            && has(&ok, EventKind::Progress)
            && has(&flaky, EventKind::Completed)
            && seen
                .iter()
                .filter(|e| e.job_id == flaky && e.kind == EventKind::Started)
                .count()
                == 2
            && has(&doomed, EventKind::DeadLettered)
            && has(&doomed, EventKind::Started)
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();

    // The scripts' events are in order per job; the worker's own (started,
    // progress) are written beside them, best-effort, so only their presence
    // is asserted.
    use EventKind::*;
    assert_eq!(
        without_worker_events(kinds(&events, &ok)),
        [Enqueued, Completed]
    );
    assert_eq!(
        without_worker_events(kinds(&events, &flaky)),
        [Enqueued, Failed, Retried, Completed]
    );
    assert_eq!(
        without_worker_events(kinds(&events, &doomed)),
        [Enqueued, Failed, DeadLettered]
    );
    assert_eq!(kinds(&events, &later), [Enqueued]);

    let by_kind = |job: &streamq::JobId, kind: EventKind| {
        events
            .iter()
            .find(|e| &e.job_id == job && e.kind == kind)
            .unwrap()
            .clone()
    };
    let completed = by_kind(&ok, Completed);
    assert_eq!(completed.name, "send");
    assert_eq!(completed.priority, Some(Priority::High));
    assert_eq!(
        completed.result::<String>().unwrap().as_deref(),
        Some("done ok")
    );
    assert_eq!(by_kind(&ok, Progress).progress, Some(50));
    assert_eq!(by_kind(&ok, Started).attempt, Some(1));
    let failed = by_kind(&flaky, Failed);
    assert_eq!(
        (failed.attempt, failed.error.as_deref()),
        (Some(1), Some("flaked"))
    );
    assert!(by_kind(&flaky, Retried).due_ms.unwrap() >= failed.at_ms);
    let dead = by_kind(&doomed, DeadLettered);
    assert_eq!(dead.error.as_deref(), Some("no such account"));
    let letter = queue.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(dead.dead_letter_id.as_deref(), Some(letter[0].id.as_str()));
    assert!(by_kind(&later, Enqueued).due_ms.unwrap() > by_kind(&later, Enqueued).at_ms);
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let read_order = ids.clone();
    ids.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    assert_eq!(ids, read_order, "events come in stream order");
}

#[tokio::test]
async fn a_reader_resumes_after_the_last_event_it_saw_and_now_skips_the_past() {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("resume").events(EventLog::default()))
        .await;
    let mut ids = Vec::new();
    for i in 0..6u32 {
        ids.push(queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap());
    }
    let first = read_until(&queue, EventsFrom::Start, |seen| seen.len() == 3).await;
    let rest = read_until(&queue, EventsFrom::After(first[2].id.clone()), |seen| {
        seen.len() == 3
    })
    .await;
    let read: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|e| e.job_id.clone())
        .collect();
    assert_eq!(read, ids, "no gap and no repeat across the restart");

    // From now on: the reader is blocked (it has fixed "now") before the
    // next job is enqueued.
    let reader = {
        let queue = queue.clone();
        tokio::spawn(
            async move { read_until(&queue, EventsFrom::Now, |seen| !seen.is_empty()).await },
        )
    };
    eventually("the reader waits for new events", WAIT, || {
        let r = &redis;
        async move { r.info("clients").await["blocked_clients"] == "1" }
    })
    .await;
    let next = queue.enqueue(&99u32, &EnqueueOptions::new()).await.unwrap();
    let seen = reader.await.unwrap();
    assert_eq!(seen[0].job_id, next);
}

#[tokio::test]
async fn a_reclaimed_job_is_an_event() {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("stalled").events(EventLog::default()))
        .await;
    let id = queue.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    let hung = Gate::default();
    let (stop, worker) = {
        let hung = hung.clone();
        spawn_worker(
            &queue,
            fast().lease(Duration::from_millis(200)).heartbeat(false),
            move |_job: Job<u32>| {
                let hung = hung.clone();
                async move {
                    hung.pass().await;
                    Ok(())
                }
            },
        )
    };
    let events = read_until(&queue, EventsFrom::Start, |seen| {
        seen.iter().any(|e| e.kind == EventKind::Reclaimed)
    })
    .await;
    let reclaimed = events
        .iter()
        .find(|e| e.kind == EventKind::Reclaimed)
        .unwrap();
    assert_eq!(reclaimed.job_id, id);
    assert!(reclaimed.deliveries.unwrap() >= 2);
    hung.open();
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn events_are_off_by_default_and_capped_when_on() {
    let redis = TestRedis::start();
    let quiet = redis.queue("quiet").await;
    let capped = redis
        .open(Queue::builder("capped").events(EventLog::default().max_len(100)))
        .await;
    for queue in [&quiet, &capped] {
        for _ in 0..5 {
            let mut batch = queue.batch();
            for i in 0..200u32 {
                batch.push(&i, &EnqueueOptions::new()).unwrap();
            }
            batch.send().await.unwrap();
        }
    }
    let seen = support::Seen::default();
    let (stop, worker) = spawn_worker(&quiet, fast(), seen.handler::<u32>());
    until_stats("the quiet queue drained", &quiet, |s| s.completed() == 1000).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        redis.len(&quiet.keys().events()).await,
        0,
        "no events unless asked"
    );

    let length = redis.len(&capped.keys().events()).await;
    // `MAXLEN ~` trims whole stream nodes (100 entries by default): about
    // the cap, never the 1,000 added.
    assert!((100..=300).contains(&length), "{length} events kept");
    let counts: HashMap<EventKind, usize> = read_until(&capped, EventsFrom::Start, |seen| {
        seen.len() as u64 == length
    })
    .await
    .into_iter()
    .fold(HashMap::new(), |mut m, e| {
        *m.entry(e.kind).or_default() += 1;
        m
    });
    assert_eq!(counts.get(&EventKind::Enqueued), Some(&(length as usize)));
}

#[tokio::test]
async fn a_partitioned_queue_is_followed_as_one_stream_and_resumed_from_a_position() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("parts")
                .partitions(4)
                .events(EventLog::default()),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..24u32 {
        let options = EnqueueOptions::new().partition_key(format!("tenant-{i}"));
        ids.push(queue.enqueue(&i, &options).await.unwrap());
    }
    let first = read_until(&queue, EventsFrom::Start, |seen| seen.len() == 10).await;
    let partitions: std::collections::BTreeSet<&str> = first
        .iter()
        .map(|e| e.id.rsplit_once('@').expect("qualified").1)
        .collect();
    assert!(
        partitions.len() > 1,
        "read from one partition only: {first:?}"
    );
    // A new reader resumes after the tenth event: the other 14, none again.
    let rest = read_until(
        &queue,
        EventsFrom::After(first[9].position.clone()),
        |seen| seen.len() == 14,
    )
    .await;
    let mut read: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|e| e.job_id.clone())
        .collect();
    read.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(read, want, "every job's event once across the restart");
    assert!(rest.iter().all(|e| e.kind == EventKind::Enqueued));

    // A reader waiting from now on wakes for an event in any partition.
    let reader = {
        let queue = queue.clone();
        tokio::spawn(
            async move { read_until(&queue, EventsFrom::Now, |seen| !seen.is_empty()).await },
        )
    };
    eventually("the reader waits on every partition", WAIT, || {
        let r = &redis;
        async move { r.info("clients").await["blocked_clients"] == "4" }
    })
    .await;
    let next = queue
        .enqueue(&99u32, &EnqueueOptions::new().partition_key("late"))
        .await
        .unwrap();
    assert_eq!(reader.await.unwrap()[0].job_id, next);

    // A position that is not one is refused.
    let mut bad = Box::pin(queue.events(EventsFrom::After("nonsense".to_owned())));
    assert!(matches!(
        bad.next().await,
        Some(Err(streamq::Error::InvalidEntryId(_)))
    ));
}
