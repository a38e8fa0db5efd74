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
    let init_uri = &playlist.segments[0].map.as_ref().expect("EXT-X-MAP").uri;
    let (_, init) = get(&http, &format!("{base}/{init_uri}")).await;
    let mut whole = init.to_vec();
    for segment in &playlist.segments {
        let (status, data) = get(&http, &format!("{base}/{}", segment.uri)).await;
        assert_eq!(status, 200);
        whole.extend_from_slice(&data);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gst.mp4");
    std::fs::write(&file, &whole).expect("write");
    let streams = ffprobe(
        &file,
        &[
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ],
    );
    assert_eq!(
        streams.trim().lines().collect::<Vec<_>>(),
        ["h264,640,360", "aac"]
    );
    let total: f64 = ffprobe(
        &file,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .trim()
    .parse()
    .expect("duration");
    assert!((total - 8.0).abs() <= 1.0, "plays {total} s");
    server.shutdown().await;
}
