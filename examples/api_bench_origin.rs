//! An Origin with 100 live streams for bench/api.sh: each stream has a publisher accepted by
//! the registry (through the same `Publish` hook RTMP uses, without sending frames), a
//! multivariant playlist with four renditions in the live store, and metadata in SQLite.
//! Prints `ready http=<addr>` once seeded, then `queries=<n>` (statements the metadata store
//! has executed) every second until killed.
//!
//! `cargo run --release --example api_bench_origin -- 127.0.0.1:8090 /tmp/api-bench-data`

use headwater::config::{Config, KeyConfig, LadderConfig};
use headwater::names::StreamName;
use headwater::store::{Object, ObjectKind};
use headwater::Server;
use headwater_ingest::rtmp::{Publish, PublishRequest, StreamKey};
use std::time::Duration;

const STREAMS: usize = 100;

const MULTIVARIANT: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-STREAM-INF:BANDWIDTH=1694000,AVERAGE-BANDWIDTH=1500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=854x480,FRAME-RATE=30.000\n480p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=1008000,AVERAGE-BANDWIDTH=900000,CODECS=\"avc1.4d401e,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=30.000\n360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=3758000,AVERAGE-BANDWIDTH=3400000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\n720p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=5200000,CODECS=\"avc1.640028,mp4a.40.2\",RESOLUTION=1920x1080,FRAME-RATE=30.000\nsource/index.m3u8\n";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let data = args.next().unwrap_or_else(|| "/tmp/api-bench-data".into());
    let mut config = Config::default();
    config.http.listen = listen.parse()?;
    config.rtmp.listen = "127.0.0.1:0".parse()?;
    config.observe.access_log = false;
    config.observe.metrics = false;
    config.cache.disk = bytesize::ByteSize::b(0);
    config.ladder = LadderConfig::passthrough();
    config.api.data_dir = data.into();
    config.api.rate_limit = 10_000_000;
    config.api.rate_burst = 10_000_000;
    config.keys = (0..STREAMS)
        .map(|i| KeyConfig {
            key: format!("bench-key-{i}"),
            stream: StreamName::parse(&format!("stream{i:03}")).expect("name"),
        })
        .collect();
    config.validate()?;
    let server = Server::start(config, None).await?;
    let mut sinks = Vec::new();
    for i in 0..STREAMS {
        let sink = server
            .registry
            .publish(&PublishRequest {
                app: "live".into(),
                key: StreamKey::new(format!("bench-key-{i}")),
                peer: "127.0.0.1:1".parse()?,
            })
            .map_err(|e| anyhow::anyhow!("publish {i}: {e}"))?;
        let name = StreamName::parse(&sink.stream)?;
        let entry = server.store.stream(&name).expect("instance started");
        entry.put_multivariant(Object::new(
            ObjectKind::MultivariantPlaylist,
            MULTIVARIANT.into(),
            Duration::from_secs(6),
        ));
        sinks.push(sink);
    }
    // Let the history recorder write the 100 starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("ready http={}", server.http_addr);
    loop {
        println!("queries={}", server.api.store_queries());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
