//! Small operator commands: `metrics`, `recover`, `pause`, `resume`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use streamq::JobState;

use crate::cli::QueueArgs;
use crate::stats::ThresholdArgs;

#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    thresholds: ThresholdArgs,
}

#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The job's id, as enqueue printed it.
    id: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Recover jobs in flight without a heartbeat for this long (ms); use
    /// the workers' lease.
    #[arg(long, default_value_t = 30_000)]
    idle_ms: u64,
}

pub(crate) async fn metrics(args: MetricsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    print!("{}", queue.prometheus(&args.thresholds.thresholds()).await?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn recover(args: RecoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let done = queue
        .recover_stalled(Duration::from_millis(args.idle_ms))
        .await?;
    println!("recovered {}, lost {}", done.recovered, done.lost);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn pause(
    args: QueueArgs,
    on: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.open().await?;
    if on {
        queue.pause().await?;
        println!(
            "{} paused: workers stop fetching; enqueueing goes on",
            queue.name()
        );
    } else {
        queue.resume().await?;
        println!("{} resumed", queue.name());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn job(args: JobArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let Some(info) = queue.job(&args.id).await? else {
        eprintln!(
            "no job {} in queue {} (unknown, expired, or the queue does not track jobs)",
            args.id,
            queue.name()
        );
        return Ok(ExitCode::FAILURE);
    };
    let (state, detail) = match &info.state {
        JobState::Waiting { priority } => ("waiting", json!({ "priority": priority.as_str() })),
        JobState::Active {
            owner,
            idle,
            deliveries,
        } => (
            "active",
            json!({ "owner": owner, "idle_ms": idle.as_millis() as u64, "deliveries": deliveries }),
        ),
        JobState::Delayed { due_ms } => ("delayed", json!({ "due_ms": due_ms })),
        JobState::DeadLettered {
            error,
            dead_letter_id,
        } => (
            "dead_lettered",
            json!({ "error": error, "dead_letter_id": dead_letter_id }),
        ),
        JobState::Completed => ("completed", json!({})),
        JobState::Unknown => ("unknown", json!({})),
        _ => ("unknown", json!({})),
    };
    let value = json!({
        "id": info.id.as_str(),
        "name": info.name,
        "state": state,
        "detail": detail,
        "enqueued_ms": info.enqueued_ms,
        "started_ms": info.started_ms,
        "finished_ms": info.finished_ms,
        "attempts": info.attempts,
        "progress": info.progress,
        "error": info.error,
        "logs": info.logs,
    });
    if args.json {
        println!("{value}");
    } else {
        println!(
            "job {} ({}): {state} {detail}",
            info.id,
            if info.name.is_empty() {
                "unnamed"
            } else {
                &info.name
            }
        );
        println!(
            "  enqueued {:?}, started {:?}, finished {:?}, attempts {}, progress {:?}",
            info.enqueued_ms, info.started_ms, info.finished_ms, info.attempts, info.progress
        );
        if let Some(error) = &info.error {
            println!("  last error: {error}");
        }
        for line in &info.logs {
            println!("  | {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
