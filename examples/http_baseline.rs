//! The ceiling of HTTP on this machine, for docs/benchmarks.md: a bare axum
//! route that parses the same JSON body as `POST /api/alerts/event` and
//! answers `202` with an id, without touching Redis.
//!
//! `cargo run --release --example http_baseline -- 127.0.0.1:8090`

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

async fn alert(body: Bytes) -> (StatusCode, Json<Value>) {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.is_object() => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "queued", "alert_id": uuid::Uuid::now_v7().to_string() })),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "body must be a JSON object" })),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    // TCP_NODELAY, as streamq serve sets it.
    let listener = tokio::net::TcpListener::bind(&addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/api/alerts/event", post(alert));
    println!("http_baseline on http://{addr}/api/alerts/event");
    axum::serve(listener, app).await?;
    Ok(())
}
