//! The admin API's job-lifecycle routes against a real server and Redis:
//! schedules listed, created, updated and removed; jobs cancelled while
//! waiting, delayed or running; tokens and read-only on each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod server;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::{TestServer, client};
use streamq::http::HttpConfig;
use streamq::{EnqueueOptions, Job, JobError, Queue, Scheduler, Timing};
use support::{Seen, TestRedis, WAIT, eventually, fast, spawn_worker, until_stats, wait_for};

async fn started(redis: &TestRedis, config: HttpConfig) -> TestServer {
    // Tracked, so that a cancelled job can be looked up afterwards.
    let queue = redis
        .open(Queue::builder("alerts").track_jobs(streamq::JobTracking::default()))
        .await;
    TestServer::start(queue, config.history(None)).await
}

/// A request with an optional JSON body; the status and the body as JSON.
async fn call(method: Method, url: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_created_updated_and_removed() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let probe = server.at("/api/admin/schedules/probe");
    let body = r#"{"every_ms": 60000, "payload": {"host": "db-1"}, "name": "ping",
                   "priority": "high", "max_attempts": 2, "rate_group": "t1"}"#;

    let (status, created) = call(Method::PUT, &probe, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["id"], &created["change"]),
        (&json!("probe"), &json!("created"))
    );
    assert!(created["next_due_ms"].as_u64().unwrap() > 0);
    let (status, same) = call(Method::PUT, &probe, Some(body)).await;
    assert_eq!(
        (status, &same["change"]),
        (StatusCode::OK, &json!("unchanged"))
    );
    let changed = body.replace("60000", "30000");
    let (status, updated) = call(Method::PUT, &probe, Some(&changed)).await;
    assert_eq!(
        (status, &updated["change"]),
        (StatusCode::OK, &json!("updated"))
    );
    let digest =
        r#"{"cron": "0 9 * * MON-FRI", "time_zone": "Europe/Paris", "catch_up": "run_once"}"#;
    let (status, _) = call(
        Method::PUT,
        &server.at("/api/admin/schedules/digest"),
        Some(digest),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, list) = call(Method::GET, &server.at("/api/admin/schedules"), None).await;
    assert_eq!(status, StatusCode::OK);
    let list = list["schedules"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let by_id = |id: &str| list.iter().find(|s| s["id"] == id).unwrap().clone();
    let digest = by_id("digest");
    assert_eq!(
        (
            &digest["cron"],
            &digest["time_zone"],
            &digest["catch_up"],
            &digest["priority"]
        ),
        (
            &json!("0 9 * * MON-FRI"),
            &json!("Europe/Paris"),
            &json!("run_once"),
            &json!("medium")
        )
    );
    assert_eq!(digest.get("every_ms"), None);
    let probe_listed = by_id("probe");
    assert_eq!(probe_listed["every_ms"], 30_000);
    assert_eq!(probe_listed["name"], "ping");
    assert_eq!(probe_listed["priority"], "high");
    assert_eq!(probe_listed["max_attempts"], 2);
    assert_eq!(probe_listed["rate_group"], "t1");
    assert_eq!(probe_listed["catch_up"], "skip");
    assert_eq!(probe_listed["next_due_ms"], updated["next_due_ms"]);
    // What the library sees is what the API saved.
    let saved = server.queue.schedules().await.unwrap();
    let saved_probe = saved.iter().find(|s| s.schedule.id() == "probe").unwrap();
    assert_eq!(
        saved_probe.schedule.timing(),
        &Timing::Every(Duration::from_secs(30))
    );

    let (status, removed) = call(Method::DELETE, &probe, None).await;
    assert_eq!(
        (status, &removed["removed"]),
        (StatusCode::OK, &json!(true))
    );
    let (status, again) = call(Method::DELETE, &probe, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(again["error"], "no schedule \"probe\"");
    assert_eq!(server.queue.schedules().await.unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_carries_the_payload_given_over_http() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let body = r#"{"every_ms": 20, "payload": {"host": "db-1", "n": [1, 2]}, "name": "tick"}"#;
    let (status, _) = call(
        Method::PUT,
        &server.at("/api/admin/schedules/fast"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    let (stop, worker) = spawn_worker(&server.queue, fast(), move |job: Job<Value>| {
        let record = record.clone();
        async move {
            record
                .lock()
                .unwrap()
                .push((job.name().to_owned(), job.payload().clone()));
            Ok::<(), JobError>(())
        }
    });
    let scheduler = Scheduler::new(&server.queue);
    eventually("a tick enqueued", WAIT, || async {
        scheduler.run_once().await.unwrap().enqueued > 0
    })
    .await;
    wait_for("the job ran", || !got.lock().unwrap().is_empty()).await;
    stop.cancel();
    worker.await.unwrap();
    let (name, payload) = got.lock().unwrap()[0].clone();
    assert_eq!(name, "tick");
    assert_eq!(payload, json!({"host": "db-1", "n": [1, 2]}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_get_a_json_error_and_a_precise_status() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let url = server.at("/api/admin/schedules/s1");
    for (body, status, says) in [
        (
            r#"{"every_ms": 1000, "cron": "* * * * *"}"#,
            422,
            "exactly one of every_ms",
        ),
        (r#"{"payload": 1}"#, 422, "exactly one of every_ms"),
        (r#"{"every_ms": 0}"#, 422, "every_ms must be at least 1"),
        (r#"{"cron": "61 * * * *"}"#, 422, "61 * * * *"),
        (
            r#"{"cron": "0 9 * * *", "time_zone": "Mars/Olympus"}"#,
            422,
            "Mars/Olympus",
        ),
        (
            r#"{"every_ms": 1000, "priority": "urgent"}"#,
            422,
            "unknown priority",
        ),
        (
            r#"{"every_ms": 1000, "catch_up": "always"}"#,
            422,
            "catch_up \"always\"",
        ),
        (
            r#"{"every_ms": 1000, "colour": "red"}"#,
            422,
            "unknown field `colour`",
        ),
        (
            r#"{"every_ms": 1000, "rate_group": "a b"}"#,
            422,
            "rate group",
        ),
        (r#"{"every_ms": "#, 400, ""),
    ] {
        let (got, answer) = call(Method::PUT, &url, Some(body)).await;
        assert_eq!(got.as_u16(), status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: {error}");
    }
    let (got, answer) = call(
        Method::PUT,
        &server.at("/api/admin/schedules/has%20space"),
        Some(r#"{"every_ms": 1000}"#),
    )
    .await;
    assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("schedule id"),
        "{answer}"
    );
    let no_type = client()
        .put(&url)
        .body(r#"{"every_ms": 1000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        server.queue.schedules().await.unwrap().is_empty(),
        "nothing saved"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_removes_waiting_and_delayed_jobs_and_asks_running_ones_to_stop() {
    let redis = TestRedis::start();
    let server = started(&redis, HttpConfig::new()).await;
    let queue = server.queue.clone();
    let waiting = queue.enqueue(&1u32, &EnqueueOptions::new()).await.unwrap();
    let later = EnqueueOptions::new().delay(Duration::from_secs(3600));
    let delayed = queue.enqueue(&2u32, &later).await.unwrap();
    let cancel = |id: &str| server.at(&format!("/api/admin/jobs/{id}/cancel"));

    let (status, body) = call(Method::POST, &cancel(waiting.as_str()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"id": waiting.as_str(), "outcome": "removed", "from": "waiting", "priority": "medium"})
    );
    let job = server.at(&format!("/api/admin/jobs/{waiting}"));
    let (status, body) = call(Method::GET, &job, None).await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &json!("cancelled")),
        "{body}"
    );
    let (status, body) = call(Method::POST, &cancel(delayed.as_str()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["outcome"], &body["from"]),
        (&json!("removed"), &json!("delayed"))
    );
    assert!(body["due_ms"].as_u64().unwrap() > 0);
    let (status, body) = call(Method::POST, &cancel(waiting.as_str()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"],
        format!(
            "no waiting, delayed or running job {waiting}: it finished already, or the id is unknown"
        )
    );
    assert_eq!(queue.stats().await.unwrap().waiting(), 0);
    assert_eq!(queue.stats().await.unwrap().delayed, 0);

    // A running job is asked to stop, and ends in the dead letters.
    let running = queue.enqueue(&3u32, &EnqueueOptions::new()).await.unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    let (stop, worker) = spawn_worker(
        &queue,
        fast().lease(Duration::from_millis(1500)),
        move |job: Job<u32>| {
            let record = record.clone();
            async move {
                record.record(job.id());
                job.stopped().await;
                Err(JobError::retry("stopped as asked"))
            }
        },
    );
    wait_for("the job runs", || seen.len() == 1).await;
    let (status, body) = call(Method::POST, &cancel(running.as_str()), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (&body["outcome"], &body["priority"]),
        (&json!("stop_requested"), &json!("medium"))
    );
    assert!(!body["entry_id"].as_str().unwrap().is_empty());
    until_stats("the stopped job is dead-lettered", &queue, |s| {
        s.dead_letters == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let letter = queue.dead_letters(None, 1).await.unwrap().letters.remove(0);
    assert_eq!(
        (letter.job_id, letter.error.as_str()),
        (running, "cancelled: stopped as asked")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_read_only_guard_the_lifecycle_routes() {
    let redis = TestRedis::start();
    let routes = [
        (Method::GET, "/api/admin/schedules", None),
        (
            Method::PUT,
            "/api/admin/schedules/s1",
            Some(r#"{"every_ms": 1000}"#),
        ),
        (Method::DELETE, "/api/admin/schedules/s1", None),
        (Method::POST, "/api/admin/jobs/j1/cancel", None),
    ];
    let server = started(&redis, HttpConfig::new().token("admin-secret")).await;
    for (method, path, body) in &routes {
        let (status, answer) = call(method.clone(), &server.at(path), *body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {answer}"
        );
    }
    let with_token = client()
        .put(server.at("/api/admin/schedules/s1"))
        .bearer_auth("admin-secret")
        .header("content-type", "application/json")
        .body(r#"{"every_ms": 1000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::CREATED);
    server.stop().await;

    let server = started(&redis, HttpConfig::new().read_only(true)).await;
    for (method, path, body) in &routes[1..] {
        let (status, answer) = call(method.clone(), &server.at(path), *body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    let (status, list) = call(Method::GET, &server.at("/api/admin/schedules"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["schedules"][0]["id"], "s1", "reads still work: {list}");
    assert_eq!(
        server.queue.schedules().await.unwrap().len(),
        1,
        "nothing removed"
    );
    server.stop().await;
}
