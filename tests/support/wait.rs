//! Waiting on outcomes. Every wait polls the condition the test asserts next
//! (a Redis counter, a stream length, a recorded side effect) and fails with
//! its name after [`WAIT`]; none of them is a bound on speed.

use std::future::Future;
use std::time::{Duration, Instant};

use streamq::{Queue, QueueMetrics, QueueStats};

/// How long any wait may take before the test fails. Generous on purpose: it
/// only turns a hang into a failure, it never asserts speed, so a loaded
/// machine must not reach it.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` until it returns true; panics naming `what` after `limit`.
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

/// [`eventually`] with [`WAIT`], for a condition on local state (a handler's
/// record, a gate, a file).
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, WAIT, || {
        let done = check();
        async move { done }
    })
    .await;
}

/// Waits until the queue's statistics, as Redis holds them, satisfy `done`;
/// returns the snapshot that did, so the test asserts on that very state.
pub async fn until_stats(
    what: &str,
    queue: &Queue,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = queue.stats().await.expect("stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; last {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the queue's metrics (the counters the scripts keep) satisfy
/// `done`; returns the snapshot that did.
pub async fn until_metrics(
    what: &str,
    queue: &Queue,
    done: impl Fn(&QueueMetrics) -> bool,
) -> QueueMetrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = queue.metrics().await.expect("metrics");
        if done(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; last {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
