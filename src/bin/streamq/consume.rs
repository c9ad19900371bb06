//! `streamq consume`: a worker with a simulated handler, for trying queues
//! and for fault tests. Each job the handler completes is appended to
//! `--record` as "<job id> <delivery count>" before it is acknowledged, so a
//! crash shows up as a repeated id.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::de::IgnoredAny;
use streamq::{Job, JobError, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::{JobArgs, QueueArgs, shutdown_signal};

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    job: JobArgs,
    /// Jobs running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Claimed jobs waiting for a slot.
    #[arg(long, default_value_t = 16)]
    prefetch: usize,
    /// Simulated work per job, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Fraction of attempts that fail (and are retried), 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Append "<job id> <deliveries>" per completed job to this file.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
    /// Exit once no job ran for this many seconds and the queue is empty.
    #[arg(long)]
    exit_when_idle: Option<f64>,
    /// Lease in milliseconds (reclaim stalled jobs after this long).
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// How often to look for stalled jobs, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    reclaim_ms: u64,
    /// Dead-letter a job after this many deliveries without finishing.
    #[arg(long, default_value_t = 5)]
    max_deliveries: u32,
    /// Renew leases of held jobs (turn off only to show what it prevents).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    heartbeat: bool,
    /// Delay before a retry, in milliseconds (fixed).
    #[arg(long)]
    retry_delay_ms: Option<u64>,
}

pub(crate) async fn run(args: ConsumeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(format!("--fail-rate {} is not between 0 and 1", args.fail_rate).into());
    }
    let queue = args.queue.open_with(|b| args.job.apply(b)).await?;
    let mut config = WorkerConfig::new()
        .concurrency(args.concurrency)
        .prefetch(args.prefetch)
        .lease(Duration::from_millis(args.lease_ms))
        .reclaim_interval(Duration::from_millis(args.reclaim_ms))
        .max_deliveries(args.max_deliveries)
        .heartbeat(args.heartbeat);
    if let Some(ms) = args.retry_delay_ms {
        config = config.backoff(streamq::RetryBackoff::Fixed(Duration::from_millis(ms)));
    }
    let worker = Worker::new(&queue, config)?;
    eprintln!(
        "streamq consume: consumer {} on queue {}; Ctrl-C or SIGTERM stops it after the jobs it holds",
        worker.consumer(),
        queue.name()
    );

    let record = match &args.record {
        Some(path) => Some(Arc::new(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))),
        None => None,
    };
    let handled = Arc::new(AtomicU64::new(0));
    let (work, fail_rate) = (Duration::from_millis(args.work_ms), args.fail_rate);
    let (counter, recorder) = (handled.clone(), record.clone());
    let handler = move |job: Job<IgnoredAny>| {
        let (counter, recorder) = (counter.clone(), recorder.clone());
        async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            if fastrand::f64() < fail_rate {
                return Err(JobError::retry("simulated failure"));
            }
            if let Some(file) = &recorder {
                append(file, &format!("{} {}\n", job.id(), job.deliveries()))
                    .map_err(|e| JobError::retry(format!("cannot record: {e}")))?;
            }
            Ok(())
        }
    };

    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(handler, stop.clone()));
    let mut last = (0u64, Instant::now());
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let now = handled.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        if let Some(idle) = args.exit_when_idle {
            // A failed check (Redis restarting, connection killed) is "not yet".
            if last.1.elapsed().as_secs_f64() >= idle
                && queue.stats().await.is_ok_and(|s| s.is_idle())
            {
                break;
            }
        }
        if running.is_finished() {
            break;
        }
    }
    stop.cancel();
    let report = running.await??;
    eprintln!(
        "{}",
        serde_json::json!({
            "completed": report.completed,
            "retried": report.retried,
            "dead_lettered": report.dead_lettered,
            "ownership_lost": report.ownership_lost,
            "reclaimed": report.reclaimed,
            "lost": report.lost,
            "panicked": report.panicked,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn append(file: &Mutex<File>, line: &str) -> std::io::Result<()> {
    let mut file = file
        .lock()
        .map_err(|_| std::io::Error::other("record file lock poisoned"))?;
    file.write_all(line.as_bytes())
}
