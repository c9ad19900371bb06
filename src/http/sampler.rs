//! The history sampler: one task per server process that asks the queue to
//! record its snapshot once per step. Every process runs one; Redis keeps
//! one snapshot per step whoever comes first (see `admin::history`).

use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::queue::Queue;
use crate::time::now_ms;

/// Spawns the sampler; it stops when the returned guard is dropped.
pub(crate) fn start(queue: Queue, step: Duration, keep: u64) -> DropGuard {
    let stop = CancellationToken::new();
    tokio::spawn(run(queue, step, keep, stop.clone()));
    stop.drop_guard()
}

async fn run(queue: Queue, step: Duration, keep: u64, stop: CancellationToken) {
    let step_ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        if let Err(e) = queue.record_history(step, keep).await {
            tracing::warn!(queue = queue.name(), error = %e, "cannot record history");
        }
        // Wake just after the next step begins, with a little spread so
        // that many processes do not all read at the same instant.
        let into_step = now_ms() % step_ms;
        let spread = fastrand::u64(0..=(step_ms / 20).min(2_000));
        let wait = Duration::from_millis(step_ms - into_step + 10 + spread);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
