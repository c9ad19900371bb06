//! Finishing a flow child: completed or dead-lettered, one `flow_child`
//! call that also settles its parent (counts the child once, then releases
//! or fails the parent). Ordinary jobs never come here: their acks stay
//! batched in `ack`.

use super::{Counters, Finished, Finisher, Outcome};
use crate::error::Error;
use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::keys::GROUP;
use crate::protocol::latency;
use crate::protocol::scripts::scripts;
use crate::time::{millis, now_ms};
use crate::worker::config::DeadLettered;
use crate::worker::tracker::{Run, TrackEvent};

/// What `flow_child` did for the parent (its reply's third element).
const RELEASED: i64 = 2;
const FAILED: i64 = 3;

impl Finisher {
    /// Completes or dead-letters a flow child and settles its parent, once:
    /// `Ok` when done or no longer ours; `Err` to be tried again later.
    pub(super) async fn finish_child(&mut self, job: &Finished) -> Result<(), Error> {
        let Some(parent) = &job.parent else {
            return Ok(());
        };
        let keys = self.queue.keys();
        let settings = self.queue.settings();
        // An envelope naming an unusable queue cannot have a record: the
        // child finishes alone (the script finds no record to settle).
        let parent_keys = keys.sibling(&parent.queue).unwrap_or_else(|err| {
            tracing::error!(job = job.job_id, %err, "flow child names an invalid parent queue");
            keys.clone()
        });
        let parent_priority =
            Priority::from_lua_index(i64::from(parent.priority)).unwrap_or(Priority::Medium);
        let extra = [
            keys.latency().to_owned(),
            keys.events(),
            keys.dead().to_owned(),
            keys.result(&job.job_id),
            parent_keys.flow(&parent.id),
            parent_keys.stream(parent_priority).to_owned(),
            parent_keys.stats().to_owned(),
            parent_keys.dead().to_owned(),
        ];
        let (outcome, detail, attempts, failed_run): (&str, &[u8], u32, bool) = match &job.outcome {
            Outcome::Completed { result } => {
                ("completed", result.as_deref().unwrap_or(&[]), 0, false)
            }
            Outcome::Dead {
                attempts,
                error,
                failed_run,
                ..
            } => ("dead", error.as_bytes(), *attempts, *failed_run),
            _ => return Ok(()),
        };
        let mut call = scripts().flow_child.call(keys, &extra);
        call.arg(GROUP)
            .arg(&self.consumer)
            .arg(&job.entry_id)
            .arg(job.priority.lua_index())
            .arg(&job.job_id)
            .arg(&job.name)
            .arg(now_ms())
            .arg(outcome)
            .arg(detail)
            .arg(u8::from(parent.fail_parent))
            .arg(settings.results.map_or(0, |r| millis(r.ttl)))
            .arg(settings.events_cap())
            .arg(u8::from(settings.metrics))
            .arg(latency::bucket(job.wait_us))
            .arg(latency::bucket(job.run_us))
            .arg(job.wait_us)
            .arg(job.run_us)
            .arg(job.deliveries.saturating_sub(1))
            .arg(attempts)
            .arg(u8::from(failed_run))
            .arg(settings.max_dead_letters.unwrap_or(0));
        let Some(mut body) = self.fenced_call("flow_child", &call).await? else {
            return Ok(());
        };
        let settled = body.int()?;
        let dead_id = body.optional_bytes()?;
        match settled {
            RELEASED => tracing::debug!(parent = parent.id, "flow parent released"),
            FAILED => tracing::warn!(
                parent = parent.id,
                child = job.job_id,
                "flow parent dead-lettered: a child failed"
            ),
            _ => {}
        }
        match &job.outcome {
            Outcome::Dead { error, .. } => {
                let dead_id = dead_id
                    .map(|id| String::from_utf8_lossy(&id).into_owned())
                    .unwrap_or_default();
                Counters::add(&self.counters.dead_lettered, 1);
                tracing::warn!(
                    queue = self.queue.name(),
                    job = job.job_id,
                    error,
                    "flow child dead-lettered"
                );
                let event = |id| TrackEvent::Dead {
                    id,
                    error: error.clone(),
                    attempts,
                    dead_id: dead_id.clone(),
                    run: Run::of(job),
                };
                self.track(event, job);
                if let Some(hook) = &self.config.on_dead_letter {
                    hook(&DeadLettered {
                        job_id: JobId::from(job.job_id.clone()),
                        priority: job.priority,
                        attempts,
                        error: error.clone(),
                    });
                }
            }
            _ => {
                Counters::add(&self.counters.completed, 1);
                self.track(
                    |id| TrackEvent::Completed {
                        id,
                        run: Run::of(job),
                    },
                    job,
                );
            }
        }
        Ok(())
    }
}
