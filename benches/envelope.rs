//! CPU only: encoding and decoding job envelopes, no Redis.
#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use streamq::testing::bench::{decode, encode};

#[derive(Serialize, Deserialize)]
struct Alert {
    host: String,
    severity: String,
    message: String,
}

fn alert(bytes: usize) -> Alert {
    Alert {
        host: "web-042.eu-west-1.prod.example.net".to_owned(),
        severity: "warning".to_owned(),
        message: "latency above threshold; ".repeat(bytes / 25),
    }
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for bytes in [256, 1024, 16 * 1024] {
        let payload = alert(bytes);
        let encoded = encode(&payload, None).expect("encodes");
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(format!("encode/{bytes}"), |b| {
            b.iter(|| encode(black_box(&payload), None).expect("encodes"));
        });
        group.bench_function(format!("decode/{bytes}"), |b| {
            b.iter(|| decode::<Alert>(black_box(&encoded)).expect("decodes"));
        });
        let compressed = encode(&payload, Some(512)).expect("encodes");
        group.bench_function(format!("encode_lz4/{bytes}"), |b| {
            b.iter(|| encode(black_box(&payload), Some(512)).expect("encodes"));
        });
        group.bench_function(format!("decode_lz4/{bytes}"), |b| {
            b.iter(|| decode::<Alert>(black_box(&compressed)).expect("decodes"));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows keep the whole `cargo bench` under five minutes.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = envelope
}
criterion_main!(benches);
