//! `streamq produce`: enqueue jobs from the shell, one id per line out.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::{EnqueueOptions, Priority, Queue};

use crate::cli::QueueArgs;

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    queue: QueueArgs,
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
    /// Enqueue one job per input line (the line is the payload).
    #[arg(long)]
    stdin: bool,
    /// Run the jobs this many milliseconds from now.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Jobs per round trip.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

pub(crate) async fn run(args: ProduceArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queue = args.queue.open().await?;
    let mut options = EnqueueOptions::new()
        .priority(args.priority)
        .name(&args.name);
    if let Some(ms) = args.delay_ms {
        options = options.delay(Duration::from_millis(ms));
    }
    let batch_size = args.batch.max(1);
    let mut out = std::io::stdout().lock();
    if args.stdin {
        let mut lines = Vec::with_capacity(batch_size);
        for line in std::io::stdin().lock().lines() {
            lines.push(line?);
            if lines.len() == batch_size {
                send(&queue, &lines, &options, &mut out).await?;
                lines.clear();
            }
        }
        send(&queue, &lines, &options, &mut out).await?;
    } else {
        let payload = serde_bytes::ByteBuf::from(vec![b'x'; args.payload_bytes]);
        let mut left = args.count;
        while left > 0 {
            let n = left.min(batch_size as u64);
            let payloads = vec![&payload; usize::try_from(n)?];
            send(&queue, &payloads, &options, &mut out).await?;
            left -= n;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn send<T: serde::Serialize>(
    queue: &Queue,
    payloads: &[T],
    options: &EnqueueOptions,
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut batch = queue.batch();
    for payload in payloads {
        batch.push(payload, options)?;
    }
    for id in batch.send().await? {
        writeln!(out, "{id}")?;
    }
    out.flush()?;
    Ok(())
}
