//! `streamq stats`: one queue at a glance, as a table or stable JSON.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use streamq::{Health, HealthThresholds, QueueMetrics, QueueReport};

use crate::cli::QueueArgs;
use crate::render::{self, outln};

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
    /// A consumer idle longer than this (seconds) counts as gone; jobs
    /// waiting with no live consumer make the queue stalled.
    #[arg(long, default_value_t = 60.0)]
    consumer_timeout_secs: f64,
}

impl ThresholdArgs {
    pub(crate) fn thresholds(&self) -> HealthThresholds {
        HealthThresholds::default()
            .max_waiting(self.max_waiting)
            .max_oldest_waiting(Duration::from_secs_f64(self.max_oldest_secs.max(0.0)))
            .max_dead_letters(self.max_dead_letters)
            .consumer_timeout(Duration::from_secs_f64(self.consumer_timeout_secs.max(0.0)))
    }
}

pub(crate) async fn run(args: StatsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let name = args.queue.name().to_owned();
    let queue = match args.queue.open().await {
        Ok(queue) => queue,
        Err(err) if err.unavailable => {
            show_unavailable(&name, &err.to_string(), args.json)?;
            return Ok(ExitCode::from(2));
        }
        Err(err) => return Err(err.into()),
    };
    let config = args.queue.redis_quiet()?;
    let thresholds = args.thresholds.thresholds();
    loop {
        let healthy = match (queue.inspect(&thresholds).await, queue.metrics().await) {
            (Ok(report), _) if !report.exists => {
                let reason = format!(
                    "no queue {name:?} at {}: no keys match {}. Check the name and --prefix; \
                     a queue appears with its first job",
                    config.address(),
                    args.queue.keys_pattern()
                );
                if args.json {
                    outln!(
                        "{}",
                        json!({"queue": name, "health": "unknown", "reasons": [reason]})
                    );
                } else {
                    outln!("queue {name}: UNKNOWN");
                    outln!("  ! {reason}");
                }
                false
            }
            (Ok(report), Ok(metrics)) => {
                let partitions = match queue.partition_count() {
                    1 => None,
                    _ => Some(queue.stats().await?.partitions),
                };
                if args.json {
                    let mut json = to_json(&report, &metrics);
                    if let Some(parts) = &partitions {
                        json["partitions"] = partitions_json(parts);
                    }
                    outln!("{json}");
                } else {
                    print_table(&report, &metrics)?;
                    if let Some(parts) = &partitions {
                        print_partitions(parts)?;
                    }
                }
                matches!(report.health, Health::Healthy)
            }
            (Err(err), _) | (_, Err(err)) => {
                let err = crate::cli::explain(&err, &config);
                show_unavailable(&name, &err.to_string(), args.json)?;
                false
            }
        };
        let Some(every) = args.watch else {
            return Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            });
        };
        tokio::select! {
            _ = crate::cli::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(Duration::from_secs_f64(every.max(0.1))) => {}
        }
        if !args.json {
            outln!();
        }
    }
}

/// `unavailable`, as a line or as JSON, with why.
fn show_unavailable(
    name: &str,
    why: &str,
    as_json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    if as_json {
        outln!(
            "{}",
            json!({"queue": name, "health": "unavailable", "reasons": [why]})
        );
    } else {
        outln!("queue {name}: UNAVAILABLE");
        outln!("  ! {why}");
    }
    Ok(())
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
                "rolled_back": c.rolled_back,
            })
        })
        .collect();
    let consumers: Vec<_> = report
        .consumers
        .iter()
        .map(|c| json!({"name": c.name, "idle_ms": ms(Some(c.idle)), "pending": c.pending, "live": c.live}))
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

fn print_table(
    report: &QueueReport,
    metrics: &QueueMetrics,
) -> Result<(), Box<dyn std::error::Error>> {
    let paused = if report.paused { "  PAUSED" } else { "" };
    outln!(
        "queue {}: {}{paused}",
        report.queue,
        report.health.as_str().to_uppercase()
    );
    for reason in report.health.reasons() {
        outln!("  ! {reason}");
    }
    outln!(
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
            .map_or_else(|| "-".to_owned(), render::duration);
        outln!(
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
        format!(" (next due {})", render::relative_ms(due))
    });
    outln!(
        "delayed {}{next}, dead letters {}",
        report.delayed,
        report.dead_letters
    );
    let (rolled_back, lost) = metrics
        .by_priority
        .values()
        .fold((0, 0), |(r, l), c| (r + c.rolled_back, l + c.lost));
    if rolled_back + lost > 0 {
        outln!(
            "lost jobs: {rolled_back} acknowledged then rolled back by a failover or restart, \
             {lost} deleted while pending (see docs/guarantees.md)"
        );
    }
    if report.consumers.is_empty() {
        outln!("consumers: none");
    }
    for c in &report.consumers {
        let state = if c.live {
            String::new()
        } else if c.pending == 0 {
            "  (gone? `streamq recover` removes it)".to_owned()
        } else {
            "  (gone? its jobs are reclaimed after the lease)".to_owned()
        };
        outln!(
            "consumer {:<40} pending {:>6}  idle {}{state}",
            c.name,
            c.pending,
            render::duration(c.idle)
        );
    }
    for (name, latency) in &metrics.latency {
        let p = |h: &streamq::LatencyHistogram, q: f64| {
            h.percentile(q).map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
            )
        };
        outln!(
            "job {:<16} wait p50 {} p99 {}   run p50 {} p99 {}   ({} done)",
            if name.is_empty() { "(unnamed)" } else { name },
            p(&latency.wait, 0.5),
            p(&latency.wait, 0.99),
            p(&latency.run, 0.5),
            p(&latency.run, 0.99),
            latency.run.count()
        );
    }
    Ok(())
}

/// One line per partition of a partitioned queue.
fn print_partitions(parts: &[streamq::QueueStats]) -> std::io::Result<()> {
    outln!("partitions:");
    for (i, p) in parts.iter().enumerate() {
        outln!(
            "  {i:>4}  waiting {:>8}  in flight {:>6}  delayed {:>6}  dead letters {:>6}",
            p.waiting(),
            p.in_flight(),
            p.delayed,
            p.dead_letters
        );
    }
    Ok(())
}

/// The per-partition breakdown for `--json`, in partition order.
fn partitions_json(parts: &[streamq::QueueStats]) -> serde_json::Value {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "partition": i,
                "waiting": p.waiting(),
                "in_flight": p.in_flight(),
                "delayed": p.delayed,
                "dead_letters": p.dead_letters,
            })
        })
        .collect()
}
