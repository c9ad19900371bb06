//! The scripts on their own, against a private redis-server: the ack batch
//! (fenced XACK + XDEL + counters) and a reclaim scan over a large pending
//! list, called exactly as the worker calls them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::MultiplexedConnection;
use streamq::{Priority, QueueKeys};
use support::TestRedis;

const ACK: &str = include_str!("../lua/ack.lua");
const RECLAIM: &str = include_str!("../lua/reclaim.lua");

/// The bench queue's keys; its jobs go to the high stream.
fn keys() -> QueueKeys {
    QueueKeys::new("streamq", "bench").unwrap()
}

/// Adds `n` 1 KiB entries and claims them all for consumer `c1`.
async fn claimed(conn: &mut MultiplexedConnection, n: usize) -> Vec<String> {
    let keys = keys();
    let stream = keys.stream(Priority::High);
    let body = vec![b'x'; 1024];
    let mut pipe = redis::pipe();
    for _ in 0..n {
        pipe.cmd("XADD").arg(stream).arg("*").arg("e").arg(&body);
    }
    let ids: Vec<String> = pipe.query_async(conn).await.unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "streamq", "c1", "COUNT"])
        .arg(n)
        .arg(&["STREAMS", stream, ">"])
        .query_async(conn)
        .await
        .unwrap();
    ids
}

fn scripts(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = TestRedis::start();
    let mut conn = runtime.block_on(redis.raw());
    let keys = keys();
    runtime.block_on(async {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.stream(Priority::High))
            .arg(&["streamq", "0", "MKSTREAM"])
            .query_async(&mut conn)
            .await
            .unwrap();
    });
    let ack = redis::Script::new(ACK);
    let mut group = c.benchmark_group("scripts");
    let cases = [(1usize, 1u8), (100, 1), (256, 1), (256, 0)];
    for (batch, metrics) in cases {
        let label = if metrics == 1 { "" } else { "_no_metrics" };
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("ack_batch_{batch}{label}"), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let mut conn = conn.clone();
                let (ack, keys) = (&ack, &keys);
                async move {
                    let mut measured = Duration::ZERO;
                    for _ in 0..iters {
                        let ids = claimed(&mut conn, batch).await;
                        let mut call = ack.prepare_invoke();
                        call.key(keys.stats());
                        for stream in keys.streams() {
                            call.key(stream);
                        }
                        call.key(keys.latency());
                        call.key(keys.events());
                        // group, consumer, per-name metrics, result ttl,
                        // events cap (0: none), now; then eleven per job.
                        call.arg("streamq")
                            .arg("c1")
                            .arg(metrics)
                            .arg(0)
                            .arg(0)
                            .arg(1_795_000_000_000u64);
                        for id in &ids {
                            call.arg(2)
                                .arg(id)
                                .arg("alert")
                                .arg(33)
                                .arg(17)
                                .arg(350)
                                .arg(20)
                                .arg(0)
                                .arg("job")
                                .arg(0)
                                .arg("");
                        }
                        let started = Instant::now();
                        let reply: Vec<redis::Value> = call.invoke_async(&mut conn).await.unwrap();
                        measured += started.elapsed();
                        // {OK, lost}: nothing lost.
                        assert!(
                            matches!(reply.get(1), Some(redis::Value::Array(lost)) if lost.is_empty()),
                            "fenced: {reply:?}"
                        );
                    }
                    measured
                }
            });
        });
    }

    // A pending list of 100,000 entries, none idle long enough: the scan
    // every worker runs each reclaim interval on a busy queue.
    runtime.block_on(async {
        for _ in 0..100 {
            claimed(&mut conn, 1000).await;
        }
    });
    let reclaim = redis::Script::new(RECLAIM);
    group.throughput(Throughput::Elements(1));
    group.bench_function("reclaim_scan_100k_pending_none_idle", |b| {
        b.to_async(&runtime).iter(|| {
            let mut conn = conn.clone();
            let (reclaim, keys) = (&reclaim, &keys);
            async move {
                let mut call = reclaim.prepare_invoke();
                call.key(keys.stats());
                for stream in keys.streams() {
                    call.key(stream);
                }
                // group, consumer, priority index (high), lease ms, cursor, count
                let reply: Vec<redis::Value> = call
                    .arg(&["streamq", "c2", "2", "600000", "0-0", "100"])
                    .invoke_async(&mut conn)
                    .await
                    .unwrap();
                // {OK, cursor, jobs, deleted}: nothing taken over.
                assert!(matches!(reply.get(2), Some(redis::Value::Array(jobs)) if jobs.is_empty()));
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows keep the whole `cargo bench` under five minutes.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = scripts
}
criterion_main!(benches);
