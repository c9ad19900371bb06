//! The test harness: a private redis-server per test (from
//! `STREAMQ_REDIS_SERVER`, else `redis-server` on PATH), killed on drop, its
//! log printed when the test fails. Never the machine's shared instance.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use streamq::{LocalRedis, LocalRedisBuilder, Queue, QueueBuilder, RedisConfig};

pub struct TestRedis {
    pub server: LocalRedis,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        TestRedis::with(LocalRedis::builder())
    }

    pub fn with(builder: LocalRedisBuilder) -> TestRedis {
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
