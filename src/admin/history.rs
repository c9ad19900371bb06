//! A queue's recent past: one snapshot of its lengths and counters per fixed
//! step, kept in a Redis stream so that it survives restarts and is the same
//! for every process that reads it.
//!
//! Each snapshot is an entry whose id is `<step start ms>-0`. Redis refuses
//! an entry id not above the last one, so when several processes record the
//! same step, the first `XADD` wins and the others are refused: one snapshot
//! per step however many processes run, with no lock. The stream is trimmed
//! to a bounded number of steps on every write.
//!
//! Recording is off the hot path: producers and workers never touch the
//! history; a sampler (the HTTP server runs one) calls
//! [`Queue::record_history`] once per step.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::error::Error;
use crate::priority::Priority;
use crate::queue::Queue;
use crate::time::{millis, now_ms};

/// One step of a queue's history: lengths at the time of the snapshot, and
/// the counters since the queue began (subtract two points for the
/// throughput between them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPoint {
    /// The start of the step, Unix ms.
    pub at_ms: u64,
    /// Jobs waiting per priority, most urgent first.
    pub waiting: [u64; 4],
    /// Jobs in flight over all priorities.
    pub in_flight: u64,
    /// Jobs waiting for their time (retries, scheduled).
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Jobs ever enqueued.
    pub enqueued: u64,
    /// Jobs ever completed.
    pub completed: u64,
    /// Handler runs that ever failed.
    pub failed: u64,
    /// Jobs ever dead-lettered.
    pub dead_lettered: u64,
}

/// Field names of a snapshot entry, after the four `w:<priority>` fields.
const FIELDS: [&str; 7] = ["inflight", "delayed", "dlq", "enq", "done", "fail", "dead"];

impl HistoryPoint {
    fn values(&self) -> [u64; 7] {
        [
            self.in_flight,
            self.delayed,
            self.dead_letters,
            self.enqueued,
            self.completed,
            self.failed,
            self.dead_lettered,
        ]
    }

    fn from_entry(id: &str, fields: &HashMap<String, Value>) -> Option<HistoryPoint> {
        let at_ms = id.split_once('-')?.0.parse().ok()?;
        let number = |name: &str| -> u64 {
            fields
                .get(name)
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(0)
        };
        let mut point = HistoryPoint {
            at_ms,
            ..HistoryPoint::default()
        };
        for p in Priority::ALL {
            point.waiting[p.index()] = number(&format!("w:{p}"));
        }
        let [inflight, delayed, dlq, enq, done, fail, dead] = FIELDS.map(number);
        point.in_flight = inflight;
        point.delayed = delayed;
        point.dead_letters = dlq;
        point.enqueued = enq;
        point.completed = done;
        point.failed = fail;
        point.dead_lettered = dead;
        Some(point)
    }
}

/// The start of the step holding `now_ms`, for steps of `step_ms`.
fn step_start(now_ms: u64, step_ms: u64) -> u64 {
    now_ms - now_ms % step_ms.max(1)
}

impl Queue {
    /// Records a snapshot for the current step of length `step` unless some
    /// process already did, keeping at most about `keep` steps. Returns
    /// whether this call wrote it. Four round trips when it writes, one
    /// when the step is already recorded.
    ///
    /// # Errors
    ///
    /// Connection and permission errors, [`Error::OutOfMemory`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call writes the step's snapshot or nothing.
    pub async fn record_history(&self, step: Duration, keep: u64) -> Result<bool, Error> {
        let key = self.keys().history();
        let at = step_start(now_ms(), millis(step));
        let last_ms = self
            .last_entry_id(&key)
            .await?
            .and_then(|id| id.split_once('-')?.0.parse::<u64>().ok());
        if last_ms.is_some_and(|ms| ms >= at) {
            return Ok(false);
        }
        let stats = self.stats().await?;
        let totals = self.metrics().await?.total();
        let mut point = HistoryPoint {
            at_ms: at,
            in_flight: stats.in_flight(),
            delayed: stats.delayed,
            dead_letters: stats.dead_letters,
            enqueued: totals.enqueued,
            completed: totals.completed,
            failed: totals.failed,
            dead_lettered: totals.dead_lettered,
            ..HistoryPoint::default()
        };
        for p in &stats.priorities {
            point.waiting[p.priority.index()] = p.waiting;
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(keep.max(1))
            .arg(format!("{at}-0"));
        for p in Priority::ALL {
            cmd.arg(format!("w:{p}")).arg(point.waiting[p.index()]);
        }
        for (name, value) in FIELDS.iter().zip(point.values()) {
            cmd.arg(*name).arg(value);
        }
        let added: redis::RedisResult<String> = cmd.query_async(&mut self.conn()).await;
        match added {
            Ok(_) => Ok(true),
            // Another process recorded this step first.
            Err(e) if e.to_string().contains("equal or smaller") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads up to `count` history points from `since_ms` on (Unix ms;
    /// `None`: the oldest kept), oldest first.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn history(
        &self,
        since_ms: Option<u64>,
        count: usize,
    ) -> Result<Vec<HistoryPoint>, Error> {
        let start = since_ms.map_or_else(|| "-".to_owned(), |ms| ms.to_string());
        let entries: Vec<(String, HashMap<String, Value>)> = redis::cmd("XRANGE")
            .arg(self.keys().history())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn())
            .await?;
        Ok(entries
            .iter()
            .filter_map(|(id, fields)| HistoryPoint::from_entry(id, fields))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_start_on_multiples_of_the_step() {
        assert_eq!(step_start(125_400, 60_000), 120_000);
        assert_eq!(step_start(120_000, 60_000), 120_000);
        assert_eq!(step_start(7, 0), 7);
    }

    #[test]
    fn entries_parse_back_into_points() {
        let fields: HashMap<String, Value> = [
            ("w:critical", 3),
            ("w:low", 9),
            ("inflight", 2),
            ("enq", 40),
            ("done", 30),
            ("dead", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::BulkString(v.to_string().into_bytes())))
        .collect();
        let point = HistoryPoint::from_entry("120000-0", &fields).expect("parses");
        assert_eq!(point.at_ms, 120_000);
        assert_eq!(point.waiting, [3, 0, 0, 9]);
        assert_eq!(
            (point.in_flight, point.enqueued, point.completed),
            (2, 40, 30)
        );
        assert_eq!(point.dead_lettered, 1);
        assert_eq!(HistoryPoint::from_entry("bad", &fields), None);
    }
}
