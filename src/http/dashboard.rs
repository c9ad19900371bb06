//! The dashboard: one HTML page, its script and style, and the vendored
//! uPlot chart library (MIT, its licence beside it), all compiled into the
//! binary. No CDN, no build step.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::http::error::ApiError;

const INDEX: &str = include_str!("assets/index.html");

/// The files under `/assets/`: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/vendor/uplot.min.css"),
    ),
    (
        "UPLOT-LICENSE",
        "text/plain; charset=utf-8",
        include_str!("assets/vendor/UPLOT-LICENSE"),
    ),
];

/// Headers every dashboard response carries: no framing by other sites,
/// no sniffing, scripts only from this server.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    ),
];

/// `GET /`: the page.
pub(crate) async fn index() -> Response {
    (SECURITY, Html(INDEX)).into_response()
}

/// `GET /favicon.ico`: no icon, and no 404 in the browser's console for
/// pages (JSON answers) that do not name one.
pub(crate) async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /assets/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, kind, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no asset {file}")))?;
    Ok((
        SECURITY,
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response())
}
