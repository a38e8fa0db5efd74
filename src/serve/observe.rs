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
use metrics::{Counter, Histogram};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
    /// Request metric handles, bound once per label set.
    pub requests: Arc<RequestMetrics>,
}

/// What kind of object a request asks for: the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Playlist,
    Segment,
    Init,
    Api,
    Chat,
    Operations,
    Other,
}

/// The `route` label values, in [`Route`] order.
const ROUTES: [&str; 7] = [
    "playlist",
    "segment",
    "init",
    "api",
    "chat",
    "operations",
    "other",
];
/// The `method` label.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "other",
];
/// The `status` label.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The `protocol` label.
const PROTOCOLS: [&str; 6] = ["http0.9", "http1.0", "http1.1", "h2", "h3", "other"];

/// Request metric handles, registered on first use (so `/metrics` lists only the label sets
/// that occurred) and reused after, so a request builds no metric key and does no registry
/// lookup.
pub struct RequestMetrics {
    /// Request count and duration per route x method x status x protocol.
    requests: Box<[OnceLock<(Counter, Histogram)>]>,
    /// Response bytes per route x protocol.
    bytes: Box<[OnceLock<Counter>]>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: cells(ROUTES.len() * METHODS.len() * STATUSES.len() * PROTOCOLS.len()),
            bytes: cells(ROUTES.len() * PROTOCOLS.len()),
        }
    }
}

fn cells<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl RequestMetrics {
    fn record(&self, labels: Labels, status: usize, elapsed: Duration, bytes: Option<u64>) {
        let route = labels.route as usize;
        let index = ((route * METHODS.len() + labels.method) * STATUSES.len() + status)
            * PROTOCOLS.len()
            + labels.protocol;
        if let Some(cell) = self.requests.get(index) {
            let (requests, duration) = cell.get_or_init(|| {
                let labels = [
                    ("route", labels.route.label()),
                    ("method", METHODS[labels.method]),
                    ("status", STATUSES[status]),
                    ("protocol", PROTOCOLS[labels.protocol]),
                ];
                (
                    metrics::counter!("headwater_http_requests_total", &labels),
                    metrics::histogram!("headwater_http_request_duration_seconds", &labels),
                )
            });
            duration.record(elapsed.as_secs_f64());
            requests.increment(1);
        }
        let index = route * PROTOCOLS.len() + labels.protocol;
        if let (Some(bytes), Some(cell)) = (bytes, self.bytes.get(index)) {
            cell.get_or_init(|| {
                metrics::counter!(
                    "headwater_http_response_bytes_total",
                    "route" => labels.route.label(),
                    "protocol" => PROTOCOLS[labels.protocol]
                )
            })
            .increment(bytes);
        }
    }
}

/// A request's labels (method and protocol as indexes into their arrays).
#[derive(Debug, Clone, Copy)]
struct Labels {
    route: Route,
    method: usize,
    protocol: usize,
}

impl Route {
    fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            if path.ends_with("/chat") {
                Route::Chat
            } else {
                Route::Api
            }
        } else if path.ends_with(".m3u8") {
            Route::Playlist
        } else if path.ends_with(".m4s") {
            Route::Segment
        } else if path.ends_with(".mp4") {
            Route::Init
        } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            Route::Operations
        } else {
            Route::Other
        }
    }

    fn label(self) -> &'static str {
        ROUTES[self as usize]
    }
}

/// A bounded label for a request path: what kind of object it asks for.
pub fn route_class(path: &str) -> &'static str {
    Route::of(path).label()
}

fn protocol(version: Version) -> usize {
    match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_11 => 2,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 5,
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::OPTIONS => 2,
        Method::POST => 3,
        Method::PUT => 4,
        Method::PATCH => 5,
        Method::DELETE => 6,
        _ => 7,
    }
}

fn status_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
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
    let labels = Labels {
        route: Route::of(request.uri().path()),
        method: method_index(request.method()),
        protocol: protocol(request.version()),
    };
    let (route, method, version) = (
        labels.route.label(),
        METHODS[labels.method],
        PROTOCOLS[labels.protocol],
    );
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
        observability
            .requests
            .record(labels, status_index(status), elapsed, bytes);
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
    fn every_label_set_has_its_own_metric_cell() {
        let metrics = RequestMetrics::default();
        let last = ((ROUTES.len() - 1) * METHODS.len() + METHODS.len() - 1) * STATUSES.len()
            + STATUSES.len()
            - 1;
        assert_eq!(
            last * PROTOCOLS.len() + PROTOCOLS.len(),
            metrics.requests.len()
        );
        assert_eq!(Route::Other.label(), "other");
        assert_eq!(Route::Playlist.label(), "playlist");
    }

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
