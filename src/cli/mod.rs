//! Command-line parsing and the commands' shared plumbing.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamq::{LocalRedis, RedisConfig};

/// A priority job queue on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "streamq", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue simulated alerts while a worker pool processes them, then
    /// print throughput, latency and Redis memory.
    Demo(demo::DemoArgs),
}

pub(crate) async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
    }
}

/// Where a command's Redis is: the one named, or a private one started for
/// the run (kept alive as long as this value is).
pub(crate) struct Target {
    pub(crate) config: RedisConfig,
    pub(crate) description: String,
    _local: Option<LocalRedis>,
}

impl Target {
    /// `url` when given (flag or `REDIS_URL`), else a private redis-server.
    pub(crate) fn url_or_private(url: Option<&str>) -> Result<Target, streamq::Error> {
        match url {
            Some(url) => Ok(Target {
                config: RedisConfig::from_url(url)?,
                description: redact(url),
                _local: None,
            }),
            None => {
                let local = LocalRedis::start()?;
                Ok(Target {
                    config: RedisConfig::from_url(&local.url())?,
                    description: format!("private redis-server at {}", local.url()),
                    _local: Some(local),
                })
            }
        }
    }
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
