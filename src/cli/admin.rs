//! Small operator commands: `metrics`, `recover`, `pause`, `resume`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::QueueArgs;
use super::stats::ThresholdArgs;

#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    thresholds: ThresholdArgs,
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
