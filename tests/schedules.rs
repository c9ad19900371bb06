//! Schedules against a real Redis: racing schedulers make one job per tick,
//! the catch-up policies after downtime, list, update and remove, and
//! running schedulers that wake on ticks and on changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use streamq::{
    CatchUp, Error, Priority, Queue, Schedule, ScheduleChange, Scheduler, SchedulerReport, Timing,
};
use support::TestRedis;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Seeds a schedule's next due time, as if it had come due (or a scheduler
/// had been away since).
async fn set_due(redis: &TestRedis, queue: &Queue, id: &str, due_ms: u64) {
    let _: i64 = redis::cmd("ZADD")
        .arg(queue.keys().schedule_due())
        .arg("XX")
        .arg("CH")
        .arg(due_ms)
        .arg(id)
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
}

async fn due_of(queue: &Queue, id: &str) -> Option<u64> {
    queue
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.schedule.id() == id)
        .and_then(|info| info.next_due_ms)
}

#[tokio::test]
async fn two_schedulers_racing_on_one_tick_produce_one_job() {
    let redis = TestRedis::start();
    let queue = redis.queue("racing").await;
    let hourly = Schedule::every("hourly", Duration::from_secs(3600)).name("report");
    queue
        .upsert_schedule(&hourly, &"build the report")
        .await
        .unwrap();

    const SCHEDULERS: usize = 8;
    const TICKS: u64 = 20;
    let mut schedulers = Vec::new();
    for _ in 0..SCHEDULERS {
        // Each on its own connection, as separate processes would be.
        schedulers.push(Scheduler::new(&redis.queue("racing").await));
    }
    let mut enqueued = 0;
    let base = now_ms() - 1;
    for tick in 0..TICKS {
        // A tick that came due just now (within its hour: not a missed one).
        set_due(&redis, &queue, "hourly", base - tick).await;
        let barrier = Arc::new(Barrier::new(SCHEDULERS));
        let mut racing = Vec::new();
        for scheduler in &schedulers {
            let (scheduler, barrier) = (scheduler.clone(), barrier.clone());
            racing.push(tokio::spawn(async move {
                barrier.wait().await;
                scheduler.run_once().await.unwrap()
            }));
        }
        let mut reports: Vec<SchedulerReport> = Vec::new();
        for task in racing {
            reports.push(task.await.unwrap());
        }
        let won: u64 = reports.iter().map(|r| r.enqueued).sum();
        assert_eq!(won, 1, "tick {tick}: {reports:?}");
        enqueued += won;
        assert!(due_of(&queue, "hourly").await.unwrap() > now_ms());
    }
    assert_eq!(
        redis.len(queue.keys().stream(Priority::Medium)).await,
        TICKS
    );
    assert_eq!(enqueued, TICKS);

    // The second guard: a tick that made its job makes no other, even when
    // its due time comes back (a schedule removed and added again, say).
    set_due(&redis, &queue, "hourly", base).await;
    let again = schedulers[0].run_once().await.unwrap();
    assert_eq!((again.enqueued, again.skipped), (0, 1), "{again:?}");
    assert_eq!(
        redis.len(queue.keys().stream(Priority::Medium)).await,
        TICKS
    );
    let counters = redis.counters(&queue).await;
    assert_eq!(counters.get("schedule_ticks"), Some(&(TICKS as i64)));
}

#[tokio::test]
async fn schedulers_in_separate_processes_make_one_job_per_tick() {
    let redis = TestRedis::start();
    let queue = redis.queue("processes").await;
    let hourly = Schedule::every("hourly", Duration::from_secs(3600));
    queue.upsert_schedule(&hourly, &"x").await.unwrap();
    let base = now_ms() - 1;
    for tick in 0..5u64 {
        set_due(&redis, &queue, "hourly", base - tick).await;
        let url = redis.server.url();
        let outputs = tokio::task::spawn_blocking(move || {
            let children: Vec<_> = (0..3)
                .map(|_| {
                    std::process::Command::new(env!("CARGO_BIN_EXE_streamq"))
                        .args(["schedule", "run", "--once", "--queue", "processes"])
                        .args(["--redis", &url])
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            children
                .into_iter()
                .map(|child| String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(
            redis.len(queue.keys().stream(Priority::Medium)).await,
            tick + 1,
            "tick {tick}: {outputs:?}"
        );
        let won = outputs
            .iter()
            .filter(|o| o.starts_with("enqueued 1"))
            .count();
        assert_eq!(won, 1, "{outputs:?}");
    }
}

#[tokio::test]
async fn missed_ticks_are_skipped_or_run_once_as_each_schedule_says() {
    let redis = TestRedis::start();
    let queue = redis.queue("catchup").await;
    let skip = Schedule::every("skip", Duration::from_secs(1)).priority(Priority::High);
    let once = Schedule::every("once", Duration::from_secs(1))
        .priority(Priority::Low)
        .catch_up(CatchUp::RunOnce);
    queue.upsert_schedule(&skip, &"s").await.unwrap();
    queue.upsert_schedule(&once, &"o").await.unwrap();
    // Down for ten seconds: ten ticks of each passed.
    let long_ago = now_ms() - 10_000;
    set_due(&redis, &queue, "skip", long_ago).await;
    set_due(&redis, &queue, "once", long_ago).await;

    let report = Scheduler::new(&queue).run_once().await.unwrap();
    assert_eq!((report.enqueued, report.skipped), (1, 1), "{report:?}");
    assert_eq!(redis.len(queue.keys().stream(Priority::High)).await, 0);
    assert_eq!(redis.len(queue.keys().stream(Priority::Low)).await, 1);
    let now = now_ms();
    for id in ["skip", "once"] {
        let due = due_of(&queue, id).await.unwrap();
        assert!(
            due > now - 1000 && due % 1000 == 0,
            "{id} resumes at the next tick: {due}"
        );
    }
    // Nothing more until the next tick.
    let again = Scheduler::new(&queue).run_once().await.unwrap();
    assert!(again.enqueued + again.skipped <= 2, "{again:?}");
}

#[tokio::test]
async fn schedules_are_listed_updated_and_removed() {
    let redis = TestRedis::start();
    let queue = redis.queue("crud").await;
    let digest = Schedule::cron("digest", "0 9 * * MON-FRI", "Europe/Paris")
        .name("digest")
        .priority(Priority::High)
        .catch_up(CatchUp::RunOnce);
    let first = queue.upsert_schedule(&digest, &"send it").await.unwrap();
    assert_eq!(first.change, ScheduleChange::Created);
    assert!(first.next_due_ms > now_ms());
    let same = queue.upsert_schedule(&digest, &"send it").await.unwrap();
    assert_eq!(same.change, ScheduleChange::Unchanged);
    assert_eq!(same.next_due_ms, first.next_due_ms);

    let list = queue.schedules().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].schedule, digest);
    assert_eq!(list[0].next_due_ms, Some(first.next_due_ms));

    let every = Schedule::every("digest", Duration::from_secs(60)).name("digest");
    let changed = queue.upsert_schedule(&every, &"send it").await.unwrap();
    assert_eq!(changed.change, ScheduleChange::Updated);
    assert_eq!(changed.next_due_ms % 60_000, 0);
    let list = queue.schedules().await.unwrap();
    assert_eq!(
        list[0].schedule.timing(),
        &Timing::Every(Duration::from_secs(60))
    );

    let bad = Schedule::cron("bad id", "61 * * * *", "Nowhere/Town");
    match queue.upsert_schedule(&bad, &"x").await {
        Err(Error::Config(err)) => assert_eq!(err.problems().len(), 3, "{err}"),
        other => panic!("expected a config error, got {other:?}"),
    }

    // A scheduler that read the schedule before its removal finds it gone.
    set_due(&redis, &queue, "digest", now_ms() - 1).await;
    assert!(queue.remove_schedule("digest").await.unwrap());
    assert!(!queue.remove_schedule("digest").await.unwrap());
    assert!(queue.schedules().await.unwrap().is_empty());
    let report = Scheduler::new(&queue).run_once().await.unwrap();
    assert_eq!(report, SchedulerReport::default());
    assert_eq!(redis.len(queue.keys().stream(Priority::Medium)).await, 0);
}

#[tokio::test]
async fn running_schedulers_wake_on_changes_and_make_one_job_per_tick() {
    let redis = TestRedis::start();
    let queue = redis.queue("running").await;
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for _ in 0..3 {
        let scheduler = Scheduler::new(&redis.queue("running").await);
        running.push(tokio::spawn(scheduler.run(shutdown.clone())));
    }
    // The schedulers are asleep with nothing to do; a new schedule wakes them.
    let every = Schedule::every("tick", Duration::from_millis(200));
    queue.upsert_schedule(&every, &7u32).await.unwrap();
    let cron = Schedule::cron("cron", "* * * * * *", "UTC").priority(Priority::Low);
    queue.upsert_schedule(&cron, &8u32).await.unwrap();
    support::eventually("five ticks of each", support::WAIT, || {
        let (redis, queue) = (&redis, &queue);
        async move {
            redis.len(queue.keys().stream(Priority::Medium)).await >= 5
                && redis.len(queue.keys().stream(Priority::Low)).await >= 5
        }
    })
    .await;
    shutdown.cancel();
    let mut total = 0;
    for task in running {
        total += task.await.unwrap().unwrap().enqueued;
    }
    let jobs = redis.len(queue.keys().stream(Priority::Medium)).await
        + redis.len(queue.keys().stream(Priority::Low)).await;
    assert_eq!(total, jobs, "each enqueue counted by exactly one scheduler");
    // One job per tick: every job's tick (its ready time) is distinct.
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(queue.keys().stream(Priority::Medium))
        .arg("-")
        .arg("+")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    let mut envelopes: Vec<Vec<u8>> = entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().next().unwrap().1)
        .collect();
    let before = envelopes.len();
    // A job's ready time is its tick (docs/design.md: envelope field 6).
    let mut ticks: Vec<u64> = envelopes
        .drain(..)
        .map(|bytes| {
            use serde::de::IgnoredAny as Any;
            type Layout = (Any, Any, Any, Any, Any, Any, u64, Any, Any, Any, Any);
            rmp_serde::from_slice::<Layout>(&bytes).unwrap().6
        })
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), before, "two jobs for one tick");
    assert!(ticks.iter().all(|us| (us / 1000) % 200 == 0), "{ticks:?}");
}
