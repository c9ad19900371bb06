//! Other languages against the Rust crate, through the same Redis: Rust
//! produces and a foreign client consumes, a foreign client produces and
//! Rust consumes; each exactly once, most urgent first, a failing job
//! retried then dead-lettered with its error, compressed and uncompressed
//! payloads, and a SIGKILLed foreign worker's job reclaimed by Rust.
//!
//! The foreign side is each client's interop driver
//! (`clients/python/tests/interop_driver.py`, `clients/node/test/interop-driver.mjs`),
//! set up by the client's own idempotent script (`clients/python/dev-env.sh`:
//! a virtualenv from PyPI; `clients/node/dev-env.sh`: `npm ci` and `tsc`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use streamq::{EnqueueOptions, Job, JobError, Priority, Queue};
use support::{TestRedis, eventually, fast, spawn_worker, until_stats};

const WAIT: Duration = Duration::from_secs(60);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The payload every driver reads and writes (`docs/protocol.md`: a map with
/// field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    seq: u64,
    origin: String,
    fail: bool,
    hang: bool,
    pad: String,
}

/// A client in another language, by its interop driver.
#[derive(Debug, Clone, Copy)]
enum Foreign {
    Python,
    Node,
}

/// Runs a client's `dev-env.sh` (once per test run): the path it prints.
fn dev_env(client: &str, cell: &'static OnceLock<PathBuf>) -> &'static Path {
    cell.get_or_init(|| {
        let script = Path::new(ROOT)
            .join("clients")
            .join(client)
            .join("dev-env.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs the client's dev-env.sh");
        assert!(out.status.success(), "{} failed", script.display());
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

impl Foreign {
    /// The driver's command line, its environment set up once per test run.
    fn driver(self) -> Command {
        match self {
            Foreign::Python => {
                static PYTHON: OnceLock<PathBuf> = OnceLock::new();
                let mut command = Command::new(dev_env("python", &PYTHON));
                command.arg(Path::new(ROOT).join("clients/python/tests/interop_driver.py"));
                command
            }
            Foreign::Node => {
                static DRIVER: OnceLock<PathBuf> = OnceLock::new();
                let mut command = Command::new("node");
                command.arg(dev_env("node", &DRIVER));
                command
            }
        }
    }

    /// Runs `produce` to the end; its per-job lines, by seq.
    fn produce(self, url: &str, queue: &str, args: &[&str]) -> BTreeMap<u64, String> {
        let out = self
            .driver()
            .args(["produce", "--redis", url, "--queue", queue])
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .expect("the driver runs");
        assert!(out.status.success(), "{self:?} produce failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter_map(|v| Some((v["seq"].as_u64()?, v["id"].as_str()?.to_owned())))
            .collect()
    }

    /// Starts `consume`; its events are collected as they come.
    fn consume(self, url: &str, queue: &str, args: &[&str]) -> Consumer {
        let mut child = self
            .driver()
            .args(["consume", "--redis", url, "--queue", queue])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the driver starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        Consumer { child, events }
    }
}

/// A running foreign consumer, killed if the test ends first.
struct Consumer {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Consumer {
    fn events(&self, kind: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    /// Waits for the driver to exit by itself (it stops gracefully once it
    /// saw what it was told to expect).
    async fn finished(mut self) -> Vec<Value> {
        let status = tokio::task::spawn_blocking(move || {
            let status = self.child.wait();
            (status, self)
        })
        .await
        .unwrap();
        let (status, this) = status;
        assert!(status.unwrap().success(), "the foreign consumer failed");
        this.events.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn priority_of(seq: u64) -> Priority {
    Priority::ALL[(seq % 4) as usize]
}

/// Checks `done` events: each of `expected` once, most urgent first.
fn exactly_once_most_urgent_first(done: &[Value], expected: &BTreeSet<u64>, origin: &str) {
    let seqs: Vec<u64> = done.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), expected.len(), "each job once: {seqs:?}");
    assert_eq!(&seqs.iter().copied().collect::<BTreeSet<_>>(), expected);
    let ranks: Vec<usize> = done
        .iter()
        .map(|e| {
            let name = e["priority"].as_str().unwrap();
            Priority::ALL
                .iter()
                .position(|p| p.as_str() == name)
                .unwrap()
        })
        .collect();
    assert!(ranks.is_sorted(), "most urgent first: {ranks:?}");
    for event in done {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(event["priority"], priority_of(seq).as_str());
        assert_eq!(event["origin"], origin);
    }
}

/// Rust enqueues `seqs`, compressed above 512 bytes with every other job
/// padded to 2 KiB; `fail` fails in every handler.
async fn rust_produces(
    queue: &Queue,
    seqs: std::ops::Range<u64>,
    fail: u64,
) -> BTreeMap<u64, String> {
    let mut ids = BTreeMap::new();
    let mut batch = queue.batch();
    for seq in seqs.clone() {
        let payload = Payload {
            seq,
            origin: "rust".into(),
            fail: seq == fail,
            hang: false,
            pad: if seq % 2 == 0 {
                "x".repeat(2048)
            } else {
                String::new()
            },
        };
        let options = EnqueueOptions::new()
            .priority(priority_of(seq))
            .name("interop")
            .max_attempts(3);
        batch.push(&payload, &options).unwrap();
    }
    for (seq, id) in seqs.zip(batch.send().await.unwrap()) {
        ids.insert(seq, id.to_string());
    }
    ids
}

async fn rust_to_foreign(foreign: Foreign, mode: &str) {
    let redis = TestRedis::start();
    let queue = redis
        .open(Queue::builder("interop").compress_above(512))
        .await;
    let ids = rust_produces(&queue, 0..120, 7).await;
    let url = redis.server.url();
    let consumer = foreign.consume(
        &url,
        "interop",
        &[
            "--expect-done",
            "119",
            "--expect-failures",
            "3",
            "--mode",
            mode,
        ],
    );
    let events = consumer.finished().await;

    let done: Vec<Value> = events
        .iter()
        .filter(|e| e["event"] == "done")
        .cloned()
        .collect();
    let expected: BTreeSet<u64> = (0..120).filter(|s| *s != 7).collect();
    exactly_once_most_urgent_first(&done, &expected, "rust");
    for event in &done {
        assert_eq!(event["id"], ids[&event["seq"].as_u64().unwrap()]);
    }
    let failed: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "failed")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [0, 1, 2], "the failing job ran three times");
    let letters = queue.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id.as_str(), ids[&7]);
    assert_eq!(
        letters[0].error,
        "failed 3 of 3 attempts, last: interop failure seq=7"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.completed(), stats.waiting(), stats.in_flight()),
        (119, 0, 0)
    );
}

async fn foreign_to_rust(foreign: Foreign) {
    let redis = TestRedis::start();
    let url = redis.server.url();
    // Compressed (2 KiB of padding, compressed above 512 bytes), then not.
    let mut ids = foreign.produce(
        &url,
        "interop",
        &[
            "--count",
            "60",
            "--pad",
            "2048",
            "--compress-above",
            "512",
            "--fail",
            "7",
        ],
    );
    ids.extend(foreign.produce(&url, "interop", &["--count", "60", "--first", "60"]));
    assert_eq!(ids.len(), 120);
    let queue = redis.queue("interop").await;
    // 60 payloads carry 2 KiB of padding: only compression keeps every
    // envelope under 2 KiB.
    let largest = largest_envelope(redis.raw().await, &queue).await;
    assert!(
        largest < 2048,
        "the padded payloads were compressed ({largest} bytes)"
    );

    let done = Arc::new(Mutex::new(Vec::new()));
    let record = done.clone();
    let (stop, worker) = spawn_worker(
        &queue,
        fast().concurrency(1).prefetch(0),
        move |job: Job<Payload>| {
            let record = record.clone();
            async move {
                let p = job.payload();
                if p.fail {
                    return Err(JobError::retry(format!("rust failure seq={}", p.seq)));
                }
                record.lock().unwrap().push(serde_json::json!({
                    "seq": p.seq, "id": job.id().as_str(), "priority": job.priority().as_str(),
                    "origin": p.origin, "pad": p.pad.len(),
                }));
                Ok(())
            }
        },
    );
    until_stats("119 completed and one dead letter", &queue, |s| {
        s.completed() == 119 && s.dead_letters == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    let done = done.lock().unwrap().clone();
    let expected: BTreeSet<u64> = (0..120).filter(|s| *s != 7).collect();
    exactly_once_most_urgent_first(&done, &expected, foreign.origin());
    for event in &done {
        let seq = event["seq"].as_u64().unwrap();
        assert_eq!(event["id"], ids[&seq]);
        assert_eq!(event["pad"], if seq < 60 { 2048 } else { 0 });
    }
    let letters = queue.dead_letters(None, 10).await.unwrap().letters;
    assert_eq!(letters[0].job_id.as_str(), ids[&7]);
    assert_eq!(
        letters[0].error,
        "failed 3 of 3 attempts, last: rust failure seq=7"
    );
}

/// Stream entries as XRANGE returns them: (id, field/value pairs).
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The largest envelope waiting in `queue`, in bytes.
async fn largest_envelope(mut raw: redis::aio::MultiplexedConnection, queue: &Queue) -> usize {
    let mut largest = 0;
    for priority in Priority::ALL {
        let entries: Entries = redis::cmd("XRANGE")
            .arg(queue.keys().stream(priority))
            .arg("-")
            .arg("+")
            .query_async(&mut raw)
            .await
            .unwrap();
        for (_, fields) in entries {
            largest = largest.max(fields[0].1.len());
        }
    }
    largest
}

async fn killed_foreign_worker(foreign: Foreign) {
    let redis = TestRedis::start();
    let queue = redis.queue("interop").await;
    let payload = Payload {
        seq: 1,
        origin: "rust".into(),
        fail: false,
        hang: true,
        pad: String::new(),
    };
    let id = queue
        .enqueue(&payload, &EnqueueOptions::new())
        .await
        .unwrap();
    let url = redis.server.url();
    let mut consumer = foreign.consume(
        &url,
        "interop",
        &["--lease-ms", "1000", "--expect-done", "1"],
    );
    eventually("the foreign worker to start the job", WAIT, || async {
        !consumer.events("started").is_empty()
    })
    .await;
    consumer.kill();

    let runs = Arc::new(Mutex::new(Vec::new()));
    let record = runs.clone();
    let config = fast().lease(Duration::from_secs(1));
    let (stop, worker) = spawn_worker(&queue, config, move |job: Job<Payload>| {
        let record = record.clone();
        async move {
            record
                .lock()
                .unwrap()
                .push((job.id().clone(), job.deliveries()));
            Ok(())
        }
    });
    until_stats("the job completed by Rust", &queue, |s| s.completed() == 1).await;
    stop.cancel();
    let report = worker.await.unwrap();
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, id);
    assert!(runs[0].1 >= 2, "delivered to the killed worker first");
    assert_eq!(report.reclaimed, 1);
}

impl Foreign {
    fn origin(self) -> &'static str {
        match self {
            Foreign::Python => "python",
            Foreign::Node => "node",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_produces_and_python_consumes() {
    rust_to_foreign(Foreign::Python, "sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_produces_and_python_asyncio_consumes() {
    rust_to_foreign(Foreign::Python, "async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_produces_and_rust_consumes() {
    foreign_to_rust(Foreign::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_python_workers_job_is_reclaimed_by_rust() {
    killed_foreign_worker(Foreign::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_produces_and_node_consumes() {
    rust_to_foreign(Foreign::Node, "async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_produces_and_rust_consumes() {
    foreign_to_rust(Foreign::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_workers_job_is_reclaimed_by_rust() {
    killed_foreign_worker(Foreign::Node).await;
}

#[test]
fn the_packaged_lua_is_the_repositorys() {
    let lua = Path::new(ROOT).join("lua");
    for packaged in ["clients/python/streamq/lua", "clients/node/lua"] {
        same_scripts(&lua, &Path::new(ROOT).join(packaged));
    }
}

fn same_scripts(lua: &Path, packaged: &Path) {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lua"))
            .collect()
    };
    assert_eq!(names(lua), names(packaged), "the same scripts");
    for name in names(lua) {
        assert_eq!(
            std::fs::read(lua.join(&name)).unwrap(),
            std::fs::read(packaged.join(&name)).unwrap(),
            "{name} differs from lua/{name}: run clients/sync-lua.sh, never edit the copy"
        );
    }
}
