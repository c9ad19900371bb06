//! `streamq stats`: one queue at a glance, as a table or stable JSON.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use streamq::{Health, HealthThresholds, QueueMetrics, QueueReport};

use crate::cli::QueueArgs;

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Print one JSON object (see README: "streamq stats --json").
    #[arg(long)]
    json: bool,
    /// Print again every this many seconds until interrupted.
    #[arg(long)]
    watch: Option<f64>,
    #[command(flatten)]
    thresholds: ThresholdArgs,
}

/// Health thresholds, shared by `stats` and `metrics`.
#[derive(Debug, Args)]
pub(crate) struct ThresholdArgs {
    /// Backlogged above this many waiting jobs.
    #[arg(long, default_value_t = 10_000)]
    max_waiting: u64,
    /// Backlogged when the oldest waiting job waited longer (seconds).
    #[arg(long, default_value_t = 60.0)]
    max_oldest_secs: f64,
    /// Errors above this many dead letters.
    #[arg(long, default_value_t = 0)]
    max_dead_letters: u64,
}

impl ThresholdArgs {
    pub(crate) fn thresholds(&self) -> HealthThresholds {
        HealthThresholds::default()
            .max_waiting(self.max_waiting)
            .max_oldest_waiting(Duration::from_secs_f64(self.max_oldest_secs.max(0.0)))
            .max_dead_letters(self.max_dead_letters)
    }
}

pub(crate) async fn run(args: StatsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let thresholds = args.thresholds.thresholds();
    loop {
        let shown = match (queue.inspect(&thresholds).await, queue.metrics().await) {
            (Ok(report), Ok(metrics)) => {
                if args.json {
                    println!("{}", to_json(&report, &metrics));
                } else {
                    print_table(&report, &metrics);
                }
                report.health
            }
            (Err(err), _) | (_, Err(err)) => {
                let health = Health::Unavailable(err.to_string());
                if args.json {
                    println!(
                        "{}",
                        json!({"queue": queue.name(), "health": "unavailable", "reasons": health.reasons()})
                    );
                } else {
                    println!("{}: unavailable: {err}", queue.name());
                }
                health
            }
        };
        let Some(every) = args.watch else {
            return Ok(if matches!(shown, Health::Healthy) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            });
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(Duration::from_secs_f64(every.max(0.1))) => {}
        }
        if !args.json {
            println!();
        }
    }
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stable JSON shape of `streamq stats --json` (documented in the README).
fn to_json(report: &QueueReport, metrics: &QueueMetrics) -> serde_json::Value {
    let priorities: Vec<_> = report
        .priorities
        .iter()
        .map(|p| {
            let c = metrics
                .by_priority
                .get(&p.priority)
                .copied()
                .unwrap_or_default();
            json!({
                "priority": p.priority.as_str(),
                "length": p.length,
                "waiting": p.waiting,
                "in_flight": p.in_flight,
                "oldest_waiting_ms": ms(p.oldest_waiting),
                "enqueued": c.enqueued,
                "completed": c.completed,
                "failed": c.failed,
                "retried": c.retried,
                "dead_lettered": c.dead_lettered,
                "reclaimed": c.reclaimed,
                "lost": c.lost,
            })
        })
        .collect();
    let consumers: Vec<_> = report
        .consumers
        .iter()
        .map(|c| json!({"name": c.name, "idle_ms": ms(Some(c.idle)), "pending": c.pending}))
        .collect();
    json!({
        "queue": report.queue,
        "health": report.health.as_str(),
        "reasons": report.health.reasons(),
        "paused": report.paused,
        "waiting": report.waiting(),
        "in_flight": report.in_flight(),
        "oldest_waiting_ms": ms(report.oldest_waiting()),
        "delayed": report.delayed,
        "next_due_ms": report.next_due_ms,
        "dead_letters": report.dead_letters,
        "priorities": priorities,
        "consumers": consumers,
    })
}

fn print_table(report: &QueueReport, metrics: &QueueMetrics) {
    let paused = if report.paused { "  PAUSED" } else { "" };
    println!(
        "queue {}: {}{paused}",
        report.queue,
        report.health.as_str().to_uppercase()
    );
    for reason in report.health.reasons() {
        println!("  ! {reason}");
    }
    println!(
        "{:<9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "priority",
        "waiting",
        "in flight",
        "oldest",
        "enqueued",
        "completed",
        "failed",
        "retried",
        "dead"
    );
    for p in &report.priorities {
        let c = metrics
            .by_priority
            .get(&p.priority)
            .copied()
            .unwrap_or_default();
        let oldest = p
            .oldest_waiting
            .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
        println!(
            "{:<9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
            p.priority.as_str(),
            p.waiting,
            p.in_flight,
            oldest,
            c.enqueued,
            c.completed,
            c.failed,
            c.retried,
            c.dead_lettered
        );
    }
    let next = report.next_due_ms.map_or_else(String::new, |due| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        format!(
            " (next due in {:.1}s)",
            due.saturating_sub(now) as f64 / 1000.0
        )
    });
    println!(
        "delayed {}{next}, dead letters {}",
        report.delayed, report.dead_letters
    );
    if report.consumers.is_empty() {
        println!("consumers: none");
    }
    for c in &report.consumers {
        println!(
            "consumer {:<40} pending {:>6}  idle {:.1}s",
            c.name,
            c.pending,
            c.idle.as_secs_f64()
        );
    }
    for (name, latency) in &metrics.latency {
        let p = |h: &streamq::LatencyHistogram, q: f64| {
            h.percentile(q).map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2}ms", d.as_secs_f64() * 1e3),
            )
        };
        println!(
            "job {:<16} wait p50 {} p99 {}   run p50 {} p99 {}   ({} done)",
            if name.is_empty() { "(unnamed)" } else { name },
            p(&latency.wait, 0.5),
            p(&latency.wait, 0.99),
            p(&latency.run, 0.5),
            p(&latency.run, 0.99),
            latency.run.count()
        );
    }
}
