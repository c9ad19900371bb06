//! Which acknowledged enqueues a failover rolled back.
//!
//! Redis replicates asynchronously: a master can acknowledge an enqueue and
//! fail before its replica has it. `enqueue.lua` numbers every job it adds
//! (one sequence per partition) and names the epoch: the server writing the
//! sequence. A server that did not write the current epoch (a promoted
//! replica, a restarted master, the node a slot moved to) opens a new one and
//! records the first number it did not inherit. Each call names the epoch the
//! producer last saw, and the reply says up to which number that epoch
//! survived, so the producer knows which of its own recent jobs the new
//! server never had. It keeps the last [`RECENT_JOBS`] numbered jobs per
//! partition for that; older ones are counted, not named.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::job_id::JobId;
use crate::priority::Priority;
use crate::protocol::event_log;
use crate::queue::Queue;
use crate::time::now_ms;

/// Acknowledged jobs remembered per partition, to name the rolled back ones.
pub(crate) const RECENT_JOBS: usize = 16_384;

/// The epoch part of an `enqueue` reply.
#[derive(Debug)]
pub(crate) struct Numbered {
    /// The current epoch; empty when the server has no epochs (`INFO` refused).
    pub(crate) epoch: String,
    /// The number of the first job added; the rest follow in call order.
    pub(crate) first: u64,
    /// Up to which number the epoch the call named survived: `-1` when it
    /// named the current one (or none), `0` when that epoch is no longer in
    /// the history, `-2` when the sequence was deleted (obliterate).
    pub(crate) kept: i64,
}

/// What a new epoch took away from this producer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RolledBack {
    /// The jobs, with their priorities.
    pub(crate) jobs: Vec<(Priority, JobId)>,
    /// Rolled back jobs too old to be named (beyond [`RECENT_JOBS`]).
    pub(crate) unnamed: u64,
}

/// One partition's record of its producer's recent jobs.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    epoch: Arc<str>,
    /// Jobs acknowledged in `epoch`, by number, at most [`RECENT_JOBS`].
    recent: VecDeque<(u64, Priority, JobId)>,
    /// The numbers of older jobs of `epoch`, as runs (first, count), at most
    /// [`FORGOTTEN_RUNS`]: enough to count them if they are rolled back.
    forgotten: VecDeque<(u64, u64)>,
    /// Epochs this producer saw closed, with their last surviving number,
    /// for calls that named one and were answered after it closed.
    retired: VecDeque<(Arc<str>, u64)>,
}

/// Runs of forgotten numbers kept per partition (a producer alone on a
/// partition needs one).
const FORGOTTEN_RUNS: usize = 4_096;

/// Closed epochs remembered (the server's history keeps as many).
const RETIRED_EPOCHS: usize = 8;

impl Ledger {
    /// The epoch to name in the next call ("" before the first).
    pub(crate) fn epoch(&self) -> Arc<str> {
        self.lock().epoch.clone()
    }

    /// Records the jobs one call added (in call order, `duplicates` left
    /// out) and returns what a new epoch rolled back, if anything.
    /// `named` is the epoch the call named.
    pub(crate) fn record<'a>(
        &self,
        named: &Arc<str>,
        numbered: &Numbered,
        added: impl Iterator<Item = (Priority, &'a JobId)>,
    ) -> Option<RolledBack> {
        if numbered.epoch.is_empty() {
            return None;
        }
        let mut state = self.lock();
        if *numbered.epoch == *state.epoch {
            state.remember(numbered.first, added);
            return None;
        }
        if **named == *state.epoch {
            // The first reply from a new epoch.
            let rolled_back = state.open(&numbered.epoch, numbered.kept);
            state.remember(numbered.first, added);
            return rolled_back;
        }
        let retired = state.retired.iter().find(|(e, _)| e == named);
        match retired {
            // A late reply from an epoch another call already closed: its
            // jobs are judged against what that epoch kept.
            Some(&(_, kept)) if **named == *numbered.epoch => {
                let jobs: Vec<(Priority, JobId)> = (numbered.first..)
                    .zip(added)
                    .filter(|(number, _)| *number > kept)
                    .map(|(_, (priority, id))| (priority, id.clone()))
                    .collect();
                (!jobs.is_empty()).then_some(RolledBack { jobs, unnamed: 0 })
            }
            // Numbered in an epoch this producer has not caught up with yet
            // (a second server change): not remembered.
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reports what new epochs rolled back on `partition`: an error in the log
/// naming the jobs, `rolled_back:<priority>` in the counters, and a
/// `rolled_back` event per named job when the queue keeps events. Best
/// effort: a failure to count is logged, never returned (the enqueue that
/// found the loss succeeded).
pub(crate) async fn report(partition: &Queue, rolled_back: Vec<RolledBack>) {
    if rolled_back.is_empty() {
        return;
    }
    let keys = partition.keys();
    let (mut per_priority, mut unnamed, mut named) = ([0u64; 4], 0, Vec::new());
    for lost in rolled_back {
        unnamed += lost.unnamed;
        named.extend(lost.jobs);
    }
    for (priority, _) in &named {
        per_priority[priority.index()] += 1;
    }
    tracing::error!(
        queue = partition.name(),
        partition = partition.partition_index(),
        jobs = named.len() as u64 + unnamed,
        ids = ?named.iter().map(|(_, id)| id.as_str()).take(100).collect::<Vec<_>>(),
        "acknowledged jobs lost: the server now holding this partition never had them \
         (a failover after asynchronous replication, or a restart); jobs that had already \
         run are among them. Durability::Replicated prevents this"
    );
    let mut pipe = redis::pipe();
    // Unnamed jobs have no priority left to count under: the lowest.
    per_priority[3] += unnamed;
    for (priority, n) in Priority::ALL.iter().zip(per_priority) {
        if n > 0 {
            pipe.cmd("HINCRBY")
                .arg(keys.stats())
                .arg(format!("rolled_back:{priority}"))
                .arg(n)
                .ignore();
        }
    }
    let cap = partition.settings().events_cap();
    if cap > 0 {
        let now = now_ms();
        for (priority, id) in &named {
            event_log::add(&mut pipe, keys, cap, "rolled_back", id.as_str())
                .arg("p")
                .arg(priority.as_str())
                .arg("at")
                .arg(now)
                .ignore();
        }
    }
    if let Err(e) = pipe.query_async::<()>(&mut partition.conn()).await {
        tracing::error!(
            queue = partition.name(),
            error = %e,
            "could not count the lost jobs in Redis"
        );
    }
}

impl State {
    /// Remembers jobs numbered from `first`, forgetting the oldest beyond
    /// [`RECENT_JOBS`].
    fn remember<'a>(&mut self, first: u64, added: impl Iterator<Item = (Priority, &'a JobId)>) {
        for (number, (priority, id)) in (first..).zip(added) {
            self.recent.push_back((number, priority, id.clone()));
        }
        while self.recent.len() > RECENT_JOBS {
            if let Some((number, _, _)) = self.recent.pop_front() {
                self.forget(number);
            }
        }
    }

    /// Moves to `epoch`, which kept the old one's numbers up to `kept`.
    fn open(&mut self, epoch: &str, kept: i64) -> Option<RolledBack> {
        let old = std::mem::replace(&mut self.epoch, Arc::from(epoch));
        if old.is_empty() || kept == -1 {
            return None;
        }
        let recent = std::mem::take(&mut self.recent);
        let forgotten = std::mem::take(&mut self.forgotten);
        if kept == -2 {
            // The sequence was deleted on purpose (obliterate): so were the jobs.
            return None;
        }
        let kept = u64::try_from(kept).unwrap_or(0);
        self.retired.push_back((old, kept));
        if self.retired.len() > RETIRED_EPOCHS {
            self.retired.pop_front();
        }
        let mut lost = RolledBack::default();
        for (number, priority, id) in recent {
            if number > kept {
                lost.jobs.push((priority, id));
            } else {
                self.recent.push_back((number, priority, id));
            }
        }
        for (first, count) in forgotten {
            let last = first + count - 1;
            if last > kept {
                lost.unnamed += last - kept.max(first - 1);
            } else {
                self.forgotten.push_back((first, count));
            }
        }
        (!lost.jobs.is_empty() || lost.unnamed > 0).then_some(lost)
    }

    /// Keeps `number` as part of a run.
    fn forget(&mut self, number: u64) {
        if let Some((first, count)) = self.forgotten.back_mut() {
            if *first + *count == number {
                *count += 1;
                return;
            }
        }
        self.forgotten.push_back((number, 1));
        if self.forgotten.len() > FORGOTTEN_RUNS {
            self.forgotten.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<JobId> {
        (0..n).map(|i| JobId::from(format!("job-{i}"))).collect()
    }

    fn reply(epoch: &str, first: u64, kept: i64) -> Numbered {
        Numbered {
            epoch: epoch.to_owned(),
            first,
            kept,
        }
    }

    fn add(ledger: &Ledger, numbered: &Numbered, jobs: &[JobId]) -> Option<RolledBack> {
        let named = ledger.epoch();
        ledger.record(&named, numbered, jobs.iter().map(|id| (Priority::High, id)))
    }

    #[test]
    fn a_new_epoch_names_the_jobs_numbered_after_what_it_kept() {
        let ledger = Ledger::default();
        let jobs = ids(5);
        assert_eq!(add(&ledger, &reply("a/1", 1, -1), &jobs[..3]), None);
        assert_eq!(add(&ledger, &reply("a/1", 4, -1), &jobs[3..]), None);
        // The new server had numbers up to 3: jobs 4 and 5 are gone.
        let lost = add(&ledger, &reply("b/2", 4, 3), &[]).expect("rolled back");
        assert_eq!(
            lost.jobs,
            [
                (Priority::High, jobs[3].clone()),
                (Priority::High, jobs[4].clone())
            ]
        );
        assert_eq!(lost.unnamed, 0);
        assert_eq!(&*ledger.epoch(), "b/2");
    }

    #[test]
    fn a_new_epoch_that_kept_everything_reports_nothing() {
        let ledger = Ledger::default();
        add(&ledger, &reply("a/1", 1, -1), &ids(3));
        assert_eq!(add(&ledger, &reply("b/2", 4, 3), &ids(1)), None);
    }

    #[test]
    fn a_deleted_sequence_is_not_a_loss() {
        let ledger = Ledger::default();
        add(&ledger, &reply("a/1", 1, -1), &ids(3));
        assert_eq!(add(&ledger, &reply("a/9", 1, -2), &ids(1)), None);
        // Nothing from before the deletion is judged later.
        assert_eq!(add(&ledger, &reply("b/10", 2, 1), &[]), None);
    }

    #[test]
    fn a_late_reply_from_the_old_epoch_is_judged_by_what_it_kept() {
        let ledger = Ledger::default();
        add(&ledger, &reply("a/1", 1, -1), &ids(2));
        let named = ledger.epoch();
        assert!(add(&ledger, &reply("b/2", 3, 1), &[]).is_some());
        let late = ids(2);
        let lost = ledger
            .record(
                &named,
                &reply("a/1", 3, -1),
                late.iter().map(|id| (Priority::Low, id)),
            )
            .expect("rolled back");
        assert_eq!(lost.jobs.len(), 2);
    }

    #[test]
    fn forgotten_jobs_are_counted_when_rolled_back() {
        let ledger = Ledger::default();
        let many = ids(RECENT_JOBS + 10);
        add(&ledger, &reply("a/1", 1, -1), &many);
        // Kept up to 5: 10 forgotten numbers (1..=10) of which 5 lost.
        let lost = add(&ledger, &reply("b/2", 6, 5), &[]).expect("rolled back");
        assert_eq!(lost.unnamed, 5);
        assert_eq!(lost.jobs.len(), RECENT_JOBS);
    }

    #[test]
    fn no_epochs_no_accounting() {
        let ledger = Ledger::default();
        assert_eq!(add(&ledger, &reply("", 1, -1), &ids(2)), None);
        assert_eq!(&*ledger.epoch(), "");
    }
}
