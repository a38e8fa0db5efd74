//! `[api]`: the JSON API under `/api/v1`, its metadata database, viewer counting and webhooks.

use super::{invalid, ConfigError};
use bytesize::ByteSize;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[api]`: the JSON API, its metadata store and webhooks.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer token of the admin routes (keys, stream edits). The environment variable
    /// `HEADWATER_ADMIN_TOKEN` overrides it. Absent (the default) and no variable: admin routes
    /// answer 403. At least 16 characters.
    pub admin_token: Option<String>,
    /// Directory of the metadata database `headwater.db` (SQLite; created if missing). An empty
    /// string keeps the metadata in memory only (nothing survives a restart; for tests).
    /// Default "data".
    pub data_dir: PathBuf,
    /// Largest accepted request body. 1 KiB to 1 MiB. Default "64 KiB".
    pub body_limit: ByteSize,
    /// Sustained API requests per second allowed per client address (429 beyond). Default 50.
    pub rate_limit: u32,
    /// Requests a client may burst above the sustained rate. Default 100.
    pub rate_burst: u32,
    /// A viewer (player session) counts as watching this long after its last playlist, segment
    /// or beacon request. 5s to 10m. Default "30s".
    #[serde(with = "humantime_serde")]
    pub viewer_window: Duration,
    /// Webhooks: where stream lifecycle events are posted.
    pub webhooks: WebhooksConfig,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<secret>"),
            )
            .field("data_dir", &self.data_dir)
            .field("body_limit", &self.body_limit)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field("viewer_window", &self.viewer_window)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

/// `[api.webhooks]`: `stream.started`, `stream.ended` and `stream.key_rejected` posted as JSON
/// with an HMAC-SHA256 signature, from a bounded background queue.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Endpoints (http:// URLs) every event is posted to. Default none.
    pub urls: Vec<String>,
    /// Key of the `X-Headwater-Signature: sha256=<hex>` HMAC over the body. Required when
    /// `urls` is not empty; at least 16 characters.
    pub secret: Option<String>,
    /// Time allowed for one delivery attempt. Default "5s".
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries after a failed attempt, with exponential backoff and jitter. At most 10.
    /// Default 5.
    pub retries: u32,
    /// Backoff before the first retry; doubles for each next one (plus up to 50 % jitter).
    /// Default "500ms".
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Events queued per endpoint; when full, new events are dropped and counted. Default 1024.
    pub queue: usize,
    /// Consecutive failed deliveries that open an endpoint's circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open circuit skips deliveries before one trial. Default "30s".
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl std::fmt::Debug for WebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhooksConfig")
            .field("urls", &self.urls)
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("queue", &self.queue)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            data_dir: PathBuf::from("data"),
            body_limit: ByteSize::kib(64),
            rate_limit: 50,
            rate_burst: 100,
            viewer_window: Duration::from_secs(30),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            timeout: Duration::from_secs(5),
            retries: 5,
            backoff: Duration::from_millis(500),
            queue: 1024,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl ApiConfig {
    /// Checks the section; messages name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_token.as_ref().is_some_and(|t| {
            t.len() < 16 || t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(invalid(
                "api.admin_token",
                "must be 16-256 characters without whitespace",
            ));
        }
        if self.body_limit < ByteSize::kib(1) || self.body_limit > ByteSize::mib(1) {
            return Err(invalid("api.body_limit", "must be between 1 KiB and 1 MiB"));
        }
        if self.rate_limit == 0 {
            return Err(invalid("api.rate_limit", "must be at least 1"));
        }
        if self.rate_burst == 0 {
            return Err(invalid("api.rate_burst", "must be at least 1"));
        }
        if self.viewer_window < Duration::from_secs(5)
            || self.viewer_window > Duration::from_secs(600)
        {
            return Err(invalid("api.viewer_window", "must be between 5s and 10m"));
        }
        let w = &self.webhooks;
        for (i, url) in w.urls.iter().enumerate() {
            let rest = url.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') || rest.contains([' ', '#']) {
                return Err(invalid(
                    format!("api.webhooks.urls[{i}]"),
                    "must be an http:// URL with a host, e.g. http://hooks.example:8000/headwater",
                ));
            }
        }
        if !w.urls.is_empty() && w.secret.as_ref().is_none_or(|s| s.len() < 16) {
            return Err(invalid(
                "api.webhooks.secret",
                "must be set (at least 16 characters) when api.webhooks.urls is not empty",
            ));
        }
        if w.timeout.is_zero() {
            return Err(invalid("api.webhooks.timeout", "must be greater than 0"));
        }
        if w.retries > 10 {
            return Err(invalid("api.webhooks.retries", "must be at most 10"));
        }
        if w.queue == 0 {
            return Err(invalid("api.webhooks.queue", "must be at least 1"));
        }
        if w.breaker_failures == 0 {
            return Err(invalid(
                "api.webhooks.breaker_failures",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
