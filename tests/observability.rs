//! Observability against a real Redis: counters and histograms kept by the
//! scripts (after retries, reclaims and dead letters), the inspector and its
//! health states, pause and resume, recovery, Prometheus text parsed back,
//! trace context and tracing spans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamq::{EnqueueOptions, Health, HealthThresholds, Job, JobError, Priority, Queue};
use support::{
    Gate, Seen, TestRedis, WAIT, eventually, fast, spawn_worker, until_metrics, until_stats,
    wait_for,
};

#[tokio::test]
async fn every_counter_is_kept_per_priority_and_per_name() {
    let redis = TestRedis::start();
    let queue = redis.queue("counted").await;
    let high = EnqueueOptions::new().priority(Priority::High);
    for _ in 0..3 {
        queue
            .enqueue(&"ok", &high.clone().name("send"))
            .await
            .unwrap();
    }
    queue
        .enqueue(&"flaky", &high.clone().name("send").max_attempts(3))
        .await
        .unwrap();
    queue
        .enqueue(
            &"doomed",
            &EnqueueOptions::new()
                .priority(Priority::Low)
                .name("bill")
                .max_attempts(2),
        )
        .await
        .unwrap();
    let dup = EnqueueOptions::new()
        .idempotency_key("k", Duration::from_secs(60))
        .name("send");
    queue.enqueue(&"ok", &dup).await.unwrap();
    queue.enqueue(&"ok", &dup).await.unwrap();
    queue
        .enqueue(
            &"later",
            &EnqueueOptions::new()
                .delay(Duration::from_millis(100))
                .name("send"),
        )
        .await
        .unwrap();

    // Every completed run lasts at least RUN: a known lower bound that the
    // run histogram must show, in the right unit.
    const RUN: Duration = Duration::from_millis(20);
    let started = Instant::now();
    let (stop, worker) = spawn_worker(&queue, fast(), |job: Job<String>| async move {
        match job.payload().as_str() {
            "flaky" if job.attempt() < 3 => Err(JobError::retry("not yet")),
            "doomed" => Err(JobError::retry("always")),
            _ => {
                tokio::time::sleep(RUN).await;
                Ok(())
            }
        }
    });
    until_metrics("everything finished", &queue, |m| {
        m.total().completed == 6 && m.total().dead_lettered == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    let m = queue.metrics().await.unwrap();
    let high = m.by_priority[&Priority::High];
    assert_eq!(
        (high.enqueued, high.completed, high.failed, high.retried),
        (4, 4, 2, 2)
    );
    let low = m.by_priority[&Priority::Low];
    assert_eq!(
        (low.enqueued, low.failed, low.retried, low.dead_lettered),
        (1, 2, 1, 1)
    );
    let medium = m.by_priority[&Priority::Medium];
    assert_eq!((medium.enqueued, medium.completed), (2, 2));
    let send = m.by_name["send"];
    assert_eq!(
        (send.enqueued, send.completed, send.failed, send.retried),
        (6, 6, 2, 2)
    );
    let bill = m.by_name["bill"];
    assert_eq!(
        (bill.enqueued, bill.failed, bill.retried, bill.dead_lettered),
        (1, 2, 1, 1)
    );
    assert_eq!((m.scheduled, m.deduplicated), (1, 1));

    // Histograms: one wait and one run per completed job, readable back.
    // Bounds measured, not assumed: no run is shorter than RUN, none longer
    // than this test so far (percentiles are bucket upper bounds, at most
    // 2^(1/4) above the value).
    let elapsed = started.elapsed();
    let latency = &m.latency["send"];
    assert_eq!((latency.wait.count(), latency.run.count()), (6, 6));
    let p50 = latency.run.percentile(0.5).unwrap();
    assert!(p50 >= RUN, "{p50:?}");
    assert!(p50 <= elapsed.mul_f64(1.2), "{p50:?} in {elapsed:?}");
    assert!(latency.wait.percentile(1.0).unwrap() >= latency.wait.percentile(0.5).unwrap());
    assert!(!m.latency.contains_key("bill"), "no completed bill job");
}

#[tokio::test]
async fn a_batch_finishing_jobs_of_several_names_keeps_each_names_figures() {
    let redis = TestRedis::start();
    let queue = redis.queue("names").await;
    let names = ["a", "bb", "ccc"];
    for i in 0..30u32 {
        let options = EnqueueOptions::new().name(names[(i % 3) as usize]);
        queue.enqueue(&i, &options).await.unwrap();
    }
    // Every job waits at the gate, then all finish at once: the finisher
    // acknowledges them in batches mixing the three names.
    let all = Gate::default();
    let gate = all.clone();
    let (stop, worker) = spawn_worker(&queue, fast().concurrency(30), move |_: Job<u32>| {
        let gate = gate.clone();
        async move {
            gate.pass().await;
            Ok(())
        }
    });
    support::wait_for("every job running", || all.arrived() == 30).await;
    let acks_before = redis.command_calls("xack").await;
    all.open();
    until_metrics("all completed", &queue, |m| m.total().completed == 30).await;
    stop.cancel();
    worker.await.unwrap();
    assert!(
        redis.command_calls("xack").await - acks_before < 30,
        "some acks shared a call"
    );
    let m = queue.metrics().await.unwrap();
    for name in names {
        let counted = m.by_name[name];
        assert_eq!((counted.completed, counted.reclaimed), (10, 0), "{name}");
        let latency = &m.latency[name];
        assert_eq!(
            (latency.wait.count(), latency.run.count()),
            (10, 10),
            "{name}"
        );
    }
}

#[tokio::test]
async fn reclaims_lost_ownership_and_lost_entries_are_counted() {
    let redis = TestRedis::start();
    let queue = redis.queue("reclaims").await;
    for i in 0..4u32 {
        queue
            .enqueue(&i, &EnqueueOptions::new().name("slow"))
            .await
            .unwrap();
    }
    // Each job's first run hangs past the lease, without a heartbeat: it is
    // reclaimed, runs again and completes, and only then does the first run
    // end, so its finish is refused. The lease is long enough that a second
    // run (which completes at once) cannot itself be reclaimed under a
    // stalled CPU: every count below is exact.
    let first_runs = Gate::default();
    let gate = first_runs.clone();
    let config = fast()
        .lease(Duration::from_secs(2))
        .heartbeat(false)
        .concurrency(8);
    let (stop, worker) = spawn_worker(&queue, config, move |job: Job<u32>| {
        let gate = gate.clone();
        async move {
            if job.deliveries() == 1 {
                gate.pass().await;
            }
            Ok(())
        }
    });
    until_metrics("all completed by a second run", &queue, |m| {
        m.total().completed == 4
    })
    .await;
    first_runs.open();
    until_metrics("the first runs' finishes refused", &queue, |m| {
        m.total().completed == 4 && m.total().ownership_lost == 4
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let m = queue.metrics().await.unwrap();
    let medium = m.by_priority[&Priority::Medium];
    assert_eq!(
        (medium.reclaimed, medium.ownership_lost, medium.completed),
        (4, 4, 4)
    );
    let slow = m.by_name["slow"];
    assert_eq!(
        (slow.reclaimed, slow.ownership_lost, slow.completed),
        (4, 4, 4)
    );
}

#[tokio::test]
async fn per_name_metrics_can_be_switched_off() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("quiet").metrics(false)).await;
    queue
        .enqueue(&1u8, &EnqueueOptions::new().name("x"))
        .await
        .unwrap();
    let (stop, worker) = spawn_worker(&queue, fast(), |_: Job<u8>| async { Ok(()) });
    until_metrics("done", &queue, |m| m.total().completed == 1).await;
    stop.cancel();
    worker.await.unwrap();
    let m = queue.metrics().await.unwrap();
    assert!(m.by_name.is_empty() && m.latency.is_empty(), "{m:?}");
    assert_eq!(redis.len(queue.keys().latency()).await, 0);
}

#[tokio::test]
async fn a_paused_queue_takes_enqueues_but_workers_wait_until_resumed() {
    let redis = TestRedis::start();
    let queue = redis.queue("paused").await;
    queue.pause().await.unwrap();
    assert!(queue.is_paused().await.unwrap());
    let seen = Seen::default();
    let (stop, worker) = spawn_worker(&queue, fast(), seen.handler::<u8>());
    for i in 0..5u8 {
        queue.enqueue(&i, &EnqueueOptions::new()).await.unwrap();
    }
    // Wait until the worker has polled the paused queue many times since
    // the jobs arrived (each pass runs the fetch and promote scripts).
    let polled = redis.script_calls().await;
    eventually("the worker polled the paused queue", WAIT, || {
        let r = &redis;
        async move { r.script_calls().await >= polled + 20 }
    })
    .await;
    assert_eq!(seen.len(), 0, "a paused queue was fetched from");
    let report = queue.inspect(&HealthThresholds::default()).await.unwrap();
    assert!(report.paused);
    assert_eq!(report.waiting(), 5);

    queue.resume().await.unwrap();
    wait_for("resumed and drained", || seen.len() == 5).await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn the_inspector_reports_state_consumers_and_health() {
    let mut redis = TestRedis::start();
    let queue = redis.queue("inspected").await;
    let mut batch = queue.batch();
    for i in 0..30u32 {
        batch
            .push(
                &i,
                &EnqueueOptions::new().priority(Priority::ALL[(i % 4) as usize]),
            )
            .unwrap();
    }
    batch.send().await.unwrap();
    queue
        .enqueue(
            &99u32,
            &EnqueueOptions::new().delay(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let strict = HealthThresholds::default().max_waiting(10);
    eventually("the oldest job is 50 ms old", WAIT, || {
        let q = &queue;
        let strict = &strict;
        async move {
            let report = q.inspect(strict).await.unwrap();
            report
                .oldest_waiting()
                .is_some_and(|age| age >= Duration::from_millis(50))
        }
    })
    .await;
    let report = queue.inspect(&strict).await.unwrap();
    assert_eq!(report.waiting(), 30);
    assert_eq!(report.delayed, 1);
    assert!(report.next_due_ms.is_some());
    assert!(report.oldest_waiting().unwrap() >= Duration::from_millis(50));
    assert!(
        matches!(report.health, Health::Backlogged(ref r) if r[0].contains("30 jobs waiting")),
        "{:?}",
        report.health
    );
    let by_age = HealthThresholds::default().max_oldest_waiting(Duration::from_millis(10));
    assert_eq!(
        queue.inspect(&by_age).await.unwrap().health.as_str(),
        "backlogged"
    );

    // A worker holding jobs shows up as a consumer with pending jobs.
    let release = Gate::default();
    let gate = release.clone();
    let (stop, worker) = spawn_worker(
        &queue,
        fast()
            .concurrency(2)
            .prefetch(0)
            .consumer_name("inspector-test"),
        move |job: Job<u32>| {
            let gate = gate.clone();
            async move {
                if *job.payload() < 2 {
                    gate.pass().await;
                }
                Err(JobError::permanent("for the dead letters"))
            }
        },
    );
    // Both slots held by the gated jobs: nothing else can be claimed, and
    // once the acks of earlier jobs are written, two stay pending.
    wait_for("both gated jobs run", || release.arrived() == 2).await;
    let pending = |report: &streamq::QueueReport| {
        report
            .consumers
            .iter()
            .find(|c| c.name == "inspector-test")
            .map(|c| c.pending)
    };
    eventually("two held", WAIT, || {
        let q = &queue;
        async move {
            let report = q.inspect(&HealthThresholds::default()).await.unwrap();
            report.in_flight() == 2 && pending(&report) == Some(2)
        }
    })
    .await;
    let report = queue.inspect(&HealthThresholds::default()).await.unwrap();
    assert_eq!(report.in_flight(), 2);
    assert_eq!(pending(&report), Some(2));
    release.release(2);
    eventually("all dead", WAIT, || {
        let q = queue.clone();
        async move {
            q.inspect(&HealthThresholds::default())
                .await
                .unwrap()
                .dead_letters
                == 30
        }
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let health = queue.health(&HealthThresholds::default()).await;
    assert!(
        matches!(health, Health::Errors(ref r) if r[0].contains("30 dead letters")),
        "{health:?}"
    );
    assert_eq!(
        queue
            .health(&HealthThresholds::default().max_dead_letters(100))
            .await,
        Health::Healthy
    );

    redis.server.kill();
    assert_eq!(
        queue.health(&HealthThresholds::default()).await.as_str(),
        "unavailable"
    );
}

#[tokio::test]
async fn stalled_jobs_are_recovered_on_demand() {
    let redis = TestRedis::start();
    let queue = redis.queue("recover").await;
    for i in 0..10u32 {
        queue
            .enqueue(&i, &EnqueueOptions::new().priority(Priority::High))
            .await
            .unwrap();
    }
    // A worker with an hour-long lease claims everything, then vanishes.
    let (_stop, doomed) = spawn_worker(
        &queue,
        fast()
            .lease(Duration::from_secs(3600))
            .concurrency(5)
            .prefetch(5),
        |_: Job<u32>| async {
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    until_stats("held", &queue, |s| s.in_flight() == 10).await;
    doomed.abort();
    assert_eq!(
        queue
            .recover_stalled(Duration::from_secs(60))
            .await
            .unwrap()
            .recovered,
        0,
        "not idle long enough"
    );
    // Recovery takes entries idle at least 50 ms: wait until all ten are.
    eventually("all ten idle for 100 ms", WAIT, || {
        let r = &redis;
        let key = queue.keys().stream(Priority::High).to_owned();
        async move {
            let idle: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(&key)
                .arg(&["streamq", "IDLE", "100", "-", "+", "100"])
                .query_async(&mut r.raw().await)
                .await
                .unwrap();
            idle.len() == 10
        }
    })
    .await;
    let recovered = queue
        .recover_stalled(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!((recovered.recovered, recovered.lost), (10, 0));
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.waiting(), stats.in_flight()), (10, 0));

    let seen = Seen::default();
    let (stop, worker) = spawn_worker(
        &queue,
        fast().lease(Duration::from_secs(3600)),
        seen.handler::<u32>(),
    );
    wait_for("recovered jobs ran", || seen.len() == 10).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        queue.metrics().await.unwrap().by_priority[&Priority::High].reclaimed,
        10
    );
}

#[tokio::test]
async fn prometheus_text_parses_back_with_the_same_numbers() {
    let redis = TestRedis::start();
    let queue = redis.queue("scraped").await;
    for i in 0..5u32 {
        queue
            .enqueue(
                &i,
                &EnqueueOptions::new()
                    .priority(Priority::Critical)
                    .name("page: now"),
            )
            .await
            .unwrap();
    }
    queue
        .enqueue(&9u32, &EnqueueOptions::new().priority(Priority::Low))
        .await
        .unwrap();
    let (stop, worker) = spawn_worker(&queue, fast(), |job: Job<u32>| async move {
        if *job.payload() == 9 {
            Err(JobError::permanent("no"))
        } else {
            Ok(())
        }
    });
    until_metrics("done", &queue, |m| {
        m.total().completed == 5 && m.total().dead_lettered == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    queue
        .enqueue(&7u32, &EnqueueOptions::new().priority(Priority::High))
        .await
        .unwrap();

    let text = queue
        .prometheus(&HealthThresholds::default())
        .await
        .unwrap();
    // prometheus-parse splits labels naively and never unescapes, so this
    // test avoids quotes in names; escaping is unit-tested in prometheus.rs.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(
        value("streamq_jobs_completed_total", &[("priority", "critical")]),
        5.0
    );
    assert_eq!(
        value("streamq_jobs_dead_lettered_total", &[("priority", "low")]),
        1.0
    );
    assert_eq!(value("streamq_jobs_waiting", &[("priority", "high")]), 1.0);
    assert_eq!(value("streamq_dead_letters", &[]), 1.0);
    assert_eq!(value("streamq_health", &[("status", "errors")]), 1.0);
    assert_eq!(
        value(
            "streamq_jobs_by_name_completed_total",
            &[("name", "page: now")]
        ),
        5.0
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "streamq_job_run_seconds" && s.labels.get("name") == Some("page: now")
        })
        .expect("run histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(
                buckets.last().unwrap().count,
                5.0,
                "+Inf bucket holds every run"
            );
        }
        other => panic!("{other:?}"),
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("streamq_"), "{name}");
        if line.ends_with("counter") {
            assert!(name.ends_with("_total"), "counter {name} lacks _total");
        }
    }
}

#[tokio::test]
async fn the_trace_context_and_spans_reach_the_consumer() {
    let redis = TestRedis::start();
    let queue = redis.queue("traced").await;
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    queue
        .enqueue(&1u8, &EnqueueOptions::new().traceparent(parent))
        .await
        .unwrap();
    let got = Arc::new(Mutex::new(None));
    let slot = got.clone();
    let (stop, worker) = spawn_worker(&queue, fast(), move |job: Job<u8>| {
        let slot = slot.clone();
        async move {
            let span = tracing::Span::current();
            *slot.lock().unwrap() = Some((
                job.traceparent().map(str::to_owned),
                span.metadata().map(|m| m.name()),
            ));
            Ok(())
        }
    });
    wait_for("ran", || got.lock().unwrap().is_some()).await;
    stop.cancel();
    worker.await.unwrap();
    let (traceparent, span) = got.lock().unwrap().clone().unwrap();
    assert_eq!(traceparent.as_deref(), Some(parent));
    assert_eq!(
        span,
        Some("streamq.process"),
        "the handler runs inside the process span"
    );
}
