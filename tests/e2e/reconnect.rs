//! Publisher reconnects within the grace period continue the stream; after it, ENDLIST. The
//! same over RTMP and SRT.

use crate::common::*;
use headwater::names::StreamName;
use headwater::stream::PublisherState;
use headwater::Server;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_reconnect_continues_sequence_with_one_discontinuity() {
    reconnect_continues_sequence(|server| Publisher::start(server.rtmp_addr, "demo", 6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_reconnect_continues_sequence_with_one_discontinuity() {
    reconnect_continues_sequence(|server| {
        Publisher::srt(server.srt_addr.expect("srt"), "demo", 6, "")
    })
    .await;
}

/// Two 6 s pushes by `publish`, the second within the grace period of the first.
async fn reconnect_continues_sequence(publish: fn(&Server) -> Publisher) {
    require_tools();
    let logs = Logs::capture();
    let grace = Duration::from_secs(6);
    let server = Server::start(test_config(grace), None)
        .await
        .expect("start");
    let base = format!("http://{}/live/demo/source", server.http_addr);
    let http = client();
    let demo = StreamName::parse("demo").expect("name");

    let first = publish(&server);
    let (status, _) = first.wait(Duration::from_secs(20));
    assert!(status.success());
    wait_for(
        "the stream to wait for a reconnect",
        Duration::from_secs(5),
        || async {
            (server.registry.state(&demo) == Some(PublisherState::Reconnecting)).then_some(())
        },
    )
    .await;
    let (_, body) = get(&http, &format!("{base}/index.m3u8")).await;
    let before = parse_media(&body);
    assert!(!before.end_list, "ENDLIST during the grace period");
    let last_before = before.media_sequence + before.segments.len() as u64 - 1;

    // Every listed URI stays fetchable across the gap (rule 7), checked while we reconnect.
    let second = publish(&server);
    let mut fetched = BTreeSet::new();
    let deadline = Deadline::new(
        "a segment from the second publisher",
        Duration::from_secs(20),
    );
    let after = loop {
        let (status, body) = get(&http, &format!("{base}/index.m3u8")).await;
        assert_eq!(status, 200);
        let playlist = parse_media(&body);
        for segment in &playlist.segments {
            let (status, _) = get(&http, &format!("{base}/{}", segment.uri)).await;
            assert_eq!(status, 200, "{} listed but 404", segment.uri);
            fetched.insert(segment.uri.clone());
        }
        if playlist.media_sequence + playlist.segments.len() as u64 - 1 > last_before {
            break playlist;
        }
        deadline.tick().await;
    };
    assert!(
        fetched.len() as u64 > last_before,
        "every segment was fetched at least once"
    );
    assert!(logs
        .text()
        .contains("publisher reconnected within the grace period"));
    assert_eq!(
        after.media_sequence, before.media_sequence,
        "nothing slid out yet (window 6)"
    );
    let (status, _) = second.wait(Duration::from_secs(20));
    assert!(status.success());

    let ended = wait_for(
        "ENDLIST after the grace period",
        grace + Duration::from_secs(10),
        || {
            let http = http.clone();
            let base = base.clone();
            async move {
                let (_, body) = get(&http, &format!("{base}/index.m3u8")).await;
                let playlist = parse_media(&body);
                playlist.end_list.then_some(playlist)
            }
        },
    )
    .await;
    assert_eq!(server.registry.state(&demo), Some(PublisherState::Ended));
    // Sequence numbers continue without a gap; exactly one discontinuity, at the reconnect.
    let sequences: Vec<u64> = (0..ended.segments.len() as u64)
        .map(|i| ended.media_sequence + i)
        .collect();
    for (segment, sequence) in ended.segments.iter().zip(&sequences) {
        assert!(
            segment.uri.ends_with(&format!("-{sequence}.m4s")),
            "{} is not #{sequence}",
            segment.uri
        );
    }
    let discontinuities: Vec<u64> = ended
        .segments
        .iter()
        .zip(&sequences)
        .filter(|(s, _)| s.discontinuity)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        discontinuities,
        vec![last_before + 1],
        "one DISCONTINUITY, on the first segment after the reconnect"
    );
    let first_after = &ended.segments[(last_before + 1 - ended.media_sequence) as usize];
    assert!(first_after.program_date_time.is_some());
    let total: f32 = ended.segments.iter().map(|s| s.duration).sum();
    assert!(
        (total - 12.0).abs() < 1.5,
        "two 6 s pushes listed as {total} s"
    );
    server.shutdown().await;
}
