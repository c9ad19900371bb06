//! Every failure as a JSON body `{"error": "..."}` with a precise status:
//! bad input is the client's (4xx), a busy or absent Redis is `503` with
//! `Retry-After`, anything else Redis says is `502`. Nothing here panics.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// An error answer: status, message, and for a busy Redis, when to retry.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn unavailable(message: String, retry_after: u32) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            retry_after: Some(retry_after),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let message = error.to_string();
        match error {
            Error::UnknownPriority(_) | Error::InvalidName { .. } | Error::Encode(_) => {
                ApiError::unprocessable(message)
            }
            Error::PayloadTooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            Error::QueueFull { .. } => ApiError::unavailable(message, 1),
            Error::OutOfMemory(_) => ApiError::unavailable(message, 5),
            Error::Unavailable(_) => ApiError::unavailable(message, 1),
            Error::PartialBatch { source, .. } => ApiError::from(*source),
            Error::OwnershipLost => ApiError::new(StatusCode::CONFLICT, message),
            Error::Config(_) | Error::LocalServer(_) | Error::WorkerThread(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            _ => ApiError::new(StatusCode::BAD_GATEWAY, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "request failed");
        }
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The answer for a path no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/http.md")
}

/// The answer for a known path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_precise_statuses() {
        let cases = [
            (
                Error::UnknownPriority("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                Error::PayloadTooLarge { size: 2, limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                Error::QueueFull {
                    backlog: 1,
                    limit: 1,
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Error::OutOfMemory("oom".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Error::UnexpectedReply {
                    script: "s",
                    detail: "d".into(),
                },
                StatusCode::BAD_GATEWAY,
            ),
        ];
        for (error, status) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status, status, "{}", api.message);
        }
        assert_eq!(
            ApiError::from(Error::OutOfMemory("oom".into())).retry_after,
            Some(5)
        );
    }
}
