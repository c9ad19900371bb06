//! The record of a tracked job that no worker has started yet: one field of
//! the queue's `queued` hash (job id -> record), written by `enqueue.lua`
//! and `flow_add.lua` and removed when a worker starts or ends the job. One
//! field costs Redis about 130 B against about 280 B for a hash key of its
//! own with a TTL (docs/benchmarks.md), so waiting jobs are tracked here and
//! a job gets its `job:<id>` hash only when it starts.
//!
//! The record is `<priority index> <where> <name>`: `where` is the job's
//! stream entry id when it waits in a stream, or `d<due ms>/<enqueued ms>`
//! when it was enqueued delayed. The name comes last and may hold spaces.

use crate::priority::Priority;

/// Where a queued record says its job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// In its priority stream, at this entry.
    Entry(String),
    /// In the delayed set, due then.
    Delayed { due_ms: u64, enqueued_ms: u64 },
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) priority: Priority,
    pub(crate) place: Place,
    pub(crate) name: String,
}

impl Queued {
    /// Reads a record; `None` when it is not one.
    pub(crate) fn parse(record: &str) -> Option<Queued> {
        let (digit, rest) = record.split_once(' ')?;
        let (place, name) = rest.split_once(' ').unwrap_or((rest, ""));
        let priority = Priority::from_lua_index(digit.parse().ok()?)?;
        let place = match place.strip_prefix('d') {
            Some(times) => {
                let (due, enqueued) = times.split_once('/')?;
                Place::Delayed {
                    due_ms: due.parse().ok()?,
                    enqueued_ms: enqueued.parse().ok()?,
                }
            }
            None => {
                let (ms, seq) = place.split_once('-')?;
                ms.parse::<u64>().ok()?;
                seq.parse::<u64>().ok()?;
                Place::Entry(place.to_owned())
            }
        };
        Some(Queued {
            priority,
            place,
            name: name.to_owned(),
        })
    }

    /// When the job was enqueued, Unix ms: for a job in a stream, the time
    /// in its entry id (Redis's clock at the `XADD`).
    pub(crate) fn enqueued_ms(&self) -> Option<u64> {
        match &self.place {
            Place::Entry(entry) => entry.split_once('-').and_then(|(ms, _)| ms.parse().ok()),
            Place::Delayed { enqueued_ms, .. } => Some(*enqueued_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_and_delayed_records_read_back() {
        let waiting = Queued::parse("1 1733512345678-7 send email").expect("a record");
        assert_eq!(waiting.priority, Priority::Critical);
        assert_eq!(waiting.place, Place::Entry("1733512345678-7".to_owned()));
        assert_eq!(waiting.name, "send email");
        assert_eq!(waiting.enqueued_ms(), Some(1_733_512_345_678));

        let delayed = Queued::parse("4 d1733512399999/1733512345678 x").expect("a record");
        assert_eq!(delayed.priority, Priority::Low);
        assert_eq!(
            delayed.place,
            Place::Delayed {
                due_ms: 1_733_512_399_999,
                enqueued_ms: 1_733_512_345_678
            }
        );
        assert_eq!(delayed.enqueued_ms(), Some(1_733_512_345_678));

        assert_eq!(
            Queued::parse("2 1-0").map(|q| q.name),
            Some(String::new())
        );
    }

    #[test]
    fn anything_else_is_not_a_record() {
        for bad in ["", "1", "9 1-0 x", "1 notanid x", "1 d5 x", "1 d5/x x", "x 1-0 y"] {
            assert_eq!(Queued::parse(bad), None, "{bad:?}");
        }
    }
}
