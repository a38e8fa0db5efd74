//! A real browser over HTTP/3: headless Chromium (Debian) with QUIC forced to the TLS origin
//! plays the stream with hls.js (npm, tests/browser/node_modules); every playlist and segment
//! fetch must report `nextHopProtocol == "h3"`.

use crate::common::*;
use headwater::Server;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_hls_over_h3() {
    require_tools();
    browser_dir();
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
    let result = run_browser_script(
        "play_h3.mjs",
        vec![origin, spki, "/live/demo/index.m3u8".into(), "4".into()],
    )
    .await;
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
