//! `streamq demo`: the main job. Producers enqueue simulated alerts of mixed
//! severity while a worker pool processes them; then a summary.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use indicatif::ProgressBar;

use crate::cli::{Target, explain};
use crate::render::{self, outln};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Redis to use; default: a private redis-server started for the run
    /// (REDIS_URL is not used: the demo writes 100,000 jobs).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Alerts to enqueue.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Size of each alert's payload in bytes.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Workers (consumers in the group), each with its own connection.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs running at once per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Producer tasks enqueueing in parallel.
    #[arg(long, default_value_t = 2)]
    producers: u64,
    /// Alerts per enqueue round trip.
    #[arg(long, default_value_t = 500)]
    batch: u64,
}

/// A simulated alert, as an ingestion service would enqueue it.
#[derive(Debug, Serialize, Deserialize)]
struct Alert {
    seq: u64,
    severity: String,
    source: String,
    message: String,
    /// When the producer created it, in Unix microseconds.
    created_us: u64,
}

const SEVERITIES: [&str; 5] = ["critical", "error", "warning", "info", "info"];

/// Shared between the handler tasks and the reporter.
struct Tally {
    seen: Vec<AtomicU8>,
    processed: AtomicU64,
    /// When the last job finished, Unix microseconds.
    last_done_us: AtomicU64,
    per_priority: [AtomicU64; 4],
    latency_us: Mutex<Histogram<u64>>,
}

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let target = Target::url_or_private(args.redis.as_deref(), "demo")?;
    let queue = Queue::builder("streamq-demo")
        .connect(&target.config)
        .await
        .map_err(|e| explain(&e, &target.config))?;
    let server = queue.server().clone();
    eprintln!(
        "streamq demo: {} alerts of {}, {} workers x {} concurrency, {} producers; {} {} on {}",
        args.jobs,
        render::bytes(args.payload_bytes as u64),
        args.workers,
        args.concurrency,
        args.producers,
        server.server,
        server.version,
        target.description
    );
    let baseline_memory = used_memory(&queue).await?.0;

    let tally = Arc::new(Tally {
        seen: (0..args.jobs).map(|_| AtomicU8::new(0)).collect(),
        processed: AtomicU64::new(0),
        last_done_us: AtomicU64::new(0),
        per_priority: Default::default(),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
    });
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        let worker = Worker::new(
            &queue,
            WorkerConfig::new()
                .concurrency(args.concurrency)
                .prefetch(args.concurrency),
        )?;
        let tally = tally.clone();
        let handler = move |job: Job<Alert>| {
            let tally = tally.clone();
            async move { record(&tally, &job) }
        };
        workers.push(tokio::spawn(worker.run(handler, stop.clone())));
    }

    let started = Instant::now();
    let started_us = now_us();
    let mut producers = Vec::new();
    let padding = "x".repeat(args.payload_bytes.saturating_sub(96));
    for p in 0..args.producers {
        let (queue, padding) = (queue.clone(), padding.clone());
        let (jobs, step, batch_size) = (args.jobs, args.producers, args.batch);
        producers.push(tokio::spawn(async move {
            let mut seq = p;
            while seq < jobs {
                let mut batch = queue.batch();
                while seq < jobs && (batch.len() as u64) < batch_size {
                    let severity = SEVERITIES[(seq % SEVERITIES.len() as u64) as usize];
                    let alert = Alert {
                        seq,
                        severity: severity.to_owned(),
                        source: format!("host-{}", seq % 97),
                        message: padding.clone(),
                        created_us: now_us(),
                    };
                    let options = EnqueueOptions::new()
                        .priority(Priority::from_severity(severity))
                        .name("alert");
                    batch.push(&alert, &options)?;
                    seq += step;
                }
                batch.send().await?;
            }
            Ok::<(), streamq::Error>(())
        }));
    }

    let mut peak_memory = 0;
    // Drawn only on a terminal; nothing at all when stderr is a file or pipe.
    let progress = ProgressBar::new(args.jobs).with_style(crate::render::progress_style(
        "  {bar:30} {pos:>9}/{len} jobs  {rate}  eta {eta}  redis {msg}",
    ));
    let interrupted = crate::cli::shutdown_signal();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => {
                progress.abandon();
                eprintln!("streamq demo: interrupted; stopping the workers");
                stop.cancel();
                return Ok(ExitCode::FAILURE);
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let processed = tally.processed.load(Ordering::Relaxed);
        let (memory, peak) = used_memory(&queue).await?;
        peak_memory = peak_memory.max(peak).max(memory);
        progress.set_position(processed);
        progress.set_message(render::bytes(memory));
        if processed >= args.jobs || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        if producers.iter().all(|p| p.is_finished()) {
            for p in producers.drain(..) {
                p.await??;
            }
        }
    }
    let elapsed = match tally.last_done_us.load(Ordering::Relaxed) {
        0 => started.elapsed(),
        done => Duration::from_micros(done.saturating_sub(started_us)),
    };
    progress.finish_and_clear();
    for p in producers {
        p.await??;
    }
    stop.cancel();
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.await??);
    }
    let after_drain = used_memory(&queue).await?.0;

    let processed = tally.processed.load(Ordering::Relaxed);
    let once = tally
        .seen
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == 1)
        .count() as u64;
    let secs = elapsed.as_secs_f64();
    let jobs_per_s = processed as f64 / secs;
    let mb_per_s = jobs_per_s * args.payload_bytes as f64 / 1e6;
    let latency = tally
        .latency_us
        .lock()
        .map_err(|_| "latency histogram poisoned")?;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    outln!("streamq demo summary");
    outln!("  server            {} {}", server.server, server.version);
    outln!(
        "  jobs              {processed} processed of {} enqueued, {once} exactly once",
        args.jobs
    );
    outln!("  elapsed           {secs:.2} s (enqueue and processing overlapped)");
    outln!("  throughput        {jobs_per_s:.0} jobs/s, {mb_per_s:.1} MB/s of payload");
    outln!(
        "  equivalent to     {:.0} GB/day (the floor is 600 GB/day)",
        mb_per_s * 86_400.0 / 1000.0
    );
    outln!(
        "  enqueue to start  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (producers run flat out, so this includes queueing)",
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0
    );
    let by_priority: Vec<String> = Priority::ALL
        .iter()
        .zip(&tally.per_priority)
        .map(|(p, n)| format!("{p} {}", n.load(Ordering::Relaxed)))
        .collect();
    outln!("  by priority       {}", by_priority.join(", "));
    outln!(
        "  redis memory      {:.1} MB before, {:.1} MB peak, {:.1} MB after drain",
        baseline_memory as f64 / 1e6,
        peak_memory as f64 / 1e6,
        after_drain as f64 / 1e6
    );
    let completed: u64 = reports.iter().map(|r| r.completed).sum();
    outln!(
        "  workers           {} completed, {} dead-lettered",
        completed,
        reports.iter().map(|r| r.dead_lettered).sum::<u64>()
    );
    if processed == args.jobs && once == args.jobs && completed == args.jobs {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("streamq demo: FAILED: not every job was processed exactly once");
        Ok(ExitCode::FAILURE)
    }
}

fn record(tally: &Tally, job: &Job<Alert>) -> Result<(), JobError> {
    let alert = job.payload();
    let slot = tally
        .seen
        .get(usize::try_from(alert.seq).unwrap_or(usize::MAX))
        .ok_or_else(|| JobError::permanent(format!("alert {} is not from this run", alert.seq)))?;
    slot.fetch_add(1, Ordering::Relaxed);
    tally.per_priority[job.priority() as usize].fetch_add(1, Ordering::Relaxed);
    let waited = now_us().saturating_sub(alert.created_us).max(1);
    if let Ok(mut histogram) = tally.latency_us.lock() {
        histogram.saturating_record(waited);
    }
    tally.processed.fetch_add(1, Ordering::Relaxed);
    tally.last_done_us.fetch_max(now_us(), Ordering::Relaxed);
    Ok(())
}

/// `used_memory` and `used_memory_peak` from `INFO memory`.
async fn used_memory(queue: &Queue) -> Result<(u64, u64), streamq::Error> {
    let info = queue.server_info("memory").await?;
    let field = |name: &str| info.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((field("used_memory"), field("used_memory_peak")))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
