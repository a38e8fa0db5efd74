//! A small bounded HTTP/3 load client for bench/serve_protocols.sh (no packaged h3 load tool
//! works against a self-signed origin here): `--connections` QUIC connections, each with
//! `--streams` requests in flight, `--requests` in total, one URL path. Prints one JSON line:
//! requests, bytes, seconds, p50/p99 latency.
//!
//! `cargo run --release --example h3_load -- --addr 127.0.0.1:8443 --path /x --requests 2000`

use bytes::Buf;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Args {
    addr: SocketAddr,
    path: String,
    requests: usize,
    connections: usize,
    streams: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        addr: "127.0.0.1:8443".parse()?,
        path: "/healthz".into(),
        requests: 1000,
        connections: 4,
        streams: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value.parse()?,
            "--path" => args.path = value,
            "--requests" => args.requests = value.parse()?,
            "--connections" => args.connections = value.parse()?,
            "--streams" => args.streams = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(args.requests <= 10_000_000, "--requests is bounded to 10M");
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(NoVerify))
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let left = Arc::new(AtomicUsize::new(args.requests));
    let bytes = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let connection = endpoint.connect(args.addr, "localhost")?.await?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection)).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        for _ in 0..args.streams {
            let mut send = send.clone();
            let (left, bytes, errors) = (left.clone(), bytes.clone(), errors.clone());
            let uri = format!("https://{}{}", args.addr, args.path);
            workers.spawn(async move {
                let mut latencies = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let began = Instant::now();
                    let request = hyper::http::Request::get(&uri).body(()).expect("request");
                    let result: anyhow::Result<usize> = async {
                        let mut stream = send.send_request(request).await?;
                        stream.finish().await?;
                        let response = stream.recv_response().await?;
                        anyhow::ensure!(response.status() == 200, "status {}", response.status());
                        let mut got = 0;
                        while let Some(chunk) = stream.recv_data().await? {
                            got += chunk.remaining();
                        }
                        Ok(got)
                    }
                    .await;
                    match result {
                        Ok(got) => {
                            bytes.fetch_add(got, Ordering::Relaxed);
                            latencies.push(began.elapsed());
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            });
        }
        drop(send);
    }
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done?);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let total = bytes.load(Ordering::Relaxed);
    println!(
        "{{\"requests\":{},\"errors\":{},\"bytes\":{},\"seconds\":{:.3},\"rps\":{:.1},\"mbytes_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        latencies.len(),
        errors.load(Ordering::Relaxed),
        total,
        seconds,
        latencies.len() as f64 / seconds,
        total as f64 / seconds / 1e6,
        pct(0.50),
        pct(0.99)
    );
    endpoint.close(0u32.into(), b"done");
    Ok(())
}
