//! What the registry offers beside the media path, without ever waiting on it: keys granted at
//! run time ([`KeyDirectory`], looked up synchronously in memory), lifecycle events
//! ([`StreamEvent`], a `broadcast` nobody has to read), live ingest rates ([`IngestRates`],
//! atomics the stream task writes) and [`StreamSnapshot`]s for readers such as the API.

use super::PublisherState;
use crate::names::StreamName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Lifecycle events queued per subscriber; a subscriber that falls further behind loses the
/// oldest (`broadcast` lag) and never slows a publisher.
pub const EVENT_QUEUE: usize = 1024;

/// A publish key granted at run time (by the API), identified so it can be revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key's public id (never the secret).
    pub id: String,
    /// The stream it publishes.
    pub stream: StreamName,
}

/// Keys beyond the config's. Called on the publish path: answers from memory, never does I/O.
pub trait KeyDirectory: Send + Sync + std::fmt::Debug + 'static {
    /// The grant for a presented secret key, if it is valid.
    fn lookup(&self, key: &str) -> Option<KeyGrant>;
}

/// Something that happened to a stream, for history and webhooks.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A new stream instance began (its first publisher was accepted).
    Started {
        /// The stream.
        stream: StreamName,
        /// The instance id in its URIs.
        instance: String,
        /// When.
        at: SystemTime,
    },
    /// The stream instance ended (the reconnect grace passed without a publisher).
    Ended {
        /// The stream.
        stream: StreamName,
        /// The instance id in its URIs.
        instance: String,
        /// When.
        at: SystemTime,
    },
    /// A publish was refused because the key is unknown or revoked.
    KeyRejected {
        /// The publisher's address.
        peer: SocketAddr,
        /// When.
        at: SystemTime,
    },
}

/// Ingest rates of the current publisher, measured by the stream task (5 s window, refreshed
/// every second); zero until measured.
#[derive(Debug, Default)]
pub struct IngestRates {
    bitrate_bps: AtomicU64,
    fps_milli: AtomicU64,
}

impl IngestRates {
    pub(super) fn set(&self, bitrate_bps: f64, fps: f64) {
        self.bitrate_bps
            .store(bitrate_bps.max(0.0) as u64, Ordering::Relaxed);
        self.fps_milli
            .store((fps.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Bits per second of what the publisher sends (audio + video), if measured.
    pub fn bitrate_bps(&self) -> Option<u64> {
        Some(self.bitrate_bps.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    /// Video frames per second the publisher sends, if measured.
    pub fn fps(&self) -> Option<f64> {
        let milli = self.fps_milli.load(Ordering::Relaxed);
        (milli > 0).then(|| milli as f64 / 1000.0)
    }
}

/// A stream as the registry sees it right now.
#[derive(Debug, Clone)]
pub struct StreamSnapshot {
    /// Lifecycle state.
    pub state: PublisherState,
    /// When the stream instance started.
    pub started_at: SystemTime,
    /// Ingest bitrate in bits per second, once measured.
    pub ingest_bitrate_bps: Option<u64>,
    /// Ingest video frame rate, once measured.
    pub ingest_fps: Option<f64>,
}
