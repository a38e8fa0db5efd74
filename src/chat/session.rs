//! One chat session: the task that owns a WebSocket. It sends `joined`, then relays the room's
//! broadcast to the client and the client's messages to the room, pings on an interval and
//! closes with a close code when a limit is crossed.
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
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

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

struct Socket {
    ws: WebSocket,
    write_timeout: Duration,
}

impl Socket {
    /// Sends a frame within the write deadline; false when the client did not take it.
    async fn send(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(self.write_timeout, self.ws.send(message)).await,
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

/// Refuses a connection that was upgraded over a limit: an `error` frame, then the close code.
pub async fn refuse(ws: WebSocket, refusal: super::limits::Refusal, write_timeout: Duration) {
    metrics::counter!("headwater_chat_refused_total", "reason" => refusal.code()).increment(1);
    let mut socket = Socket { ws, write_timeout };
    socket
        .close_with(
            refusal.close_code(),
            ServerFrame::error(refusal.code(), refusal.message()),
        )
        .await;
}

/// Runs a session until the client leaves, a limit closes it, or the server shuts down.
pub async fn run(ws: WebSocket, session: Session) {
    let config = session.chat.config().clone();
    let mut socket = Socket {
        ws,
        write_timeout: config.write_timeout,
    };
    let end = relay(&mut socket, &session, &config).await;
    metrics::counter!("headwater_chat_disconnects_total", "reason" => end.label()).increment(1);
    tracing::debug!(stream = %session.room.stream(), reason = end.label(), "chat session ended");
    drop(session);
}

async fn relay(socket: &mut Socket, session: &Session, config: &crate::config::ChatConfig) -> End {
    let chat = &session.chat;
    let room = &session.room;
    let metrics = chat.metrics();
    let (mut events, recent) = room.join();
    let seen = recent.last().map_or(i64::MIN, |m| m.id);
    let joined = ServerFrame::Joined {
        stream: room.stream().to_string(),
        name: session.name.as_ref().map(|n| n.as_str().to_owned()),
        can_post: session.name.is_some(),
        messages: recent.iter().map(MessageFrame::from).collect(),
    };
    if !socket.send_frame(&joined).await {
        return End::WriteTimeout;
    }
    let ban_key = session.name.as_ref().map(DisplayName::ban_key);
    let limiter = rate_limiter(config);
    let mut strikes = 0u32;
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = Instant::now();
    let shutdown = chat.shutdown().clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                socket.close_with(code::GOING_AWAY, ServerFrame::error("shutdown", "the server is shutting down")).await;
                return End::Shutdown;
            }
            incoming = socket.ws.recv() => {
                let message = match incoming {
                    None | Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Err(error)) => {
                        // tungstenite reports an oversized frame as a capacity error.
                        if error.to_string().contains("too long") || error.to_string().contains("Space limit") {
                            socket.close_with(code::TOO_BIG, ServerFrame::error("too_big", "frame too large")).await;
                            return End::TooBig;
                        }
                        return End::ClientClosed;
                    }
                    Some(Ok(message)) => message,
                };
                heard = Instant::now();
                let text = match message {
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Text(text) => Some(text),
                    Message::Binary(_) | Message::Close(_) => None,
                };
                if limiter.check().is_err() {
                    metrics.rate_limited.increment(1);
                    strikes += 1;
                    if strikes >= MAX_STRIKES {
                        socket.close_with(code::POLICY, ServerFrame::error("rate_limited", "too many messages; disconnected")).await;
                        return End::Policy;
                    }
                    if strikes == 1 && !socket.send_frame(&ServerFrame::error("rate_limited",
                        format!("at most {} messages per second (burst {}); message dropped", config.rate_limit, config.rate_burst))).await {
                        return End::WriteTimeout;
                    }
                    continue;
                }
                strikes = 0;
                let reply = match text {
                    None => Some(ServerFrame::error("bad_frame", "binary frames are not supported; send JSON text")),
                    Some(text) => match handle_text(session, config, ban_key.as_deref(), &text) {
                        Ok(()) => None,
                        Err(Refused::Reply(frame)) => Some(frame),
                        Err(Refused::Close(close, frame, end)) => {
                            socket.close_with(close, frame).await;
                            return end;
                        }
                    },
                };
                if let Some(frame) = reply {
                    if !socket.send_frame(&frame).await {
                        return End::WriteTimeout;
                    }
                }
            }
            event = events.recv() => match event {
                Ok(RoomEvent::Frame { text, at, message }) => {
                    if message.is_some_and(|id| id <= seen) {
                        continue;
                    }
                    if !socket.send(Message::Text(text)).await {
                        metrics.dropped_slow.increment(1);
                        return End::WriteTimeout;
                    }
                    metrics.messages_out.increment(1);
                    if session.sampled {
                        metrics.fanout.record(at.elapsed().as_secs_f64());
                    }
                }
                Ok(RoomEvent::Banned(key)) => {
                    if ban_key.as_deref() == Some(key.as_str()) {
                        socket.close_with(code::POLICY, ServerFrame::error("banned", "this display name was banned from this chat")).await;
                        return End::Banned;
                    }
                }
                Err(RecvError::Lagged(lost)) => {
                    metrics.dropped_lagged.increment(1);
                    socket.close_with(code::TRY_AGAIN_LATER, ServerFrame::error("lagged",
                        format!("too slow: {lost} frames behind; reconnect to catch up"))).await;
                    return End::Lagged;
                }
                Err(RecvError::Closed) => return End::Shutdown,
            },
            _ = ping.tick() => {
                if heard.elapsed() > config.ping_interval * 2 {
                    return End::Heartbeat;
                }
                if !socket.send(Message::Ping(bytes::Bytes::new())).await {
                    return End::WriteTimeout;
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
