//! `streamq bench --raw`: the floor under every Redis stream queue, measured
//! with the same client library in the same run. Producers `XADD` (in
//! pipelines of up to `--batch` when flat out; when paced, whatever is due,
//! usually one job per round trip); consumers `XREADGROUP COUNT 100 BLOCK`,
//! then `XACK` + `XDEL` what they read in one pipeline. No scripts, no
//! fencing, no priorities, no retries: what streamq adds on top is the
//! difference.
//!
//! Producers run as `streamq bench` runs its own: a thread, a runtime and a
//! connection each, paced open-loop by thread sleeps, so that the two
//! modes split their CPU the same way (producing, pacing, consuming) and
//! their latencies are measured alike (from each job's intended send time
//! to its read by a consumer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::{nanos, now_us};

use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

const STREAM: &str = "streamq-raw:{baseline}:s";
const GROUP: &str = "g";
/// Each payload starts with its intended send time, Unix microseconds.
const STAMP: usize = 8;

/// What to run.
pub(crate) struct RawPlan {
    pub(crate) url: String,
    /// Stop after this many jobs, or (paced) after `duration`.
    pub(crate) jobs: Option<u64>,
    pub(crate) duration: Option<f64>,
    pub(crate) rate: Option<f64>,
    pub(crate) payload_bytes: usize,
    pub(crate) producers: u64,
    pub(crate) consumers: usize,
    pub(crate) batch: usize,
}

/// What the raw baseline measured.
pub(crate) struct RawReport {
    pub(crate) jobs: u64,
    pub(crate) e2e_jobs_per_s: f64,
    pub(crate) client_cpu_s_per_1k_jobs: f64,
    /// Producer threads' CPU per job, their pacing sleeps excluded.
    pub(crate) producer_cpu_us_per_job: f64,
    pub(crate) pacing_cpu_us_per_job: f64,
    /// The rest of the process per job: the consumers.
    pub(crate) consumer_cpu_us_per_job: f64,
    /// Intended send time to read by a consumer, microseconds.
    pub(crate) latency_us: Histogram<u64>,
}

/// Shared by producers and consumers.
struct Tally {
    enqueued: AtomicU64,
    producers_done: AtomicU64,
    processed: AtomicU64,
    producer_cpu_ns: AtomicU64,
    pacing_cpu_ns: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

pub(crate) async fn run(plan: RawPlan) -> Result<RawReport, Box<dyn std::error::Error>> {
    let client = Client::open(plan.url.as_str())?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
    let mut admin = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: Value = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut admin)
        .await?;
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", STREAM, GROUP, "0", "MKSTREAM"])
        .query_async(&mut admin)
        .await?;

    let tally = Arc::new(Tally {
        enqueued: AtomicU64::new(0),
        producers_done: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        producer_cpu_ns: AtomicU64::new(0),
        pacing_cpu_ns: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
    });
    let plan = Arc::new(plan);
    let mut producers = Vec::new();
    let mut go = Vec::new();
    for index in 0..plan.producers {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<(Instant, u64)>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (plan, tally) = (plan.clone(), tally.clone());
        let (client, config) = (client.clone(), config.clone());
        let thread = std::thread::Builder::new().name(format!("producer-{index}"));
        // The connection is made on the producer's own runtime, as `streamq
        // bench` makes its producers' connections: its I/O is then the
        // producer's CPU time, not the consumers'.
        producers.push(thread.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let connected =
                runtime.block_on(client.get_multiplexed_async_connection_with_config(&config));
            let conn = match connected {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    conn
                }
                Err(e) => {
                    let message = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(std::io::Error::other(message));
                }
            };
            let Ok(start) = go_rx.recv() else {
                return Ok(());
            };
            let cpu = cpu_time::ThreadTime::now();
            let result = runtime.block_on(produce(conn, &plan, &tally, index, start));
            tally
                .producer_cpu_ns
                .fetch_add(nanos(cpu.elapsed()), Ordering::Relaxed);
            tally.producers_done.fetch_add(1, Ordering::Release);
            result.map_err(std::io::Error::other)
        })?);
        ready.await.map_err(std::io::Error::other)??;
        go.push(go_tx);
    }

    let cpu = cpu_time::ProcessTime::now();
    let started = Instant::now();
    let started_us = now_us();
    let mut consumers = Vec::new();
    for c in 0..plan.consumers {
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        consumers.push(tokio::spawn(consume(
            conn,
            format!("c{c}"),
            tally.clone(),
            plan.producers,
        )));
    }
    for go in go {
        let _ = go.send((started, started_us));
    }
    for consumer in consumers {
        consumer.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.elapsed();
    for producer in producers {
        producer
            .join()
            .map_err(|_| "a raw producer thread panicked")??;
    }
    let _: Value = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut admin)
        .await?;

    let jobs = tally.processed.load(Ordering::Relaxed);
    let per = jobs.max(1) as f64;
    let producer_us = tally.producer_cpu_ns.load(Ordering::Relaxed) as f64 / 1e3;
    let pacing_us = tally.pacing_cpu_ns.load(Ordering::Relaxed) as f64 / 1e3;
    let latency_us = tally
        .latency_us
        .lock()
        .map_err(|_| "histogram poisoned")?
        .clone();
    Ok(RawReport {
        jobs,
        e2e_jobs_per_s: jobs as f64 / secs,
        client_cpu_s_per_1k_jobs: cpu.as_secs_f64() / per * 1000.0,
        producer_cpu_us_per_job: (producer_us - pacing_us).max(0.0) / per,
        pacing_cpu_us_per_job: pacing_us / per,
        consumer_cpu_us_per_job: (cpu.as_secs_f64() * 1e6 - producer_us).max(0.0) / per,
        latency_us,
    })
}

/// Sends jobs `index`, `index + producers`, ...: flat out in pipelines of
/// `batch`, or paced so that job `i` leaves at `i / rate` seconds.
async fn produce(
    mut conn: MultiplexedConnection,
    plan: &RawPlan,
    tally: &Tally,
    index: u64,
    (started, started_us): (Instant, u64),
) -> Result<(), redis::RedisError> {
    let deadline = plan.duration.map(|s| started + Duration::from_secs_f64(s));
    let goal = plan.jobs;
    let mut body = vec![b'x'; plan.payload_bytes.max(STAMP)];
    let mut seq = index;
    loop {
        if goal.is_some_and(|g| seq >= g) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        if let Some(rate) = plan.rate {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            // On this producer's own thread: blocking is fine.
            let pacing = cpu_time::ThreadTime::now();
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            tally
                .pacing_cpu_ns
                .fetch_add(nanos(pacing.elapsed()), Ordering::Relaxed);
        }
        let now = started.elapsed().as_secs_f64();
        let mut pipe = redis::pipe();
        let mut n = 0;
        while n < plan.batch.max(1) as u64 && goal.is_none_or(|g| seq < g) {
            let intended_us = match plan.rate {
                Some(rate) => {
                    let at = seq as f64 / rate;
                    if at > now && n > 0 {
                        break;
                    }
                    started_us + (at * 1e6) as u64
                }
                None => now_us(),
            };
            body[..STAMP].copy_from_slice(&intended_us.to_le_bytes());
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("e")
                .arg(&body)
                .ignore();
            n += 1;
            seq += plan.producers;
        }
        pipe.exec_async(&mut conn).await?;
        tally.enqueued.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads, records each job's latency, acknowledges and deletes, until every
/// producer is done and every job it sent is processed.
async fn consume(
    mut conn: MultiplexedConnection,
    name: String,
    tally: Arc<Tally>,
    producers: u64,
) -> Result<(), redis::RedisError> {
    loop {
        let all_sent = tally.producers_done.load(Ordering::Acquire) == producers;
        if all_sent
            && tally.processed.load(Ordering::Relaxed) >= tally.enqueued.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP", GROUP, &name, "COUNT", "100", "BLOCK", "100", "STREAMS", STREAM, ">",
            ])
            .query_async(&mut conn)
            .await?;
        let entries: Vec<_> = reply.keys.iter().flat_map(|k| k.ids.iter()).collect();
        if entries.is_empty() {
            continue;
        }
        let read_us = now_us();
        if let Ok(mut histogram) = tally.latency_us.lock() {
            for entry in &entries {
                if let Some(Value::BulkString(payload)) = entry.map.get("e") {
                    let stamp = payload
                        .get(..STAMP)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u64::from_le_bytes);
                    histogram.saturating_record(read_us.saturating_sub(stamp).max(1));
                }
            }
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(STREAM).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(STREAM).arg(&ids).ignore();
        pipe.exec_async(&mut conn).await?;
        tally
            .processed
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
    }
}
