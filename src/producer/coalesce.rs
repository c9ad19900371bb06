//! Adaptive enqueue batching: concurrent [`Queue::enqueue`] callers share
//! script calls, with no collector task.
//!
//! A caller adds its encoded job to the queue's waiting list. The first one
//! to find no leader leads: it takes one of [`SEND_SLOTS`] send slots, takes
//! every job waiting (one script call's worth at most), and sends them; the
//! others wait for their answer. With nothing else waiting, a job goes out at
//! once from its caller's own task: no timer, no hop. Under load, jobs pile up
//! while both slots are busy, and the next call carries all of them, so the
//! batch grows with the load and shrinks back to one job when it falls.
//!
//! A batch holds at most one script call's worth of jobs, so it is applied
//! whole or not at all, and every caller learns the outcome of its own job.
//! Only a batch of the leader's own job alone is sent from the leader's
//! task; a shared batch is sent from a task of its own, so a caller that is
//! cancelled never cancels its neighbours' jobs.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::{CHUNK_BYTES, CHUNK_JOBS, Pending};
use crate::error::Error;
use crate::job_id::JobId;
use crate::queue::Queue;

/// Script calls in flight at once per queue handle; more jobs wait and
/// join the next call.
pub(crate) const SEND_SLOTS: usize = 2;

/// How a leader fills its batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill {
    /// The most jobs per script call (1..=1,000).
    pub(crate) max_jobs: usize,
    /// How long a leader holding a slot waits for more jobs before sending;
    /// zero sends what is there.
    pub(crate) wait: Duration,
}

impl Fill {
    /// As many jobs as one script call carries, no waiting.
    pub(crate) const ADAPTIVE: Fill = Fill {
        max_jobs: CHUNK_JOBS,
        wait: Duration::ZERO,
    };
}

type Reply = oneshot::Sender<Result<JobId, Error>>;

struct Waiter {
    job: Pending,
    reply: Reply,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    leading: bool,
    in_flight: usize,
    /// A leader is holding a slot open for more jobs (wakes on `arrived`).
    filling: bool,
}

/// One queue handle's waiting jobs (shared by its clones).
#[derive(Default)]
pub(crate) struct Coalescer {
    state: Mutex<State>,
    slot_freed: Notify,
    arrived: Notify,
}

impl Coalescer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; go on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn coalescer(queue: &Queue) -> Option<&Coalescer> {
    super::producer_state(queue).map(|state| &state.coalescer)
}

/// Enqueues `job` with whatever else is waiting and returns its final id.
///
/// # Cancel safety
///
/// Not cancel-safe: a dropped call's job may still be enqueued.
pub(crate) async fn enqueue(queue: &Queue, job: Pending, fill: Fill) -> Result<JobId, Error> {
    let Some(coalescer) = coalescer(queue) else {
        return send_alone(queue, job).await;
    };
    let (reply, answer) = oneshot::channel();
    let lead = {
        let mut state = coalescer.lock();
        state.waiting.push(Waiter { job, reply });
        if state.filling {
            coalescer.arrived.notify_one();
        }
        !std::mem::replace(&mut state.leading, true)
    };
    if lead {
        let mut leader = Leader {
            queue,
            coalescer,
            active: true,
        };
        leader.lead(fill).await;
    }
    answer.await.unwrap_or_else(|_| {
        Err(Error::UnexpectedReply {
            script: "enqueue",
            detail: "the batch carrying this job was dropped; it may or may not be enqueued"
                .to_owned(),
        })
    })
}

async fn send_alone(queue: &Queue, job: Pending) -> Result<JobId, Error> {
    let mut batch = queue.batch();
    batch.bytes = job.envelope.len();
    batch.jobs.push(job);
    let mut ids = batch.send().await?;
    ids.pop().ok_or_else(|| Error::UnexpectedReply {
        script: "enqueue",
        detail: "no job id returned".to_owned(),
    })
}

/// The caller leading the next batch. Dropped before it took its batch
/// (cancelled while waiting for a slot or for more jobs), it hands the lead
/// to a task, so the jobs waiting behind it are still sent.
struct Leader<'a> {
    queue: &'a Queue,
    coalescer: &'a Coalescer,
    active: bool,
}

impl Leader<'_> {
    async fn lead(&mut self, fill: Fill) {
        let coalescer = self.coalescer;
        loop {
            let slot_freed = coalescer.slot_freed.notified();
            tokio::pin!(slot_freed);
            slot_freed.as_mut().enable();
            {
                let mut state = coalescer.lock();
                if state.in_flight < SEND_SLOTS {
                    state.in_flight += 1;
                    state.filling = !fill.wait.is_zero();
                    break;
                }
            }
            slot_freed.await;
        }
        let slot = Slot(self.queue.clone());
        if !fill.wait.is_zero() {
            let deadline = tokio::time::Instant::now() + fill.wait;
            loop {
                let arrived = coalescer.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if coalescer.lock().waiting.len() >= fill.max_jobs {
                    break;
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    break;
                }
            }
        }
        let (taken, more) = {
            let mut state = coalescer.lock();
            state.filling = false;
            let taken = take(&mut state.waiting, fill.max_jobs);
            let more = !state.waiting.is_empty();
            // Jobs left over (more than one call's worth) keep the lead.
            state.leading = more;
            (taken, more)
        };
        self.active = false;
        if more {
            let queue = self.queue.clone();
            tokio::spawn(lead_detached(queue, fill));
        }
        if taken.len() == 1 {
            send(taken, slot).await;
        } else if !taken.is_empty() {
            tokio::spawn(send(taken, slot));
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let mut state = self.coalescer.lock();
        state.filling = false;
        // Outside a runtime (it is shutting down) nothing could send them.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !state.waiting.is_empty() => {
                runtime.spawn(lead_detached(self.queue.clone(), Fill::ADAPTIVE));
            }
            _ => state.leading = false,
        }
    }
}

/// Leads from a task of its own, for jobs whose leader moved on. (Boxed:
/// a leader may start another, and a recursive future needs a named type.)
fn lead_detached(queue: Queue, fill: Fill) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let Some(coalescer) = coalescer(&queue) else {
            return;
        };
        let mut leader = Leader {
            queue: &queue,
            coalescer,
            active: true,
        };
        leader.lead(fill).await;
    })
}

/// A send slot, given back when dropped (also when its send is cancelled).
struct Slot(Queue);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(coalescer) = coalescer(&self.0) {
            coalescer.lock().in_flight -= 1;
            coalescer.slot_freed.notify_one();
        }
    }
}

/// The oldest waiting jobs that fit one script call.
fn take(waiting: &mut Vec<Waiter>, max_jobs: usize) -> Vec<Waiter> {
    let max_jobs = max_jobs.clamp(1, CHUNK_JOBS);
    let mut bytes = 0;
    let mut n = 0;
    for waiter in waiting.iter() {
        bytes += waiter.job.envelope.len();
        if n == max_jobs || (n > 0 && bytes > CHUNK_BYTES) {
            break;
        }
        n += 1;
    }
    if n == waiting.len() {
        std::mem::take(waiting)
    } else {
        waiting.drain(..n).collect()
    }
}

/// Sends one batch and tells each waiting caller what became of its job.
async fn send(taken: Vec<Waiter>, slot: Slot) {
    let mut batch = slot.0.batch();
    let mut replies = Vec::with_capacity(taken.len());
    for Waiter { job, reply } in taken {
        batch.bytes += job.envelope.len();
        replies.push((job.id.clone(), reply));
        batch.jobs.push(job);
    }
    let sent = batch.send().await;
    drop(slot);
    answer(sent, replies);
}

fn answer(sent: Result<Vec<JobId>, Error>, replies: Vec<(JobId, Reply)>) {
    match sent {
        Ok(ids) => {
            for ((_, reply), id) in replies.into_iter().zip(ids) {
                let _ = reply.send(Ok(id));
            }
        }
        // Not expected (a batch is one script call), but exact if it happens.
        Err(Error::PartialBatch { enqueued, source }) => {
            let done: HashSet<JobId> = enqueued.into_iter().collect();
            for (id, reply) in replies {
                let outcome = if done.contains(&id) {
                    Ok(id)
                } else {
                    Err((*source).clone())
                };
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
