//! Test clients for the secure transports: HTTP/1.1 and h2 over TLS (hyper + tokio-rustls)
//! and HTTP/3 (quinn + h3). The server certificate is pinned: the client accepts whatever
//! certificate is presented and records it, so tests can compare it (certificate reload).

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper::http::{HeaderMap, Method, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One response, read to the end.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// Accepts any server certificate (the test pins it by comparing) and records the last leaf.
#[derive(Debug, Default)]
pub struct Recorder {
    pub last_leaf: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.last_leaf.lock().expect("lock") = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A rustls client config with `alpn`, verifying through `recorder`.
pub fn client_tls(alpn: &[&[u8]], recorder: Arc<Recorder>) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects TLS to `addr` offering `alpn`; returns the stream and the negotiated protocol.
pub async fn tls_connect(
    addr: SocketAddr,
    alpn: &[u8],
    recorder: Arc<Recorder>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&[alpn], recorder)));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "ALPN did not select {}",
        String::from_utf8_lossy(alpn)
    );
    tls
}

fn request(
    method: &Method,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Empty<Bytes>> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(format!("https://{authority}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Empty::new()).expect("request")
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> Fetched {
    let (parts, body) = response.into_parts();
    Fetched {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// GETs `path` over HTTP/1.1 + TLS (one connection per call).
pub async fn get_h1_tls(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let tls = tls_connect(addr, b"http/1.1", Arc::default()).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let mut req = request(&Method::GET, &addr.to_string(), path, headers);
    *req.uri_mut() = path.parse().expect("path");
    req.headers_mut()
        .insert("host", addr.to_string().parse().expect("host"));
    collect(send.send_request(req).await.expect("h1 request")).await
}

/// An h2 connection over TLS.
pub struct H2 {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    authority: String,
}

impl H2 {
    /// Connects and negotiates h2 by ALPN.
    pub async fn connect(addr: SocketAddr, recorder: Arc<Recorder>) -> Self {
        let tls = tls_connect(addr, b"h2", recorder).await;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        Self {
            send,
            authority: addr.to_string(),
        }
    }

    /// Sends one request on this connection.
    pub async fn fetch(&mut self, method: Method, path: &str, headers: &[(&str, &str)]) -> Fetched {
        let req = request(&method, &self.authority, path, headers);
        collect(self.send.send_request(req).await.expect("h2 request")).await
    }
}

/// An HTTP/3 connection.
pub struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

impl H3 {
    /// Connects over QUIC (ALPN h3).
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        Self::connect_with(addr, Arc::default()).await
    }

    /// Connects over QUIC, recording the presented certificate in `recorder`.
    pub async fn connect_with(addr: SocketAddr, recorder: Arc<Recorder>) -> Result<Self, String> {
        let tls = client_tls(&[b"h3"], recorder);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("udp");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = endpoint
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            send,
            authority: addr.to_string(),
            _endpoint: endpoint,
        })
    }

    /// Sends one request (no body) and reads the whole response.
    pub async fn fetch(&mut self, method: Method, path: &str, headers: &[(&str, &str)]) -> Fetched {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(()).expect("request");
        let mut stream = self.send.send_request(req).await.expect("h3 request");
        stream.finish().await.expect("h3 finish");
        let response = stream.recv_response().await.expect("h3 response");
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("h3 body") {
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                body.extend_from_slice(piece);
                let n = piece.len();
                chunk.advance(n);
            }
        }
        let (parts, ()) = response.into_parts();
        Fetched {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body: Bytes::from(body),
        }
    }
}
