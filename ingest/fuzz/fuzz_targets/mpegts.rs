//! Feeds arbitrary bytes to the MPEG-TS demuxer in pieces (the first byte picks the piece size,
//! as SRT delivers messages of varying length): it must return, never panic, and every frame it
//! emits must be non-empty AVCC (video) or a raw AAC access unit (audio).
#![no_main]

use headwater_ingest::ts::Demuxer;
use headwater_ingest::{IngestEvent, Track};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1) * 8;
    let mut demuxer = Demuxer::new();
    let mut events = Vec::new();
    for piece in rest.chunks(split) {
        events.extend(demuxer.push(piece));
    }
    events.extend(demuxer.flush());
    for event in events {
        if let IngestEvent::Frame(frame) = event {
            assert!(!frame.data.is_empty());
            if frame.track == Track::Video {
                // 4-byte lengths that exactly cover the sample.
                let mut data = &frame.data[..];
                while !data.is_empty() {
                    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                    assert!(len > 0 && len + 4 <= data.len());
                    data = &data[4 + len..];
                }
            }
        }
    }
});
