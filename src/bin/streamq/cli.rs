//! Command-line parsing and the commands' shared plumbing.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streamq::{LocalRedis, Queue, RedisConfig};

use crate::{admin, bench, consume, demo, dlq, produce, serve, stats};

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
    /// Enqueue jobs and print one job id per line.
    Produce(produce::ProduceArgs),
    /// Run a worker with a simulated handler.
    Consume(consume::ConsumeArgs),
    /// Inspect and repair dead letters.
    Dlq(dlq::DlqArgs),
    /// Measure how much one Redis sustains: producers and workers at once.
    Bench(bench::BenchArgs),
    /// One queue at a glance: waiting, in flight, consumers, health.
    /// Exits 2 when the queue is not healthy.
    Stats(stats::StatsArgs),
    /// Print the queue's metrics in Prometheus text format.
    Metrics(admin::MetricsArgs),
    /// Look a job up by id (the queue must track jobs).
    Job(admin::JobArgs),
    /// Put jobs stalled longer than --idle-ms back in line now.
    Recover(admin::RecoverArgs),
    /// Stop workers fetching from the queue (enqueueing goes on).
    Pause(QueueArgs),
    /// Let workers fetch again.
    Resume(QueueArgs),
    /// Serve the HTTP API and the dashboard of one queue.
    Serve(serve::ServeArgs),
}

pub(crate) async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Stats(args) => stats::run(args).await,
        Command::Metrics(args) => admin::metrics(args).await,
        Command::Job(args) => admin::job(args).await,
        Command::Recover(args) => admin::recover(args).await,
        Command::Pause(args) => admin::pause(args, true).await,
        Command::Resume(args) => admin::pause(args, false).await,
        Command::Serve(args) => serve::run(args).await,
    }
}

/// Which queue an operational command works on.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// Redis URL (`redis://`, `rediss://`, `unix://`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The queue's name.
    #[arg(long, short)]
    queue: String,
    /// The key prefix.
    #[arg(long, default_value = "streamq")]
    prefix: String,
    /// Track jobs (for `streamq job`); producers and workers of a queue
    /// should agree.
    #[arg(long)]
    track_jobs: bool,
}

impl QueueArgs {
    pub(crate) async fn open(&self) -> Result<Queue, streamq::Error> {
        let config = RedisConfig::from_url(&self.redis)?;
        let mut builder = Queue::builder(&self.queue).prefix(&self.prefix);
        if self.track_jobs {
            builder = builder.track_jobs(streamq::JobTracking::default());
        }
        builder.connect(&config).await
    }
}

/// Where a command's Redis is: the one named, or a private one started for
/// the run (kept alive as long as this value is).
pub(crate) struct Target {
    pub(crate) config: RedisConfig,
    pub(crate) url: String,
    pub(crate) description: String,
    _local: Option<LocalRedis>,
}

impl Target {
    /// `url` when given (flag or `REDIS_URL`), else a private redis-server.
    pub(crate) fn url_or_private(url: Option<&str>) -> Result<Target, streamq::Error> {
        match url {
            Some(url) => Ok(Target {
                config: RedisConfig::from_url(url)?,
                url: url.to_owned(),
                description: redact(url),
                _local: None,
            }),
            None => {
                let local = LocalRedis::start()?;
                Ok(Target {
                    config: RedisConfig::from_url(&local.url())?,
                    url: local.url(),
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
