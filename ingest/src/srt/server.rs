//! The SRT listener and one task per publisher: streamid auth, handshake, TS demux, statistics.

use super::stream_id::parse_stream_id;
use crate::connections::Connections;
use crate::rtmp::{Publish, PublishRequest, PublisherSink, Refusal};
use crate::ts::{Demuxer, TsError};
use futures_util::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::Passphrase;
use srt_tokio::{ConnectionRequest, SocketStatistics, SrtListener, SrtSocket};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use tracing::{debug, info, warn, Instrument};

/// What the SRT listener enforces.
#[derive(Clone)]
pub struct SrtSettings {
    /// The application a streamid without one is taken to name (`live`).
    pub app: String,
    /// Receiver latency (the time SRT has to recover lost packets).
    pub latency: Duration,
    /// AES passphrase (10-79 characters) publishers must use; `None` accepts unencrypted only.
    pub passphrase: Option<String>,
    /// Publishers beyond this many are refused in the handshake.
    pub max_connections: usize,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for SrtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtSettings")
            .field("app", &self.app)
            .field("latency", &self.latency)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<secret>"))
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum SrtListenError {
    /// The passphrase is not 10-79 characters.
    #[error("invalid SRT passphrase")]
    Passphrase,
    /// srt-tokio refused the options or the socket.
    #[error("cannot start the SRT listener")]
    Io(#[source] std::io::Error),
}

/// Why a publisher's connection ended badly. Logged once per connection.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("SRT handshake not completed (wrong or missing passphrase?)")]
    Handshake(#[source] std::io::Error),
    #[error("SRT receive error")]
    Io(#[source] std::io::Error),
    #[error("no data for {0:?} (stalled publisher)")]
    Idle(Duration),
    #[error("stream closed the publisher")]
    StreamClosed,
}

/// TS errors logged per connection at `warn`; later ones only at `debug` (all are counted).
const LOGGED_TS_ERRORS: u32 = 10;

/// Binds the UDP socket SRT listens on, with the receive/send buffer sizes srt-tokio uses.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    let mut options = srt_tokio::options::SocketOptions::default();
    options.connect.local = addr;
    srt_tokio::bind_socket(&options).await
}

/// Starts SRT on `socket` (already bound: its port is the listener's) and accepts publishers
/// until `shutdown` completes.
pub async fn serve(
    socket: UdpSocket,
    settings: SrtSettings,
    hook: Arc<dyn Publish>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send, SrtListenError> {
    let local = socket.local_addr().map_err(SrtListenError::Io)?;
    let passphrase = match &settings.passphrase {
        Some(p) => Some(Passphrase::try_from(p.clone()).map_err(|_| SrtListenError::Passphrase)?),
        None => None,
    };
    let latency = settings.latency;
    let idle = settings.idle_timeout;
    let (mut listener, mut incoming) = SrtListener::builder()
        .latency(latency)
        .set(move |options| {
            options.session.peer_idle_timeout = idle;
            options.encryption.passphrase = passphrase;
        })
        .socket(socket)
        .bind(local)
        .await
        .map_err(SrtListenError::Io)?;
    Ok(async move {
        let settings = Arc::new(settings);
        let mut connections = Connections::new("srt", settings.max_connections);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = connections.reap() => {}
                request = incoming.incoming().next() => {
                    let Some(request) = request else { break };
                    admit(request, &settings, &hook, &mut connections).await;
                }
            }
        }
        connections.shutdown().await;
        listener.close().await;
    })
}

/// Authorizes one connection request; accepted ones get their own task.
async fn admit(
    request: ConnectionRequest,
    settings: &Arc<SrtSettings>,
    hook: &Arc<dyn Publish>,
    connections: &mut Connections,
) {
    let peer = request.remote();
    let stream_id = request.stream_id().map(|s| s.to_string());
    let Some(slot) = connections.slot() else {
        warn!(%peer, limit = settings.max_connections, "srt publish refused: too many connections");
        refuse(request, ServerRejectReason::Overload, "overload").await;
        return;
    };
    let target = match parse_stream_id(stream_id.as_deref()) {
        Ok(target) => target,
        Err(error) => {
            warn!(%peer, reason = %error, "srt publish refused");
            refuse(request, ServerRejectReason::BadRequest, "bad_streamid").await;
            return;
        }
    };
    let publish = PublishRequest {
        app: target.app.unwrap_or_else(|| settings.app.clone()),
        key: target.key,
        peer,
    };
    let sink = match hook.publish(&publish) {
        Ok(sink) => sink,
        Err(refusal) => {
            warn!(%peer, key = %publish.key.redacted(), reason = %refusal, "srt publish refused");
            let (reason, label) = match refusal {
                Refusal::UnknownApp(_) => (ServerRejectReason::Notfound, "unknown_app"),
                Refusal::UnknownKey => (ServerRejectReason::Forbidden, "unknown_key"),
                Refusal::AlreadyPublishing(_) => (ServerRejectReason::Conflict, "conflict"),
            };
            refuse(request, reason, label).await;
            return;
        }
    };
    let idle = settings.idle_timeout;
    let span = tracing::info_span!("srt", %peer, stream = %sink.stream);
    connections.spawn(
        slot,
        async move {
            let stream = sink.stream.clone();
            let socket = match request.accept(None).await {
                Ok(socket) => socket,
                Err(error) => {
                    metrics::counter!("headwater_srt_refused_total", "reason" => "handshake")
                        .increment(1);
                    let error = ConnectionError::Handshake(error);
                    warn!(error = %error, cause = ?std::error::Error::source(&error), "srt connection closed");
                    return;
                }
            };
            info!(stream = %stream, "srt publisher live");
            match Publisher::new(sink, idle).run(socket).await {
                Ok(()) => info!(stream = %stream, "srt publisher finished"),
                Err(error) => warn!(error = %error, cause = ?std::error::Error::source(&error), "srt connection closed"),
            }
        }
        .instrument(span),
    );
}

async fn refuse(request: ConnectionRequest, reason: ServerRejectReason, label: &'static str) {
    metrics::counter!("headwater_srt_refused_total", "reason" => label).increment(1);
    if let Err(error) = request.reject(RejectReason::Server(reason)).await {
        debug!(%error, "srt reject not delivered");
    }
}

/// One accepted publisher: SRT messages -> TS demuxer -> the stream's queue.
struct Publisher {
    sink: PublisherSink,
    idle: Duration,
    demuxer: Demuxer,
    ts_errors_logged: u32,
    last: SocketStatistics,
    reported_types: usize,
}

impl Publisher {
    fn new(sink: PublisherSink, idle: Duration) -> Self {
        Self {
            sink,
            idle,
            demuxer: Demuxer::new(),
            ts_errors_logged: 0,
            last: SocketStatistics::default(),
            reported_types: 0,
        }
    }

    async fn run(mut self, mut socket: SrtSocket) -> Result<(), ConnectionError> {
        let mut statistics = socket.statistics().clone();
        let result = loop {
            tokio::select! {
                received = timeout(self.idle, socket.next()) => match received {
                    Err(_) => break Err(ConnectionError::Idle(self.idle)),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(error))) => break Err(ConnectionError::Io(error)),
                    Ok(Some(Ok((_, bytes)))) => {
                        let events = self.demuxer.push(&bytes);
                        self.report_ts_errors();
                        if let Err(error) = self.forward(events).await {
                            break Err(error);
                        }
                    }
                },
                Some(stats) = statistics.next() => self.record(&stats),
            }
        };
        let events = self.demuxer.flush();
        if result.is_ok() {
            self.forward(events).await?;
        }
        self.report_ts_errors();
        let stats = self.demuxer.stats();
        info!(
            packets = stats.packets,
            video_frames = stats.video_frames,
            audio_frames = stats.audio_frames,
            continuity_errors = stats.continuity_errors,
            malformed = stats.malformed,
            "srt transport stream summary"
        );
        result
    }

    async fn forward(&mut self, events: Vec<crate::IngestEvent>) -> Result<(), ConnectionError> {
        for event in events {
            if self.sink.events.send(event).await.is_err() {
                return Err(ConnectionError::StreamClosed);
            }
        }
        Ok(())
    }

    fn report_ts_errors(&mut self) {
        let stream = self.sink.stream.clone();
        for error in self.demuxer.take_errors() {
            let kind = if matches!(error, TsError::Continuity { .. }) {
                "continuity"
            } else {
                "malformed"
            };
            metrics::counter!("headwater_srt_ts_errors_total", "stream" => stream.clone(), "kind" => kind)
                .increment(1);
            if self.ts_errors_logged < LOGGED_TS_ERRORS {
                self.ts_errors_logged += 1;
                warn!(%error, "transport stream damaged (dropped what it touched)");
            } else {
                debug!(%error, "transport stream damaged");
            }
        }
        let ignored = &self.demuxer.stats().ignored_stream_types;
        if ignored.len() > self.reported_types {
            self.reported_types = ignored.len();
            warn!(stream_types = ?ignored, "transport stream has streams other than H.264 and AAC (ignored)");
        }
    }

    /// Exports the socket's statistics (cumulative counters as increments since the last report).
    fn record(&mut self, now: &SocketStatistics) {
        let stream = self.sink.stream.clone();
        let last = &self.last;
        for (name, value, previous) in [
            (
                "headwater_srt_packets_received_total",
                now.rx_data,
                last.rx_data,
            ),
            (
                "headwater_srt_packets_retransmitted_total",
                now.rx_retransmit_data,
                last.rx_retransmit_data,
            ),
            (
                "headwater_srt_packets_dropped_total",
                now.rx_dropped_data,
                last.rx_dropped_data,
            ),
            (
                "headwater_srt_packets_lost_total",
                now.rx_loss_data,
                last.rx_loss_data,
            ),
            ("headwater_srt_loss_reports_total", now.tx_nak, last.tx_nak),
            (
                "headwater_srt_decrypt_errors_total",
                now.rx_decrypt_errors,
                last.rx_decrypt_errors,
            ),
        ] {
            metrics::counter!(name, "stream" => stream.clone())
                .increment(value.saturating_sub(previous));
        }
        metrics::gauge!("headwater_srt_receive_buffer_seconds", "stream" => stream.clone())
            .set(now.rx_acknowledged_time.as_secs_f64());
        // Zero until the first ACK/ACKACK round trip has been measured.
        if !now.rx_average_rtt.is_zero() {
            metrics::gauge!("headwater_srt_rtt_seconds", "stream" => stream)
                .set(now.rx_average_rtt.as_secs_f64());
        }
        self.last = now.clone();
    }
}
