//! Live streams: which keys may publish, one task per stream that owns its publisher sessions,
//! reconnects and the packaging of its frames into the store.
//!
//! Lifecycle of a stream instance (see docs/ARCHITECTURE.md):
//! `Live` (a publisher sends frames) -> publisher leaves -> `Reconnecting` (grace period; a new
//! publisher on the same key continues the same media sequence with EXT-X-DISCONTINUITY) ->
//! grace expires -> `Ended` (playlist gets EXT-X-ENDLIST, objects stay for the retention time)
//! -> removed. A publish on an ended stream starts a new instance with new URIs.

mod hooks;
mod ingest_stats;
mod renditions;
mod task;

pub use hooks::{IngestRates, KeyDirectory, KeyGrant, StreamEvent, StreamSnapshot, EVENT_QUEUE};

use crate::config::{HlsConfig, KeyConfig, LadderConfig};
use crate::names::StreamName;
use crate::store::Store;
use headwater_ingest::rtmp::{Publish, PublishRequest, PublisherSink, Refusal};
use headwater_ingest::IngestEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Frames queued between a publisher connection and its stream task; a full queue pushes back
/// on the publisher's socket.
const PUBLISHER_QUEUE: usize = 1024;

/// Where a stream's publisher is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    /// A publisher is connected and sending.
    Live,
    /// The publisher left; waiting for a reconnect within the grace period.
    Reconnecting,
    /// The grace period passed; the stream is finished.
    Ended,
}

/// One publisher session as its stream task receives it.
#[derive(Debug)]
struct Attached {
    events: mpsc::Receiver<IngestEvent>,
    /// Cancelled when the key it published with is revoked: the task lets go of `events`.
    cut: CancellationToken,
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    state: PublisherState,
    /// Hands a reconnecting publisher's frames to the running stream task.
    handoff: mpsc::UnboundedSender<Attached>,
    started_at: SystemTime,
    /// The run-time key the current publisher used (None: a config key).
    key_id: Option<String>,
    cut: CancellationToken,
    rates: Arc<IngestRates>,
}

#[derive(Debug, Default)]
struct Slots {
    next_generation: u64,
    by_stream: HashMap<StreamName, Slot>,
}

/// Authorizes publishers by key and runs one task per live stream.
#[derive(Debug)]
pub struct Registry {
    app: String,
    keys: HashMap<String, StreamName>,
    hls: HlsConfig,
    ladder: LadderConfig,
    store: Arc<Store>,
    slots: Arc<Mutex<Slots>>,
    directory: Option<Arc<dyn KeyDirectory>>,
    events: broadcast::Sender<StreamEvent>,
}

impl Registry {
    /// A registry for the configured keys, publishing into `store`.
    pub fn new(app: String, keys: &[KeyConfig], hls: HlsConfig, store: Arc<Store>) -> Self {
        Self {
            app,
            keys: keys
                .iter()
                .map(|k| (k.key.clone(), k.stream.clone()))
                .collect(),
            hls,
            ladder: LadderConfig::passthrough(),
            store,
            slots: Arc::default(),
            directory: None,
            events: broadcast::channel(EVENT_QUEUE).0,
        }
    }

    /// Also accepts the keys `directory` grants (after the configured keys).
    pub fn with_key_directory(mut self, directory: Arc<dyn KeyDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Lifecycle events from now on. Never read is fine; a slow reader loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Disconnects the live publisher that published with run-time key `key_id` (its
    /// connection ends on its next frame); returns the streams it was cut from.
    pub fn revoke(&self, key_id: &str) -> Vec<StreamName> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cut = Vec::new();
        for (stream, slot) in &slots.by_stream {
            if slot.state == PublisherState::Live && slot.key_id.as_deref() == Some(key_id) {
                slot.cut.cancel();
                tracing::info!(%stream, "stream key revoked: disconnecting the publisher");
                cut.push(stream.clone());
            }
        }
        cut
    }

    /// What the registry knows of every stream right now (for readers beside the media path).
    pub fn snapshots(&self) -> Vec<(StreamName, StreamSnapshot)> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .by_stream
            .iter()
            .map(|(name, slot)| (name.clone(), Self::snapshot_of(slot)))
            .collect()
    }

    /// What the registry knows of one stream right now.
    pub fn snapshot(&self, stream: &StreamName) -> Option<StreamSnapshot> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.by_stream.get(stream).map(Self::snapshot_of)
    }

    fn snapshot_of(slot: &Slot) -> StreamSnapshot {
        let live = slot.state == PublisherState::Live;
        StreamSnapshot {
            state: slot.state,
            started_at: slot.started_at,
            ingest_bitrate_bps: slot.rates.bitrate_bps().filter(|_| live),
            ingest_fps: slot.rates.fps().filter(|_| live),
        }
    }

    /// Uses `ladder` for streams published from now on (without it: the source only).
    pub fn with_ladder(mut self, ladder: LadderConfig) -> Self {
        self.ladder = ladder;
        self
    }

    /// The lifecycle state of a stream, if it exists.
    pub fn state(&self, stream: &StreamName) -> Option<PublisherState> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.by_stream.get(stream).map(|s| s.state)
    }
}

impl Publish for Registry {
    fn publish(&self, request: &PublishRequest) -> Result<PublisherSink, Refusal> {
        if request.app != self.app {
            return Err(Refusal::UnknownApp(request.app.clone()));
        }
        // Looked up under the slots lock, so a revoke (directory first, then slots) either
        // refuses this publish or finds and cuts it.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let (stream, key_id) = match self.keys.get(request.key.expose()) {
            Some(stream) => (stream.clone(), None),
            None => match self
                .directory
                .as_ref()
                .and_then(|d| d.lookup(request.key.expose()))
            {
                Some(grant) => (grant.stream, Some(grant.id)),
                None => {
                    let _ = self.events.send(StreamEvent::KeyRejected {
                        peer: request.peer,
                        at: SystemTime::now(),
                    });
                    return Err(Refusal::UnknownKey);
                }
            },
        };
        let stream = &stream;
        let (events, receiver) = mpsc::channel(PUBLISHER_QUEUE);
        let cut = CancellationToken::new();
        let mut receiver = Some(Attached {
            events: receiver,
            cut: cut.clone(),
        });
        if let Some(slot) = slots.by_stream.get_mut(stream) {
            match slot.state {
                PublisherState::Live => return Err(Refusal::AlreadyPublishing(stream.to_string())),
                PublisherState::Reconnecting => {
                    // The task holds the other end until it marks the slot Ended (under this lock).
                    if let Err(returned) = slot.handoff.send(receiver.take().expect("set above")) {
                        receiver = Some(returned.0);
                    } else {
                        slot.state = PublisherState::Live;
                        slot.key_id = key_id.clone();
                        slot.cut = cut.clone();
                        tracing::info!(%stream, "publisher reconnected within the grace period");
                    }
                }
                PublisherState::Ended => {}
            }
        }
        if let Some(receiver) = receiver {
            let generation = slots.next_generation;
            slots.next_generation += 1;
            let (handoff, handoffs) = mpsc::unbounded_channel();
            let rates = Arc::new(IngestRates::default());
            let started_at = SystemTime::now();
            slots.by_stream.insert(
                stream.clone(),
                Slot {
                    generation,
                    state: PublisherState::Live,
                    handoff,
                    started_at,
                    key_id,
                    cut,
                    rates: rates.clone(),
                },
            );
            let task = task::StreamTask::new(
                stream.clone(),
                generation,
                self.hls.clone(),
                self.ladder.for_stream(stream),
                self.store.clone(),
                self.slots.clone(),
                task::Reports {
                    events: self.events.clone(),
                    rates,
                    started_at,
                },
            );
            tokio::spawn(task.run(receiver, handoffs));
        }
        Ok(PublisherSink {
            stream: stream.to_string(),
            events,
        })
    }
}
