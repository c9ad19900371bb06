//! `streamq serve`: the HTTP front door, admin API and dashboard of one
//! queue (the library's `streamq::http`), until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use streamq::http::{HttpConfig, serve};
use streamq::{HealthThresholds, JobTracking, Queue, RedisConfig};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Redis URL (`redis://`, `rediss://`, `unix://`); else `REDIS_URL`,
    /// else redis://127.0.0.1:6379.
    #[arg(long, env = "STREAMQ_REDIS_URL")]
    redis: Option<String>,
    /// The queue to serve.
    #[arg(long, short, env = "STREAMQ_QUEUE")]
    queue: String,
    /// The key prefix.
    #[arg(long, env = "STREAMQ_PREFIX", default_value = "streamq")]
    prefix: String,
    /// Address to listen on. A non-loopback address needs --token (or
    /// --insecure).
    #[arg(long, env = "STREAMQ_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Bearer token for the admin API and the dashboard's actions.
    #[arg(long, env = "STREAMQ_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Bearer token required for ingestion (the admin token works too).
    #[arg(long, env = "STREAMQ_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Refuse every request that would change the queue.
    #[arg(long, env = "STREAMQ_READ_ONLY")]
    read_only: bool,
    /// Allow a non-loopback address without a token.
    #[arg(long, env = "STREAMQ_INSECURE")]
    insecure: bool,
    /// Largest single-job request body, bytes.
    #[arg(long, env = "STREAMQ_BODY_LIMIT", default_value_t = 1 << 20)]
    body_limit: usize,
    /// Largest batch request body, bytes.
    #[arg(long, env = "STREAMQ_BATCH_BODY_LIMIT", default_value_t = 64 << 20)]
    batch_body_limit: usize,
    /// Most single-job requests coalesced into one enqueue (1..=1000).
    #[arg(long, env = "STREAMQ_COALESCE_JOBS", default_value_t = 500)]
    coalesce_jobs: usize,
    /// Longest a coalesced batch waits to fill, microseconds (at most 100 ms).
    #[arg(long, env = "STREAMQ_COALESCE_WAIT_US", default_value_t = 0)]
    coalesce_wait_us: u64,
    /// Refuse enqueues (503) once this many jobs wait or are in flight.
    #[arg(long, env = "STREAMQ_MAX_BACKLOG")]
    max_backlog: Option<u64>,
    /// Track jobs so the dashboard and /api/admin/jobs/{id} can find them.
    #[arg(long, env = "STREAMQ_TRACK_JOBS")]
    track_jobs: bool,
    /// History step in seconds; 0 records no history.
    #[arg(long, env = "STREAMQ_HISTORY_STEP_SECS", default_value_t = 60)]
    history_step_secs: u64,
    /// History kept, in hours.
    #[arg(long, env = "STREAMQ_HISTORY_HOURS", default_value_t = 24)]
    history_hours: u64,
    /// recover-stalled takes jobs in flight without a heartbeat this long (ms).
    #[arg(long, env = "STREAMQ_RECOVER_IDLE_MS", default_value_t = 30_000)]
    recover_idle_ms: u64,
    /// Backlogged above this many waiting jobs.
    #[arg(long, env = "STREAMQ_MAX_WAITING", default_value_t = 10_000)]
    max_waiting: u64,
    /// Backlogged when the oldest waiting job waited longer (seconds).
    #[arg(long, env = "STREAMQ_MAX_WAIT_SECS", default_value_t = 60)]
    max_wait_secs: u64,
    /// "errors" above this many dead letters.
    #[arg(long, env = "STREAMQ_MAX_DEAD_LETTERS", default_value_t = 0)]
    max_dead_letters: u64,
}

pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = args
        .redis
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let mut builder = Queue::builder(&args.queue).prefix(&args.prefix);
    if let Some(backlog) = args.max_backlog {
        builder = builder.max_backlog(backlog);
    }
    if args.track_jobs {
        builder = builder.track_jobs(JobTracking::default());
    }
    let queue = builder.connect(&RedisConfig::from_url(&url)?).await?;
    let history = (args.history_step_secs > 0).then(|| {
        (
            Duration::from_secs(args.history_step_secs),
            Duration::from_secs(args.history_hours * 3600),
        )
    });
    let mut config = HttpConfig::new()
        .read_only(args.read_only)
        .insecure(args.insecure)
        .body_limit(args.body_limit)
        .batch_body_limit(args.batch_body_limit)
        .coalesce_jobs(args.coalesce_jobs)
        .coalesce_wait(Duration::from_micros(args.coalesce_wait_us))
        .recover_idle(Duration::from_millis(args.recover_idle_ms))
        .history(history)
        .thresholds(
            HealthThresholds::default()
                .max_waiting(args.max_waiting)
                .max_oldest_waiting(Duration::from_secs(args.max_wait_secs))
                .max_dead_letters(args.max_dead_letters),
        );
    if let Some(token) = args.token {
        config = config.token(token);
    }
    if let Some(token) = args.ingest_token {
        config = config.ingest_token(token);
    }
    println!(
        "streamq serve: queue {} on {}; dashboard at http://{}/",
        queue.name(),
        queue.server().server,
        args.listen
    );
    serve(queue, config, args.listen, shutdown_signal()).await?;
    println!("streamq serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
