//! The test harness: a private redis-server per test (from
//! `STREAMQ_REDIS_SERVER`, else `redis-server` on PATH), killed on drop, its
//! log printed when the test fails. Never the machine's shared instance.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use streamq::{
    Job, JobError, JobId, LocalRedis, LocalRedisBuilder, Queue, QueueBuilder, RedisConfig, Worker,
    WorkerConfig, WorkerReport,
};
use tokio_util::sync::CancellationToken;

pub struct TestRedis {
    pub server: LocalRedis,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        TestRedis::with(LocalRedis::builder())
    }

    pub fn with(builder: LocalRedisBuilder) -> TestRedis {
        // streamq's logs, captured with the test's output and shown on failure.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("streamq=info")),
            )
            .with_test_writer()
            .try_init();
        match builder.start() {
            Ok(server) => TestRedis { server },
            Err(e) => panic!("test redis-server did not start: {e}"),
        }
    }

    pub fn config(&self) -> RedisConfig {
        RedisConfig::from_url(&self.server.url()).expect("url parses")
    }

    pub async fn queue(&self, name: &str) -> Queue {
        self.open(Queue::builder(name)).await
    }

    pub async fn open(&self, builder: QueueBuilder) -> Queue {
        builder.connect(&self.config()).await.expect("queue opens")
    }

    /// A plain connection for seeding and inspecting Redis directly.
    pub async fn raw(&self) -> MultiplexedConnection {
        redis::Client::open(self.server.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    pub async fn info(&self, section: &str) -> HashMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.raw().await)
            .await
            .expect("INFO");
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }
}

impl TestRedis {
    /// The queue's counters hash, as Redis holds it.
    pub async fn counters(&self, queue: &str) -> HashMap<String, i64> {
        redis::cmd("HGETALL")
            .arg(format!("streamq:{{{queue}}}:stats"))
            .query_async(&mut self.raw().await)
            .await
            .expect("HGETALL")
    }

    /// Length of one of the queue's keys (stream or zset).
    pub async fn len(&self, key: &str) -> u64 {
        let mut raw = self.raw().await;
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let cmd = match kind.as_str() {
            "zset" => "ZCARD",
            "none" => return 0,
            _ => "XLEN",
        };
        redis::cmd(cmd)
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- redis-server log ({}) ----\n{}",
                self.server.url(),
                self.server.log()
            );
        }
    }
}

/// Polls `check` until it returns true or `limit` passes; panics on timeout.
/// For waiting on outcomes, never for asserting speed.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every job id a handler saw, with how many times.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<HashMap<JobId, u32>>>);

impl Seen {
    pub fn record(&self, id: &JobId) {
        *self.0.lock().unwrap().entry(id.clone()).or_default() += 1;
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn duplicates(&self) -> Vec<(JobId, u32)> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    }
    pub fn count(&self, id: &JobId) -> u32 {
        self.0.lock().unwrap().get(id).copied().unwrap_or(0)
    }
    pub fn ids(&self) -> Vec<JobId> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}

pub fn spawn_worker<T, F, Fut>(
    queue: &Queue,
    config: WorkerConfig,
    handler: F,
) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>)
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send,
{
    let token = CancellationToken::new();
    let worker = Worker::new(queue, config).unwrap();
    let stop = token.clone();
    let handle = tokio::spawn(async move { worker.run(handler, stop).await.unwrap() });
    (token, handle)
}
