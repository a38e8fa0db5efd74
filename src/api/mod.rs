//! The JSON API under `/api/v1`: streams (metadata + live state), stream keys, viewers and the
//! player beacon, webhooks, and the OpenAPI document (`/api/v1/openapi.json`, generated from
//! this code).
//!
//! Beside the media path, never in it: the API reads the stream registry's snapshots and the
//! live store through read-only handles, learns of stream starts and ends from the registry's
//! lifecycle `broadcast` (a lagging reader loses events, the publisher never waits), and hands
//! the registry keys through an in-memory [`keys::KeyCache`] the publish path reads without
//! awaiting. The metadata store ([`store::MetaStore`], SQLite by default) is only called from
//! API handlers and background tasks, on the blocking pool; hot reads are cached in memory.
//!
//! Errors are `{"error", "message"}` JSON ([`error::ApiError`]). Admin routes (keys, stream
//! edits) need `Authorization: Bearer <token>` (`HEADWATER_ADMIN_TOKEN` or `api.admin_token`);
//! read routes are public. Every route is rate-limited per client address.

pub mod error;
pub mod keys;
pub mod openapi;
pub mod store;
pub mod streams;
pub mod viewers;
pub mod webhooks;

use crate::config::{ApiConfig, KeyConfig};
use crate::names::StreamName;
use crate::observe::qoe::Qoe;
use crate::stream::{KeyDirectory, Registry, StreamEvent};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use error::ApiError;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use store::{MetaStore, StoreError};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The environment variable that overrides `api.admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "HEADWATER_ADMIN_TOKEN";

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// The metadata store could not be opened or migrated.
    #[error("cannot open the metadata store")]
    Store(#[from] StoreError),
}

/// The metadata store and the keys it holds, opened before the registry (which needs the keys).
#[derive(Debug)]
pub struct Metadata {
    store: Arc<dyn MetaStore>,
    keys: Arc<keys::KeyCache>,
}

impl Metadata {
    /// Opens the SQLite store under `config.data_dir`, applies migrations, ends instances a
    /// previous run left open, and loads the active keys into memory.
    pub fn open(config: &ApiConfig) -> Result<Self, ApiStartError> {
        let store: Arc<dyn MetaStore> =
            Arc::new(store::sqlite::SqliteStore::open(&config.data_dir)?);
        Self::with_store(store)
    }

    /// Uses another [`MetaStore`] implementation.
    pub fn with_store(store: Arc<dyn MetaStore>) -> Result<Self, ApiStartError> {
        let ended = store.end_interrupted(store::sqlite::now_millis())?;
        if ended > 0 {
            tracing::info!(
                streams = ended,
                "metadata: streams left live by the last run marked ended"
            );
        }
        let keys = Arc::new(keys::KeyCache::load(&*store)?);
        Ok(Self { store, keys })
    }

    /// The run-time keys, for the stream registry's publish path.
    pub fn key_directory(&self) -> Arc<dyn KeyDirectory> {
        self.keys.clone()
    }
}

/// A running API: cloned into every handler.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn MetaStore>,
    keys: Arc<keys::KeyCache>,
    registry: Arc<Registry>,
    media: Arc<crate::store::Store>,
    cache: streams::MetaCache,
    viewers: viewers::Viewers,
    qoe: Arc<Qoe>,
    config_streams: HashSet<StreamName>,
    admin_token: Option<String>,
    body_limit: usize,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    openapi: bytes::Bytes,
}

/// What the API needs from the rest of the server.
#[derive(Debug)]
pub struct ApiParts {
    /// The stream registry (snapshots, revoke, lifecycle events).
    pub registry: Arc<Registry>,
    /// The live store (renditions of running streams).
    pub media: Arc<crate::store::Store>,
    /// CMCD QoE aggregates (beacons carry CMCD too).
    pub qoe: Arc<Qoe>,
}

impl Api {
    /// Starts the API's background tasks (history recorder, webhooks, viewer gauges) in `tasks`;
    /// they stop on `shutdown`.
    pub fn start(
        config: &ApiConfig,
        config_keys: &[KeyConfig],
        metadata: Metadata,
        parts: ApiParts,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Self {
        let admin_token = std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| config.admin_token.clone());
        if admin_token.is_none() {
            tracing::info!("no admin token ({ADMIN_TOKEN_ENV} or api.admin_token): admin API routes answer 403");
        }
        let rate = NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
        let api = Self {
            inner: Arc::new(Inner {
                store: metadata.store,
                keys: metadata.keys,
                cache: streams::MetaCache::new(),
                viewers: viewers::Viewers::new(config.viewer_window),
                qoe: parts.qoe,
                config_streams: config_keys.iter().map(|k| k.stream.clone()).collect(),
                registry: parts.registry.clone(),
                media: parts.media,
                admin_token,
                body_limit: config.body_limit.as_u64() as usize,
                limiter: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
                openapi: openapi::document(),
            }),
        };
        tasks.spawn(record_history(
            api.clone(),
            parts.registry.subscribe(),
            shutdown.clone(),
        ));
        if !config.webhooks.urls.is_empty() {
            webhooks::start(
                &config.webhooks,
                parts.registry.subscribe(),
                tasks,
                shutdown,
            );
        }
        tasks.spawn(housekeeping(api.clone(), shutdown.clone()));
        api
    }

    /// The routes under `/api/v1`, with rate limiting.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/openapi.json", get(openapi::serve))
            .route("/api/v1/streams", get(streams::list))
            .route(
                "/api/v1/streams/{name}",
                get(streams::detail).patch(streams::patch),
            )
            .route("/api/v1/streams/{name}/beacon", post(viewers::beacon))
            .route("/api/v1/keys", get(keys::list).post(keys::create))
            .route("/api/v1/keys/{id}", delete(keys::revoke))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                rate_limit,
            ))
            .layer(cors())
            .with_state(self.clone())
    }

    /// The metadata store, for chat history (called on the blocking pool, never awaited by media).
    pub(crate) fn meta_store(&self) -> Arc<dyn MetaStore> {
        self.inner.store.clone()
    }

    /// Statements the metadata store has executed (benchmarks: the cache's effect).
    pub fn store_queries(&self) -> u64 {
        self.inner.store.queries()
    }

    async fn blocking<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn MetaStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || call(&*store))
            .await
            .map_err(|_| StoreError::Join)?
    }
}

/// Browsers may call the API from any origin (players send beacons; dashboards read).
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(Duration::from_secs(86_400))
}

/// The client address (from the transport), for rate limits and viewer sessions.
pub(crate) fn client_ip(request_extensions: &axum::http::Extensions) -> IpAddr {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

async fn rate_limit(State(api): State<Api>, request: Request, next: Next) -> Response {
    let ip = client_ip(request.extensions());
    match api.inner.limiter.check_key(&ip) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            metrics::counter!("headwater_api_rate_limited_total").increment(1);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::RateLimited(wait.as_secs_f64().ceil() as u64).into_response()
        }
    }
}

/// Records stream starts and ends in the metadata store (history) and drops cached metadata.
async fn record_history(
    api: Api,
    mut events: broadcast::Receiver<StreamEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let result = match event {
            Ok(StreamEvent::Started {
                stream,
                instance,
                at,
            }) => {
                api.blocking(move |s| s.stream_started(&stream, &instance, millis(at)))
                    .await
            }
            Ok(StreamEvent::Ended {
                stream,
                instance,
                at,
            }) => {
                api.blocking(move |s| s.stream_ended(&stream, &instance, millis(at)))
                    .await
            }
            Ok(StreamEvent::KeyRejected { .. }) => continue,
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                metrics::counter!("headwater_api_events_lost_total").increment(lost);
                tracing::warn!(
                    lost,
                    "API fell behind the stream lifecycle events; history misses some"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        api.inner.cache.changed();
        if let Err(error) = result {
            tracing::error!(%error, source = std::error::Error::source(&error)
                .map(ToString::to_string), "cannot record stream history");
        }
    }
}

/// Forgets idle rate-limit buckets and viewer sessions; refreshes the viewer gauges.
async fn housekeeping(api: Api, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        api.inner.limiter.retain_recent();
        api.inner.viewers.refresh_gauges();
    }
}

/// Unix milliseconds of a time.
pub(crate) fn millis(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Admin authorization, checked before the body is read: 401 without a Bearer token, 403 with
/// a wrong one or when no admin token is configured.
pub struct Admin;

impl FromRequestParts<Api> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <admin token>".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be \"Bearer <admin token>\"".into())
            })?;
        let Some(expected) = &api.inner.admin_token else {
            return Err(ApiError::Forbidden(format!(
                "the admin API is disabled: set {ADMIN_TOKEN_ENV} or api.admin_token"
            )));
        };
        if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Forbidden("invalid admin token".into()))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of where the inputs differ and of length.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A JSON body: `application/json`, at most `api.body_limit` bytes (413), unknown fields and
/// bad values rejected with a 400 naming them.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Api> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, api: &Api) -> Result<Self, ApiError> {
        let limit = api.inner.body_limit;
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            drain(request.into_body()).await;
            return Err(ApiError::PayloadTooLarge(limit as u64));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        let mut body = request.into_body().into_data_stream();
        let mut collected = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            let chunk =
                chunk.map_err(|_| ApiError::BadRequest("request body interrupted".into()))?;
            if collected.len() + chunk.len() > limit {
                drain(axum::body::Body::from_stream(body)).await;
                return Err(ApiError::PayloadTooLarge(limit as u64));
            }
            collected.extend_from_slice(&chunk);
        }
        let body = collected;
        let value = serde_json::from_slice(&body).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "invalid body",
                _ => "malformed JSON",
            };
            ApiError::BadRequest(format!("{what}: {e}"))
        })?;
        Ok(Self(value))
    }
}

/// Reads and discards what is left of a refused body (up to 1 MiB), so the 413 reaches the
/// client and the connection stays usable; a client still sending past that is cut off.
async fn drain(body: axum::body::Body) {
    let _ = axum::body::to_bytes(body, 1024 * 1024).await;
}

/// A `200 OK` JSON response that players may not cache (live data).
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(value),
    )
        .into_response()
}

/// A response of already serialized JSON.
pub(crate) fn json_body(status: StatusCode, body: bytes::Bytes) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A path's stream name, or a 400 naming it.
pub(crate) fn parse_stream(raw: &str) -> Result<StreamName, ApiError> {
    StreamName::parse(raw).map_err(|e| ApiError::BadRequest(format!("name: {e}")))
}
