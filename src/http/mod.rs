//! `streamq serve` as a library: the HTTP front door of one queue.
//!
//! [`router`] returns an [`axum::Router`] for a [`Queue`] that you can serve
//! as it is or nest in your own service; [`serve`] binds, serves, and shuts
//! down gracefully. Behind the cargo feature `http` (on by default through
//! `cli`): library users who turn default features off build no axum.
//!
//! - `ingest`: `POST /api/alerts/event` (the alert endpoint), generic jobs
//!   and batches (JSON array or NDJSON). A request is answered `202` only
//!   after Redis acknowledged its job.
//! - `payload`: an alert's JSON bytes stored without building a tree.
//!   Concurrent single-job requests share script calls through the queue's
//!   own enqueue coalescing ([`Queue::enqueue`]), so ingestion is not one
//!   round trip per request.
//! - `admin`: health in the alert-platform JSON shape, stats, inspection, jobs by id,
//!   dead letters, pause and resume, recover-stalled, history, Prometheus
//!   text, `/healthz` and `/readyz`; schedules (list, create or update,
//!   remove) and cancelling a job by id.
//! - `dashboard`: the page at `/`, from assets compiled into the binary.
//! - `auth`: bearer tokens compared in constant time, and `read_only`.
//! - `sampler`: the task that records the queue's history once per step.
//! - `config`: [`HttpConfig`]; `error`: every failure as a JSON body and a
//!   precise status.
//!
//! The routes, with example requests and responses, are in `docs/http.md`.
//!
//! # Example
//!
//! ```no_run
//! use streamq::http::{HttpConfig, serve};
//! use streamq::{Queue, RedisConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = Queue::builder("alerts").connect(&RedisConfig::from_env()?).await?;
//! let config = HttpConfig::new().token("s3cret");
//! let addr = "127.0.0.1:8000".parse()?;
//! serve(queue, config, addr, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

mod admin;
mod auth;
mod config;
mod dashboard;
mod error;
mod ingest;
mod json;
mod payload;
mod sampler;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};
use axum::serve::ListenerExt;
use tokio_util::sync::DropGuard;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use config::{HttpConfig, MAX_COALESCE_JOBS, MAX_COALESCE_WAIT};

use crate::queue::Queue;

/// What every handler shares: the queue, the settings, and
/// the guard that stops the history sampler when the last clone is dropped.
#[derive(Clone)]
struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    queue: Queue,
    config: HttpConfig,
    _sampler: Option<DropGuard>,
}

impl AppState {
    fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    fn config(&self) -> &HttpConfig {
        &self.inner.config
    }
}

/// The HTTP API and dashboard of `queue`, as a router to serve or nest.
///
/// Unless [`HttpConfig::history`] turned it off, starts the history
/// sampler, a background task that ends when the router and every clone of
/// it are dropped.
///
/// # Panics
///
/// When called outside a Tokio runtime (it spawns that task).
pub fn router(queue: Queue, config: HttpConfig) -> Router {
    let one = DefaultBodyLimit::max(config.body_limit);
    let many = DefaultBodyLimit::max(config.batch_body_limit);
    let sampler = config
        .history_settings()
        .map(|(step, keep)| sampler::start(queue.clone(), step, keep));
    let state = AppState {
        inner: Arc::new(Shared {
            queue,
            config,
            _sampler: sampler,
        }),
    };

    let ingest = Router::new()
        .route("/api/alerts/event", post(ingest::alert).layer(one))
        .route("/api/alerts/batch", post(ingest::alert_batch).layer(many))
        .route("/api/queues/{queue}/jobs", post(ingest::job).layer(one))
        .route(
            "/api/queues/{queue}/jobs/batch",
            post(ingest::job_batch).layer(many),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::ingest));

    let admin_reads = Router::new()
        .route("/api/admin/queue/health", get(admin::health))
        .route("/api/admin/overview", get(admin::overview))
        .route("/api/admin/stats", get(admin::stats))
        .route("/api/admin/inspect", get(admin::inspect))
        .route("/api/admin/metrics", get(admin::metrics))
        .route("/api/admin/history", get(admin::history))
        .route("/api/admin/jobs/{id}", get(admin::job))
        .route("/api/admin/dead-letters", get(admin::dead_letters))
        .route("/api/admin/dead-letters/{id}", get(admin::dead_letter))
        .route("/api/admin/schedules", get(admin::schedules))
        .route_layer(from_fn_with_state(state.clone(), auth::admin_read));

    let admin_writes = Router::new()
        .route(
            "/api/admin/queue/recover-stalled",
            post(admin::recover_stalled),
        )
        .route("/api/admin/pause", post(admin::pause))
        .route("/api/admin/resume", post(admin::resume))
        .route(
            "/api/admin/dead-letters/{id}/retry",
            post(admin::retry_dead_letter),
        )
        .route(
            "/api/admin/dead-letters/retry-all",
            post(admin::retry_all_dead_letters),
        )
        .route(
            "/api/admin/dead-letters/purge",
            post(admin::purge_dead_letters),
        )
        .route(
            "/api/admin/dead-letters/{id}",
            delete(admin::delete_dead_letter),
        )
        .route(
            "/api/admin/schedules/{id}",
            put(admin::upsert_schedule).delete(admin::remove_schedule),
        )
        .route("/api/admin/jobs/{id}/cancel", post(admin::cancel_job))
        .route_layer(from_fn_with_state(state.clone(), auth::admin_write));

    let open = Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/favicon.ico", get(dashboard::favicon))
        .route("/metrics", get(admin::prometheus))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz));

    Router::new()
        .merge(ingest)
        .merge(admin_reads)
        .merge(admin_writes)
        .merge(open)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Why [`serve`] did not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A non-loopback address without a token, and not
    /// [`HttpConfig::insecure`].
    #[error(
        "refusing to listen on {0} without a token: anyone who can reach it could \
         pause the queue or delete dead letters; set a token, or say --insecure"
    )]
    Exposed(SocketAddr),
    /// Binding or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks the address against the token rule, binds it, and serves
/// [`router`] until `shutdown` completes; then stops accepting, lets
/// in-flight requests finish (every job already acknowledged stays
/// acknowledged), and returns.
///
/// # Errors
///
/// [`ServeError::Exposed`] for a non-loopback address without a token
/// unless [`HttpConfig::insecure`]; [`ServeError::Io`] when the address
/// cannot be bound.
///
/// # Cancel safety
///
/// Dropping the future stops the server at once, cutting in-flight
/// requests: a job may be in Redis without its client having seen the
/// `202`. Complete `shutdown` instead for a graceful stop.
pub async fn serve(
    queue: Queue,
    config: HttpConfig,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.check_exposure(addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    serve_on(listener, queue, config, shutdown).await
}

/// As [`serve`], on a listener already bound (a test's port 0, a socket
/// handed over by a supervisor). Applies the same token rule to the
/// listener's address.
///
/// # Errors
///
/// As [`serve`].
///
/// # Cancel safety
///
/// As [`serve`].
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    queue: Queue,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    config.check_exposure(addr)?;
    let app = router(queue, config);
    tracing::info!(%addr, "streamq serve listening");
    // Small responses go out at once rather than waiting for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })
}
