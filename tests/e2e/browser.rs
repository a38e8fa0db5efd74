//! A real browser over HTTP/3: headless Chromium (Debian) with QUIC forced to the TLS origin
//! plays the stream with hls.js (npm, tests/browser/node_modules); every playlist and segment
//! fetch must report `nextHopProtocol == "h3"`.

use crate::common::*;
use headwater::Server;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn require_browser() -> &'static Path {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run scripts/test.sh, which installs it"
    );
    assert!(
        dir.join("node_modules/hls.js").exists()
            && dir.join("node_modules/playwright-core").exists(),
        "hls.js/playwright-core missing: run scripts/test.sh (npm ci in tests/browser)"
    );
    Box::leak(dir.into_boxed_path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_hls_over_h3() {
    require_tools();
    let dir = require_browser();
    let _logs = Logs::capture();
    let mut config = test_config(Duration::from_secs(3));
    config.tls.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls.self_signed = true;
    let server = Server::start(config, None).await.expect("start");
    let secure = server.secure.clone().expect("tls");
    let spki = secure.certs.spki_sha256().expect("spki");
    let _publisher = Publisher::start(server.rtmp_addr, "demo", 40);
    let http = client();
    let url = format!("http://{}/live/demo/source/index.m3u8", server.http_addr);
    wait_for("two segments", Duration::from_secs(30), || async {
        let (status, body) = get(&http, &url).await;
        (status == 200 && parse_media(&body).segments.len() >= 2).then_some(())
    })
    .await;
    let origin = format!("https://127.0.0.1:{}", secure.tcp_addr.port());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "90",
                "node",
                "play_h3.mjs",
                &origin,
                &spki,
                "/live/demo/index.m3u8",
                "4",
            ])
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
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("JSON from play_h3.mjs");
    assert_eq!(
        result["errors"],
        serde_json::json!([]),
        "hls.js errors: {result}"
    );
    assert!(
        result["currentTime"].as_f64().unwrap_or(0.0) >= 4.0,
        "did not play 4 s: {result}"
    );
    assert_eq!(
        result["navigation"], "h3",
        "page not loaded over h3: {result}"
    );
    let entries = result["entries"].as_array().expect("entries");
    let count = |ext: &str| {
        entries
            .iter()
            .filter(|e| e["name"].as_str().is_some_and(|n| n.ends_with(ext)))
            .count()
    };
    assert!(count(".m3u8") >= 2, "playlists fetched: {result}");
    assert!(count(".m4s") >= 2, "segments fetched: {result}");
    for entry in entries {
        assert_eq!(
            entry["protocol"], "h3",
            "not over HTTP/3: {entry} in {result}"
        );
    }
    server.shutdown().await;
}
