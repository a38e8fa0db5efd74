//! One chat session: the task that owns a WebSocket. It sends `joined`, then relays the room's
//! broadcast to the client and the client's messages to the room, pings on an interval and
//! closes with a close code when a limit is crossed. Reading and writing are two halves polled
//! together, so a blocked write never holds up the client's posts.
//!
//! A client that does not read cannot hold anything up: every write has a deadline
//! (`chat.write_timeout`), and while this task waits on one the room's broadcast keeps going;
//! when the session falls `chat.broadcast_capacity` frames behind it is told (`lagged`) and
//! closed (1013). Its memory is the one frame being written.

use super::limits::{check_text, rate_limiter, DisplayName, TextError};
use super::room::{Room, RoomEvent, Seat};
use super::wire::{ClientFrame, MessageFrame, ServerFrame};
use super::{Chat, Slot};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

/// Rate-limited messages in a row after which the connection is closed (1008).
const MAX_STRIKES: u32 = 20;

/// Close codes (RFC 6455 section 7.4.1).
mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Why a session ended (bounded label of `headwater_chat_disconnects_total`).
#[derive(Debug, Clone, Copy)]
enum End {
    ClientClosed,
    Lagged,
    WriteTimeout,
    Heartbeat,
    Policy,
    TooBig,
    Banned,
    Shutdown,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client",
            Self::Lagged => "lagged",
            Self::WriteTimeout => "write_timeout",
            Self::Heartbeat => "heartbeat",
            Self::Policy => "policy",
            Self::TooBig => "too_big",
            Self::Banned => "banned",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What a session holds.
pub struct Session {
    /// The chat.
    pub chat: Chat,
    /// Its room.
    pub room: Arc<Room>,
    /// Its place in the room.
    pub seat: Seat,
    /// Its node and address slot.
    pub slot: Slot,
    /// The display name, if one was given (else read-only).
    pub name: Option<DisplayName>,
    /// Whether this session records fan-out latency (a sample of sessions do).
    pub sampled: bool,
}

/// The writing half of a session's WebSocket.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    write_timeout: Duration,
}

impl Writer {
    /// Sends a frame within the write deadline; false when the client did not take it.
    async fn send(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.sink.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> bool {
        self.send(Message::Text(frame.to_text())).await
    }

    /// Sends an `error` frame then a close frame (both best effort).
    async fn close_with(&mut self, close: u16, error: ServerFrame) {
        let reason = match &error {
            ServerFrame::Error { code, .. } => *code,
            _ => "",
        };
        if self.send_frame(&error).await {
            let _ = self
                .send(Message::Close(Some(CloseFrame {
                    code: close,
                    reason: Utf8Bytes::from(reason),
                })))
                .await;
        }
    }
}

/// How a session ends: the reason, and the close code and error frame the client gets.
struct Ending {
    end: End,
    close: Option<(u16, ServerFrame)>,
}

impl Ending {
    fn silent(end: End) -> Self {
        Self { end, close: None }
    }

    fn closing(end: End, code: u16, frame: ServerFrame) -> Self {
        Self {
            end,
            close: Some((code, frame)),
        }
    }
}

/// Frames the reading half asks the writing half to send; more than this many waiting means
/// the client is not reading them, and later ones are dropped. Boxed: the channel allocates its
/// slots up front for every session, and replies are rare.
const REPLY_QUEUE: usize = 8;

/// Refuses a connection that was upgraded over a limit: an `error` frame, then the close code.
pub async fn refuse(ws: WebSocket, refusal: super::limits::Refusal, write_timeout: Duration) {
    metrics::counter!("headwater_chat_refused_total", "reason" => refusal.code()).increment(1);
    let (sink, _) = ws.split();
    let mut writer = Writer {
        sink,
        write_timeout,
    };
    writer
        .close_with(
            refusal.close_code(),
            ServerFrame::error(refusal.code(), refusal.message()),
        )
        .await;
}

/// Runs a session until the client leaves, a limit closes it, or the server shuts down.
pub async fn run(ws: WebSocket, session: Session) {
    let config = session.chat.config().clone();
    let end = relay(ws, &session, &config).await;
    metrics::counter!("headwater_chat_disconnects_total", "reason" => end.label()).increment(1);
    tracing::debug!(stream = %session.room.stream(), reason = end.label(), "chat session ended");
    drop(session);
}

/// Reads and writes concurrently: a write waiting on a slow client never delays reading its
/// posts (nor the rate limit's view of them), and reading never waits on writing.
async fn relay(ws: WebSocket, session: &Session, config: &crate::config::ChatConfig) -> End {
    let (sink, stream) = ws.split();
    let mut writer = Writer {
        sink,
        write_timeout: config.write_timeout,
    };
    let (events, recent) = session.room.join();
    let joined = ServerFrame::Joined {
        stream: session.room.stream().to_string(),
        name: session.name.as_ref().map(|n| n.as_str().to_owned()),
        can_post: session.name.is_some(),
        messages: recent.iter().map(MessageFrame::from).collect(),
    };
    if !writer.send_frame(&joined).await {
        return End::WriteTimeout;
    }
    let seen = recent.last().map_or(i64::MIN, |m| m.id);
    let (replies, replies_rx) = mpsc::channel(REPLY_QUEUE);
    let ending = tokio::select! {
        ending = read(stream, session, config, replies) => ending,
        ending = write(&mut writer, session, config, events, seen, replies_rx) => ending,
    };
    if let Some((code, frame)) = ending.close {
        writer.close_with(code, frame).await;
    }
    ending.end
}

/// The reading half: client frames, the rate limit, posts to the room, the heartbeat.
async fn read(
    mut stream: SplitStream<WebSocket>,
    session: &Session,
    config: &crate::config::ChatConfig,
    replies: mpsc::Sender<Box<ServerFrame>>,
) -> Ending {
    let metrics = session.chat.metrics();
    let ban_key = session.name.as_ref().map(DisplayName::ban_key);
    let limiter = rate_limiter(config);
    let mut strikes = 0u32;
    // The writer pings every interval; a client silent for two has gone.
    let heartbeat = config.ping_interval * 2;
    let reply = |frame| {
        // A full queue means the client reads nothing: the reply would never be seen.
        let _ = replies.try_send(Box::new(frame));
    };
    loop {
        let message = match tokio::time::timeout(heartbeat, stream.next()).await {
            Err(_) => return Ending::silent(End::Heartbeat),
            Ok(None | Some(Ok(Message::Close(_)))) => return Ending::silent(End::ClientClosed),
            Ok(Some(Err(error))) => {
                // tungstenite reports an oversized frame as a capacity error.
                let text = error.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    return Ending::closing(
                        End::TooBig,
                        code::TOO_BIG,
                        ServerFrame::error("too_big", "frame too large"),
                    );
                }
                return Ending::silent(End::ClientClosed);
            }
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(text) => Some(text),
            Message::Binary(_) | Message::Close(_) => None,
        };
        if limiter.check().is_err() {
            metrics.rate_limited.increment(1);
            strikes += 1;
            if strikes >= MAX_STRIKES {
                return Ending::closing(
                    End::Policy,
                    code::POLICY,
                    ServerFrame::error("rate_limited", "too many messages; disconnected"),
                );
            }
            if strikes == 1 {
                reply(ServerFrame::error(
                    "rate_limited",
                    format!(
                        "at most {} messages per second (burst {}); message dropped",
                        config.rate_limit, config.rate_burst
                    ),
                ));
            }
            continue;
        }
        strikes = 0;
        match text {
            None => reply(ServerFrame::error(
                "bad_frame",
                "binary frames are not supported; send JSON text",
            )),
            Some(text) => match handle_text(session, config, ban_key.as_deref(), &text) {
                Ok(()) => {}
                Err(Refused::Reply(frame)) => reply(frame),
                Err(Refused::Close(close, frame, end)) => {
                    return Ending::closing(end, close, frame)
                }
            },
        }
    }
}

/// The writing half: the room's broadcast, replies from the reading half, pings, shutdown.
async fn write(
    writer: &mut Writer,
    session: &Session,
    config: &crate::config::ChatConfig,
    mut events: broadcast::Receiver<RoomEvent>,
    seen: i64,
    mut replies: mpsc::Receiver<Box<ServerFrame>>,
) -> Ending {
    let metrics = session.chat.metrics();
    let ban_key = session.name.as_ref().map(DisplayName::ban_key);
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let shutdown = session.chat.shutdown().clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                return Ending::closing(End::Shutdown, code::GOING_AWAY,
                    ServerFrame::error("shutdown", "the server is shutting down"));
            }
            Some(frame) = replies.recv() => {
                if !writer.send_frame(&frame).await {
                    return Ending::silent(End::WriteTimeout);
                }
            }
            event = events.recv() => match event {
                Ok(RoomEvent::Frame { text, at, message }) => {
                    if message.is_some_and(|id| id <= seen) {
                        continue;
                    }
                    if !writer.send(Message::Text(text)).await {
                        metrics.dropped_slow.increment(1);
                        return Ending::silent(End::WriteTimeout);
                    }
                    metrics.messages_out.increment(1);
                    if session.sampled {
                        metrics.fanout.record(at.elapsed().as_secs_f64());
                    }
                }
                Ok(RoomEvent::Banned(key)) => {
                    if ban_key.as_deref() == Some(key.as_str()) {
                        return Ending::closing(End::Banned, code::POLICY,
                            ServerFrame::error("banned", "this display name was banned from this chat"));
                    }
                }
                Err(RecvError::Lagged(lost)) => {
                    metrics.dropped_lagged.increment(1);
                    return Ending::closing(End::Lagged, code::TRY_AGAIN_LATER, ServerFrame::error("lagged",
                        format!("too slow: {lost} frames behind; reconnect to catch up")));
                }
                Err(RecvError::Closed) => return Ending::silent(End::Shutdown),
            },
            _ = ping.tick() => {
                if !writer.send(Message::Ping(bytes::Bytes::new())).await {
                    return Ending::silent(End::WriteTimeout);
                }
            }
        }
    }
}

enum Refused {
    Reply(ServerFrame),
    Close(u16, ServerFrame, End),
}

fn handle_text(
    session: &Session,
    config: &crate::config::ChatConfig,
    ban_key: Option<&str>,
    text: &str,
) -> Result<(), Refused> {
    let frame: ClientFrame = serde_json::from_str(text).map_err(|e| {
        Refused::Reply(ServerFrame::error(
            "bad_frame",
            format!("expected {{\"type\":\"message\",\"text\":...}}: {e}"),
        ))
    })?;
    let ClientFrame::Message { text } = frame;
    let Some(name) = &session.name else {
        return Err(Refused::Reply(ServerFrame::error(
            "read_only",
            "join with ?name=<display name> to post",
        )));
    };
    if ban_key.is_some_and(|key| session.room.is_banned(key)) {
        return Err(Refused::Close(
            code::POLICY,
            ServerFrame::error("banned", "this display name is banned from this chat"),
            End::Banned,
        ));
    }
    let text = check_text(&text, config.max_message_chars).map_err(|e| match e {
        TextError::Empty => Refused::Reply(ServerFrame::error("empty", "the message is empty")),
        TextError::Control => Refused::Reply(ServerFrame::error(
            "bad_text",
            "the message contains control characters",
        )),
        TextError::TooLong(max) => Refused::Close(
            code::TOO_BIG,
            ServerFrame::error("too_long", format!("messages are at most {max} characters")),
            End::TooBig,
        ),
    })?;
    session.chat.post(&session.room, name, text);
    Ok(())
}
