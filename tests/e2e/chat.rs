//! Live chat over WebSocket (issue 7) with real tokio-tungstenite clients: ordering, stream
//! time against the playlists' PROGRAM-DATE-TIME, history, moderation, bad frames, a flooding
//! client and a client that never reads.

use crate::common::{client, get, parse_media, test_config, wait_for, Publisher, TARGET};
use futures_util::{SinkExt, StreamExt};
use headwater::config::Config;
use headwater::Server;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOKEN: &str = "test-admin-token-0123456789";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn chat_config() -> Config {
    let mut config = test_config(Duration::from_secs(2));
    config.api.admin_token = Some(TOKEN.into());
    config.chat.rate_limit = 50;
    config.chat.rate_burst = 50;
    config.validate().expect("chat test config");
    config
}

fn chat_url(addr: SocketAddr, stream: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("ws://{addr}/api/v1/streams/{stream}/chat?name={name}"),
        None => format!("ws://{addr}/api/v1/streams/{stream}/chat"),
    }
}

async fn connect(addr: SocketAddr, stream: &str, name: Option<&str>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(chat_url(addr, stream, name))
        .await
        .expect("websocket connect");
    let joined = next(&mut ws).await;
    assert_eq!(joined["type"], "joined", "first frame: {joined}");
    (ws, joined)
}

/// The next JSON frame (pings are answered by the client library).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the error frames and the close code.
async fn until_closed(ws: &mut Ws) -> (Vec<Value>, Option<CloseCode>) {
    let mut errors = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server closes within 10 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] == "error" {
                    errors.push(value);
                }
            }
            Some(Ok(Message::Close(frame))) => return (errors, frame.map(|f| f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (errors, None),
        }
    }
}

async fn say(ws: &mut Ws, text: &str) {
    ws.send(Message::text(
        json!({"type": "message", "text": text}).to_string(),
    ))
    .await
    .expect("send");
}

async fn next_message(ws: &mut Ws) -> Value {
    let frame = next(ws).await;
    assert_eq!(frame["type"], "message", "expected a message, got {frame}");
    frame
}

async fn history(http: &reqwest::Client, addr: SocketAddr, query: &str) -> Value {
    let (status, body) = get(
        http,
        &format!("http://{addr}/api/v1/streams/demo/chat/history{query}"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("history JSON")
}

fn ids(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_stream_time_history_moderation_and_bad_frames() {
    crate::common::require_tools();
    let server = Server::start(chat_config(), None).await.expect("start");
    let addr = server.http_addr;
    let http = client();
    let _publisher = Publisher::start(server.rtmp_addr, "demo", 40);
    let playlist_url = format!("http://{addr}/live/demo/source/index.m3u8");
    let first_pdt = wait_for("the first segment", Duration::from_secs(20), || async {
        let (status, body) = get(&http, &playlist_url).await;
        if status != 200 {
            return None;
        }
        let playlist = parse_media(&body);
        assert_eq!(
            playlist.media_sequence, 0,
            "the test reads the first segment"
        );
        playlist.segments.first()?.program_date_time
    })
    .await;

    let (mut alice, joined) = connect(addr, "demo", Some("alice")).await;
    assert_eq!(joined["can_post"], true);
    assert_eq!(joined["messages"], json!([]));
    let (mut bob, _) = connect(addr, "demo", Some("bob")).await;
    let (mut reader, joined) = connect(addr, "demo", None).await;
    assert_eq!(joined["can_post"], false);

    // Ordered delivery to both clients; stream time monotonic and on the playlist clock.
    let mut sent = Vec::new();
    for i in 0..5 {
        say(&mut alice, &format!("hello {i}")).await;
        sent.push(format!("hello {i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut last_time = 0.0;
    let mut last_id = 0;
    let mut received = Vec::new();
    for expected in &sent {
        let at_bob = next_message(&mut bob).await;
        let at_alice = next_message(&mut alice).await;
        assert_eq!(at_bob, at_alice);
        assert_eq!(&at_bob["text"], expected);
        assert_eq!(at_bob["name"], "alice");
        let id = at_bob["id"].as_i64().expect("id");
        assert!(id > last_id, "ids increase");
        last_id = id;
        let stream_time = at_bob["stream_time"]
            .as_f64()
            .expect("stream_time while live");
        assert!(stream_time >= last_time, "stream_time is monotonic");
        last_time = stream_time;
        let ts = at_bob["ts"].as_i64().expect("ts");
        let on_playlist_clock = (ts - first_pdt.timestamp_millis()) as f64 / 1000.0;
        assert!(
            (stream_time - on_playlist_clock).abs() < 1.0,
            "stream_time {stream_time} vs PROGRAM-DATE-TIME clock {on_playlist_clock}"
        );
        received.push(at_bob);
    }
    assert!(
        last_time > TARGET.as_secs_f64() * 0.5,
        "the stream has run a while"
    );
    for _ in 0..5 {
        next_message(&mut reader).await;
    }

    // A read-only connection may not post; bad frames get clear errors and keep the connection.
    say(&mut reader, "hi").await;
    assert_eq!(next(&mut reader).await["code"], "read_only");
    for bad in [
        Message::binary(vec![1, 2, 3]),
        Message::text("{not json"),
        Message::text(r#"{"type":"dance"}"#),
    ] {
        bob.send(bad).await.expect("send");
        let error = next(&mut bob).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "bad_frame", "{error}");
    }

    // History: pages newest first, and survives a reconnect.
    let want: Vec<i64> = received
        .iter()
        .rev()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    wait_for("history to be written", Duration::from_secs(5), || async {
        (ids(&history(&http, addr, "").await["messages"]) == want).then_some(())
    })
    .await;
    let page = history(&http, addr, "?limit=2").await;
    assert_eq!(ids(&page["messages"]), want[..2]);
    let before = page["next_before"].as_i64().expect("next_before");
    let page = history(&http, addr, &format!("?limit=2&before={before}")).await;
    assert_eq!(ids(&page["messages"]), want[2..4]);
    let before = page["next_before"].as_i64().expect("next_before");
    let page = history(&http, addr, &format!("?limit=2&before={before}")).await;
    assert_eq!(ids(&page["messages"]), want[4..]);
    assert_eq!(page["next_before"], Value::Null);
    drop(bob);
    let (mut bob, joined) = connect(addr, "demo", Some("bob")).await;
    let oldest_first: Vec<i64> = want.iter().rev().copied().collect();
    assert_eq!(ids(&joined["messages"]), oldest_first);

    // Moderation: delete (broadcast, gone from history), then ban.
    let doomed = want[2];
    let url = format!("http://{addr}/api/v1/streams/demo/chat/messages/{doomed}");
    let status = http.delete(&url).send().await.expect("delete").status();
    assert_eq!(status, 401, "deleting needs the admin token");
    let status = http
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete")
        .status();
    assert_eq!(status, 204);
    for ws in [&mut alice, &mut bob, &mut reader] {
        assert_eq!(next(ws).await, json!({"type": "deleted", "id": doomed}));
    }
    let remaining = ids(&history(&http, addr, "").await["messages"]);
    assert!(
        !remaining.contains(&doomed) && remaining.len() == 4,
        "{remaining:?}"
    );
    let status = http
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete")
        .status();
    assert_eq!(status, 404);
    let (_, joined) = connect(addr, "demo", None).await;
    assert!(!ids(&joined["messages"]).contains(&doomed));

    let ban = format!("http://{addr}/api/v1/streams/demo/chat/bans/Bob");
    let status = http
        .put(&ban)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("ban")
        .status();
    assert_eq!(status, 204);
    let (errors, code) = until_closed(&mut bob).await;
    assert_eq!(errors.last().expect("an error frame")["code"], "banned");
    assert_eq!(code, Some(CloseCode::Policy));
    let (mut again, _) = tokio_tungstenite::connect_async(chat_url(addr, "demo", Some("bob")))
        .await
        .expect("connect");
    let (errors, code) = until_closed(&mut again).await;
    assert_eq!(errors[0]["code"], "banned");
    assert_eq!(code, Some(CloseCode::Policy));

    // Too long: an error frame, then 1009.
    say(&mut alice, &"x".repeat(501)).await;
    let (errors, code) = until_closed(&mut alice).await;
    assert_eq!(errors[0]["code"], "too_long");
    assert_eq!(code, Some(CloseCode::Size));

    // Bad names are refused before the upgrade.
    let status = http
        .get(format!(
            "http://{addr}/api/v1/streams/demo/chat?name=%3Cscript%3E"
        ))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status, 400);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_rate_limited_while_others_arrive_on_time() {
    let mut config = test_config(Duration::from_secs(2));
    config.chat.rate_limit = 5;
    config.chat.rate_burst = 5;
    let server = Server::start(config, None).await.expect("start");
    let addr = server.http_addr;
    let (mut flood, _) = connect(addr, "demo", Some("flood")).await;
    let (mut talker, _) = connect(addr, "demo", Some("talker")).await;
    let (mut listener, _) = connect(addr, "demo", None).await;

    let flooder = tokio::spawn(async move {
        // 1000 messages per second until the server cuts it off.
        let mut sent = 0;
        for i in 0..1000 {
            if flood
                .send(Message::text(
                    json!({"type": "message", "text": format!("spam {i}")}).to_string(),
                ))
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (errors, code) = until_closed(&mut flood).await;
        (sent, errors, code)
    });
    let mut spam = 0;
    let mut delays = Vec::new();
    for i in 0..4 {
        let started = Instant::now();
        say(&mut talker, &format!("normal {i}")).await;
        loop {
            let frame = next(&mut listener).await;
            if frame["type"] != "message" {
                continue;
            }
            if frame["name"] == "flood" {
                spam += 1;
                continue;
            }
            assert_eq!(frame["text"], format!("normal {i}"));
            delays.push(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (sent, errors, code) = flooder.await.expect("flooder");
    assert!(
        errors.iter().any(|e| e["code"] == "rate_limited"),
        "{errors:?}"
    );
    assert_eq!(
        code,
        Some(CloseCode::Policy),
        "a flood ends in 1008 ({sent} sent)"
    );
    assert!(spam <= 6, "at most the burst of spam got through: {spam}");
    for delay in &delays {
        assert!(
            *delay < Duration::from_millis(500),
            "normal traffic delayed: {delays:?}"
        );
    }
    server.shutdown().await;
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// A server for the slow-reader tests: 4.5 kB messages at up to 2000/s, a broadcast ring of
/// `capacity` frames and a `write_timeout`.
async fn slow_reader_server(capacity: usize, write_timeout: Duration) -> Server {
    let mut config = test_config(Duration::from_secs(2));
    config.chat.rate_limit = 2000;
    config.chat.rate_burst = 2000;
    config.chat.broadcast_capacity = capacity;
    config.chat.write_timeout = write_timeout;
    config.chat.max_message_chars = 5000;
    Server::start(config, None).await.expect("start")
}

/// A client with a tiny receive window that reads `joined` and then nothing.
async fn stalled_client(addr: SocketAddr, name: Option<&str>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("rcvbuf");
    let tcp = socket.connect(addr).await.expect("connect");
    let (mut stalled, _) =
        tokio_tungstenite::client_async(chat_url(addr, "demo", name), MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
    assert_eq!(next(&mut stalled).await["type"], "joined");
    stalled
}

/// `sender` posts `total` copies of `text`, `pace` apart, while `listener` receives them all;
/// the sender's own echoes are drained in the background. Returns the sender's writing half
/// (it stays connected while held) and the draining task.
async fn flood(
    sender: Ws,
    listener: &mut Ws,
    text: &str,
    total: usize,
    pace: Duration,
) -> (
    futures_util::stream::SplitSink<Ws, Message>,
    tokio::task::JoinHandle<()>,
) {
    let (mut sink, mut echoes) = sender.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    let send = async {
        for _ in 0..total {
            let frame = json!({"type": "message", "text": text}).to_string();
            sink.send(Message::text(frame)).await.expect("send");
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
    };
    let receive = async {
        for _ in 0..total {
            assert_eq!(next_message(listener).await["text"], text);
        }
    };
    tokio::join!(send, receive);
    (sink, drain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_without_slowing_others() {
    let server = slow_reader_server(64, Duration::from_secs(1)).await;
    let chat = server.chat.clone().expect("chat on");
    let addr = server.http_addr;

    let mut stalled = stalled_client(addr, None).await;
    let (sender, _) = connect(addr, "demo", Some("sender")).await;
    let (mut listener, _) = connect(addr, "demo", None).await;
    assert_eq!(chat.connections(), 3);

    let rss_before = rss_bytes();
    let text = "y".repeat(4500);
    let total = 1500;
    let started = Instant::now();
    let (sink, drain) = flood(
        sender,
        &mut listener,
        &text,
        total,
        Duration::from_millis(1),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the listener kept up: {elapsed:?}"
    );

    wait_for(
        "the stalled reader to be dropped",
        Duration::from_secs(10),
        || async { (chat.connections() == 2).then_some(()) },
    )
    .await;
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "memory grew by {grown} bytes");
    // What reached the stalled client before it was cut is far less than what was sent.
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => got += 1,
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the stalled client's connection was not closed"),
        }
    }
    assert!(got < total, "the stalled client was cut off ({got} frames)");
    drop(sink);
    server.shutdown().await;
    drain.abort();
}

/// A client that stops reading is still heard: its session reads the client's posts while the
/// writes it owes that client are blocked, so they reach the room at once (and the rate limit
/// sees the client's own pace, not a backlog released in one burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_still_heard() {
    // The stalled session must fall behind on writes, not lag out of the broadcast.
    let server = slow_reader_server(4096, Duration::from_secs(5)).await;
    let addr = server.http_addr;
    let mut stalled = stalled_client(addr, Some("stalled")).await;
    let (flooder, _) = connect(addr, "demo", Some("flooder")).await;
    let (mut listener, _) = connect(addr, "demo", None).await;

    // 600 frames of 4.5 kB: far more than the socket buffers toward the stalled client hold.
    let text = "z".repeat(4500);
    let (sink, drain) = flood(flooder, &mut listener, &text, 600, Duration::ZERO).await;

    let posted = Instant::now();
    say(&mut stalled, "still here").await;
    let heard = next_message(&mut listener).await;
    assert_eq!(heard["text"], "still here");
    assert_eq!(heard["name"], "stalled");
    assert!(
        posted.elapsed() < Duration::from_secs(2),
        "the post waited {:?} behind its session's writes",
        posted.elapsed()
    );
    drop(sink);
    drain.abort();
    server.shutdown().await;
}
