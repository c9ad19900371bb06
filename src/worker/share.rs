//! One worker over many partitions: the handler slots they share, strict
//! priority across them, and a fair share between them at equal priority.
//!
//! A worker on a partitioned queue runs one run loop per partition (each
//! with its own fetcher, finisher and heartbeat, so reclaim, retries, delays,
//! dead letters, pause and metrics stay per partition), and this `Share`
//! decides which loop may start a job when a slot is free:
//!
//! - every loop announces the most urgent priority it holds or may still
//!   find waiting (its *floor*): what it has buffered, and, after a fetch
//!   that came back full, the priority of the last job claimed (more may
//!   wait there); before its first fetch a loop may hold anything, so it
//!   announces critical;
//! - a loop may start a job of priority `p` only when a slot is free and no
//!   loop announces anything more urgent than `p`;
//! - among loops at the same priority, the one with the fewest running jobs
//!   goes first, so a flooding partition cannot take the slots a quiet one
//!   needs.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::priority::Priority;

/// The slots and announcements shared by the run loops of one worker.
pub(super) struct Share {
    concurrency: usize,
    state: Mutex<State>,
    /// Bumped on every change, so loops waiting for a slot wake up.
    version: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    running: usize,
    /// Jobs running per loop.
    per: Vec<usize>,
    /// Each loop's floor: the most urgent priority it holds or may find.
    floors: Vec<Option<Priority>>,
}

/// A slot taken by one job; released (and the loops woken) when dropped.
pub(super) struct Slot {
    share: Arc<Share>,
    lane: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut state) = self.share.state.lock() {
            state.running = state.running.saturating_sub(1);
            state.per[self.lane] = state.per[self.lane].saturating_sub(1);
        }
        self.share.version.send_modify(|v| *v += 1);
    }
}

impl Share {
    pub(super) fn new(concurrency: usize, lanes: usize) -> Arc<Share> {
        Arc::new(Share {
            concurrency,
            state: Mutex::new(State {
                running: 0,
                per: vec![0; lanes],
                floors: vec![Some(Priority::Critical); lanes],
            }),
            version: watch::channel(0).0,
        })
    }

    /// A receiver that sees every later change.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records `lane`'s floor; wakes the others when it changed.
    pub(super) fn announce(&self, lane: usize, floor: Option<Priority>) {
        let changed = match self.state.lock() {
            Ok(mut state) if state.floors[lane] != floor => {
                state.floors[lane] = floor;
                true
            }
            _ => false,
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// A slot for a job of `priority` from `lane`, if it may start now.
    pub(super) fn try_start(self: &Arc<Share>, lane: usize, priority: Priority) -> Option<Slot> {
        let mut state = self.state.lock().ok()?;
        if state.running >= self.concurrency {
            return None;
        }
        let mine = state.per[lane];
        let blocked = state.floors.iter().enumerate().any(|(other, floor)| {
            other != lane
                && floor.is_some_and(|f| {
                    f.index() < priority.index() || (f == priority && state.per[other] < mine)
                })
        });
        if blocked {
            return None;
        }
        state.running += 1;
        state.per[lane] += 1;
        Some(Slot {
            share: self.clone(),
            lane,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgent_first_then_fewest_running() {
        let share = Share::new(2, 2);
        // Before announcing, every lane may hold critical work.
        assert!(share.try_start(0, Priority::Low).is_none());
        share.announce(1, None);
        let a = share
            .try_start(0, Priority::Low)
            .expect("nothing more urgent");
        share.announce(0, Some(Priority::Low));
        share.announce(1, Some(Priority::High));
        assert!(
            share.try_start(0, Priority::Low).is_none(),
            "high waits in lane 1"
        );
        let b = share.try_start(1, Priority::High).expect("slot free");
        assert!(
            share.try_start(1, Priority::High).is_none(),
            "both slots taken"
        );
        drop(a);
        share.announce(0, Some(Priority::High));
        // Lane 0 runs nothing now, lane 1 runs one: lane 0 goes first.
        assert!(share.try_start(1, Priority::High).is_none());
        let c = share.try_start(0, Priority::High).expect("fewest running");
        drop((b, c));
    }
}
