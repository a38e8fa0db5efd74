//! The RTMP listener and one task per connection: handshake, session, publish auth, frames.

use super::publisher::TagAdapter;
use super::{Publish, PublishRequest, PublisherSink, Refusal, StreamKey};
use crate::flv::FlvError;
use crate::frame::IngestEvent;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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
    Protocol(#[source] ServerSessionError),
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
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        warn!(%error, "rtmp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    warn!(%peer, limit = settings.max_connections, "rtmp connection refused: too many connections");
                    continue;
                };
                let settings = settings.clone();
                let hook = hook.clone();
                let span = tracing::info_span!("rtmp", %peer);
                connections.spawn(
                    async move {
                        let _permit = permit;
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
    out: Vec<u8>,
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
            out: Vec::new(),
        }
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let started = tokio::time::Instant::now();
        let limit = self.settings.handshake_timeout;
        let remaining = timeout(limit, self.handshake())
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(limit))??;

        let (mut session, results) =
            ServerSession::new(ServerSessionConfig::new()).map_err(ConnectionError::Protocol)?;
        self.handle_results(&mut session, results).await?;
        let results = session
            .handle_input(&remaining)
            .map_err(ConnectionError::Protocol)?;
        self.handle_results(&mut session, results).await?;
        self.flush().await?;

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
            let results = session
                .handle_input(&buf[..n])
                .map_err(ConnectionError::Protocol)?;
            self.handle_results(&mut session, results).await?;
            self.flush().await?;
            if !self.published && started.elapsed() > limit * 2 {
                // Connected but never published: not a publisher we want to hold a slot for.
                return Err(ConnectionError::NoPublish(limit * 2));
            }
        }
    }

    /// Runs the handshake; returns the bytes that followed it.
    async fn handshake(&mut self) -> Result<Vec<u8>, ConnectionError> {
        let mut handshake = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnectionError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(ConnectionError::Handshake)?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.out.is_empty() {
            self.socket.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn handle_results(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), ConnectionError> {
        let mut pending = std::collections::VecDeque::from(results);
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes);
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let more = self.handle_event(session, event).await?;
                    // Responses to this event go out before anything queued after it.
                    for r in more.into_iter().rev() {
                        pending.push_front(r);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    debug!(type_id = payload.type_id, "ignored rtmp message");
                }
            }
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name == self.settings.app {
                    session
                        .accept_request(request_id)
                        .map_err(ConnectionError::Protocol)
                } else {
                    let refusal = Refusal::UnknownApp(app_name);
                    let results = session
                        .reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            &refusal.to_string(),
                        )
                        .map_err(ConnectionError::Protocol)?;
                    self.refuse(results, refusal).await
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                let request = PublishRequest {
                    app: app_name,
                    key: StreamKey::new(stream_key),
                    peer: self.peer,
                };
                if self.sink.is_some() {
                    let refusal = Refusal::AlreadyPublishing("this connection".into());
                    let results = session
                        .reject_request(request_id, refusal.status_code(), &refusal.to_string())
                        .map_err(ConnectionError::Protocol)?;
                    return self.refuse(results, refusal).await;
                }
                match self.hook.publish(&request) {
                    Ok(sink) => {
                        info!(stream = %sink.stream, "publisher live");
                        self.sink = Some(sink);
                        self.published = true;
                        session
                            .accept_request(request_id)
                            .map_err(ConnectionError::Protocol)
                    }
                    Err(refusal) => {
                        warn!(key = %request.key.redacted(), reason = %refusal, "publish refused");
                        let results = session
                            .reject_request(request_id, refusal.status_code(), &refusal.to_string())
                            .map_err(ConnectionError::Protocol)?;
                        self.refuse(results, refusal).await
                    }
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(sink) = self.sink.take() {
                    info!(stream = %sink.stream, "publisher finished");
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                let event = self.adapter.video(timestamp.value, data);
                self.forward(event).await
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                let event = self.adapter.audio(timestamp.value, data);
                self.forward(event).await
            }
            other => {
                debug!(event = ?other, "rtmp event");
                Ok(Vec::new())
            }
        }
    }

    /// Sends the refusal status to the peer, then ends the connection with the refusal.
    async fn refuse(
        &mut self,
        results: Vec<ServerSessionResult>,
        refusal: Refusal,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        for result in results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                self.out.extend_from_slice(&packet.bytes);
            }
        }
        self.flush().await?;
        Err(ConnectionError::Refused(refusal))
    }

    async fn forward(
        &mut self,
        event: Result<Option<IngestEvent>, FlvError>,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        let Some(sink) = &self.sink else {
            // Media before publish is accepted is a protocol violation; drop it.
            return Ok(Vec::new());
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
        Ok(Vec::new())
    }
}
