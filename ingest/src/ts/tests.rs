//! Demuxer tests: a small test muxer, synthetic streams, damage, wrap-around, property tests
//! (no panics on any input) and a round trip through a TS file made by ffmpeg.

use super::*;
use proptest::prelude::*;

const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;
const PMT_PID: u16 = 0x1000;

/// SPS and PPS of a 320x240 x264 stream (baseline, level 1.3).
const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00,
    0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8,
];
const PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];

/// A minimal transport stream muxer for the tests.
#[derive(Default)]
struct Muxer {
    counters: HashMap<u16, u8>,
    out: Vec<u8>,
}

impl Muxer {
    fn packetize(&mut self, pid: u16, data: &[u8]) {
        let mut rest = data;
        let mut first = true;
        while first || !rest.is_empty() {
            let cc = self.counters.entry(pid).or_insert(15);
            *cc = (*cc + 1) & 0x0f;
            let mut packet = vec![
                0x47,
                (if first { 0x40 } else { 0 }) | (pid >> 8) as u8,
                pid as u8,
            ];
            let room = PACKET_SIZE - 4;
            if rest.len() >= room {
                packet.push(0x10 | *cc);
                packet.extend_from_slice(&rest[..room]);
                rest = &rest[room..];
            } else {
                packet.push(0x30 | *cc);
                let stuffing = room - rest.len() - 1;
                packet.push(stuffing as u8);
                if stuffing > 0 {
                    packet.push(0);
                    packet.extend(std::iter::repeat_n(0xff, stuffing - 1));
                }
                packet.extend_from_slice(rest);
                rest = &[];
            }
            self.out.extend_from_slice(&packet);
            first = false;
        }
    }

    fn tables(&mut self) {
        let pat = psi::tests::section(0, 1, &[0, 1, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        let pmt = psi::tests::section(
            2,
            1,
            &[
                0xe1, 0x00, 0xf0, 0x00, 0x1b, 0xe1, 0x00, 0xf0, 0x00, 0x0f, 0xe1, 0x01, 0xf0, 0x00,
            ],
        );
        self.packetize(0, &[[0u8].as_slice(), &pat].concat());
        self.packetize(PMT_PID, &[[0u8].as_slice(), &pmt].concat());
    }

    fn video(&mut self, pts: u64, dts: u64, keyframe: bool) {
        let mut es = vec![0, 0, 0, 1, 0x09, 0xf0];
        if keyframe {
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(SPS);
            es.extend_from_slice(&[0, 0, 0, 1]);
            es.extend_from_slice(PPS);
        }
        es.extend_from_slice(&[0, 0, 1, if keyframe { 0x65 } else { 0x41 }]);
        es.extend(std::iter::repeat_n(0xab, 400));
        let mut pes = pes::tests::header(0xe0, pts, (pts != dts).then_some(dts), es.len(), false);
        pes.extend_from_slice(&es);
        self.packetize(VIDEO_PID, &pes);
    }

    fn audio(&mut self, pts: u64, frames: usize) {
        let mut es = Vec::new();
        for i in 0..frames {
            let len = 7 + 20 + i;
            es.extend_from_slice(&adts::lc_48k_stereo_header(len));
            es.extend(std::iter::repeat_n(i as u8, 20 + i));
        }
        let mut pes = pes::tests::header(0xc0, pts, None, es.len(), true);
        pes.extend_from_slice(&es);
        self.packetize(AUDIO_PID, &pes);
    }
}

/// 2 s of 30 fps video (keyframe every 30) and 48 kHz audio (2 frames per PES) from `start`.
fn stream(start: u64) -> Vec<u8> {
    let mut mux = Muxer::default();
    mux.tables();
    for i in 0..60u64 {
        let dts = (start + i * 3000) & ((1 << 33) - 1);
        mux.video(dts, dts, i % 30 == 0);
        if i % 2 == 0 {
            mux.audio((start + (i / 2) * 3840) & ((1 << 33) - 1), 2);
        }
    }
    mux.out
}

fn demux_all(bytes: &[u8], split: usize) -> (Vec<IngestEvent>, Demuxer) {
    let mut demuxer = Demuxer::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(split.max(1)) {
        events.extend(demuxer.push(piece));
    }
    events.extend(demuxer.flush());
    (events, demuxer)
}

fn frames(events: &[IngestEvent], track: Track) -> Vec<MediaFrame> {
    events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::Frame(f) if f.track == track => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn demuxes_a_synthetic_stream() {
    let (events, demuxer) = demux_all(&stream(900_000), 1316);
    // Video config first (as RTMP sends it), then audio config, then frames.
    assert!(
        matches!(events.first(), Some(IngestEvent::VideoConfig(c)) if c.width == 320 && c.height == 240),
        "{:?}",
        events.first()
    );
    assert!(
        matches!(events.get(1), Some(IngestEvent::AudioConfig(_))),
        "the audio config seen before the first video frame follows the video config"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, IngestEvent::VideoConfig(_)))
            .count(),
        1,
        "config emitted once, not per keyframe"
    );
    let video = frames(&events, Track::Video);
    // The last access unit is dropped at the end (no length to check it is whole).
    assert_eq!(video.len(), 59);
    assert_eq!(demuxer.stats().video_dropped_at_end, 1);
    assert!(video[0].keyframe && video[30].keyframe && !video[1].keyframe);
    assert_eq!(video[1].dts, MediaTime::new(903_000, TIMESCALE));
    // AUD, SPS and PPS are removed; the slice is length-prefixed.
    assert_eq!(&video[0].data[..5], &[0, 0, 1, 145, 0x65]);
    let audio = frames(&events, Track::Audio);
    // The first PES (2 frames) came before the first video access unit was complete.
    assert_eq!(audio.len() as u64 + demuxer.stats().audio_before_video, 60);
    assert_eq!(demuxer.stats().audio_before_video, 2);
    assert_eq!(audio[1].dts.ticks - audio[0].dts.ticks, 1920);
    assert_eq!(audio[1].data.len(), 21, "ADTS header removed");
    let config = events.iter().find_map(|e| match e {
        IngestEvent::AudioConfig(c) => Some(c.clone()),
        _ => None,
    });
    assert_eq!(
        config.map(|c| c.asc),
        Some(Bytes::from_static(&[0x11, 0x90]))
    );
    assert_eq!(demuxer.stats().continuity_errors, 0);
    assert_eq!(demuxer.stats().malformed, 0);
}

#[test]
fn any_split_gives_the_same_events() {
    let bytes = stream(0);
    let (whole, _) = demux_all(&bytes, bytes.len());
    for split in [1, 7, 188, 1000] {
        assert_eq!(demux_all(&bytes, split).0, whole, "split {split}");
    }
}

#[test]
fn timestamps_cross_the_33_bit_wrap() {
    let start = (1u64 << 33) - 90_000; // wraps after 1 s
    let (events, _) = demux_all(&stream(start), 1316);
    let video = frames(&events, Track::Video);
    for pair in video.windows(2) {
        assert_eq!(pair[1].dts.ticks - pair[0].dts.ticks, 3000);
    }
    let audio = frames(&events, Track::Audio);
    assert!(audio.last().expect("audio").dts.ticks > 1 << 33);
}

#[test]
fn lost_packets_are_counted_and_only_lose_their_frame() {
    let mut bytes = stream(0);
    // Drop a packet in the middle of a video PES (not its first: a lost first packet also
    // takes the PES before it, whose end is only known from the next start).
    let middle = (40..)
        .find(|&i| {
            let header = &bytes[i * PACKET_SIZE..i * PACKET_SIZE + 3];
            header[1] == (VIDEO_PID >> 8) as u8 && header[2] == VIDEO_PID as u8
        })
        .expect("a video continuation packet");
    bytes.drain(middle * PACKET_SIZE..(middle + 1) * PACKET_SIZE);
    let (events, mut demuxer) = demux_all(&bytes, 1316);
    assert_eq!(demuxer.stats().continuity_errors, 1);
    let lost = 119
        - frames(&events, Track::Video).len()
        - frames(&events, Track::Audio).len()
        - demuxer.stats().audio_before_video as usize;
    assert_eq!(lost, 1, "only the damaged frame is dropped");
    assert!(matches!(
        demuxer.take_errors()[..],
        [TsError::Continuity { .. }]
    ));
}

#[test]
fn garbage_between_packets_resyncs() {
    let bytes = stream(0);
    let mut damaged = b"garbage!".to_vec();
    damaged.extend_from_slice(&bytes);
    let (events, demuxer) = demux_all(&damaged, 1316);
    assert_eq!(frames(&events, Track::Video).len(), 59);
    assert!(demuxer.stats().malformed > 0);
}

#[test]
fn b_frames_give_composition_offsets_across_the_wrap() {
    let mut mux = Muxer::default();
    mux.tables();
    // DTS just before the wrap, PTS already after it.
    mux.video(3000, (1 << 33) - 3000, true);
    mux.video(9000, 0, false);
    mux.video(12_000, 3000, false); // ends the PES before it
    let (events, _) = demux_all(&mux.out, 188);
    let video = frames(&events, Track::Video);
    assert_eq!(video[0].cts, 6000);
    assert_eq!(video[1].cts, 9000);
    assert_eq!(video[1].dts.ticks - video[0].dts.ticks, 3000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Arbitrary bytes in arbitrary pieces: no panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4000), split in 1usize..1400) {
        demux_all(&bytes, split);
    }

    /// Arbitrary packets with a valid sync byte and PIDs the demuxer listens on: no panic.
    #[test]
    fn arbitrary_packets_never_panic(packets in prop::collection::vec((0usize..4, prop::collection::vec(any::<u8>(), 184)), 1..40)) {
        let mut bytes = stream(0)[..2 * PACKET_SIZE].to_vec();
        for (which, payload) in packets {
            let pid = [0, PMT_PID, VIDEO_PID, AUDIO_PID][which];
            bytes.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, payload[0] | 0x10]);
            bytes.extend_from_slice(&payload[..184]);
        }
        demux_all(&bytes, 1316);
    }

    /// A valid stream with random bytes overwritten: no panic, and the frames that survive keep
    /// non-decreasing video decode times.
    #[test]
    fn damaged_streams_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..30)) {
        let mut bytes = stream(5_000);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let (events, _) = demux_all(&bytes, 1316);
        for e in events {
            if let IngestEvent::Frame(f) = e {
                prop_assert!(!f.data.is_empty());
            }
        }
    }
}

/// Round trip: a TS file ffmpeg makes from a known clip (3 s of 25 fps testsrc2 with a 1 s GOP,
/// 48 kHz AAC) demuxes to the expected frames and timestamps.
#[test]
fn ffmpeg_made_transport_stream_round_trip() {
    let path = std::env::temp_dir().join(format!("headwater-ts-{}.ts", std::process::id()));
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-bf",
            "2",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&path)
        .status();
    let Ok(status) = status else {
        panic!("ffmpeg is not installed: run scripts/test.sh, which installs it");
    };
    assert!(status.success(), "ffmpeg failed");
    let bytes = std::fs::read(&path).expect("read the TS file");
    let _ = std::fs::remove_file(&path);
    let (events, demuxer) = demux_all(&bytes, 1316);
    let video = frames(&events, Track::Video);
    let audio = frames(&events, Track::Audio);
    assert_eq!(
        video.len(),
        74,
        "3 s at 25 fps, the last one dropped at the end"
    );
    assert_eq!(video.iter().filter(|f| f.keyframe).count(), 3, "1 s GOPs");
    assert!(video[0].keyframe);
    // 3 s of 48 kHz audio in 1024-sample frames (the encoder adds a priming frame or two).
    assert!(
        (140..=143).contains(&audio.len()),
        "{} audio frames",
        audio.len()
    );
    // ffmpeg starts the mpegts clock at 1.4 s; frames are 3600 ticks apart in decode order.
    let first = video[0].dts.ticks;
    assert!((120_000..=130_000).contains(&first), "first DTS {first}");
    for pair in video.windows(2) {
        assert_eq!(pair[1].dts.ticks - pair[0].dts.ticks, 3600);
    }
    // B-frames: some composition offsets are positive, presentation order differs.
    assert!(video.iter().any(|f| f.cts > 0));
    for pair in audio.windows(2) {
        assert_eq!(pair[1].dts.ticks - pair[0].dts.ticks, 1920);
    }
    assert_eq!(demuxer.stats().continuity_errors, 0);
    assert_eq!(demuxer.stats().malformed, 0);
    let config = events.iter().find_map(|e| match e {
        IngestEvent::VideoConfig(c) => Some(c.clone()),
        _ => None,
    });
    assert_eq!(config.map(|c| (c.width, c.height)), Some((320, 240)));
    // ffmpeg puts the first audio PES after several video frames: video is held back so both
    // configurations come before the first frame, as over RTMP.
    assert!(matches!(events[0], IngestEvent::VideoConfig(_)));
    assert!(matches!(events[1], IngestEvent::AudioConfig(_)));
}
