//! The test harness: a private redis-server per test (from
//! `STREAMQ_REDIS_SERVER`, else `redis-server` on PATH), killed on drop, its
//! log printed when the test fails. Never the machine's shared instance.
//!
//! - `wait`: [`WAIT`], [`eventually`] and the waits built on it: each polls
//!   the condition a test asserts next, never a sleep or an earlier side
//!   effect.
//! - `handlers`: [`fast`] worker settings, [`spawn_worker`], the [`Seen`]
//!   record and the [`Gate`] that holds handlers.
//!
//! Key names come from [`streamq::QueueKeys`] (or `queue.keys()`), never
//! spelled out by hand.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod cli;
pub mod cluster;
pub mod fairness;
mod handlers;
mod wait;

pub use handlers::{Gate, Seen, fast, handler_thread, spawn_worker};
pub use wait::{WAIT, eventually, until_metrics, until_stats, wait_for};

use std::collections::HashMap;

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

    /// Script calls the server has run (`EVALSHA` and `EVAL`): evidence that
    /// a worker polled, for tests asserting that polling took nothing.
    pub async fn script_calls(&self) -> u64 {
        self.command_calls("evalsha").await + self.command_calls("eval").await
    }

    /// Calls of one command (`xread`, `client|unblock`) in `INFO
    /// commandstats`, commands run by scripts included.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let stats = self.info("commandstats").await;
        stats
            .get(&format!("cmdstat_{command}"))
            .and_then(|v| v.strip_prefix("calls="))
            .and_then(|v| v.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl TestRedis {
    /// The queue's counters hash, as Redis holds it.
    pub async fn counters(&self, queue: &Queue) -> HashMap<String, i64> {
        redis::cmd("HGETALL")
            .arg(queue.keys().stats())
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
