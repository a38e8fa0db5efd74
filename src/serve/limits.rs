//! Limits every HTTP transport enforces: a connection gate per listener and an activity clock
//! per connection (idle timeout). Request-head limits are applied by each transport's protocol
//! builder (hyper for TCP, h3 for QUIC) from the same [`Limits`].
//!
//! Owns no sockets: [`super::tcp`] and [`super::h3`] call it.

use crate::config::LimitsConfig;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one listener, in program units.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections per listener.
    pub max_connections: usize,
    /// Concurrent streams per h2/h3 connection.
    pub max_streams: u32,
    /// No bytes either way for this long closes a connection.
    pub idle_timeout: Duration,
    /// Handshake and request-head deadline.
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// How long in-flight responses may run after shutdown starts.
    pub shutdown_grace: Duration,
}

impl From<&LimitsConfig> for Limits {
    fn from(config: &LimitsConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_streams: config.max_streams,
            idle_timeout: config.idle_timeout,
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: usize::try_from(config.max_header_bytes.as_u64())
                .unwrap_or(usize::MAX),
            shutdown_grace: config.shutdown_grace,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&LimitsConfig::default())
    }
}

/// Admits at most `max_connections` at once; a permit is held for a connection's life.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    transport: &'static str,
}

impl ConnectionGate {
    /// A gate for one listener; `transport` labels its metrics (`tcp`, `tls`, `quic`).
    pub fn new(max_connections: usize, transport: &'static str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_connections)),
            transport,
        }
    }

    /// A permit, or `None` (counted) when the listener is full.
    pub fn admit(&self) -> Option<ConnectionPermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics::gauge!("headwater_http_connections", "transport" => self.transport)
                    .increment(1.0);
                Some(ConnectionPermit {
                    _permit: permit,
                    transport: self.transport,
                })
            }
            Err(_) => {
                metrics::counter!(
                    "headwater_http_connections_refused_total",
                    "transport" => self.transport
                )
                .increment(1);
                None
            }
        }
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
    transport: &'static str,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        metrics::gauge!("headwater_http_connections", "transport" => self.transport).decrement(1.0);
    }
}

/// When a connection last moved a byte, shared between its IO and its watchdog.
#[derive(Debug, Clone)]
pub struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// A clock that starts now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// The instant `timeout` after the last activity.
    pub fn deadline(&self, timeout: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// An IO stream that records every successful read and write in an [`Activity`].
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    activity: Activity,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_refuses_past_the_limit_and_recovers() {
        let gate = ConnectionGate::new(2, "test");
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none(), "third must be refused");
        drop(a);
        assert!(gate.admit().is_some(), "a freed slot is reused");
    }

    #[tokio::test]
    async fn tracked_io_moves_the_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let activity = Activity::new();
        let first = activity.deadline(Duration::from_secs(1));
        let (client, server) = tokio::io::duplex(64);
        let mut server = TrackedIo::new(server, activity.clone());
        let mut client = client;
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.expect("read");
        assert!(activity.deadline(Duration::from_secs(1)) > first);
    }
}
