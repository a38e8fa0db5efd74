//! The Shield's [`Source`]: another origin over HTTP or HTTPS, with pooled connections,
//! timeouts, bounded retries with exponential backoff and a circuit breaker.

use super::breaker::Breaker;
use super::{unix_ms, CachedObject, ObjectKey, Source, SourceError};
use reqwest::header::{
    HeaderMap, HeaderValue, AGE, CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How the Shield talks to its upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Base URL, e.g. `http://origin:8080` or `https://origin` (no trailing slash needed).
    pub base: String,
    /// PEM certificates trusted for HTTPS besides the Mozilla roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout (headers and body).
    pub request_timeout: Duration,
    /// Retries after the first attempt (connection errors, timeouts, 5xx).
    pub retries: u32,
    /// Backoff before the first retry; doubles each time.
    pub retry_backoff: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long the circuit stays open.
    pub breaker_cooldown: Duration,
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CA file could not be read.
    #[error("cannot read the upstream CA certificates from {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate, or a malformed one.
    #[error("no usable CA certificate in {path}")]
    NoCa {
        /// The file.
        path: PathBuf,
        /// The parse error, if one.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
}

/// The certificates of a PEM bundle, trusted for HTTPS besides the Mozilla roots.
fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        result => Err(UpstreamError::NoCa {
            path: path.to_owned(),
            source: result.err(),
        }),
    }
}

/// An error with its causes, for logs (reqwest's own message omits e.g. the TLS failure).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// An HTTP upstream.
#[derive(Debug)]
pub struct Upstream {
    settings: UpstreamSettings,
    client: reqwest::Client,
    breaker: Breaker,
}

/// The outcome of one attempt.
enum Attempt {
    Done(CachedObject),
    Retry(SourceError),
}

/// A header to replay: kept as received (visible ASCII only, as before replaying it).
fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<HeaderValue> {
    headers.get(name).filter(|v| v.to_str().is_ok()).cloned()
}

impl Upstream {
    /// A client for `settings.base`, with a keep-alive connection pool (HTTP/1.1; HTTP/2 when
    /// the upstream negotiates it over TLS).
    pub fn new(settings: UpstreamSettings) -> Result<Self, UpstreamError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &settings.ca_file {
            for certificate in ca_certificates(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        let breaker = Breaker::new(settings.breaker_failures, settings.breaker_cooldown);
        Ok(Self {
            settings,
            client,
            breaker,
        })
    }

    /// True while the circuit is open.
    pub fn is_down(&self) -> bool {
        self.breaker.is_open()
    }

    async fn attempt(&self, url: &str) -> Attempt {
        let started = Instant::now();
        let result = self.client.get(url).send().await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!("headwater_upstream_errors_total", "kind" => if error.is_timeout() { "timeout" } else { "connect" }).increment(1);
                return Attempt::Retry(if error.is_timeout() {
                    SourceError::Timeout
                } else {
                    SourceError::Failed(with_causes(&error).into())
                });
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if status >= 500 {
            metrics::counter!("headwater_upstream_errors_total", "kind" => "status").increment(1);
            return Attempt::Retry(SourceError::Failed(
                format!("upstream answered {status}").into(),
            ));
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                metrics::counter!("headwater_upstream_errors_total", "kind" => "body").increment(1);
                return Attempt::Retry(if error.is_timeout() {
                    SourceError::Timeout
                } else {
                    SourceError::Failed(with_causes(&error).into())
                });
            }
        };
        metrics::histogram!("headwater_upstream_request_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("headwater_upstream_bytes_total").increment(body.len() as u64);
        if status != 200 {
            // 404 and other client errors are answers, not failures: passed on, never as content.
            let mut object = CachedObject::not_found();
            object.status = status;
            return Attempt::Done(object);
        }
        Attempt::Done(CachedObject {
            status,
            body,
            content_type: header(&headers, CONTENT_TYPE),
            etag: header(&headers, ETAG),
            cache_control: header(&headers, CACHE_CONTROL),
            last_modified: header(&headers, LAST_MODIFIED),
            fetched_at_ms: unix_ms(SystemTime::now()),
            source_age: headers
                .get(AGE)
                .and_then(|a| a.to_str().ok())
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(0),
        })
    }
}

impl Source for Upstream {
    async fn fetch(&self, key: &ObjectKey) -> Result<CachedObject, SourceError> {
        self.breaker.allow().map_err(|_| SourceError::CircuitOpen)?;
        let url = format!(
            "{}{}",
            self.settings.base.trim_end_matches('/'),
            key.as_str()
        );
        let mut backoff = self.settings.retry_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            metrics::counter!("headwater_upstream_requests_total").increment(1);
            match self.attempt(&url).await {
                Attempt::Done(object) => {
                    self.breaker.record(true);
                    return Ok(object);
                }
                Attempt::Retry(error) if attempts > self.settings.retries => {
                    self.breaker.record(false);
                    tracing::warn!(%url, %error, attempts, "upstream fetch failed");
                    return Err(error);
                }
                Attempt::Retry(error) => {
                    tracing::debug!(%url, %error, attempts, "upstream fetch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            ca_certificates(&missing),
            Err(UpstreamError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        assert!(matches!(
            ca_certificates(&empty),
            Err(UpstreamError::NoCa { .. })
        ));
        let bundle = dir.path().join("ca.pem");
        let pems: Vec<String> = (0..2)
            .map(|_| {
                rcgen::generate_simple_self_signed(vec!["origin".to_owned()])
                    .expect("rcgen")
                    .cert
                    .pem()
            })
            .collect();
        std::fs::write(&bundle, pems.concat()).expect("write");
        assert_eq!(ca_certificates(&bundle).expect("bundle").len(), 2);
    }
}
