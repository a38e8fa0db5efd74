//! Live streams: which keys may publish, one task per stream that owns its publisher sessions,
//! reconnects and the packaging of its frames into the store.
//!
//! Lifecycle of a stream instance (see docs/ARCHITECTURE.md):
//! `Live` (a publisher sends frames) -> publisher leaves -> `Reconnecting` (grace period; a new
//! publisher on the same key continues the same media sequence with EXT-X-DISCONTINUITY) ->
//! grace expires -> `Ended` (playlist gets EXT-X-ENDLIST, objects stay for the retention time)
//! -> removed. A publish on an ended stream starts a new instance with new URIs.

mod ingest_stats;
mod renditions;
mod task;

use crate::config::{HlsConfig, KeyConfig, LadderConfig};
use crate::names::StreamName;
use crate::store::Store;
use headwater_ingest::rtmp::{Publish, PublishRequest, PublisherSink, Refusal};
use headwater_ingest::IngestEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

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

#[derive(Debug)]
struct Slot {
    generation: u64,
    state: PublisherState,
    /// Hands a reconnecting publisher's frames to the running stream task.
    handoff: mpsc::UnboundedSender<mpsc::Receiver<IngestEvent>>,
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
        let stream = self
            .keys
            .get(request.key.expose())
            .ok_or(Refusal::UnknownKey)?;
        let (events, receiver) = mpsc::channel(PUBLISHER_QUEUE);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut receiver = Some(receiver);
        if let Some(slot) = slots.by_stream.get_mut(stream) {
            match slot.state {
                PublisherState::Live => return Err(Refusal::AlreadyPublishing(stream.to_string())),
                PublisherState::Reconnecting => {
                    // The task holds the other end until it marks the slot Ended (under this lock).
                    if let Err(returned) = slot.handoff.send(receiver.take().expect("set above")) {
                        receiver = Some(returned.0);
                    } else {
                        slot.state = PublisherState::Live;
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
            slots.by_stream.insert(
                stream.clone(),
                Slot {
                    generation,
                    state: PublisherState::Live,
                    handoff,
                },
            );
            let task = task::StreamTask::new(
                stream.clone(),
                generation,
                self.hls.clone(),
                self.ladder.for_stream(stream),
                self.store.clone(),
                self.slots.clone(),
            );
            tokio::spawn(task.run(receiver, handoffs));
        }
        Ok(PublisherSink {
            stream: stream.to_string(),
            events,
        })
    }
}
