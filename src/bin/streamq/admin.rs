//! Small operator commands: `metrics`, `job`, `recover`, `pause`, `resume`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::JobState;

use crate::cli::QueueArgs;
use crate::render::{self, outln};
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
    /// The job's id, as `streamq produce` printed it.
    id: String,
    /// Print one JSON object (times in Unix ms).
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
    /// Remove consumers idle this long (seconds) that hold no job: workers
    /// that died. Running workers are never idle this long. 0 keeps all.
    #[arg(long, default_value_t = 300.0)]
    prune_after_secs: f64,
}

pub(crate) async fn metrics(args: MetricsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let text = queue
        .prometheus(&args.thresholds.thresholds())
        .await
        .map_err(|e| args.queue.explain(&e))?;
    outln!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn recover(args: RecoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let done = queue
        .recover_stalled(Duration::from_millis(args.idle_ms))
        .await
        .map_err(|e| args.queue.explain(&e))?;
    outln!(
        "queue {}: {} stalled jobs put back in line, {} lost (deleted from the stream by someone else)",
        queue.name(),
        done.recovered,
        done.lost
    );
    if args.prune_after_secs > 0.0 {
        let after = Duration::from_secs_f64(args.prune_after_secs);
        let removed = queue.prune_consumers(after).await?;
        if removed.is_empty() {
            outln!(
                "no consumer idle over {} without jobs to remove",
                render::duration(after)
            );
        } else {
            outln!(
                "removed {} consumers idle over {} that held no job: {}",
                removed.len(),
                render::duration(after),
                removed.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn pause(
    args: QueueArgs,
    on: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.open().await?;
    if on {
        queue.pause().await?;
        outln!(
            "queue {} paused: workers stop fetching; enqueueing goes on. `streamq resume -q {}` undoes it.",
            queue.name(),
            queue.name()
        );
    } else {
        queue.resume().await?;
        outln!("queue {} resumed: workers fetch again", queue.name());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn job(args: JobArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let Some(info) = queue
        .job(&args.id)
        .await
        .map_err(|e| args.queue.explain(&e))?
    else {
        eprintln!(
            "streamq: no job {} in queue {}: unknown id, its record expired, or its producer did not \
             use --track-jobs (QueueBuilder::track_jobs)",
            args.id,
            queue.name()
        );
        return Ok(ExitCode::FAILURE);
    };
    if args.json {
        outln!("{}", info.to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let name = if info.name.is_empty() {
        "unnamed".to_owned()
    } else {
        info.name.clone()
    };
    let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), render::time_ms);
    outln!("job {} ({name}) in queue {}", info.id, queue.name());
    outln!("  state      {}", render::job_state(&info.state));
    outln!("  enqueued   {}", time(info.enqueued_ms));
    outln!("  started    {}", time(info.started_ms));
    outln!("  finished   {}", time(info.finished_ms));
    outln!("  attempts   {}", info.attempts);
    if let Some(progress) = info.progress {
        outln!("  progress   {progress}%");
    }
    if let Some(error) = &info.error {
        outln!("  last error {error}");
    }
    if let JobState::DeadLettered {
        dead_letter_id: Some(id),
        ..
    } = &info.state
    {
        outln!(
            "  next       `streamq dlq -q {} show {id}`, then `requeue {id}` to run it again",
            queue.name()
        );
    }
    if !info.logs.is_empty() {
        outln!("  log");
        for line in &info.logs {
            outln!("    | {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
