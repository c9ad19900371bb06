//! The record of a tracked job that has not ended: one field of the queue's
//! `live` hash (job id -> record). `enqueue.lua` and `flow_add.lua` write it
//! with the job; the worker's tracker rewrites it when the job starts or
//! waits for a retry, and removes it when the job ends (`cancel.lua` and
//! `drain` remove it too). One field costs Redis about 130 B against about
//! 280 B for a hash key of its own with a TTL, and each update is one
//! command on a hash that exists, where a key per job was created, given a
//! TTL and deleted again (docs/benchmarks.md, "Tracking in one hash"). A
//! job's `job:<id>` hash holds only what the record cannot (progress, its
//! last error) until the job ends, and then its final metadata.
//!
//! The record is `<priority index> <where> <name>`, the name last (it may
//! hold spaces). `where` is one of:
//! - `<entry id>`: in its stream, not started;
//! - `<entry id>!<started ms>!<attempt>!<enqueued ms>`: started from that
//!   entry (it may have been reclaimed or handed back since: lookups ask
//!   the stream);
//! - `d<due ms>/<enqueued ms>`: delayed, when enqueued or for a retry.

use crate::priority::Priority;

/// Where a record says its job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// In its priority stream, at this entry.
    Entry(String),
    /// In the delayed set, due then.
    Delayed { due_ms: u64 },
}

/// The run a record says started last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    pub(crate) at_ms: u64,
    pub(crate) attempt: u32,
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveRecord {
    pub(crate) priority: Priority,
    pub(crate) place: Place,
    pub(crate) name: String,
    pub(crate) enqueued_ms: Option<u64>,
    pub(crate) started: Option<Started>,
}

impl LiveRecord {
    /// Reads a record; `None` when it is not one.
    pub(crate) fn parse(record: &str) -> Option<LiveRecord> {
        let (digit, rest) = record.split_once(' ')?;
        let (place, name) = rest.split_once(' ').unwrap_or((rest, ""));
        let priority = Priority::from_lua_index(digit.parse().ok()?)?;
        let mut parsed = LiveRecord {
            priority,
            place: Place::Delayed { due_ms: 0 },
            name: name.to_owned(),
            enqueued_ms: None,
            started: None,
        };
        if let Some(times) = place.strip_prefix('d') {
            let (due, enqueued) = times.split_once('/')?;
            parsed.place = Place::Delayed {
                due_ms: due.parse().ok()?,
            };
            parsed.enqueued_ms = Some(enqueued.parse().ok()?);
            return Some(parsed);
        }
        let mut parts = place.split('!');
        let entry = parts.next()?;
        let (ms, seq) = entry.split_once('-')?;
        seq.parse::<u64>().ok()?;
        parsed.enqueued_ms = Some(ms.parse().ok()?);
        parsed.place = Place::Entry(entry.to_owned());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => {}
            (Some(at), Some(attempt), Some(enqueued), None) => {
                parsed.started = Some(Started {
                    at_ms: at.parse().ok()?,
                    attempt: attempt.parse().ok()?,
                });
                parsed.enqueued_ms = Some(enqueued.parse().ok()?);
            }
            _ => return None,
        }
        Some(parsed)
    }

    /// The record of a job that started from `entry`.
    pub(crate) fn started(
        priority: Priority,
        entry: &str,
        started: Started,
        enqueued_ms: u64,
        name: &str,
    ) -> String {
        format!(
            "{} {entry}!{}!{}!{enqueued_ms} {name}",
            priority.lua_index(),
            started.at_ms,
            started.attempt
        )
    }

    /// The record of a job waiting in the delayed set (a retry).
    pub(crate) fn delayed(priority: Priority, due_ms: u64, enqueued_ms: u64, name: &str) -> String {
        format!("{} d{due_ms}/{enqueued_ms} {name}", priority.lua_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_every_kind_read_back() {
        let waiting = LiveRecord::parse("1 1733512345678-7 send email").expect("a record");
        assert_eq!(waiting.priority, Priority::Critical);
        assert_eq!(waiting.place, Place::Entry("1733512345678-7".to_owned()));
        assert_eq!(waiting.name, "send email");
        assert_eq!(waiting.enqueued_ms, Some(1_733_512_345_678));
        assert_eq!(waiting.started, None);

        let delayed = LiveRecord::parse("4 d1733512399999/1733512345678 x").expect("a record");
        assert_eq!(delayed.priority, Priority::Low);
        assert_eq!(
            delayed.place,
            Place::Delayed {
                due_ms: 1_733_512_399_999
            }
        );
        assert_eq!(delayed.enqueued_ms, Some(1_733_512_345_678));

        let started = Started {
            at_ms: 1_733_512_400_000,
            attempt: 2,
        };
        let record = LiveRecord::started(Priority::High, "1733512399999-0", started, 17, "a b");
        let parsed = LiveRecord::parse(&record).expect("a record");
        assert_eq!(parsed.place, Place::Entry("1733512399999-0".to_owned()));
        assert_eq!(
            (parsed.started, parsed.enqueued_ms),
            (Some(started), Some(17))
        );
        assert_eq!(parsed.name, "a b");

        let retry = LiveRecord::delayed(Priority::Medium, 99, 17, "n");
        assert_eq!(
            LiveRecord::parse(&retry).map(|r| (r.place, r.enqueued_ms)),
            Some((Place::Delayed { due_ms: 99 }, Some(17)))
        );
        assert_eq!(
            LiveRecord::parse("2 1-0").map(|r| r.name),
            Some(String::new())
        );
    }

    #[test]
    fn anything_else_is_not_a_record() {
        for bad in [
            "",
            "1",
            "9 1-0 x",
            "1 notanid x",
            "1 d5 x",
            "1 d5/x x",
            "x 1-0 y",
            "1 1-0!5 x",
            "1 1-0!5!1!2!3 x",
        ] {
            assert_eq!(LiveRecord::parse(bad), None, "{bad:?}");
        }
    }
}
