//! Shared harness: an in-process Headwater on ephemeral ports, real ffmpeg publishers, an HTTP
//! client and wait-until helpers (no fixed sleeps as synchronisation).

use headwater::config::{Config, KeyConfig};
use headwater::names::StreamName;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Segment target used by the tests (ARCHITECTURE: 2 s in tests).
pub const TARGET: Duration = Duration::from_secs(2);

/// Fails the test with a clear message when `tool` (from the Debian `package`) is missing;
/// scripts/test.sh installs it.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{tool} is not installed: run scripts/test.sh, which installs {package}"
    );
}

/// ffmpeg and ffprobe, which most tests use.
pub fn require_tools() {
    for tool in ["ffmpeg", "ffprobe"] {
        require_tool(tool, "ffmpeg");
    }
}

/// A test config: ephemeral ports, 2 s segments, keys `demo`->demo, `key-a`->a, `key-b`->b.
pub fn test_config(grace: Duration) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.rtmp.listen = "127.0.0.1:0".parse().expect("addr");
    config.rtmp.handshake_timeout = Duration::from_secs(2);
    config.rtmp.idle_timeout = Duration::from_secs(2);
    if let Some(srt) = config.srt.as_mut() {
        srt.listen = "127.0.0.1:0".parse().expect("addr");
    }
    config.hls.segment_target = TARGET;
    config.hls.reconnect_grace = grace;
    config.hls.ended_retention = Duration::from_secs(120);
    // Passthrough only: the ladder tests (ladder.rs) set their own renditions.
    config.ladder = headwater::config::LadderConfig::passthrough();
    // Metadata in memory: tests that need the SQLite file (api.rs) set their own data_dir.
    config.api.data_dir = std::path::PathBuf::new();
    config.keys = [("demo", "demo"), ("key-a", "a"), ("key-b", "b")]
        .into_iter()
        .map(|(key, stream)| KeyConfig {
            key: key.into(),
            stream: StreamName::parse(stream).expect("name"),
        })
        .collect();
    config.validate().expect("test config is valid");
    config
}

/// Log lines captured from the server under test.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Routes this process's tracing output into the buffer (nextest runs each test in its own process).
    pub fn capture() -> Self {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        eprint!("{}", String::from_utf8_lossy(buf));
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running ffmpeg publisher, killed on drop.
pub struct Publisher(pub Child);

/// Where a GStreamer publisher pushes.
pub enum GstTarget<'a> {
    /// flvmux + rtmp2sink to `rtmp://addr/live/key`.
    Rtmp {
        /// The RTMP listener.
        addr: std::net::SocketAddr,
        /// The stream key.
        key: &'a str,
    },
    /// mpegtsmux + srtsink (libsrt caller) to `addr` with `streamid`.
    Srt {
        /// The SRT listener.
        addr: std::net::SocketAddr,
        /// The SRT streamid.
        stream_id: &'a str,
    },
}

impl Publisher {
    /// `ffmpeg` pushing `seconds` of testsrc2 + sine (H.264 640x360@30, 2 s GOP, 800 kbit/s,
    /// AAC 48 kHz) in real time as `format` to `url`.
    fn ffmpeg(seconds: u32, format: &str, url: &str) -> Self {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60"])
            .args(["-sc_threshold", "0", "-b:v", "800k"])
            .args(["-c:a", "aac", "-b:a", "96k", "-f", format, url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ffmpeg");
        Publisher(child)
    }

    /// Pushes `seconds` of the test source (see [`Publisher::ffmpeg`]) over RTMP with `key`.
    pub fn start(rtmp: std::net::SocketAddr, key: &str, seconds: u32) -> Self {
        Self::ffmpeg(seconds, "flv", &format!("rtmp://{rtmp}/live/{key}"))
    }

    /// Pushes `seconds` of the same test source as MPEG-TS over SRT (caller mode) to `srt` with
    /// `stream_id` (e.g. `key-a` or `#!::r=live/key-a,m=publish`). `extra` are SRT URL options
    /// such as `&passphrase=...`.
    pub fn srt(srt: std::net::SocketAddr, stream_id: &str, seconds: u32, extra: &str) -> Self {
        let url = format!("srt://{srt}?streamid={stream_id}&latency=120000{extra}");
        Self::ffmpeg(seconds, "mpegts", &url)
    }

    /// Pushes `seconds` of videotestsrc + audiotestsrc with GStreamer (x264enc, avenc_aac) in
    /// real time, muxed and sent as `target` says.
    pub fn gstreamer(target: GstTarget, seconds: u32) -> Self {
        let video_buffers = format!("num-buffers={}", seconds * 30);
        // audiotestsrc sends 1024 samples per buffer.
        let audio_buffers = format!("num-buffers={}", seconds * 48_000 / 1024);
        let (mux, sink): (&[&str], Vec<String>) = match target {
            GstTarget::Rtmp { addr, key } => (
                &["flvmux", "name=mux", "streamable=true"],
                vec![
                    "rtmp2sink".into(),
                    format!("location=rtmp://{addr}/live/{key}"),
                ],
            ),
            GstTarget::Srt { addr, stream_id } => (
                // 7 TS packets per SRT message, as libsrt callers send.
                &["mpegtsmux", "name=mux", "alignment=7"],
                vec![
                    "srtsink".into(),
                    format!("uri=srt://{addr}"),
                    format!("streamid={stream_id}"),
                    "latency=120".into(),
                ],
            ),
        };
        let mut pipeline: Vec<&str> = vec![
            "videotestsrc",
            "is-live=true",
            &video_buffers,
            "!",
            "video/x-raw,width=640,height=360,framerate=30/1",
            "!",
            "x264enc",
            "key-int-max=60",
            "tune=zerolatency",
            "speed-preset=ultrafast",
            "bitrate=800",
            "!",
            "h264parse",
            "!",
            "queue",
            "!",
        ];
        pipeline.extend_from_slice(mux);
        pipeline.push("!");
        pipeline.extend(sink.iter().map(String::as_str));
        pipeline.extend_from_slice(&[
            "audiotestsrc",
            "is-live=true",
            &audio_buffers,
            "!",
            "audioconvert",
            "!",
            "audioresample",
            "!",
            "audio/x-raw,rate=48000,channels=2",
            "!",
            "avenc_aac",
            "!",
            "aacparse",
            "!",
            "queue",
            "!",
            "mux.",
        ]);
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gst-launch-1.0");
        Publisher(child)
    }

    /// Waits for the publisher to exit; returns its status and stderr.
    pub fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut stderr) = self.0.stderr.take() {
                    use std::io::Read;
                    let _ = stderr.read_to_string(&mut err);
                }
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "ffmpeg did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the process (a stalled publisher: TCP stays open, nothing is sent).
    pub fn stop_signal(&self) {
        signal(self.0.id(), "-STOP");
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

impl Drop for Publisher {
    fn drop(&mut self) {
        signal_quiet(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal_quiet(pid: u32) {
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client for the server under test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GETs a URL; returns status and body.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, bytes::Bytes) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body"))
}

/// Parses a media playlist, failing the test on anything m3u8-rs rejects.
pub fn parse_media(body: &[u8]) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!(
            "not a media playlist: {other:?}\n{}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// Runs ffprobe with `args` on `file`; returns stdout, failing on a non-zero exit.
pub fn ffprobe(file: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(file)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deadline for hand-written polling loops that keep state between polls.
pub struct Deadline {
    what: &'static str,
    limit: Duration,
    at: Instant,
}

impl Deadline {
    /// Starts a deadline `limit` from now.
    pub fn new(what: &'static str, limit: Duration) -> Self {
        Self {
            what,
            limit,
            at: Instant::now() + limit,
        }
    }

    /// Fails the test once the deadline has passed; otherwise waits one poll interval.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}",
            self.limit,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`check_segments`] measured.
pub struct CheckedSegments {
    /// Highest segment bitrate (bytes x 8 / EXTINF), bits per second.
    pub peak_bps: f64,
    /// Init + first segment, for further probing.
    pub first_file: std::path::PathBuf,
    /// Keeps the probed files alive.
    pub _dir: tempfile::TempDir,
}

/// Downloads the init section and every segment listed in `playlist` (URIs relative to
/// `rendition_url`), checks each with ffprobe (640x360 H.264 + AAC, an IDR first, video
/// duration = EXTINF within 0.1 s), and checks that init + all segments play as one stream of
/// `seconds` (± 1 s) and decode without errors.
pub async fn check_segments(
    http: &reqwest::Client,
    rendition_url: &str,
    playlist: &m3u8_rs::MediaPlaylist,
    seconds: f64,
) -> CheckedSegments {
    let dir = tempfile::tempdir().expect("tempdir");
    let init_uri = &playlist.segments[0].map.as_ref().expect("EXT-X-MAP").uri;
    let (status, init) = get(http, &format!("{rendition_url}/{init_uri}")).await;
    assert_eq!(status, 200, "{init_uri}");
    let mut whole = init.to_vec();
    let mut peak_bps = 0f64;
    for segment in &playlist.segments {
        let (status, data) = get(http, &format!("{rendition_url}/{}", segment.uri)).await;
        assert_eq!(status, 200, "{} listed but not fetchable", segment.uri);
        peak_bps = peak_bps.max(data.len() as f64 * 8.0 / f64::from(segment.duration));
        whole.extend_from_slice(&data);
        let file = dir.path().join(format!("{}.mp4", segment.uri));
        std::fs::write(&file, [&init[..], &data[..]].concat()).expect("write");
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
            ["h264,640,360", "aac"],
            "{}",
            segment.uri
        );
        let first = ffprobe(
            &file,
            &[
                "-select_streams",
                "v",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type",
                "-of",
                "csv=p=0",
            ],
        );
        assert!(
            first.trim().starts_with("1,I"),
            "rule 10: {} starts with {first:?}",
            segment.uri
        );
        let duration: f64 = ffprobe(
            &file,
            &[
                "-select_streams",
                "v",
                "-show_entries",
                "packet=duration_time",
                "-of",
                "csv=p=0",
            ],
        )
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .sum();
        assert!(
            (duration - f64::from(segment.duration)).abs() < 0.1,
            "{}: probed {duration} vs EXTINF {}",
            segment.uri,
            segment.duration
        );
    }
    let whole_file = dir.path().join("whole.mp4");
    std::fs::write(&whole_file, &whole).expect("write");
    let total: f64 = ffprobe(
        &whole_file,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .trim()
    .parse()
    .expect("duration");
    assert!(
        (total - seconds).abs() <= 1.0,
        "whole stream plays {total} s, pushed {seconds} s"
    );
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&whole_file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg decode");
    assert!(
        decode.status.success() && decode.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&decode.stderr)
    );
    let first_file = dir.path().join(format!("{}.mp4", playlist.segments[0].uri));
    CheckedSegments {
        peak_bps,
        first_file,
        _dir: dir,
    }
}

/// `tests/browser`, after checking that Chromium and the pinned npm packages are installed.
pub fn browser_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists()
            && dir.join("node_modules/hls.js").exists()
            && dir.join("node_modules/playwright-core").exists(),
        "chromium, hls.js or playwright-core missing: run scripts/test.sh, which installs them"
    );
    dir
}

/// Runs `node <script> <args>` in `tests/browser` (90 s at most) and parses the one JSON line
/// it prints; fails the test with the script's stderr if it fails.
pub async fn run_browser_script(script: &str, args: Vec<String>) -> serde_json::Value {
    let dir = browser_dir();
    let script = script.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["90", "node", &script])
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line from the browser script")
}
