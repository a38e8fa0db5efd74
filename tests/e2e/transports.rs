//! Every transport serves the same Router: HTTP/1.1 (plain and TLS), h2 (TLS) and HTTP/3 give
//! byte-identical objects with the same caching headers; a full HLS session over HTTP/3;
//! limits (slowloris, idle, connection flood) and certificate reload.

use crate::clients::{Fetched, Recorder, H2, H3};
use crate::common::*;
use headwater::Server;
use hyper::http::{Method, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test config with the TLS listener on (self-signed, ephemeral port, HTTP/3 on).
fn tls_config() -> headwater::config::Config {
    let mut config = test_config(Duration::from_secs(1));
    config.tls.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls.self_signed = true;
    config.validate().expect("valid");
    config
}

async fn get_plain(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut request = client().get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("plain GET");
    Fetched {
        status: response.status().as_u16(),
        version: response.version(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body"),
    }
}

/// Publishes `seconds` of video to `demo` and waits for the media playlist's ENDLIST.
async fn publish_and_end(server: &Server, seconds: u32) -> m3u8_rs::MediaPlaylist {
    let publisher = Publisher::start(server.rtmp_addr, "demo", seconds);
    let url = format!("http://{}/live/demo/source/index.m3u8", server.http_addr);
    let http = client();
    let playlist = wait_for("ENDLIST", Duration::from_secs(40), || async {
        let (status, body) = get(&http, &url).await;
        (status == 200)
            .then(|| parse_media(&body))
            .filter(|p| p.end_list)
    })
    .await;
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "publisher failed");
    playlist
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_objects_over_h1_h2_and_h3() {
    require_tools();
    let _logs = Logs::capture();
    let server = Server::start(tls_config(), None).await.expect("start");
    let secure = server.secure.clone().expect("TLS is on");
    let h3_addr = secure.h3_addr.expect("HTTP/3 is on");
    assert_eq!(
        h3_addr.port(),
        secure.tcp_addr.port(),
        "h3 shares the TLS port"
    );
    let playlist = publish_and_end(&server, 5).await;
    let init = playlist.segments[0].map.as_ref().expect("map").uri.clone();
    let paths = [
        "/live/demo/index.m3u8".to_owned(),
        "/live/demo/source/index.m3u8".to_owned(),
        format!("/live/demo/source/{init}"),
        format!("/live/demo/source/{}", playlist.segments[0].uri),
    ];
    let alt_svc = format!("h3=\":{}\"; ma=86400", h3_addr.port());
    let mut h2 = H2::connect(secure.tcp_addr, Arc::default()).await;
    let mut h3 = H3::connect(h3_addr).await.expect("h3 connect");
    for path in &paths {
        let plain = get_plain(server.http_addr, path, &[]).await;
        let h1_tls = crate::clients::get_h1_tls(secure.tcp_addr, path, &[]).await;
        let over_h2 = h2.fetch(Method::GET, path, &[]).await;
        let over_h3 = h3.fetch(Method::GET, path, &[]).await;
        assert_eq!(plain.status, 200, "{path}");
        assert!(!plain.body.is_empty(), "{path}");
        assert_eq!(plain.version, Version::HTTP_11);
        assert_eq!(h1_tls.version, Version::HTTP_11);
        assert_eq!(over_h2.version, Version::HTTP_2);
        assert_eq!(over_h3.version, Version::HTTP_3);
        for (name, other) in [("h1+tls", &h1_tls), ("h2", &over_h2), ("h3", &over_h3)] {
            assert_eq!(other.status, 200, "{name} {path}");
            assert!(other.body == plain.body, "{name} {path}: body differs");
            for header in [
                "cache-control",
                "etag",
                "content-type",
                "content-length",
                "last-modified",
                "access-control-allow-origin",
            ] {
                assert_eq!(
                    other.header(header),
                    plain.header(header),
                    "{name} {path}: {header}"
                );
            }
            assert!(!other.header("date").is_empty(), "{name} {path}: no Date");
        }
        assert!(!plain.header("etag").is_empty() && !plain.header("cache-control").is_empty());
        assert_eq!(h1_tls.header("alt-svc"), alt_svc, "h1+tls {path}");
        assert_eq!(over_h2.header("alt-svc"), alt_svc, "h2 {path}");
        assert_eq!(over_h3.header("alt-svc"), "", "h3 advertises nothing");
    }

    // HEAD, Range and conditional requests behave the same over h2 and h3.
    let segment = &paths[3];
    let full = get_plain(server.http_addr, segment, &[]).await;
    for (name, fetched) in [
        ("h2", h2.fetch(Method::HEAD, segment, &[]).await),
        ("h3", h3.fetch(Method::HEAD, segment, &[]).await),
    ] {
        assert_eq!(fetched.status, 200, "{name} HEAD");
        assert!(fetched.body.is_empty(), "{name} HEAD has a body");
        assert_eq!(
            fetched.header("content-length"),
            full.body.len().to_string(),
            "{name} HEAD"
        );
        assert_eq!(fetched.header("etag"), full.header("etag"), "{name} HEAD");
    }
    for (name, fetched) in [
        (
            "h2",
            h2.fetch(Method::GET, segment, &[("range", "bytes=100-1099")])
                .await,
        ),
        (
            "h3",
            h3.fetch(Method::GET, segment, &[("range", "bytes=100-1099")])
                .await,
        ),
    ] {
        assert_eq!(fetched.status, 206, "{name} Range");
        assert_eq!(
            &fetched.body[..],
            &full.body[100..1100],
            "{name} Range bytes"
        );
        assert_eq!(
            fetched.header("content-range"),
            format!("bytes 100-1099/{}", full.body.len()),
            "{name}"
        );
    }
    let etag = full.header("etag");
    for (name, fetched) in [
        (
            "h2",
            h2.fetch(Method::GET, segment, &[("if-none-match", &etag)])
                .await,
        ),
        (
            "h3",
            h3.fetch(Method::GET, segment, &[("if-none-match", &etag)])
                .await,
        ),
    ] {
        assert_eq!(fetched.status, 304, "{name} If-None-Match");
        assert!(fetched.body.is_empty());
    }
    let missing = h3
        .fetch(Method::GET, "/live/demo/source/seg-0-999999.m4s", &[])
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("cache-control"),
        get_plain(server.http_addr, "/live/demo/source/seg-0-999999.m4s", &[])
            .await
            .header("cache-control")
    );
    drop((h2, h3));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_hls_session_over_h3() {
    require_tools();
    let _logs = Logs::capture();
    let server = Server::start(tls_config(), None).await.expect("start");
    let h3_addr = server.secure.as_ref().and_then(|s| s.h3_addr).expect("h3");
    let publisher = Publisher::start(server.rtmp_addr, "demo", 7);
    let mut h3 = H3::connect(h3_addr).await.expect("h3 connect");
    // Poll the playlists over HTTP/3 only, as a player would.
    let deadline = Deadline::new("ENDLIST over h3", Duration::from_secs(40));
    let (multivariant, media) = loop {
        let mv = h3.fetch(Method::GET, "/live/demo/index.m3u8", &[]).await;
        let media = h3
            .fetch(Method::GET, "/live/demo/source/index.m3u8", &[])
            .await;
        if mv.status == 200 && media.status == 200 && parse_media(&media.body).end_list {
            break (mv, media);
        }
        deadline.tick().await;
    };
    publisher.wait(Duration::from_secs(5));
    let variant = match m3u8_rs::parse_playlist_res(&multivariant.body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p.variants[0].uri.clone(),
        other => panic!("not a multivariant playlist: {other:?}"),
    };
    assert_eq!(variant, "source/index.m3u8");
    assert_eq!(
        multivariant.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    let playlist = parse_media(&media.body);
    assert!(
        playlist.segments.len() >= 3,
        "{} segments",
        playlist.segments.len()
    );
    let init_uri = playlist.segments[0]
        .map
        .as_ref()
        .expect("EXT-X-MAP")
        .uri
        .clone();
    let init = h3
        .fetch(Method::GET, &format!("/live/demo/source/{init_uri}"), &[])
        .await;
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), "video/mp4");
    let mut whole = init.body.to_vec();
    let mut listed = 0.0;
    for segment in &playlist.segments {
        let fetched = h3
            .fetch(
                Method::GET,
                &format!("/live/demo/source/{}", segment.uri),
                &[],
            )
            .await;
        assert_eq!(fetched.status, 200, "{}", segment.uri);
        assert_eq!(
            fetched.header("cache-control"),
            "public, max-age=31536000, immutable"
        );
        whole.extend_from_slice(&fetched.body);
        listed += f64::from(segment.duration);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("session.mp4");
    std::fs::write(&file, &whole).expect("write");
    let duration: f64 = ffprobe(
        &file,
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
    )
    .trim()
    .parse()
    .expect("duration");
    assert!(
        (duration - listed).abs() < 0.5,
        "ffprobe {duration} s vs playlist {listed} s"
    );
    let streams = ffprobe(
        &file,
        &["-show_entries", "stream=codec_name", "-of", "csv=p=0"],
    );
    assert!(
        streams.contains("h264") && streams.contains("aac"),
        "{streams}"
    );
    drop(h3);
    server.shutdown().await;
}

/// Reads until the peer closes (or errors); returns what was read and when it ended.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> Option<(Vec<u8>, Instant)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let result = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    result.ok().map(|at| (seen, at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_cut_while_others_are_served() {
    let _logs = Logs::capture();
    let mut config = tls_config();
    config.limits.header_read_timeout = Duration::from_secs(2);
    config.limits.idle_timeout = Duration::from_secs(3);
    let server = Server::start(config, None).await.expect("start");
    let secure = server.secure.clone().expect("tls");
    let start = Instant::now();

    // Plain HTTP/1.1: the request head dribbled one byte per second.
    let mut slow = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = slow.split();
    let head = b"GET /healthz HTTP/1.1\r\nHost: slow.example\r\nUser-Agent: loris\r\n\r\n";
    let dribble = async {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    // TLS HTTP/1.1: the same, after a real handshake.
    let tls = crate::clients::tls_connect(secure.tcp_addr, b"http/1.1", Arc::default()).await;
    let (mut tls_reader, mut tls_writer) = tokio::io::split(tls);
    let tls_dribble = async {
        for byte in head {
            if tls_writer.write_all(&[*byte]).await.is_err() || tls_writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    // A connection that never sends a byte: cut at the idle timeout.
    let mut silent = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .expect("connect");
    // Meanwhile everyone else is served.
    let others = async {
        for _ in 0..10 {
            let fetched = get_plain(server.http_addr, "/healthz", &[]).await;
            assert_eq!(
                fetched.status, 200,
                "others must be served during the attack"
            );
            let fetched = crate::clients::get_h1_tls(secure.tcp_addr, "/healthz", &[]).await;
            assert_eq!(fetched.status, 200);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let limit = Duration::from_secs(15);
    let (plain_cut, tls_cut, silent_cut, (), (), ()) = tokio::join!(
        read_until_closed(&mut reader, limit),
        read_until_closed(&mut tls_reader, limit),
        read_until_closed(&mut silent, limit),
        dribble,
        tls_dribble,
        others,
    );
    for (name, cut, expected) in [
        ("plain slowloris", plain_cut, 2.0),
        ("TLS slowloris", tls_cut, 2.0),
        ("silent connection", silent_cut, 3.0),
    ] {
        let (seen, at) = cut.unwrap_or_else(|| panic!("{name} was never cut off"));
        let after = at.duration_since(start).as_secs_f64();
        assert!(
            after >= expected - 0.5 && after < expected + 3.0,
            "{name} cut after {after:.1} s, expected about {expected} s"
        );
        let text = String::from_utf8_lossy(&seen);
        assert!(!text.contains("200 OK"), "{name} was served: {text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_refused_and_recovers() {
    let _logs = Logs::capture();
    let mut config = tls_config();
    config.limits.max_connections = 4;
    let server = Server::start(config, None).await.expect("start");
    let secure = server.secure.clone().expect("tls");
    let h3_addr = secure.h3_addr.expect("h3");

    // Plain: four held connections fill the listener; the fifth gets a 503 and is closed.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(server.http_addr)
                .await
                .expect("connect"),
        );
    }
    let mut refused = Vec::new();
    for _ in 0..20 {
        let mut extra = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .expect("connect");
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (seen, _) = read_until_closed(&mut extra, Duration::from_secs(5))
            .await
            .expect("refused connection is closed");
        refused.push(String::from_utf8_lossy(&seen).into_owned());
    }
    for response in &refused {
        assert!(
            response.starts_with("HTTP/1.1 503"),
            "flood got: {response:?}"
        );
    }
    // TLS: the handshake of a connection past the limit fails.
    let mut tls_held = Vec::new();
    for _ in 0..4 {
        tls_held.push(crate::clients::tls_connect(secure.tcp_addr, b"h2", Arc::default()).await);
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(crate::clients::client_tls(
        &[b"h2"],
        Arc::default(),
    )));
    let tcp = tokio::net::TcpStream::connect(secure.tcp_addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    assert!(
        connector.connect(name, tcp).await.is_err(),
        "TLS past the limit must fail"
    );
    // QUIC: the fifth connection is refused.
    let mut quic_held = Vec::new();
    for _ in 0..4 {
        quic_held.push(H3::connect(h3_addr).await.expect("h3 within the limit"));
    }
    assert!(
        H3::connect(h3_addr).await.is_err(),
        "QUIC past the limit must be refused"
    );

    // Recovery: once the flood goes away, everyone is served again.
    drop(held);
    drop(tls_held);
    drop(quic_held);
    wait_for("plain recovers", Duration::from_secs(10), || async {
        let response = client()
            .get(format!("http://{}/healthz", server.http_addr))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let fetched = crate::clients::get_h1_tls(secure.tcp_addr, "/healthz", &[]).await;
    assert_eq!(fetched.status, 200);
    let mut h3 = wait_for("QUIC recovers", Duration::from_secs(10), || async {
        H3::connect(h3_addr).await.ok()
    })
    .await;
    assert_eq!(h3.fetch(Method::GET, "/healthz", &[]).await.status, 200);
    drop(h3);
    server.shutdown().await;
}

fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    // Key first: until the certificate lands the pair mismatches and the old one stays.
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).expect("key");
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).expect("cert");
    generated.cert.der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_presented_to_new_handshakes() {
    let _logs = Logs::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_cert(dir.path());
    let mut config = test_config(Duration::from_secs(1));
    config.tls.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.tls.cert = Some(dir.path().join("cert.pem"));
    config.tls.key = Some(dir.path().join("key.pem"));
    config.tls.reload_poll = Duration::from_millis(200);
    config.validate().expect("valid");
    let server = Server::start(config, None).await.expect("start");
    let secure = server.secure.clone().expect("tls");

    let recorder = Arc::new(Recorder::default());
    let mut old = H2::connect(secure.tcp_addr, recorder.clone()).await;
    assert_eq!(
        recorder.last_leaf.lock().expect("lock").clone(),
        Some(first.clone())
    );

    let second = write_cert(dir.path());
    assert_ne!(first, second);
    wait_for(
        "new handshakes present the new certificate",
        Duration::from_secs(10),
        || async {
            let recorder = Arc::new(Recorder::default());
            let _tls = crate::clients::tls_connect(secure.tcp_addr, b"h2", recorder.clone()).await;
            let leaf = recorder.last_leaf.lock().expect("lock").clone();
            (leaf == Some(second.clone())).then_some(())
        },
    )
    .await;
    let quic = Arc::new(Recorder::default());
    let mut h3 = H3::connect_with(secure.h3_addr.expect("h3"), quic.clone())
        .await
        .expect("h3");
    assert_eq!(h3.fetch(Method::GET, "/healthz", &[]).await.status, 200);
    assert_eq!(
        quic.last_leaf.lock().expect("lock").clone(),
        Some(second),
        "QUIC presents the new certificate"
    );
    // The connection made before the reload is still open and served.
    assert_eq!(old.fetch(Method::GET, "/healthz", &[]).await.status, 200);
    drop((old, h3));
    server.shutdown().await;
}
