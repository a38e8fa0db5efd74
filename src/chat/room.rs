//! One Room per stream: the broadcast channel every session of the stream reads, the last
//! messages (sent to a joining viewer), the banned names and the connection count.
//!
//! Posting never waits on a reader: `broadcast::Sender::send` only writes into the channel's
//! ring; a reader that falls `chat.broadcast_capacity` frames behind gets `Lagged` and is
//! disconnected by its session. Frames are serialised once per message, not once per reader.

use super::wire::{MessageFrame, ServerFrame};
use crate::api::store::ChatRecord;
use crate::names::StreamName;
use axum::extract::ws::Utf8Bytes;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::{broadcast, OnceCell};

/// Messages a joining viewer receives in its `joined` frame.
pub const RECENT: usize = 50;

/// What a room's broadcast carries to its sessions.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A frame for every reader, serialised once.
    Frame {
        /// The JSON text.
        text: Utf8Bytes,
        /// When it was broadcast (fan-out latency).
        at: Instant,
        /// The message id for `message` frames (a session skips ids its `joined` listed).
        message: Option<i64>,
    },
    /// A display name (ban key) was banned: sessions posting under it close.
    Banned(String),
}

#[derive(Debug, Default)]
struct State {
    recent: VecDeque<ChatRecord>,
    banned: HashSet<String>,
    /// Instance and last stream time given (stream time never goes backwards in a room).
    clock: Option<(String, i64)>,
}

/// One stream's chat room.
#[derive(Debug)]
pub struct Room {
    stream: StreamName,
    events: broadcast::Sender<RoomEvent>,
    state: Mutex<State>,
    loaded: OnceCell<()>,
    connections: AtomicUsize,
    gauge: metrics::Gauge,
}

/// A place in a room held by one session; dropping it frees the place.
#[derive(Debug)]
pub struct Seat {
    room: Arc<Room>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.room.connections.fetch_sub(1, Ordering::AcqRel);
        self.room.gauge.decrement(1.0);
    }
}

impl Room {
    /// An empty room for `stream` whose readers may fall `capacity` frames behind.
    pub fn new(stream: StreamName, capacity: usize) -> Self {
        let gauge = metrics::gauge!("headwater_chat_connections", "stream" => stream.to_string());
        Self {
            stream,
            events: broadcast::channel(capacity).0,
            state: Mutex::default(),
            loaded: OnceCell::new(),
            connections: AtomicUsize::new(0),
            gauge,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// Loads recent messages and bans from the store once (`load` runs at most once).
    pub async fn ensure_loaded<F, Fut, E>(&self, load: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<ChatRecord>, Vec<String>), E>>,
    {
        self.loaded
            .get_or_try_init(|| async {
                let (stored, bans) = load().await?;
                let mut state = self.state();
                let first_live = state.recent.front().map_or(i64::MAX, |m| m.id);
                // Stored newest first; keep those older than what arrived while loading.
                for message in stored.into_iter().filter(|m| m.id < first_live) {
                    if state.recent.len() >= RECENT {
                        break;
                    }
                    state.recent.push_front(message);
                }
                state.banned.extend(bans);
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Takes a place unless the room holds `max` connections.
    pub fn sit(self: &Arc<Self>, max: usize) -> Option<Seat> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.gauge.increment(1.0);
        Some(Seat { room: self.clone() })
    }

    /// Sessions in the room.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Subscribes, then returns the recent messages: a message posted in between is both in the
    /// list and in the subscription (the session skips it by id), never in neither.
    pub fn join(&self) -> (broadcast::Receiver<RoomEvent>, Vec<ChatRecord>) {
        let events = self.events.subscribe();
        let recent = self.state().recent.iter().cloned().collect();
        (events, recent)
    }

    /// Whether a ban key is banned.
    pub fn is_banned(&self, key: &str) -> bool {
        self.state().banned.contains(key)
    }

    /// Accepts a message: `make` builds it with the room's clock (called under the room's
    /// lock so ids and stream times increase in broadcast order), then it is kept in the recent
    /// list and broadcast. Never waits.
    pub fn post(&self, make: impl FnOnce(&mut Option<(String, i64)>) -> ChatRecord) -> ChatRecord {
        let mut state = self.state();
        let message = make(&mut state.clock);
        if state.recent.len() >= RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(message.clone());
        let frame = ServerFrame::Message(MessageFrame::from(&message));
        // No receivers is not an error: the message still goes to history.
        let _ = self.events.send(RoomEvent::Frame {
            text: frame.to_text(),
            at: Instant::now(),
            message: Some(message.id),
        });
        message
    }

    /// Removes a message from the recent list (true if it was there) and broadcasts `deleted`.
    pub fn delete(&self, id: i64, broadcast: bool) -> bool {
        let mut state = self.state();
        let before = state.recent.len();
        state.recent.retain(|m| m.id != id);
        let found = state.recent.len() != before;
        if found || broadcast {
            let _ = self.events.send(RoomEvent::Frame {
                text: ServerFrame::Deleted { id }.to_text(),
                at: Instant::now(),
                message: None,
            });
        }
        found
    }

    /// Bans or unbans a name (ban key); a ban closes the sessions posting under it.
    pub fn set_ban(&self, key: &str, banned: bool) {
        let mut state = self.state();
        if banned {
            state.banned.insert(key.to_owned());
            let _ = self.events.send(RoomEvent::Banned(key.to_owned()));
        } else {
            state.banned.remove(key);
        }
    }
}
