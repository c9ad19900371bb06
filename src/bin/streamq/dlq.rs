//! `streamq dlq`: list, show, requeue and purge dead letters.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use streamq::DeadLetter;

use crate::cli::QueueArgs;

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List dead letters, oldest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Start after this dead-letter id (from a previous page).
        #[arg(long)]
        after: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full.
    Show {
        /// The dead-letter id.
        id: String,
    },
    /// Move dead letters back to their priority, attempts reset.
    Requeue {
        /// The dead-letter id.
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
    let queue = args.queue.open().await?;
    match args.action {
        Action::List { count, after, json } => {
            let page = queue.dead_letters(after.as_deref(), count).await?;
            for letter in &page.letters {
                if json {
                    println!("{}", to_json(letter));
                } else {
                    println!(
                        "{}  {}  {:<8}  attempts {}  {}",
                        letter.id, letter.job_id, letter.priority, letter.attempts, letter.error
                    );
                }
            }
            if let Some(next) = page.next {
                eprintln!("more: --after {next}");
            }
        }
        Action::Show { id } => match queue.dead_letter(&id).await? {
            Some(letter) => println!("{}", serde_json::to_string_pretty(&to_json(&letter))?),
            None => {
                eprintln!("no dead letter {id}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Action::Requeue { id, all } => {
            let moved = if all {
                queue.requeue_all_dead_letters().await?
            } else {
                let id = id.ok_or("give a dead-letter id or --all")?;
                u64::from(queue.requeue_dead_letter(&id).await?)
            };
            println!("requeued {moved}");
        }
        Action::Purge => println!("purged {}", queue.purge_dead_letters().await?),
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(letter: &DeadLetter) -> serde_json::Value {
    let payload = letter
        .payload::<serde_json::Value>()
        .unwrap_or_else(|e| serde_json::Value::String(format!("<undecodable: {e}>")));
    serde_json::json!({
        "id": letter.id,
        "job_id": letter.job_id.as_str(),
        "name": letter.name,
        "priority": letter.priority.as_str(),
        "attempts": letter.attempts,
        "error": letter.error,
        "enqueued_ms": letter.enqueued_ms,
        "failed_ms": letter.failed_ms,
        "payload": payload,
    })
}
