//! The JSON API against a real SQLite file and real ffmpeg publishers: keys -> publish ->
//! streams -> edit -> revoke (publisher cut) -> restart; exact errors; the OpenAPI document;
//! webhooks.

use crate::common::*;
use headwater::config::Config;
use headwater::names::StreamName;
use headwater::stream::PublisherState;
use headwater::Server;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";

fn api_config(data_dir: &std::path::Path) -> Config {
    let mut config = test_config(Duration::from_secs(2));
    config.api.data_dir = data_dir.to_path_buf();
    config.api.admin_token = Some(TOKEN.into());
    config.cache.dir = data_dir.join("cache");
    config
}

/// Sends a request; returns status and the JSON body (Null when empty or not JSON).
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = http.request(method.parse().expect("method"), url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_publish_edit_revoke_and_restart_against_sqlite() {
    require_tools();
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(api_config(dir.path()), None)
        .await
        .expect("start");
    let api = format!("http://{}/api/v1", server.http_addr);
    let http = client();

    let (status, key) = call(
        &http,
        "POST",
        &format!("{api}/keys"),
        Some(TOKEN),
        Some(json!({"stream": "show"}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let (id, secret) = (
        key["id"].as_str().expect("id"),
        key["key"].as_str().expect("key"),
    );
    assert_eq!(key["stream"], "show");
    let (status, keys) = call(&http, "GET", &format!("{api}/keys"), Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(keys["keys"][0]["id"], id);
    assert!(
        keys.to_string().find(secret).is_none(),
        "GET /keys must never show a secret"
    );
    // A second key survives the restart (the first is revoked below).
    let (status, kept) = call(
        &http,
        "POST",
        &format!("{api}/keys"),
        Some(TOKEN),
        Some(json!({"stream": "other"}).to_string()),
    )
    .await;
    assert_eq!(status, 201);

    // Publish with the new key: the stream shows up with renditions and started_at.
    let publisher = Publisher::start(server.rtmp_addr, secret, 60);
    let listed = wait_for(
        "the stream listed with renditions",
        Duration::from_secs(20),
        || async {
            let (status, list) = call(&http, "GET", &format!("{api}/streams"), None, None).await;
            assert_eq!(status, 200);
            find(&list, "show")
                .filter(|s| {
                    s["status"] == "live" && !s["renditions"].as_array().is_some_and(Vec::is_empty)
                })
                .cloned()
        },
    )
    .await;
    assert!(
        listed["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{listed}"
    );
    let source = &listed["renditions"][0];
    assert_eq!(
        (
            source["name"].as_str(),
            source["width"].as_u64(),
            source["height"].as_u64()
        ),
        (Some("source"), Some(640), Some(360)),
        "{listed}"
    );
    assert!(
        source["bandwidth_bps"]
            .as_u64()
            .is_some_and(|b| b > 100_000),
        "{listed}"
    );
    assert_eq!(listed["playback"]["hls"], "/live/show/index.m3u8");
    // A player fetching the playlist counts as a viewer; ingest rates get measured.
    let (status, _) = get(
        &http,
        &format!("http://{}/live/show/index.m3u8", server.http_addr),
    )
    .await;
    assert_eq!(status, 200);
    let detail = wait_for(
        "ingest rates and a viewer",
        Duration::from_secs(10),
        || async {
            let (_, detail) = call(&http, "GET", &format!("{api}/streams/show"), None, None).await;
            (detail["ingest"]["bitrate_bps"]
                .as_u64()
                .is_some_and(|b| b > 100_000)
                && detail["viewers"]["http"] == 1)
                .then_some(detail)
        },
    )
    .await;
    assert!(
        detail["ingest"]["fps"]
            .as_f64()
            .is_some_and(|f| (20.0..40.0).contains(&f)),
        "{detail}"
    );
    assert_eq!(
        detail["sessions"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );

    let (status, patched) = call(
        &http,
        "PATCH",
        &format!("{api}/streams/show"),
        Some(TOKEN),
        Some(json!({"title": "Evening show", "tags": ["music", "live"]}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["title"], "Evening show");
    let (_, tagged) = call(
        &http,
        "GET",
        &format!("{api}/streams?tag=music"),
        None,
        None,
    )
    .await;
    assert_eq!(
        tagged["streams"].as_array().map(Vec::len),
        Some(1),
        "{tagged}"
    );
    assert_eq!(tagged["streams"][0]["tags"], json!(["live", "music"]));

    // Revoke: the live publisher is cut within a second, and the key no longer publishes.
    let show = StreamName::parse("show").expect("name");
    assert_eq!(server.registry.state(&show), Some(PublisherState::Live));
    let revoked = Instant::now();
    let (status, _) = call(
        &http,
        "DELETE",
        &format!("{api}/keys/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    wait_for(
        "the publisher to be cut",
        Duration::from_secs(1),
        || async { (server.registry.state(&show) != Some(PublisherState::Live)).then_some(()) },
    )
    .await;
    let (exit, _) = publisher.wait(Duration::from_secs(10));
    assert!(!exit.success(), "ffmpeg should fail when cut");
    eprintln!("publisher cut {:?} after the revoke", revoked.elapsed());
    let (exit, stderr) =
        Publisher::start(server.rtmp_addr, secret, 5).wait(Duration::from_secs(10));
    assert!(!exit.success(), "a revoked key must not publish: {stderr}");
    assert_ne!(server.registry.state(&show), Some(PublisherState::Live));
    let (status, again) = call(
        &http,
        "DELETE",
        &format!("{api}/keys/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, again["error"].as_str()), (409, Some("conflict")));
    wait_for("the stream to end", Duration::from_secs(10), || async {
        let (_, detail) = call(&http, "GET", &format!("{api}/streams/show"), None, None).await;
        (detail["status"] == "ended").then_some(())
    })
    .await;
    server.shutdown().await;

    // Restart on the same data directory: keys and history are still there.
    let server = Server::start(api_config(dir.path()), None)
        .await
        .expect("restart");
    let api = format!("http://{}/api/v1", server.http_addr);
    let (_, keys) = call(&http, "GET", &format!("{api}/keys"), Some(TOKEN), None).await;
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids, [kept["id"].as_str().expect("id")]);
    let (_, detail) = call(&http, "GET", &format!("{api}/streams/show"), None, None).await;
    assert_eq!(
        (detail["status"].as_str(), detail["title"].as_str()),
        (Some("ended"), Some("Evening show")),
        "{detail}"
    );
    assert!(detail["sessions"][0]["ended_at"].is_string(), "{detail}");
    assert_eq!(detail["started_at"], listed["started_at"]);
    // The kept key publishes after the restart.
    let publisher = Publisher::start(server.rtmp_addr, kept["key"].as_str().expect("key"), 30);
    let other = StreamName::parse("other").expect("name");
    wait_for(
        "the kept key to publish",
        Duration::from_secs(15),
        || async { (server.registry.state(&other) == Some(PublisherState::Live)).then_some(()) },
    )
    .await;
    drop(publisher);
    server.shutdown().await;
}

/// `(method, path, token, body, status, error code, part of the message)`.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<String>,
    u16,
    &'a str,
    &'a str,
);

/// Bad input of every kind -> exact status, error code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_exact_statuses_and_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(api_config(dir.path()), None)
        .await
        .expect("start");
    let api = format!("http://{}/api/v1", server.http_addr);
    let http = client();
    let big = format!("{{\"stream\": \"{}\"}}", "a".repeat(70 * 1024));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/keys".into(),
            None,
            Some("{}".into()),
            401,
            "unauthorized",
            "missing Authorization",
        ),
        (
            "POST",
            "/keys".into(),
            Some("wrong-token-0123456789"),
            Some("{}".into()),
            403,
            "forbidden",
            "invalid admin token",
        ),
        (
            "GET",
            "/keys".into(),
            None,
            None,
            401,
            "unauthorized",
            "missing Authorization",
        ),
        (
            "DELETE",
            "/keys/key_x".into(),
            Some("nope"),
            None,
            403,
            "forbidden",
            "invalid admin token",
        ),
        (
            "PATCH",
            "/streams/demo".into(),
            None,
            Some("{}".into()),
            401,
            "unauthorized",
            "missing",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some("{\"stream\": ".into()),
            400,
            "bad_request",
            "malformed JSON",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some("{\"stream\": \"a\", \"owner\": 1}".into()),
            400,
            "bad_request",
            "unknown field `owner`",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some("{}".into()),
            400,
            "bad_request",
            "missing field `stream`",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some("{\"stream\": \"no spaces\"}".into()),
            400,
            "bad_request",
            "stream: stream name \"no spaces\"",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some("{\"stream\": 5}".into()),
            400,
            "bad_request",
            "invalid type",
        ),
        (
            "POST",
            "/keys".into(),
            Some(TOKEN),
            Some(big),
            413,
            "payload_too_large",
            "larger than 65536 bytes",
        ),
        (
            "PATCH",
            "/streams/demo".into(),
            Some(TOKEN),
            Some("{\"title\": 5}".into()),
            400,
            "bad_request",
            "invalid type",
        ),
        (
            "PATCH",
            "/streams/demo".into(),
            Some(TOKEN),
            Some("{\"tags\": [\"UPPER\"]}".into()),
            400,
            "bad_request",
            "tags[0]",
        ),
        (
            "PATCH",
            "/streams/nobody".into(),
            Some(TOKEN),
            Some("{\"title\": \"x\"}".into()),
            404,
            "not_found",
            "no stream nobody",
        ),
        (
            "DELETE",
            "/keys/key_missing".into(),
            Some(TOKEN),
            None,
            404,
            "not_found",
            "no key key_missing",
        ),
        (
            "GET",
            "/streams?cursor=zzz".into(),
            None,
            None,
            400,
            "bad_request",
            "cursor: not a cursor",
        ),
        (
            "GET",
            "/streams?cursor=76313a313a".into(),
            None,
            None,
            400,
            "bad_request",
            "cursor: not a cursor",
        ),
        (
            "GET",
            "/streams?limit=0".into(),
            None,
            None,
            400,
            "bad_request",
            "limit: must be a number from 1 to 200",
        ),
        (
            "GET",
            "/streams?limit=abc".into(),
            None,
            None,
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/streams?status=paused".into(),
            None,
            None,
            400,
            "bad_request",
            "status: \"paused\"",
        ),
        (
            "GET",
            "/streams?sort=name".into(),
            None,
            None,
            400,
            "bad_request",
            "unknown field `sort`",
        ),
        (
            "GET",
            "/streams/bad%20name".into(),
            None,
            None,
            400,
            "bad_request",
            "name:",
        ),
        (
            "GET",
            "/streams/unknown".into(),
            None,
            None,
            404,
            "not_found",
            "no stream unknown",
        ),
        (
            "POST",
            "/streams/demo/beacon".into(),
            None,
            Some("{\"session\": \"s1\"}".into()),
            404,
            "not_found",
            "not live",
        ),
        (
            "POST",
            "/streams/demo/beacon".into(),
            None,
            Some("{\"session\": \"\"}".into()),
            400,
            "bad_request",
            "session",
        ),
    ];
    for (method, path, token, body, status, code, message) in cases {
        let (got, value) = call(&http, method, &format!("{api}{path}"), token, body).await;
        assert_eq!(got, status, "{method} {path}: {value}");
        assert_eq!(value["error"], code, "{method} {path}: {value}");
        let text = value["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{method} {path}: {text:?} lacks {message:?}"
        );
        assert_eq!(value.as_object().map(|o| o.len()), Some(2), "{value}");
    }
    // Not JSON at all: 415.
    let response = http
        .post(format!("{api}/keys"))
        .bearer_auth(TOKEN)
        .body("stream=a")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 415);
    // The config key's stream exists (offline) and can be edited before its first publish.
    let (status, demo) = call(
        &http,
        "PATCH",
        &format!("{api}/streams/demo"),
        Some(TOKEN),
        Some("{\"description\": \"d\"}".into()),
    )
    .await;
    assert_eq!(
        (
            status,
            demo["status"].as_str(),
            demo["description"].as_str()
        ),
        (200, Some("offline"), Some("d")),
        "{demo}"
    );
    server.shutdown().await;

    // Rate limit per client: burst 5 at 1/s.
    let mut config = test_config(Duration::from_secs(2));
    config.api.rate_limit = 1;
    config.api.rate_burst = 5;
    let server = Server::start(config, None).await.expect("start");
    let url = format!("http://{}/api/v1/streams", server.http_addr);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(call(&http, "GET", &url, None, None).await);
    }
    assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
    let (status, body) = &statuses[7];
    assert_eq!(
        (*status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_parses_and_lists_every_route() {
    let server = Server::start(test_config(Duration::from_secs(2)), None)
        .await
        .expect("start");
    let base = format!("http://{}", server.http_addr);
    let http = client();
    let (status, doc) = call(
        &http,
        "GET",
        &format!("{base}/api/v1/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let routes = [
        ("get", "/api/v1/streams"),
        ("get", "/api/v1/streams/{name}"),
        ("patch", "/api/v1/streams/{name}"),
        ("post", "/api/v1/streams/{name}/beacon"),
        ("get", "/api/v1/streams/{name}/qoe"),
        ("get", "/api/v1/keys"),
        ("post", "/api/v1/keys"),
        ("delete", "/api/v1/keys/{id}"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/streams/{name}/chat"),
        ("get", "/api/v1/streams/{name}/chat/history"),
        ("delete", "/api/v1/streams/{name}/chat/messages/{id}"),
        ("put", "/api/v1/streams/{name}/chat/bans/{display}"),
        ("delete", "/api/v1/streams/{name}/chat/bans/{display}"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut listed = 0;
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            assert!(
                routes.contains(&(method.as_str(), path.as_str())),
                "documented but not a route: {method} {path}"
            );
            listed += 1;
        }
    }
    assert_eq!(listed, routes.len(), "every route is documented");
    // Each documented route is served (never the 404 fallback text or 405).
    for (method, path) in routes {
        let url = format!(
            "{base}{}",
            path.replace("{name}", "demo")
                .replace("{id}", "key_x")
                .replace("{display}", "someone")
        );
        let response = http
            .request(method.to_uppercase().parse().expect("method"), &url)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404 || body.starts_with('{'),
            "{method} {path}: {status} {body}"
        );
        // Every schema reference resolves.
    }
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().expect("ref");
        let name = target
            .strip_prefix("#/components/schemas/")
            .expect("local schema ref");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {target}"
        );
    }
    server.shutdown().await;
}

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail` deliveries, then 200;
/// `hang` never answers. Records (headers, body) of every delivery.
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

async fn receiver(fail: usize, hang: bool) -> Receiver {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let recorded = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let recorded = recorded.clone();
            async move {
                let count = {
                    let mut seen = recorded.lock().expect("lock");
                    seen.push((headers, body));
                    seen.len()
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if count <= fail {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, seen }
}

const SECRET: &str = "webhook-secret-0123456789";

fn webhook_config(url: &str) -> Config {
    let mut config = test_config(Duration::from_secs(1));
    config.api.webhooks.urls = vec![url.to_owned()];
    config.api.webhooks.secret = Some(SECRET.into());
    config.api.webhooks.retries = 4;
    config.api.webhooks.backoff = Duration::from_millis(50);
    config.api.webhooks.timeout = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_after_retries() {
    require_tools();
    let hook = receiver(2, false).await;
    let server = Server::start(webhook_config(&hook.url), None)
        .await
        .expect("start");
    // A wrong key: stream.key_rejected; then a publish: stream.started (the receiver fails the
    // first two deliveries, the retries get it through), then stream.ended.
    let (exit, _) =
        Publisher::start(server.rtmp_addr, "wrong-key", 2).wait(Duration::from_secs(10));
    assert!(!exit.success());
    let (exit, _) = Publisher::start(server.rtmp_addr, "demo", 3).wait(Duration::from_secs(20));
    assert!(exit.success());
    let events = wait_for(
        "three events delivered",
        Duration::from_secs(20),
        || async {
            let seen = hook.seen.lock().expect("lock");
            let bodies: Vec<Value> = seen
                .iter()
                .map(|(_, b)| serde_json::from_str(b).expect("JSON body"))
                .collect();
            (bodies
                .iter()
                .filter(|b| b["type"] == "stream.ended")
                .count()
                == 1)
                .then_some(bodies)
        },
    )
    .await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    // Two failed attempts of the first event, then each event once.
    assert_eq!(
        types,
        [
            "stream.key_rejected",
            "stream.key_rejected",
            "stream.key_rejected",
            "stream.started",
            "stream.ended"
        ],
        "{events:?}"
    );
    assert_eq!(events[3]["stream"], "demo");
    for (headers, body) in hook.seen.lock().expect("lock").iter() {
        let signature = headers["x-headwater-signature"].to_str().expect("header");
        assert_eq!(
            signature,
            headwater::api::webhooks::sign(SECRET.as_bytes(), body.as_bytes())
        );
    }
    server.shutdown().await;
}

/// Time from starting ffmpeg to the first segment in the playlist.
async fn first_segment_after_publish(server: &Server) -> Duration {
    let http = client();
    let started = Instant::now();
    let _publisher = Publisher::start(server.rtmp_addr, "demo", 10);
    let url = format!("http://{}/live/demo/source/index.m3u8", server.http_addr);
    wait_for("the first segment", Duration::from_secs(20), || async {
        let (status, body) = get(&http, &url).await;
        (status == 200 && !parse_media(&body).segments.is_empty()).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_receiver_does_not_delay_stream_start() {
    require_tools();
    let server = Server::start(test_config(Duration::from_secs(1)), None)
        .await
        .expect("start");
    let baseline = first_segment_after_publish(&server).await;
    server.shutdown().await;
    let hook = receiver(0, true).await;
    let server = Server::start(webhook_config(&hook.url), None)
        .await
        .expect("start");
    let with_hook = first_segment_after_publish(&server).await;
    assert!(
        !hook.seen.lock().expect("lock").is_empty(),
        "stream.started was being delivered"
    );
    eprintln!("publish to first segment: {baseline:?} without webhooks, {with_hook:?} with a hanging receiver");
    assert!(
        with_hook < baseline + Duration::from_millis(1000),
        "{with_hook:?} with a hanging receiver vs {baseline:?}"
    );
    server.shutdown().await;
}

/// A live stream gets a thumbnail: its URL in the API, a 320x180 JPEG (from a 640x360 source)
/// that is renewed after 10 s of media, served with a short lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_has_a_thumbnail_that_is_renewed() {
    require_tools();
    let _logs = Logs::capture();
    let server = Server::start(test_config(Duration::from_secs(2)), None)
        .await
        .expect("start");
    let base = format!("http://{}", server.http_addr);
    let http = client();
    let publisher = Publisher::start(server.rtmp_addr, "demo", 14);
    let url = wait_for(
        "a thumbnail URL in the API",
        Duration::from_secs(20),
        || async {
            let (status, stream) = call(
                &http,
                "GET",
                &format!("{base}/api/v1/streams/demo"),
                None,
                None,
            )
            .await;
            (status == 200)
                .then(|| stream["thumbnail_url"].as_str().map(str::to_owned))
                .flatten()
        },
    )
    .await;
    assert_eq!(url, "/live/demo/thumbnail.jpg");
    let fetch = || async {
        let response = http.get(format!("{base}{url}")).send().await.expect("get");
        assert_eq!(response.status(), 200);
        let header = |name| response.headers()[name].to_str().expect("ascii").to_owned();
        let (kind, cache, etag) = (
            header("content-type"),
            header("cache-control"),
            header("etag"),
        );
        (kind, cache, etag, response.bytes().await.expect("body"))
    };
    let (kind, cache, first_etag, jpeg) = fetch().await;
    assert_eq!(kind, "image/jpeg");
    assert_eq!(
        cache, "public, max-age=1",
        "a thumbnail lives like a playlist"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("thumb.jpg");
    std::fs::write(&file, &jpeg).expect("write");
    let probed = ffprobe(
        &file,
        &[
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ],
    );
    assert_eq!(probed.trim(), "mjpeg,320,180");
    // The next one comes at the first keyframe after 10 s of media (GOP 2 s).
    wait_for("a renewed thumbnail", Duration::from_secs(20), || async {
        let (_, _, etag, _) = fetch().await;
        (etag != first_etag).then_some(())
    })
    .await;
    let (status, _) = publisher.wait(Duration::from_secs(30));
    assert!(status.success());
    server.shutdown().await;
}
