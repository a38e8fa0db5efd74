//! Metrics, CMCD QoE, access logs and readiness after a real ffmpeg push and player requests.

use crate::common::*;
use headwater::Server;
use std::collections::HashMap;
use std::time::Duration;

/// Sample values of `name` keyed by their labels, from a parsed exposition.
fn samples(scrape: &prometheus_parse::Scrape, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let value = match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 1.0,
            };
            (labels, value)
        })
        .collect()
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, wanted: &[(&str, &str)]) -> f64 {
    samples(scrape, name)
        .into_iter()
        .filter(|(labels, _)| {
            wanted
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_qoe_and_access_logs_after_a_real_session() {
    require_tools();
    let logs = Logs::capture();
    let metrics = headwater::observe::install_metrics().expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(2));
    config.cache.dir = dir.path().join("cache");
    let server = Server::start(config, Some(metrics)).await.expect("start");
    let base = format!("http://{}", server.http_addr);
    let http = client();
    assert_eq!(get(&http, &format!("{base}/readyz")).await.0, 200);
    assert_eq!(get(&http, &format!("{base}/healthz")).await.0, 200);

    let publisher = Publisher::start(server.rtmp_addr, "demo", 8);
    let playlist = wait_for("three segments", Duration::from_secs(20), || async {
        let (status, body) = get(&http, &format!("{base}/live/demo/source/index.m3u8")).await;
        (status == 200)
            .then(|| parse_media(&body))
            .filter(|p| p.segments.len() >= 3)
    })
    .await;

    // A player session with CMCD: start-up requests carry `su`, then playback begins.
    let session = "\"0e8ac3f1-9a5c-4d2e-8f00-cmcd-e2e\"";
    let cmcd = |extra: &str| {
        let payload = format!("br=800,bl=4000,mtp=9000,ot=v,sid={session}{extra}");
        url_encode(&payload)
    };
    let seg = |n: usize| format!("{base}/live/demo/source/{}", playlist.segments[n].uri);
    let first = http
        .get(format!("{}?CMCD={}", seg(0), cmcd(",su")))
        .send()
        .await
        .expect("get");
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The same object with a different CMCD payload: one cache entry (CMCD is not in the key).
    let second = http
        .get(format!("{}?CMCD={}", seg(0), cmcd(",bs")))
        .send()
        .await
        .expect("get");
    assert_eq!(
        second.headers()["x-cache"],
        "HIT",
        "CMCD must not split the cache"
    );
    assert_eq!(
        first.bytes().await.expect("body"),
        second.bytes().await.expect("body")
    );
    let by_header = http
        .get(seg(1))
        .header("CMCD-Request", "bl=3500,mtp=8000")
        .header("CMCD-Object", "br=1400,ot=v")
        .header("CMCD-Session", format!("sid={session}"))
        .send()
        .await
        .expect("get");
    assert_eq!(by_header.status(), 200);
    // A made-up stream must not create QoE state.
    let _ = http
        .get(format!("{base}/live/nope/source/seg.m4s?CMCD={}", cmcd("")))
        .send()
        .await;

    let (status, body) = get(&http, &format!("{base}/api/v1/streams/demo/qoe")).await;
    assert_eq!(status, 200);
    let qoe: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(qoe["sessions"], 1, "{qoe}");
    assert_eq!(qoe["requests"], 3, "{qoe}");
    let startup = qoe["startup_seconds"]["p50"]
        .as_f64()
        .expect("startup time");
    assert!((0.25..5.0).contains(&startup), "startup {startup} s: {qoe}");
    assert_eq!(qoe["buffer_starvations"], 1);
    assert_eq!(qoe["bitrate_switches"], 1, "800 -> 1400 kbps");
    assert_eq!(
        get(&http, &format!("{base}/api/v1/streams/nope/qoe"))
            .await
            .0,
        404
    );

    let (status, _) = publisher.wait(Duration::from_secs(20));
    assert!(status.success());
    let (_, text) = get(&http, &format!("{base}/metrics")).await;
    let text = String::from_utf8(text.to_vec()).expect("utf-8");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("exposition parses");

    let segment_ok = [
        ("route", "segment"),
        ("status", "2xx"),
        ("protocol", "http1.1"),
        ("method", "GET"),
    ];
    assert!(value(&scrape, "headwater_http_requests_total", &segment_ok) >= 3.0);
    assert!(
        value(
            &scrape,
            "headwater_http_requests_total",
            &[("route", "playlist"), ("status", "2xx")]
        ) >= 1.0
    );
    assert!(
        value(
            &scrape,
            "headwater_http_request_duration_seconds",
            &[("route", "segment")]
        ) >= 3.0,
        "histogram counts"
    );
    assert!(
        value(
            &scrape,
            "headwater_http_response_bytes_total",
            &[("route", "segment")]
        ) > 100_000.0
    );
    let bitrate = value(
        &scrape,
        "headwater_ingest_bitrate_bits_per_second",
        &[("stream", "demo")],
    );
    assert!(
        (300_000.0..3_000_000.0).contains(&bitrate),
        "ingest bitrate {bitrate} for an 800k + 96k push"
    );
    let fps = value(
        &scrape,
        "headwater_ingest_frames_per_second",
        &[("stream", "demo")],
    );
    assert!((25.0..35.0).contains(&fps), "ingest fps {fps}");
    let gop = value(
        &scrape,
        "headwater_ingest_keyframe_interval_seconds",
        &[("stream", "demo")],
    );
    assert!((gop - 2.0).abs() < 0.1, "keyframe interval {gop}");
    assert!(value(&scrape, "headwater_segments_published_total", &[]) >= 3.0);
    assert!(!samples(&scrape, "headwater_segment_publish_latency_seconds").is_empty());
    assert!(value(&scrape, "headwater_cache_hits_total", &[("tier", "memory")]) >= 1.0);
    assert!(value(&scrape, "headwater_cache_misses_total", &[]) >= 1.0);
    assert!(
        value(
            &scrape,
            "headwater_qoe_buffer_starvations_total",
            &[("stream", "demo")]
        ) == 1.0
    );
    assert!(
        value(
            &scrape,
            "headwater_qoe_startup_seconds",
            &[("stream", "demo")]
        ) >= 1.0
    );
    assert_eq!(
        value(&scrape, "headwater_qoe_sessions", &[("stream", "demo")]),
        1.0
    );
    assert!(value(&scrape, "headwater_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&scrape, "headwater_process_open_fds", &[]) > 5.0);
    // Bounded labels: no raw paths, no client addresses, no made-up streams.
    assert!(!text.contains("/live/"), "a path leaked into a label");
    assert!(
        !text.contains("127.0.0.1"),
        "an address leaked into a label"
    );
    assert!(!text.contains("stream=\"nope\""));

    let access = logs.text();
    let line = access
        .lines()
        .find(|l| l.contains("headwater::access") && l.contains("route=\"segment\""))
        .expect("access log line");
    for field in [
        "method=\"GET\"",
        "status=200",
        "bytes=",
        "response_time_ms=",
        "protocol=\"http1.1\"",
        "cache=\"",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    server.shutdown().await;
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Metric names an expression refers to, without the histogram/summary suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("headwater_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every metric the dashboard and the alerts use is one the code records.
#[test]
fn dashboard_and_alert_rules_are_valid_and_use_real_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = String::new();
    let mut dirs = vec![root.join("src"), root.join("ingest/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(&path).expect("read"));
            }
        }
    }
    // Process metrics come from metrics-process under our prefix.
    let known = |name: &str| {
        source.contains(&format!("\"{name}\"")) || name.starts_with("headwater_process_")
    };

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            for name in metric_names(target["expr"].as_str().expect("expr")) {
                assert!(
                    known(&name),
                    "dashboard panel {} uses unknown metric {name}",
                    panel["title"]
                );
            }
        }
    }

    let rules = std::fs::read_to_string(root.join("config/prometheus-alerts.yml")).expect("rules");
    for name in metric_names(&rules) {
        assert!(known(&name), "alert rule uses unknown metric {name}");
    }
    let check = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(root.join("config/prometheus-alerts.yml"))
        .output()
        .expect("promtool is installed (scripts/test.sh installs the prometheus package)");
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(summary.contains("SUCCESS: 6 rules found"), "{summary}");
}

/// hls.js in headless Chromium with CMCD on: its session shows up in the QoE endpoint with a
/// startup time, and in the session gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_cmcd_session_reaches_the_qoe_endpoint() {
    require_tools();
    browser_dir();
    let _logs = Logs::capture();
    let metrics = headwater::observe::install_metrics().expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Duration::from_secs(3));
    config.cache.dir = dir.path().join("cache");
    let server = Server::start(config, Some(metrics)).await.expect("start");
    let _publisher = Publisher::start(server.rtmp_addr, "demo", 40);
    let http = client();
    let base = format!("http://{}", server.http_addr);
    wait_for("two segments", Duration::from_secs(30), || async {
        let (status, body) = get(&http, &format!("{base}/live/demo/source/index.m3u8")).await;
        (status == 200 && parse_media(&body).segments.len() >= 2).then_some(())
    })
    .await;
    let played = run_browser_script(
        "play_cmcd.mjs",
        vec![
            base.clone(),
            "/live/demo/index.m3u8".into(),
            "e2e-cmcd-session".into(),
            "4".into(),
        ],
    )
    .await;
    assert_eq!(
        played["errors"],
        serde_json::json!([]),
        "hls.js errors: {played}"
    );
    assert!(
        played["currentTime"].as_f64().unwrap_or(0.0) >= 4.0,
        "did not play 4 s: {played}"
    );
    assert!(
        played["cmcdRequests"].as_u64().unwrap_or(0) >= 3,
        "hls.js sent no CMCD: {played}"
    );

    let (status, body) = get(&http, &format!("{base}/api/v1/streams/demo/qoe")).await;
    assert_eq!(status, 200);
    let qoe: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(qoe["sessions"], 1, "{qoe}");
    let startup = qoe["startup_seconds"]["p50"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.0..20.0).contains(&startup) && qoe["startup_seconds"]["count"] == 1,
        "no startup time for the hls.js session: {qoe}"
    );
    assert!(
        !qoe["requested_bitrate_kbps"]
            .as_object()
            .expect("map")
            .is_empty(),
        "{qoe}"
    );
    let (_, text) = get(&http, &format!("{base}/metrics")).await;
    assert!(String::from_utf8_lossy(&text).contains("headwater_qoe_sessions{stream=\"demo\"} 1"));
    server.shutdown().await;
}

/// The real binary: `headwater serve --config FILE` starts, logs plain lines (no colour codes)
/// when stderr is not a terminal, and exits 0 on SIGTERM.
#[test]
fn the_binary_logs_plain_lines_to_a_pipe_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = headwater::config::DEFAULT_TOML.to_owned();
    for (from, to) in [
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\""),
        ("listen = \"127.0.0.1:1935\"", "listen = \"127.0.0.1:0\""),
        ("listen = \"127.0.0.1:9000\"", "listen = \"127.0.0.1:0\""),
    ] {
        assert!(text.contains(from), "{from} not in the shipped config");
        text = text.replacen(from, to, 1);
    }
    let data = dir.path().display().to_string();
    text = text
        .replacen(
            "dir = \"data/cache\"",
            &format!("dir = \"{data}/cache\""),
            1,
        )
        .replacen(
            "data_dir = \"data\"",
            &format!("data_dir = \"{data}/data\""),
            1,
        );
    let config = dir.path().join("headwater.toml");
    std::fs::write(&config, text).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_headwater"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn headwater");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen
        .iter()
        .any(|l: &String| l.contains("headwater origin listening"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no startup line within 20 s: {seen:?}");
            }
        }
    }
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    seen.extend(lines.try_iter());
    assert!(status.success(), "exit on SIGTERM: {status:?}; {seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in piped logs: {seen:?}"
    );
}
