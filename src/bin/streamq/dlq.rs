//! `streamq dlq`: list, show, requeue and purge dead letters.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use streamq::DeadLetter;

use crate::cli::QueueArgs;
use crate::render::{self, outln};

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The largest payload shown, in bytes (default 1 MiB, as producers).
    #[arg(long, value_name = "BYTES")]
    max_payload_bytes: Option<usize>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List dead letters, oldest first: letter id, job id, priority,
    /// attempts, when it failed, error.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Start after this dead-letter id (from a previous page).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        /// One JSON object per line (times in Unix ms).
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full, payload included, as JSON.
    Show {
        /// The dead-letter id, as `dlq list` prints it (1732212345678-0).
        id: String,
    },
    /// Move dead letters back to their priority, attempts reset.
    Requeue {
        /// The dead-letter id, as `dlq list` prints it.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

pub(crate) async fn run(args: DlqArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let limit = args.max_payload_bytes;
    let queue = args
        .queue
        .open_with(|builder| match limit {
            Some(bytes) => builder.max_payload_bytes(bytes),
            None => builder,
        })
        .await?;
    let name = queue.name().to_owned();
    let explain = |e: streamq::Error| args.queue.explain(&e);
    match args.action {
        Action::List { count, after, json } => {
            let page = queue
                .dead_letters(after.as_deref(), count)
                .await
                .map_err(explain)?;
            if page.letters.is_empty() && !json {
                eprintln!("queue {name}: no dead letters");
            }
            for letter in &page.letters {
                if json {
                    outln!("{}", letter.to_json(true));
                } else {
                    outln!(
                        "{}  {:<36}  {:<8}  attempts {}  failed {}  {}",
                        letter.id,
                        job_id(letter),
                        letter.priority,
                        letter.attempts,
                        render::relative_ms(letter.failed_ms),
                        letter.error
                    );
                }
            }
            if let Some(next) = page.next {
                eprintln!("more: streamq dlq -q {name} list --after {next}");
            }
        }
        Action::Show { id } => match queue.dead_letter(&id).await.map_err(explain)? {
            Some(letter) => outln!("{}", serde_json::to_string_pretty(&letter.to_json(true))?),
            None => {
                eprintln!(
                    "streamq: no dead letter {id} in queue {name} (requeued or purged already?); \
                     `streamq dlq -q {name} list` shows the ones there are"
                );
                return Ok(ExitCode::FAILURE);
            }
        },
        Action::Requeue { id, all } => {
            if all {
                let moved = queue.requeue_all_dead_letters().await.map_err(explain)?;
                outln!("queue {name}: {moved} dead letters requeued, attempts reset");
            } else {
                let id = id.ok_or("give a dead-letter id or --all")?;
                if !queue.requeue_dead_letter(&id).await.map_err(explain)? {
                    eprintln!(
                        "streamq: no dead letter {id} in queue {name} (requeued or purged already?); \
                         `streamq dlq -q {name} list` shows the ones there are"
                    );
                    return Ok(ExitCode::FAILURE);
                }
                outln!("queue {name}: dead letter {id} requeued, attempts reset");
            }
        }
        Action::Purge => {
            let purged = queue.purge_dead_letters().await.map_err(explain)?;
            outln!("queue {name}: {purged} dead letters deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The job id, or why there is none (an envelope that never decoded).
fn job_id(letter: &DeadLetter) -> &str {
    if letter.job_id.as_str().is_empty() {
        "(no job id: unreadable job)"
    } else {
        letter.job_id.as_str()
    }
}
