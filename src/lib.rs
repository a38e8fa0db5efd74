//! Headwater: a live-video origin server. RTMP in, CMAF/fMP4 HLS out.
//!
//! Media flows one way: `ingest` (crate `headwater-ingest`) -> [`stream`] -> [`package`] ->
//! [`store`] -> [`cache`] -> [`serve`]. [`config`], [`names`] and [`observe`] are leaves
//! everyone may use. [`Server`] (Origin) and [`Shield`] wire the pieces; `main.rs` is only the
//! command line around them.

pub mod api;
pub mod cache;
pub mod chat;
pub mod config;
pub mod names;
pub mod observe;
pub mod package;
pub mod serve;
pub mod store;
pub mod stream;
pub mod transcode;
pub mod web;

use cache::origin::StoreSource;
use cache::upstream::{Upstream, UpstreamSettings};
use cache::{Cache, CachePolicy};
use config::{Config, ObserveConfig, ShieldConfig};
use headwater_ingest::rtmp::{self, RtmpSettings};
use headwater_ingest::srt::{self, SrtSettings};
use observe::{qoe::Qoe, Metrics, Readiness};
use serve::Observability;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cache could not be opened.
    #[error("cannot open the cache")]
    Cache(#[from] cache::hybrid::OpenError),
    /// The upstream client could not be built.
    #[error("cannot build the upstream client")]
    Upstream(#[source] cache::upstream::UpstreamError),
    /// The TLS or HTTP/3 listener could not start.
    #[error("cannot start the TLS listeners")]
    Secure(#[from] serve::secure::SecureError),
    /// The SRT listener could not start.
    #[error("cannot start the SRT listener")]
    Srt(#[source] srt::SrtListenError),
    /// The API's metadata store could not be opened.
    #[error("cannot start the API")]
    Api(#[from] api::ApiStartError),
}

/// Binds `[srt] listen` and spawns the SRT listener; publishers go through the same hook as RTMP.
async fn start_srt(
    config: &config::SrtConfig,
    app: &str,
    hook: Arc<dyn rtmp::Publish>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, StartError> {
    let addr = config.listen;
    let bind_error = |source| StartError::Bind { addr, source };
    let socket = srt::bind(addr).await.map_err(bind_error)?;
    let bound = socket.local_addr().map_err(bind_error)?;
    let settings = SrtSettings {
        app: app.to_string(),
        latency: config.latency,
        passphrase: config.passphrase.clone(),
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
    };
    let listener = srt::serve(socket, settings, hook, shutdown.clone().cancelled_owned())
        .await
        .map_err(StartError::Srt)?;
    tasks.spawn(listener);
    tracing::info!(srt_addr = %bound, "srt ingest listening");
    Ok(bound)
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// A running Origin: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Server {
    /// Where HTTP is served (the port is real even when the config said 0).
    pub http_addr: SocketAddr,
    /// Where RTMP is accepted.
    pub rtmp_addr: SocketAddr,
    /// Where SRT is accepted (UDP), when `[srt]` is configured.
    pub srt_addr: Option<SocketAddr>,
    /// HTTPS and HTTP/3, when `[tls]` is on.
    pub secure: Option<serve::secure::SecureEndpoints>,
    /// The live store (for tests and diagnostics).
    pub store: Arc<store::Store>,
    /// The stream registry (for tests and diagnostics).
    pub registry: Arc<stream::Registry>,
    /// The JSON API (for tests and diagnostics).
    pub api: api::Api,
    /// The live chat, when `[chat] enabled` (for tests and diagnostics).
    pub chat: Option<chat::Chat>,
    cache: Arc<Cache<StoreSource>>,
    running: Running,
}

/// A started node's background tasks, how to tell them to stop, and its readiness.
#[derive(Debug)]
struct Running {
    readiness: Readiness,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Reports not ready, signals every task to stop and waits for them all.
    async fn stop(mut self) {
        self.readiness.set(false);
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Observability for one node; metrics are dropped when `[observe] metrics` is off.
fn observability(config: &ObserveConfig, metrics: Option<Metrics>) -> Observability {
    Observability {
        metrics: metrics.filter(|_| config.metrics),
        readiness: Readiness::default(),
        qoe: Arc::new(Qoe::new(config.qoe_window)),
        access_log: config.access_log,
        requests: Arc::default(),
    }
}

fn origin_policy(config: &ShieldConfig) -> CachePolicy {
    CachePolicy {
        cache_playlists: false,
        playlist_ttl_cap: config.playlist_ttl_cap,
        stale_if_error: config.stale_if_error,
        negative_ttl: None,
        fill_timeout: config.fill_timeout,
    }
}

impl Server {
    /// Binds every listener, opens the cache and starts serving. `metrics` (the installed
    /// recorder) renders `/metrics` when given and `[observe] metrics` is on.
    pub async fn start(config: Config, metrics: Option<Metrics>) -> Result<Self, StartError> {
        let (http, http_addr) = bind(config.http.listen).await?;
        let (rtmp_listener, rtmp_addr) = bind(config.rtmp.listen).await?;
        let store = Arc::new(store::Store::new());
        let media = cache::hybrid::build(&config.cache).await?;
        let source = StoreSource::new(store.clone(), serve::object::represent);
        let cache = Arc::new(Cache::new(source, media, origin_policy(&config.shield)));
        let metadata = api::Metadata::open(&config.api)?;
        let registry = Arc::new(
            stream::Registry::new(
                config.rtmp.app.clone(),
                &config.keys,
                config.hls.clone(),
                store.clone(),
            )
            .with_ladder(config.ladder.clone())
            .with_key_directory(metadata.key_directory()),
        );
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let settings = RtmpSettings {
            app: config.rtmp.app.clone(),
            handshake_timeout: config.rtmp.handshake_timeout,
            idle_timeout: config.rtmp.idle_timeout,
            max_connections: config.rtmp.max_connections,
        };
        let hook: Arc<dyn rtmp::Publish> = registry.clone();
        tasks.spawn(rtmp::serve(
            rtmp_listener,
            settings,
            hook,
            shutdown.clone().cancelled_owned(),
        ));
        let srt_addr = match &config.srt {
            Some(srt) => {
                let hook: Arc<dyn rtmp::Publish> = registry.clone();
                Some(start_srt(srt, &config.rtmp.app, hook, &mut tasks, &shutdown).await?)
            }
            None => None,
        };
        let observability = observability(&config.observe, metrics);
        let readiness = observability.readiness.clone();
        let api = api::Api::start(
            &config.api,
            &config.keys,
            metadata,
            api::ApiParts {
                registry: registry.clone(),
                media: store.clone(),
                qoe: observability.qoe.clone(),
            },
            &mut tasks,
            &shutdown,
        );
        let chat = config.chat.enabled.then(|| {
            chat::Chat::start(
                &config.chat,
                api.clone(),
                store.clone(),
                &mut tasks,
                &shutdown,
            )
        });
        let router = serve::origin_router(
            serve::OriginState {
                cache: cache.clone(),
                api: Some(api.clone()),
                chat: chat.clone(),
            },
            observability,
        )
        .merge(web::router());
        let secure = serve::secure::start(
            &config.tls,
            &config.limits,
            router.clone(),
            &mut tasks,
            &shutdown,
        )
        .await?;
        serve::secure::spawn_plain(&mut tasks, http, router, &config.limits, &shutdown);
        readiness.set(true);
        tracing::info!(%http_addr, %rtmp_addr, "headwater origin listening");
        Ok(Self {
            http_addr,
            rtmp_addr,
            srt_addr,
            secure,
            store,
            registry,
            api,
            chat,
            cache,
            running: Running {
                readiness,
                shutdown,
                tasks,
            },
        })
    }

    /// Stops accepting, closes publishers, waits for the listeners and closes the cache.
    pub async fn shutdown(self) {
        self.running.stop().await;
        self.cache.close().await;
    }
}

/// A running Shield: a caching HLS proxy in front of an upstream origin.
#[derive(Debug)]
pub struct Shield {
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// The cache (for tests and diagnostics).
    pub cache: Arc<Cache<Upstream>>,
    running: Running,
}

impl Shield {
    /// Binds the listener, opens the cache and starts proxying to `[shield] upstream`.
    pub async fn start(config: &Config, metrics: Option<Metrics>) -> Result<Self, StartError> {
        let shield = &config.shield;
        let (http, http_addr) = bind(shield.listen).await?;
        let upstream = Upstream::new(UpstreamSettings {
            base: shield.upstream.clone(),
            ca_file: shield.upstream_ca_file.clone(),
            connect_timeout: shield.connect_timeout,
            request_timeout: shield.request_timeout,
            retries: shield.retries,
            retry_backoff: shield.retry_backoff,
            breaker_failures: shield.breaker_failures,
            breaker_cooldown: shield.breaker_cooldown,
        })
        .map_err(StartError::Upstream)?;
        let media = cache::hybrid::build(&config.cache).await?;
        let policy = CachePolicy {
            cache_playlists: true,
            negative_ttl: Some(shield.negative_ttl),
            ..origin_policy(shield)
        };
        let cache = Arc::new(Cache::new(upstream, media, policy));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let observability = observability(&config.observe, metrics);
        let readiness = observability.readiness.clone();
        serve::secure::spawn_plain(
            &mut tasks,
            http,
            serve::shield_router(cache.clone(), observability),
            &config.limits,
            &shutdown,
        );
        readiness.set(true);
        tracing::info!(%http_addr, upstream = %shield.upstream, "headwater shield listening");
        Ok(Self {
            http_addr,
            cache,
            running: Running {
                readiness,
                shutdown,
                tasks,
            },
        })
    }

    /// Stops accepting, finishes in-flight responses and closes the cache (flushing to disk).
    pub async fn shutdown(self) {
        self.running.stop().await;
        self.cache.close().await;
    }
}
