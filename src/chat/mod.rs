//! Live chat beside each stream: `GET /api/v1/streams/{name}/chat` upgrades to a WebSocket
//! (JSON frames, [`wire`]); one [`room::Room`] per stream fans messages out through a
//! `broadcast` channel; [`session`] owns each connection; [`limits`] holds the limits;
//! [`history`] writes messages to the metadata store in batches.
//!
//! Beside the media path, never in it: the chat reads the live store's stream clock (the
//! PROGRAM-DATE-TIME anchor, a mutex held for a copy) to stamp messages with `stream_time`, and
//! nothing on the media path ever waits on the chat. Also served:
//! `GET /api/v1/streams/{name}/chat/history?before=&limit=` (cursor pages, newest first) and,
//! with the admin token, `DELETE /api/v1/streams/{name}/chat/messages/{id}` and
//! `PUT|DELETE /api/v1/streams/{name}/chat/bans/{display name}`.

pub mod history;
pub mod limits;
pub mod room;
pub mod session;
pub mod wire;

use crate::api::error::ApiError;
use crate::api::store::{ChatRecord, MetaStore, StoreError};
use crate::api::{Admin, Api};
use crate::config::ChatConfig;
use crate::names::StreamName;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Router;
use history::HistoryQueue;
use limits::{Admission, DisplayName, Slot};
use room::Room;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wire::MessageFrame;

/// Per-connection WebSocket read and write buffer target, in bytes.
const CHAT_BUFFER: usize = 8 * 1024;

/// One in this many sessions records fan-out latency (bounds the histogram's cost in a big room).
const FANOUT_SAMPLE: u64 = 16;
/// History rows per page unless `limit` says otherwise, and the largest `limit`.
const HISTORY_DEFAULT: u32 = 50;
const HISTORY_MAX: u32 = 200;

/// Pre-bound metric handles.
#[derive(Debug)]
pub(crate) struct ChatMetrics {
    messages_in: metrics::Counter,
    messages_out: metrics::Counter,
    dropped_lagged: metrics::Counter,
    dropped_slow: metrics::Counter,
    rate_limited: metrics::Counter,
    fanout: metrics::Histogram,
}

impl ChatMetrics {
    fn new() -> Self {
        Self {
            messages_in: metrics::counter!("headwater_chat_messages_received_total"),
            messages_out: metrics::counter!("headwater_chat_messages_sent_total"),
            dropped_lagged: metrics::counter!("headwater_chat_dropped_total", "reason" => "lagged"),
            dropped_slow: metrics::counter!("headwater_chat_dropped_total", "reason" => "write_timeout"),
            rate_limited: metrics::counter!("headwater_chat_rate_limited_total"),
            fanout: metrics::histogram!("headwater_chat_fanout_duration_seconds"),
        }
    }
}

/// The chat of one node: cloned into every handler and session.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").finish_non_exhaustive()
    }
}

struct Inner {
    config: ChatConfig,
    api: Api,
    store: Arc<dyn MetaStore>,
    media: Arc<crate::store::Store>,
    rooms: Mutex<HashMap<StreamName, Arc<Room>>>,
    admission: Arc<Admission>,
    history: HistoryQueue,
    last_id: AtomicI64,
    sessions: AtomicU64,
    metrics: ChatMetrics,
    shutdown: CancellationToken,
}

impl Chat {
    /// Starts the history writer and room housekeeping in `tasks`; sessions close on `shutdown`.
    pub fn start(
        config: &ChatConfig,
        api: Api,
        media: Arc<crate::store::Store>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Self {
        let store = api.meta_store();
        let (history, writer) =
            HistoryQueue::start(store.clone(), config.history_queue, shutdown.clone());
        tasks.spawn(writer);
        let chat = Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                api,
                store,
                media,
                rooms: Mutex::default(),
                admission: Arc::default(),
                history,
                last_id: AtomicI64::new(0),
                sessions: AtomicU64::new(0),
                metrics: ChatMetrics::new(),
                shutdown: shutdown.clone(),
            }),
        };
        tasks.spawn(housekeeping(chat.clone(), shutdown.clone()));
        chat
    }

    /// The chat routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/streams/{name}/chat", get(connect))
            .route("/api/v1/streams/{name}/chat/history", get(history))
            .route(
                "/api/v1/streams/{name}/chat/messages/{id}",
                delete(delete_message),
            )
            .route(
                "/api/v1/streams/{name}/chat/bans/{display}",
                put(ban).delete(unban),
            )
            .with_state(self.clone())
    }

    /// Chat connections on this node.
    pub fn connections(&self) -> usize {
        self.inner.admission.connections()
    }

    pub(crate) fn config(&self) -> &ChatConfig {
        &self.inner.config
    }

    pub(crate) fn metrics(&self) -> &ChatMetrics {
        &self.inner.metrics
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Arc<Room>>> {
        self.inner
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream's room, created (and loaded from the store) on first use.
    async fn room(&self, stream: &StreamName) -> Result<Arc<Room>, StoreError> {
        let room = self
            .rooms()
            .entry(stream.clone())
            .or_insert_with(|| {
                Arc::new(Room::new(
                    stream.clone(),
                    self.inner.config.broadcast_capacity,
                ))
            })
            .clone();
        let store = self.inner.store.clone();
        let name = stream.clone();
        room.ensure_loaded(|| async move {
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((
                    store.chat_messages(&name, None, room::RECENT as u32)?,
                    store.chat_bans(&name)?,
                ))
            })
            .await
            .map_err(|_| StoreError::Join)?
        })
        .await?;
        Ok(room)
    }

    /// A new message id: Unix microseconds, made unique and increasing.
    fn next_id(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let previous = self
            .inner
            .last_id
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Accepts a message in a room: stamps it, broadcasts it, queues it for history.
    pub(crate) fn post(&self, room: &Room, name: &DisplayName, text: &str) {
        let entry = self.inner.media.stream(room.stream());
        let message = room.post(|clock| {
            let now = SystemTime::now();
            let mut stream_time_ms = entry
                .as_ref()
                .and_then(|e| e.stream_time(now))
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
            // Stream time never goes backwards within an instance (a publisher reconnect
            // re-anchors PROGRAM-DATE-TIME).
            if let (Some(entry), Some(ms)) = (&entry, stream_time_ms.as_mut()) {
                match clock {
                    Some((instance, last)) if instance == entry.instance() => {
                        *ms = (*ms).max(*last);
                        *last = *ms;
                    }
                    _ => *clock = Some((entry.instance().to_owned(), *ms)),
                }
            }
            ChatRecord {
                id: self.next_id(),
                stream: room.stream().clone(),
                name: name.as_str().to_owned(),
                text: text.to_owned(),
                sent_at: crate::api::millis(now),
                stream_time_ms,
            }
        });
        self.inner.metrics.messages_in.increment(1);
        self.inner.history.insert(message);
    }
}

/// Drops rooms nobody is in (their recent messages are in the store).
async fn housekeeping(chat: Chat, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        chat.rooms()
            .retain(|_, room| room.connections() > 0 || Arc::strong_count(room) > 1);
    }
}

fn parse_stream(path: Result<Path<String>, PathRejection>) -> Result<StreamName, ApiError> {
    let Path(raw) = path?;
    crate::api::parse_stream(&raw)
}

/// `?name=` of a chat connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinQuery {
    name: Option<String>,
}

/// `GET /api/v1/streams/{name}/chat`: WebSocket upgrade.
async fn connect(
    State(chat): State<Chat>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<JoinQuery>, QueryRejection>,
    extensions: Extensions,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = parse_stream(path)?;
    let Query(query) = query?;
    let name = query
        .name
        .map(|n| DisplayName::parse(&n))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    let room = chat.room(&stream).await?;
    let config = chat.config();
    let frame_limit = config.max_message_chars * 6 + 1024;
    let write_timeout = config.write_timeout;
    let admitted = admit(&chat, &room, &extensions, name.as_ref());
    // Chat frames are small: tungstenite's default 128 KiB read buffer per connection would
    // dominate memory in a large room (measured ~138 kB per connection with it).
    let upgrade = upgrade
        .read_buffer_size(CHAT_BUFFER)
        .write_buffer_size(CHAT_BUFFER)
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit);
    Ok(upgrade.on_upgrade(move |ws| async move {
        match admitted {
            Ok((slot, seat)) => {
                let sampled =
                    chat.inner.sessions.fetch_add(1, Ordering::Relaxed) % FANOUT_SAMPLE == 0;
                let session = session::Session {
                    chat,
                    room,
                    seat,
                    slot,
                    name,
                    sampled,
                };
                session::run(ws, session).await;
            }
            Err(refusal) => session::refuse(ws, refusal, write_timeout).await,
        }
    }))
}

fn admit(
    chat: &Chat,
    room: &Arc<Room>,
    extensions: &Extensions,
    name: Option<&DisplayName>,
) -> Result<(Slot, room::Seat), limits::Refusal> {
    if name.is_some_and(|n| room.is_banned(&n.ban_key())) {
        return Err(limits::Refusal::Banned);
    }
    let ip = crate::api::client_ip(extensions);
    let slot = chat.inner.admission.admit(ip, chat.config())?;
    let seat = room
        .sit(chat.config().max_room_connections)
        .ok_or(limits::Refusal::RoomFull)?;
    Ok((slot, seat))
}

/// `?before=&limit=` of the history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

/// A page of chat history.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Messages, newest first.
    pub messages: Vec<MessageFrame>,
    /// `before` of the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// `GET /api/v1/streams/{name}/chat/history?before=&limit=`.
async fn history(
    State(chat): State<Chat>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let stream = parse_stream(path)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(HISTORY_DEFAULT);
    if !(1..=HISTORY_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {HISTORY_MAX}"
        )));
    }
    let store = chat.inner.store.clone();
    let before = query.before;
    let mut rows =
        tokio::task::spawn_blocking(move || store.chat_messages(&stream, before, limit + 1))
            .await
            .map_err(|_| StoreError::Join)??;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let page = HistoryPage {
        next_before: more.then(|| rows.last().map(|m| m.id)).flatten(),
        messages: rows.iter().map(MessageFrame::from).collect(),
    };
    Ok(crate::api::json(StatusCode::OK, &page))
}

/// The admin token, checked as the API checks it.
struct ChatAdmin;

impl FromRequestParts<Chat> for ChatAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, chat: &Chat) -> Result<Self, ApiError> {
        Admin::from_request_parts(parts, &chat.inner.api).await?;
        Ok(Self)
    }
}

/// `DELETE /api/v1/streams/{name}/chat/messages/{id}` (admin): gone from history, `deleted`
/// broadcast.
async fn delete_message(
    _admin: ChatAdmin,
    State(chat): State<Chat>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((raw, id)) = path?;
    let stream = crate::api::parse_stream(&raw)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest("id: must be a message id (integer)".into()))?;
    let stored = chat.inner.history.delete(stream.clone(), id).await?;
    let live = chat
        .rooms()
        .get(&stream)
        .cloned()
        .is_some_and(|room| room.delete(id, stored));
    if !stored && !live {
        return Err(ApiError::NotFound(format!("no message {id} in this chat")));
    }
    tracing::info!(stream = %stream, id, "chat message deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_ban(
    chat: &Chat,
    path: Result<Path<(String, String)>, PathRejection>,
    banned: bool,
) -> Result<Response, ApiError> {
    let Path((raw, display)) = path?;
    let stream = crate::api::parse_stream(&raw)?;
    let name = DisplayName::parse(&display)
        .map_err(|e| ApiError::BadRequest(format!("display name: {e}")))?;
    let key = name.ban_key();
    let room = chat.room(&stream).await?;
    let store = chat.inner.store.clone();
    let (s, k) = (stream.clone(), key.clone());
    let at = crate::api::millis(SystemTime::now());
    tokio::task::spawn_blocking(move || store.set_chat_ban(&s, &k, banned, at))
        .await
        .map_err(|_| StoreError::Join)??;
    room.set_ban(&key, banned);
    tracing::info!(stream = %stream, name = %key, banned, "chat ban changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/streams/{name}/chat/bans/{display name}` (admin): the name may not join or
/// post; its sessions close (1008).
async fn ban(
    _admin: ChatAdmin,
    State(chat): State<Chat>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    set_ban(&chat, path, true).await
}

/// `DELETE /api/v1/streams/{name}/chat/bans/{display name}` (admin).
async fn unban(
    _admin: ChatAdmin,
    State(chat): State<Chat>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    set_ban(&chat, path, false).await
}
