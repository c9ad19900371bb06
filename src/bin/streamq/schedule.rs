//! `streamq schedule list|add|remove|run`: repeatable and cron jobs.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use streamq::{CatchUp, Priority, Schedule, Scheduler, Timing};
use tokio_util::sync::CancellationToken;

use crate::cli::QueueArgs;

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// List the queue's schedules with their next tick.
    List {
        #[command(flatten)]
        queue: QueueArgs,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Add a schedule, or replace the one with the same id.
    Add(AddArgs),
    /// Remove a schedule.
    Remove {
        #[command(flatten)]
        queue: QueueArgs,
        /// The schedule's id.
        id: String,
    },
    /// Run a scheduler until Ctrl-C (or one pass with --once): enqueues one
    /// job per tick, however many schedulers run.
    Run {
        #[command(flatten)]
        queue: QueueArgs,
        /// Enqueue what is due now and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The schedule's id, unique within the queue.
    id: String,
    /// Tick every this many milliseconds (aligned to the Unix epoch).
    #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
    every_ms: Option<u64>,
    /// Tick by this cron expression (5 fields, or 6 with seconds first).
    #[arg(long)]
    cron: Option<String>,
    /// The cron expression's IANA time zone.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// Each job's payload, as JSON.
    #[arg(long, default_value = "null")]
    payload: String,
    /// Each job's name.
    #[arg(long, default_value = "")]
    name: String,
    /// Each job's priority: critical, high, medium or low.
    #[arg(long, default_value = "medium")]
    priority: Priority,
    /// What to do about ticks missed while no scheduler ran.
    #[arg(long, value_enum, default_value_t = CatchUpArg::Skip)]
    catch_up: CatchUpArg,
    /// Each job's rate group.
    #[arg(long)]
    rate_group: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CatchUpArg {
    /// Missed ticks make no job.
    Skip,
    /// Missed ticks make one job in all.
    RunOnce,
}

pub(crate) async fn run(args: ScheduleArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match args.command {
        ScheduleCommand::List { queue, json } => {
            let queue = queue.open().await?;
            for info in queue.schedules().await? {
                let schedule = &info.schedule;
                let timing = match schedule.timing() {
                    Timing::Every(interval) => format!("every {} ms", interval.as_millis()),
                    Timing::Cron {
                        expression,
                        time_zone,
                    } => format!("cron {expression:?} {time_zone}"),
                    other => format!("{other:?}"),
                };
                let next = info
                    .next_due_ms
                    .map_or_else(|| "-".to_owned(), |ms| ms.to_string());
                if json {
                    let line = serde_json::json!({
                        "id": schedule.id(),
                        "timing": timing,
                        "next_due_ms": info.next_due_ms,
                    });
                    println!("{line}");
                } else {
                    println!("{}\t{timing}\tnext {next}", schedule.id());
                }
            }
        }
        ScheduleCommand::Add(add) => {
            let queue = add.queue.open().await?;
            let payload: serde_json::Value = serde_json::from_str(&add.payload)
                .map_err(|e| format!("--payload is not JSON: {e}"))?;
            let mut schedule = match (add.every_ms, add.cron) {
                (Some(ms), _) => Schedule::every(&add.id, Duration::from_millis(ms)),
                (None, Some(cron)) => Schedule::cron(&add.id, cron, &add.tz),
                (None, None) => return Err("give --every-ms or --cron".into()),
            };
            schedule =
                schedule
                    .name(add.name)
                    .priority(add.priority)
                    .catch_up(match add.catch_up {
                        CatchUpArg::Skip => CatchUp::Skip,
                        CatchUpArg::RunOnce => CatchUp::RunOnce,
                    });
            if let Some(group) = add.rate_group {
                schedule = schedule.rate_group(group);
            }
            let upserted = queue.upsert_schedule(&schedule, &payload).await?;
            println!(
                "{} {:?}, next tick at {} (Unix ms)",
                add.id, upserted.change, upserted.next_due_ms
            );
        }
        ScheduleCommand::Remove { queue, id } => {
            let queue = queue.open().await?;
            if !queue.remove_schedule(&id).await? {
                eprintln!("no schedule {id} in queue {}", queue.name());
                return Ok(ExitCode::from(1));
            }
            println!("removed {id}");
        }
        ScheduleCommand::Run { queue, once } => {
            let queue = queue.open().await?;
            let scheduler = Scheduler::new(&queue);
            let report = if once {
                scheduler.run_once().await?
            } else {
                let shutdown = CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                scheduler.run(shutdown).await?
            };
            println!(
                "enqueued {}, skipped {}, taken by others {}",
                report.enqueued, report.skipped, report.stale
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
