//! Command-line parsing and the commands' shared plumbing: which Redis, how
//! its errors read, how a command is stopped.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streamq::{LocalRedis, Queue, QueueBuilder, RedisConfig};

use crate::{admin, bench, consume, demo, dlq, notify, produce, remove, schedule, serve, stats};

const EXIT_CODES: &str = "\
Redis: --redis URL, else STREAMQ_REDIS_URL, else REDIS_URL, else REDIS_HOST, REDIS_PORT,
REDIS_PASSWORD, REDIS_DB and REDIS_USE_SSL, else redis://127.0.0.1:6379. streamq says on
stderr which one it uses when it did not come from --redis. `demo` and `bench` start a
private redis-server unless given --redis.

Exit codes:
  0    done
  1    failed: stderr says what happened and what to do
  2    bad command line; or, for `stats`, the queue is not healthy (backlogged, errors,
       stalled, unknown or unavailable)
  141  standard output was closed (piped into `head`, say): stopped quietly

Colours only on terminals, never with NO_COLOR set. Log detail: RUST_LOG=streamq=debug.";

/// A priority job queue on Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "streamq", version, about, after_help = EXIT_CODES)]
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
    /// Run a worker with a simulated handler until Ctrl-C or SIGTERM.
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
    /// Look a job up by id (its producers must have used --track-jobs).
    Job(admin::JobArgs),
    /// Put jobs stalled longer than --idle-ms back in line now, and remove
    /// consumers that died holding nothing.
    Recover(admin::RecoverArgs),
    /// Stop workers fetching from the queue (enqueueing goes on).
    Pause(QueueArgs),
    /// Let workers fetch again.
    Resume(QueueArgs),
    /// Repeatable and cron jobs: list, add, remove, run a scheduler.
    Schedule(schedule::ScheduleArgs),
    /// Cancel a job by id: remove it if it waits, or ask its worker to stop it.
    Cancel(remove::CancelArgs),
    /// Remove dead letters and completed jobs older than an age (needs --yes).
    Clean(remove::CleanArgs),
    /// Remove every waiting and delayed job; running jobs stay (needs --yes).
    Drain(remove::DrainArgs),
    /// Delete every key of a queue, refused while workers are active unless
    /// --force (needs --yes).
    Obliterate(remove::ObliterateArgs),
    /// Serve the HTTP API and the dashboard of one queue.
    Serve(serve::ServeArgs),
    /// Post each new dead letter to a Slack-compatible webhook, with
    /// retries and a rate limit, until Ctrl-C or SIGTERM.
    Notify(notify::NotifyArgs),
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
        Command::Schedule(args) => schedule::run(args).await,
        Command::Cancel(args) => remove::cancel(args).await,
        Command::Clean(args) => remove::clean(args).await,
        Command::Drain(args) => remove::drain(args).await,
        Command::Obliterate(args) => remove::obliterate(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Notify(args) => notify::run(args).await,
    }
}

/// Which queue an operational command works on.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// Redis URL: redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://... (TLS)
    /// or unix:///PATH. Default: from the environment (see below).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// The queue's name.
    #[arg(long, short)]
    queue: String,
    /// The key prefix.
    #[arg(long, default_value = "streamq")]
    prefix: String,
}

/// Options only the commands that encode or decode jobs take.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// Track jobs, so that `streamq job` can find them; producers and
    /// workers of a queue should agree.
    #[arg(long)]
    pub(crate) track_jobs: bool,
    /// The largest encoded job accepted, in bytes (default 1 MiB); workers
    /// need at least the producers' limit.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_payload_bytes: Option<usize>,
}

impl JobArgs {
    pub(crate) fn apply(&self, mut builder: QueueBuilder) -> QueueBuilder {
        if self.track_jobs {
            builder = builder.track_jobs(streamq::JobTracking::default());
        }
        if let Some(bytes) = self.max_payload_bytes {
            builder = builder.max_payload_bytes(bytes);
        }
        builder
    }
}

impl QueueArgs {
    /// The queue's name, as given.
    pub(crate) fn name(&self) -> &str {
        &self.queue
    }

    /// The Redis to use, saying where it came from when not from a flag.
    pub(crate) fn redis(&self) -> Result<RedisConfig, CliError> {
        let config = RedisConfig::resolve(self.redis.as_deref())
            .map_err(|e| CliError::new(e.to_string()))?;
        announce(&config);
        Ok(config)
    }

    /// The Redis to use, without saying so again.
    pub(crate) fn redis_quiet(&self) -> Result<RedisConfig, CliError> {
        RedisConfig::resolve(self.redis.as_deref()).map_err(|e| CliError::new(e.to_string()))
    }

    /// A library error from working on this queue, in words.
    pub(crate) fn explain(&self, err: &streamq::Error) -> CliError {
        match self.redis_quiet() {
            Ok(config) => explain(err, &config),
            Err(e) => e,
        }
    }

    pub(crate) async fn open(&self) -> Result<Queue, CliError> {
        self.open_with(|builder| builder).await
    }

    /// Connects, with the builder adjusted by `adjust`; errors explained.
    pub(crate) async fn open_with(
        &self,
        adjust: impl FnOnce(QueueBuilder) -> QueueBuilder,
    ) -> Result<Queue, CliError> {
        let config = self.redis()?;
        let builder = adjust(Queue::builder(&self.queue).prefix(&self.prefix));
        builder
            .connect(&config)
            .await
            .map_err(|e| explain(&e, &config))
    }

    /// Where the queue's keys are, for messages.
    pub(crate) fn keys_pattern(&self) -> String {
        format!("{}:{{{}}}:*", self.prefix, self.queue)
    }
}

/// Tells on stderr which Redis a command uses when no flag named it.
pub(crate) fn announce(config: &RedisConfig) {
    if config.is_default() {
        eprintln!(
            "streamq: using redis at {} (the default: no --redis, STREAMQ_REDIS_URL, REDIS_URL or REDIS_HOST given)",
            config.address()
        );
    } else if config.origin() != "the URL given" {
        eprintln!(
            "streamq: using redis at {} (from {})",
            config.address(),
            config.origin()
        );
    }
}

/// Where a config came from, as a user would name it.
fn origin(config: &RedisConfig) -> String {
    if config.origin() == "the URL given" {
        "--redis".to_owned()
    } else {
        config.origin().to_owned()
    }
}

/// An error with a message written for the person at the terminal.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    /// Whether Redis could not be reached or read (for `stats`: unavailable).
    pub(crate) unavailable: bool,
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            unavailable: false,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A library error in words for the operator: what happened, where, and
/// what to do next.
pub(crate) fn explain(err: &streamq::Error, config: &RedisConfig) -> CliError {
    use streamq::Error as E;
    let at = config.address();
    let from = origin(config);
    let message = match err {
        E::Unavailable(cause) => format!(
            "cannot reach redis at {at} (from {from}): {}. Is redis-server running there? \
             Check the address, or name another with --redis URL.",
            redis_cause(cause)
        ),
        E::Authentication { missing: true } => format!(
            "redis at {at} (from {from}) needs a password. Put it in the URL, \
             redis://:PASSWORD@HOST:PORT (or redis://USER:PASSWORD@HOST:PORT for an ACL user), \
             or set REDIS_PASSWORD."
        ),
        E::Authentication { missing: false } => format!(
            "redis at {at} (from {from}) refused the user name or password. \
             Check the password in the URL or in REDIS_PASSWORD."
        ),
        E::NoPermission(detail) => format!(
            "the redis user at {at} lacks a permission streamq needs: {detail}. \
             Its ACL must allow the stream, hash, sorted-set and scripting commands on the queue's keys."
        ),
        E::WrongKeyType { .. } => format!(
            "{err} (redis at {at}). That key is not streamq's: use another queue name or --prefix, \
             or delete the key if it is left over."
        ),
        E::UnsupportedServer { .. } => format!("{err} (redis at {at})"),
        E::PayloadTooLarge { .. } => format!(
            "{err}. Raise the limit with --max-payload-bytes (workers and `dlq` need it too), \
             or send smaller payloads."
        ),
        E::OutOfMemory(_) => {
            format!("{err} (redis at {at}). Raise its maxmemory, or drain or purge queues.")
        }
        _ => err.to_string(),
    };
    CliError {
        message,
        unavailable: !matches!(err, E::Config(_) | E::InvalidName { .. }),
    }
}

/// The cause of an unreachable Redis, without redis-rs's decoration.
fn redis_cause(cause: &redis::RedisError) -> String {
    let text = cause.to_string();
    let text = text.trim();
    let lower = text.to_lowercase();
    if lower.contains("connection refused") {
        "connection refused".to_owned()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "no answer in time (timed out)".to_owned()
    } else {
        text.to_owned()
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, what systemd, Docker and
/// Kubernetes send to stop a service. Both are caught from the moment this
/// is called, not from the first poll.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        if let (Some(mut interrupt), Some(mut term)) = signals {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where a command's Redis is: the one named, or a private one started for
/// the run (kept alive as long as this value is).
pub(crate) struct Target {
    pub(crate) config: RedisConfig,
    pub(crate) url: String,
    /// `a private redis-server at 127.0.0.1:PORT`, or `127.0.0.1:6379`.
    pub(crate) description: String,
    _local: Option<LocalRedis>,
}

impl Target {
    /// `url` when given with `--redis`, else a private redis-server. Load
    /// is never sent to a Redis from the environment: when REDIS_URL (or
    /// STREAMQ_REDIS_URL) is set, `command` says it is not used.
    pub(crate) fn url_or_private(url: Option<&str>, command: &str) -> Result<Target, CliError> {
        match url {
            Some(url) => {
                let config =
                    RedisConfig::from_url(url).map_err(|e| CliError::new(e.to_string()))?;
                Ok(Target {
                    description: config.address(),
                    config,
                    url: url.to_owned(),
                    _local: None,
                })
            }
            None => {
                for name in ["STREAMQ_REDIS_URL", "REDIS_URL"] {
                    if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
                        eprintln!(
                            "streamq {command}: {name} is set, but {command} writes a lot of jobs, so it uses a \
                             private redis-server; to use that Redis, pass --redis \"${name}\""
                        );
                    }
                }
                let local = LocalRedis::start().map_err(|e| CliError::new(e.to_string()))?;
                let config = RedisConfig::from_url(&local.url())
                    .map_err(|e| CliError::new(e.to_string()))?;
                Ok(Target {
                    description: format!("a private redis-server at 127.0.0.1:{}", local.port()),
                    config,
                    url: local.url(),
                    _local: Some(local),
                })
            }
        }
    }
}
