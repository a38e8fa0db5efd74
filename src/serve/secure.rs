//! Starting the secure listeners of `[tls]`: HTTPS on TCP and HTTP/3 on the same UDP port,
//! both serving the given Router, plus the certificate reload watcher. `Server::start` calls
//! [`start`]; the tasks it spawns stop with the server's cancellation token.

use super::limits::Limits;
use super::tls::{CertStore, TlsError};
use super::{h3, tcp, transport};
use crate::config::{LimitsConfig, TlsConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why the secure listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The certificate could not be loaded or the TLS config built.
    #[error("TLS setup failed")]
    Tls(#[from] TlsError),
    /// The TCP listener could not be bound.
    #[error("cannot listen on TCP {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The QUIC endpoint could not be set up.
    #[error("cannot start HTTP/3")]
    H3(#[from] h3::H3Error),
}

/// The running secure listeners.
#[derive(Debug, Clone)]
pub struct SecureEndpoints {
    /// HTTPS over TCP (HTTP/1.1 and h2).
    pub tcp_addr: SocketAddr,
    /// HTTP/3 over UDP, when on.
    pub h3_addr: Option<SocketAddr>,
    /// The certificate in use (reloadable).
    pub certs: Arc<CertStore>,
}

/// Binds TCP on `config.listen` and, with HTTP/3 on, UDP on the same port (with port 0 the
/// kernel's TCP port is reused for UDP, retried a few times if that UDP port is taken).
async fn bind_pair(
    addr: SocketAddr,
    quic: Option<(&rustls::ServerConfig, &Limits)>,
) -> Result<(TcpListener, Option<quinn::Endpoint>), SecureError> {
    let attempts = if addr.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| SecureError::Bind { addr, source })?;
        let bound = tcp
            .local_addr()
            .map_err(|source| SecureError::Bind { addr, source })?;
        let Some((tls, limits)) = quic else {
            return Ok((tcp, None));
        };
        match h3::bind(bound, tls.clone(), limits) {
            Ok(endpoint) => return Ok((tcp, Some(endpoint))),
            Err(error) => last = Some(error),
        }
    }
    Err(last.map_or_else(
        || SecureError::Bind {
            addr,
            source: std::io::Error::other("no attempt"),
        },
        SecureError::H3,
    ))
}

/// Starts HTTPS (and HTTP/3) with `router` when `config.listen` is set; `None` otherwise.
pub async fn start(
    config: &TlsConfig,
    limits: &LimitsConfig,
    router: axum::Router,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<Option<SecureEndpoints>, SecureError> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    let limits = Limits::from(limits);
    let certs = CertStore::load(config)?;
    let quic_tls = if config.http3 {
        Some(certs.quic_config()?)
    } else {
        None
    };
    let (tcp_listener, endpoint) =
        bind_pair(listen, quic_tls.as_ref().map(|t| (t, &limits))).await?;
    let tcp_addr = tcp_listener
        .local_addr()
        .map_err(|source| SecureError::Bind {
            addr: listen,
            source,
        })?;
    let h3_addr = endpoint.as_ref().and_then(|e| e.local_addr().ok());
    let alt_svc = h3_addr.map(|a| format!("h3=\":{}\"; ma=86400", a.port()));
    let service = tcp::TcpService {
        router: transport::layer(router.clone(), "https", alt_svc),
        tls: Some(tokio_rustls::TlsAcceptor::from(certs.tcp_config()?)),
        limits: limits.clone(),
    };
    tasks.spawn(tcp::serve(tcp_listener, service, shutdown.clone()));
    if let Some(endpoint) = endpoint {
        let router = transport::layer(router, "https", None);
        tasks.spawn(h3::serve(endpoint, router, limits, shutdown.clone()));
    }
    tasks.spawn(super::tls::watch(
        certs.clone(),
        config.reload_poll,
        shutdown.clone(),
    ));
    if let Some(spki) = certs.spki_sha256().filter(|_| config.self_signed) {
        tracing::info!(
            %tcp_addr,
            "development TLS (self-signed); Chromium: --ignore-certificate-errors-spki-list={spki}"
        );
    }
    tracing::info!(%tcp_addr, h3 = ?h3_addr, "headwater TLS listening");
    Ok(Some(SecureEndpoints {
        tcp_addr,
        h3_addr,
        certs,
    }))
}

/// Serves plain HTTP (HTTP/1.1 and h2c) with `router` under `limits` until `shutdown`.
pub fn spawn_plain(
    tasks: &mut JoinSet<()>,
    listener: TcpListener,
    router: axum::Router,
    limits: &LimitsConfig,
    shutdown: &CancellationToken,
) {
    let service = tcp::TcpService {
        router: transport::layer(router, "http", None),
        tls: None,
        limits: Limits::from(limits),
    };
    tasks.spawn(tcp::serve(listener, service, shutdown.clone()));
}
