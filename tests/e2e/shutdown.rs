//! Graceful shutdown: stop accepting at once, let an in-flight response finish (up to
//! `limits.shutdown_grace`), and cut what is still running at the deadline.

use crate::common::*;
use bytes::Bytes;
use headwater::names::{RenditionName, StreamName};
use headwater::store::{Object, ObjectKind};
use headwater::Server;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: usize = 48 * 1024 * 1024;

/// Puts one large segment in the live store (no publisher needed).
fn large_segment(server: &Server) -> String {
    let stream = StreamName::parse("big").expect("name");
    let rendition = RenditionName::parse("source").expect("name");
    let entry = server.store.start_instance(&stream, "x".into(), 12);
    let data = Bytes::from(vec![7u8; BODY]);
    let segment = Object::new(ObjectKind::Segment, data, Duration::from_secs(2));
    let playlist = Object::new(
        ObjectKind::MediaPlaylist,
        Bytes::from_static(b"#EXTM3U\n"),
        Duration::from_secs(2),
    );
    entry.publish_segment(&rendition, "seg-x-0.m4s".into(), segment, playlist);
    "/live/big/source/seg-x-0.m4s".into()
}

/// Sends a GET and reads the body slowly (64 KiB per `pause_ms`, which the test may change
/// while it runs); returns the bytes received.
async fn slow_download(
    addr: std::net::SocketAddr,
    path: &str,
    pause_ms: Arc<AtomicU64>,
    started: tokio::sync::oneshot::Sender<()>,
) -> usize {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
    let mut started = Some(started);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
        if total > 1024 * 1024 {
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
        }
        tokio::time::sleep(Duration::from_millis(pause_ms.load(Ordering::SeqCst))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_responses_and_refuses_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(1));
    config.cache.dir = dir.path().join("cache");
    config.limits.shutdown_grace = Duration::from_secs(20);
    let server = Server::start(config, None).await.expect("start");
    let addr = server.http_addr;
    let path = large_segment(&server);
    let (started, begun) = tokio::sync::oneshot::channel();
    // ~48 MB at 64 KiB per 2 ms: a few seconds in flight.
    let pause = Arc::new(AtomicU64::new(2));
    let download = tokio::spawn(async move { slow_download(addr, &path, pause, started).await });
    begun.await.expect("download started");

    let stopping = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    wait_for(
        "the listener to stop accepting",
        Duration::from_secs(5),
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    let received = download.await.expect("download");
    assert!(
        received > BODY,
        "the in-flight response was cut at {received} of {BODY} bytes"
    );
    shutdown.await.expect("shutdown");
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "shutdown waited past the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_what_is_still_running_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(1));
    config.cache.dir = dir.path().join("cache");
    config.limits.shutdown_grace = Duration::from_secs(1);
    let server = Server::start(config, None).await.expect("start");
    let addr = server.http_addr;
    let path = large_segment(&server);
    let (started, begun) = tokio::sync::oneshot::channel();
    // 64 KiB per 100 ms: far longer than the 1 s grace.
    let pause = Arc::new(AtomicU64::new(100));
    let reader_pause = pause.clone();
    let download =
        tokio::spawn(async move { slow_download(addr, &path, reader_pause, started).await });
    begun.await.expect("download started");
    let stopping = Instant::now();
    server.shutdown().await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 1 s grace"
    );
    // Drain what the kernel had buffered; the server side is already gone.
    pause.store(0, Ordering::SeqCst);
    let received = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("client sees the close")
        .expect("task");
    assert!(
        received < BODY,
        "the slow response should have been cut at the deadline"
    );
}
