//! `[chat]`: live chat over WebSocket beside each stream (limits, heartbeat, history queue).

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// `[chat]`: `GET /api/v1/streams/{name}/chat` (WebSocket) and its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Serve the chat routes. Default true.
    pub enabled: bool,
    /// Longest message, in characters (Unicode scalar values). 1 to 5000. Default 500.
    pub max_message_chars: usize,
    /// Messages per second one connection may post, sustained. At least 1. Default 2.
    pub rate_limit: u32,
    /// Messages one connection may post in a burst above the sustained rate. At least 1.
    /// Default 5.
    pub rate_burst: u32,
    /// Chat connections on this node; more are refused (close code 1013). At least 1.
    /// Default 20000.
    pub max_connections: usize,
    /// Chat connections in one stream's room; more are refused (close code 1013). At least 1.
    /// Default 20000.
    pub max_room_connections: usize,
    /// Chat connections from one client address; more are refused (close code 1008). At least
    /// 1. Default 16.
    pub max_connections_per_address: usize,
    /// Messages a room buffers for its slowest reader; a reader further behind is told and
    /// disconnected. 16 to 65536. Default 256.
    pub broadcast_capacity: usize,
    /// Interval of WebSocket pings; a connection silent for two intervals is dropped. At least
    /// 1s. Default "15s".
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A frame the client has not accepted within this time drops the connection. At least
    /// 100ms. Default "10s".
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Messages waiting to be written to the metadata store; when full, new messages are still
    /// delivered but not kept in history (counted). At least 1. Default 4096.
    pub history_queue: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_message_chars: 500,
            rate_limit: 2,
            rate_burst: 5,
            max_connections: 20_000,
            max_room_connections: 20_000,
            max_connections_per_address: 16,
            broadcast_capacity: 256,
            ping_interval: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            history_queue: 4096,
        }
    }
}

impl ChatConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=5000).contains(&self.max_message_chars) {
            return Err(invalid(
                "chat.max_message_chars",
                "must be between 1 and 5000",
            ));
        }
        if self.rate_limit == 0 {
            return Err(invalid("chat.rate_limit", "must be at least 1"));
        }
        if self.rate_burst == 0 {
            return Err(invalid("chat.rate_burst", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(invalid("chat.max_connections", "must be at least 1"));
        }
        if self.max_room_connections == 0 {
            return Err(invalid("chat.max_room_connections", "must be at least 1"));
        }
        if self.max_connections_per_address == 0 {
            return Err(invalid(
                "chat.max_connections_per_address",
                "must be at least 1",
            ));
        }
        if !(16..=65536).contains(&self.broadcast_capacity) {
            return Err(invalid(
                "chat.broadcast_capacity",
                "must be between 16 and 65536",
            ));
        }
        if self.ping_interval < Duration::from_secs(1) {
            return Err(invalid("chat.ping_interval", "must be at least 1s"));
        }
        if self.write_timeout < Duration::from_millis(100) {
            return Err(invalid("chat.write_timeout", "must be at least 100ms"));
        }
        if self.history_queue == 0 {
            return Err(invalid("chat.history_queue", "must be at least 1"));
        }
        Ok(())
    }
}
