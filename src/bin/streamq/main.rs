//! The `streamq` command-line tool: the demo, and commands to drive and
//! inspect queues from a shell.

mod admin;
mod bench;
mod cli;
mod consume;
mod demo;
mod dlq;
mod notify;
mod produce;
mod raw_baseline;
mod remove;
mod render;
mod schedule;
mod serve;
mod stats;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// The exit code when standard output was closed under us (128 + SIGPIPE,
/// as a shell reports a process killed by a closed pipe).
const CLOSED_PIPE: u8 = 141;

fn main() -> ExitCode {
    // Colour only for a person at a terminal, and never with NO_COLOR set.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("streamq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) if is_closed_pipe(e.as_ref()) => ExitCode::from(CLOSED_PIPE),
        Err(e) => {
            eprintln!("streamq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the error is a write to a closed pipe (`streamq ... | head -1`).
fn is_closed_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = err.source();
    }
    false
}
