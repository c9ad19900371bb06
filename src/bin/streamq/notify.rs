//! `streamq notify`: post each dead letter of a queue to a Slack-compatible
//! webhook (the library's `streamq::notify::Webhook`), until SIGINT or
//! SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::notify::{DeadLetterWatcher, Delivery, NotifyError, WatchFrom, Webhook};
use tokio_util::sync::CancellationToken;

use crate::cli::{QueueArgs, shutdown_signal};
use crate::render::outln;

#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The webhook to post to (a Slack incoming webhook, or anything taking
    /// its JSON). Prefer the variable: a URL on the command line shows in
    /// process lists. Printed with its path hidden.
    #[arg(
        long,
        env = "STREAMQ_WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    webhook: String,
    /// The notifier's name: its position (the last dead letter the webhook
    /// accepted) is kept in Redis under it, so a restart resumes there. Run
    /// one process per name.
    #[arg(long, default_value = "default")]
    name: String,
    /// At most this many posts a minute; beyond, one summary stands for the
    /// dead letters waiting.
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_per_minute: u32,
    /// Tries per post (connection errors, timeouts, 408, 429 and 5xx are
    /// tried again, with backoff or as Retry-After says).
    #[arg(long, default_value_t = 8, value_name = "N")]
    max_attempts: u32,
    /// Pause after the first failed try, in milliseconds; it doubles up to
    /// a minute.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    retry_ms: u64,
    /// How long one try may take, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    timeout_secs: u64,
    /// Characters of payload shown per dead letter.
    #[arg(long, default_value_t = 300, value_name = "CHARS")]
    preview_chars: usize,
    /// The first time this name is used, post the dead letters already
    /// there too (by default only new ones). A saved position always wins.
    #[arg(long)]
    from_start: bool,
}

pub(crate) async fn run(args: NotifyArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let webhook = Webhook::new(&args.webhook)
        .map_err(|e| format!("--webhook (or STREAMQ_WEBHOOK_URL): {e}"))?
        .max_per_minute(args.max_per_minute)
        .max_attempts(args.max_attempts)
        .retry_backoff(
            Duration::from_millis(args.retry_ms),
            Duration::from_secs(60).max(Duration::from_millis(args.retry_ms)),
        )
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .preview_chars(args.preview_chars);
    let queue = args.queue.open().await?;
    let from = if args.from_start {
        WatchFrom::Start
    } else {
        WatchFrom::Now
    };
    let watcher = DeadLetterWatcher::open(&queue, &args.name, from)
        .await
        .map_err(|e| args.queue.explain(&e))?;
    let name = queue.name().to_owned();
    // One id per partition on a partitioned queue ("<id>@<partition>", ...).
    let position = watcher.position();
    let position = if position
        .split(',')
        .all(|p| p.split('@').next() == Some("0-0"))
    {
        "from the first dead letter".to_owned()
    } else if position.contains(',') {
        format!("after dead letters {position} (one per partition)")
    } else {
        format!("after dead letter {position}")
    };
    eprintln!(
        "streamq notify: posting dead letters of queue {name} to {} ({position}; notifier {:?}, \
         at most {} posts a minute). Ctrl-C stops.",
        webhook.redacted_url(),
        args.name,
        args.max_per_minute.max(1)
    );

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        stop.cancel();
    });
    let mut written: Result<(), std::io::Error> = Ok(());
    let result = webhook
        .run_observed(watcher, shutdown, |delivery| {
            if written.is_ok() {
                written = print(delivery);
            }
        })
        .await;
    written?;
    match result {
        Ok(report) => {
            eprintln!(
                "streamq notify: stopped; {} dead letters posted, {} more in {} summaries",
                report.posted, report.summarized, report.summaries
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("streamq notify: {}", explain(&e, &name, &args.name));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print(delivery: &Delivery) -> Result<(), std::io::Error> {
    match delivery {
        Delivery::Letter { id, job_id, tries } => {
            outln!(
                "posted dead letter {id} (job {job_id}){}",
                tries_note(*tries)
            );
        }
        Delivery::Summary {
            count,
            first,
            last,
            tries,
        } => outln!(
            "posted one summary for {count} dead letters, {first} to {last} (over --max-per-minute){}",
            tries_note(*tries)
        ),
        _ => {}
    }
    Ok(())
}

fn tries_note(tries: u32) -> String {
    if tries > 1 {
        format!(", after {tries} tries")
    } else {
        String::new()
    }
}

/// Why the notifier stopped, and what to do about it.
fn explain(err: &NotifyError, queue: &str, name: &str) -> String {
    let resume = format!(
        "Nothing after the last dead letter posted is marked as delivered: \
         `streamq notify -q {queue} --name {name}` starts again from there."
    );
    match err {
        NotifyError::Rejected { status, .. } if (300..400).contains(status) => format!(
            "{err}. streamq does not follow redirects: give the URL it redirects to. {resume}"
        ),
        NotifyError::Rejected { .. } => format!(
            "{err}. Check the webhook URL (is the hook still there, and allowed to post?). {resume}"
        ),
        NotifyError::GaveUp { .. } => format!(
            "{err}. Is the receiver up and reachable from here? Raise --max-attempts to keep trying \
             longer. {resume}"
        ),
        _ => format!("{err}. {resume}"),
    }
}
