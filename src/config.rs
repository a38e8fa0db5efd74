//! Typed configuration, loaded from TOML and validated before anything starts.
//!
//! Every field's doc states its unit and default; the same text stands above the key in
//! `config/headwater.toml`, which parses to exactly [`Config::default()`]. Each module gets its
//! own section, never the root. Errors name the offending field path.

mod api;
mod chat;
mod ladder;
mod listen;

use crate::names::StreamName;
pub use api::{ApiConfig, WebhooksConfig};
use bytesize::ByteSize;
pub use chat::ChatConfig;
pub use ladder::{
    LadderConfig, LadderOverride, RenditionConfig, StreamLadder, H264_PROFILES, SOURCE_RENDITION,
    X264_PRESETS,
};
pub use listen::{LimitsConfig, TlsConfig};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shipped demo configuration, embedded so `headwater serve` runs without files.
pub const DEFAULT_TOML: &str = include_str!("../config/headwater.toml");

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown field or a value of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable; the message names the field path.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted field path, e.g. `hls.segment_target`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP serving (players and CDNs).
    pub http: HttpConfig,
    /// RTMP ingest (broadcasters).
    pub rtmp: RtmpConfig,
    /// SRT ingest (`[srt]`); none when absent.
    #[serde(default)]
    pub srt: Option<SrtConfig>,
    /// HLS packaging and playlists.
    pub hls: HlsConfig,
    /// The media cache (memory + disk tiers).
    pub cache: CacheConfig,
    /// Shield mode: a caching proxy in front of another origin (`headwater shield`).
    pub shield: ShieldConfig,
    /// Access logs, metrics and viewer QoE.
    pub observe: ObserveConfig,
    /// The adaptive bitrate ladder (renditions per stream); the default ladder when absent.
    #[serde(default)]
    pub ladder: LadderConfig,
    /// HTTPS and HTTP/3 listener (`[tls]`); none when absent.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Limits on every HTTP transport (`[limits]`); the defaults when absent.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The JSON API, metadata store, viewer counting and webhooks (`[api]`); defaults when absent.
    #[serde(default)]
    pub api: ApiConfig,
    /// Live chat over WebSocket beside each stream (`[chat]`); defaults when absent.
    #[serde(default)]
    pub chat: ChatConfig,
    /// Stream keys allowed to publish; each maps a secret key to a public stream name.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// `[cache]`: the hybrid cache segments and init sections are served from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory tier size (bytes of cached bodies). At least "16 MiB". Default "256 MiB".
    pub memory: ByteSize,
    /// Disk tier size; "0 B" disables the disk tier. At least "128 MiB" otherwise. Default "1 GiB".
    pub disk: ByteSize,
    /// Directory of the disk tier (created if missing; reopened after a restart). Default
    /// "data/cache".
    pub dir: PathBuf,
}

/// `[observe]`: access logs, metrics and viewer QoE.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// One log line per HTTP request (target `headwater::access`). Default true.
    pub access_log: bool,
    /// Record metrics and serve them at `/metrics`. Default true.
    pub metrics: bool,
    /// A viewer session (CMCD `sid`) counts as active this long after its last request.
    /// Default "60s".
    #[serde(with = "humantime_serde")]
    pub qoe_window: Duration,
}

/// `[shield]`: settings of `headwater shield` (command-line flags override them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShieldConfig {
    /// Base URL of the upstream origin, `http://` or `https://`. Default "http://127.0.0.1:8080".
    pub upstream: String,
    /// PEM file of CA certificates trusted for an `https://` upstream besides the Mozilla
    /// roots (e.g. a private CA, or the origin's own self-signed certificate). Default none.
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Address the shield serves on. Default "127.0.0.1:8082".
    pub listen: SocketAddr,
    /// TCP connect timeout to the upstream. Default "1s".
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout to the upstream. Default "5s".
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries after a failed upstream attempt (connect error, timeout, 5xx). 0 to 5. Default 2.
    pub retries: u32,
    /// Backoff before the first retry; doubles for each next one. Default "50ms".
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Consecutive failed fetches that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit refuses upstream requests before one trial. Default "5s".
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// A playlist may be served this long past its lifetime while the upstream fails. Default "30s".
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Longest playlist lifetime (media playlists are also capped at half their target
    /// duration). Default "3s".
    #[serde(with = "humantime_serde")]
    pub playlist_ttl_cap: Duration,
    /// How long an upstream 404 is remembered. Default "1s".
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// How long a request waits for another request's fill of the same object. Default "10s".
    #[serde(with = "humantime_serde")]
    pub fill_timeout: Duration,
}

/// `[http]`: the plain-HTTP listener (HTTP/1.1 and h2c).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
}

/// `[rtmp]`: the RTMP ingest listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpConfig {
    /// Address to listen on. Default `127.0.0.1:1935` in the demo, `0.0.0.0:1935` in production.
    pub listen: SocketAddr,
    /// Application name in `rtmp://host/<app>/<key>`. Default `live`.
    pub app: String,
    /// Time allowed for the handshake, `connect` and `publish`. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A publisher that sends nothing for this long is disconnected. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Maximum simultaneous RTMP connections. Default `64`.
    pub max_connections: usize,
}

/// `[srt]`: the SRT ingest listener (MPEG-TS over SRT, caller-mode publishers).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrtConfig {
    /// UDP address to listen on. Default `127.0.0.1:9000` in the demo, `0.0.0.0:9000` in production.
    pub listen: SocketAddr,
    /// Receiver latency: how long SRT may wait for lost packets to be retransmitted. 20ms to 10s.
    /// Default `120ms`.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// AES passphrase publishers must use (10-79 characters); absent: unencrypted only. Default none.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// Maximum simultaneous SRT publishers; more are refused in the handshake. Default `64`.
    pub max_connections: usize,
    /// A publisher that sends nothing for this long is disconnected. At least 1s. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for SrtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtConfig")
            .field("listen", &self.listen)
            .field("latency", &self.latency)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl SrtConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.latency < Duration::from_millis(20) || self.latency > Duration::from_secs(10) {
            return Err(invalid("srt.latency", "must be between 20ms and 10s"));
        }
        if let Some(passphrase) = &self.passphrase {
            if !(10..=79).contains(&passphrase.len()) {
                return Err(invalid("srt.passphrase", "must be 10-79 characters"));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("srt.max_connections", "must be at least 1"));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("srt.idle_timeout", "must be at least 1s"));
        }
        Ok(())
    }
}

/// `[hls]`: segmenting, live window and stream lifetime.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HlsConfig {
    /// Segments are cut on the first keyframe at or after this duration. 1s to 30s. Default `6s`.
    #[serde(with = "humantime_serde")]
    pub segment_target: Duration,
    /// Segments listed in a live media playlist. At least 6. Default `6`.
    pub live_window: usize,
    /// After a publisher disconnects, a reconnect within this time continues the stream
    /// (with EXT-X-DISCONTINUITY); after it the playlist gets EXT-X-ENDLIST. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// An ended stream stays fetchable (playlist with ENDLIST, its segments) this long. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub ended_retention: Duration,
}

/// One `[[keys]]` entry.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The secret stream key publishers put in the RTMP URL.
    pub key: String,
    /// The public stream name it publishes.
    pub stream: StreamName,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("key", &"<secret>")
            .field("stream", &self.stream)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
            rtmp: RtmpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 1935)),
                app: "live".into(),
                handshake_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(10),
                max_connections: 64,
            },
            srt: Some(SrtConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
                latency: Duration::from_millis(120),
                passphrase: None,
                max_connections: 64,
                idle_timeout: Duration::from_secs(10),
            }),
            hls: HlsConfig {
                segment_target: Duration::from_secs(6),
                live_window: 6,
                reconnect_grace: Duration::from_secs(10),
                ended_retention: Duration::from_secs(60),
            },
            cache: CacheConfig {
                memory: ByteSize::mib(256),
                disk: ByteSize::gib(1),
                dir: PathBuf::from("data/cache"),
            },
            observe: ObserveConfig {
                access_log: true,
                metrics: true,
                qoe_window: Duration::from_secs(60),
            },
            shield: ShieldConfig {
                upstream: "http://127.0.0.1:8080".into(),
                upstream_ca_file: None,
                listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(5),
                retries: 2,
                retry_backoff: Duration::from_millis(50),
                breaker_failures: 5,
                breaker_cooldown: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(30),
                playlist_ttl_cap: Duration::from_secs(3),
                negative_ttl: Duration::from_secs(1),
                fill_timeout: Duration::from_secs(10),
            },
            ladder: LadderConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            api: ApiConfig::default(),
            chat: ChatConfig::default(),
            keys: vec![KeyConfig {
                key: "demo".into(),
                stream: StreamName::parse("demo").expect("literal is a valid name"),
            }],
        }
    }
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks every cross-field and range rule; the error names the field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.rtmp;
        if r.app.is_empty() || r.app.contains('/') {
            return Err(invalid("rtmp.app", "must be a non-empty name without '/'"));
        }
        if r.handshake_timeout < Duration::from_millis(100) {
            return Err(invalid("rtmp.handshake_timeout", "must be at least 100ms"));
        }
        if r.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("rtmp.idle_timeout", "must be at least 1s"));
        }
        if r.max_connections == 0 {
            return Err(invalid("rtmp.max_connections", "must be at least 1"));
        }
        if let Some(srt) = &self.srt {
            srt.validate()?;
        }
        let h = &self.hls;
        if h.segment_target < Duration::from_secs(1) || h.segment_target > Duration::from_secs(30) {
            return Err(invalid("hls.segment_target", "must be between 1s and 30s"));
        }
        if !h.segment_target.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(invalid(
                "hls.segment_target",
                "must be a whole number of milliseconds",
            ));
        }
        if h.live_window < 6 {
            return Err(invalid(
                "hls.live_window",
                "must be at least 6 segments (Apple HLS authoring spec)",
            ));
        }
        if h.reconnect_grace > Duration::from_secs(600) {
            return Err(invalid("hls.reconnect_grace", "must be at most 10m"));
        }
        let c = &self.cache;
        if c.memory < ByteSize::mib(16) {
            return Err(invalid("cache.memory", "must be at least 16 MiB"));
        }
        if c.disk.as_u64() != 0 && c.disk < ByteSize::mib(128) {
            return Err(invalid(
                "cache.disk",
                "must be 0 B (no disk tier) or at least 128 MiB",
            ));
        }
        if c.disk.as_u64() != 0 && c.dir.as_os_str().is_empty() {
            return Err(invalid("cache.dir", "must be set when cache.disk is not 0"));
        }
        self.shield.validate()?;
        self.ladder.validate()?;
        self.tls.validate()?;
        self.limits.validate()?;
        self.api.validate()?;
        self.chat.validate()?;
        let mut seen = HashSet::new();
        for (i, entry) in self.keys.iter().enumerate() {
            if entry.key.len() < 4
                || entry.key.len() > 256
                || entry
                    .key
                    .chars()
                    .any(|c| c.is_whitespace() || c == '/' || c == '?')
            {
                return Err(invalid(
                    format!("keys[{i}].key"),
                    "must be 4-256 characters without whitespace, '/' or '?'",
                ));
            }
            if !seen.insert(entry.key.as_str()) {
                return Err(invalid(format!("keys[{i}].key"), "is listed twice"));
            }
        }
        Ok(())
    }
}

impl ShieldConfig {
    /// Checks the shield section; also used after command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rest = self
            .upstream
            .strip_prefix("http://")
            .or_else(|| self.upstream.strip_prefix("https://"))
            .unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(invalid(
                "shield.upstream",
                "must be an http:// or https:// URL with a host, e.g. http://origin:8080",
            ));
        }
        if self.retries > 5 {
            return Err(invalid("shield.retries", "must be at most 5"));
        }
        if self.breaker_failures == 0 {
            return Err(invalid("shield.breaker_failures", "must be at least 1"));
        }
        for (field, value) in [
            ("shield.connect_timeout", self.connect_timeout),
            ("shield.request_timeout", self.request_timeout),
            ("shield.playlist_ttl_cap", self.playlist_ttl_cap),
            ("shield.fill_timeout", self.fill_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// Edits the shipped config (`from` -> `to`, first occurrence) and checks that each edit is
/// refused with exactly `message`.
#[cfg(test)]
pub(crate) fn assert_refused_edits(cases: &[(&str, &str, &str)]) {
    for (from, to, message) in cases {
        assert!(
            DEFAULT_TOML.contains(from),
            "{from} not in the shipped config"
        );
        let text = DEFAULT_TOML.replacen(from, to, 1);
        let error = Config::from_toml(&text).expect_err(to);
        assert_eq!(error.to_string(), *message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_the_default() {
        assert_eq!(
            Config::from_toml(DEFAULT_TOML).expect("shipped config parses"),
            Config::default()
        );
    }

    #[test]
    fn every_file_under_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).expect("config dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                count += 1;
            }
        }
        assert!(
            count >= 2,
            "expected headwater.toml and production.example.toml"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "max_message_chars = 500",
                "max_message_chars = 0",
                "chat.max_message_chars: must be between 1 and 5000",
            ),
            (
                "broadcast_capacity = 256",
                "broadcast_capacity = 1",
                "chat.broadcast_capacity: must be between 16 and 65536",
            ),
            (
                "ping_interval = \"15s\"",
                "ping_interval = \"10ms\"",
                "chat.ping_interval: must be at least 1s",
            ),
            (
                "segment_target = \"6s\"",
                "segment_target = \"0s\"",
                "hls.segment_target: must be between 1s and 30s",
            ),
            (
                "segment_target = \"6s\"",
                "segment_target = \"1500us\"",
                "hls.segment_target: must be between 1s and 30s",
            ),
            (
                "live_window = 6",
                "live_window = 3",
                "hls.live_window: must be at least 6 segments (Apple HLS authoring spec)",
            ),
            (
                "max_connections = 64",
                "max_connections = 0",
                "rtmp.max_connections: must be at least 1",
            ),
            (
                "app = \"live\"",
                "app = \"a/b\"",
                "rtmp.app: must be a non-empty name without '/'",
            ),
            (
                "memory = \"256 MiB\"",
                "memory = \"1 MiB\"",
                "cache.memory: must be at least 16 MiB",
            ),
            (
                "disk = \"1 GiB\"",
                "disk = \"10 MiB\"",
                "cache.disk: must be 0 B (no disk tier) or at least 128 MiB",
            ),
            (
                "upstream = \"http://127.0.0.1:8080\"",
                "upstream = \"ftp://x\"",
                "shield.upstream: must be an http:// or https:// URL with a host, e.g. http://origin:8080",
            ),
            (
                "retries = 2",
                "retries = 9",
                "shield.retries: must be at most 5",
            ),
            (
                "latency = \"120ms\"",
                "latency = \"5ms\"",
                "srt.latency: must be between 20ms and 10s",
            ),
            (
                "# passphrase = \"at least ten characters\"",
                "passphrase = \"short\"",
                "srt.passphrase: must be 10-79 characters",
            ),
            (
                "idle_timeout = \"10s\"\n# Maximum simultaneous SRT",
                "idle_timeout = \"0s\"\n# Maximum simultaneous SRT",
                "srt.idle_timeout: must be at least 1s",
            ),
            (
                "key = \"demo\"",
                "key = \"de\"",
                "keys[0].key: must be 4-256 characters without whitespace, '/' or '?'",
            ),
        ];
        assert_refused_edits(cases);
    }

    #[test]
    fn unknown_fields_and_bad_types_are_named() {
        let text = DEFAULT_TOML.replacen("[hls]", "[hls]\nsegment_lenght = \"2s\"", 1);
        let error = Config::from_toml(&text)
            .expect_err("unknown field")
            .to_string();
        assert!(error.contains("unknown field `segment_lenght`"), "{error}");
        let text = DEFAULT_TOML.replacen("stream = \"demo\"", "stream = \"de mo\"", 1);
        let error = Config::from_toml(&text).expect_err("bad name").to_string();
        assert!(error.contains("stream name \"de mo\""), "{error}");
        let text =
            DEFAULT_TOML.replacen("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"", 1);
        let error = Config::from_toml(&text).expect_err("bad addr").to_string();
        assert!(error.contains("listen"), "{error}");
    }
}
