//! The RTMP listener and one task per connection: handshake, session, publish auth, frames.

use super::handshake::{Handshake, HandshakeError};
use super::publisher::TagAdapter;
use super::session::{Event, Session, SessionError};
use super::{Publish, PublishRequest, PublisherSink, Refusal, StreamKey};
use crate::connections::Connections;
use crate::flv::FlvError;
use crate::frame::IngestEvent;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, info, warn, Instrument};

/// Limits and names the RTMP server enforces.
#[derive(Debug, Clone)]
pub struct RtmpSettings {
    /// The application name publishers must use (`live` in `rtmp://host/live/<key>`).
    pub app: String,
    /// Time allowed for the handshake and for `connect` + `publish`.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (a stalled publisher).
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed right after accept.
    pub max_connections: usize,
}

/// Why a connection ended badly. Logged once per connection.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket error")]
    Io(#[from] std::io::Error),
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("handshake failed")]
    Handshake(#[source] HandshakeError),
    #[error("no data for {0:?} (stalled publisher)")]
    Idle(Duration),
    #[error("RTMP protocol error")]
    Protocol(#[source] SessionError),
    #[error("publish refused: {0}")]
    Refused(Refusal),
    #[error("not publishing within {0:?}")]
    NoPublish(Duration),
    #[error("unplayable media")]
    Media(#[source] FlvError),
    #[error("{0} malformed media messages")]
    TooManyBadTags(u32),
}

const READ_BUFFER: usize = 64 * 1024;
/// Malformed tags tolerated per connection before it is closed (one bad tag is logged, not fatal).
const MAX_BAD_TAGS: u32 = 32;

/// Accepts RTMP connections until `shutdown` completes, then closes them all.
pub async fn serve(
    listener: TcpListener,
    settings: RtmpSettings,
    hook: Arc<dyn Publish>,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    let mut connections = Connections::new("rtmp", settings.max_connections);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = connections.reap() => {}
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        warn!(%error, "rtmp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = connections.slot() else {
                    warn!(%peer, limit = settings.max_connections, "rtmp connection refused: too many connections");
                    continue;
                };
                let settings = settings.clone();
                let hook = hook.clone();
                let span = tracing::info_span!("rtmp", %peer);
                connections.spawn(
                    slot,
                    async move {
                        let _ = socket.set_nodelay(true);
                        match Connection::new(socket, peer, settings, hook).run().await {
                            Ok(()) => debug!("rtmp connection closed"),
                            Err(error) => warn!(error = %error, cause = ?std::error::Error::source(&error), "rtmp connection closed"),
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
    connections.shutdown().await;
}

struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    settings: Arc<RtmpSettings>,
    hook: Arc<dyn Publish>,
    sink: Option<PublisherSink>,
    adapter: TagAdapter,
    bad_tags: u32,
    published: bool,
}

impl Connection {
    fn new(
        socket: TcpStream,
        peer: SocketAddr,
        settings: Arc<RtmpSettings>,
        hook: Arc<dyn Publish>,
    ) -> Self {
        Self {
            socket,
            peer,
            settings,
            hook,
            sink: None,
            adapter: TagAdapter::default(),
            bad_tags: 0,
            published: false,
        }
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let started = tokio::time::Instant::now();
        let limit = self.settings.handshake_timeout;
        let remaining = timeout(limit, self.handshake())
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(limit))??;

        let mut session = Session::new();
        session.receive(&remaining);
        self.process(&mut session).await?;

        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let idle = self.settings.idle_timeout;
            let n = match timeout(idle, self.socket.read(&mut buf)).await {
                Err(_) => return Err(ConnectionError::Idle(idle)),
                Ok(read) => read?,
            };
            if n == 0 {
                return Ok(());
            }
            session.receive(buf.get(..n).unwrap_or_default());
            self.process(&mut session).await?;
            if !self.published && started.elapsed() > limit * 2 {
                // Connected but never published: not a publisher we want to hold a slot for.
                return Err(ConnectionError::NoPublish(limit * 2));
            }
        }
    }

    /// Runs the handshake; returns the bytes that followed it.
    async fn handshake(&mut self) -> Result<Vec<u8>, ConnectionError> {
        let mut handshake = Handshake::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnectionError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            let progress = handshake
                .feed(buf.get(..n).unwrap_or_default())
                .map_err(ConnectionError::Handshake)?;
            if !progress.to_send.is_empty() {
                self.socket.write_all(&progress.to_send).await?;
            }
            if let Some(remaining) = progress.done {
                return Ok(remaining);
            }
        }
    }

    /// Handles every event the received bytes completed, then sends the session's replies.
    async fn process(&mut self, session: &mut Session) -> Result<(), ConnectionError> {
        while let Some(event) = session.next_event().map_err(ConnectionError::Protocol)? {
            self.handle_event(session, event).await?;
        }
        self.flush(session).await
    }

    async fn flush(&mut self, session: &mut Session) -> Result<(), ConnectionError> {
        if session.has_output() {
            self.socket.write_all(&session.take_output()).await?;
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        session: &mut Session,
        event: Event,
    ) -> Result<(), ConnectionError> {
        match event {
            Event::Connect(request) => {
                if request.app == self.settings.app {
                    session.accept_connect(&request);
                    Ok(())
                } else {
                    let refusal = Refusal::UnknownApp(request.app.clone());
                    session.reject_connect(&request, &refusal.to_string());
                    self.refuse(session, refusal).await
                }
            }
            Event::Publish(command) => {
                if command.query.is_some() {
                    debug!("publishing name has a query string (ignored)");
                }
                let request = PublishRequest {
                    app: command.app.clone(),
                    key: StreamKey::new(command.key.clone()),
                    peer: self.peer,
                };
                if self.sink.is_some() {
                    let refusal = Refusal::AlreadyPublishing("this connection".into());
                    session.reject_publish(&command, refusal.status_code(), &refusal.to_string());
                    return self.refuse(session, refusal).await;
                }
                match self.hook.publish(&request) {
                    Ok(sink) => {
                        info!(stream = %sink.stream, "publisher live");
                        self.sink = Some(sink);
                        self.published = true;
                        session.accept_publish(&command);
                        Ok(())
                    }
                    Err(refusal) => {
                        warn!(key = %request.key.redacted(), reason = %refusal, "publish refused");
                        session.reject_publish(
                            &command,
                            refusal.status_code(),
                            &refusal.to_string(),
                        );
                        self.refuse(session, refusal).await
                    }
                }
            }
            Event::PublishFinished { .. } => {
                if let Some(sink) = self.sink.take() {
                    info!(stream = %sink.stream, "publisher finished");
                }
                Ok(())
            }
            Event::Video(media) => {
                let event = self.adapter.video(media.timestamp, media.payload);
                self.forward(event).await
            }
            Event::Audio(media) => {
                let event = self.adapter.audio(media.timestamp, media.payload);
                self.forward(event).await
            }
        }
    }

    /// Sends the refusal status to the peer, then ends the connection with the refusal.
    async fn refuse(
        &mut self,
        session: &mut Session,
        refusal: Refusal,
    ) -> Result<(), ConnectionError> {
        self.flush(session).await?;
        Err(ConnectionError::Refused(refusal))
    }

    async fn forward(
        &mut self,
        event: Result<Option<IngestEvent>, FlvError>,
    ) -> Result<(), ConnectionError> {
        let Some(sink) = &self.sink else {
            // Media before publish is accepted is a protocol violation; drop it.
            return Ok(());
        };
        match event {
            Ok(Some(event)) => {
                if sink.events.send(event).await.is_err() {
                    // The stream side let go of us (stream removed or key revoked).
                    info!(stream = %sink.stream, "stream closed the publisher");
                    self.sink = None;
                    return Err(ConnectionError::Io(
                        std::io::ErrorKind::ConnectionAborted.into(),
                    ));
                }
            }
            Ok(None) => {}
            Err(error @ FlvError::UnsupportedCodec { .. }) => {
                return Err(ConnectionError::Media(error));
            }
            Err(error) => {
                self.bad_tags += 1;
                warn!(stream = %sink.stream, %error, count = self.bad_tags, "malformed media message dropped");
                if self.bad_tags > MAX_BAD_TAGS {
                    return Err(ConnectionError::TooManyBadTags(self.bad_tags));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::amf0::{self, Value};
    use crate::rtmp::chunk::{msg_type, ChunkReader, ChunkWriter, Message};
    use crate::rtmp::session::Event;
    use bytes::Bytes;
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    /// Feeds `bytes` to a session that accepts every connect and publish, in pieces of `split`
    /// bytes, the way `Connection` drives it; stops at the first error. Returns whether it ended
    /// in an error.
    fn feed_accepting(bytes: &[u8], split: usize) -> bool {
        let mut session = Session::new();
        let mut adapter = TagAdapter::default();
        for piece in bytes.chunks(split.max(1)) {
            session.receive(piece);
            loop {
                match session.next_event() {
                    Ok(Some(Event::Connect(request))) => session.accept_connect(&request),
                    Ok(Some(Event::Publish(request))) => session.accept_publish(&request),
                    Ok(Some(Event::Video(media))) => {
                        let _ = adapter.video(media.timestamp, media.payload);
                    }
                    Ok(Some(Event::Audio(media))) => {
                        let _ = adapter.audio(media.timestamp, media.payload);
                    }
                    Ok(Some(Event::PublishFinished { .. })) => {}
                    Ok(None) => break,
                    Err(_) => return true,
                }
            }
            let _ = session.take_output();
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The chunk layer must reject, not panic on, any bytes after the handshake (a panic
        /// would only lose that connection, but it is a bug either way).
        #[test]
        fn session_survives_arbitrary_chunks(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..8)) {
            let bytes: Vec<u8> = chunks.concat();
            let split = chunks.first().map_or(1, Vec::len);
            feed_accepting(&bytes, split);
        }

        /// Well-formed chunk headers with random sizes and payloads (type 0 on csid 3..8): the
        /// input that made rml_rtmp 0.8 subtract with overflow (a message length that shrinks
        /// while the previous message on the csid is incomplete).
        #[test]
        fn session_survives_random_messages(msgs in prop::collection::vec((3u8..8, any::<u32>(), 1u8..22, prop::collection::vec(any::<u8>(), 0..300)), 1..10)) {
            let mut bytes = Vec::new();
            for (csid, timestamp, type_id, payload) in msgs {
                bytes.push(csid);
                let ts = timestamp.min(0xff_fffe);
                bytes.extend_from_slice(&ts.to_be_bytes()[1..]);
                bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                bytes.push(type_id);
                bytes.extend_from_slice(&1u32.to_le_bytes());
                bytes.extend_from_slice(&payload[..payload.len().min(128)]);
            }
            feed_accepting(&bytes, bytes.len());
        }

        /// A message whose length shrinks mid-message on the same chunk stream (a fmt 0 or 1
        /// header after its first chunk): the partial message is dropped, the new one is read
        /// intact, nothing underflows.
        #[test]
        fn length_shrinking_mid_message(
            csid in 3u8..64,
            first_len in 129u32..5000,
            second in prop::collection::vec(any::<u8>(), 0..128),
            fmt1 in any::<bool>(),
            split in 1usize..64,
        ) {
            let mut bytes = vec![csid, 0, 0, 0];
            bytes.extend_from_slice(&first_len.to_be_bytes()[1..]);
            bytes.push(msg_type::VIDEO);
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&[0x17; 128]);
            bytes.push(if fmt1 { 0x40 | csid } else { csid });
            bytes.extend_from_slice(&[0, 0, 1]);
            bytes.extend_from_slice(&(second.len() as u32).to_be_bytes()[1..]);
            bytes.push(msg_type::VIDEO);
            if !fmt1 {
                bytes.extend_from_slice(&1u32.to_le_bytes());
            }
            bytes.extend_from_slice(&second);

            let mut reader = ChunkReader::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(split) {
                reader.push(piece);
                while let Some(message) = reader.next_message().expect("no error") {
                    got.push(message);
                }
            }
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&got[0].payload[..], &second[..]);
            prop_assert_eq!(got[0].timestamp, 1);
            prop_assert_eq!(reader.reserved_bytes(), 0);
            prop_assert!(!feed_accepting(&bytes, split));
        }
    }

    /// Accepts the key `good` (stream `s`) once, refuses everything else. It hands its only
    /// sender to the publisher, so the channel closes when that publisher's connection ends.
    struct Hook(std::sync::Mutex<Option<mpsc::Sender<IngestEvent>>>);

    impl Publish for Hook {
        fn publish(&self, request: &PublishRequest) -> Result<PublisherSink, Refusal> {
            if request.key.expose() != "good" {
                return Err(Refusal::UnknownKey);
            }
            let events = self
                .0
                .lock()
                .expect("lock")
                .take()
                .ok_or_else(|| Refusal::AlreadyPublishing("s".into()))?;
            Ok(PublisherSink {
                stream: "s".into(),
                events,
            })
        }
    }

    /// A minimal publisher over a real socket.
    struct TestClient {
        socket: TcpStream,
        writer: ChunkWriter,
        reader: ChunkReader,
    }

    impl TestClient {
        async fn connect(addr: SocketAddr) -> Self {
            let mut socket = TcpStream::connect(addr).await.expect("connect");
            let mut c0c1 = vec![3u8];
            c0c1.extend_from_slice(&[0u8; 1536]);
            socket.write_all(&c0c1).await.expect("c0c1");
            let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
            socket.read_exact(&mut s0s1s2).await.expect("s0s1s2");
            assert_eq!(s0s1s2[0], 3);
            socket.write_all(&s0s1s2[1..1537]).await.expect("c2");
            Self {
                socket,
                writer: ChunkWriter::new(),
                reader: ChunkReader::default(),
            }
        }

        async fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
            let mut out = Vec::new();
            let message = Message {
                csid,
                timestamp: 0,
                type_id,
                stream_id,
                payload: Bytes::from(payload),
            };
            self.writer.write(&message, &mut out).expect("write");
            self.socket.write_all(&out).await.expect("send");
        }

        async fn command(&mut self, stream_id: u32, values: &[Value]) {
            self.send(
                3,
                msg_type::COMMAND_AMF0,
                stream_id,
                amf0::encode_all(values),
            )
            .await;
        }

        /// Reads until a command named `name` arrives; returns its values. `None` on close.
        async fn expect_command(&mut self, name: &str) -> Option<Vec<Value>> {
            let mut buf = vec![0u8; 4096];
            loop {
                while let Some(message) = self.reader.next_message().expect("server output") {
                    if message.type_id == msg_type::COMMAND_AMF0 {
                        let values = amf0::decode_all(&message.payload).expect("amf0");
                        if values.first().and_then(Value::as_str) == Some(name) {
                            return Some(values);
                        }
                    }
                }
                let n = tokio::time::timeout(Duration::from_secs(5), self.socket.read(&mut buf))
                    .await
                    .expect("server answers")
                    .ok()?;
                if n == 0 {
                    return None;
                }
                self.reader.push(&buf[..n]);
            }
        }

        /// Waits for the server to close the connection.
        async fn expect_closed(&mut self) {
            let mut buf = vec![0u8; 4096];
            loop {
                let read = tokio::time::timeout(Duration::from_secs(5), self.socket.read(&mut buf))
                    .await
                    .expect("server closes");
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }

        async fn connect_app(&mut self, app: &str) -> Vec<Value> {
            self.command(
                0,
                &[
                    Value::string("connect"),
                    Value::Number(1.0),
                    Value::object([("app", Value::string(app))]),
                ],
            )
            .await;
            self.expect_command("_result").await.unwrap_or_default()
        }

        async fn publish(&mut self, key: &str) -> Option<Vec<Value>> {
            self.command(
                0,
                &[
                    Value::string("createStream"),
                    Value::Number(2.0),
                    Value::Null,
                ],
            )
            .await;
            self.expect_command("_result").await?;
            self.command(
                1,
                &[
                    Value::string("publish"),
                    Value::Number(3.0),
                    Value::Null,
                    Value::string(key),
                    Value::string("live"),
                ],
            )
            .await;
            self.expect_command("onStatus").await
        }
    }

    async fn start_server() -> (
        SocketAddr,
        mpsc::Receiver<IngestEvent>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (events_tx, events_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let settings = RtmpSettings {
            app: "live".into(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 8,
        };
        tokio::spawn(serve(
            listener,
            settings,
            Arc::new(Hook(std::sync::Mutex::new(Some(events_tx)))),
            async {
                let _ = stop_rx.await;
            },
        ));
        (addr, events_rx, stop_tx)
    }

    #[tokio::test]
    async fn publishes_over_a_socket_and_refuses_bad_keys_and_apps() {
        let (addr, mut events, stop) = start_server().await;

        let mut client = TestClient::connect(addr).await;
        let reply = client.connect_app("live").await;
        assert_eq!(
            reply.get(3).and_then(|info| info.get("code")),
            Some(&Value::string("NetConnection.Connect.Success"))
        );
        let status = client.publish("good").await.expect("publish status");
        assert_eq!(
            status[3].get("code"),
            Some(&Value::string("NetStream.Publish.Start"))
        );
        // AAC LC 44.1 kHz stereo config, then one frame.
        client
            .send(4, msg_type::AUDIO, 1, vec![0xAF, 0x00, 0x12, 0x10])
            .await;
        client
            .send(4, msg_type::AUDIO, 1, vec![0xAF, 0x01, 0x21, 0x10])
            .await;
        let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event in time")
            .expect("event");
        assert!(matches!(first, IngestEvent::AudioConfig(_)), "{first:?}");
        let second = events.recv().await.expect("event");
        assert!(matches!(second, IngestEvent::Frame(_)), "{second:?}");

        // Unknown key: an error status, then the connection is closed.
        let mut refused = TestClient::connect(addr).await;
        refused.connect_app("live").await;
        let status = refused.publish("bad").await.expect("refusal status");
        assert_eq!(status[3].get("level"), Some(&Value::string("error")));
        assert_eq!(
            status[3].get("code"),
            Some(&Value::string("NetStream.Publish.Rejected"))
        );
        refused.expect_closed().await;

        // A second publisher on the live key: BadName, then closed.
        let mut duplicate = TestClient::connect(addr).await;
        duplicate.connect_app("live").await;
        let status = duplicate.publish("good").await.expect("refusal status");
        assert_eq!(
            status[3].get("code"),
            Some(&Value::string("NetStream.Publish.BadName"))
        );
        duplicate.expect_closed().await;

        // Not RTMP at all: the handshake fails and the connection is closed.
        let mut http = TcpStream::connect(addr).await.expect("connect");
        http.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), http.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // Unknown application: `_error`, then closed.
        let mut wrong_app = TestClient::connect(addr).await;
        wrong_app
            .command(
                0,
                &[
                    Value::string("connect"),
                    Value::Number(1.0),
                    Value::object([("app", Value::string("other"))]),
                ],
            )
            .await;
        let error = wrong_app.expect_command("_error").await.expect("_error");
        assert_eq!(
            error[3].get("code"),
            Some(&Value::string("NetConnection.Connect.Rejected"))
        );
        wrong_app.expect_closed().await;

        // Garbage after a valid handshake: closed (protocol error).
        let mut garbage = TestClient::connect(addr).await;
        garbage
            .socket
            .write_all(&[0xC7; 64])
            .await
            .expect("garbage");
        garbage.expect_closed().await;

        // The publisher is still fine: unpublish ends it cleanly.
        client
            .command(
                0,
                &[
                    Value::string("FCUnpublish"),
                    Value::Number(4.0),
                    Value::Null,
                    Value::string("good"),
                ],
            )
            .await;
        client
            .command(
                0,
                &[
                    Value::string("deleteStream"),
                    Value::Number(5.0),
                    Value::Null,
                    Value::Number(1.0),
                ],
            )
            .await;
        drop(client);
        // The sink is dropped once the connection ends: the channel closes.
        let end = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("channel closes in time");
        assert!(end.is_none());
        let _ = stop.send(());
    }
}
