//! The HTTP/3 listener: QUIC (quinn) + HTTP/3 (h3, h3-quinn) driving the same axum Router as
//! TCP. Each request stream becomes an `http::Request` whose body streams from QUIC; the
//! Router's response streams back frame by frame (HEAD sends no body). `Date` and
//! `Content-Length` are added when the Router left them to the transport, as hyper does on TCP.
//!
//! Limits: connections are admitted through a [`ConnectionGate`] (refused past the limit),
//! QUIC caps concurrent request streams and idles connections out, the handshake and each
//! request head must arrive within the header timeout, and heads are capped in size. On
//! shutdown each connection sends GOAWAY, in-flight requests get `shutdown_grace`, then the
//! endpoint closes.

use super::limits::{ConnectionGate, Limits};
use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, Version};
use bytes::{Buf, Bytes};
use http_body::Body as HttpBody;
use quinn::crypto::rustls::QuicServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Why the HTTP/3 endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    /// The rustls config is not usable for QUIC (needs TLS 1.3 with an initial suite).
    #[error("TLS configuration unusable for QUIC")]
    Crypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds a QUIC endpoint on `addr` with `tls` (ALPN h3) and the transport limits.
pub fn bind(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    limits: &Limits,
) -> Result<quinn::Endpoint, H3Error> {
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_streams.into())
        // The client's control, QPACK encoder/decoder streams, plus grease.
        .max_concurrent_uni_streams(8u32.into())
        .max_idle_timeout(limits.idle_timeout.try_into().ok());
    config.transport_config(Arc::new(transport));
    config.max_incoming(limits.max_connections.saturating_mul(2).max(16));
    quinn::Endpoint::server(config, addr).map_err(|source| H3Error::Bind { addr, source })
}

/// Serves `router` on `endpoint` until `shutdown` is cancelled, then drains for at most
/// `limits.shutdown_grace` and closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let gate = ConnectionGate::new(limits.max_connections, "quic");
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        let Some(permit) = gate.admit() else {
            incoming.refuse();
            continue;
        };
        let router = router.clone();
        let limits = limits.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(incoming, router, &limits, stop).await;
            drop(permit);
        });
    }
    if tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            "shutdown grace over; closing QUIC connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    endpoint.close(0u32.into(), b"shutdown");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
}

fn handshake_failed(why: &str) {
    metrics::counter!("headwater_tls_handshake_failures_total", "transport" => "quic").increment(1);
    tracing::debug!(why, "QUIC handshake failed");
}

async fn serve_connection(
    incoming: quinn::Incoming,
    router: axum::Router,
    limits: &Limits,
    stop: CancellationToken,
) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => return handshake_failed(&error.to_string()),
    };
    let connection = match tokio::time::timeout(limits.header_read_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return handshake_failed(&error.to_string()),
        Err(_) => return handshake_failed("timed out"),
    };
    let peer = connection.remote_address();
    let built = h3::server::builder()
        .max_field_section_size(limits.max_header_bytes as u64)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(error) => {
            tracing::debug!(%error, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let router = router.clone();
                    let timeout = limits.header_read_timeout;
                    requests.spawn(async move {
                        match tokio::time::timeout(timeout, resolver.resolve_request()).await {
                            Ok(Ok((request, stream))) => serve_request(request, stream, router, peer).await,
                            Ok(Err(error)) => tracing::debug!(%error, "bad HTTP/3 request"),
                            Err(_) => tracing::debug!("HTTP/3 request head timed out"),
                        }
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    if !error.is_h3_no_error() {
                        tracing::debug!(%error, "HTTP/3 connection closed");
                    }
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            () = stop.cancelled(), if !draining => {
                draining = true;
                if let Err(error) = h3.shutdown(0).await {
                    tracing::debug!(%error, "HTTP/3 GOAWAY failed");
                    break;
                }
            }
        }
    }
    while requests.join_next().await.is_some() {}
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn serve_request(
    request: Request<()>,
    stream: Stream,
    router: axum::Router,
    peer: std::net::SocketAddr,
) {
    let (mut send, recv) = stream.split();
    let body = Body::from_stream(futures_util::stream::unfold(recv, |mut recv| async move {
        match recv.recv_data().await {
            Ok(Some(mut chunk)) => {
                let bytes = chunk.copy_to_bytes(chunk.remaining());
                Some((Ok::<Bytes, h3::error::StreamError>(bytes), recv))
            }
            Ok(None) => None,
            Err(error) => Some((Err(error), recv)),
        }
    }));
    let (mut parts, ()) = request.into_parts();
    parts.version = Version::HTTP_3;
    parts.extensions.insert(axum::extract::ConnectInfo(peer));
    let head_only = parts.method == Method::HEAD;
    let request = Request::from_parts(parts, body);
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (mut parts, mut body) = response.into_parts();
    if !parts.headers.contains_key(header::DATE) {
        if let Ok(date) =
            HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        {
            parts.headers.insert(header::DATE, date);
        }
    }
    if !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    if let Err(error) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(%error, "HTTP/3 response head not sent");
        return;
    }
    if !head_only {
        loop {
            let frame =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
            let result = match frame {
                None => break,
                Some(Err(error)) => {
                    tracing::debug!(%error, "response body failed");
                    send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => Ok(()),
                    Ok(data) => send.send_data(data).await,
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => send.send_trailers(trailers).await,
                        Err(_) => Ok(()),
                    },
                },
            };
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP/3 response body not sent");
                return;
            }
        }
    }
    if let Err(error) = send.finish().await {
        tracing::debug!(%error, "HTTP/3 stream not finished");
    }
}
