//! The admin API: everything the CLI can do, as JSON, plus the
//! orchestrators' probes and Prometheus text. Reads go through the
//! `admin_read` guard and changes through `admin_write` (see `auth`).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::cancel::Cancelled;
use crate::error::Error;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::json;
use crate::priority::Priority;
use crate::schedule::{CatchUp, Schedule, ScheduleChange};
use crate::time::now_ms;

type ApiResult = Result<Json<Value>, ApiError>;

/// Whether `id` is a stream entry id (`<ms>-<seq>`), checked before it
/// reaches Redis, which would answer a malformed one with an error.
fn entry_id(id: &str) -> Result<&str, ApiError> {
    let ok = match id.split_once('-') {
        Some((ms, seq)) => ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        None => false,
    };
    if ok {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!(
            "{id:?} is not a dead-letter id (<ms>-<seq>)"
        )))
    }
}

/// `GET /api/admin/queue/health`: the alert-platform shape. Answers `200` with
/// `redis_available: false` when Redis cannot be read, so monitors can tell.
pub(crate) async fn health(State(state): State<AppState>) -> Json<Value> {
    let queue = state.queue();
    let read = async {
        let report = queue.inspect(&state.config().thresholds).await?;
        let metrics = queue.metrics().await?;
        Ok::<_, crate::error::Error>(json::seed_health(&report, &metrics))
    };
    Json(match read.await {
        Ok(value) => value,
        Err(e) => json::unavailable_health(&e.to_string()),
    })
}

/// `GET /api/admin/overview`: what the dashboard shows, in one call.
pub(crate) async fn overview(State(state): State<AppState>) -> ApiResult {
    let queue = state.queue();
    let report = queue.inspect(&state.config().thresholds).await?;
    let metrics = queue.metrics().await?;
    let mut value = json::report(&report);
    value["metrics"] = json::metrics(&metrics);
    value["server"] = json!({
        "kind": queue.server().server,
        "version": queue.server().version.to_string(),
    });
    value["read_only"] = json!(state.config().read_only);
    value["partitions"] = json!(queue.partition_count());
    value["history_step_ms"] = json!(
        state
            .config()
            .history_settings()
            .map(|(step, _)| step.as_millis() as u64)
    );
    value["now_ms"] = json!(now_ms());
    Ok(Json(value))
}

/// `GET /api/admin/stats`.
pub(crate) async fn stats(State(state): State<AppState>) -> ApiResult {
    Ok(Json(json::stats(&state.queue().stats().await?)))
}

/// `GET /api/admin/inspect`.
pub(crate) async fn inspect(State(state): State<AppState>) -> ApiResult {
    let report = state.queue().inspect(&state.config().thresholds).await?;
    Ok(Json(json::report(&report)))
}

/// `GET /api/admin/metrics`: counters and latency as JSON.
pub(crate) async fn metrics(State(state): State<AppState>) -> ApiResult {
    Ok(Json(json::metrics(&state.queue().metrics().await?)))
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.queue().prometheus(&state.config().thresholds).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: Redis answers; `503` when it does not.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.queue().is_paused().await?;
    Ok(Json(json!({ "status": "ready" })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    since_ms: Option<u64>,
    count: Option<usize>,
}

/// The most history points one request returns.
const MAX_HISTORY_POINTS: usize = 10_000;

/// `GET /api/admin/history?since_ms=&count=`: by default the last 24 h.
pub(crate) async fn history(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = query
        .since_ms
        .unwrap_or_else(|| now_ms().saturating_sub(24 * 3600 * 1000));
    let count = query
        .count
        .unwrap_or(MAX_HISTORY_POINTS)
        .clamp(1, MAX_HISTORY_POINTS);
    let points = state.queue().history(Some(since), count).await?;
    let step = state.config().history_settings().map(|(step, _)| step);
    Ok(Json(json::history(&points, step)))
}

/// `GET /api/admin/jobs/{id}`: a tracked job.
pub(crate) async fn job(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::bad_request("a job id is 1 to 128 bytes"));
    }
    match state.queue().job(&id).await? {
        Some(info) => Ok(Json(info.to_json())),
        None => Err(ApiError::not_found(format!(
            "no job {id} (unknown, expired, or the queue does not track jobs)"
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    after: Option<String>,
    count: Option<usize>,
}

/// The most dead letters one page holds.
const MAX_PAGE: usize = 500;

/// `GET /api/admin/dead-letters?after=&count=`: a page, oldest first.
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = match &query.after {
        Some(id) => Some(entry_id(id)?),
        None => None,
    };
    let count = query.count.unwrap_or(50).clamp(1, MAX_PAGE);
    let page = state.queue().dead_letters(after, count).await?;
    let total = state.queue().stats().await?.dead_letters;
    Ok(Json(json!({
        "letters": page.letters.iter().map(|l| l.to_json(false)).collect::<Vec<_>>(),
        "next": page.next,
        "total": total,
    })))
}

/// `GET /api/admin/dead-letters/{id}`: one letter with its whole payload.
pub(crate) async fn dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    match state.queue().dead_letter(entry_id(&id)?).await? {
        Some(letter) => Ok(Json(letter.to_json(true))),
        None => Err(ApiError::not_found(format!("no dead letter {id}"))),
    }
}

/// `POST /api/admin/dead-letters/{id}/retry`: back to its priority.
pub(crate) async fn retry_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    if state.queue().requeue_dead_letter(entry_id(&id)?).await? {
        Ok(Json(json!({ "requeued": 1 })))
    } else {
        Err(ApiError::not_found(format!("no dead letter {id}")))
    }
}

/// `POST /api/admin/dead-letters/retry-all`.
pub(crate) async fn retry_all_dead_letters(State(state): State<AppState>) -> ApiResult {
    let n = state.queue().requeue_all_dead_letters().await?;
    Ok(Json(json!({ "requeued": n })))
}

/// `DELETE /api/admin/dead-letters/{id}`.
pub(crate) async fn delete_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    if state.queue().delete_dead_letter(entry_id(&id)?).await? {
        Ok(Json(json!({ "deleted": 1 })))
    } else {
        Err(ApiError::not_found(format!("no dead letter {id}")))
    }
}

/// `POST /api/admin/dead-letters/purge`: deletes them all.
pub(crate) async fn purge_dead_letters(State(state): State<AppState>) -> ApiResult {
    let n = state.queue().purge_dead_letters().await?;
    Ok(Json(json!({ "deleted": n })))
}

/// `POST /api/admin/pause`.
pub(crate) async fn pause(State(state): State<AppState>) -> ApiResult {
    state.queue().pause().await?;
    Ok(Json(json!({ "paused": true })))
}

/// `POST /api/admin/resume`.
pub(crate) async fn resume(State(state): State<AppState>) -> ApiResult {
    state.queue().resume().await?;
    Ok(Json(json!({ "paused": false })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RecoverQuery {
    idle_ms: Option<u64>,
}

/// `POST /api/admin/queue/recover-stalled?idle_ms=`: the alert-platform answer,
/// `{"recovered_alerts": n}`, plus `lost`.
pub(crate) async fn recover_stalled(
    State(state): State<AppState>,
    query: Result<Query<RecoverQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let idle = query
        .idle_ms
        .map_or(state.config().recover_idle, Duration::from_millis);
    let done = state.queue().recover_stalled(idle).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "recovered_alerts": done.recovered, "lost": done.lost })),
    ))
}

/// `GET /api/admin/schedules`: every saved schedule, by id.
pub(crate) async fn schedules(State(state): State<AppState>) -> ApiResult {
    let list = state.queue().schedules().await?;
    Ok(Json(json!({
        "schedules": list.iter().map(json::schedule).collect::<Vec<_>>(),
    })))
}

/// A schedule as `PUT /api/admin/schedules/{id}` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleBody {
    every_ms: Option<u64>,
    cron: Option<String>,
    time_zone: Option<String>,
    #[serde(default)]
    payload: Value,
    name: Option<String>,
    priority: Option<String>,
    catch_up: Option<String>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    rate_group: Option<String>,
}

impl ScheduleBody {
    /// The schedule it describes, or every problem with it.
    fn schedule(self, id: String) -> Result<(Schedule, Value), ApiError> {
        let mut schedule = match (self.every_ms, self.cron) {
            (Some(0), None) => return Err(ApiError::unprocessable("every_ms must be at least 1")),
            (Some(ms), None) => Schedule::every(id, Duration::from_millis(ms)),
            (None, Some(cron)) => {
                Schedule::cron(id, cron, self.time_zone.unwrap_or_else(|| "UTC".to_owned()))
            }
            _ => {
                return Err(ApiError::unprocessable(
                    "give exactly one of every_ms (milliseconds) or cron (with time_zone, default UTC)",
                ));
            }
        };
        if let Some(name) = self.name {
            schedule = schedule.name(name);
        }
        if let Some(priority) = self.priority {
            schedule = schedule.priority(priority.parse::<Priority>()?);
        }
        if let Some(catch_up) = self.catch_up {
            schedule = schedule.catch_up(match catch_up.as_str() {
                "skip" => CatchUp::Skip,
                "run_once" => CatchUp::RunOnce,
                other => {
                    return Err(ApiError::unprocessable(format!(
                        "catch_up {other:?}: expected \"skip\" or \"run_once\""
                    )));
                }
            });
        }
        if let Some(attempts) = self.max_attempts {
            schedule = schedule.max_attempts(attempts);
        }
        if let Some(ms) = self.timeout_ms {
            schedule = schedule.timeout(Duration::from_millis(ms));
        }
        if let Some(group) = self.rate_group {
            schedule = schedule.rate_group(group);
        }
        Ok((schedule, self.payload))
    }
}

/// `PUT /api/admin/schedules/{id}`: creates (`201`) or updates (`200`) a
/// schedule.
pub(crate) async fn upsert_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ScheduleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let (schedule, payload) = body.schedule(id.clone())?;
    let upserted = match state.queue().upsert_schedule(&schedule, &payload).await {
        Ok(upserted) => upserted,
        // Bad timing, id or payload size: the request's fault.
        Err(Error::Config(problems)) => return Err(ApiError::unprocessable(problems.to_string())),
        Err(e) => return Err(e.into()),
    };
    let status = if upserted.change == ScheduleChange::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json::upserted(&id, &upserted))))
}

/// `DELETE /api/admin/schedules/{id}`.
pub(crate) async fn remove_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    if state.queue().remove_schedule(&id).await? {
        Ok(Json(json!({ "id": id, "removed": true })))
    } else {
        Err(ApiError::not_found(format!("no schedule {id:?}")))
    }
}

/// `POST /api/admin/jobs/{id}/cancel`: removes a waiting or delayed job
/// (`200`), or asks the worker running it to stop (`202`: it stops within a
/// heartbeat, if its handler listens); `404` when it is neither.
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let outcome = state.queue().cancel(&id).await?;
    let status = match outcome {
        Cancelled::Removed { .. } => StatusCode::OK,
        Cancelled::StopRequested { .. } => StatusCode::ACCEPTED,
        _ => {
            return Err(ApiError::not_found(format!(
                "no waiting, delayed or running job {id}: it finished already, or the id is unknown"
            )));
        }
    };
    Ok((status, Json(json::cancelled(&id, &outcome))))
}
