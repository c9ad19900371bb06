//! Reading back what the scripts count: counters per priority and per job
//! name, and latency histograms per job name. Any process can read them; the
//! worker never does.
//!
//! Histograms are log-scale: bucket `b` holds durations `d` (in microseconds)
//! with `floor(4 * log2(d)) == b`, four buckets per doubling (about 19%
//! wide). `ack.lua` fills them; [`LatencyHistogram::percentile`] reports a
//! bucket's upper bound, so percentiles err high, never low.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::error::Error;
use crate::priority::Priority;
use crate::protocol::latency::bucket_upper_bound;
use crate::queue::Queue;

/// What happened to jobs, counted by the scripts as it happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Jobs added (duplicates of an idempotency key excluded).
    pub enqueued: u64,
    /// Jobs completed and acknowledged.
    pub completed: u64,
    /// Handler runs that failed (errors, panics, timeouts, undecodable payloads).
    pub failed: u64,
    /// Failed runs scheduled to run again.
    pub retried: u64,
    /// Jobs moved to the dead letters.
    pub dead_lettered: u64,
    /// Times a job was taken over after its lease ran out.
    pub reclaimed: u64,
    /// Pending jobs Redis reported deleted (per priority only: a deleted
    /// entry has no name left to count under).
    pub lost: u64,
    /// Acknowledged enqueues that a failover or a restart rolled back: the
    /// server now holding the partition never had them (counted by the
    /// producers that made them; per priority only). Includes jobs that had
    /// already run before the failover. See docs/guarantees.md.
    pub rolled_back: u64,
    /// Finishes refused because another worker owned the job by then.
    pub ownership_lost: u64,
    /// Dead letters moved back to the queue (per priority only).
    pub requeued: u64,
    /// Unfinished jobs handed back by workers shutting down (per priority
    /// only).
    pub released: u64,
}

impl Counts {
    fn add(&mut self, counter: &str, n: u64) {
        let slot = match counter {
            "enqueued" => &mut self.enqueued,
            "completed" => &mut self.completed,
            "failed" => &mut self.failed,
            "retried" => &mut self.retried,
            "dead" => &mut self.dead_lettered,
            "reclaimed" => &mut self.reclaimed,
            "lost" => &mut self.lost,
            "rolled_back" => &mut self.rolled_back,
            "ownership_lost" => &mut self.ownership_lost,
            "requeued" => &mut self.requeued,
            "released" => &mut self.released,
            _ => return,
        };
        *slot += n;
    }
}

/// A latency histogram read from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: BTreeMap<i32, u64>,
    sum_us: u64,
}

impl LatencyHistogram {
    /// Adds `other`'s recordings to these (partitions of one queue).
    pub(crate) fn merge(&mut self, other: &LatencyHistogram) {
        for (bucket, n) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += n;
        }
        self.sum_us += other.sum_us;
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The sum of every recorded duration.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// The duration at or below which a share `q` (0 to 1) of recordings
    /// fall, as the upper bound of its bucket; `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&bucket, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper_bound(bucket));
            }
        }
        self.buckets.keys().last().map(|&b| bucket_upper_bound(b))
    }

    /// Each non-empty bucket's upper bound with the count of recordings at
    /// or below it (cumulative), in increasing order.
    pub fn cumulative(&self) -> Vec<(Duration, u64)> {
        let mut seen = 0;
        self.buckets
            .iter()
            .map(|(&bucket, &n)| {
                seen += n;
                (bucket_upper_bound(bucket), seen)
            })
            .collect()
    }
}

/// Wait (ready to start) and run (start to finish) times of one job name,
/// for runs that ended in a completion: the job's, or one whose
/// acknowledgement was refused because another worker had reclaimed the job
/// meanwhile (it ran all the same; rare, and counted in `ownership_lost`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobLatency {
    /// From when a job could start (enqueued, or due) to when it started.
    pub wait: LatencyHistogram,
    /// From start to finish of the handler.
    pub run: LatencyHistogram,
}

/// Everything the scripts count for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueMetrics {
    /// Counters per priority.
    pub by_priority: BTreeMap<Priority, Counts>,
    /// Counters per job name (when the queue keeps per-name metrics).
    pub by_name: BTreeMap<String, Counts>,
    /// Latency per job name (when the queue keeps per-name metrics).
    pub latency: BTreeMap<String, JobLatency>,
    /// Jobs enqueued to run later (delayed or scheduled).
    pub scheduled: u64,
    /// Enqueues refused as duplicates of an idempotency key.
    pub deduplicated: u64,
}

impl QueueMetrics {
    /// The counters summed over all priorities.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.by_priority.values() {
            for (name, n) in counts.fields() {
                total.add(name, n);
            }
        }
        total
    }

    fn parse(stats: HashMap<String, u64>, latency: HashMap<String, u64>) -> QueueMetrics {
        let mut metrics = QueueMetrics::default();
        for p in Priority::ALL {
            metrics.by_priority.insert(p, Counts::default());
        }
        for (field, n) in stats {
            if let Some(rest) = field.strip_prefix("name:") {
                if let Some((counter, name)) = rest.split_once(':') {
                    metrics
                        .by_name
                        .entry(name.to_owned())
                        .or_default()
                        .add(counter, n);
                }
            } else if let Some((counter, priority)) = field.split_once(':') {
                if let Ok(p) = priority.parse::<Priority>() {
                    metrics.by_priority.entry(p).or_default().add(counter, n);
                }
            } else if field == "scheduled" {
                metrics.scheduled = n;
            } else if field == "deduplicated" {
                metrics.deduplicated = n;
            }
        }
        for (field, n) in latency {
            if let Some(name) = field.strip_prefix("wait_sum:") {
                metrics
                    .latency
                    .entry(name.to_owned())
                    .or_default()
                    .wait
                    .sum_us = n;
            } else if let Some(name) = field.strip_prefix("run_sum:") {
                metrics
                    .latency
                    .entry(name.to_owned())
                    .or_default()
                    .run
                    .sum_us = n;
            } else {
                let mut parts = field.splitn(3, ':');
                let (Some(kind), Some(bucket), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(bucket) = bucket.parse::<i32>() else {
                    continue;
                };
                let entry = metrics.latency.entry(name.to_owned()).or_default();
                let histogram = match kind {
                    "wait" => &mut entry.wait,
                    "run" => &mut entry.run,
                    _ => continue,
                };
                *histogram.buckets.entry(bucket).or_default() += n;
            }
        }
        metrics
    }
}

impl Counts {
    fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("enqueued", self.enqueued),
            ("completed", self.completed),
            ("failed", self.failed),
            ("retried", self.retried),
            ("dead", self.dead_lettered),
            ("reclaimed", self.reclaimed),
            ("lost", self.lost),
            ("rolled_back", self.rolled_back),
            ("ownership_lost", self.ownership_lost),
            ("requeued", self.requeued),
            ("released", self.released),
        ]
    }
}

impl Queue {
    /// Reads every counter and histogram the scripts keep, in one round trip.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn metrics(&self) -> Result<QueueMetrics, Error> {
        if let Some(parts) = self.split() {
            let each =
                crate::admin::partitions::each(&parts, |p| Box::pin(p.metrics_one())).await?;
            return Ok(crate::admin::partitions::merge_metrics(each));
        }
        self.metrics_one().await
    }

    /// [`Queue::metrics`] on one partition (or a queue of one).
    async fn metrics_one(&self) -> Result<QueueMetrics, Error> {
        let (stats, latency): (HashMap<String, u64>, HashMap<String, u64>) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys().stats())
            .cmd("HGETALL")
            .arg(self.keys().latency())
            .query_async(&mut self.conn())
            .await?;
        Ok(QueueMetrics::parse(stats, latency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_into_counters_and_histograms() {
        let stats: HashMap<String, u64> = [
            ("completed:high", 5),
            ("dead:low", 1),
            ("name:completed:send:email", 4),
            ("name:failed:send:email", 2),
            ("scheduled", 3),
            ("ownership_lost:high", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // 10 waits in bucket 39 (512..1024 us], 90 in bucket 43.
        let latency: HashMap<String, u64> = [
            ("wait:39:send:email", 10),
            ("wait:43:send:email", 90),
            ("wait_sum:send:email", 150_000),
            ("run:20:send:email", 4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let m = QueueMetrics::parse(stats, latency);
        assert_eq!(m.by_priority[&Priority::High].completed, 5);
        assert_eq!(m.by_priority[&Priority::High].ownership_lost, 1);
        assert_eq!(m.by_priority[&Priority::Low].dead_lettered, 1);
        assert_eq!(m.total().completed, 5);
        let email = &m.by_name["send:email"];
        assert_eq!((email.completed, email.failed), (4, 2));
        assert_eq!(m.scheduled, 3);
        let wait = &m.latency["send:email"].wait;
        assert_eq!(wait.count(), 100);
        assert_eq!(wait.sum(), Duration::from_millis(150));
        assert_eq!(wait.percentile(0.05), Some(bucket_upper_bound(39)));
        assert_eq!(wait.percentile(0.5), Some(bucket_upper_bound(43)));
        assert_eq!(
            wait.cumulative(),
            vec![(bucket_upper_bound(39), 10), (bucket_upper_bound(43), 100)]
        );
        assert_eq!(m.latency["send:email"].run.count(), 4);
        assert_eq!(LatencyHistogram::default().percentile(0.5), None);
    }
}
