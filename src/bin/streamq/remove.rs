//! Removing jobs: `cancel` one by id, `clean` old dead letters and
//! completed jobs, `drain` a queue, `obliterate` it. The destructive ones ask
//! for `--yes`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::{Cancelled, Clean, RemovedFrom};

use crate::cli::QueueArgs;
use crate::render::{self, outln};

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The job's id, as `streamq produce` printed it.
    id: String,
    /// The queue tracks jobs (its producers used --track-jobs): find the
    /// job in one lookup instead of a scan, and record it as cancelled.
    #[arg(long)]
    track_jobs: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CleanArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Remove dead letters older than this: 90s, 30m, 12h, 7d (a bare
    /// number is seconds).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    dead_older_than: Option<Duration>,
    /// Forget retained completed jobs (metadata, log, result) that finished
    /// longer ago than this.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    completed_older_than: Option<Duration>,
    /// Confirm: without it nothing is removed.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Confirm: without it nothing is removed.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ObliterateArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Delete even while workers hold jobs or were active in the last
    /// minute: their jobs are lost.
    #[arg(long)]
    force: bool,
    /// Confirm: without it nothing is deleted.
    #[arg(long)]
    yes: bool,
}

/// The exit code for a destructive command run without `--yes`.
fn unconfirmed(what: &str) -> ExitCode {
    eprintln!("streamq: {what}. Nothing was changed: run again with --yes to confirm.");
    ExitCode::from(2)
}

pub(crate) async fn cancel(args: CancelArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let track = args.track_jobs;
    let queue = args
        .queue
        .open_with(|builder| {
            if track {
                builder.track_jobs(streamq::JobTracking::default())
            } else {
                builder
            }
        })
        .await?;
    let outcome = queue
        .cancel(&args.id)
        .await
        .map_err(|e| args.queue.explain(&e))?;
    let id = &args.id;
    match outcome {
        Cancelled::Removed {
            from: RemovedFrom::Waiting { priority },
        } => {
            outln!("cancelled job {id}: removed from the waiting {priority} jobs; it will not run");
        }
        Cancelled::Removed {
            from: RemovedFrom::Delayed { due_ms, .. },
        } => outln!(
            "cancelled job {id}: removed from the delayed jobs (it was due {}); it will not run",
            render::time_ms(due_ms)
        ),
        Cancelled::StopRequested { entry_id, .. } => outln!(
            "job {id} is running (entry {entry_id}): asked its worker to stop it. The worker sees \
             the request at its next lease heartbeat (a third of its lease); the job then ends in \
             the dead letters as cancelled, unless its handler finishes first."
        ),
        _ => {
            eprintln!(
                "streamq: no waiting, delayed or running job {id} in queue {}: it finished \
                 already (see `streamq dlq list` and `streamq job`), or the id is unknown",
                queue.name()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn clean(args: CleanArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.dead_older_than.is_none() && args.completed_older_than.is_none() {
        eprintln!(
            "streamq: say what to clean: --dead-older-than AGE, --completed-older-than AGE, or both"
        );
        return Ok(ExitCode::from(2));
    }
    let mut clean = Clean::new();
    let mut what = Vec::new();
    if let Some(age) = args.dead_older_than {
        clean = clean.dead_letters_older_than(age);
        what.push(format!("dead letters older than {}", render::duration(age)));
    }
    if let Some(age) = args.completed_older_than {
        clean = clean.completed_older_than(age);
        what.push(format!(
            "completed jobs finished over {} ago",
            render::duration(age)
        ));
    }
    if !args.yes {
        return Ok(unconfirmed(&format!(
            "clean removes {} from queue {}",
            what.join(" and "),
            args.queue.name()
        )));
    }
    let queue = args.queue.open().await?;
    let done = queue
        .clean(&clean)
        .await
        .map_err(|e| args.queue.explain(&e))?;
    outln!(
        "queue {}: removed {} dead letters, {} completed jobs and {} kept results",
        queue.name(),
        done.dead_letters,
        done.completed,
        done.results
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn drain(args: DrainArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.yes {
        return Ok(unconfirmed(&format!(
            "drain removes every waiting and delayed job of queue {} (running jobs are left alone)",
            args.queue.name()
        )));
    }
    let queue = args.queue.open().await?;
    let done = queue.drain().await.map_err(|e| args.queue.explain(&e))?;
    outln!(
        "queue {}: removed {} waiting and {} delayed jobs; running jobs were left alone",
        queue.name(),
        done.waiting,
        done.delayed
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn obliterate(
    args: ObliterateArgs,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.yes {
        return Ok(unconfirmed(&format!(
            "obliterate deletes every key of queue {} ({}): jobs, dead letters, counters",
            args.queue.name(),
            args.queue.keys_pattern()
        )));
    }
    let queue = args.queue.open().await?;
    match queue.obliterate(args.force).await {
        Ok(done) => {
            outln!("queue {}: deleted {} keys", queue.name(), done.keys);
            Ok(ExitCode::SUCCESS)
        }
        Err(streamq::Error::QueueInUse { consumers }) => {
            eprintln!(
                "streamq: queue {} is in use: {} consumers hold jobs or were active in the last {}: \
                 {}. Nothing was deleted. Stop its workers first, or add --force to delete it \
                 anyway (the jobs they hold are lost).",
                queue.name(),
                consumers.len(),
                render::duration(streamq::ACTIVE_WITHIN),
                consumers.join(", ")
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(args.queue.explain(&e).into()),
    }
}

/// An age: a number with a unit (`ms`, `s`, `m`, `h`, `d`); a bare number
/// is seconds.
fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age such as 90s, 30m, 12h or 7d"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_units() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("3w").is_err());
    }
}
