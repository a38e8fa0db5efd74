//! The web player in a real browser: `/` lists the live stream within 2 s of its publish and
//! drops it after it ends; `/watch/<stream>` plays with hls.js past 6 s without a fatal error
//! and every quality can be selected (the requested rendition changes).

use crate::common::*;
use headwater::config::{LadderConfig, RenditionConfig};
use headwater::names::{RenditionName, StreamName};
use headwater::stream::PublisherState;
use headwater::Server;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn rung(name: &str, height: u32, kbps: u32) -> RenditionConfig {
    RenditionConfig {
        name: RenditionName::parse(name).expect("name"),
        height,
        video_kbps: kbps,
        maxrate_kbps: kbps * 11 / 10,
        bufsize_kbps: kbps * 2,
        preset: "ultrafast".into(),
        profile: "main".into(),
        max_fps: 30,
    }
}

/// Pages and assets: hashed asset URLs, immutable caching, strong ETags and 304s, no external links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets_are_cacheable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(1));
    config.cache.dir = dir.path().join("cache");
    let server = Server::start(config, None).await.expect("start");
    let base = format!("http://{}", server.http_addr);
    let http = client();
    for page in ["/", "/watch/demo"] {
        let response = http.get(format!("{base}{page}")).send().await.expect("get");
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let html = response.text().await.expect("body");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page} links outside: it must work offline"
        );
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("/assets/"))
            .collect();
        assert!(assets.len() >= 2, "{page}: {html}");
        for asset in assets {
            let response = http
                .get(format!("{base}{asset}"))
                .send()
                .await
                .expect("asset");
            assert_eq!(response.status(), 200, "{asset}");
            assert_eq!(
                response.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            let etag = response.headers()["etag"]
                .to_str()
                .expect("etag")
                .to_owned();
            let again = http
                .get(format!("{base}{asset}"))
                .header("If-None-Match", &etag)
                .send()
                .await
                .expect("asset");
            assert_eq!(again.status(), 304, "{asset}");
        }
    }
    assert!(get(&http, &format!("{base}/watch/demo")).await.1.len() > 200);
    assert!(
        String::from_utf8_lossy(&get(&http, &format!("{base}/watch/demo")).await.1)
            .contains("/assets/hls-")
    );
    assert_eq!(
        get(&http, &format!("{base}/assets/app-00000000.js"))
            .await
            .0,
        404
    );
    assert_eq!(get(&http, &format!("{base}/watch/bad%20name")).await.0, 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_lists_plays_and_switches_quality() {
    require_tools();
    let browser = browser_dir();
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(1));
    config.cache.dir = dir.path().join("cache");
    config.hls.ended_retention = Duration::from_secs(30);
    config.ladder = LadderConfig {
        source: true,
        max_lag: Duration::from_secs(30),
        renditions: vec![rung("240p", 240, 400), rung("144p", 144, 200)],
        overrides: Vec::new(),
    };
    config.validate().expect("valid");
    let server = Server::start(config, None).await.expect("start");
    let origin = format!("http://{}", server.http_addr);
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let screenshot = shots.join("watch-demo.png");
    let mut node = Command::new("timeout")
        .args(["150", "node", "web_player.mjs", &origin, "demo"])
        .arg(&screenshot)
        .current_dir(&browser)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let stdout = node.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = lines_tx.send(value);
            }
        }
    });
    let mut next = async || {
        let event = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .expect("browser step in time")
            .expect("browser output");
        assert_ne!(event["event"], "error", "browser failed: {event}");
        event
    };
    let demo = StreamName::parse("demo").expect("name");

    assert_eq!(next().await["event"], "home-ready");
    let publisher = Publisher::start(server.rtmp_addr, "demo", 60);
    let live_at = wait_for(
        "the publisher to be live",
        Duration::from_secs(10),
        || async { (server.registry.state(&demo) == Some(PublisherState::Live)).then(now_ms) },
    )
    .await;
    let listed = next().await;
    assert_eq!(listed["event"], "listed");
    let shown_after = listed["at"].as_i64().expect("at") - live_at;
    assert!(
        shown_after <= 2000,
        "/ showed the stream {shown_after} ms after it went live"
    );

    let watched = next().await;
    assert_eq!(watched["event"], "watched", "{watched}");
    assert_eq!(
        watched["errors"],
        serde_json::json!([]),
        "hls.js errors: {watched}"
    );
    assert_eq!(
        watched["native"], false,
        "Chromium must use hls.js: {watched}"
    );
    assert!(
        watched["currentTime"].as_f64().unwrap_or(0.0) > 6.0,
        "{watched}"
    );
    let levels = watched["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 3, "source + 240p + 144p: {watched}");
    assert_eq!(
        watched["options"].as_array().map(Vec::len),
        Some(4),
        "Auto + one option per rung: {watched}"
    );
    let mut paths = std::collections::HashSet::new();
    for switch in watched["switches"].as_array().expect("switches") {
        let result = &switch["result"];
        assert!(
            result.is_object(),
            "switching to level {} did not take effect: {watched}",
            switch["requested"]
        );
        assert_eq!(result["level"], switch["requested"]);
        paths.insert(result["path"].as_str().expect("path").to_owned());
    }
    assert_eq!(
        paths.len(),
        3,
        "each quality requested its own rendition: {paths:?}"
    );
    assert!(
        watched["latency"]
            .as_str()
            .is_some_and(|l| l.ends_with("behind live")),
        "{watched}"
    );
    assert_eq!(
        watched["chat"], true,
        "the chat message did not come back: {watched}"
    );
    assert!(std::fs::metadata(&screenshot).expect("screenshot").len() > 10_000);

    drop(publisher);
    let ended_at = wait_for("the stream to end", Duration::from_secs(15), || async {
        (server.registry.state(&demo) == Some(PublisherState::Ended)).then(now_ms)
    })
    .await;
    let unlisted = next().await;
    assert_eq!(unlisted["event"], "unlisted");
    let removed_after = unlisted["at"].as_i64().expect("at") - ended_at;
    assert!(
        removed_after <= 2000,
        "/ still listed the stream {removed_after} ms after it ended"
    );
    let _ = node.wait();
    server.shutdown().await;
}
