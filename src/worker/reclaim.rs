//! Reclaiming: taking over jobs whose worker died or hung (their lease ran
//! out), and dead-lettering the ones delivered too often without finishing.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Worker;
use super::fetch::Claimed;
use super::finish::{Counters, Finished, Outcome};
use super::job::Handler;
use super::run_loop::{JobContext, Lane};
use super::tracker::TrackEvent;
use crate::priority::Priority;
use crate::protocol::envelope::Envelope;

impl Worker {
    /// Takes over jobs whose lease ran out, up to `room`, most urgent first.
    /// Those delivered too often without finishing are dead-lettered.
    pub(super) async fn reclaim<T, R, H>(
        &self,
        lane: &mut Lane,
        context: &Arc<JobContext<H>>,
        room: usize,
    ) where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        H: Handler<T, R>,
    {
        let mut room = room;
        for priority in Priority::ALL {
            if room == 0 {
                break;
            }
            let reclaimed = match lane
                .fetcher
                .reclaim(priority, self.config.lease, room)
                .await
            {
                Ok(reclaimed) => reclaimed,
                Err(err) => {
                    tracing::warn!(queue = self.queue.name(), %err, "reclaiming stalled jobs failed");
                    return;
                }
            };
            if !reclaimed.lost.is_empty() {
                Counters::add(&context.counters.lost, reclaimed.lost.len() as u64);
                tracing::error!(
                    queue = self.queue.name(),
                    %priority,
                    lost = reclaimed.lost.len(),
                    ids = ?reclaimed.lost,
                    "jobs lost: Redis deleted these entries while they were pending (was the stream trimmed?)"
                );
            }
            room = room.saturating_sub(reclaimed.jobs.len());
            Counters::add(&context.counters.reclaimed, reclaimed.jobs.len() as u64);
            for job in reclaimed.jobs {
                lane.holdings.hold(job.priority, &job.entry_id);
                if job.deliveries > self.config.max_deliveries {
                    let outcome = poison_outcome(&job, self.config.max_deliveries);
                    let (name, job_id, parent, enqueued_us) = job
                        .envelope
                        .as_deref()
                        .and_then(|bytes| Envelope::decode(bytes).ok())
                        .map(|e| {
                            let enqueued_us = e.enqueued_us;
                            (
                                e.name.into_owned(),
                                e.id.into_owned(),
                                e.parent,
                                enqueued_us,
                            )
                        })
                        .unwrap_or_default();
                    let finished = Finished {
                        priority: job.priority,
                        entry_id: job.entry_id,
                        job_id,
                        outcome,
                        name,
                        wait_us: 0,
                        run_us: 0,
                        deliveries: job.deliveries,
                        parent,
                        enqueued_ms: enqueued_us / 1000,
                        started_ms: 0,
                        leftovers: true,
                    };
                    if context.finished.send(finished).await.is_err() {
                        tracing::error!("finisher stopped; the job stays pending");
                    }
                } else {
                    tracing::info!(
                        queue = self.queue.name(),
                        entry = job.entry_id,
                        priority = %job.priority,
                        deliveries = job.deliveries,
                        "reclaimed a stalled job"
                    );
                    let envelope = job.envelope.as_deref().map(Envelope::decode);
                    if let (Some(tracker), Some(Ok(envelope))) = (&context.tracker, envelope) {
                        tracker.send(TrackEvent::Reclaimed {
                            id: envelope.id.into_owned(),
                            name: envelope.name.into_owned(),
                            priority: job.priority,
                            deliveries: job.deliveries,
                        });
                    }
                    lane.buffer.extend(vec![job]);
                }
            }
        }
    }
}

/// The dead-letter outcome for a job delivered too often without finishing.
fn poison_outcome(job: &Claimed, max_deliveries: u32) -> Outcome {
    let envelope = job.envelope.as_deref().map(Envelope::decode);
    let (job_id, attempts) = match envelope {
        Some(Ok(e)) => (e.id.into_owned(), e.attempt + 1),
        _ => (String::new(), 1),
    };
    Outcome::Dead {
        job_id,
        attempts,
        error: format!(
            "delivered {} times without finishing (max {max_deliveries}): each worker holding it died or hung",
            job.deliveries - 1
        ),
        failed_run: false,
    }
}
