//! Rate limits against a real Redis: one limit shared by many workers and
//! processes, per-group limits that do not hold other groups back, waiting
//! without polling, and a handler's "rate-limited, retry after".
//!
//! Starts are checked from the claim times the workers recorded
//! ([`streamq::Job::claimed_ms`], the clock the limit counts on), window by
//! window, never from sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamq::{EnqueueOptions, Job, JobError, JobId, RateLimit, WorkerConfig};
use support::{TestRedis, fast, spawn_worker, until_stats, wait_for};

/// The shared limit of the many-workers test: 4 starts per 250 ms window.
const MAX: u32 = 4;
const PERIOD: Duration = Duration::from_millis(250);
const JOBS: u32 = 60;
const QUEUE: &str = "limited";
/// Set in the worker processes the many-workers test starts.
const CHILD_URL: &str = "STREAMQ_LIMIT_CHILD_URL";
const CHILD_OUT: &str = "STREAMQ_LIMIT_CHILD_OUT";

fn limited() -> WorkerConfig {
    fast()
        .concurrency(8)
        .rate_limit(RateLimit::new(MAX, PERIOD))
}

/// Claims per window (`claimed_ms / period`).
fn per_window(claims: &[u64], period: Duration) -> BTreeMap<u64, u32> {
    let period = u64::try_from(period.as_millis()).unwrap();
    let mut windows = BTreeMap::new();
    for claimed in claims {
        *windows.entry(claimed / period).or_insert(0) += 1;
    }
    windows
}

/// Not a test of its own: the body of each worker process that
/// `many_workers_and_processes_never_start_more_than_the_limit` starts. It
/// returns at once unless it is such a process.
#[tokio::test]
async fn limit_child_process() {
    let (Ok(url), Ok(out)) = (std::env::var(CHILD_URL), std::env::var(CHILD_OUT)) else {
        return;
    };
    let config = streamq::RedisConfig::from_url(&url).unwrap();
    let queue = streamq::Queue::builder(QUEUE)
        .connect(&config)
        .await
        .unwrap();
    let file = Arc::new(Mutex::new(std::fs::File::create(out).unwrap()));
    let (_stop, worker) = spawn_worker(&queue, limited(), move |job: Job<u32>| {
        let file = file.clone();
        async move {
            let mut file = file.lock().unwrap();
            writeln!(file, "{} {}", job.claimed_ms(), job.id()).unwrap();
            file.flush().unwrap();
            Ok(())
        }
    });
    // Runs until the parent test kills this process.
    worker.await.unwrap();
}

/// What the worker processes recorded: (claimed ms, job id) per line.
fn child_claims(files: &[std::path::PathBuf]) -> Vec<Vec<(u64, String)>> {
    files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let (ms, id) = line.split_once(' ')?;
                    Some((ms.parse().ok()?, id.to_owned()))
                })
                .collect()
        })
        .collect()
}

/// Kills the worker processes even when the test fails.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn many_workers_and_processes_never_start_more_than_the_limit() {
    let redis = TestRedis::start();
    let queue = redis.queue(QUEUE).await;
    let mut batch = queue.batch();
    for n in 0..JOBS {
        batch.push(&n, &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();

    // Two worker processes first, each until it has started a job, so the
    // limit is shared across processes for certain.
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("child-{i}.txt")))
        .collect();
    let children = Children(
        files
            .iter()
            .map(|out| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["limit_child_process", "--exact", "--nocapture"])
                    .env(CHILD_URL, redis.server.url())
                    .env(CHILD_OUT, out)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    wait_for("each worker process started a job", || {
        child_claims(&files).iter().all(|claims| !claims.is_empty())
    })
    .await;

    // Then three workers in this process, each on its own connection.
    let claims: Arc<Mutex<Vec<(u64, JobId)>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let queue = redis.queue(QUEUE).await;
        let claims = claims.clone();
        workers.push(spawn_worker(&queue, limited(), move |job: Job<u32>| {
            claims
                .lock()
                .unwrap()
                .push((job.claimed_ms(), job.id().clone()));
            std::future::ready(Ok(()))
        }));
    }
    let all = || {
        let mut all: Vec<(u64, String)> = claims
            .lock()
            .unwrap()
            .iter()
            .map(|(ms, id)| (*ms, id.to_string()))
            .collect();
        all.extend(child_claims(&files).into_iter().flatten());
        all
    };
    wait_for("every job started", || {
        all()
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<HashSet<_>>()
            .len()
            == JOBS as usize
    })
    .await;
    for (stop, _) in &workers {
        stop.cancel();
    }
    for (_, worker) in workers {
        worker.await.unwrap();
    }
    drop(children);

    let all = all();
    assert_eq!(all.len(), JOBS as usize, "each job started once");
    let windows = per_window(&all.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(), PERIOD);
    for (window, started) in &windows {
        assert!(
            *started <= MAX,
            "window {window} started {started} jobs, the limit is {MAX}: {windows:?}"
        );
    }
    assert!(windows.len() >= (JOBS / MAX) as usize);
}

#[tokio::test]
async fn workers_waiting_on_the_limit_sleep_instead_of_polling() {
    let redis = TestRedis::start();
    let queue = redis.queue("sleepy").await;
    for n in 0..4u32 {
        queue.enqueue(&n, &EnqueueOptions::new()).await.unwrap();
    }
    // Upkeep far away, so every script call is a fetch (or its wake-up).
    let config = fast()
        .rate_limit(RateLimit::new(1, Duration::from_millis(500)))
        .promote_interval(Duration::from_secs(600))
        .reclaim_interval(Duration::from_secs(600));
    let claims: Arc<Mutex<Vec<u64>>> = Arc::default();
    let started = Instant::now();
    let calls_before = redis.script_calls().await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let claims = claims.clone();
        workers.push(spawn_worker(
            &queue,
            config.clone(),
            move |job: Job<u32>| {
                claims.lock().unwrap().push(job.claimed_ms());
                std::future::ready(Ok(()))
            },
        ));
    }
    wait_for("all four jobs started", || {
        claims.lock().unwrap().len() == 4
    })
    .await;
    let calls = redis.script_calls().await - calls_before;
    let elapsed = started.elapsed();
    for (stop, _) in &workers {
        stop.cancel();
    }
    for (_, worker) in workers {
        worker.await.unwrap();
    }

    let windows = per_window(&claims.lock().unwrap(), Duration::from_millis(500));
    assert!(windows.values().all(|n| *n == 1), "{windows:?}");
    // Each worker makes a few calls per window it lives through (the fetch
    // that finds the window spent, the one after its wake-up, startup and
    // upkeep); a polling worker would make thousands.
    let windows_lived = u64::try_from(elapsed.as_millis() / 500).unwrap() + 2;
    assert!(
        calls <= 2 * 6 * windows_lived + 20,
        "{calls} script calls over {elapsed:?}"
    );
}

#[tokio::test]
async fn a_limited_group_does_not_hold_back_other_groups_and_loses_nothing() {
    let redis = TestRedis::start();
    let queue = redis.queue("tenants").await;
    let period = Duration::from_millis(500);
    let mut batch = queue.batch();
    for n in 0..20u32 {
        batch
            .push(&("a", n), &EnqueueOptions::new().rate_group("tenant-a"))
            .unwrap();
    }
    for n in 0..3u32 {
        batch
            .push(&("b", n), &EnqueueOptions::new().rate_group("tenant-b"))
            .unwrap();
    }
    for n in 0..5u32 {
        batch.push(&("none", n), &EnqueueOptions::new()).unwrap();
    }
    batch.send().await.unwrap();

    let runs: Arc<Mutex<Vec<(String, u64, u32)>>> = Arc::default();
    let log = runs.clone();
    let config = fast().group_rate_limit(RateLimit::new(2, period));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let log = log.clone();
        workers.push(spawn_worker(
            &queue,
            config.clone(),
            move |job: Job<(String, u32)>| {
                log.lock().unwrap().push((
                    job.payload().0.clone(),
                    job.claimed_ms(),
                    job.attempt(),
                ));
                std::future::ready(Ok(()))
            },
        ));
    }
    until_stats("all 28 jobs completed", &queue, |s| s.completed() == 28).await;
    for (stop, _) in &workers {
        stop.cancel();
    }
    for (_, worker) in workers {
        worker.await.unwrap();
    }

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 28, "each job ran once");
    assert!(
        runs.iter().all(|(_, _, attempt)| *attempt == 1),
        "no attempt spent"
    );
    let of = |group: &str| -> Vec<u64> {
        runs.iter()
            .filter(|(g, _, _)| g == group)
            .map(|(_, ms, _)| *ms)
            .collect()
    };
    for group in ["a", "b"] {
        let windows = per_window(&of(group), period);
        assert!(windows.values().all(|n| *n <= 2), "{group}: {windows:?}");
    }
    // Tenant a needs ten windows at two per window; b and the ungrouped
    // jobs are not queued behind it.
    let last = |group: &str| *of(group).iter().max().unwrap() / 500;
    let windows_a = per_window(&of("a"), period).len();
    assert!(windows_a >= 10, "{windows_a}");
    assert!(last("b") < last("a"), "tenant b waited for tenant a");
    assert!(
        last("none") < last("a"),
        "ungrouped jobs waited for tenant a"
    );

    let counters = redis.counters(&queue).await;
    assert_eq!(counters.get("failed:medium"), None, "{counters:?}");
    assert!(counters.get("rate_limited:medium").copied().unwrap_or(0) >= 18);
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
}

#[tokio::test]
async fn a_handler_reported_rate_limit_brings_the_job_back_later_without_spending_an_attempt() {
    let redis = TestRedis::start();
    let queue = redis
        .open(streamq::Queue::builder("downstream").max_attempts(1))
        .await;
    let id = queue
        .enqueue(&"call the api", &EnqueueOptions::new())
        .await
        .unwrap();

    let runs: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let returned_at: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (log, returns) = (runs.clone(), returned_at.clone());
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<String>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        log.lock().unwrap().push((job.claimed_ms(), job.attempt()));
        let result = if n < 2 {
            returns.lock().unwrap().insert(n, now_ms());
            Err(JobError::rate_limited(Duration::from_millis(300)))
        } else {
            Ok(())
        };
        std::future::ready(result)
    });
    until_stats("the job completed", &queue, |s| s.completed() == 1).await;
    stop.cancel();
    let report = worker.await.unwrap();

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|(_, attempt)| *attempt == 1), "{runs:?}");
    let returned_at = returned_at.lock().unwrap().clone();
    for n in 0..2u32 {
        let next = runs[n as usize + 1].0;
        assert!(
            next >= returned_at[&n] + 300,
            "run {} claimed at {next}, before {} + 300 ms",
            n + 2,
            returned_at[&n]
        );
    }
    assert_eq!((report.retried, report.dead_lettered), (0, 0));
    let counters = redis.counters(&queue).await;
    assert_eq!(
        counters.get("rate_limited:medium"),
        Some(&2),
        "{counters:?}"
    );
    assert_eq!(counters.get("failed:medium"), None, "{counters:?}");
    assert_eq!(queue.stats().await.unwrap().dead_letters, 0);
    let _ = id;
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A fetch whose clock reading is older than the window already open (its
/// caller read the clock, then waited to run) claims nothing until that
/// window, instead of starting its own old window over with a fresh count
/// (which let a loaded machine start twice the limit in one window).
#[tokio::test]
async fn a_fetch_with_a_stale_clock_cannot_start_a_closed_window_over() {
    let redis = TestRedis::start();
    let queue = redis.queue("stale-clock").await;
    for n in 0..12u32 {
        queue.enqueue(&n, &EnqueueOptions::new()).await.unwrap();
    }
    let raw = redis.raw().await;
    let keys = queue.keys();
    let period = 250u64;
    // (status, jobs claimed or ms to wait) of one fetch of up to 4 at `now`.
    let fetch = |now: u64| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(include_str!("../lua/fetch.lua"))
            .arg(7)
            .arg(keys.stats());
        for stream in keys.streams() {
            cmd.arg(stream.as_str());
        }
        cmd.arg(keys.paused()).arg(keys.rate());
        cmd.arg("streamq")
            .arg("c1")
            .arg(4)
            .arg(MAX)
            .arg(period)
            .arg(now);
        cmd
    };
    let run = |cmd: redis::Cmd| {
        let mut raw = raw.clone();
        async move {
            let reply: Vec<redis::Value> = cmd.query_async(&mut raw).await.unwrap();
            let status: i64 = redis::from_redis_value(reply[0].clone()).unwrap();
            let detail = match status {
                0 => {
                    redis::from_redis_value::<Vec<redis::Value>>(reply[1].clone())
                        .unwrap()
                        .len() as i64
                        / 3
                }
                _ => redis::from_redis_value::<i64>(reply[1].clone()).unwrap(),
            };
            (status, detail)
        }
    };
    let window = 7_000_000_000u64;
    assert_eq!(
        run(fetch(window * period + 10)).await,
        (0, 4),
        "the window's four"
    );
    assert_eq!(run(fetch(window * period + 20)).await, (3, 230), "spent");
    assert_eq!(
        run(fetch((window + 1) * period + 5)).await,
        (0, 4),
        "the next window"
    );
    // Read the clock in the first window, ran in the second.
    assert_eq!(
        run(fetch(window * period + 30)).await,
        (3, 220),
        "a stale clock claims nothing until the open window"
    );
    assert_eq!(
        run(fetch((window + 1) * period + 6)).await,
        (3, 244),
        "still spent"
    );
}

/// The same for a group's limit: a `rate_groups` call whose clock reading
/// is older than the group's open window counts in that open window.
#[tokio::test]
async fn a_group_admission_with_a_stale_clock_counts_in_the_open_window() {
    let redis = TestRedis::start();
    let queue = redis.queue("stale-group").await;
    for n in 0..5u32 {
        queue.enqueue(&n, &EnqueueOptions::new()).await.unwrap();
    }
    let raw = redis.raw().await;
    let keys = queue.keys();
    let stream = keys.stream(streamq::Priority::Medium).to_owned();
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("streamq")
        .arg("c1")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut raw.clone())
        .await
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 5);
    let (max, period) = (2u32, 250u64);
    // How many of `jobs` (indexes into `ids`) a call at `now` holds back.
    let admit = |now: u64, jobs: &[usize]| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(include_str!("../lua/rate_groups.lua"))
            .arg(7)
            .arg(keys.stats());
        for s in keys.streams() {
            cmd.arg(s.as_str());
        }
        cmd.arg(keys.delayed()).arg(keys.rate_group("tenant"));
        cmd.arg("streamq").arg("c1").arg(now).arg(max).arg(period);
        for &j in jobs {
            cmd.arg(3).arg(&ids[j]).arg(7).arg("envelope");
        }
        let mut raw = raw.clone();
        async move {
            let reply: (i64, Vec<String>, Vec<redis::Value>) =
                cmd.query_async(&mut raw).await.unwrap();
            reply.2.len() / 2
        }
    };
    let window = 7_000_000_000u64;
    assert_eq!(
        admit(window * period + 10, &[0, 1]).await,
        0,
        "the window's two"
    );
    assert_eq!(
        admit((window + 1) * period + 5, &[2]).await,
        0,
        "one in the next"
    );
    // Read the clock in the first window, ran in the second: one token left.
    assert_eq!(
        admit(window * period + 30, &[3, 4]).await,
        1,
        "a stale clock spends the open window's tokens"
    );
}
