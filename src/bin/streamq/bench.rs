//! `streamq bench`: size a Redis. Producers and workers run at the same
//! time against a private redis-server (or `--redis URL`), flat out or paced
//! open-loop at `--rate`, and the summary reports throughput, latency from
//! each job's intended send time to its handler's start, Redis memory and
//! client CPU.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use streamq::{EnqueueOptions, Job, JobError, Priority, Queue, RateLimit, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use indicatif::ProgressBar;

use crate::cli::{Target, explain};
use crate::render::{self, outln};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Redis to use; default: a private redis-server started for the run
    /// (REDIS_URL is not used: the bench writes hundreds of thousands of jobs).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Payload bytes per job.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Jobs to run (default 200,000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    jobs: Option<u64>,
    /// Produce for this many seconds instead of a job count.
    #[arg(long)]
    duration: Option<f64>,
    /// Pace producers open-loop at this many jobs/s (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Producer tasks.
    #[arg(long, default_value_t = 2)]
    producers: u64,
    /// Workers (consumers in the group).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs running at once per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Most jobs per enqueue round trip.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Share of jobs per priority, critical to low.
    #[arg(long, default_value = "70,20,8,2")]
    priorities: Mix,
    /// Enqueue this many jobs first, then start the workers and drain.
    #[arg(long, conflicts_with_all = ["rate", "duration", "jobs"])]
    backlog: Option<u64>,
    /// What payloads look like: incompressible bytes or JSON-like alerts.
    #[arg(long, value_enum, default_value_t = PayloadKind::Bytes)]
    payload: PayloadKind,
    /// Compress payloads larger than this many bytes.
    #[arg(long)]
    compress_above: Option<usize>,
    /// Keep only the per-priority counters (no per-name counters or
    /// latency histograms), to measure what metrics cost.
    #[arg(long)]
    no_metrics: bool,
    /// Track every job (metadata per job), to measure what it costs.
    #[arg(long)]
    track_jobs: bool,
    /// Record the event stream (capped at 10,000 events), to measure what
    /// it costs.
    #[arg(long)]
    events: bool,
    /// Limit the workers to this many job starts per second (set it very
    /// high to measure what the rate-limit check costs).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Claimed jobs each worker may hold beyond those running (default: the
    /// concurrency; a rate limit turns prefetch off).
    #[arg(long)]
    prefetch: Option<usize>,
    /// The queue to use.
    #[arg(long, default_value = "streamq-bench")]
    queue: String,
    /// Split the queue into this many partitions (spread over a cluster's
    /// masters; the URL may name any cluster node).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Run each worker on a thread of its own (`WorkerConfig::own_thread`),
    /// as the producers run: what a steady, light queue costs that way (see
    /// docs/sizing.md, "Steady rates").
    #[arg(long, conflicts_with = "raw")]
    worker_threads_own: bool,
    /// Print one JSON line with the results instead of a summary.
    #[arg(long)]
    json: bool,
    /// Measure the raw baseline instead: plain XADD, XREADGROUP, XACK +
    /// XDEL, with no scripts, what Redis itself sustains for the same jobs
    /// and what its client costs (takes --jobs or --duration, --rate,
    /// --payload-bytes, --producers, --workers, --batch).
    #[arg(long, conflicts_with_all = ["backlog", "compress_above"])]
    raw: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PayloadKind {
    /// Incompressible random bytes.
    Bytes,
    /// JSON-like alert records.
    Json,
}

impl PayloadKind {
    fn describe(self) -> &'static str {
        match self {
            PayloadKind::Bytes => "random bytes",
            PayloadKind::Json => "JSON-like alerts",
        }
    }
}

/// A priority mix such as `70,20,8,2`.
#[derive(Debug, Clone, Copy)]
struct Mix([u32; 4]);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .map_err(|_| format!("{p:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [c, h, m, l] if c + h + m + l > 0 => Ok(Mix([*c, *h, *m, *l])),
            _ => Err("give four weights, critical to low, e.g. 70,20,8,2".to_owned()),
        }
    }
}

impl Mix {
    fn pick(&self, roll: u32) -> Priority {
        let total: u32 = self.0.iter().sum();
        let mut roll = roll % total;
        for (p, weight) in Priority::ALL.into_iter().zip(self.0) {
            if roll < weight {
                return p;
            }
            roll -= weight;
        }
        Priority::Low
    }
}

/// One benchmark job, as the handler decodes it.
#[derive(Debug, Deserialize)]
struct BenchJob {
    /// When the job was meant to be sent, Unix microseconds.
    intended_us: u64,
    #[allow(dead_code)]
    body: Body,
}

/// The same job as the producer encodes it, borrowing a pre-built body so
/// that building payloads is not charged to the queue's CPU.
#[derive(Debug, Serialize)]
struct OutgoingJob<'a> {
    intended_us: u64,
    body: &'a Body,
}

/// Distinct payloads built before the clock starts, used round-robin.
const BODY_POOL: u64 = 256;

#[derive(Debug, Serialize, Deserialize)]
enum Body {
    #[serde(with = "serde_bytes")]
    Bytes(Vec<u8>),
    Alert {
        host: String,
        service: String,
        severity: String,
        message: String,
    },
}

fn body(kind: PayloadKind, bytes: usize, seq: u64) -> Body {
    match kind {
        PayloadKind::Bytes => {
            let mut rng = fastrand::Rng::with_seed(seq);
            Body::Bytes((0..bytes).map(|_| rng.u8(..)).collect())
        }
        PayloadKind::Json => {
            let host = format!("web-{:03}.eu-west-1.prod.example.net", seq % 500);
            let mut message = format!(
                "{{\"check\":\"http_latency\",\"threshold_ms\":250,\"observed_ms\":{},\"region\":\"eu-west-1\",\"labels\":{{\"team\":\"payments\",\"tier\":\"frontend\"}},\"samples\":[",
                200 + seq % 300
            );
            let mut i = 0;
            while message.len() + 24 < bytes.saturating_sub(80) {
                message.push_str(&format!("{},", 180 + (seq + i) % 90));
                i += 1;
            }
            message.push_str("0]}");
            Body::Alert {
                host,
                service: "checkout-api".to_owned(),
                severity: "warning".to_owned(),
                message,
            }
        }
    }
}

/// Shared between producers, handlers and the reporter.
struct Tally {
    enqueued: AtomicU64,
    /// CPU time of the producer threads (pacing sleeps included), ns.
    producer_cpu_ns: AtomicU64,
    /// CPU time the producer threads spent in their pacing sleeps, ns.
    pacing_cpu_ns: AtomicU64,
    /// When the last producer's last batch was acknowledged, Unix us.
    enqueue_done_us: AtomicU64,
    processed: AtomicU64,
    first_start_us: AtomicU64,
    last_done_us: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

/// The final line of `--json`. Field names are a stable interface.
#[derive(Debug, Serialize)]
struct Report {
    jobs: u64,
    payload_bytes: usize,
    enqueue_jobs_per_s: f64,
    process_jobs_per_s: f64,
    e2e_jobs_per_s: f64,
    mb_per_s: f64,
    gb_per_day: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    max_waiting: u64,
    redis_used_memory_peak_bytes: u64,
    redis_used_memory_after_bytes: u64,
    redis_used_memory_before_bytes: u64,
    redis_bytes_per_queued_job: Option<f64>,
    client_cpu_s_per_1k_jobs: f64,
    /// Producer threads' CPU per job, their pacing sleeps excluded.
    producer_cpu_us_per_job: f64,
    /// Producer threads' CPU per job spent pacing (the harness, not the queue).
    pacing_cpu_us_per_job: f64,
    /// The rest of the process per job: workers, their connections, the
    /// handler's bookkeeping and the 200 ms sampler.
    worker_cpu_us_per_job: f64,
    /// Producing plus working: the queue's client CPU per job.
    queue_cpu_us_per_job: f64,
    redis_version: String,
    rate: Option<f64>,
    producers: u64,
    workers: usize,
    concurrency: usize,
    batch: usize,
    compress_above: Option<usize>,
    metrics: bool,
    track_jobs: bool,
    events: bool,
}

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let target = Target::url_or_private(args.redis.as_deref(), "bench")?;
    if args.raw {
        return raw(&args, &target).await;
    }
    let mut builder = Queue::builder(&args.queue)
        .metrics(!args.no_metrics)
        .partitions(args.partitions);
    if args.track_jobs {
        builder = builder.track_jobs(streamq::JobTracking::default());
    }
    if args.events {
        builder = builder.events(streamq::EventLog::default());
    }
    if let Some(threshold) = args.compress_above {
        builder = builder.compress_above(threshold);
    }
    let queue = builder
        .clone()
        .connect(&target.config)
        .await
        .map_err(|e| explain(&e, &target.config))?;
    if !queue.stats().await?.is_idle() {
        return Err(format!("queue {} is not empty; use another --queue", args.queue).into());
    }
    let server = queue.server().clone();
    let jobs_goal = match (args.backlog, args.jobs, args.duration, args.rate) {
        (Some(n), ..) => Some(n),
        (None, Some(n), ..) => Some(n),
        (None, None, Some(secs), Some(rate)) => Some((secs * rate) as u64),
        (None, None, Some(_), None) => None,
        (None, None, None, _) => Some(200_000),
    };
    if !args.json {
        eprintln!(
            "streamq bench: {} jobs of {} ({}), {} producers{}, {} workers x {}{}, batch {}; {} {} on {}",
            jobs_goal.map_or_else(
                || format!("{} s of", args.duration.unwrap_or(0.0)),
                |n| n.to_string()
            ),
            render::bytes(args.payload_bytes as u64),
            args.payload.describe(),
            args.producers,
            args.rate
                .map_or(String::new(), |r| format!(" at {r:.0} jobs/s")),
            args.workers,
            args.concurrency,
            if args.worker_threads_own {
                " (each on a thread of its own)"
            } else {
                ""
            },
            args.batch,
            server.server,
            server.version,
            target.description,
        );
    }

    let memory_before = used_memory(&queue).await?;
    let tally = Arc::new(Tally {
        enqueued: AtomicU64::new(0),
        producer_cpu_ns: AtomicU64::new(0),
        pacing_cpu_ns: AtomicU64::new(0),
        enqueue_done_us: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        first_start_us: AtomicU64::new(u64::MAX),
        last_done_us: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
    });
    let bodies: Arc<Vec<Body>> = Arc::new(
        (0..BODY_POOL)
            .map(|seq| body(args.payload, args.payload_bytes, seq))
            .collect(),
    );
    // Producers get a thread, a runtime and a connection each, connected
    // before the clock starts: their CPU time is then theirs alone (the
    // connection's I/O included), and the rest of the process is the
    // workers'. Paced producers need the thread anyway: tokio's timer rounds
    // every sleep up to a whole millisecond, which would add up to 1 ms of
    // schedule slip to every job; a thread's sleep is ~100x finer.
    let deadline_secs = args.duration;
    let mut producers = Vec::new();
    let mut go = Vec::new();
    for p in 0..args.producers {
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<(Instant, u64)>();
        let builder = builder.clone();
        let config = target.config.clone();
        let tally = tally.clone();
        let bodies = bodies.clone();
        let (goal, rate, batch, mix) = (jobs_goal, args.rate, args.batch.max(1), args.priorities);
        let step = args.producers;
        // Named, so that profiles tell producing from working.
        let handle = on_own_thread(format!("producer-{p}"), move || async move {
            let queue = match builder.connect(&config).await {
                Ok(queue) => queue,
                Err(e) => {
                    let _ = ready_tx.send(());
                    return Err(e);
                }
            };
            let _ = ready_tx.send(());
            let Ok((started, started_us)) = go_rx.recv() else {
                return Ok(());
            };
            let cpu = cpu_time::ThreadTime::now();
            let producer = Producer {
                queue,
                tally: tally.clone(),
                index: p,
                step,
                goal,
                deadline: deadline_secs.map(|s| started + Duration::from_secs_f64(s)),
                rate,
                batch,
                mix,
                bodies,
                started,
                started_us,
            };
            let result = producer.run().await;
            tally
                .producer_cpu_ns
                .fetch_add(nanos(cpu.elapsed()), Ordering::Relaxed);
            result
        })?;
        let _ = ready.await;
        go.push(go_tx);
        producers.push(tokio::spawn(async move { handle.await.unwrap_or(Ok(())) }));
    }

    let cpu_start = cpu_time::ProcessTime::now();
    let started = Instant::now();
    let started_us = now_us();
    let stop_workers = CancellationToken::new();
    let mut workers = Vec::new();
    let start_workers = async |workers: &mut Vec<_>| -> Result<(), Box<dyn std::error::Error>> {
        for _ in 0..args.workers {
            let mut config = WorkerConfig::new()
                .concurrency(args.concurrency)
                .prefetch(args.prefetch.unwrap_or(args.concurrency));
            if let Some(max) = args.rate_limit {
                config = config.rate_limit(RateLimit::new(max, Duration::from_secs(1)));
            }
            let tally = tally.clone();
            let handler = move |job: Job<BenchJob>| {
                let tally = tally.clone();
                async move { record(&tally, &job) }
            };
            let worker = Worker::new(&queue, config.own_thread(args.worker_threads_own))?;
            workers.push(tokio::spawn(worker.run(handler, stop_workers.clone())));
        }
        Ok(())
    };
    if args.backlog.is_none() {
        start_workers(&mut workers).await?;
    }

    for go in go {
        let _ = go.send((started, started_us));
    }

    let mut sampler = Sampler::default();
    let mut enqueue_done = None;
    let mut bytes_per_queued_job = None;
    // Drawn only on a terminal; nothing at all when stderr is a file or pipe.
    let progress = ProgressBar::new(jobs_goal.unwrap_or(0)).with_style(
        crate::render::progress_style("  {bar:30} {pos:>9} processed  {rate}  {msg}"),
    );
    let interrupted = crate::cli::shutdown_signal();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => {
                progress.abandon();
                eprintln!("streamq bench: interrupted; no result");
                stop_workers.cancel();
                return Ok(ExitCode::FAILURE);
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        sampler.sample(&queue).await;
        let enqueued = tally.enqueued.load(Ordering::Relaxed);
        let processed = tally.processed.load(Ordering::Relaxed);
        if enqueue_done.is_none() && producers.iter().all(|p| p.is_finished()) {
            for p in producers.drain(..) {
                p.await??;
            }
            enqueue_done = Some(started.elapsed());
            if let Some(n) = args.backlog {
                let memory = used_memory(&queue).await?;
                bytes_per_queued_job = Some(memory.saturating_sub(memory_before) as f64 / n as f64);
                start_workers(&mut workers).await?;
            }
        }
        if !args.json {
            if let Some(goal) = jobs_goal {
                progress.set_length(goal);
            }
            progress.set_position(processed);
            progress.set_message(format!(
                "enqueued {enqueued}, waiting {}, redis {}",
                sampler.last_waiting,
                render::bytes(sampler.last_memory)
            ));
        }
        if enqueue_done.is_some() && processed >= enqueued {
            break;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_start.elapsed();
    stop_workers.cancel();
    for worker in workers {
        worker.await??;
    }
    progress.finish_and_clear();
    let memory_after = used_memory(&queue).await?;

    let jobs = tally.processed.load(Ordering::Relaxed);
    let enqueue_secs = match tally.enqueue_done_us.load(Ordering::Relaxed) {
        0 => enqueue_done.unwrap_or(elapsed).as_secs_f64(),
        done => done.saturating_sub(started_us) as f64 / 1e6,
    };
    let first = tally.first_start_us.load(Ordering::Relaxed);
    let last_done = tally.last_done_us.load(Ordering::Relaxed);
    let process_secs = last_done.saturating_sub(first) as f64 / 1e6;
    let e2e_secs = last_done.saturating_sub(started_us) as f64 / 1e6;
    let latency = tally.latency_us.lock().map_err(|_| "histogram poisoned")?;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let e2e = jobs as f64 / e2e_secs.max(1e-9);
    let mb_per_s = e2e * args.payload_bytes as f64 / 1e6;
    let per = jobs.max(1) as f64;
    let producer_us = tally.producer_cpu_ns.load(Ordering::Relaxed) as f64 / 1e3;
    let pacing_us = tally.pacing_cpu_ns.load(Ordering::Relaxed) as f64 / 1e3;
    let producing_us = (producer_us - pacing_us).max(0.0);
    let working_us = (cpu.as_secs_f64() * 1e6 - producer_us).max(0.0);
    let report = Report {
        jobs,
        payload_bytes: args.payload_bytes,
        enqueue_jobs_per_s: round(jobs as f64 / enqueue_secs.max(1e-9)),
        process_jobs_per_s: round(jobs as f64 / process_secs.max(1e-9)),
        e2e_jobs_per_s: round(e2e),
        mb_per_s: round(mb_per_s),
        gb_per_day: round(mb_per_s * 86_400.0 / 1000.0),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latency.max() as f64 / 1000.0,
        max_waiting: sampler.max_waiting,
        redis_used_memory_peak_bytes: sampler.max_memory.max(memory_after),
        redis_used_memory_after_bytes: memory_after,
        redis_used_memory_before_bytes: memory_before,
        redis_bytes_per_queued_job: bytes_per_queued_job.map(round),
        client_cpu_s_per_1k_jobs: cpu.as_secs_f64() / jobs.max(1) as f64 * 1000.0,
        producer_cpu_us_per_job: round(producing_us / per),
        pacing_cpu_us_per_job: round(pacing_us / per),
        worker_cpu_us_per_job: round(working_us / per),
        queue_cpu_us_per_job: round((producing_us + working_us) / per),
        redis_version: format!("{} {}", server.server, server.version),
        rate: args.rate,
        producers: args.producers,
        workers: args.workers,
        concurrency: args.concurrency,
        batch: args.batch,
        compress_above: args.compress_above,
        metrics: !args.no_metrics,
        track_jobs: args.track_jobs,
        events: args.events,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&report)?;
    }
    // A paced run for a duration stops at its deadline, a job or two short
    // of rate x duration; only a job count is a goal to meet exactly.
    let goal_met = args.duration.is_some() || jobs_goal.is_none_or(|goal| jobs == goal);
    Ok(
        if goal_met && jobs == tally.enqueued.load(Ordering::Relaxed) {
            ExitCode::SUCCESS
        } else {
            eprintln!("streamq bench: FAILED: not every enqueued job was processed");
            ExitCode::FAILURE
        },
    )
}

async fn raw(args: &BenchArgs, target: &Target) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let jobs = match (args.jobs, args.duration) {
        (None, None) => Some(200_000),
        (jobs, _) => jobs,
    };
    let report = crate::raw_baseline::run(crate::raw_baseline::RawPlan {
        url: target.url.clone(),
        jobs,
        duration: args.duration,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        producers: args.producers,
        consumers: args.workers,
        batch: args.batch,
    })
    .await?;
    let ms = |q: f64| report.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let json = serde_json::json!({
        "mode": "raw",
        "jobs": report.jobs,
        "payload_bytes": args.payload_bytes,
        "rate": args.rate,
        "e2e_jobs_per_s": round(report.e2e_jobs_per_s),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": report.latency_us.max() as f64 / 1000.0,
        "client_cpu_s_per_1k_jobs": report.client_cpu_s_per_1k_jobs,
        "producer_cpu_us_per_job": round(report.producer_cpu_us_per_job),
        "pacing_cpu_us_per_job": round(report.pacing_cpu_us_per_job),
        "worker_cpu_us_per_job": round(report.consumer_cpu_us_per_job),
        "queue_cpu_us_per_job": round(report.producer_cpu_us_per_job + report.consumer_cpu_us_per_job),
    });
    if args.json {
        outln!("{json}");
    } else {
        outln!(
            "raw baseline: {} jobs of {} B, {:.0} jobs/s end to end; send to read p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            report.jobs,
            args.payload_bytes,
            report.e2e_jobs_per_s,
            ms(0.5),
            ms(0.99),
            ms(0.999),
        );
        outln!(
            "  client cpu {:.1} us per job: producing {:.1}, consuming {:.1}, pacing {:.1}",
            report.client_cpu_s_per_1k_jobs * 1000.0,
            report.producer_cpu_us_per_job,
            report.consumer_cpu_us_per_job,
            report.pacing_cpu_us_per_job,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(r: &Report) -> Result<(), Box<dyn std::error::Error>> {
    outln!("streamq bench summary ({})", r.redis_version);
    outln!("  jobs                {} x {} B", r.jobs, r.payload_bytes);
    outln!(
        "  throughput          enqueue {:.0}/s, process {:.0}/s, end to end {:.0}/s",
        r.enqueue_jobs_per_s,
        r.process_jobs_per_s,
        r.e2e_jobs_per_s
    );
    outln!(
        "  volume              {:.1} MB/s = {:.0} GB/day",
        r.mb_per_s,
        r.gb_per_day
    );
    outln!(
        "  latency (intended send to start)  p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        r.p50_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms
    );
    outln!("  most jobs waiting   {}", r.max_waiting);
    outln!(
        "  redis memory        {:.1} MB before, {:.1} MB peak, {:.1} MB after",
        r.redis_used_memory_before_bytes as f64 / 1e6,
        r.redis_used_memory_peak_bytes as f64 / 1e6,
        r.redis_used_memory_after_bytes as f64 / 1e6
    );
    if let Some(per_job) = r.redis_bytes_per_queued_job {
        outln!("  memory per queued job  {per_job:.0} B");
    }
    outln!(
        "  client cpu          {:.1} us per job: producing {:.1}, working {:.1}, pacing {:.1}",
        r.client_cpu_s_per_1k_jobs * 1000.0,
        r.producer_cpu_us_per_job,
        r.worker_cpu_us_per_job,
        r.pacing_cpu_us_per_job
    );
    Ok(())
}

struct Producer {
    queue: Queue,
    tally: Arc<Tally>,
    index: u64,
    step: u64,
    goal: Option<u64>,
    deadline: Option<Instant>,
    rate: Option<f64>,
    batch: usize,
    mix: Mix,
    bodies: Arc<Vec<Body>>,
    started: Instant,
    started_us: u64,
}

impl Producer {
    /// Enqueues jobs `index`, `index + step`, ... When paced, job `i` is due
    /// at `i / rate` seconds after the start and carries that time, so a
    /// stall shows up as latency instead of being hidden (no coordinated
    /// omission).
    async fn run(self) -> Result<(), streamq::Error> {
        let mut seq = self.index;
        let mut rng = fastrand::Rng::with_seed(self.index);
        loop {
            if self.goal.is_some_and(|g| seq >= g)
                || self.deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Ok(());
            }
            if let Some(rate) = self.rate {
                let due = self.started + Duration::from_secs_f64(seq as f64 / rate);
                // On this producer's own thread (see `run`): blocking is fine.
                let pacing = cpu_time::ThreadTime::now();
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                self.tally
                    .pacing_cpu_ns
                    .fetch_add(nanos(pacing.elapsed()), Ordering::Relaxed);
            }
            let mut batch = self.queue.batch();
            let now = self.started.elapsed().as_secs_f64();
            while batch.len() < self.batch && self.goal.is_none_or(|g| seq < g) {
                let intended_us = match self.rate {
                    Some(rate) => {
                        let at = seq as f64 / rate;
                        if at > now && !batch.is_empty() {
                            break;
                        }
                        self.started_us + (at * 1e6) as u64
                    }
                    None => now_us(),
                };
                let job = OutgoingJob {
                    intended_us,
                    body: &self.bodies[(seq % BODY_POOL) as usize],
                };
                let options = EnqueueOptions::new().priority(self.mix.pick(rng.u32(..)));
                batch.push(&job, &options)?;
                seq += self.step;
            }
            let n = batch.len() as u64;
            batch.send().await?;
            self.tally.enqueued.fetch_add(n, Ordering::Relaxed);
            self.tally
                .enqueue_done_us
                .fetch_max(now_us(), Ordering::Relaxed);
        }
    }
}

/// Runs `work` on a new thread called `name`, on a current-thread runtime of
/// its own; its outcome arrives on the returned channel.
fn on_own_thread<T, F, Fut>(
    name: String,
    work: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<Result<T, streamq::Error>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, streamq::Error>>,
{
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| streamq::Error::LocalServer(e.to_string()))
            .and_then(|runtime| runtime.block_on(work()));
        let _ = done.send(result);
    })?;
    Ok(outcome)
}

fn record(tally: &Tally, job: &Job<BenchJob>) -> Result<(), JobError> {
    let start = now_us();
    tally.first_start_us.fetch_min(start, Ordering::Relaxed);
    if let Ok(mut histogram) = tally.latency_us.lock() {
        histogram.saturating_record(start.saturating_sub(job.payload().intended_us).max(1));
    }
    tally.processed.fetch_add(1, Ordering::Relaxed);
    tally.last_done_us.fetch_max(now_us(), Ordering::Relaxed);
    Ok(())
}

/// Samples Redis memory and the waiting count while the bench runs.
#[derive(Default)]
struct Sampler {
    max_memory: u64,
    last_memory: u64,
    max_waiting: u64,
    last_waiting: u64,
}

impl Sampler {
    async fn sample(&mut self, queue: &Queue) {
        if let Ok(memory) = used_memory(queue).await {
            self.last_memory = memory;
            self.max_memory = self.max_memory.max(memory);
        }
        if let Ok(stats) = queue.stats().await {
            self.last_waiting = stats.waiting();
            self.max_waiting = self.max_waiting.max(stats.waiting());
        }
    }
}

async fn used_memory(queue: &Queue) -> Result<u64, streamq::Error> {
    let info = queue.server_info("memory").await?;
    Ok(info
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
