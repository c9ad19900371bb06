//! `streamq produce`: enqueue jobs from the shell, one id per line out.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::{EnqueueOptions, Priority, Queue};
use tokio::sync::mpsc;

use crate::cli::{JobArgs, QueueArgs};

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    job: JobArgs,
    /// Jobs to enqueue (ignored with --stdin).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Size of each generated payload in bytes (ignored with --stdin).
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// critical, high, medium or low.
    #[arg(long, default_value = "medium")]
    priority: Priority,
    /// The jobs' name.
    #[arg(long, default_value = "")]
    name: String,
    /// Enqueue one job per input line (the line is the payload). Lines are
    /// sent when --batch have arrived or --flush-ms after the first one,
    /// whichever comes first, so slow input goes out promptly.
    #[arg(long)]
    stdin: bool,
    /// Run the jobs this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Jobs per round trip.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// With --stdin: send what has arrived at most this long after its
    /// first line (milliseconds).
    #[arg(long, default_value_t = 100)]
    flush_ms: u64,
}

pub(crate) async fn run(args: ProduceArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open_with(|b| args.job.apply(b)).await?;
    let mut options = EnqueueOptions::new()
        .priority(args.priority)
        .name(&args.name);
    if let Some(ms) = args.delay_ms {
        options = options.delay(Duration::from_millis(ms));
    }
    let batch_size = args.batch.max(1);
    let explain = |e: Box<dyn std::error::Error>| -> Box<dyn std::error::Error> {
        match e.downcast::<streamq::Error>() {
            Ok(e) => args.queue.explain(&e).into(),
            Err(e) => e,
        }
    };
    if args.stdin {
        let flush_after = Duration::from_millis(args.flush_ms.max(1));
        let mut lines = read_lines();
        let mut pending = Vec::with_capacity(batch_size);
        loop {
            let line = if pending.is_empty() {
                lines.recv().await
            } else {
                match tokio::time::timeout(flush_after, lines.recv()).await {
                    Ok(line) => line,
                    Err(_) => {
                        // The deadline passed: send what has arrived.
                        send(&queue, &pending, &options).await.map_err(explain)?;
                        pending.clear();
                        continue;
                    }
                }
            };
            match line {
                Some(line) => {
                    pending.push(line?);
                    if pending.len() >= batch_size {
                        send(&queue, &pending, &options).await.map_err(explain)?;
                        pending.clear();
                    }
                }
                None => break,
            }
        }
        send(&queue, &pending, &options).await.map_err(explain)?;
    } else {
        let payload = serde_bytes::ByteBuf::from(vec![b'x'; args.payload_bytes]);
        let mut left = args.count;
        while left > 0 {
            let n = left.min(batch_size as u64);
            let payloads = vec![&payload; usize::try_from(n)?];
            send(&queue, &payloads, &options).await.map_err(explain)?;
            left -= n;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard input's lines, read on a thread of their own so that waiting
/// for input never holds back sending what has arrived.
fn read_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Enqueues `payloads` in one batch and prints their ids. A closed stdout
/// comes back as the I/O error, which ends the command quietly.
async fn send<T: serde::Serialize>(
    queue: &Queue,
    payloads: &[T],
    options: &EnqueueOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    if payloads.is_empty() {
        return Ok(());
    }
    let mut batch = queue.batch();
    for payload in payloads {
        batch.push(payload, options)?;
    }
    let ids = batch.send().await?;
    let mut out = std::io::stdout().lock();
    for id in ids {
        writeln!(out, "{id}")?;
    }
    out.flush()?;
    Ok(())
}
