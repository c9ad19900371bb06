//! Fault tests with real processes: `streamq consume` workers killed,
//! paused and disconnected, and a redis-server killed and restarted. Each
//! test ends by checking the whole state: every enqueued job completed or
//! dead-lettered, nothing lost, duplicates within the stated bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamq::{EnqueueOptions, JobId, LocalRedis, Queue};
use support::{TestRedis, WAIT, eventually, until_stats, wait_for};

/// A `streamq consume` process.
struct Consumer {
    child: Option<Child>,
    record: PathBuf,
}

impl Consumer {
    fn start(url: &str, queue: &str, record: &Path, extra: &[&str]) -> Consumer {
        let child = Command::new(env!("CARGO_BIN_EXE_streamq"))
            .args(["consume", "--redis", url, "--queue", queue])
            .arg("--record")
            .arg(record)
            .args(["--lease-ms", "1000", "--reclaim-ms", "200"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("streamq consume starts");
        Consumer {
            child: Some(child),
            record: record.to_owned(),
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits for the process to exit by itself and returns its final report.
    fn finish(mut self) -> serde_json::Value {
        let child = self.child.take().unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "consumer failed: {stderr}");
        let last = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        serde_json::from_str(last).unwrap()
    }

    fn recorded(&self) -> usize {
        std::fs::read_to_string(&self.record)
            .map(|s| s.matches('\n').count())
            .unwrap_or(0)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every "<id> <deliveries>" line of the record files, by id. A consumer
/// may be writing a line as it is read: only complete lines count.
fn recorded(files: &[&Path]) -> HashMap<String, Vec<u32>> {
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                continue;
            };
            let (id, deliveries) = line.split_once(' ').unwrap();
            seen.entry(id.to_owned())
                .or_default()
                .push(deliveries.parse().unwrap());
        }
    }
    seen
}

async fn enqueue_many(queue: &Queue, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    let mut batch = queue.batch();
    for i in 0..n {
        batch.push(&(i as u64), &EnqueueOptions::new()).unwrap();
    }
    ids.extend(batch.send().await.unwrap());
    ids
}

#[tokio::test]
async fn a_worker_killed_mid_batch_has_all_its_jobs_redelivered_and_completed() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis.queue("sigkill").await;
    let ids = enqueue_many(&queue, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let (a_file, b_file) = (dir.path().join("a"), dir.path().join("b"));

    let a = Consumer::start(
        &url,
        "sigkill",
        &a_file,
        &["--concurrency", "16", "--prefetch", "16", "--work-ms", "20"],
    );
    // 2000 jobs take it 2.5 s: a late look at its record cannot find it
    // done with all of them and holding nothing.
    wait_for("the first worker is busy", || a.recorded() >= 300).await;
    a.kill();
    let stranded = queue.stats().await.unwrap().in_flight();
    assert!(stranded > 0, "the killed worker held no jobs");

    let b = Consumer::start(&url, "sigkill", &b_file, &["--exit-when-idle", "1"]);
    let report = b.finish();
    assert!(
        report["reclaimed"].as_u64().unwrap() >= stranded,
        "{report}"
    );

    let seen = recorded(&[&a_file, &b_file]);
    assert!(
        ids.iter().all(|id| seen.contains_key(id.as_str())),
        "a job was never completed"
    );
    assert_eq!(seen.len(), 2000);
    let repeats: Vec<_> = seen.iter().filter(|(_, d)| d.len() > 1).collect();
    // Only jobs the killed worker had finished but not yet acknowledged can
    // run twice: at most its concurrency plus prefetch.
    assert!(repeats.len() <= 32, "{} duplicates", repeats.len());
    assert!(
        repeats.iter().all(|(_, d)| d[1] >= 2),
        "a repeat was not a redelivery"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.in_flight(), stats.waiting()),
        (2000, 0, 0)
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_with_aof_loses_no_acknowledged_enqueue() {
    let mut redis = TestRedis::with(
        LocalRedis::builder()
            .config("appendonly", ["yes"])
            .config("appendfsync", ["always"]),
    );
    let url = redis.server.url();
    let queue = redis.queue("aof").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("record");
    // No --exit-when-idle: a Redis restart slower than the idle time would
    // let it leave before the enqueues resume. It is stopped below, once
    // every acknowledged job is recorded.
    let consumer = Consumer::start(&url, "aof", &file, &["--work-ms", "2"]);

    let mut acknowledged = Vec::new();
    let mut round = 0u64;
    while acknowledged.len() < 3000 {
        if round == 10 {
            redis.server.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.server.restart().unwrap();
        }
        let mut batch = queue.batch();
        for i in 0..100u64 {
            batch
                .push(&(round * 100 + i), &EnqueueOptions::new())
                .unwrap();
        }
        match batch.send().await {
            Ok(ids) => acknowledged.extend(ids),
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        round += 1;
    }
    let missing = || {
        let seen = recorded(&[&file]);
        acknowledged
            .iter()
            .filter(|id| !seen.contains_key(id.as_str()))
            .count()
    };
    wait_for("every acknowledged enqueue ran", || missing() == 0).await;
    // Enqueues whose reply was lost in the restart may have landed too.
    until_stats("the queue is drained", &queue, |s| s.is_idle()).await;
    consumer.signal("-INT");
    let report = consumer.finish();
    assert_eq!(
        missing(),
        0,
        "acknowledged enqueues lost; worker report {report}"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.in_flight(), stats.waiting()), (0, 0));
    assert!(
        redis
            .server
            .log()
            .contains("DB loaded from append only file")
            || redis
                .server
                .log()
                .contains("Reading the remaining AOF tail"),
        "AOF was not replayed"
    );
}

#[tokio::test]
async fn a_paused_workers_late_ack_is_fenced() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis.queue("paused").await;
    let id = queue.enqueue(&1u64, &EnqueueOptions::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a_file, b_file) = (dir.path().join("a"), dir.path().join("b"));

    let a = Consumer::start(
        &url,
        "paused",
        &a_file,
        // Far longer than the lease plus the second worker's run, so it is
        // still running when stopped, however late the test gets there.
        &["--work-ms", "6000", "--exit-when-idle", "1"],
    );
    until_stats("the first worker holds the job", &queue, |s| {
        s.in_flight() == 1
    })
    .await;
    a.signal("-STOP");
    let b = Consumer::start(
        &url,
        "paused",
        &b_file,
        &["--work-ms", "100", "--exit-when-idle", "1"],
    );
    let b_report = b.finish();
    assert_eq!(b_report["completed"], 1, "{b_report}");
    assert_eq!(b_report["reclaimed"], 1, "{b_report}");
    a.signal("-CONT");
    let a_report = a.finish();
    assert_eq!(a_report["completed"], 0, "{a_report}");
    assert_eq!(a_report["ownership_lost"], 1, "{a_report}");

    // Both ran it (the bound for a paused worker), one acknowledgement counted.
    let seen = recorded(&[&a_file, &b_file]);
    assert_eq!(seen.get(id.as_str()).map(Vec::len), Some(2));
    let counters = redis.counters(&queue).await;
    assert_eq!(counters.get("completed:medium"), Some(&1));
    assert_eq!(counters.get("ownership_lost:medium"), Some(&1));
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_is_dead_lettered_after_max_deliveries() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis.queue("crashy").await;
    let id = queue.enqueue(&1u64, &EnqueueOptions::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let poison = ["--work-ms", "60000", "--max-deliveries", "2"];
    // Two workers in turn take the job and die holding it.
    for n in 0..2u64 {
        let consumer = Consumer::start(&url, "crashy", &dir.path().join(n.to_string()), &poison);
        eventually("this worker took the job", WAIT, || {
            let (r, q) = (&redis, &queue);
            async move {
                r.counters(q)
                    .await
                    .get("reclaimed:medium")
                    .copied()
                    .unwrap_or(0)
                    >= n as i64
            }
        })
        .await;
        until_stats("the job is held", &queue, |s| s.in_flight() == 1).await;
        consumer.kill();
    }
    let last = Consumer::start(
        &url,
        "crashy",
        &dir.path().join("last"),
        &["--max-deliveries", "2", "--exit-when-idle", "1"],
    );
    let report = last.finish();
    assert_eq!(report["dead_lettered"], 1, "{report}");
    let letter = &queue.dead_letters(None, 1).await.unwrap().letters[0];
    assert_eq!(letter.job_id, id);
    assert!(
        letter.error.contains("delivered 2 times"),
        "{}",
        letter.error
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.in_flight(), stats.dead_letters),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn workers_survive_client_kill_and_finish_everything() {
    let redis = TestRedis::start();
    let url = redis.server.url();
    let queue = redis.queue("clientkill").await;
    let ids = enqueue_many(&queue, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..2).map(|n| dir.path().join(format!("{n}"))).collect();
    // No --exit-when-idle: they run until every job is done and the kills
    // are over, then are stopped.
    let consumers: Vec<Consumer> = files
        .iter()
        .map(|f| Consumer::start(&url, "clientkill", f, &["--work-ms", "1"]))
        .collect();
    let mut raw = redis.raw().await;
    let deadline = Instant::now() + WAIT;
    let mut kills = 0;
    while kills <= 5 {
        assert!(Instant::now() < deadline, "only {kills} connections killed");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query_async(&mut raw)
            .await
            .unwrap();
        kills += killed;
    }
    // The test's own connection was killed too: check through a fresh one.
    let fresh = redis.queue("clientkill").await;
    until_stats("every job done", &fresh, |s| {
        s.completed() == 3000 && s.is_idle()
    })
    .await;
    for consumer in consumers {
        consumer.signal("-INT");
        consumer.finish();
    }
    let seen = recorded(&[&files[0], &files[1]]);
    assert!(
        ids.iter().all(|id| seen.contains_key(id.as_str())),
        "a job was lost"
    );
    let repeats = seen.values().filter(|d| d.len() > 1).count();
    // A repeat needs a fetch or ack reply lost with its connection: bounded
    // by what two workers hold (2 x 32) per kill, far fewer in practice.
    assert!(repeats <= 64, "{repeats} duplicates");
    let stats = fresh.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.in_flight(), stats.waiting()),
        (3000, 0, 0)
    );
}
