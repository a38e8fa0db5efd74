//! HTTP serving: the axum Router every transport shares, for both node roles; the listeners
//! live in [`tcp`] (HTTP/1.1, h2c, TLS with h2) and [`h3`] (QUIC).
//!
//! An Origin serves playlists fresh from the live store and media through the cache (filled
//! from the store); a Shield serves everything through the cache (filled from its upstream).
//! Header policy lives in [`object`], status decisions in [`error`].

pub mod error;
pub mod h3;
pub mod limits;
pub mod object;
pub mod observe;
pub mod secure;
pub mod tcp;
pub mod tls;
pub mod transport;

use crate::cache::origin::StoreSource;
use crate::cache::upstream::Upstream;
use crate::cache::{Cache, ObjectKey};
use crate::names::{RenditionName, StreamName};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use error::ServeError;
pub use observe::Observability;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What an Origin's handlers share.
#[derive(Clone)]
pub struct OriginState {
    /// Media cache in front of the live store.
    pub cache: Arc<Cache<StoreSource>>,
    /// The JSON API under `/api/v1` (and viewer counting on media routes), when mounted.
    pub api: Option<crate::api::Api>,
    /// Live chat under `/api/v1/streams/{name}/chat`, when mounted.
    pub chat: Option<crate::chat::Chat>,
}

const PLAYLIST_FILE: &str = "index.m3u8";

fn stream_name(raw: &str) -> Result<StreamName, ServeError> {
    StreamName::parse(raw).map_err(|e| ServeError::BadRequest(e.to_string()))
}

/// Mutable objects (playlists, the thumbnail) come straight from the store: rendered once per
/// change, never stale.
fn serve_from_store(state: &OriginState, request: &Request) -> Result<Response, ServeError> {
    let key = ObjectKey::new(request.uri().path(), request.uri().query());
    let object = state
        .cache
        .source()
        .lookup(&key)
        .ok_or(ServeError::NotFound)?;
    Ok(object::respond_stored(request.headers(), &object))
}

// Handlers take the whole `Request` (moved, not copied) rather than `Uri` and `HeaderMap`
// extractors, which clone both on every request.
/// The stream-level files: the multivariant playlist and the thumbnail (both mutable, both
/// read from the store on every request).
async fn stream_file(
    State(state): State<OriginState>,
    Path((stream, file)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ServeError> {
    stream_name(&stream)?;
    if file != PLAYLIST_FILE && file != crate::cache::origin::THUMBNAIL_FILE {
        return Err(ServeError::NotFound);
    }
    serve_from_store(&state, &request)
}

async fn rendition_file(
    State(state): State<OriginState>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, ServeError> {
    stream_name(&stream)?;
    RenditionName::parse(&rendition).map_err(|e| ServeError::BadRequest(e.to_string()))?;
    if file == PLAYLIST_FILE {
        return serve_from_store(&state, &request);
    }
    let served = state
        .cache
        .get(&ObjectKey::new(request.uri().path(), request.uri().query()))
        .await?;
    if served.object.status == 404 {
        return Err(ServeError::NotFound);
    }
    Ok(object::respond(
        request.headers(),
        &served.object,
        Some(served.status),
    ))
}

async fn shield_fill(
    State(cache): State<Arc<Cache<Upstream>>>,
    request: Request,
) -> Result<Response, ServeError> {
    let served = cache
        .get(&ObjectKey::new(request.uri().path(), request.uri().query()))
        .await?;
    Ok(object::respond(
        request.headers(),
        &served.object,
        Some(served.status),
    ))
}

fn cors() -> CorsLayer {
    // Media is public: any origin may fetch it, and players may read the caching headers.
    CorsLayer::new()
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
        .max_age(std::time::Duration::from_secs(86_400))
        // The allowed origin is always `*`, so responses never vary by Origin; a Vary header
        // would only split CDN caches (one copy of an immutable segment per requesting site).
        .vary([])
}

/// Health, readiness, metrics and QoE, the same on every role.
fn operations(observability: Observability) -> Router {
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .route("/api/v1/streams/{name}/qoe", get(observe::qoe))
        .with_state(observability)
}

/// An Origin's application: HLS routes and operations. One Router for every transport.
pub fn origin_router(state: OriginState, observability: Observability) -> Router {
    let api = state.api.clone();
    let chat = state.chat.as_ref().map(crate::chat::Chat::router);
    let mut media = Router::new()
        .route("/live/{stream}/{file}", get(stream_file))
        .route("/live/{stream}/{rendition}/{file}", get(rendition_file))
        .layer(cors())
        .with_state(state);
    if let Some(api) = &api {
        media = media.layer(axum::middleware::from_fn_with_state(
            api.clone(),
            crate::api::viewers::track,
        ));
    }
    let api = api.map(|api| api.router()).unwrap_or_default();
    operations(observability.clone())
        .merge(media)
        .merge(api)
        .merge(chat.unwrap_or_default())
        .fallback(|| async { ServeError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            observability,
            observe::observe_requests,
        ))
}

/// A Shield's application: every other GET is served through the cache from the upstream.
pub fn shield_router(cache: Arc<Cache<Upstream>>, observability: Observability) -> Router {
    let proxy = Router::new()
        .fallback(get(shield_fill))
        .layer(cors())
        .with_state(cache);
    operations(observability.clone())
        .merge(proxy)
        .layer(axum::middleware::from_fn_with_state(
            observability,
            observe::observe_requests,
        ))
}
