//! RTMP ingest: a TCP listener that accepts publishers on `rtmp://host/<app>/<stream-key>`.
//!
//! The protocol is implemented here as sans-IO state machines, one per layer: [`handshake`]
//! (the simple C0-C2/S0-S2 exchange), [`chunk`] (chunk stream reassembly and splitting), [`amf0`]
//! (command serialization) and [`session`] (the NetConnection/NetStream commands a publisher
//! sends). None of them touches a socket or panics on input; the server around them owns the
//! sockets, timeouts, auth through the [`Publish`] hook and logging, and adapts FLV tags to
//! [`IngestEvent`]s. It knows nothing about streams, packaging or HTTP: whoever implements
//! [`Publish`] decides which keys may publish and where frames go.

pub mod amf0;
pub mod chunk;
pub mod handshake;
mod publisher;
mod server;
pub mod session;

pub use publisher::TimestampUnwrapper;
pub use server::{serve, RtmpSettings};

use crate::frame::IngestEvent;
use std::fmt;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// A publisher's secret stream key, as given in the RTMP URL. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey(String);

impl StreamKey {
    /// Wraps a key string.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The secret itself, for lookups only; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short non-secret form for logs (first two characters and the length).
    pub fn redacted(&self) -> String {
        let head: String = self.0.chars().take(2).collect();
        format!("{head}…({} chars)", self.0.chars().count())
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({})", self.redacted())
    }
}

/// What a publisher asked for.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// RTMP application name (the first path segment, `live`).
    pub app: String,
    /// The stream key from the URL.
    pub key: StreamKey,
    /// The publisher's address.
    pub peer: SocketAddr,
}

/// Why a publish request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The application name is not one this server ingests on.
    #[error("unknown application {0:?}")]
    UnknownApp(String),
    /// No stream is configured for the key (or it was revoked).
    #[error("unknown stream key")]
    UnknownKey,
    /// Another publisher is live on the key.
    #[error("stream {0} already has a live publisher")]
    AlreadyPublishing(String),
}

impl Refusal {
    /// The NetStream status code sent back to the publisher.
    pub fn status_code(&self) -> &'static str {
        match self {
            Refusal::UnknownApp(_) | Refusal::UnknownKey => "NetStream.Publish.Rejected",
            Refusal::AlreadyPublishing(_) => "NetStream.Publish.BadName",
        }
    }
}

/// Where an accepted publisher's events go. Dropping it tells the receiver the publisher left.
#[derive(Debug)]
pub struct PublisherSink {
    /// The stream name the key maps to (public, safe to log).
    pub stream: String,
    /// Bounded: a full queue pushes back on the publisher's TCP connection.
    pub events: mpsc::Sender<IngestEvent>,
}

/// The hook the RTMP server calls to authorize a publisher and find where its frames go.
pub trait Publish: Send + Sync + 'static {
    /// Accepts or refuses a publish request.
    fn publish(&self, request: &PublishRequest) -> Result<PublisherSink, Refusal>;
}
