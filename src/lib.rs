//! Headwater: a live-video origin server. RTMP in, CMAF/fMP4 HLS out.
//!
//! Media flows one way: `ingest` (crate `headwater-ingest`) -> [`stream`] -> [`package`] ->
//! [`store`] -> [`serve`]. [`config`], [`names`] and [`observe`] are leaves everyone may use.
//! [`Server`] wires the pieces; `main.rs` is only the command line around it.

pub mod config;
pub mod names;
pub mod observe;
pub mod package;
pub mod serve;
pub mod store;
pub mod stream;
pub mod transcode;

use config::Config;
use headwater_ingest::rtmp::{self, RtmpSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running Headwater: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Server {
    /// Where HTTP is served (the port is real even when the config said 0).
    pub http_addr: SocketAddr,
    /// Where RTMP is accepted.
    pub rtmp_addr: SocketAddr,
    /// The live store (for tests and diagnostics).
    pub store: Arc<store::Store>,
    /// The stream registry (for tests and diagnostics).
    pub registry: Arc<stream::Registry>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds every listener and starts serving. `metrics` renders `/metrics` when given.
    pub async fn start(
        config: Config,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> std::io::Result<Self> {
        let http = TcpListener::bind(config.http.listen).await?;
        let rtmp_listener = TcpListener::bind(config.rtmp.listen).await?;
        let http_addr = http.local_addr()?;
        let rtmp_addr = rtmp_listener.local_addr()?;
        let store = Arc::new(store::Store::new());
        let registry = Arc::new(stream::Registry::new(
            config.rtmp.app.clone(),
            &config.keys,
            config.hls.clone(),
            store.clone(),
        ));
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
        let router = serve::router(serve::AppState {
            store: store.clone(),
            metrics,
        });
        let stop = shutdown.clone().cancelled_owned();
        tasks.spawn(async move {
            if let Err(error) = serve::serve_tcp(http, router, stop).await {
                tracing::error!(%error, "http listener failed");
            }
        });
        tracing::info!(%http_addr, %rtmp_addr, "headwater listening");
        Ok(Self {
            http_addr,
            rtmp_addr,
            store,
            registry,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, closes publishers and waits for the listeners to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
