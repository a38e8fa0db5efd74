//! The ABR ladder end to end: ffmpeg publishes, Headwater decodes once and encodes every rung,
//! ffprobe checks every rendition's segments (size, IDR starts, PTS alignment, CODECS, bitrate).
//!
//! Sources are small (640x360) except one 1280x720 test, to keep CPU low on 2-core CI machines.

use crate::common::*;
use headwater::config::{Config, LadderConfig, RenditionConfig};
use headwater::names::RenditionName;
use headwater::Server;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One frame at 30 fps, in seconds.
const FRAME: f64 = 1.0 / 30.0;

fn rendition(name: &str, height: u32, kbps: u32, preset: &str) -> RenditionConfig {
    RenditionConfig {
        name: RenditionName::parse(name).expect("name"),
        height,
        video_kbps: kbps,
        maxrate_kbps: kbps * 11 / 10,
        bufsize_kbps: kbps * 2,
        preset: preset.into(),
        profile: "main".into(),
        max_fps: 30,
    }
}

/// The test config with `ladder`; a generous lag limit so a loaded CI machine sheds nothing.
fn ladder_config(source: bool, renditions: Vec<RenditionConfig>) -> Config {
    let mut config = test_config(Duration::from_secs(5));
    config.hls.live_window = 12;
    config.ladder = LadderConfig {
        source,
        max_lag: Duration::from_secs(30),
        renditions,
        overrides: Vec::new(),
    };
    config.validate().expect("valid ladder");
    config
}

/// A server with a 360p + 240p ladder (x264 superfast), with or without the source rendition;
/// returns it and the stream `demo`'s base URL.
async fn small_ladder(source: bool) -> (Server, String) {
    let config = ladder_config(
        source,
        vec![
            rendition("360p", 360, 700, "superfast"),
            rendition("240p", 240, 400, "superfast"),
        ],
    );
    let server = Server::start(config, None).await.expect("start");
    let base = format!("http://{}/live/demo", server.http_addr);
    (server, base)
}

/// Spawns `ffmpeg -re <input args> -f flv rtmp://.../live/<key>`.
fn publish(rtmp: std::net::SocketAddr, key: &str, args: &[&str]) -> Publisher {
    let url = format!("rtmp://{rtmp}/live/{key}");
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(args)
        .args(["-f", "flv", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    Publisher(child)
}

/// testsrc2 at `size`, 30 fps, H.264 with `gop` args, plus AAC unless `audio` is false.
fn synthetic(size: &str, seconds: u32, gop: &[&str], audio: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={size}:rate=30"),
    ];
    if audio {
        args.extend(
            ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"].map(String::from),
        );
    }
    args.extend(["-t".into(), seconds.to_string()]);
    args.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "1500k",
        ]
        .map(String::from),
    );
    args.extend(gop.iter().map(ToString::to_string));
    if audio {
        args.extend(["-c:a", "aac", "-b:a", "96k"].map(String::from));
    }
    args
}

/// Waits for ENDLIST on `rendition`'s playlist; returns it.
async fn ended_playlist(
    http: &reqwest::Client,
    base: &str,
    rendition: &str,
    limit: Duration,
) -> m3u8_rs::MediaPlaylist {
    let url = format!("{base}/{rendition}/index.m3u8");
    wait_for(&format!("ENDLIST in {rendition}"), limit, || async {
        let (status, body) = get(http, &url).await;
        (status == 200)
            .then(|| parse_media(&body))
            .filter(|p| p.end_list)
    })
    .await
}

async fn multivariant(http: &reqwest::Client, base: &str) -> m3u8_rs::MasterPlaylist {
    let (status, body) = get(http, &format!("{base}/index.m3u8")).await;
    assert_eq!(status, 200);
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a multivariant playlist: {other:?}"),
    }
}

/// What ffprobe says about one segment (its init prepended).
#[derive(Debug, Clone)]
struct Probed {
    sequence: u64,
    /// PTS of the first packet, seconds.
    first_pts: f64,
    /// The first decoded frame is a keyframe of type I.
    starts_with_idr: bool,
    width: u64,
    height: u64,
    profile: String,
    level: i64,
    packets: usize,
    bytes: usize,
    extinf: f64,
    discontinuity: bool,
}

fn probe_json(file: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-select_streams", "v:0", "-of", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ffprobe(file, &all)).expect("ffprobe json")
}

/// Downloads and probes every listed segment of `rendition`.
async fn probe_rendition(
    http: &reqwest::Client,
    base: &str,
    rendition: &str,
    playlist: &m3u8_rs::MediaPlaylist,
    dir: &Path,
) -> Vec<Probed> {
    let mut out = Vec::new();
    let mut init = bytes::Bytes::new();
    for (i, segment) in playlist.segments.iter().enumerate() {
        if let Some(map) = &segment.map {
            let (status, body) = get(http, &format!("{base}/{rendition}/{}", map.uri)).await;
            assert_eq!(status, 200, "{rendition}/{}", map.uri);
            init = body;
        }
        let (status, data) = get(http, &format!("{base}/{rendition}/{}", segment.uri)).await;
        assert_eq!(
            status, 200,
            "{rendition}/{} listed, not fetchable",
            segment.uri
        );
        let file: PathBuf = dir.join(format!("{rendition}-{}.mp4", segment.uri));
        std::fs::write(&file, [&init[..], &data[..]].concat()).expect("write");
        let packets = probe_json(&file, &["-show_entries", "packet=pts_time,flags"]);
        let packets = packets["packets"].as_array().cloned().unwrap_or_default();
        let first_pts = packets
            .iter()
            .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min);
        let frame = probe_json(
            &file,
            &[
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type:stream=width,height,profile,level",
            ],
        );
        let first = &frame["frames"][0];
        let stream = &frame["streams"][0];
        out.push(Probed {
            sequence: playlist.media_sequence + i as u64,
            first_pts,
            starts_with_idr: first["key_frame"].as_i64() == Some(1)
                && first["pict_type"].as_str() == Some("I"),
            width: stream["width"].as_u64().unwrap_or(0),
            height: stream["height"].as_u64().unwrap_or(0),
            profile: stream["profile"].as_str().unwrap_or("").to_owned(),
            level: stream["level"].as_i64().unwrap_or(0),
            packets: packets.len(),
            bytes: data.len(),
            extinf: f64::from(segment.duration),
            discontinuity: segment.discontinuity,
        });
    }
    out
}

/// Checks rules 9 and 10 across renditions: same segments, same start PTS (within a frame),
/// IDR starts, CODECS as ffprobe sees them, bitrate within BANDWIDTH.
fn check_aligned(all: &BTreeMap<String, Vec<Probed>>, variants: &[m3u8_rs::VariantStream]) {
    let (first_name, reference) = all.iter().next().expect("renditions");
    for (name, segments) in all {
        let sequences: Vec<u64> = segments.iter().map(|s| s.sequence).collect();
        let expected: Vec<u64> = reference.iter().map(|s| s.sequence).collect();
        assert_eq!(
            sequences, expected,
            "{name} vs {first_name}: segment lists differ"
        );
        for (segment, other) in segments.iter().zip(reference) {
            assert!(
                segment.starts_with_idr,
                "rule 10: {name} segment {} does not start with an IDR",
                segment.sequence
            );
            assert!(
                (segment.first_pts - other.first_pts).abs() <= FRAME + 1e-3,
                "rule 10: {name} segment {} starts at {} s, {first_name} at {} s",
                segment.sequence,
                segment.first_pts,
                other.first_pts
            );
            assert_eq!(
                segment.discontinuity, other.discontinuity,
                "{name} segment {}: discontinuity differs",
                segment.sequence
            );
        }
        let variant = variants
            .iter()
            .find(|v| v.uri == format!("{name}/index.m3u8"))
            .unwrap_or_else(|| panic!("{name} not in the multivariant playlist"));
        let last = segments.last().expect("segments");
        let codecs = variant.codecs.clone().expect("CODECS");
        let profile_idc = match last.profile.as_str() {
            "Baseline" | "Constrained Baseline" => "42",
            "Main" => "4d",
            "High" => "64",
            other => panic!("{name}: unexpected profile {other}"),
        };
        let avc = codecs.split(',').next().unwrap_or_default();
        assert!(
            avc.starts_with(&format!("avc1.{profile_idc}"))
                && avc.ends_with(&format!("{:02x}", last.level)),
            "{name}: CODECS {codecs} but ffprobe says {} level {}",
            last.profile,
            last.level
        );
        assert_eq!(
            variant.resolution.map(|r| (r.width, r.height)),
            Some((last.width, last.height)),
            "{name}: RESOLUTION"
        );
        assert!(variant.frame_rate.is_some(), "{name}: FRAME-RATE");
        let average = variant.average_bandwidth.expect("AVERAGE-BANDWIDTH");
        assert!(average > 0 && average <= variant.bandwidth, "{name}");
        for segment in segments.iter().filter(|s| s.extinf >= 1.0) {
            let bps = segment.bytes as f64 * 8.0 / segment.extinf;
            assert!(
                bps <= variant.bandwidth as f64,
                "rule 9: {name} segment {} at {bps:.0} b/s exceeds BANDWIDTH {}",
                segment.sequence,
                variant.bandwidth
            );
        }
    }
}

async fn probe_all(
    http: &reqwest::Client,
    base: &str,
    renditions: &[&str],
    dir: &Path,
) -> BTreeMap<String, Vec<Probed>> {
    let mut all = BTreeMap::new();
    for name in renditions {
        let playlist = ended_playlist(http, base, name, Duration::from_secs(60)).await;
        all.insert(
            (*name).to_owned(),
            probe_rendition(http, base, name, &playlist, dir).await,
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_720p_source_becomes_an_aligned_ladder() {
    require_tools();
    let logs = Logs::capture();
    let config = ladder_config(
        true,
        vec![
            rendition("1080p", 1080, 5000, "veryfast"),
            rendition("480p", 480, 1400, "veryfast"),
            rendition("360p", 360, 800, "veryfast"),
        ],
    );
    let server = Server::start(config, None).await.expect("start");
    let base = format!("http://{}/live/demo", server.http_addr);
    let http = client();
    let args = synthetic(
        "1280x720",
        14,
        &["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"],
        true,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = publish(server.rtmp_addr, "demo", &args);
    // Rule 6: while live, the renditions stay within one segment of each other.
    let deadline = Deadline::new("the source's ENDLIST", Duration::from_secs(60));
    loop {
        let mut newest = Vec::new();
        let mut ended = false;
        for name in ["source", "480p", "360p"] {
            let (status, body) = get(&http, &format!("{base}/{name}/index.m3u8")).await;
            if status == 200 {
                let p = parse_media(&body);
                ended |= p.end_list;
                newest.push(p.media_sequence + p.segments.len() as u64);
            }
        }
        if let (Some(max), Some(min)) = (newest.iter().max(), newest.iter().min()) {
            assert!(max - min <= 1, "rule 6: renditions apart: {newest:?}");
        }
        if ended {
            break;
        }
        deadline.tick().await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let all = probe_all(&http, &base, &["source", "480p", "360p"], dir.path()).await;
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "publisher failed");
    let variants = multivariant(&http, &base).await.variants;
    assert_eq!(
        variants.len(),
        3,
        "1080p is taller than the source: skipped"
    );
    assert_eq!(
        variants[0].uri, "480p/index.m3u8",
        "the middle rendition first"
    );
    check_aligned(&all, &variants);
    for (name, size) in [
        ("source", (1280, 720)),
        ("480p", (854, 480)),
        ("360p", (640, 360)),
    ] {
        let segments = &all[name];
        assert!(segments.len() >= 6, "{name}: {} segments", segments.len());
        assert!(
            segments.iter().all(|s| (s.width, s.height) == size),
            "{name}: resolution not {size:?}"
        );
        assert!(
            segments[..segments.len() - 1]
                .iter()
                .all(|s| (s.extinf - 2.0).abs() < 0.05 && s.packets == 60),
            "{name}: 2 s segments of 60 frames"
        );
    }
    assert!(logs
        .text()
        .contains("rendition taller than the source: skipped"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_irregular_gop_without_audio_stays_aligned() {
    require_tools();
    let logs = Logs::capture();
    let (server, base) = small_ladder(true).await;
    let http = client();
    // Keyframes every 50 frames (1.67 s) and on scene cuts: boundaries fall on the first source
    // keyframe at or after each 2 s target.
    let args = synthetic("640x360", 10, &["-g", "50", "-bf", "2"], false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = publish(server.rtmp_addr, "demo", &args);
    let dir = tempfile::tempdir().expect("tempdir");
    let all = probe_all(&http, &base, &["source", "360p", "240p"], dir.path()).await;
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "publisher failed");
    let variants = multivariant(&http, &base).await.variants;
    check_aligned(&all, &variants);
    for variant in &variants {
        let codecs = variant.codecs.clone().unwrap_or_default();
        assert!(!codecs.contains("mp4a"), "no audio, CODECS={codecs}");
    }
    assert!(all["240p"]
        .iter()
        .all(|s| (s.width, s.height) == (426, 240)));
    assert!(all["source"].len() >= 2);
    // Segments run long (3.3 s for a 2 s target): said in the logs, and a target duration that
    // holds in every playlist.
    assert!(logs.text().contains("segments run long"));
    for name in ["source", "360p", "240p"] {
        let playlist = ended_playlist(&http, &base, name, Duration::from_secs(5)).await;
        assert_eq!(playlist.target_duration, 3, "{name}");
        assert!(
            playlist
                .segments
                .iter()
                .all(|s| (s.duration.round() as u64) <= playlist.target_duration),
            "{name}: rule 1"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_transcoded_ladder_cuts_exactly_and_reconnects_in_step() {
    require_tools();
    let _logs = Logs::capture();
    let (server, base) = small_ladder(false).await;
    let http = client();
    // A source GOP (50 frames) that never lines up with 2 s: without a passthrough rendition
    // boundaries are time-based and exact anyway.
    let args = synthetic("640x360", 7, &["-g", "50", "-bf", "2"], true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _) = publish(server.rtmp_addr, "demo", &args).wait(Duration::from_secs(20));
    assert!(status.success(), "first publisher failed");
    let (status, _) = publish(server.rtmp_addr, "demo", &args).wait(Duration::from_secs(20));
    assert!(status.success(), "second publisher failed");
    let dir = tempfile::tempdir().expect("tempdir");
    let all = probe_all(&http, &base, &["360p", "240p"], dir.path()).await;
    let variants = multivariant(&http, &base).await.variants;
    check_aligned(&all, &variants);
    let segments = &all["360p"];
    let discontinuities: Vec<u64> = segments
        .iter()
        .filter(|s| s.discontinuity)
        .map(|s| s.sequence)
        .collect();
    assert_eq!(
        discontinuities.len(),
        1,
        "one reconnect: {discontinuities:?}"
    );
    // Full segments are exactly 2 s (60 frames); only the one before the reconnect and the
    // last are shorter.
    for pair in segments.windows(2) {
        let (s, next) = (&pair[0], &pair[1]);
        if !next.discontinuity {
            assert_eq!(
                s.packets, 60,
                "segment {} has {} frames",
                s.sequence, s.packets
            );
            assert!(
                (s.extinf - 2.0).abs() < 0.01,
                "segment {}: {}",
                s.sequence,
                s.extinf
            );
        }
    }
    server.shutdown().await;
}

/// Concatenates two FLV files at the tag level (the second's metadata and audio header
/// dropped, its timestamps shifted), so the video sequence header changes mid-stream.
fn concat_flv(first: &[u8], second: &[u8]) -> Vec<u8> {
    fn tags(data: &[u8]) -> Vec<(u8, u32, &[u8])> {
        let mut out = Vec::new();
        let mut i = 13;
        while i + 11 <= data.len() {
            let kind = data[i];
            let size = u32::from_be_bytes([0, data[i + 1], data[i + 2], data[i + 3]]) as usize;
            let ts = u32::from_be_bytes([data[i + 7], data[i + 4], data[i + 5], data[i + 6]]);
            let Some(body) = data.get(i + 11..i + 11 + size) else {
                break;
            };
            out.push((kind, ts, body));
            i += 11 + size + 4;
        }
        out
    }
    fn tag(out: &mut Vec<u8>, kind: u8, ts: u32, body: &[u8]) {
        let size = (body.len() as u32).to_be_bytes();
        let t = ts.to_be_bytes();
        out.extend_from_slice(&[
            kind, size[1], size[2], size[3], t[1], t[2], t[3], t[0], 0, 0, 0,
        ]);
        out.extend_from_slice(body);
        out.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
    }
    let mut out = first[..13].to_vec();
    let mut last = 0;
    for (kind, ts, body) in tags(first) {
        tag(&mut out, kind, ts, body);
        last = last.max(ts);
    }
    for (kind, ts, body) in tags(second) {
        let audio_header = kind == 8 && body.get(1) == Some(&0);
        if kind != 18 && !audio_header {
            tag(&mut out, kind, ts + last + 34, body);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_change_gets_a_new_init_in_every_rendition() {
    require_tools();
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut parts = Vec::new();
    for size in ["640x360", "480x360"] {
        let file = dir.path().join(format!("{size}.flv"));
        let mut args = vec![
            "-hide_banner".to_owned(),
            "-loglevel".into(),
            "error".into(),
        ];
        args.extend(synthetic(size, 5, &["-g", "30"], true));
        args.push(file.display().to_string());
        let status = Command::new("ffmpeg").args(&args).status().expect("ffmpeg");
        assert!(status.success(), "encoding {size}");
        parts.push(std::fs::read(&file).expect("read"));
    }
    let joined = dir.path().join("joined.flv");
    std::fs::write(&joined, concat_flv(&parts[0], &parts[1])).expect("write");
    let (server, base) = small_ladder(true).await;
    let http = client();
    let path = joined.display().to_string();
    let publisher = publish(server.rtmp_addr, "demo", &["-i", &path, "-c", "copy"]);
    let all = probe_all(&http, &base, &["source", "360p", "240p"], dir.path()).await;
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "publisher failed");
    let variants = multivariant(&http, &base).await.variants;
    check_aligned(&all, &variants);
    for (name, before, after) in [
        ("source", (640, 360), (480, 360)),
        ("360p", (640, 360), (480, 360)),
        ("240p", (426, 240), (320, 240)),
    ] {
        let segments = &all[name];
        let first = segments.first().expect("segments");
        let last = segments.last().expect("segments");
        assert_eq!((first.width, first.height), before, "{name} before");
        assert_eq!((last.width, last.height), after, "{name} after");
    }
    for name in ["source", "360p", "240p"] {
        let playlist = ended_playlist(&http, &base, name, Duration::from_secs(5)).await;
        let maps = playlist.segments.iter().filter(|s| s.map.is_some()).count();
        assert_eq!(maps, 2, "{name}: a new EXT-X-MAP at the change");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_keep_up_sheds_its_most_expensive_rendition() {
    require_tools();
    let logs = Logs::capture();
    let mut config = ladder_config(
        true,
        vec![
            // Far slower than real time on any machine.
            rendition("360p", 360, 700, "placebo"),
            rendition("240p", 240, 400, "ultrafast"),
        ],
    );
    config.ladder.max_lag = Duration::from_secs(2);
    let server = Server::start(config, None).await.expect("start");
    let base = format!("http://{}/live/demo", server.http_addr);
    let http = client();
    let args = synthetic(
        "640x360",
        10,
        &["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"],
        true,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = publish(server.rtmp_addr, "demo", &args);
    let shed = wait_for(
        "the 360p rendition to be shed",
        Duration::from_secs(20),
        || {
            let text = logs.text();
            async move {
                text.lines()
                    .find(|l| l.contains("shedding the most expensive rendition"))
                    .map(ToOwned::to_owned)
            }
        },
    )
    .await;
    assert!(shed.contains("rendition=360p"), "{shed}");
    let source = ended_playlist(&http, &base, "source", Duration::from_secs(30)).await;
    assert!(source.segments.len() >= 4, "the source kept flowing");
    let low = ended_playlist(&http, &base, "240p", Duration::from_secs(5)).await;
    assert_eq!(low.segments.len(), source.segments.len(), "240p kept up");
    let variants = multivariant(&http, &base).await.variants;
    let uris: Vec<&str> = variants.iter().map(|v| v.uri.as_str()).collect();
    assert!(
        !uris.contains(&"360p/index.m3u8"),
        "shed rendition listed: {uris:?}"
    );
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "publisher failed");
    server.shutdown().await;
}

/// A publisher whose audio sequence header comes before the video one (FLV streams in the order
/// audio, video): the transcoded renditions, planned at the first video header, still carry audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_first_publishers_keep_audio_in_every_rendition() {
    require_tools();
    let _logs = Logs::capture();
    let config = ladder_config(true, vec![rendition("180p", 180, 300, "ultrafast")]);
    let server = Server::start(config, None).await.expect("start");
    let base = format!("http://{}/live/demo", server.http_addr);
    let http = client();
    let args = [
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "5",
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "60",
        "-sc_threshold",
        "0",
    ];
    let (status, _) = publish(server.rtmp_addr, "demo", &args).wait(Duration::from_secs(30));
    assert!(status.success(), "ffmpeg failed");
    for rendition in ["source", "180p"] {
        let playlist = ended_playlist(&http, &base, rendition, Duration::from_secs(20)).await;
        let init = &playlist.segments[0].map.as_ref().expect("map").uri;
        let (_, init) = get(&http, &format!("{base}/{rendition}/{init}")).await;
        let (_, segment) = get(
            &http,
            &format!("{base}/{rendition}/{}", playlist.segments[0].uri),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("first.mp4");
        std::fs::write(&file, [&init[..], &segment[..]].concat()).expect("write");
        let streams = ffprobe(
            &file,
            &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
        );
        assert!(
            streams.lines().any(|l| l.trim() == "aac"),
            "{rendition} lost its audio: {streams}"
        );
    }
    server.shutdown().await;
}
