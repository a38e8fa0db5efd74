//! A real CDN (nginx `proxy_cache` with `proxy_cache_lock`) in front of an Origin: Headwater's
//! Cache-Control makes 200 polling players cost about one request per playlist lifetime and one
//! per segment at the origin.

use crate::common::*;
use headwater::Server;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sums `headwater_http_requests_total` samples with the given route label.
fn requests(metrics: &str, route: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("headwater_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_nginx(dir: &std::path::Path, origin: std::net::SocketAddr) -> (Nginx, u16) {
    let port = free_port();
    let conf = format!(
        r#"daemon off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  proxy_cache_path {dir}/cache levels=1:2 keys_zone=hls:10m max_size=1g inactive=10m use_temp_path=off;
  upstream origin {{ server {origin}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hls;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
      proxy_cache_key $uri;
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx is installed (scripts/test.sh installs it)");
    (Nginx(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_cdn_in_front_collapses_player_requests() {
    require_tools();
    let _logs = Logs::capture();
    let metrics = headwater::observe::install_metrics().expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(std::time::Duration::from_secs(5));
    config.cache.dir = dir.path().join("cache");
    let server = Server::start(config, Some(metrics)).await.expect("start");
    let (_nginx, port) = start_nginx(dir.path(), server.http_addr);
    wait_for("nginx to listen", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let publisher = Publisher::start(server.rtmp_addr, "demo", 40);
    let edge = format!("http://127.0.0.1:{port}/live/demo");
    let http = client();
    wait_for(
        "the first segment at the edge",
        Duration::from_secs(20),
        || async {
            (get(&http, &format!("{edge}/source/index.m3u8")).await.0 == 200).then_some(())
        },
    )
    .await;
    let origin_metrics = format!("http://{}/metrics", server.http_addr);
    let before = String::from_utf8_lossy(&get(&http, &origin_metrics).await.1).into_owned();

    // 200 players poll the media playlist every second for 30 s and fetch each new segment once.
    let started = Instant::now();
    let mut players = Vec::new();
    for player in 0..200u64 {
        let http = http.clone();
        let edge = edge.clone();
        players.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(player * 5)).await;
            let mut seen = HashSet::new();
            while started.elapsed() < Duration::from_secs(30) {
                let (status, body) = get(&http, &format!("{edge}/source/index.m3u8")).await;
                assert_eq!(status, 200);
                for segment in parse_media(&body).segments {
                    if seen.insert(segment.uri.clone()) {
                        let (status, _) =
                            get(&http, &format!("{edge}/source/{}", segment.uri)).await;
                        assert_eq!(status, 200, "{}", segment.uri);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            seen
        }));
    }
    let mut segments = HashSet::new();
    for player in players {
        segments.extend(player.await.expect("player"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = String::from_utf8_lossy(&get(&http, &origin_metrics).await.1).into_owned();
    let playlist_requests = requests(&after, "playlist") - requests(&before, "playlist");
    let segment_requests = requests(&after, "segment") - requests(&before, "segment");
    // max-age=1 on the playlist: about one origin request per second of polling.
    let windows = elapsed.ceil() as u64;
    eprintln!("origin saw {playlist_requests} playlist and {segment_requests} segment requests for {} segments in {elapsed:.1} s", segments.len());
    assert!(
        playlist_requests <= windows + 5,
        "{playlist_requests} playlist requests in {windows} one-second windows"
    );
    assert!(
        playlist_requests >= windows / 4,
        "the edge must revalidate the playlist (saw {playlist_requests})"
    );
    // Segments the edge had not cached before the players started were each fetched once.
    assert!(
        segment_requests <= segments.len() as u64,
        "{segment_requests} origin requests for {} segments",
        segments.len()
    );
    assert!(
        segments.len() >= 10,
        "players saw {} segments",
        segments.len()
    );
    drop(publisher);
    server.shutdown().await;
}
