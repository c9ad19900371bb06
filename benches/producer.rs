//! Enqueueing against a private redis-server: one job per round trip, and
//! batches of 100 and 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamq::{EnqueueOptions, Priority};
use support::TestRedis;

fn producer(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = TestRedis::start();
    let queue = runtime.block_on(redis.queue("bench-producer"));
    let payload = serde_bytes::ByteBuf::from(vec![7u8; 1024]);
    let options = EnqueueOptions::new().priority(Priority::High);
    let mut group = c.benchmark_group("enqueue");

    group.throughput(Throughput::Elements(1));
    group.bench_function("single_1KiB", |b| {
        b.to_async(&runtime)
            .iter(|| async { queue.enqueue(&payload, &options).await.unwrap() });
    });
    for size in [100u64, 1000] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("batch_{size}_1KiB"), |b| {
            b.to_async(&runtime).iter(|| async {
                let mut batch = queue.batch();
                for _ in 0..size {
                    batch.push(&payload, &options).unwrap();
                }
                batch.send().await.unwrap()
            });
        });
        // Keep Redis from growing without bound across samples.
        runtime.block_on(async {
            let _: () = redis::cmd("FLUSHALL")
                .query_async(&mut redis.raw().await)
                .await
                .unwrap();
        });
        runtime.block_on(redis.queue("bench-producer"));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows keep the whole `cargo bench` under five minutes.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = producer
}
criterion_main!(benches);
