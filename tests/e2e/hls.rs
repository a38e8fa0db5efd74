//! A full publish -> HLS session checked against the HLS rules and with ffprobe.

use crate::common::*;
use headwater::Server;
use std::collections::HashMap;
use std::time::Duration;

/// Rule 3/4: a newer playlist version only drops from the front and appends; the media sequence
/// rises by exactly the number dropped; the target duration never changes.
fn check_evolution(old: &m3u8_rs::MediaPlaylist, new: &m3u8_rs::MediaPlaylist) {
    assert_eq!(
        old.target_duration, new.target_duration,
        "rule 2: target duration changed"
    );
    assert!(
        new.media_sequence >= old.media_sequence,
        "rule 4: media sequence went down"
    );
    let dropped = (new.media_sequence - old.media_sequence) as usize;
    assert!(
        dropped <= old.segments.len(),
        "rule 4: sequence jumped past the old window"
    );
    let kept: Vec<_> = old.segments[dropped..].iter().map(|s| &s.uri).collect();
    let prefix: Vec<_> = new
        .segments
        .iter()
        .take(kept.len())
        .map(|s| &s.uri)
        .collect();
    assert_eq!(
        kept, prefix,
        "rule 3: playlist changed other than by append/remove"
    );
    assert!(!old.end_list || new.end_list, "ENDLIST disappeared");
}

/// Rules 1, 5, 11 on one playlist version.
fn check_playlist_rules(playlist: &m3u8_rs::MediaPlaylist, text: &str) {
    for segment in &playlist.segments {
        assert!(
            (segment.duration.round() as u64) <= playlist.target_duration,
            "rule 1: EXTINF {} > target {}",
            segment.duration,
            playlist.target_duration
        );
        assert!(
            segment.program_date_time.is_some(),
            "rule 11: segment without PROGRAM-DATE-TIME"
        );
    }
    assert!(
        playlist.playlist_type.is_none(),
        "rule 5: live playlist has PLAYLIST-TYPE"
    );
    assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "rule 11");
    assert!(
        playlist.segments.first().is_some_and(|s| s.map.is_some()),
        "rule 11: first segment has no EXT-X-MAP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_plays_as_fmp4_hls() {
    require_tools();
    let _logs = Logs::capture();
    let server = Server::start(test_config(Duration::from_secs(3)), None)
        .await
        .expect("start");
    let base = format!("http://{}/live/demo", server.http_addr);
    let http = client();

    let publisher = Publisher::start(server.rtmp_addr, "demo", 12);

    // Watch the playlist evolve while the publisher runs; every version must extend the last.
    let media_url = format!("{base}/source/index.m3u8");
    let mut versions: Vec<m3u8_rs::MediaPlaylist> = Vec::new();
    let deadline = Deadline::new("ENDLIST after the publisher stops", Duration::from_secs(40));
    let final_playlist = loop {
        let (status, body) = get(&http, &media_url).await;
        if status == 200 {
            let playlist = parse_media(&body);
            check_playlist_rules(&playlist, &String::from_utf8_lossy(&body));
            if let Some(last) = versions.last() {
                check_evolution(last, &playlist);
            }
            versions.push(playlist.clone());
            if playlist.end_list {
                break playlist;
            }
        } else {
            assert_eq!(
                status, 404,
                "playlist before the first segment must be a 404"
            );
        }
        deadline.tick().await;
    };
    assert!(
        versions.len() > 10,
        "saw only {} playlist versions",
        versions.len()
    );
    let (status, _) = publisher.wait(Duration::from_secs(5));
    assert!(status.success(), "ffmpeg publisher failed");

    // Multivariant playlist (rule 9).
    let (status, body) = get(&http, &format!("{base}/index.m3u8")).await;
    assert_eq!(status, 200);
    let multivariant = match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(p)) => p,
        other => panic!("not a multivariant playlist: {other:?}"),
    };
    assert_eq!(multivariant.variants.len(), 1);
    let variant = &multivariant.variants[0];
    assert_eq!(variant.uri, "source/index.m3u8");
    let codecs = variant.codecs.clone().expect("CODECS");
    assert!(codecs.ends_with(",mp4a.40.2"), "CODECS={codecs}");
    assert_eq!(
        variant.resolution.map(|r| (r.width, r.height)),
        Some((640, 360))
    );
    assert_eq!(variant.frame_rate, Some(30.0));
    let average = variant.average_bandwidth.expect("AVERAGE-BANDWIDTH");
    assert!(
        average > 0 && average <= variant.bandwidth,
        "AVERAGE-BANDWIDTH {average} vs {}",
        variant.bandwidth
    );

    // The whole stream: 12 s in 2 s segments, all still listed (window 6).
    let playlist = final_playlist;
    assert_eq!(playlist.target_duration, 2);
    assert_eq!(playlist.media_sequence, 0);
    let listed: f32 = playlist.segments.iter().map(|s| s.duration).sum();
    assert!(
        (listed - 12.0).abs() < 1.0,
        "listed {listed} s, pushed 12 s"
    );
    assert!(
        playlist.segments.len() >= 6,
        "{} segments",
        playlist.segments.len()
    );
    assert!(
        playlist.segments.iter().all(|s| !s.discontinuity),
        "no reconnect, no discontinuity"
    );

    // Download init + every segment; probe each and the whole.
    let checked = check_segments(&http, &format!("{base}/source"), &playlist, 12.0).await;
    for segment in &playlist.segments {
        assert!(
            segment.duration <= 2.5,
            "{}: {} s exceeds the target",
            segment.uri,
            segment.duration
        );
    }
    // CODECS carries the SPS profile and level that a decoder reports.
    let probed = ffprobe(
        &checked.first_file,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "stream=profile,level",
            "-of",
            "csv=p=0",
        ],
    );
    let (profile, level) = probed.trim().split_once(',').expect("profile,level");
    let profile_idc = match profile {
        "Baseline" | "Constrained Baseline" => "42",
        "Main" => "4d",
        "High" => "64",
        other => panic!("unexpected profile {other}"),
    };
    let level: u8 = level.parse().expect("level");
    let avc = codecs.split(',').next().expect("video codec");
    assert!(
        avc.starts_with(&format!("avc1.{profile_idc}")) && avc.ends_with(&format!("{level:02x}")),
        "CODECS {avc} vs ffprobe {probed}"
    );
    assert!(
        checked.peak_bps <= 1.25 * variant.bandwidth as f64,
        "rule 9: peak {} > 125% of BANDWIDTH {}",
        checked.peak_bps,
        variant.bandwidth
    );
    check_headers(&http, &base, &playlist).await;
    server.shutdown().await;
}

/// Cache-Control, ETag/304, HEAD, Range, CORS, Content-Type and 404s.
async fn check_headers(http: &reqwest::Client, base: &str, playlist: &m3u8_rs::MediaPlaylist) {
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    };
    let seg_url = format!("{base}/source/{}", playlist.segments[1].uri);
    let init_url = format!(
        "{base}/source/{}",
        playlist.segments[0].map.as_ref().expect("map").uri
    );
    let expect: HashMap<&str, (&str, &str)> = HashMap::from([
        (
            "multivariant",
            ("application/vnd.apple.mpegurl", "public, max-age=1"),
        ),
        (
            "media",
            ("application/vnd.apple.mpegurl", "public, max-age=1"),
        ),
        ("init", ("video/mp4", "public, max-age=31536000, immutable")),
        (
            "segment",
            ("video/iso.segment", "public, max-age=31536000, immutable"),
        ),
    ]);
    let urls = [
        ("multivariant", format!("{base}/index.m3u8")),
        ("media", format!("{base}/source/index.m3u8")),
        ("init", init_url),
        ("segment", seg_url.clone()),
    ];
    for (kind, url) in &urls {
        let response = http
            .get(url)
            .header("Origin", "https://player.example")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{url}");
        let (content_type, cache) = expect[kind];
        assert_eq!(header(&response, "content-type"), content_type, "{kind}");
        assert_eq!(header(&response, "cache-control"), cache, "{kind}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            "*",
            "{kind}"
        );
        let etag = header(&response, "etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "{kind}: strong ETag, got {etag:?}"
        );
        let length = header(&response, "content-length");
        let body = response.bytes().await.expect("body");
        assert_eq!(length, body.len().to_string());

        let not_modified = http
            .get(url)
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("get");
        assert_eq!(not_modified.status(), 304, "{kind}");
        assert_eq!(header(&not_modified, "etag"), etag);

        let head = http.head(url).send().await.expect("head");
        assert_eq!(head.status(), 200);
        assert_eq!(
            header(&head, "content-length"),
            body.len().to_string(),
            "{kind}: HEAD length"
        );
        assert!(head.bytes().await.expect("body").is_empty());
    }

    // Rule 8: playlists are gzip-encoded for clients that accept it, as a representation of
    // their own (ETag), with Vary on both; a range request gets the identity bytes.
    for url in [
        format!("{base}/index.m3u8"),
        format!("{base}/source/index.m3u8"),
    ] {
        let plain = http.get(&url).send().await.expect("get");
        assert_eq!(header(&plain, "vary"), "accept-encoding", "{url}");
        assert_eq!(header(&plain, "content-encoding"), "", "{url}");
        let plain_etag = header(&plain, "etag");
        let plain_body = plain.bytes().await.expect("body");
        let gzip_get = || {
            http.get(&url)
                .header("Accept-Encoding", "br;q=1, gzip;q=0.8")
        };
        let gz = gzip_get().send().await.expect("get");
        assert_eq!(gz.status(), 200);
        assert_eq!(header(&gz, "content-encoding"), "gzip", "{url}");
        assert_eq!(header(&gz, "vary"), "accept-encoding", "{url}");
        let gz_etag = header(&gz, "etag");
        assert_ne!(gz_etag, plain_etag, "{url}: one strong ETag per encoding");
        let length = header(&gz, "content-length");
        let compressed = gz.bytes().await.expect("body");
        assert_eq!(length, compressed.len().to_string());
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&compressed[..]),
            &mut text,
        )
        .expect("gunzip");
        assert_eq!(text, plain_body, "{url}: gzip of the same playlist");
        let revalidated = gzip_get()
            .header("If-None-Match", &gz_etag)
            .send()
            .await
            .expect("get");
        assert_eq!(revalidated.status(), 304, "{url}");
        let ranged = gzip_get()
            .header("Range", "bytes=0-6")
            .send()
            .await
            .expect("get");
        assert_eq!(ranged.status(), 206, "{url}");
        assert_eq!(header(&ranged, "content-encoding"), "", "{url}");
        assert_eq!(ranged.bytes().await.expect("body"), plain_body.slice(..7));
    }

    let full = http
        .get(&seg_url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    let len = full.len();
    let partial = http
        .get(&seg_url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(partial.status(), 206);
    assert_eq!(
        header(&partial, "content-range"),
        format!("bytes 100-199/{len}")
    );
    assert_eq!(partial.bytes().await.expect("body"), full.slice(100..200));
    let suffix = http
        .get(&seg_url)
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("range");
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().await.expect("body"), full.slice(len - 10..));
    let beyond = http
        .get(&seg_url)
        .header("Range", format!("bytes={len}-"))
        .send()
        .await
        .expect("range");
    assert_eq!(beyond.status(), 416);
    assert_eq!(header(&beyond, "content-range"), format!("bytes */{len}"));

    let preflight = http
        .request(reqwest::Method::OPTIONS, &seg_url)
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .expect("options");
    assert!(preflight.status().is_success());
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");

    for missing in [
        format!("{base}/../nope/index.m3u8"),
        base.replace("/demo", "/nope") + "/index.m3u8",
        format!("{base}/source/seg-x-999.m4s"),
        format!("{base}/nope/index.m3u8"),
    ] {
        let response = http.get(&missing).send().await.expect("get");
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(header(&response, "cache-control"), "max-age=1", "{missing}");
    }
    let bad = http
        .get(format!("{base}/so%20urce/index.m3u8"))
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
}
