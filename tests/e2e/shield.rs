//! Shield mode against a counting upstream: coalesced fills, playlist TTLs, disk recovery,
//! stale-if-error and upstream failures; and against a Headwater origin over HTTPS.

use crate::common::*;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use headwater::config::Config;
use headwater::Shield;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An upstream origin that counts requests per path, can be slowed down or made to fail.
#[derive(Clone, Default)]
struct Upstream {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    failing: Arc<AtomicBool>,
}

impl Upstream {
    fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn segment_bytes(n: u32) -> Vec<u8> {
    (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(n * 7) % 251) as u8)
        .collect()
}

async fn upstream_segment(State(up): State<Upstream>, Path(file): Path<String>) -> Response {
    *up.counts
        .lock()
        .expect("lock")
        .entry(format!("/live/s/v/{file}"))
        .or_default() += 1;
    tokio::time::sleep(Duration::from_millis(up.delay_ms.load(Ordering::SeqCst))).await;
    if up.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream broken").into_response();
    }
    if file == "index.m3u8" {
        let body = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\nseg-0.m4s\n";
        return (
            [
                (header::CACHE_CONTROL, "public, max-age=1"),
                (header::ETAG, "\"pl-1\""),
                (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            ],
            body,
        )
            .into_response();
    }
    let Some(n) = file
        .strip_prefix("seg-")
        .and_then(|f| f.strip_suffix(".m4s"))
        .and_then(|n| n.parse().ok())
    else {
        return (StatusCode::NOT_FOUND, "no such object").into_response();
    };
    (
        [
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::ETAG, "\"seg\""),
            (header::CONTENT_TYPE, "video/iso.segment"),
        ],
        segment_bytes(n),
    )
        .into_response()
}

async fn start_upstream(up: Upstream) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/live/s/v/{file}", route_get(upstream_segment))
        .with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

async fn start_shield(upstream: SocketAddr, dir: &std::path::Path) -> Shield {
    start_shield_for(&format!("http://{upstream}"), None, dir).await
}

async fn start_shield_for(
    upstream: &str,
    ca_file: Option<std::path::PathBuf>,
    dir: &std::path::Path,
) -> Shield {
    let mut config = Config::default();
    config.shield.upstream = upstream.to_owned();
    config.shield.upstream_ca_file = ca_file;
    config.shield.listen = "127.0.0.1:0".parse().expect("addr");
    config.shield.stale_if_error = Duration::from_secs(2);
    config.shield.retries = 1;
    config.shield.retry_backoff = Duration::from_millis(10);
    config.cache.memory = bytesize::ByteSize::mib(16);
    config.cache.disk = bytesize::ByteSize::mib(256);
    config.cache.dir = dir.to_path_buf();
    config.validate().expect("valid");
    Shield::start(&config, None).await.expect("shield starts")
}

fn x_cache(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

/// `n` HTTP/2 connections (prior knowledge), for many streams in flight at once.
fn h2_clients(n: usize) -> Vec<reqwest::Client> {
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .expect("client")
        })
        .collect()
}

/// Sends every URL at once, spread over `clients`; returns each status, X-Cache and body (empty
/// unless `bodies`: an unread body is cancelled, which keeps bursts of large objects cheap).
async fn all_at_once(
    clients: &[reqwest::Client],
    urls: impl IntoIterator<Item = String>,
    bodies: bool,
) -> Vec<(reqwest::StatusCode, String, bytes::Bytes)> {
    let requests: Vec<_> = urls
        .into_iter()
        .enumerate()
        .map(|(i, url)| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let response = client.get(url).send().await.expect("request");
                let status = response.status();
                let cache = x_cache(&response);
                let body = if bodies {
                    response.bytes().await.expect("body")
                } else {
                    bytes::Bytes::new()
                };
                (status, cache, body)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.expect("task"));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_upstream_request() {
    let up = Upstream::default();
    up.delay_ms.store(300, Ordering::SeqCst);
    let (addr, _task) = start_upstream(up.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shield = start_shield(addr, dir.path()).await;
    let url = format!("http://{}/live/s/v/seg-7.m4s", shield.http_addr);
    // 10 HTTP/2 connections x 100 streams: a thousand requests in flight at once.
    let clients = h2_clients(10);
    let urls = (0..1000).map(|i| format!("{url}?CMCD=sid%3D%22viewer-{i}%22"));
    let expected = segment_bytes(7);
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for (status, cache, body) in all_at_once(&clients, urls, true).await {
        assert_eq!(status, 200);
        assert!(body == expected, "body differs from upstream");
        *outcomes.entry(cache).or_default() += 1;
    }
    assert_eq!(
        up.count("/live/s/v/seg-7.m4s"),
        1,
        "upstream saw more than one request: {outcomes:?}"
    );
    assert_eq!(outcomes.get("MISS"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.values().sum::<usize>(), 1000);
    let again = reqwest::get(&url).await.expect("get");
    assert_eq!(x_cache(&again), "HIT");
    assert!(again.headers().contains_key("age"));
    assert_eq!(
        again.headers()["etag"],
        "\"seg\"",
        "the upstream's ETag is passed on"
    );
    assert_eq!(
        again.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    shield.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_expiry_makes_one_request_per_ttl() {
    let up = Upstream::default();
    up.delay_ms.store(50, Ordering::SeqCst);
    let (addr, _task) = start_upstream(up.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shield = start_shield(addr, dir.path()).await;
    let url = format!("http://{}/live/s/v/index.m3u8", shield.http_addr);
    let path = "/live/s/v/index.m3u8";
    let http = client();
    let first = http.get(&url).send().await.expect("get");
    assert_eq!(x_cache(&first), "MISS");
    let filled_at = Instant::now();
    assert_eq!(up.count(path), 1);

    // 200 clients ask right after the cached copy (max-age=1) expires.
    tokio::time::sleep(Duration::from_millis(1050).saturating_sub(filled_at.elapsed())).await;
    let answers = all_at_once(std::slice::from_ref(&http), vec![url.clone(); 200], false).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(
        up.count(path),
        2,
        "200 clients at the TTL boundary caused more than one upstream request"
    );

    // Steady polling by 20 players for 3 s: at most one upstream request per 1 s window.
    let before = up.count(path);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let mut polls = Vec::new();
        for _ in 0..20 {
            polls.push(http.get(&url).send());
        }
        for poll in polls {
            assert_eq!(poll.await.expect("poll").status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = up.count(path) - before;
    assert!(
        (2..=4).contains(&during),
        "{during} upstream requests in 3 s of polling with a 1 s TTL"
    );
    shield.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shield_serves_from_disk() {
    let up = Upstream::default();
    let (addr, _task) = start_upstream(up.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shield = start_shield(addr, dir.path()).await;
    let http = client();
    // 30 x 1 MB through a 16 MiB memory tier: most are evicted to disk.
    for n in 0..30 {
        let (status, body) = get(
            &http,
            &format!("http://{}/live/s/v/seg-{n}.m4s", shield.http_addr),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 1_000_000);
    }
    shield.shutdown().await;
    let restarted = start_shield(addr, dir.path()).await;
    let mut tiers: HashMap<String, usize> = HashMap::new();
    for n in 0..30 {
        let response = http
            .get(format!(
                "http://{}/live/s/v/seg-{n}.m4s",
                restarted.http_addr
            ))
            .send()
            .await
            .expect("get");
        *tiers.entry(x_cache(&response)).or_default() += 1;
        assert!(response.bytes().await.expect("body") == segment_bytes(n));
        assert_eq!(
            up.count(&format!("/live/s/v/seg-{n}.m4s")),
            1,
            "segment {n} was fetched again after the restart"
        );
    }
    assert_eq!(tiers.get("HIT"), Some(&30), "{tiers:?}");
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_serves_stale_then_errors_and_keeps_segments() {
    let up = Upstream::default();
    let (addr, _task) = start_upstream(up.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shield = start_shield(addr, dir.path()).await;
    let base = format!("http://{}/live/s/v", shield.http_addr);
    let http = client();
    assert_eq!(get(&http, &format!("{base}/index.m3u8")).await.0, 200);
    assert_eq!(get(&http, &format!("{base}/seg-1.m4s")).await.0, 200);
    let missing = http
        .get(format!("{base}/nothing-here.m4s"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let missing_again = http
        .get(format!("{base}/nothing-here.m4s"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        (
            missing_again.status().as_u16(),
            x_cache(&missing_again).as_str()
        ),
        (404, "HIT"),
        "404 cached briefly"
    );

    up.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past its 1 s lifetime, within the 2 s stale-if-error bound: the stale copy.
    let stale = http
        .get(format!("{base}/index.m3u8"))
        .send()
        .await
        .expect("get");
    assert_eq!(stale.status(), 200);
    assert_eq!(x_cache(&stale), "STALE");
    assert!(
        stale
            .text()
            .await
            .expect("body")
            .contains("#EXT-X-TARGETDURATION:2"),
        "stale body is the playlist, not an error"
    );
    // Cached segments keep being served.
    let segment = http
        .get(format!("{base}/seg-1.m4s"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        (segment.status().as_u16(), x_cache(&segment).as_str()),
        (200, "HIT")
    );
    // Past the bound: a clear 502, never the upstream's error body as content.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let failed = http
        .get(format!("{base}/index.m3u8"))
        .send()
        .await
        .expect("get");
    assert_eq!(failed.status(), 502);
    assert_eq!(failed.headers()["cache-control"], "no-store");
    assert!(failed
        .text()
        .await
        .expect("body")
        .starts_with("upstream error"));
    let uncached = http
        .get(format!("{base}/seg-2.m4s"))
        .send()
        .await
        .expect("get");
    assert_eq!(uncached.status(), 502);

    // The upstream recovers: after the breaker's cool-down, content flows again and the error was not cached.
    up.failing.store(false, Ordering::SeqCst);
    wait_for("the shield to recover", Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{base}/seg-2.m4s");
        async move { (get(&http, &url).await.0 == 200).then_some(()) }
    })
    .await;
    shield.shutdown().await;
}

/// With an upstream that answers at once, a burst must still make one request per object: a
/// fill that completes between a request's cache lookup and its joining the fill is not redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_upstream_still_gets_one_request_per_object() {
    let up = Upstream::default();
    let (addr, _task) = start_upstream(up.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shield = start_shield(addr, dir.path()).await;
    let clients = h2_clients(10);
    for n in 100..105u32 {
        let url = format!("http://{}/live/s/v/seg-{n}.m4s", shield.http_addr);
        let answers = all_at_once(&clients, vec![url; 1000], false).await;
        assert!(answers.iter().all(|(status, _, _)| *status == 200));
        assert_eq!(
            up.count(&format!("/live/s/v/seg-{n}.m4s")),
            1,
            "burst {n} made more than one upstream request"
        );
    }
    shield.shutdown().await;
}

/// A shield in front of a Headwater origin over HTTPS: it pulls the live playlist and a
/// segment when it trusts the origin's certificate (`upstream_ca_file`), and answers 502 with
/// the certificate failure logged when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    require_tools();
    let logs = Logs::capture();
    let certs = tempfile::tempdir().expect("tempdir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("key");
    std::fs::write(&cert, generated.cert.pem()).expect("cert");
    let mut config = test_config(Duration::from_secs(2));
    config.tls.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key);
    config.tls.http3 = false;
    config.validate().expect("valid");
    let origin = headwater::Server::start(config, None)
        .await
        .expect("origin");
    let https = format!("https://{}", origin.secure.as_ref().expect("tls").tcp_addr);
    let publisher = Publisher::start(origin.rtmp_addr, "demo", 6);
    let http = client();
    let media = "/live/demo/source/index.m3u8";
    let playlist = wait_for(
        "a segment on the origin",
        Duration::from_secs(20),
        || async {
            let (status, body) = get(&http, &format!("http://{}{media}", origin.http_addr)).await;
            let playlist = (status == 200).then(|| parse_media(&body))?;
            (!playlist.segments.is_empty()).then_some(playlist)
        },
    )
    .await;
    let segment = format!("/live/demo/source/{}", playlist.segments[0].uri);
    let (_, direct) = get(&http, &format!("http://{}{segment}", origin.http_addr)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = start_shield_for(&https, Some(cert), dir.path()).await;
    let (status, body) = get(&http, &format!("http://{}{segment}", trusted.http_addr)).await;
    assert_eq!(status, 200, "segment through the trusting shield");
    assert_eq!(body, direct, "the shield's copy differs from the origin's");
    let (status, body) = get(&http, &format!("http://{}{media}", trusted.http_addr)).await;
    assert_eq!(status, 200, "playlist through the trusting shield");
    assert!(parse_media(&body).segments.len() >= playlist.segments.len());

    let other = tempfile::tempdir().expect("tempdir");
    let untrusting = start_shield_for(&https, None, other.path()).await;
    let (status, _) = get(&http, &format!("http://{}{segment}", untrusting.http_addr)).await;
    assert_eq!(status, 502, "an unverified upstream was used");
    assert!(
        logs.text().contains("UnknownIssuer"),
        "the certificate failure is not in the log"
    );
    let (status, _) = publisher.wait(Duration::from_secs(20));
    assert!(status.success(), "publisher failed");
    untrusting.shutdown().await;
    trusted.shutdown().await;
    origin.shutdown().await;
}
