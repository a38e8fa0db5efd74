//! SRT ingest end to end: ffmpeg and srt-live-transmit publish MPEG-TS over SRT; the HLS output
//! passes the checks of the RTMP test; an encrypted publisher through an in-process UDP relay
//! with 2% loss and a 40 ms round trip (loss, retransmissions and RTT in the metrics);
//! wrong passphrase, unknown key, wrong mode and garbage UDP are refused without touching a
//! healthy stream.

use crate::common::*;
use headwater::Server;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

/// Waits for the stream's media playlist to end; returns it.
async fn ended_playlist(
    http: &reqwest::Client,
    base: &str,
    limit: Duration,
) -> m3u8_rs::MediaPlaylist {
    let url = format!("{base}/source/index.m3u8");
    wait_for("ENDLIST after the publisher stops", limit, || async {
        let (status, body) = get(http, &url).await;
        (status == 200)
            .then(|| parse_media(&body))
            .filter(|p| p.end_list)
    })
    .await
}

/// The HLS checks of the RTMP end-to-end test: CODECS/RESOLUTION, every segment h264 640x360 +
/// AAC starting on an IDR with its EXTINF duration, the whole stream `seconds` ± 1 s and
/// decodable without errors. Returns the number of segments.
async fn check_hls(http: &reqwest::Client, base: &str, seconds: f64, limit: Duration) -> usize {
    let playlist = ended_playlist(http, base, limit).await;
    let (status, body) = get(http, &format!("{base}/index.m3u8")).await;
    assert_eq!(status, 200);
    let multivariant = match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a multivariant playlist: {other:?}"),
    };
    let variant = &multivariant.variants[0];
    let codecs = variant.codecs.clone().expect("CODECS");
    assert!(
        codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
        "CODECS={codecs}"
    );
    assert_eq!(
        variant.resolution.map(|r| (r.width, r.height)),
        Some((640, 360))
    );
    assert_eq!(playlist.target_duration, 2);
    assert!(
        playlist.segments.len() >= 3,
        "{} segments",
        playlist.segments.len()
    );

    check_segments(http, &format!("{base}/source"), &playlist, seconds).await;
    playlist.segments.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_srt_with_the_access_control_streamid() {
    require_tools();
    let logs = Logs::capture();
    let server = Server::start(test_config(Duration::from_secs(2)), None)
        .await
        .expect("start");
    let srt = server.srt_addr.expect("[srt] is on in the test config");
    let publisher = Publisher::srt(srt, "#!::r=live/demo,m=publish", 10, "");
    let (status, stderr) = publisher.wait(Duration::from_secs(30));
    assert!(status.success(), "ffmpeg SRT publisher failed: {stderr}");
    let base = format!("http://{}/live/demo", server.http_addr);
    check_hls(&client(), &base, 10.0, Duration::from_secs(20)).await;
    assert!(logs.text().contains("srt publisher live"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_live_transmit_publishes_a_transport_stream() {
    require_tools();
    require_tool("srt-live-transmit", "srt-tools");
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let ts = dir.path().join("clip.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts"])
        .arg(&ts)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "ffmpeg could not make the TS file");

    let server = Server::start(test_config(Duration::from_secs(2)), None)
        .await
        .expect("start");
    let srt = server.srt_addr.expect("srt");
    // ffmpeg paces the file (-re, stream copy) into srt-live-transmit's stdin; libsrt sends it.
    let script = format!(
        "ffmpeg -hide_banner -loglevel error -nostdin -re -i {} -c copy -f mpegts - | \
         srt-live-transmit -q -a:no -t:12 file://con 'srt://{srt}?streamid=key-a&latency=120'",
        ts.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let (status, stderr) = Publisher(child).wait(Duration::from_secs(30));
    assert!(status.success(), "srt-live-transmit failed: {stderr}");
    let base = format!("http://{}/live/a", server.http_addr);
    check_hls(&client(), &base, 8.0, Duration::from_secs(20)).await;
    server.shutdown().await;
}

/// One direction of the relay: sends each datagram `delay` after the time stamped on it, in
/// order, to `to` (or to the connected peer).
fn delayed_link(
    delay: Duration,
    socket: Arc<UdpSocket>,
    to: Arc<Mutex<Option<SocketAddr>>>,
) -> mpsc::Sender<(Instant, Vec<u8>)> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(8192);
    tokio::spawn(async move {
        while let Some((arrived, datagram)) = rx.recv().await {
            tokio::time::sleep_until(arrived + delay).await;
            let to = *to.lock().await;
            let _ = match to {
                Some(to) => socket.send_to(&datagram, to).await,
                None => socket.send(&datagram).await,
            };
        }
    });
    tx
}

/// A UDP relay between one SRT caller and the server that drops `percent` of the datagrams in
/// each direction (deterministic xorshift, so a run is reproducible) and delays each by
/// `delay`, so the round trip is about twice that. Returns its address and the number of
/// datagrams dropped so far.
async fn lossy_relay(
    server: SocketAddr,
    percent: u64,
    delay: Duration,
) -> (SocketAddr, Arc<AtomicU64>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    back.connect(server).await.expect("connect");
    let addr = front.local_addr().expect("addr");
    let dropped = Arc::new(AtomicU64::new(0));
    let caller = Arc::new(Mutex::new(None::<SocketAddr>));
    let lose = {
        let dropped = dropped.clone();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let drop = state % 100 < percent;
            if drop {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            drop
        }
    };
    let mut lose_up = lose.clone();
    let mut lose_down = lose;
    let up = delayed_link(delay, back.clone(), Arc::new(Mutex::new(None)));
    let down = delayed_link(delay, front.clone(), caller.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            *caller.lock().await = Some(from);
            if !lose_up() && up.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = back.recv(&mut buf).await {
            if !lose_down()
                && down
                    .send((Instant::now(), buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    (addr, dropped)
}

/// Sum of a counter family's samples for `stream` in the Prometheus text.
fn counter(text: &str, name: &str, stream: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("stream=\"{stream}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_publisher_recovers_two_percent_loss_and_rtt_is_measured() {
    require_tools();
    let _logs = Logs::capture();
    let metrics = headwater::observe::install_metrics().expect("recorder");
    let mut config = test_config(Duration::from_secs(2));
    let passphrase = "lossy-link-passphrase";
    if let Some(srt) = config.srt.as_mut() {
        // A 40 ms round trip: 300 ms leaves room for several retransmission rounds.
        srt.latency = Duration::from_millis(300);
        srt.passphrase = Some(passphrase.into());
    }
    let server = Server::start(config, Some(metrics)).await.expect("start");
    let one_way = Duration::from_millis(20);
    let (relay, dropped) = lossy_relay(server.srt_addr.expect("srt"), 2, one_way).await;
    let publisher = Publisher::srt(relay, "key-b", 10, &format!("&passphrase={passphrase}"));
    let base = format!("http://{}/live/b", server.http_addr);
    let http = client();
    let metrics_url = format!("http://{}/metrics", server.http_addr);
    // The smoothed RTT starts at 10 ms and converges on the relay's round trip within a
    // few dozen ACKs (one per 10 ms).
    let round_trip = (2 * one_way).as_secs_f64();
    let rtt = wait_for(
        "the SRT RTT gauge to near the round trip",
        Duration::from_secs(20),
        || async {
            let (_, text) = get(&http, &metrics_url).await;
            Some(counter(
                &String::from_utf8_lossy(&text),
                "headwater_srt_rtt_seconds",
                "b",
            ))
            .filter(|&rtt| rtt >= round_trip * 0.75)
        },
    )
    .await;
    let (status, stderr) = publisher.wait(Duration::from_secs(30));
    assert!(status.success(), "ffmpeg SRT publisher failed: {stderr}");
    check_hls(&http, &base, 10.0, Duration::from_secs(20)).await;

    let (_, text) = get(&http, &metrics_url).await;
    let text = String::from_utf8_lossy(&text);
    let received = counter(&text, "headwater_srt_packets_received_total", "b");
    let retransmitted = counter(&text, "headwater_srt_packets_retransmitted_total", "b");
    let lost = counter(&text, "headwater_srt_packets_lost_total", "b");
    let loss_reports = counter(&text, "headwater_srt_loss_reports_total", "b");
    let decrypt_errors = counter(&text, "headwater_srt_decrypt_errors_total", "b");
    let dropped = dropped.load(Ordering::Relaxed);
    eprintln!(
        "relay dropped {dropped}; received {received}, lost {lost}, retransmitted \
         {retransmitted}, loss reports {loss_reports}, rtt {rtt:.4} s"
    );
    assert!(dropped > 10, "the relay dropped only {dropped} datagrams");
    assert!(received > 500.0, "{received} packets received");
    assert!(lost > 0.0, "no lost packets in the metrics");
    assert!(retransmitted > 0.0, "no retransmissions in the metrics");
    assert!(loss_reports > 0.0, "no loss reports in the metrics");
    assert_eq!(decrypt_errors, 0.0, "encrypted packets failed to decrypt");
    assert!(
        rtt < round_trip + 0.1,
        "RTT {rtt} s through a {round_trip} s round trip"
    );
    assert!(text.contains("headwater_srt_receive_buffer_seconds{stream=\"b\"}"));
    server.shutdown().await;
}

/// Runs an ffmpeg SRT publisher that must be refused; returns its stderr.
fn refused(srt: SocketAddr, stream_id: &str, extra: &str) -> String {
    let publisher = Publisher::srt(srt, stream_id, 4, extra);
    let (status, stderr) = publisher.wait(Duration::from_secs(15));
    assert!(
        !status.success(),
        "ffmpeg with streamid {stream_id:?} {extra:?} was accepted"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_garbage_leave_other_streams_alone() {
    require_tools();
    let logs = Logs::capture();
    let mut config = test_config(Duration::from_secs(2));
    let passphrase = "correct-horse-battery";
    if let Some(srt) = config.srt.as_mut() {
        srt.passphrase = Some(passphrase.into());
    }
    let server = Server::start(config, None).await.expect("start");
    let srt = server.srt_addr.expect("srt");
    let good = format!("&passphrase={passphrase}");
    let healthy = Publisher::srt(srt, "key-a", 30, &good);
    let http = client();
    let media = format!("http://{}/live/a/source/index.m3u8", server.http_addr);
    let segments_now = || async {
        let (status, body) = get(&http, &media).await;
        (status == 200)
            .then(|| parse_media(&body).segments.len() as u64 + parse_media(&body).media_sequence)
    };
    let before = wait_for(
        "the healthy SRT stream's first segment",
        Duration::from_secs(20),
        || async { segments_now().await.filter(|&n| n >= 1) },
    )
    .await;

    // Wrong passphrase, no passphrase, unknown key, a second publisher on a live key, a
    // non-publish mode: each refused in the handshake.
    refused(srt, "key-b", "&passphrase=wrong-passphrase");
    refused(srt, "key-b", "");
    refused(srt, "no-such-key", &good);
    refused(srt, "key-a", &good);
    refused(srt, "#!::r=live/key-b,m=request", &good);
    // Garbage datagrams: not SRT at all, and an SRT-looking control header.
    let garbage = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for i in 0..200u32 {
        let mut datagram = vec![0x80, 0, 0, 0];
        datagram.extend_from_slice(&i.to_be_bytes());
        datagram.resize(16 + (i as usize % 1300), (i % 251) as u8);
        if i % 2 == 0 {
            datagram[0] = (i % 256) as u8;
        }
        garbage.send_to(&datagram, srt).await.expect("send");
    }

    let text = logs.text();
    assert!(text.contains("srt publish refused"), "no refusal logged");
    assert!(
        text.contains("unknown stream key"),
        "unknown key not logged"
    );
    assert!(
        text.contains("already has a live publisher"),
        "conflict not logged"
    );
    assert!(text.contains("is not publish"), "mode not logged");
    assert!(
        text.contains("wrong or missing passphrase"),
        "passphrase failure not logged"
    );

    // The healthy stream keeps producing segments (3 more, i.e. 6 s of media).
    wait_for(
        "the healthy stream to keep going",
        Duration::from_secs(20),
        || async { segments_now().await.filter(|&n| n >= before + 3) },
    )
    .await;
    drop(healthy);
    // A refused publisher on key-b left no live stream behind.
    let (status, _) = get(
        &http,
        &format!("http://{}/live/b/index.m3u8", server.http_addr),
    )
    .await;
    assert_eq!(status, 404, "refused publishers produced a stream");
    server.shutdown().await;
}
