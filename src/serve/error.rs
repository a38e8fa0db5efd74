//! The one place that decides HTTP status and caching of failures.

use crate::cache::{CacheError, FillError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request could not be answered with content.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The stream, rendition or object does not exist (yet): 404, cacheable for one second so a
    /// CDN does not hammer the origin but picks up new segments quickly.
    #[error("not found")]
    NotFound,
    /// The path names something that can never exist (bad stream or rendition name): 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The upstream (or the fill this request waited for) failed: 502, or 504 on a timeout.
    #[error("upstream error: {0}")]
    Upstream(#[from] CacheError),
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let (status, cache) = match &self {
            ServeError::NotFound => (StatusCode::NOT_FOUND, "max-age=1"),
            ServeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "no-store"),
            ServeError::Upstream(CacheError::Source(e)) if e.is_timeout() => {
                (StatusCode::GATEWAY_TIMEOUT, "no-store")
            }
            ServeError::Upstream(CacheError::Fill(FillError::Timeout(_))) => {
                (StatusCode::GATEWAY_TIMEOUT, "no-store")
            }
            ServeError::Upstream(_) => (StatusCode::BAD_GATEWAY, "no-store"),
        };
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
