//! The operator's view of a partitioned queue: every admin call on the
//! logical queue covers all its partitions. Reads are merged (sums, the
//! worst health, dead letters interleaved by id); writes by id try each
//! partition until one has the id; bulk writes run on every partition.
//! [`crate::QueueStats::partitions`] keeps the per-partition breakdown.

use std::future::Future;

use crate::admin::inspect::{Health, QueueReport};
use crate::admin::metrics::{Counts, QueueMetrics};
use crate::error::Error;
use crate::queue::Queue;

impl Queue {
    /// The partitions of a partitioned queue; `None` for a queue of one
    /// (then the caller does the work itself).
    pub(crate) fn split(&self) -> Option<Vec<Queue>> {
        (self.partition_count() > 1).then(|| self.partitions())
    }
}

/// Runs `f` on every partition at once; the results in partition order.
pub(crate) async fn each<'a, T, F, Fut>(parts: &'a [Queue], f: F) -> Result<Vec<T>, Error>
where
    F: Fn(&'a Queue) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    futures_util::future::join_all(parts.iter().map(f))
        .await
        .into_iter()
        .collect()
}

/// The first partition's answer that is `Some`, asking one at a time.
pub(crate) async fn first<'a, T, F, Fut>(parts: &'a [Queue], f: F) -> Result<Option<T>, Error>
where
    F: Fn(&'a Queue) -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    for part in parts {
        if let Some(found) = f(part).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn add_counts(sum: &mut Counts, c: &Counts) {
    sum.enqueued += c.enqueued;
    sum.completed += c.completed;
    sum.failed += c.failed;
    sum.retried += c.retried;
    sum.dead_lettered += c.dead_lettered;
    sum.reclaimed += c.reclaimed;
    sum.lost += c.lost;
    sum.rolled_back += c.rolled_back;
    sum.ownership_lost += c.ownership_lost;
    sum.requeued += c.requeued;
    sum.released += c.released;
}

/// Counters and histograms of every partition, summed.
pub(crate) fn merge_metrics(parts: Vec<QueueMetrics>) -> QueueMetrics {
    let mut total = QueueMetrics::default();
    for part in parts {
        for (p, c) in &part.by_priority {
            add_counts(total.by_priority.entry(*p).or_default(), c);
        }
        for (name, c) in &part.by_name {
            add_counts(total.by_name.entry(name.clone()).or_default(), c);
        }
        for (name, l) in part.latency {
            let sum = total.latency.entry(name).or_default();
            sum.wait.merge(&l.wait);
            sum.run.merge(&l.run);
        }
        total.scheduled += part.scheduled;
        total.deduplicated += part.deduplicated;
    }
    total
}

fn severity(health: &Health) -> u8 {
    match health {
        Health::Healthy => 0,
        Health::Backlogged(_) => 1,
        Health::Errors(_) => 2,
        Health::Stalled(_) => 3,
        Health::Unavailable(_) => 4,
    }
}

/// Every partition's report in one: sums, the oldest waiting job, consumers
/// by name (pending summed, idle the least), and the worst health, its
/// reasons naming their partition.
pub(crate) fn merge_reports(mut parts: Vec<QueueReport>) -> Option<QueueReport> {
    let worst = parts
        .iter()
        .enumerate()
        .max_by_key(|(_, r)| severity(&r.health))
        .map(|(i, r)| (i, r.health.clone()))?;
    let mut reasons = Vec::new();
    for (i, report) in parts.iter().enumerate() {
        if severity(&report.health) == severity(&worst.1) {
            reasons.extend(
                report
                    .health
                    .reasons()
                    .into_iter()
                    .map(|r| format!("partition {i}: {r}")),
            );
        }
    }
    let health = match worst.1 {
        Health::Healthy => Health::Healthy,
        Health::Backlogged(_) => Health::Backlogged(reasons),
        Health::Errors(_) => Health::Errors(reasons),
        Health::Stalled(_) => Health::Stalled(reasons),
        Health::Unavailable(_) => Health::Unavailable(reasons.join("; ")),
    };
    let mut total = parts.remove(0);
    for part in parts {
        total.exists |= part.exists;
        total.paused |= part.paused;
        for (sum, p) in total.priorities.iter_mut().zip(&part.priorities) {
            sum.length += p.length;
            sum.waiting += p.waiting;
            sum.in_flight += p.in_flight;
            sum.oldest_waiting = sum.oldest_waiting.max(p.oldest_waiting);
        }
        for consumer in part.consumers {
            match total.consumers.iter_mut().find(|c| c.name == consumer.name) {
                Some(c) => {
                    c.pending += consumer.pending;
                    c.idle = c.idle.min(consumer.idle);
                    c.live |= consumer.live;
                }
                None => total.consumers.push(consumer),
            }
        }
        total.delayed += part.delayed;
        total.next_due_ms = match (total.next_due_ms, part.next_due_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.dead_letters += part.dead_letters;
    }
    total.health = health;
    Some(total)
}

/// A dead letter's id in a partitioned queue: its entry id in its
/// partition's dead-letter stream, then `@` and the partition.
pub(crate) fn qualify(id: &str, partition: usize) -> String {
    format!("{id}@{partition}")
}

/// Splits a qualified id; checks both parts.
pub(crate) fn unqualify(id: &str, partitions: usize) -> Result<(&str, usize), Error> {
    let bad = || Error::InvalidEntryId(id.to_owned());
    let (entry, partition) = id.rsplit_once('@').ok_or_else(bad)?;
    let partition: usize = partition.parse().map_err(|_| bad())?;
    if partition >= partitions {
        return Err(bad());
    }
    crate::admin::dead_letters::check_entry_id(entry)?;
    Ok((entry, partition))
}

/// The order of qualified ids: entry id, then partition.
pub(crate) fn qualified_order(id: &str) -> (u64, u64, usize) {
    let (entry, partition) = id.rsplit_once('@').unwrap_or((id, "0"));
    let (ms, seq) = entry.split_once('-').unwrap_or((entry, "0"));
    (
        ms.parse().unwrap_or(0),
        seq.parse().unwrap_or(0),
        partition.parse().unwrap_or(0),
    )
}

/// Where partition `q`'s page starts to come after `(entry, p)` in
/// qualified order: after `entry` itself, or from it (`[` marks
/// inclusive) for partitions ordered after `p`.
pub(crate) fn start_after(entry: &str, p: usize, q: usize) -> String {
    if q > p {
        format!("[{entry}")
    } else {
        entry.to_owned()
    }
}
