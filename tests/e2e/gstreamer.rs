//! GStreamer as the publisher: a second real RTMP client (rtmp2sink) and a second real SRT
//! caller (srtsink over libsrt, MPEG-TS from mpegtsmux).

use crate::common::*;
use headwater::Server;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rtmp_publish_plays_as_hls() {
    gstreamer_publish_plays_as_hls(|server| GstTarget::Rtmp {
        addr: server.rtmp_addr,
        key: "demo",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_srt_publish_plays_as_hls() {
    gstreamer_publish_plays_as_hls(|server| GstTarget::Srt {
        addr: server.srt_addr.expect("srt"),
        stream_id: "#!::r=live/demo,m=publish",
    })
    .await;
}

/// 8 s pushed by GStreamer to `target` play as 8 s of H.264 640x360 + AAC.
async fn gstreamer_publish_plays_as_hls(target: fn(&Server) -> GstTarget<'static>) {
    require_tools();
    let _logs = Logs::capture();
    let server = Server::start(test_config(Duration::from_secs(1)), None)
        .await
        .expect("start");
    let base = format!("http://{}/live/demo/source", server.http_addr);
    let http = client();

    let publisher = Publisher::gstreamer(target(&server), 8);
    let (status, stderr) = publisher.wait(Duration::from_secs(30));
    assert!(status.success(), "gst-launch-1.0 failed: {stderr}");
    let playlist = wait_for("ENDLIST", Duration::from_secs(10), || async {
        let (status, body) = get(&http, &format!("{base}/index.m3u8")).await;
        (status == 200)
            .then(|| parse_media(&body))
            .filter(|p| p.end_list)
    })
    .await;

    let listed: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!((listed - 8.0).abs() < 1.0, "listed {listed} s, pushed 8 s");
    // H.264 640x360 + AAC in every segment, and 8 s (± 1) played as one stream.
    check_segments(&http, &base, &playlist, 8.0).await;
    server.shutdown().await;
}
