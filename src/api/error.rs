//! The API's errors: one JSON shape, `{"error": "<code>", "message": "<text>"}`, and one place
//! that maps each failure to its status (as `serve/error.rs` does for media: bad input 400,
//! internal 500). Bad input never becomes a 500.

use super::store::StoreError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every API error.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`, `rate_limited`, `internal`.
    pub error: String,
    /// What went wrong, naming the field or parameter when one is at fault.
    pub message: String,
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, an unknown field, a bad value or parameter: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No or malformed `Authorization` header: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A wrong token, or the admin API is disabled: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The stream or key does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state: 409.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than `api.body_limit`: 413.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    /// The body is not `application/json`: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests from this client: 429.
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// The metadata store failed: 500 (logged with its cause).
    #[error("internal error")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The status and code this error maps to.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        if let Self::Store(error) = &self {
            tracing::error!(error = %error, source = std::error::Error::source(error)
                .map(ToString::to_string), "metadata store failed");
        }
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"headwater\""),
                );
            }
            Self::RateLimited(after) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(after.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!(
            "invalid query: {}",
            rejection
                .body_text()
                .trim_start_matches("Failed to deserialize query string: ")
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}
