//! `streamq bench --raw`: the floor under every Redis stream queue, measured
//! with the same client library in the same run. Producers `XADD` in
//! pipelines; consumers `XREADGROUP COUNT 100`, then `XACK` + `XDEL` the batch
//! in one pipeline. No scripts, no fencing, no priorities, no retries: what
//! streamq adds on top is the difference.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

const STREAM: &str = "streamq-raw:{baseline}:s";
const GROUP: &str = "g";

/// What the raw baseline measured.
pub(crate) struct RawReport {
    pub(crate) jobs: u64,
    pub(crate) e2e_jobs_per_s: f64,
    pub(crate) client_cpu_s_per_1k_jobs: f64,
}

pub(crate) async fn run(
    url: &str,
    jobs: u64,
    payload_bytes: usize,
    producers: u64,
    consumers: usize,
    batch: usize,
) -> Result<RawReport, Box<dyn std::error::Error>> {
    let client = Client::open(url)?;
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

    let processed = Arc::new(AtomicU64::new(0));
    let cpu = cpu_time::ProcessTime::now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        tasks.push(tokio::spawn(consume(
            conn,
            format!("c{c}"),
            processed.clone(),
            jobs,
        )));
    }
    let body = vec![b'x'; payload_bytes];
    let per_producer = jobs.div_ceil(producers);
    for p in 0..producers {
        let mut conn = admin.clone();
        let body = body.clone();
        let count = per_producer.min(jobs.saturating_sub(p * per_producer));
        tasks.push(tokio::spawn(async move {
            let mut left = count;
            while left > 0 {
                let n = left.min(batch as u64);
                let mut pipe = redis::pipe();
                for _ in 0..n {
                    pipe.cmd("XADD")
                        .arg(STREAM)
                        .arg("*")
                        .arg("e")
                        .arg(&body)
                        .ignore();
                }
                pipe.exec_async(&mut conn).await?;
                left -= n;
            }
            Ok::<(), redis::RedisError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let _: Value = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut admin)
        .await?;
    Ok(RawReport {
        jobs,
        e2e_jobs_per_s: jobs as f64 / secs,
        client_cpu_s_per_1k_jobs: cpu.elapsed().as_secs_f64() / jobs as f64 * 1000.0,
    })
}

async fn consume(
    mut conn: MultiplexedConnection,
    name: String,
    processed: Arc<AtomicU64>,
    goal: u64,
) -> Result<(), redis::RedisError> {
    while processed.load(Ordering::Relaxed) < goal {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP", GROUP, &name, "COUNT", "100", "BLOCK", "100", "STREAMS", STREAM, ">",
            ])
            .query_async(&mut conn)
            .await?;
        let ids: Vec<&str> = reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(|e| e.id.as_str()))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(STREAM).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(STREAM).arg(&ids).ignore();
        pipe.exec_async(&mut conn).await?;
        processed.fetch_add(ids.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
