//! `streamq::http` against a real server on a free port and a real Redis:
//! every endpoint, every error status, seed 001's shapes, tokens and
//! read-only, coalescing, graceful shutdown and history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::{TestServer, client};
use streamq::http::{HttpConfig, serve};
use streamq::{JobError, JobTracking, Priority, Queue, WorkerConfig};
use support::{TestRedis, eventually, spawn_worker};

const WAIT: Duration = Duration::from_secs(20);

async fn started(redis: &TestRedis, config: HttpConfig) -> TestServer {
    let queue = redis
        .open(Queue::builder("alerts").track_jobs(JobTracking::default()))
        .await;
    TestServer::start(queue, config.history(None)).await
}

async fn post(url: &str, body: &str) -> (StatusCode, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = client().get(url).send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_in_redis_before_the_202_with_seed_001s_priorities() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let keys = server.queue.keys().clone();
    let cases = [
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("error", Priority::High),
        ("warning", Priority::Medium),
        ("medium", Priority::Medium),
        ("low", Priority::Low),
        ("info", Priority::Low),
    ];
    let mut expected = [0u64; 4];
    for (severity, priority) in cases {
        let body = json!({"title": "disk", "severity": severity, "source": "s1", "tenant": "t1"});
        let (status, reply) = post(&server.at("/api/alerts/event"), &body.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        assert_eq!(reply["status"], "queued");
        let id = reply["alert_id"].as_str().expect("an alert id");
        assert!(!id.is_empty());
        // No waiting: the job is in its stream when the 202 arrives.
        expected[priority as usize] += 1;
        for p in Priority::ALL {
            assert_eq!(
                redis.len(keys.stream(p)).await,
                expected[p as usize],
                "{severity} -> {p}"
            );
        }
        let job = server.queue.job(id).await.unwrap().expect("tracked");
        assert_eq!(job.name, "alert");
    }
    // Missing severity: low.
    let (status, _) = post(&server.at("/api/alerts/event"), r#"{"title":"x"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(redis.len(keys.stream(Priority::Low)).await, 3);

    // A body id is the idempotency key: the second post adds nothing.
    let body = r#"{"id":"evt-42","severity":"critical"}"#;
    let (_, first) = post(&server.at("/api/alerts/event"), body).await;
    let (status, second) = post(&server.at("/api/alerts/event"), body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["alert_id"], second["alert_id"]);
    assert_eq!(redis.len(keys.stream(Priority::Critical)).await, 2);

    // The payload is the alert as posted, source and tenant included.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let (stop, worker) = spawn_worker(
        &server.queue,
        WorkerConfig::new(),
        move |job: streamq::Job<Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(job.into_payload());
                Ok::<(), JobError>(())
            }
        },
    );
    eventually("every alert processed", WAIT, || async {
        seen.lock().unwrap().len() == 9
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let payloads = seen.lock().unwrap().clone();
    assert!(
        payloads
            .iter()
            .any(|p| p["source"] == "s1" && p["tenant"] == "t1" && p["title"] == "disk")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_jobs_and_batches_as_json_arrays_and_ndjson() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let keys = server.queue.keys().clone();
    let job = json!({
        "name": "send:email", "payload": {"to": "a@b"}, "priority": "high",
        "attempts": 5, "idempotency_key": "k1"
    });
    let (status, reply) = post(&server.at("/api/queues/alerts/jobs"), &job.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(redis.len(keys.stream(Priority::High)).await, 1);
    let info = server
        .queue
        .job(reply["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.name, "send:email");

    let delayed = json!({"name": "later", "delay_ms": 60_000});
    let (status, _) = post(&server.at("/api/queues/alerts/jobs"), &delayed.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(redis.len(keys.delayed()).await, 1);

    let array: Vec<Value> = (0..3000)
        .map(|i| json!({"severity": if i % 2 == 0 { "critical" } else { "low" }, "n": i}))
        .collect();
    let (status, reply) = post(
        &server.at("/api/alerts/batch"),
        &Value::Array(array).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["count"], 3000);
    assert_eq!(reply["ids"].as_array().unwrap().len(), 3000);
    assert_eq!(redis.len(keys.stream(Priority::Critical)).await, 1500);
    assert_eq!(redis.len(keys.stream(Priority::Low)).await, 1500);

    let ndjson =
        "{\"name\":\"a\",\"priority\":\"medium\"}\n\n{\"name\":\"b\",\"priority\":\"critical\"}\n";
    let (status, reply) = post(&server.at("/api/queues/alerts/jobs/batch"), ndjson).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["count"], 2);
    assert_eq!(redis.len(keys.stream(Priority::Medium)).await, 1);

    // One bad item refuses the whole batch: nothing half-written.
    let bad = "{\"name\":\"a\"}\n{\"name\":\"b\",\"priority\":\"urgent\"}\n";
    let (status, reply) = post(&server.at("/api/queues/alerts/jobs/batch"), bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("item 1"));
    assert_eq!(redis.len(keys.stream(Priority::Medium)).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_a_precise_status() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new().body_limit(1024)).await;
    let cases: Vec<(&str, &str, String, StatusCode)> = vec![
        (
            "POST",
            "/api/alerts/event",
            "not json".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/alerts/event",
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/alerts/event",
            "\"text\"".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/alerts/event",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/alerts/event",
            format!("{{\"big\":\"{}\"}}", "x".repeat(2000)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/api/queues/alerts/jobs",
            r#"{"priority":"urgent"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/queues/alerts/jobs",
            r#"{"attempts":"many"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/queues/alerts/jobs",
            r#"{"attempts":0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/queues/alerts/jobs",
            r#"{"surprise":1}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/queues/alerts/jobs",
            format!(r#"{{"idempotency_key":"{}"}}"#, "k".repeat(600)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/api/queues/other/jobs",
            "{}".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/alerts/batch",
            "[]".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/alerts/batch",
            "{}\nnope".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/alerts/event",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            "/api/nothing/here",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/admin/dead-letters/nope",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/admin/dead-letters?after=x",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/admin/dead-letters?count=-1",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/admin/dead-letters/1-1",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/admin/dead-letters/1-1/retry",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            "/api/admin/dead-letters/1-1",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/admin/jobs/unknown",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/admin/history?since_ms=soon",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/assets/missing.js",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, body, expected) in cases {
        let request = client()
            .request(method.parse().unwrap(), server.at(path))
            .body(body.clone());
        let response = request.send().await.expect("request");
        let status = response.status();
        let reply: Value = response.json().await.expect("a JSON error body");
        assert_eq!(status, expected, "{method} {path} {body:.40}: {reply}");
        assert!(reply["error"].is_string(), "{method} {path}: {reply}");
    }
    // Nothing was enqueued by any of them.
    assert_eq!(server.queue.stats().await.unwrap().enqueued(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_an_out_of_memory_redis_and_an_absent_one_are_503s() {
    let redis = TestRedis::start();
    let queue = redis.open(Queue::builder("alerts").max_backlog(2)).await;
    let server = TestServer::start(queue, HttpConfig::new().history(None)).await;
    let url = server.at("/api/alerts/event");
    for _ in 0..2 {
        assert_eq!(post(&url, "{}").await.0, StatusCode::ACCEPTED);
    }
    let response = client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let reply: Value = response.json().await.unwrap();
    assert!(reply["error"].as_str().unwrap().contains("full"), "{reply}");

    // Out of memory: nothing fits any more.
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut raw)
        .await
        .unwrap();
    let job_url = server.at("/api/queues/alerts/jobs");
    let response = client().post(&job_url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let reply: Value = response.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("memory"),
        "{reply}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut raw)
        .await
        .unwrap();

    // Redis gone: 503 for ingestion and readiness; health says so in 200.
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut raw)
        .await;
    let response = client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = get(&server.at("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, health) = get(&server.at("/api/admin/queue/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["redis_available"], false);
    assert_eq!(health["queue_status"], "unavailable");
    let (status, _) = get(&server.at("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_has_seed_001s_shape_and_follows_the_queue() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    for severity in ["critical", "high", "high", "low"] {
        let body = json!({ "severity": severity }).to_string();
        post(&server.at("/api/alerts/event"), &body).await;
    }
    let (status, health) = get(&server.at("/api/admin/queue/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["redis_available"], true);
    // Jobs wait and no worker is there to take them.
    assert_eq!(health["queue_status"], "stalled");
    let m = &health["metrics"];
    for (field, value) in [
        ("queue_length:critical", 1),
        ("queue_length:high", 2),
        ("queue_length:medium", 0),
        ("queue_length:low", 1),
        ("processing_queue_length", 0),
        ("dead_letter_queue_length", 0),
        ("total_enqueued", 4),
        ("total_dequeued", 0),
        ("successfully_processed", 0),
        ("processing_failures", 0),
    ] {
        assert_eq!(m[field], value, "{field} in {health}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_admin_api_and_optionally_ingestion() {
    let redis = TestRedis::start();
    let config = HttpConfig::new().token("admin-secret");
    let server = started(&redis, config).await;
    let http = client();
    // Ingestion is open without an ingest token.
    assert_eq!(
        post(&server.at("/api/alerts/event"), "{}").await.0,
        StatusCode::ACCEPTED
    );
    for path in [
        "/api/admin/queue/health",
        "/api/admin/overview",
        "/api/admin/dead-letters",
    ] {
        let response = http.get(server.at(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let wrong = http
            .get(server.at(path))
            .bearer_auth("admin-secreT")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        let right = http
            .get(server.at(path))
            .bearer_auth("admin-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK, "{path}");
    }
    let pause = http
        .post(server.at("/api/admin/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), StatusCode::UNAUTHORIZED);
    assert!(!server.queue.is_paused().await.unwrap());
    // The page, probes and metrics hold no job data and stay open.
    for path in ["/", "/assets/app.js", "/healthz", "/readyz", "/metrics"] {
        let response = http.get(server.at(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;

    let config = HttpConfig::new().token("admin-secret").ingest_token("in");
    let server = started(&redis, config).await;
    let url = server.at("/api/alerts/event");
    let none = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    for token in ["in", "admin-secret"] {
        let ok = http
            .post(&url)
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::ACCEPTED, "{token}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_every_change_and_serves_reads() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new().read_only(true)).await;
    let http = client();
    for (method, path) in [
        ("POST", "/api/alerts/event"),
        ("POST", "/api/alerts/batch"),
        ("POST", "/api/queues/alerts/jobs"),
        ("POST", "/api/queues/alerts/jobs/batch"),
        ("POST", "/api/admin/pause"),
        ("POST", "/api/admin/resume"),
        ("POST", "/api/admin/queue/recover-stalled"),
        ("POST", "/api/admin/dead-letters/retry-all"),
        ("POST", "/api/admin/dead-letters/purge"),
        ("POST", "/api/admin/dead-letters/1-1/retry"),
        ("DELETE", "/api/admin/dead-letters/1-1"),
    ] {
        let response = http
            .request(method.parse().unwrap(), server.at(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert_eq!(server.queue.stats().await.unwrap().enqueued(), 0);
    assert!(!server.queue.is_paused().await.unwrap());
    for path in [
        "/api/admin/queue/health",
        "/api/admin/stats",
        "/api/admin/inspect",
        "/api/admin/metrics",
        "/api/admin/history",
        "/api/admin/dead-letters",
    ] {
        assert_eq!(get(&server.at(path)).await.0, StatusCode::OK, "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_a_token_is_refused() {
    let redis = TestRedis::start();
    let queue = redis.queue("alerts").await;
    let addr = "0.0.0.0:0".parse().unwrap();
    let refused = serve(queue, HttpConfig::new(), addr, async {}).await;
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("without a token"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_does_what_the_cli_does() {
    let redis = TestRedis::start();
    let queue = redis
        .open(
            Queue::builder("alerts")
                .max_attempts(1)
                .track_jobs(JobTracking::default()),
        )
        .await;
    let server = TestServer::start(queue.clone(), HttpConfig::new().history(None)).await;
    let http = client();

    // Three jobs that fail once: three dead letters.
    for n in 0..3 {
        let body = json!({"name": "flaky", "payload": {"n": n, "text": "x".repeat(500)}});
        post(&server.at("/api/queues/alerts/jobs"), &body.to_string()).await;
    }
    let (stop, worker) = spawn_worker(
        &queue,
        WorkerConfig::new(),
        |_job: streamq::Job<Value>| async { Err::<(), _>(JobError::retry("downstream said no")) },
    );
    eventually("three dead letters", WAIT, || async {
        queue.stats().await.unwrap().dead_letters == 3
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    let (status, page) = get(&server.at("/api/admin/dead-letters?count=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 3);
    let letters = page["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2);
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("downstream said no")
    );
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["name"], "flaky");
    let preview = letters[0]["payload_preview"].as_str().unwrap();
    // Letters are in the order the worker finished them, not posted.
    assert!(preview.starts_with("{\"n\":"), "{preview}");
    assert!(preview.chars().count() <= 201, "{preview}");
    let next = page["next"].as_str().unwrap();
    let (_, rest) = get(&server.at(&format!("/api/admin/dead-letters?after={next}"))).await;
    assert_eq!(rest["letters"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next"], Value::Null);

    let first = letters[0]["id"].as_str().unwrap().to_owned();
    let second = letters[1]["id"].as_str().unwrap().to_owned();
    let (status, one) = get(&server.at(&format!("/api/admin/dead-letters/{first}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["payload"]["text"].as_str().map(str::len), Some(500));
    assert!(preview.starts_with(&format!("{{\"n\":{}", one["payload"]["n"])));

    // The job by id: dead-lettered, with its error.
    let job_id = one["job_id"].as_str().unwrap();
    let (status, job) = get(&server.at(&format!("/api/admin/jobs/{job_id}"))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "dead_lettered");
    assert_eq!(job["attempts"], 1);
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("downstream said no"),
        "{job}"
    );

    // Retry one: it leaves the dead letters and waits again.
    let (status, reply) = post(
        &server.at(&format!("/api/admin/dead-letters/{first}/retry")),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(queue.stats().await.unwrap().dead_letters, 2);
    assert_eq!(queue.stats().await.unwrap().waiting(), 1);
    // Delete one.
    let deleted = http
        .delete(server.at(&format!("/api/admin/dead-letters/{second}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(queue.stats().await.unwrap().dead_letters, 1);
    // Retry all, then purge what is left (nothing).
    let (_, reply) = post(&server.at("/api/admin/dead-letters/retry-all"), "").await;
    assert_eq!(reply["requeued"], 1);
    assert_eq!(queue.stats().await.unwrap().waiting(), 2);
    let (_, reply) = post(&server.at("/api/admin/dead-letters/purge"), "").await;
    assert_eq!(reply["deleted"], 0);

    // Pause and resume.
    let (status, _) = post(&server.at("/api/admin/pause"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(queue.is_paused().await.unwrap());
    let (_, overview) = get(&server.at("/api/admin/overview")).await;
    assert_eq!(overview["paused"], true);
    post(&server.at("/api/admin/resume"), "").await;
    assert!(!queue.is_paused().await.unwrap());

    // A stalled job: claimed by a consumer that died.
    let stream = queue.stream_key(Priority::Medium).to_owned();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("streamq")
        .arg("dead-worker")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis.raw().await)
        .await
        .unwrap();
    let (_, inspect) = get(&server.at("/api/admin/inspect")).await;
    assert_eq!(inspect["in_flight"], 1);
    let (status, reply) = post(&server.at("/api/admin/queue/recover-stalled?idle_ms=0"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["recovered_alerts"], 1);
    let (_, inspect) = get(&server.at("/api/admin/inspect")).await;
    assert_eq!(inspect["in_flight"], 0);

    // Stats, metrics and Prometheus text.
    let (_, stats) = get(&server.at("/api/admin/stats")).await;
    assert_eq!(stats["waiting"], 2);
    let (_, metrics) = get(&server.at("/api/admin/metrics")).await;
    assert_eq!(metrics["total"]["failed"], 3);
    assert_eq!(metrics["by_name"]["flaky"]["dead_lettered"], 3);
    let text = http
        .get(server.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("streamq_"), "{text}");
    let (status, _) = get(&server.at("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_alerts_share_script_calls() {
    let redis = TestRedis::start();
    let config = HttpConfig::new()
        .coalesce_jobs(1000)
        .coalesce_wait(Duration::from_millis(100));
    let server = started(&redis, config).await;
    let calls_before = redis.command_calls("evalsha").await;
    let url = server.at("/api/alerts/event");
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &json!({"n": i}).to_string()).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for request in requests {
        let (status, reply) = request.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.insert(reply["alert_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(server.queue.stats().await.unwrap().enqueued(), 200);
    let calls = redis.command_calls("evalsha").await - calls_before;
    assert!(calls < 200, "{calls} script calls for 200 requests");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_drops_nothing_it_accepted() {
    let redis = TestRedis::start();
    let mut server = started(&redis, HttpConfig::new()).await;
    let url = server.at("/api/alerts/event");
    let requests: Vec<_> = (0..300)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(&url)
                    .body(json!({ "n": i }).to_string())
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    // Stop once the first alert is in Redis, with requests in flight.
    let queue = server.queue.clone();
    eventually("a first alert", WAIT, || async {
        queue.stats().await.unwrap().enqueued() > 0
    })
    .await;
    server.begin_stop();
    let mut accepted = 0;
    for request in requests {
        // An error is a request refused or cut before being read: never
        // answered 202.
        if let Ok(status) = request.await.unwrap() {
            assert_eq!(status, StatusCode::ACCEPTED);
            accepted += 1;
        }
    }
    assert!(accepted > 0);
    assert_eq!(queue.stats().await.unwrap().enqueued(), accepted);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_one_point_per_step_across_servers_and_survives_them() {
    let redis = TestRedis::start();
    let step = Duration::from_secs(1);
    let config = HttpConfig::new().history(Some((step, Duration::from_secs(3600))));
    let a = TestServer::start(redis.queue("alerts").await, config.clone()).await;
    let b = TestServer::start(redis.queue("alerts").await, config.clone()).await;
    let queue = a.queue.clone();
    eventually("two history points", WAIT, || async {
        queue.history(None, 100).await.unwrap().len() >= 2
    })
    .await;
    for i in 0..5 {
        post(&a.at("/api/alerts/event"), &json!({ "n": i }).to_string()).await;
    }
    eventually("a point that saw the alerts", WAIT, || async {
        let (_, h) = get(&b.at("/api/admin/history")).await;
        h["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["enqueued"] == 5 && p["waiting"]["low"] == 5)
    })
    .await;
    a.stop().await;
    b.stop().await;

    let before = queue.history(None, 1000).await.unwrap();
    let mut steps: Vec<u64> = before.iter().map(|p| p.at_ms).collect();
    assert!(steps.iter().all(|ms| ms % 1000 == 0), "{steps:?}");
    let n = steps.len();
    steps.dedup();
    assert_eq!(steps.len(), n, "one point per step");
    // The throughput between points is in the answer.
    let c = TestServer::start(redis.queue("alerts").await, config).await;
    let (_, h) = get(&c.at("/api/admin/history")).await;
    let points = h["points"].as_array().unwrap();
    assert!(
        points.len() >= before.len(),
        "the history outlived its servers"
    );
    let added: u64 = points
        .iter()
        .filter_map(|p| p["throughput"]["enqueued"].as_u64())
        .sum();
    assert_eq!(added, 5);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamq_serve_stops_on_sigterm_keeping_what_it_accepted() {
    let redis = TestRedis::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamq"))
        .args(["serve", "--queue", "alerts", "--history-step-secs", "0"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STREAMQ_REDIS_URL", redis.server.url())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("streamq serve starts");
    let pid = child.id();
    // Killed if the test fails before it exits by itself.
    let _guard = KillOnDrop(pid);
    let base = format!("http://127.0.0.1:{port}");
    eventually("the server to answer", WAIT, || async {
        client().get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    let url = format!("{base}/api/alerts/event");
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(&url)
                    .body(json!({ "n": i }).to_string())
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    let queue = redis.queue("alerts").await;
    eventually("a first alert", WAIT, || async {
        queue.stats().await.unwrap().enqueued() > 0
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut accepted = 0;
    for request in requests {
        if let Ok(status) = request.await.unwrap() {
            assert_eq!(status, StatusCode::ACCEPTED);
            accepted += 1;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(accepted > 0);
    assert_eq!(queue.stats().await.unwrap().enqueued(), accepted);
}

/// Sends SIGKILL to a process id when dropped (after a clean exit, to no one).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}
