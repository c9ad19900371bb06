//! Who may do what: bearer tokens, compared in constant time, and the
//! read-only switch. Three guards, one per kind of route: ingestion,
//! admin reads, admin writes. The dashboard page and its assets, `/metrics`,
//! `/healthz` and `/readyz` hold no job data and are open.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// Whether the request carries `Authorization: Bearer <one of tokens>`.
/// Every token is compared, each in constant time, whatever matched.
fn bearer_matches(headers: &HeaderMap, tokens: &[&str]) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .as_bytes();
    let mut ok = subtle::Choice::from(0);
    for token in tokens {
        ok |= given.ct_eq(token.as_bytes());
    }
    bool::from(ok) && !given.is_empty()
}

fn unauthorized() -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn read_only() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "this server is read-only: nothing may be enqueued or changed",
    )
    .into_response()
}

/// Ingestion: the ingest token or the admin token when an ingest token is
/// set; refused when read-only.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.config();
    if let Some(ingest) = &config.ingest_token {
        let mut tokens = vec![ingest.as_str()];
        tokens.extend(config.token.as_deref());
        if !bearer_matches(request.headers(), &tokens) {
            return unauthorized();
        }
    }
    if config.read_only {
        return read_only();
    }
    next.run(request).await
}

/// Admin reads: the admin token when one is set.
pub(crate) async fn admin_read(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !admin_token_ok(&state, &request) {
        return unauthorized();
    }
    next.run(request).await
}

/// Whether the request carries the admin token, or none is set.
fn admin_token_ok(state: &AppState, request: &Request) -> bool {
    state
        .config()
        .token
        .as_deref()
        .is_none_or(|token| bearer_matches(request.headers(), &[token]))
}

/// Admin writes: the admin token when one is set; refused when read-only.
pub(crate) async fn admin_write(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !admin_token_ok(&state, &request) {
        return unauthorized();
    }
    if state.config().read_only {
        return read_only();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(bearer_matches(&headers("Bearer s3cret"), &["s3cret"]));
        assert!(bearer_matches(&headers("Bearer in"), &["in", "admin"]));
        assert!(bearer_matches(&headers("Bearer admin"), &["in", "admin"]));
        assert!(!bearer_matches(&headers("Bearer s3cre"), &["s3cret"]));
        assert!(!bearer_matches(&headers("Bearer s3cretX"), &["s3cret"]));
        assert!(!bearer_matches(&headers("Basic s3cret"), &["s3cret"]));
        assert!(!bearer_matches(&headers("s3cret"), &["s3cret"]));
        assert!(!bearer_matches(&HeaderMap::new(), &["s3cret"]));
        assert!(!bearer_matches(&headers("Bearer "), &[""]));
    }
}
