//! Leases: which entries this worker holds (claimed, not yet finished), and
//! the heartbeat that keeps them from being reclaimed while it lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::reply;
use crate::protocol::scripts::scripts;
use crate::queue::Queue;

/// Entry ids this worker holds, running or waiting for a slot.
#[derive(Debug, Default, Clone)]
pub(crate) struct Holdings(Arc<Mutex<HashMap<String, Priority>>>);

impl Holdings {
    pub(crate) fn hold(&self, priority: Priority, entry_id: &str) {
        self.lock().insert(entry_id.to_owned(), priority);
    }

    pub(crate) fn release(&self, entry_id: &str) {
        self.lock().remove(entry_id);
    }

    fn snapshot(&self) -> Vec<(Priority, String)> {
        self.lock().iter().map(|(id, p)| (*p, id.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Priority>> {
        // The map stays consistent even if a holder panicked mid-update.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Entries renewed per script call.
const HEARTBEAT_CHUNK: usize = 500;

/// Renews the lease on every held entry each `lease / 3` until `stop`.
pub(crate) async fn heartbeat(
    queue: Queue,
    consumer: String,
    holdings: Holdings,
    lease: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = queue.conn();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held = holdings.snapshot();
        let script = &scripts().heartbeat;
        for chunk in held.chunks(HEARTBEAT_CHUNK) {
            let mut call = script.call(queue.keys(), &[] as &[&str]);
            call.arg(GROUP).arg(&consumer);
            for (priority, id) in chunk {
                call.arg(priority.lua_index()).arg(id);
            }
            let lost = call
                .invoke(&mut conn)
                .await
                .map_err(Error::from)
                .and_then(|reply| reply::done(script, reply)?.lost());
            match lost {
                Ok(lost) if !lost.is_empty() => tracing::debug!(
                    queue = queue.name(),
                    lost = lost.len(),
                    "leases already taken over by another worker"
                ),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(queue = queue.name(), %err, "lease heartbeat failed; retrying next beat");
                    break;
                }
            }
        }
    }
}
