//! Request observation: one access-log line, request metrics and CMCD -> QoE per request.
//!
//! Labels stay bounded: route class (playlist, segment, init, api, chat, operations, other),
//! method, status class and protocol version; never the path or the client address. CMCD is
//! read here and never reaches a cache key.

use crate::observe::qoe::Qoe;
use crate::observe::{cmcd, Metrics, Readiness};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// What request observation and the operations routes share.
#[derive(Clone, Debug)]
pub struct Observability {
    /// Renders `/metrics`; `None` when metrics are off.
    pub metrics: Option<Metrics>,
    /// Backs `/readyz`.
    pub readiness: Readiness,
    /// Viewer QoE from CMCD.
    pub qoe: Arc<Qoe>,
    /// Log one line per request.
    pub access_log: bool,
}

/// A bounded label for a request path: what kind of object it asks for.
pub fn route_class(path: &str) -> &'static str {
    if path.starts_with("/api/") {
        if path.ends_with("/chat") {
            "chat"
        } else {
            "api"
        }
    } else if path.ends_with(".m3u8") {
        "playlist"
    } else if path.ends_with(".m4s") {
        "segment"
    } else if path.ends_with(".mp4") {
        "init"
    } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        "operations"
    } else {
        "other"
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "http0.9",
        Version::HTTP_10 => "http1.0",
        Version::HTTP_11 => "http1.1",
        Version::HTTP_2 => "h2",
        Version::HTTP_3 => "h3",
        _ => "other",
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The stream a media path belongs to (`/live/<stream>/...`).
fn stream_of(path: &str) -> Option<&str> {
    path.strip_prefix("/live/")?
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// Middleware: times the request, then logs and records it.
pub async fn observe_requests(
    State(observability): State<Observability>,
    request: Request,
    next: Next,
) -> Response {
    if !observability.access_log && observability.metrics.is_none() {
        return next.run(request).await;
    }
    let started = Instant::now();
    let route = route_class(request.uri().path());
    let method = method_label(request.method());
    let version = protocol(request.version());
    let cmcd = matches!(route, "playlist" | "segment" | "init")
        .then(|| cmcd::parse(request.uri().query(), request.headers()))
        .filter(|c| !c.is_empty());
    let stream = cmcd
        .as_ref()
        .and_then(|_| stream_of(request.uri().path()).map(str::to_owned));
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let bytes = axum::body::HttpBody::size_hint(response.body()).exact();
    if observability.metrics.is_some() {
        let labels = [
            ("route", route),
            ("method", method),
            ("status", status_class(status)),
            ("protocol", version),
        ];
        metrics::histogram!("headwater_http_request_duration_seconds", &labels)
            .record(elapsed.as_secs_f64());
        metrics::counter!("headwater_http_requests_total", &labels).increment(1);
        if let Some(bytes) = bytes {
            metrics::counter!("headwater_http_response_bytes_total", "route" => route, "protocol" => version).increment(bytes);
        }
    }
    // Only streams that answered count: a made-up stream name must not create QoE state.
    if let (Some(cmcd), Some(stream)) = (cmcd, stream) {
        if status.is_success() {
            observability.qoe.record(&stream, &cmcd);
        }
    }
    if observability.access_log {
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: "headwater::access",
            method,
            route,
            status = status.as_u16(),
            bytes = bytes.unwrap_or(0),
            response_time_ms = elapsed.as_secs_f64() * 1000.0,
            protocol = version,
            cache,
            "request"
        );
    }
    response
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

/// `GET /readyz`: listeners bound, cache open; 503 before that and once shutdown began.
pub async fn readyz(State(observability): State<Observability>) -> Response {
    let (status, body) = if observability.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    };
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(observability): State<Observability>) -> Response {
    match &observability.metrics {
        Some(metrics) => {
            observability.qoe.refresh_gauges();
            (
                [
                    (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                metrics.render(),
            )
                .into_response()
        }
        None => super::error::ServeError::NotFound.into_response(),
    }
}

/// `GET /api/v1/streams/{name}/qoe`: viewer QoE aggregates from CMCD.
pub async fn qoe(
    State(observability): State<Observability>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match observability.qoe.snapshot(&name) {
        Some(snapshot) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(snapshot),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({"error": "not_found", "message": format!("no QoE data for stream {name:?}")})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes_are_bounded() {
        assert_eq!(route_class("/live/a/source/index.m3u8"), "playlist");
        assert_eq!(route_class("/live/a/source/seg-x-1.m4s"), "segment");
        assert_eq!(route_class("/live/a/source/init-x-0.mp4"), "init");
        assert_eq!(route_class("/api/v1/streams/a/qoe"), "api");
        assert_eq!(route_class("/api/v1/streams/a/chat"), "chat");
        assert_eq!(route_class("/readyz"), "operations");
        assert_eq!(route_class("/anything/else"), "other");
        assert_eq!(stream_of("/live/demo/source/x.m4s"), Some("demo"));
        assert_eq!(stream_of("/other"), None);
    }
}
