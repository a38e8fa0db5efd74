//! Bad input on the RTMP port never hurts a healthy stream, and each is closed with a log line.

use crate::common::*;
use headwater::names::StreamName;
use headwater::stream::PublisherState;
use headwater::Server;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; fails if it stays open past `limit`.
async fn expect_closed(mut socket: TcpStream, limit: Duration, what: &str) {
    let mut buf = vec![0u8; 8192];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: connection still open after {limit:?}"
    );
}

async fn segments_listed(http: &reqwest::Client, url: &str) -> u64 {
    let (status, body) = get(http, url).await;
    if status != 200 {
        return 0;
    }
    let playlist = parse_media(&body);
    playlist.media_sequence + playlist.segments.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishers_are_closed_and_healthy_stream_keeps_flowing() {
    require_tools();
    let logs = Logs::capture();
    let server = Server::start(test_config(Duration::from_secs(30)), None)
        .await
        .expect("start");
    let http = client();
    let healthy_url = format!("http://{}/live/a/source/index.m3u8", server.http_addr);
    let healthy = Publisher::start(server.rtmp_addr, "key-a", 30);
    wait_for(
        "the healthy stream's first segment",
        Duration::from_secs(15),
        || async { (segments_listed(&http, &healthy_url).await >= 1).then_some(()) },
    )
    .await;
    let listed_before = segments_listed(&http, &healthy_url).await;

    // 1. Random bytes instead of a handshake (C0 must be version 3).
    let mut socket = TcpStream::connect(server.rtmp_addr).await.expect("connect");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let _ = socket.write_all(&garbage).await;
    expect_closed(socket, Duration::from_secs(5), "random bytes").await;

    // 2. A truncated handshake that then goes silent: cut at the handshake timeout.
    let mut socket = TcpStream::connect(server.rtmp_addr).await.expect("connect");
    socket.write_all(&[3u8; 700]).await.expect("write");
    expect_closed(socket, Duration::from_secs(5), "truncated handshake").await;

    // 3. A valid handshake followed by garbage chunks.
    let mut socket = TcpStream::connect(server.rtmp_addr).await.expect("connect");
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    socket.write_all(&c0c1).await.expect("write");
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    socket.read_exact(&mut s0s1s2).await.expect("S0S1S2");
    socket.write_all(&s0s1s2[1..1537]).await.expect("C2");
    let _ = socket.write_all(&garbage).await;
    expect_closed(socket, Duration::from_secs(5), "garbage chunks").await;

    // 4. An unknown key: ffmpeg is refused and exits with an error.
    let refused = Publisher::start(server.rtmp_addr, "no-such-key", 5);
    let (status, stderr) = refused.wait(Duration::from_secs(10));
    assert!(
        !status.success(),
        "publishing with an unknown key succeeded: {stderr}"
    );

    // 5. A second publisher on a live key is refused.
    let duplicate = Publisher::start(server.rtmp_addr, "key-a", 5);
    let (status, _) = duplicate.wait(Duration::from_secs(10));
    assert!(
        !status.success(),
        "a second publisher on a live key was accepted"
    );

    // 6. A publisher that stalls (process frozen, TCP open) is cut at the idle timeout.
    let stalled = Publisher::start(server.rtmp_addr, "key-b", 30);
    let b = StreamName::parse("b").expect("name");
    wait_for("stream b to go live", Duration::from_secs(10), || async {
        (server.registry.state(&b) == Some(PublisherState::Live)).then_some(())
    })
    .await;
    stalled.stop_signal();
    wait_for(
        "the stalled publisher to be dropped",
        Duration::from_secs(10),
        || async {
            (server.registry.state(&b) == Some(PublisherState::Reconnecting)).then_some(())
        },
    )
    .await;

    // The healthy stream kept producing segments through all of it.
    wait_for(
        "two more healthy segments",
        Duration::from_secs(10),
        || async {
            (segments_listed(&http, &healthy_url).await >= listed_before + 2).then_some(())
        },
    )
    .await;
    assert_eq!(
        server
            .registry
            .state(&StreamName::parse("a").expect("name")),
        Some(PublisherState::Live)
    );

    let text = logs.text();
    for expected in [
        "handshake failed",
        "no handshake within",
        "RTMP protocol error",
        "publish refused",
        "unknown stream key",
        "already has a live publisher",
        "stalled publisher",
    ] {
        assert!(text.contains(expected), "no log line with {expected:?}");
    }
    assert!(
        !text.contains("no-such-key"),
        "a refused key was logged in clear"
    );
    drop(healthy);
    drop(stalled);
    server.shutdown().await;
}
