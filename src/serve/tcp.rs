//! The TCP listeners: plain HTTP (HTTP/1.1 and h2c) and TLS (ALPN `h2` / `http/1.1`), both
//! served by hyper-util's auto builder with the shared Router, under [`Limits`].
//!
//! One task per connection owns it: the TLS handshake (bounded by the header timeout), the
//! hyper connection (request-head timeout and size from the limits, h2 stream limit) and an
//! idle watchdog. Past `max_connections`, plain connections get a one-shot 503 and TLS ones are
//! closed. On shutdown the listener stops accepting, asks every connection to finish
//! gracefully (h1: after the current response; h2: GOAWAY) and cuts what is left after
//! `shutdown_grace`.

use super::limits::{Activity, ConnectionGate, Limits, TrackedIo};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A plain listener over its limit answers this and closes.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
retry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\n\r\n";

/// What one TCP listener serves.
#[derive(Clone)]
pub struct TcpService {
    /// The (transport-layered) Router.
    pub router: axum::Router,
    /// TLS, or `None` for plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Limits for this listener.
    pub limits: Limits,
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains connections for
/// at most `limits.shutdown_grace`.
pub async fn serve(listener: TcpListener, service: TcpService, shutdown: CancellationToken) {
    let transport = if service.tls.is_some() { "tls" } else { "tcp" };
    let gate = ConnectionGate::new(service.limits.max_connections, transport);
    let builder = Arc::new(builder(&service.limits));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, transport, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = gate.admit() else {
            if service.tls.is_none() {
                let _ = stream.try_write(OVERLOADED);
            }
            tracing::debug!(%peer, transport, "connection refused: listener full");
            continue;
        };
        let service = service.clone();
        let builder = builder.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, peer, &service, &builder, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let grace = service.limits.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            transport,
            "shutdown grace over; closing connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    service: &TcpService,
    builder: &auto::Builder<TokioExecutor>,
    stop: CancellationToken,
) {
    let limits = &service.limits;
    let activity = Activity::new();
    let io = TrackedIo::new(stream, activity.clone());
    match &service.tls {
        None => drive(io, peer, service, builder, activity, stop).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await;
            match handshake {
                Ok(Ok(tls)) => drive(tls, peer, service, builder, activity, stop).await,
                Ok(Err(error)) => {
                    metrics::counter!("headwater_tls_handshake_failures_total", "transport" => "tcp")
                        .increment(1);
                    tracing::debug!(%error, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::counter!("headwater_tls_handshake_failures_total", "transport" => "tcp")
                        .increment(1);
                    tracing::debug!("TLS handshake timed out");
                }
            }
        }
    }
}

async fn drive<I>(
    io: I,
    peer: std::net::SocketAddr,
    service: &TcpService,
    builder: &auto::Builder<TokioExecutor>,
    activity: Activity,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &service.limits;
    // Handlers that need the client address (rate limits, viewer sessions) find it here.
    let with_peer = move |mut request: hyper::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    };
    let hyper_service = TowerToHyperService::new(tower::ServiceExt::map_request(
        service.router.clone(),
        with_peer,
    ));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let idle_at = Instant::from_std(activity.deadline(limits.idle_timeout));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at) => {
                if Instant::now() >= Instant::from_std(activity.deadline(limits.idle_timeout)) {
                    metrics::counter!("headwater_http_idle_closed_total").increment(1);
                    tracing::debug!("closing idle connection");
                    return;
                }
            }
        }
    }
}
