//! The server side of an RTMP publishing session, as a sans-IO state machine.
//!
//! Feed it the bytes that follow the handshake with [`Session::receive`], pull [`Event`]s with
//! [`Session::next_event`], answer connect and publish requests with the `accept_*` / `reject_*`
//! methods, and write out whatever [`Session::take_output`] returns. It speaks just enough of the
//! NetConnection / NetStream command set for publishers (ffmpeg, OBS, GStreamer):
//!
//! * on creation: Window Acknowledgement Size, Set Peer Bandwidth and Set Chunk Size (4096);
//! * `connect` → [`Event::Connect`]; accepted with `_result` (NetConnection.Connect.Success),
//!   rejected with `_error` (NetConnection.Connect.Rejected);
//! * `releaseStream` → `_result`, `FCPublish` → `onFCPublish` (clients do not wait for them);
//! * `createStream` → `_result` with a new message stream id (1 first);
//! * `publish` → [`Event::Publish`]; accepted with StreamBegin + onStatus
//!   NetStream.Publish.Start, rejected with an onStatus of level `error`;
//! * `FCUnpublish`, `closeStream`, `deleteStream` → [`Event::PublishFinished`];
//! * audio and video messages on the publishing stream → [`Event::Audio`] / [`Event::Video`]
//!   (the payload is shared, not copied);
//! * Ping requests are answered, Acknowledgements are sent per the peer's window;
//! * anything else (metadata, `play`, unknown commands) is logged at debug level and ignored.

use super::amf0::{self, Amf0Error, Value};
use super::chunk::{msg_type, ChunkError, ChunkReader, ChunkWriter, Limits, Message};
use bytes::Bytes;
use std::collections::HashMap;
use tracing::debug;

/// Window Acknowledgement Size we announce (bytes between the peer's acknowledgements).
pub const WINDOW_ACK_SIZE: u32 = 5_000_000;
/// Peer bandwidth we announce (dynamic limit).
pub const PEER_BANDWIDTH: u32 = 5_000_000;
/// Our outgoing chunk size, announced first thing.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// Message streams one connection may create.
pub const MAX_STREAMS: usize = 8;

/// Chunk stream for protocol control and user control messages.
const CSID_CONTROL: u32 = 2;
/// Chunk stream for connection-level command replies.
const CSID_COMMAND: u32 = 3;
/// Chunk stream for stream-level status messages.
const CSID_STREAM: u32 = 5;

/// User Control event types.
const STREAM_BEGIN: u16 = 0;
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;
/// Set Peer Bandwidth limit type "dynamic".
const LIMIT_DYNAMIC: u8 = 2;

/// Something the server has to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer wants to connect to an application; answer with
    /// [`Session::accept_connect`] or [`Session::reject_connect`].
    Connect(ConnectRequest),
    /// The peer wants to publish; answer with [`Session::accept_publish`] or
    /// [`Session::reject_publish`].
    Publish(PublishCommand),
    /// The peer stopped publishing on `stream_id` (FCUnpublish, closeStream or deleteStream).
    PublishFinished {
        /// The message stream that was publishing.
        stream_id: u32,
    },
    /// An audio message (an FLV audio tag body) on the publishing stream.
    Audio(Media),
    /// A video message (an FLV video tag body) on the publishing stream.
    Video(Media),
}

/// A `connect` command.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRequest {
    /// The application name: the command object's `app`, without a query string or trailing
    /// `/` (empty when missing).
    pub app: String,
    transaction_id: f64,
}

/// A `publish` command.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishCommand {
    /// The application the connection is connected to.
    pub app: String,
    /// The stream key: the publishing name up to any `?`. Secret: never log it.
    pub key: String,
    /// What followed `?` in the publishing name, if anything (may carry tokens: never log it).
    pub query: Option<String>,
    /// The message stream being published on.
    pub stream_id: u32,
}

/// An audio or video message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Message timestamp in milliseconds (32 bits, wraps).
    pub timestamp: u32,
    /// The message body (an FLV tag body without the tag header).
    pub payload: Bytes,
}

/// Why a session cannot continue. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The chunk stream is malformed or over a limit.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A command message that is not valid AMF0.
    #[error("undecodable command: {0}")]
    Amf0(#[from] Amf0Error),
    /// A command out of order or without its required arguments.
    #[error("{0}")]
    Command(&'static str),
}

/// The state of a message stream created by `createStream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Created,
    Publishing,
}

/// One connection's RTMP session (after the handshake).
#[derive(Debug)]
pub struct Session {
    reader: ChunkReader,
    writer: ChunkWriter,
    out: Vec<u8>,
    /// The application, once a connect was accepted.
    app: Option<String>,
    streams: HashMap<u32, StreamState>,
    next_stream_id: u32,
    /// Bytes received in total, and when we last acknowledged.
    received: u64,
    acked: u64,
    /// The peer's Window Acknowledgement Size (0: none announced, no acknowledgements).
    peer_window: u32,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A new session with its opening control messages queued in the output.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A new session whose chunk reader enforces `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        let mut session = Self {
            reader: ChunkReader::new(limits),
            writer: ChunkWriter::new(),
            out: Vec::new(),
            app: None,
            streams: HashMap::new(),
            next_stream_id: 1,
            received: 0,
            acked: 0,
            peer_window: 0,
        };
        session.send_control(msg_type::WINDOW_ACK_SIZE, &WINDOW_ACK_SIZE.to_be_bytes());
        let mut bandwidth = PEER_BANDWIDTH.to_be_bytes().to_vec();
        bandwidth.push(LIMIT_DYNAMIC);
        session.send_control(msg_type::SET_PEER_BANDWIDTH, &bandwidth);
        session.send_control(msg_type::SET_CHUNK_SIZE, &OUT_CHUNK_SIZE.to_be_bytes());
        if session.writer.set_chunk_size(OUT_CHUNK_SIZE).is_err() {
            // Unreachable: the constant is a valid chunk size.
            debug!("invalid outgoing chunk size");
        }
        session
    }

    /// Takes in received bytes; queues an Acknowledgement when the peer's window is reached.
    /// Drain [`next_event`](Self::next_event) afterwards.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
        self.received = self.received.saturating_add(bytes.len() as u64);
        if self.peer_window > 0
            && self.received.saturating_sub(self.acked) >= u64::from(self.peer_window)
        {
            self.acked = self.received;
            // The sequence number is the byte count so far; it wraps at 32 bits.
            let sequence = self.received as u32;
            self.send_control(msg_type::ACKNOWLEDGEMENT, &sequence.to_be_bytes());
        }
    }

    /// The next event, `Ok(None)` when all received bytes are processed.
    pub fn next_event(&mut self) -> Result<Option<Event>, SessionError> {
        while let Some(message) = self.reader.next_message()? {
            if let Some(event) = self.handle(message)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Bytes to send to the peer (empties the queue).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether there are bytes to send.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The application the connection is connected to, once a connect was accepted.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// Accepts a connect request: replies NetConnection.Connect.Success.
    pub fn accept_connect(&mut self, request: &ConnectRequest) {
        self.app = Some(request.app.clone());
        let properties = Value::object([
            ("fmsVer", Value::string("FMS/3,0,1,123")),
            ("capabilities", Value::Number(31.0)),
        ]);
        let information = Value::object([
            ("level", Value::string("status")),
            ("code", Value::string("NetConnection.Connect.Success")),
            ("description", Value::string("Connection succeeded.")),
            ("objectEncoding", Value::Number(0.0)),
        ]);
        self.send_command(
            CSID_COMMAND,
            0,
            &[
                Value::string("_result"),
                Value::Number(request.transaction_id),
                properties,
                information,
            ],
        );
    }

    /// Rejects a connect request: replies `_error` with NetConnection.Connect.Rejected.
    pub fn reject_connect(&mut self, request: &ConnectRequest, description: &str) {
        let information = Value::object([
            ("level", Value::string("error")),
            ("code", Value::string("NetConnection.Connect.Rejected")),
            ("description", Value::string(description)),
        ]);
        self.send_command(
            CSID_COMMAND,
            0,
            &[
                Value::string("_error"),
                Value::Number(request.transaction_id),
                Value::Null,
                information,
            ],
        );
    }

    /// Accepts a publish request: StreamBegin, then onStatus NetStream.Publish.Start. Audio and
    /// video on the stream are raised as events from now on.
    pub fn accept_publish(&mut self, request: &PublishCommand) {
        self.streams
            .insert(request.stream_id, StreamState::Publishing);
        let mut begin = STREAM_BEGIN.to_be_bytes().to_vec();
        begin.extend_from_slice(&request.stream_id.to_be_bytes());
        self.send_control(msg_type::USER_CONTROL, &begin);
        self.send_status(
            request.stream_id,
            "status",
            "NetStream.Publish.Start",
            "Publishing.",
        );
    }

    /// Rejects a publish request with an onStatus of level `error` and the given `code`
    /// (e.g. NetStream.Publish.BadName or NetStream.Publish.Rejected).
    pub fn reject_publish(&mut self, request: &PublishCommand, code: &str, description: &str) {
        self.send_status(request.stream_id, "error", code, description);
    }

    fn handle(&mut self, message: Message) -> Result<Option<Event>, SessionError> {
        match message.type_id {
            msg_type::AUDIO | msg_type::VIDEO => {
                if self.streams.get(&message.stream_id) != Some(&StreamState::Publishing) {
                    debug!(
                        stream_id = message.stream_id,
                        "media on a stream that is not publishing; dropped"
                    );
                    return Ok(None);
                }
                let media = Media {
                    timestamp: message.timestamp,
                    payload: message.payload,
                };
                Ok(Some(if message.type_id == msg_type::AUDIO {
                    Event::Audio(media)
                } else {
                    Event::Video(media)
                }))
            }
            msg_type::COMMAND_AMF0 => self.command(&message.payload, message.stream_id),
            msg_type::COMMAND_AMF3 => match message.payload.split_first() {
                // AMF3 commands start with a format byte; publishers then use AMF0 anyway.
                Some((0, body)) => self.command(body, message.stream_id),
                _ => {
                    debug!("AMF3-encoded command ignored");
                    Ok(None)
                }
            },
            msg_type::DATA_AMF0 => {
                match amf0::decode_all(&message.payload) {
                    Ok(values) => {
                        let name = values.first().and_then(|v| v.as_str()).unwrap_or("");
                        debug!(name, "data message ignored");
                    }
                    Err(error) => debug!(%error, "undecodable data message ignored"),
                }
                Ok(None)
            }
            msg_type::USER_CONTROL => {
                self.user_control(&message.payload);
                Ok(None)
            }
            msg_type::WINDOW_ACK_SIZE => {
                match message.payload.get(..4).and_then(|b| b.try_into().ok()) {
                    Some(bytes) => self.peer_window = u32::from_be_bytes(bytes),
                    None => debug!("truncated Window Acknowledgement Size ignored"),
                }
                Ok(None)
            }
            msg_type::SET_CHUNK_SIZE
            | msg_type::ABORT
            | msg_type::ACKNOWLEDGEMENT
            | msg_type::SET_PEER_BANDWIDTH => Ok(None), // applied by the reader, or nothing to do
            other => {
                debug!(type_id = other, "rtmp message ignored");
                Ok(None)
            }
        }
    }

    fn user_control(&mut self, payload: &[u8]) {
        let Some(kind) = payload
            .get(..2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
        else {
            debug!("truncated user control message ignored");
            return;
        };
        if kind == PING_REQUEST {
            if let Some(time) = payload.get(2..6) {
                let mut response = PING_RESPONSE.to_be_bytes().to_vec();
                response.extend_from_slice(time);
                self.send_control(msg_type::USER_CONTROL, &response);
            }
        }
    }

    fn command(&mut self, body: &[u8], stream_id: u32) -> Result<Option<Event>, SessionError> {
        let values = amf0::decode_all(body)?;
        let mut values = values.into_iter();
        let Some(Value::String(name)) = values.next() else {
            return Err(SessionError::Command("command without a name"));
        };
        let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Value::Null);
        let arguments: Vec<Value> = values.collect();
        debug!(command = %name, transaction_id, stream_id, "rtmp command");
        match name.as_str() {
            "connect" => {
                let app = command_object
                    .get("app")
                    .and_then(Value::as_str)
                    .map(normalize_app)
                    .unwrap_or_default();
                Ok(Some(Event::Connect(ConnectRequest {
                    app,
                    transaction_id,
                })))
            }
            "releaseStream" => {
                self.send_result(transaction_id, Value::Undefined);
                Ok(None)
            }
            "FCPublish" => {
                let status = Value::object([
                    ("code", Value::string("NetStream.Publish.Start")),
                    ("description", Value::string("FCPublish")),
                ]);
                self.send_command(
                    CSID_COMMAND,
                    0,
                    &[
                        Value::string("onFCPublish"),
                        Value::Number(0.0),
                        Value::Null,
                        status,
                    ],
                );
                Ok(None)
            }
            "createStream" => {
                if self.app.is_none() {
                    return Err(SessionError::Command("createStream before connect"));
                }
                if self.streams.len() >= MAX_STREAMS {
                    return Err(SessionError::Command("too many streams"));
                }
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.saturating_add(1);
                self.streams.insert(id, StreamState::Created);
                self.send_result(transaction_id, Value::Number(f64::from(id)));
                Ok(None)
            }
            "publish" => {
                let Some(app) = self.app.clone() else {
                    return Err(SessionError::Command("publish before connect"));
                };
                if !self.streams.contains_key(&stream_id) {
                    return Err(SessionError::Command("publish on a stream never created"));
                }
                let Some(name) = arguments.first().and_then(Value::as_str) else {
                    return Err(SessionError::Command("publish without a name"));
                };
                let (key, query) = match name.split_once('?') {
                    Some((key, query)) => (key.to_owned(), Some(query.to_owned())),
                    None => (name.to_owned(), None),
                };
                Ok(Some(Event::Publish(PublishCommand {
                    app,
                    key,
                    query,
                    stream_id,
                })))
            }
            "FCUnpublish" => {
                let publishing = self
                    .streams
                    .iter()
                    .find(|(_, state)| **state == StreamState::Publishing)
                    .map(|(id, _)| *id);
                Ok(publishing.map(|id| self.finish(id, true)))
            }
            "closeStream" => Ok(self.finish_if_publishing(stream_id, true)),
            "deleteStream" => {
                let id = arguments
                    .first()
                    .and_then(Value::as_number)
                    .filter(|n| (0.0..=f64::from(u32::MAX)).contains(n))
                    .map(|n| n as u32);
                let Some(id) = id else {
                    debug!("deleteStream without a stream id ignored");
                    return Ok(None);
                };
                let event = self.finish_if_publishing(id, false);
                self.streams.remove(&id);
                Ok(event)
            }
            "play" => {
                // An ingest server: players are told so instead of left waiting.
                self.send_status(
                    stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "This server only accepts publishers.",
                );
                Ok(None)
            }
            _ => {
                debug!(command = %name, "rtmp command ignored");
                Ok(None)
            }
        }
    }

    fn finish_if_publishing(&mut self, stream_id: u32, keep: bool) -> Option<Event> {
        (self.streams.get(&stream_id) == Some(&StreamState::Publishing))
            .then(|| self.finish(stream_id, keep))
    }

    /// Ends publishing on `stream_id` (the stream stays created when `keep`).
    fn finish(&mut self, stream_id: u32, keep: bool) -> Event {
        if keep {
            self.streams.insert(stream_id, StreamState::Created);
        } else {
            self.streams.remove(&stream_id);
        }
        Event::PublishFinished { stream_id }
    }

    fn send_result(&mut self, transaction_id: f64, value: Value) {
        if transaction_id == 0.0 {
            return; // nobody waits for a reply to transaction 0
        }
        self.send_command(
            CSID_COMMAND,
            0,
            &[
                Value::string("_result"),
                Value::Number(transaction_id),
                Value::Null,
                value,
            ],
        );
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let information = Value::object([
            ("level", Value::string(level)),
            ("code", Value::string(code)),
            ("description", Value::string(description)),
        ]);
        self.send_command(
            CSID_STREAM,
            stream_id,
            &[
                Value::string("onStatus"),
                Value::Number(0.0),
                Value::Null,
                information,
            ],
        );
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Value]) {
        self.send(
            csid,
            msg_type::COMMAND_AMF0,
            stream_id,
            amf0::encode_all(values),
        );
    }

    fn send_control(&mut self, type_id: u8, payload: &[u8]) {
        self.send(CSID_CONTROL, type_id, 0, payload.to_vec());
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        if let Err(error) = self.writer.write(&message, &mut self.out) {
            // Unreachable: our csids are valid and our messages small.
            debug!(%error, "outgoing message dropped");
        }
    }
}

/// `live/?token=x` → `live`: the app without a query string or trailing slashes.
fn normalize_app(app: &str) -> String {
    let app = app.split_once('?').map_or(app, |(app, _)| app);
    app.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted publisher: writes commands and media, reads the server's replies.
    struct Client {
        writer: ChunkWriter,
        reader: ChunkReader,
    }

    impl Client {
        fn new() -> Self {
            Self {
                writer: ChunkWriter::new(),
                reader: ChunkReader::default(),
            }
        }

        fn message(
            &self,
            csid: u32,
            type_id: u8,
            stream_id: u32,
            ts: u32,
            payload: Vec<u8>,
        ) -> Vec<u8> {
            let mut out = Vec::new();
            self.writer
                .write(
                    &Message {
                        csid,
                        timestamp: ts,
                        type_id,
                        stream_id,
                        payload: Bytes::from(payload),
                    },
                    &mut out,
                )
                .expect("write");
            out
        }

        fn command(&self, stream_id: u32, values: &[Value]) -> Vec<u8> {
            self.message(
                3,
                msg_type::COMMAND_AMF0,
                stream_id,
                0,
                amf0::encode_all(values),
            )
        }

        /// Decodes the server's output into (type id, stream id, AMF values or raw payload).
        fn replies(&mut self, bytes: &[u8]) -> Vec<(u8, u32, Vec<Value>, Bytes)> {
            self.reader.push(bytes);
            let mut out = Vec::new();
            while let Some(m) = self.reader.next_message().expect("server output parses") {
                let values = if m.type_id == msg_type::COMMAND_AMF0 {
                    amf0::decode_all(&m.payload).expect("server AMF0 decodes")
                } else {
                    Vec::new()
                };
                out.push((m.type_id, m.stream_id, values, m.payload));
            }
            out
        }
    }

    fn events(session: &mut Session) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(event) = session.next_event().expect("no session error") {
            out.push(event);
        }
        out
    }

    fn connect_values(app: &str) -> Vec<Value> {
        vec![
            Value::string("connect"),
            Value::Number(1.0),
            Value::object([
                ("app", Value::string(app)),
                ("type", Value::string("nonprivate")),
            ]),
        ]
    }

    /// Runs connect + createStream + publish, accepting both; returns the session and client.
    fn publishing_session() -> (Session, Client) {
        let mut session = Session::new();
        let mut client = Client::new();
        let _ = client.replies(&session.take_output());
        session.receive(&client.command(0, &connect_values("live")));
        let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
            panic!("no connect event")
        };
        session.accept_connect(&connect);
        session.receive(&client.command(
            0,
            &[
                Value::string("createStream"),
                Value::Number(2.0),
                Value::Null,
            ],
        ));
        assert_eq!(events(&mut session), vec![]);
        session.receive(&client.command(
            1,
            &[
                Value::string("publish"),
                Value::Number(3.0),
                Value::Null,
                Value::string("demo"),
                Value::string("live"),
            ],
        ));
        let Some(Event::Publish(publish)) = session.next_event().expect("ok") else {
            panic!("no publish event")
        };
        session.accept_publish(&publish);
        let _ = client.replies(&session.take_output());
        (session, client)
    }

    #[test]
    fn opening_messages() {
        let mut session = Session::new();
        let mut client = Client::new();
        let replies = client.replies(&session.take_output());
        let kinds: Vec<(u8, Bytes)> = replies.into_iter().map(|r| (r.0, r.3)).collect();
        assert_eq!(
            kinds,
            vec![
                (
                    msg_type::WINDOW_ACK_SIZE,
                    Bytes::from_static(&[0, 0x4C, 0x4B, 0x40])
                ),
                (
                    msg_type::SET_PEER_BANDWIDTH,
                    Bytes::from_static(&[0, 0x4C, 0x4B, 0x40, 2])
                ),
                (
                    msg_type::SET_CHUNK_SIZE,
                    Bytes::from_static(&[0, 0, 0x10, 0])
                ),
            ]
        );
        assert_eq!(client.reader.chunk_size(), OUT_CHUNK_SIZE);
        assert!(!session.has_output());
    }

    #[test]
    fn real_ffmpeg_connect_raises_a_connect_event_and_gets_success() {
        let mut session = Session::new();
        let mut client = Client::new();
        let _ = client.replies(&session.take_output());
        session.receive(include_bytes!("testdata/ffmpeg_connect.bin"));
        let events = events(&mut session);
        let [Event::Connect(connect)] = events.as_slice() else {
            panic!("expected one connect event, got {events:?}")
        };
        assert_eq!(connect.app, "live");
        session.accept_connect(connect);
        assert_eq!(session.app(), Some("live"));
        let replies = client.replies(&session.take_output());
        let [(msg_type::COMMAND_AMF0, 0, values, _)] = replies.as_slice() else {
            panic!("expected one command, got {replies:?}")
        };
        assert_eq!(values[0], Value::string("_result"));
        assert_eq!(values[1], Value::Number(1.0));
        assert_eq!(
            values[3].get("code"),
            Some(&Value::string("NetConnection.Connect.Success"))
        );
        assert_eq!(values[3].get("objectEncoding"), Some(&Value::Number(0.0)));
        assert_eq!(values[2].get("capabilities"), Some(&Value::Number(31.0)));
    }

    #[test]
    fn app_names_lose_query_and_trailing_slash() {
        for (raw, app) in [
            ("live", "live"),
            ("live/", "live"),
            ("live?x=1", "live"),
            ("live/?x=1/", "live"),
        ] {
            let mut session = Session::new();
            session.receive(&Client::new().command(0, &connect_values(raw)));
            let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
                panic!("no connect")
            };
            assert_eq!(connect.app, app, "{raw}");
        }
        // No app at all: an empty name (which the server then refuses).
        let mut session = Session::new();
        session.receive(&Client::new().command(
            0,
            &[Value::string("connect"), Value::Number(1.0), Value::Null],
        ));
        let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
            panic!("no connect")
        };
        assert_eq!(connect.app, "");
    }

    #[test]
    fn rejected_connect_gets_an_error() {
        let mut session = Session::new();
        let mut client = Client::new();
        let _ = client.replies(&session.take_output());
        session.receive(&client.command(0, &connect_values("other")));
        let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
            panic!("no connect")
        };
        session.reject_connect(&connect, "unknown application");
        let replies = client.replies(&session.take_output());
        assert_eq!(replies[0].2[0], Value::string("_error"));
        assert_eq!(
            replies[0].2[3].get("code"),
            Some(&Value::string("NetConnection.Connect.Rejected"))
        );
        assert_eq!(session.app(), None);
    }

    #[test]
    fn ffmpeg_command_sequence_to_publishing() {
        let mut session = Session::new();
        let mut client = Client::new();
        let _ = client.replies(&session.take_output());
        session.receive(&client.command(0, &connect_values("live")));
        let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
            panic!("no connect")
        };
        session.accept_connect(&connect);
        let _ = client.replies(&session.take_output());

        let mut bytes = client.command(
            0,
            &[
                Value::string("releaseStream"),
                Value::Number(2.0),
                Value::Null,
                Value::string("demo?t=1"),
            ],
        );
        bytes.extend(client.command(
            0,
            &[
                Value::string("FCPublish"),
                Value::Number(3.0),
                Value::Null,
                Value::string("demo?t=1"),
            ],
        ));
        bytes.extend(client.command(
            0,
            &[
                Value::string("createStream"),
                Value::Number(4.0),
                Value::Null,
            ],
        ));
        session.receive(&bytes);
        assert_eq!(events(&mut session), vec![]);
        let replies = client.replies(&session.take_output());
        let names: Vec<&str> = replies.iter().filter_map(|r| r.2[0].as_str()).collect();
        assert_eq!(names, vec!["_result", "onFCPublish", "_result"]);
        assert_eq!(replies[2].2[1], Value::Number(4.0));
        assert_eq!(replies[2].2[3], Value::Number(1.0), "first stream id is 1");

        session.receive(&client.command(
            1,
            &[
                Value::string("publish"),
                Value::Number(5.0),
                Value::Null,
                Value::string("demo?t=1"),
                Value::string("live"),
            ],
        ));
        let Some(Event::Publish(publish)) = session.next_event().expect("ok") else {
            panic!("no publish")
        };
        assert_eq!(publish.key, "demo");
        assert_eq!(publish.query.as_deref(), Some("t=1"));
        assert_eq!((publish.app.as_str(), publish.stream_id), ("live", 1));

        // Media before the publish is accepted is dropped.
        session.receive(&client.message(6, msg_type::VIDEO, 1, 0, vec![0x17, 0]));
        assert_eq!(events(&mut session), vec![]);

        session.accept_publish(&publish);
        let replies = client.replies(&session.take_output());
        assert_eq!(replies[0].0, msg_type::USER_CONTROL);
        assert_eq!(&replies[0].3[..], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(replies[1].1, 1, "onStatus on the publishing stream");
        assert_eq!(replies[1].2[0], Value::string("onStatus"));
        assert_eq!(
            replies[1].2[3].get("code"),
            Some(&Value::string("NetStream.Publish.Start"))
        );
        assert_eq!(replies[1].2[3].get("level"), Some(&Value::string("status")));
    }

    #[test]
    fn media_events_carry_timestamp_and_payload() {
        let (mut session, client) = publishing_session();
        let mut bytes = client.message(6, msg_type::VIDEO, 1, 40, vec![0x17, 1, 0, 0, 0, 9]);
        bytes.extend(client.message(4, msg_type::AUDIO, 1, 41, vec![0xAF, 1, 7]));
        bytes.extend(client.message(
            4,
            msg_type::DATA_AMF0,
            1,
            0,
            amf0::encode_all(&[Value::string("@setDataFrame"), Value::string("onMetaData")]),
        ));
        // Media on another stream id is not ours.
        bytes.extend(client.message(7, msg_type::VIDEO, 2, 0, vec![1]));
        session.receive(&bytes);
        assert_eq!(
            events(&mut session),
            vec![
                Event::Video(Media {
                    timestamp: 40,
                    payload: Bytes::from_static(&[0x17, 1, 0, 0, 0, 9])
                }),
                Event::Audio(Media {
                    timestamp: 41,
                    payload: Bytes::from_static(&[0xAF, 1, 7])
                }),
            ]
        );
    }

    #[test]
    fn rejected_publish_gets_an_error_status() {
        let mut session = Session::new();
        let mut client = Client::new();
        let _ = client.replies(&session.take_output());
        session.receive(&client.command(0, &connect_values("live")));
        let Some(Event::Connect(connect)) = session.next_event().expect("ok") else {
            panic!()
        };
        session.accept_connect(&connect);
        session.receive(&client.command(
            0,
            &[
                Value::string("createStream"),
                Value::Number(2.0),
                Value::Null,
            ],
        ));
        session.receive(&client.command(
            1,
            &[
                Value::string("publish"),
                Value::Number(0.0),
                Value::Null,
                Value::string("nope"),
            ],
        ));
        let Some(Event::Publish(publish)) = session.next_event().expect("ok") else {
            panic!()
        };
        session.reject_publish(&publish, "NetStream.Publish.BadName", "taken");
        let replies = client.replies(&session.take_output());
        let status = &replies.last().expect("status").2;
        assert_eq!(status[0], Value::string("onStatus"));
        assert_eq!(status[3].get("level"), Some(&Value::string("error")));
        assert_eq!(
            status[3].get("code"),
            Some(&Value::string("NetStream.Publish.BadName"))
        );
        // Not publishing: media is dropped.
        session.receive(&client.message(6, msg_type::VIDEO, 1, 0, vec![0x17, 0]));
        assert_eq!(events(&mut session), vec![]);
    }

    #[test]
    fn unpublish_raises_finished_once() {
        let (mut session, client) = publishing_session();
        let mut bytes = client.command(
            0,
            &[
                Value::string("FCUnpublish"),
                Value::Number(6.0),
                Value::Null,
                Value::string("demo"),
            ],
        );
        bytes.extend(client.command(
            0,
            &[
                Value::string("deleteStream"),
                Value::Number(7.0),
                Value::Null,
                Value::Number(1.0),
            ],
        ));
        session.receive(&bytes);
        assert_eq!(
            events(&mut session),
            vec![Event::PublishFinished { stream_id: 1 }]
        );

        let (mut session, client) = publishing_session();
        session.receive(&client.command(
            0,
            &[
                Value::string("deleteStream"),
                Value::Number(7.0),
                Value::Null,
                Value::Number(1.0),
            ],
        ));
        assert_eq!(
            events(&mut session),
            vec![Event::PublishFinished { stream_id: 1 }]
        );

        let (mut session, client) = publishing_session();
        session.receive(&client.command(
            1,
            &[
                Value::string("closeStream"),
                Value::Number(0.0),
                Value::Null,
            ],
        ));
        assert_eq!(
            events(&mut session),
            vec![Event::PublishFinished { stream_id: 1 }]
        );
    }

    #[test]
    fn out_of_order_commands_are_errors() {
        let client = Client::new();
        let mut session = Session::new();
        session.receive(&client.command(
            0,
            &[
                Value::string("createStream"),
                Value::Number(2.0),
                Value::Null,
            ],
        ));
        assert!(matches!(
            session.next_event(),
            Err(SessionError::Command(_))
        ));

        let mut session = Session::new();
        session.receive(&client.command(
            1,
            &[
                Value::string("publish"),
                Value::Number(0.0),
                Value::Null,
                Value::string("k"),
            ],
        ));
        assert!(matches!(
            session.next_event(),
            Err(SessionError::Command(_))
        ));

        let mut session = Session::new();
        session.receive(&client.message(3, msg_type::COMMAND_AMF0, 0, 0, vec![0x02, 0, 9]));
        assert!(matches!(session.next_event(), Err(SessionError::Amf0(_))));

        let mut session = Session::new();
        session.receive(&client.command(0, &[Value::Number(1.0)]));
        assert!(matches!(
            session.next_event(),
            Err(SessionError::Command(_))
        ));
    }

    #[test]
    fn ping_request_gets_a_response() {
        let client = Client::new();
        let mut session = Session::new();
        let mut reader = Client::new();
        let _ = reader.replies(&session.take_output());
        session.receive(&client.message(2, msg_type::USER_CONTROL, 0, 0, vec![0, 6, 1, 2, 3, 4]));
        assert_eq!(events(&mut session), vec![]);
        let replies = reader.replies(&session.take_output());
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0, msg_type::USER_CONTROL);
        assert_eq!(&replies[0].3[..], &[0, 7, 1, 2, 3, 4]);
    }

    #[test]
    fn acknowledgements_follow_the_peer_window() {
        let (mut session, client) = publishing_session();
        let mut reader = Client::new();
        session.receive(&client.message(
            2,
            msg_type::WINDOW_ACK_SIZE,
            0,
            0,
            1000u32.to_be_bytes().to_vec(),
        ));
        assert_eq!(events(&mut session), vec![]);
        assert!(!session.has_output(), "no ack before the window is reached");
        let mut received = session.received;
        assert!(received < 1000);
        let (mut acked, mut expected, mut acks) = (0u64, Vec::new(), Vec::new());
        for _ in 0..10 {
            let bytes = client.message(6, msg_type::VIDEO, 1, 0, vec![0x27; 300]);
            received += bytes.len() as u64;
            if received - acked >= 1000 {
                acked = received;
                expected.push(received as u32);
            }
            session.receive(&bytes);
            assert_eq!(events(&mut session).len(), 1);
            for reply in reader.replies(&session.take_output()) {
                assert_eq!(reply.0, msg_type::ACKNOWLEDGEMENT);
                acks.push(u32::from_be_bytes(
                    reply.3[..4].try_into().expect("4 bytes"),
                ));
            }
        }
        assert_eq!(acks, expected);
        assert!(acks.len() >= 2);
    }

    #[test]
    fn play_is_refused() {
        let client = Client::new();
        let mut session = Session::new();
        let mut reader = Client::new();
        let _ = reader.replies(&session.take_output());
        session.receive(&client.command(
            1,
            &[
                Value::string("play"),
                Value::Number(0.0),
                Value::Null,
                Value::string("x"),
            ],
        ));
        assert_eq!(events(&mut session), vec![]);
        let replies = reader.replies(&session.take_output());
        assert_eq!(
            replies[0].2[3].get("code"),
            Some(&Value::string("NetStream.Play.Failed"))
        );
    }
}
