//! Rendering a queue's state and metrics in the Prometheus text exposition
//! format (version 0.0.4), for a `/metrics` endpoint or `streamq metrics`.
//!
//! Families (every one labelled `queue`):
//!
//! | family | type | more labels |
//! |---|---|---|
//! | `streamq_jobs_waiting`, `streamq_jobs_in_flight`, `streamq_oldest_waiting_seconds` | gauge | `priority` |
//! | `streamq_jobs_delayed`, `streamq_dead_letters`, `streamq_paused`, `streamq_consumers` | gauge | |
//! | `streamq_health` | gauge, 1 for the current status | `status` |
//! | `streamq_consumer_pending_jobs`, `streamq_consumer_idle_seconds` | gauge | `consumer` |
//! | `streamq_jobs_<counter>_total` | counter | `priority` |
//! | `streamq_jobs_by_name_<counter>_total` | counter | `name` |
//! | `streamq_job_wait_seconds`, `streamq_job_run_seconds` | histogram | `name` |
//!
//! Counters: `enqueued`, `completed`, `failed`, `retried`, `dead_lettered`,
//! `reclaimed`, `lost`, `ownership_lost`, `requeued`, `released`.

use std::fmt::Write;

use crate::admin::inspect::{HealthThresholds, PriorityReport, QueueReport};
use crate::admin::metrics::{Counts, LatencyHistogram, QueueMetrics};
use crate::error::Error;
use crate::queue::Queue;

impl Queue {
    /// The queue's state ([`Queue::inspect`]) and counters and histograms
    /// ([`Queue::metrics`]) as Prometheus text.
    ///
    /// # Errors
    ///
    /// Connection and permission errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn prometheus(&self, thresholds: &HealthThresholds) -> Result<String, Error> {
        let report = self.inspect(thresholds).await?;
        let metrics = self.metrics().await?;
        let mut text = render(&report, &metrics);
        if self.partition_count() > 1 {
            text.push_str(&render_partitions(self.name(), &self.stats().await?));
        }
        Ok(text)
    }
}

/// A per-priority gauge family: its name, its help, and how to read it.
type Gauge = (&'static str, &'static str, fn(&PriorityReport) -> f64);

/// A counter family: its name part, its help, and how to read it.
type Counter = (&'static str, &'static str, fn(&Counts) -> u64);

const COUNTERS: [Counter; 11] = [
    ("enqueued", "Jobs added to the queue.", |c| c.enqueued),
    ("completed", "Jobs completed and acknowledged.", |c| {
        c.completed
    }),
    ("failed", "Handler runs that failed.", |c| c.failed),
    ("retried", "Failed runs scheduled to run again.", |c| {
        c.retried
    }),
    ("dead_lettered", "Jobs moved to the dead letters.", |c| {
        c.dead_lettered
    }),
    (
        "reclaimed",
        "Jobs taken over after their lease ran out.",
        |c| c.reclaimed,
    ),
    ("lost", "Pending jobs Redis reported deleted.", |c| c.lost),
    (
        "rolled_back",
        "Acknowledged enqueues a failover or restart rolled back.",
        |c| c.rolled_back,
    ),
    (
        "ownership_lost",
        "Finishes refused: another worker owned the job.",
        |c| c.ownership_lost,
    ),
    ("requeued", "Dead letters moved back to the queue.", |c| {
        c.requeued
    }),
    (
        "released",
        "Unfinished jobs handed back by workers shutting down.",
        |c| c.released,
    ),
];

/// Renders a report and metrics; the same input always gives the same text.
pub(crate) fn render(report: &QueueReport, metrics: &QueueMetrics) -> String {
    let mut out = Exposition::new(&report.queue);
    let per_priority: [Gauge; 3] = [
        (
            "streamq_jobs_waiting",
            "Jobs not yet delivered to a worker.",
            |p| p.waiting as f64,
        ),
        (
            "streamq_jobs_in_flight",
            "Jobs delivered and not finished.",
            |p| p.in_flight as f64,
        ),
        (
            "streamq_oldest_waiting_seconds",
            "How long the oldest waiting job has waited.",
            |p| p.oldest_waiting.map_or(0.0, |d| d.as_secs_f64()),
        ),
    ];
    for (family, help, value) in per_priority {
        out.family(family, "gauge", help);
        for p in &report.priorities {
            out.sample("", &[("priority", p.priority.as_str())], value(p));
        }
    }
    out.family(
        "streamq_jobs_delayed",
        "gauge",
        "Jobs waiting for their time: retries and scheduled jobs.",
    );
    out.sample("", &[], report.delayed as f64);
    out.family(
        "streamq_dead_letters",
        "gauge",
        "Jobs in the dead-letter stream.",
    );
    out.sample("", &[], report.dead_letters as f64);
    out.family("streamq_paused", "gauge", "1 while the queue is paused.");
    out.sample("", &[], f64::from(u8::from(report.paused)));
    out.family(
        "streamq_health",
        "gauge",
        "1 for the queue's current health status.",
    );
    for status in ["healthy", "backlogged", "errors", "unavailable"] {
        let on = report.health.as_str() == status;
        out.sample("", &[("status", status)], f64::from(u8::from(on)));
    }
    out.family(
        "streamq_consumers",
        "gauge",
        "Consumers in the queue's group.",
    );
    out.sample("", &[], report.consumers.len() as f64);
    out.family(
        "streamq_consumer_pending_jobs",
        "gauge",
        "Jobs a consumer holds.",
    );
    for c in &report.consumers {
        out.sample("", &[("consumer", &c.name)], c.pending as f64);
    }
    out.family(
        "streamq_consumer_idle_seconds",
        "gauge",
        "Time since a consumer last fetched or renewed a lease.",
    );
    for c in &report.consumers {
        out.sample("", &[("consumer", &c.name)], c.idle.as_secs_f64());
    }
    for (counter, help, get) in COUNTERS {
        out.family(&format!("streamq_jobs_{counter}_total"), "counter", help);
        for (priority, counts) in &metrics.by_priority {
            out.sample("", &[("priority", priority.as_str())], get(counts) as f64);
        }
    }
    if !metrics.by_name.is_empty() {
        for (counter, help, get) in COUNTERS {
            if matches!(counter, "lost" | "rolled_back" | "requeued" | "released") {
                continue;
            }
            out.family(
                &format!("streamq_jobs_by_name_{counter}_total"),
                "counter",
                help,
            );
            for (name, counts) in &metrics.by_name {
                out.sample("", &[("name", name)], get(counts) as f64);
            }
        }
    }
    for (kind, help) in [
        (
            "wait",
            "From when a job could start to when it started (completed jobs).",
        ),
        ("run", "From a job's start to its finish (completed jobs)."),
    ] {
        let family = format!("streamq_job_{kind}_seconds");
        out.family(&family, "histogram", help);
        for (name, latency) in &metrics.latency {
            let h = if kind == "wait" {
                &latency.wait
            } else {
                &latency.run
            };
            out.histogram(name, h);
        }
    }
    out.text
}

/// Builds exposition text, one family at a time.
struct Exposition<'a> {
    queue: &'a str,
    family: String,
    text: String,
}

impl<'a> Exposition<'a> {
    fn new(queue: &'a str) -> Exposition<'a> {
        Exposition {
            queue,
            family: String::new(),
            text: String::new(),
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.family = name.to_owned();
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(
            self.text,
            "{}{suffix}{{queue=\"{}\"",
            self.family,
            escape(self.queue)
        );
        for (key, val) in labels {
            let _ = write!(self.text, ",{key}=\"{}\"", escape(val));
        }
        let _ = writeln!(self.text, "}} {value}");
    }

    fn histogram(&mut self, name: &str, h: &LatencyHistogram) {
        for (bound, cumulative) in h.cumulative() {
            let le = format!("{}", bound.as_secs_f64());
            self.sample("_bucket", &[("name", name), ("le", &le)], cumulative as f64);
        }
        self.sample(
            "_bucket",
            &[("name", name), ("le", "+Inf")],
            h.count() as f64,
        );
        self.sample("_sum", &[("name", name)], h.sum().as_secs_f64());
        self.sample("_count", &[("name", name)], h.count() as f64);
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The per-partition breakdown of a partitioned queue: jobs waiting and
/// in flight per partition and priority.
fn render_partitions(queue: &str, stats: &crate::admin::stats::QueueStats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, help, read) in [
        (
            "waiting",
            "Jobs waiting per partition.",
            (|p: &crate::admin::stats::PriorityStats| p.waiting)
                as fn(&crate::admin::stats::PriorityStats) -> u64,
        ),
        ("in_flight", "Jobs in flight per partition.", |p| {
            p.in_flight
        }),
    ] {
        let _ = writeln!(out, "# HELP streamq_partition_{name} {help}");
        let _ = writeln!(out, "# TYPE streamq_partition_{name} gauge");
        for (i, part) in stats.partitions.iter().enumerate() {
            for p in &part.priorities {
                let _ = writeln!(
                    out,
                    "streamq_partition_{name}{{queue=\"{}\",partition=\"{i}\",priority=\"{}\"}} {}",
                    escape(queue),
                    p.priority,
                    read(p)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }
}
