//! HTTP serving: the axum Router every transport shares, and the plain-TCP listener
//! (HTTP/1.1 and h2c on one port).
//!
//! Reads the store; never reaches into packaging. Header policy lives in [`object`], status
//! decisions in [`error`].

pub mod error;
pub mod object;

use crate::names::{RenditionName, StreamName};
use crate::store::Store;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ServeError;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The live store to serve from.
    pub store: Arc<Store>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

const PLAYLIST_FILE: &str = "index.m3u8";

fn stream_name(raw: &str) -> Result<StreamName, ServeError> {
    StreamName::parse(raw).map_err(|e| ServeError::BadRequest(e.to_string()))
}

async fn multivariant(
    State(state): State<AppState>,
    Path((stream, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ServeError> {
    if file != PLAYLIST_FILE {
        return Err(ServeError::NotFound);
    }
    let stream = stream_name(&stream)?;
    let object = state
        .store
        .stream(&stream)
        .and_then(|s| s.multivariant())
        .ok_or(ServeError::NotFound)?;
    Ok(object::respond(&headers, object))
}

async fn rendition_file(
    State(state): State<AppState>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ServeError> {
    let stream = stream_name(&stream)?;
    let rendition =
        RenditionName::parse(&rendition).map_err(|e| ServeError::BadRequest(e.to_string()))?;
    let entry = state.store.stream(&stream).ok_or(ServeError::NotFound)?;
    let object = if file == PLAYLIST_FILE {
        entry.media_playlist(&rendition)
    } else {
        entry.file(&rendition, &file)
    };
    Ok(object::respond(
        &headers,
        object.ok_or(ServeError::NotFound)?,
    ))
}

async fn healthz() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n")
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ServeError::NotFound.into_response(),
    }
}

/// The application: HLS routes, health and metrics. One Router for every transport.
pub fn router(state: AppState) -> Router {
    // Media is public: any origin may fetch it, and players may read the caching headers.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            HeaderName::from_static("cmcd-request"),
            HeaderName::from_static("cmcd-object"),
            HeaderName::from_static("cmcd-status"),
            HeaderName::from_static("cmcd-session"),
        ])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ETAG,
            header::AGE,
            header::CACHE_CONTROL,
        ])
        .max_age(std::time::Duration::from_secs(86_400));
    let media = Router::new()
        .route("/live/{stream}/{file}", get(multivariant))
        .route("/live/{stream}/{rendition}/{file}", get(rendition_file))
        .layer(cors);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(media)
        .fallback(|| async { ServeError::NotFound })
        .with_state(state)
}

/// Serves `router` on `listener` (HTTP/1.1 and h2c) until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
