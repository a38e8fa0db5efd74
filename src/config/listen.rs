//! `[tls]` and `[limits]`: the TLS/QUIC listener and the limits every HTTP transport enforces.

use super::{invalid, ConfigError};
use bytesize::ByteSize;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[tls]`: HTTPS on TCP (HTTP/1.1 and h2 by ALPN) and HTTP/3 on UDP, beside the plain listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address of the TLS listener (TCP; HTTP/3 uses UDP on the same address). Absent: no TLS
    /// (the default; `headwater serve --dev-tls` sets "127.0.0.1:8443").
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain, leaf first. Required unless `self_signed`.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required unless `self_signed`.
    pub key: Option<PathBuf>,
    /// Development only: generate a self-signed certificate for localhost/127.0.0.1 at start
    /// instead of reading `cert` and `key`. Default false.
    pub self_signed: bool,
    /// Serve HTTP/3 (QUIC) on the UDP port of `listen` and advertise it with `Alt-Svc` on TCP
    /// responses. Default true.
    pub http3: bool,
    /// How often `cert` and `key` are checked for changes (they are also reloaded on SIGHUP);
    /// new handshakes get the new certificate, open connections are kept. Default "5s".
    #[serde(with = "humantime_serde")]
    pub reload_poll: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            cert: None,
            key: None,
            self_signed: false,
            http3: true,
            reload_poll: Duration::from_secs(5),
        }
    }
}

impl TlsConfig {
    /// Checks the section; messages name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_some() && !self.self_signed {
            if self.cert.is_none() {
                return Err(invalid(
                    "tls.cert",
                    "must be set when tls.listen is set (or set tls.self_signed for development)",
                ));
            }
            if self.key.is_none() {
                return Err(invalid("tls.key", "must be set when tls.cert is set"));
            }
        }
        if self.reload_poll < Duration::from_millis(100) {
            return Err(invalid("tls.reload_poll", "must be at least 100ms"));
        }
        Ok(())
    }
}

/// `[limits]`: what one client may hold on any HTTP transport (plain TCP, TLS, QUIC).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections per listener; more are refused (plain HTTP gets a 503). Default 4096.
    pub max_connections: usize,
    /// Concurrent requests (streams) per HTTP/2 or HTTP/3 connection. Default 100.
    pub max_streams: u32,
    /// A connection with no bytes read or written for this long is closed. Default "60s".
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time allowed for the TLS/QUIC handshake and for each request's headers (slowloris
    /// protection). Default "10s".
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers). At least "8 KiB". Default "16 KiB".
    pub max_header_bytes: ByteSize,
    /// On shutdown (SIGTERM), in-flight responses get this long to finish. Default "10s".
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_streams: 100,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: ByteSize::kib(16),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl LimitsConfig {
    /// Checks the section; messages name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if self.max_streams == 0 {
            return Err(invalid("limits.max_streams", "must be at least 1"));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("limits.idle_timeout", "must be at least 1s"));
        }
        if self.header_read_timeout < Duration::from_millis(100) {
            return Err(invalid(
                "limits.header_read_timeout",
                "must be at least 100ms",
            ));
        }
        if self.max_header_bytes < ByteSize::kib(8) || self.max_header_bytes > ByteSize::mib(1) {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be between 8 KiB and 1 MiB",
            ));
        }
        Ok(())
    }
}
