//! Ingestion: the alert endpoint, generic jobs, and batches of either
//! as a JSON array or NDJSON. Every job is answered `202` only after Redis
//! acknowledged it; a batch is checked whole before anything is sent.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::Error;
use crate::http::AppState;
use crate::http::config::HttpConfig;
use crate::http::error::ApiError;
use crate::http::payload::Payload;
use crate::priority::Priority;
use crate::producer::EnqueueOptions;

/// The job name alerts are enqueued under.
pub(crate) const ALERT_JOB_NAME: &str = "alert";

/// A body the extractor refused: over the limit (`413`) or unreadable.
fn rejected(rejection: &BytesRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}

/// The body as one JSON object, or `400`.
fn object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request("body must be a JSON object"))
    }
}

/// The fields of an alert that decide how it is enqueued; the rest is
/// passed through untouched.
#[derive(Debug, Default, Deserialize)]
struct AlertHead {
    #[serde(default)]
    severity: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
}

/// Checks that `json` is one JSON object and reads its head, or `400`.
fn alert_head(json: &[u8]) -> Result<AlertHead, ApiError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
                Ok(_) => ApiError::bad_request("body must be a JSON object"),
                Err(e) => ApiError::bad_request(format!("body is not JSON: {e}")),
            },
        );
    }
    serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))
}

/// An alert's priority and options, as alert platforms map them: `severity`
/// `critical` -> critical; `high` or `error` -> high; `warning` or `medium`
/// -> medium; anything else or missing -> low. Its `id` (a string or a
/// number) is the idempotency key. The whole object is the payload, `source`
/// and `tenant` included.
fn alert_options(alert: &AlertHead, config: &HttpConfig) -> EnqueueOptions {
    let mut options = EnqueueOptions::new()
        .priority(alert_priority(alert.severity.as_ref()))
        .name(ALERT_JOB_NAME);
    let key = match &alert.id {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(key) = key {
        options = options.idempotency_key(key, config.idempotency_ttl);
    }
    options
}

/// The priority of an alert: its `severity` (a string) through
/// [`Priority::from_severity`], low for anything else.
fn alert_priority(severity: Option<&Value>) -> Priority {
    severity
        .and_then(Value::as_str)
        .map_or(Priority::Low, Priority::from_severity)
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// `POST /api/alerts/event`: one alert, any JSON object.
pub(crate) async fn alert(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| rejected(&r))?;
    let options = alert_options(&alert_head(&body)?, state.config());
    let id = state
        .queue()
        .enqueue_filling(&Payload::Raw(body), &options, state.config().fill())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            status: "queued",
            alert_id: id.as_str(),
        }),
    )
        .into_response())
}

/// The answer to one alert, serialized without building a tree.
#[derive(serde::Serialize)]
struct Queued<'a> {
    alert_id: &'a str,
    status: &'static str,
}

/// A generic job as the job endpoints take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    payload: Value,
    priority: Option<String>,
    delay_ms: Option<u64>,
    run_at_ms: Option<u64>,
    attempts: Option<u32>,
    timeout_ms: Option<u64>,
    idempotency_key: Option<String>,
}

impl JobRequest {
    fn parse(value: Value, config: &HttpConfig) -> Result<(Payload, EnqueueOptions), ApiError> {
        let job: JobRequest = serde_json::from_value(value)
            .map_err(|e| ApiError::unprocessable(format!("invalid job: {e}")))?;
        let priority = match &job.priority {
            Some(p) => p.parse::<Priority>()?,
            None => Priority::default(),
        };
        let mut options = EnqueueOptions::new().priority(priority).name(job.name);
        if let Some(attempts) = job.attempts {
            if attempts == 0 {
                return Err(ApiError::unprocessable("attempts must be at least 1"));
            }
            options = options.max_attempts(attempts);
        }
        match (job.delay_ms, job.run_at_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::unprocessable(
                    "give delay_ms or run_at_ms, not both",
                ));
            }
            (Some(ms), None) => options = options.delay(Duration::from_millis(ms)),
            (None, Some(ms)) => options = options.run_at(UNIX_EPOCH + Duration::from_millis(ms)),
            (None, None) => {}
        }
        if let Some(ms) = job.timeout_ms {
            options = options.timeout(Duration::from_millis(ms));
        }
        if let Some(key) = job.idempotency_key {
            options = options.idempotency_key(key, config.idempotency_ttl);
        }
        Ok((Payload::Tree(job.payload), options))
    }
}

/// The served queue, or `404` for another name.
fn check_queue(state: &AppState, queue: &str) -> Result<(), ApiError> {
    if queue == state.queue().name() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "this server serves queue {:?}, not {queue:?}",
            state.queue().name()
        )))
    }
}

/// `POST /api/queues/{queue}/jobs`: one job.
pub(crate) async fn job(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_queue(&state, &queue)?;
    let body = body.map_err(|r| rejected(&r))?;
    let (payload, options) = JobRequest::parse(object(&body)?, state.config())?;
    let id = state
        .queue()
        .enqueue_filling(&payload, &options, state.config().fill())
        .await?;
    Ok(accepted(json!({ "status": "queued", "id": id.as_str() })))
}

/// The items of a batch body, each a JSON object's text: a JSON array, or
/// one JSON value per line.
fn items(body: &[u8]) -> Result<Vec<&RawValue>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let items: Vec<&RawValue> = if first == Some(&b'[') {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("body is not a JSON array: {e}")))?
    } else {
        let mut items = Vec::new();
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let item = serde_json::from_slice(line)
                .map_err(|e| ApiError::bad_request(format!("line {} is not JSON: {e}", n + 1)))?;
            items.push(item);
        }
        items
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("the batch holds no job"));
    }
    if let Some(at) = items
        .iter()
        .position(|i| !i.get().trim_start().starts_with('{'))
    {
        return Err(ApiError::bad_request(format!(
            "item {at} is not a JSON object"
        )));
    }
    Ok(items)
}

/// Sends a checked batch and answers for all of it.
async fn send_batch(
    state: &AppState,
    jobs: Vec<(Payload, EnqueueOptions)>,
) -> Result<Response, ApiError> {
    let mut batch = state.queue().batch();
    for (at, (payload, options)) in jobs.iter().enumerate() {
        batch.push(payload, options).map_err(|e| {
            let mut error = ApiError::from(e);
            error.message = format!("item {at}: {}", error.message);
            error
        })?;
    }
    match batch.send().await {
        Ok(ids) => Ok(accepted(json!({
            "status": "queued",
            "count": ids.len(),
            "ids": ids.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        }))),
        Err(Error::PartialBatch { enqueued, source }) => {
            let error = ApiError::from(*source);
            let body = json!({
                "error": format!("batch partly enqueued: {}", error.message),
                "count": enqueued.len(),
                "ids": enqueued.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
            });
            let mut response = error.into_response();
            *response.body_mut() = axum::body::Body::from(body.to_string());
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/alerts/batch`: many alerts, each mapped as one alert is.
pub(crate) async fn alert_batch(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| rejected(&r))?;
    let mut jobs = Vec::new();
    for (at, alert) in items(&body)?.into_iter().enumerate() {
        let json = alert.get().as_bytes();
        let head = alert_head(json).map_err(|mut e| {
            e.message = format!("item {at}: {}", e.message);
            e
        })?;
        let options = alert_options(&head, state.config());
        jobs.push((Payload::Raw(body.slice_ref(json)), options));
    }
    send_batch(&state, jobs).await
}

/// `POST /api/queues/{queue}/jobs/batch`: many generic jobs.
pub(crate) async fn job_batch(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_queue(&state, &queue)?;
    let body = body.map_err(|r| rejected(&r))?;
    let mut jobs = Vec::new();
    for (at, item) in items(&body)?.into_iter().enumerate() {
        let value: Value = serde_json::from_str(item.get())
            .map_err(|e| ApiError::bad_request(format!("item {at} is not JSON: {e}")))?;
        let job = JobRequest::parse(value, state.config()).map_err(|mut e| {
            e.message = format!("item {at}: {}", e.message);
            e
        })?;
        jobs.push(job);
    }
    send_batch(&state, jobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_as_in_seed_001() {
        let cases = [
            (json!({"severity": "critical"}), Priority::Critical),
            (json!({"severity": "high"}), Priority::High),
            (json!({"severity": "error"}), Priority::High),
            (json!({"severity": "warning"}), Priority::Medium),
            (json!({"severity": "medium"}), Priority::Medium),
            (json!({"severity": "low"}), Priority::Low),
            (json!({"severity": "info"}), Priority::Low),
            (json!({"severity": 3}), Priority::Low),
            (json!({}), Priority::Low),
        ];
        for (alert, expected) in cases {
            let head = alert_head(alert.to_string().as_bytes()).expect("an object");
            assert_eq!(alert_priority(head.severity.as_ref()), expected, "{alert}");
        }
        assert!(alert_head(b"[1]").is_err());
        assert!(alert_head(b"{\"a\":").is_err());
        assert!(alert_head(b"{} trailing").is_err());
    }

    #[test]
    fn batch_bodies_are_arrays_or_ndjson() {
        assert_eq!(
            items(b" [{\"a\":1},{\"b\":2}]").map(|v| v.len()).ok(),
            Some(2)
        );
        assert_eq!(
            items(b"{\"a\":1}\n\n{\"b\":2}\n").map(|v| v.len()).ok(),
            Some(2)
        );
        let bad = items(b"{\"a\":1}\nnope\n").expect_err("line 2");
        assert!(bad.message.contains("line 2"), "{}", bad.message);
        assert_eq!(
            items(b"[1]").expect_err("not object").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            items(b"  ").expect_err("empty").status,
            StatusCode::BAD_REQUEST
        );
    }
}
