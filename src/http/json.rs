//! The library's admin types as JSON, in one place: the API's response
//! shapes (documented in docs/http.md) are all built here.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::admin::cancel::{Cancelled, RemovedFrom};
use crate::admin::history::HistoryPoint;
use crate::admin::inspect::{Health, QueueReport};
use crate::admin::metrics::{Counts, LatencyHistogram, QueueMetrics};
use crate::admin::stats::QueueStats;
use crate::priority::Priority;
use crate::schedule::{CatchUp, ScheduleChange, ScheduleInfo, Timing, Upserted};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seed 001's health answer: `redis_available`, `queue_status` and
/// `metrics` with its field names, plus `reasons` and a few extra metrics.
pub(crate) fn seed_health(report: &QueueReport, metrics: &QueueMetrics) -> Value {
    let totals = metrics.total();
    let mut m = Map::new();
    for p in &report.priorities {
        m.insert(format!("queue_length:{}", p.priority), json!(p.waiting));
    }
    m.insert("processing_queue_length".into(), json!(report.in_flight()));
    m.insert(
        "dead_letter_queue_length".into(),
        json!(report.dead_letters),
    );
    m.insert("delayed_queue_length".into(), json!(report.delayed));
    m.insert("total_enqueued".into(), json!(totals.enqueued));
    // Jobs a worker took and finished or still holds.
    m.insert(
        "total_dequeued".into(),
        json!(totals.completed + totals.dead_lettered + report.in_flight()),
    );
    m.insert("successfully_processed".into(), json!(totals.completed));
    m.insert("processing_failures".into(), json!(totals.failed));
    m.insert("retried".into(), json!(totals.retried));
    m.insert("dead_lettered".into(), json!(totals.dead_lettered));
    m.insert("paused".into(), json!(report.paused));
    json!({
        "redis_available": true,
        "queue_status": report.health.as_str(),
        "reasons": report.health.reasons(),
        "metrics": m,
    })
}

/// The health answer when Redis cannot be read.
pub(crate) fn unavailable_health(error: &str) -> Value {
    json!({
        "redis_available": false,
        "queue_status": Health::Unavailable(String::new()).as_str(),
        "reasons": [error],
    })
}

pub(crate) fn counts(c: &Counts) -> Value {
    json!({
        "enqueued": c.enqueued,
        "completed": c.completed,
        "failed": c.failed,
        "retried": c.retried,
        "dead_lettered": c.dead_lettered,
        "reclaimed": c.reclaimed,
        "lost": c.lost,
        "rolled_back": c.rolled_back,
        "ownership_lost": c.ownership_lost,
        "requeued": c.requeued,
    })
}

pub(crate) fn stats(stats: &QueueStats) -> Value {
    json!({
        "priorities": stats.priorities.iter().map(|p| json!({
            "priority": p.priority.as_str(),
            "length": p.length,
            "waiting": p.waiting,
            "in_flight": p.in_flight,
            "enqueued": p.enqueued,
            "completed": p.completed,
            "dead_lettered": p.dead_lettered,
        })).collect::<Vec<_>>(),
        "waiting": stats.waiting(),
        "in_flight": stats.in_flight(),
        "delayed": stats.delayed,
        "dead_letters": stats.dead_letters,
        // A partitioned queue's breakdown, by partition index (empty for one).
        "partitions": stats.partitions.iter().map(self::stats).collect::<Vec<_>>(),
    })
}

pub(crate) fn report(report: &QueueReport) -> Value {
    json!({
        "queue": report.queue,
        "paused": report.paused,
        "health": { "status": report.health.as_str(), "reasons": report.health.reasons() },
        "priorities": report.priorities.iter().map(|p| json!({
            "priority": p.priority.as_str(),
            "length": p.length,
            "waiting": p.waiting,
            "in_flight": p.in_flight,
            "oldest_waiting_ms": p.oldest_waiting.map(ms),
        })).collect::<Vec<_>>(),
        "consumers": report.consumers.iter().map(|c| json!({
            "name": c.name,
            "idle_ms": ms(c.idle),
            "pending": c.pending,
        })).collect::<Vec<_>>(),
        "waiting": report.waiting(),
        "in_flight": report.in_flight(),
        "delayed": report.delayed,
        "next_due_ms": report.next_due_ms,
        "dead_letters": report.dead_letters,
    })
}

fn histogram(h: &LatencyHistogram) -> Value {
    json!({
        "count": h.count(),
        "p50_ms": h.percentile(0.5).map(ms),
        "p99_ms": h.percentile(0.99).map(ms),
        "mean_ms": (h.count() > 0).then(|| ms(h.sum()) / h.count() as f64),
    })
}

pub(crate) fn metrics(metrics: &QueueMetrics) -> Value {
    let by_priority: Map<String, Value> = metrics
        .by_priority
        .iter()
        .map(|(p, c)| (p.as_str().to_owned(), counts(c)))
        .collect();
    let by_name: Map<String, Value> = metrics
        .by_name
        .iter()
        .map(|(n, c)| (n.clone(), counts(c)))
        .collect();
    json!({
        "total": counts(&metrics.total()),
        "by_priority": by_priority,
        "by_name": by_name,
        "latency": metrics.latency.iter().map(|(name, l)| json!({
            "name": name,
            "wait": histogram(&l.wait),
            "run": histogram(&l.run),
        })).collect::<Vec<_>>(),
        "scheduled": metrics.scheduled,
        "deduplicated": metrics.deduplicated,
    })
}

/// A saved schedule: its timing (`every_ms`, or `cron` and `time_zone`),
/// what each job gets, and its next tick.
pub(crate) fn schedule(info: &ScheduleInfo) -> Value {
    let s = &info.schedule;
    let mut value = json!({
        "id": s.id(),
        "catch_up": catch_up(s.catch_up_policy()),
        "name": s.job_name(),
        "priority": s.job_priority().as_str(),
        "max_attempts": s.job_max_attempts(),
        "timeout_ms": s.job_timeout().map(|t| t.as_millis() as u64),
        "rate_group": s.job_rate_group(),
        "next_due_ms": info.next_due_ms,
    });
    match s.timing() {
        Timing::Every(interval) => value["every_ms"] = json!(interval.as_millis() as u64),
        Timing::Cron {
            expression,
            time_zone,
        } => {
            value["cron"] = json!(expression);
            value["time_zone"] = json!(time_zone);
        }
    }
    value
}

pub(crate) fn catch_up(catch_up: CatchUp) -> &'static str {
    match catch_up {
        CatchUp::Skip => "skip",
        CatchUp::RunOnce => "run_once",
    }
}

/// What an upsert did.
pub(crate) fn upserted(id: &str, upserted: &Upserted) -> Value {
    let change = match upserted.change {
        ScheduleChange::Created => "created",
        ScheduleChange::Updated => "updated",
        ScheduleChange::Unchanged => "unchanged",
    };
    json!({ "id": id, "change": change, "next_due_ms": upserted.next_due_ms })
}

/// What a cancel did: `removed` (with where from) or `stop_requested`.
pub(crate) fn cancelled(id: &str, outcome: &Cancelled) -> Value {
    match outcome {
        Cancelled::Removed {
            from: RemovedFrom::Waiting { priority },
        } => json!({
            "id": id, "outcome": "removed", "from": "waiting", "priority": priority.as_str(),
        }),
        Cancelled::Removed {
            from: RemovedFrom::Delayed { priority, due_ms },
        } => json!({
            "id": id, "outcome": "removed", "from": "delayed", "priority": priority.as_str(),
            "due_ms": due_ms,
        }),
        Cancelled::StopRequested { priority, entry_id } => json!({
            "id": id, "outcome": "stop_requested", "priority": priority.as_str(),
            "entry_id": entry_id,
        }),
        _ => json!({ "id": id, "outcome": "not_found" }),
    }
}

/// History points, each with the throughput since the point before it.
pub(crate) fn history(points: &[HistoryPoint], step: Option<Duration>) -> Value {
    let mut out = Vec::with_capacity(points.len());
    let mut previous: Option<&HistoryPoint> = None;
    for point in points {
        let waiting: Map<String, Value> = Priority::ALL
            .iter()
            .zip(point.waiting)
            .map(|(p, n)| (p.as_str().to_owned(), json!(n)))
            .collect();
        let throughput = previous.map(|prev| {
            json!({
                "enqueued": point.enqueued.saturating_sub(prev.enqueued),
                "completed": point.completed.saturating_sub(prev.completed),
                "failed": point.failed.saturating_sub(prev.failed),
                "dead_lettered": point.dead_lettered.saturating_sub(prev.dead_lettered),
                "interval_ms": point.at_ms.saturating_sub(prev.at_ms),
            })
        });
        out.push(json!({
            "at_ms": point.at_ms,
            "waiting": waiting,
            "in_flight": point.in_flight,
            "delayed": point.delayed,
            "dead_letters": point.dead_letters,
            "enqueued": point.enqueued,
            "completed": point.completed,
            "failed": point.failed,
            "dead_lettered": point.dead_lettered,
            "throughput": throughput,
        }));
        previous = Some(point);
    }
    json!({
        "step_ms": step.map(|s| s.as_millis() as u64),
        "points": out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_difference_between_points() {
        let a = HistoryPoint {
            at_ms: 60_000,
            enqueued: 10,
            ..HistoryPoint::default()
        };
        let b = HistoryPoint {
            at_ms: 120_000,
            enqueued: 25,
            ..HistoryPoint::default()
        };
        let v = history(&[a, b], Some(Duration::from_secs(60)));
        assert_eq!(v["points"][0]["throughput"], Value::Null);
        assert_eq!(v["points"][1]["throughput"]["enqueued"], 15);
        assert_eq!(v["step_ms"], 60_000);
    }
}
