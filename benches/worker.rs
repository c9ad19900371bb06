//! The whole path against a private redis-server: enqueue a batch, have a
//! running worker process every job, and wait until all are acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamq::{EnqueueOptions, Job, JobError, WorkerConfig};
use support::{TestRedis, spawn_worker};
use tokio::sync::Notify;

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = TestRedis::start();
    let queue = runtime.block_on(redis.queue("bench-worker"));
    let done = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let (counter, wake) = (done.clone(), notify.clone());
    let (stop, worker) = runtime.block_on(async {
        spawn_worker(
            &queue,
            WorkerConfig::new().concurrency(64).prefetch(64),
            move |_: Job<serde_bytes::ByteBuf>| {
                let (counter, wake) = (counter.clone(), wake.clone());
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    wake.notify_one();
                    Ok::<_, JobError>(())
                }
            },
        )
    });
    let payload = serde_bytes::ByteBuf::from(vec![7u8; 1024]);
    let mut group = c.benchmark_group("round_trip");
    for size in [1u64, 100, 1000] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("enqueue_process_ack_{size}"), |b| {
            b.to_async(&runtime).iter(|| async {
                let target = done.load(Ordering::Relaxed) + size;
                let mut batch = queue.batch();
                for _ in 0..size {
                    batch.push(&payload, &EnqueueOptions::new()).unwrap();
                }
                batch.send().await.unwrap();
                while done.load(Ordering::Relaxed) < target {
                    notify.notified().await;
                }
            });
        });
    }
    group.finish();
    stop.cancel();
    runtime.block_on(worker).unwrap();
}

criterion_group! {
    name = benches;
    // Short windows keep the whole `cargo bench` under five minutes.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = round_trip
}
criterion_main!(benches);
