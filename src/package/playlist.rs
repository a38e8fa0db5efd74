//! Playlist state and rendering (m3u8-rs): one [`MediaPlaylist`] per rendition and the
//! multivariant playlist of a stream.
//!
//! Holds the sliding window, media and discontinuity sequence numbers, the fixed target duration
//! and ENDLIST; renders once per change into shared bytes. URIs are relative to the playlist.

use super::segmenter::{InitSection, Segment};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// File name of a segment inside its rendition directory.
pub fn segment_file(instance: &str, sequence: u64) -> String {
    format!("seg-{instance}-{sequence}.m4s")
}

/// File name of an init section inside its rendition directory.
pub fn init_file(instance: &str, init_id: u32) -> String {
    format!("init-{instance}-{init_id}.mp4")
}

#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    duration: Duration,
    discontinuity: bool,
    program_date_time: SystemTime,
    init: Arc<InitSection>,
}

/// One rendition's live media playlist.
#[derive(Debug)]
pub struct MediaPlaylist {
    instance: String,
    window: usize,
    configured_target: Duration,
    target_duration: Option<u64>,
    entries: VecDeque<Entry>,
    media_sequence: u64,
    discontinuity_sequence: u64,
    ended: bool,
}

/// Seconds rounded to the nearest integer, as HLS compares EXTINF with EXT-X-TARGETDURATION.
pub fn rounded_secs(duration: Duration) -> u64 {
    (duration.as_secs_f64() + 0.5).floor() as u64
}

impl MediaPlaylist {
    /// An empty playlist for one stream instance, listing `window` segments.
    pub fn new(instance: impl Into<String>, window: usize, configured_target: Duration) -> Self {
        Self {
            instance: instance.into(),
            window,
            configured_target,
            target_duration: None,
            entries: VecDeque::new(),
            media_sequence: 0,
            discontinuity_sequence: 0,
            ended: false,
        }
    }

    /// EXT-X-TARGETDURATION, fixed by the first segment: the configured target, or the first
    /// segment's rounded duration when the source's keyframes are sparser than that.
    pub fn target_duration(&self) -> Option<u64> {
        self.target_duration
    }

    /// Fixes EXT-X-TARGETDURATION before the first segment, so every rendition of a stream
    /// advertises the same value (rule 2); no effect once it is set.
    pub fn fix_target_duration(&mut self, secs: u64) {
        self.target_duration.get_or_insert(secs.max(1));
    }

    /// True when a segment would break rule 1 (its rounded duration exceeds the target).
    pub fn overlong(&self, segment: &Segment) -> bool {
        self.target_duration
            .is_some_and(|t| rounded_secs(segment.duration) > t)
    }

    /// Appends a segment; returns the sequence numbers that slid out of the window.
    pub fn push(&mut self, segment: &Segment) -> Vec<u64> {
        if self.target_duration.is_none() {
            self.target_duration = Some(
                rounded_secs(self.configured_target)
                    .max(rounded_secs(segment.duration))
                    .max(1),
            );
        }
        self.entries.push_back(Entry {
            sequence: segment.sequence,
            duration: segment.duration,
            discontinuity: segment.discontinuity,
            program_date_time: segment.program_date_time,
            init: segment.init.clone(),
        });
        let mut removed = Vec::new();
        while self.entries.len() > self.window {
            if let Some(old) = self.entries.pop_front() {
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                removed.push(old.sequence);
            }
        }
        if let Some(front) = self.entries.front() {
            self.media_sequence = front.sequence;
        }
        removed
    }

    /// Marks the stream finished (EXT-X-ENDLIST).
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// True once EXT-X-ENDLIST is set.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Number of listed segments.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no segment is listed yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Renders the playlist text.
    pub fn render(&self) -> Bytes {
        let mut previous_init: Option<u32> = None;
        let segments = self
            .entries
            .iter()
            .map(|entry| {
                let map = (previous_init != Some(entry.init.id)).then(|| m3u8_rs::Map {
                    uri: init_file(&self.instance, entry.init.id),
                    ..Default::default()
                });
                previous_init = Some(entry.init.id);
                m3u8_rs::MediaSegment {
                    uri: segment_file(&self.instance, entry.sequence),
                    duration: entry.duration.as_secs_f32(),
                    discontinuity: entry.discontinuity,
                    map,
                    program_date_time: Some(
                        chrono::DateTime::<chrono::Utc>::from(entry.program_date_time)
                            .fixed_offset(),
                    ),
                    ..Default::default()
                }
            })
            .collect();
        let playlist = m3u8_rs::MediaPlaylist {
            version: Some(7),
            target_duration: self
                .target_duration
                .unwrap_or_else(|| rounded_secs(self.configured_target)),
            media_sequence: self.media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            end_list: self.ended,
            independent_segments: true,
            segments,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(256 + 160 * self.entries.len());
        playlist
            .write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        Bytes::from(out)
    }
}

/// What the multivariant playlist says about one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantInfo {
    /// URI of the media playlist, relative to the multivariant playlist.
    pub uri: String,
    /// Peak segment bitrate in bits per second (BANDWIDTH).
    pub bandwidth: u64,
    /// Average bitrate in bits per second (AVERAGE-BANDWIDTH).
    pub average_bandwidth: u64,
    /// CODECS, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Width and height in pixels.
    pub resolution: Option<(u64, u64)>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// Renders a multivariant playlist listing `variants`.
pub fn render_multivariant(variants: &[VariantInfo]) -> Bytes {
    let playlist = m3u8_rs::MasterPlaylist {
        version: Some(7),
        independent_segments: true,
        variants: variants
            .iter()
            .map(|v| m3u8_rs::VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: Some(v.average_bandwidth),
                codecs: Some(v.codecs.clone()),
                resolution: v
                    .resolution
                    .map(|(width, height)| m3u8_rs::Resolution { width, height }),
                frame_rate: v.frame_rate.map(|f| (f * 1000.0).round() / 1000.0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(256);
    playlist
        .write_to(&mut out)
        .expect("writing to a Vec cannot fail");
    Bytes::from(out)
}

/// Running bitrate statistics of one rendition, for BANDWIDTH and AVERAGE-BANDWIDTH.
#[derive(Debug, Default, Clone)]
pub struct BitrateStats {
    peak_bps: u64,
    total_bits: u64,
    total_secs: f64,
}

impl BitrateStats {
    /// Accounts one segment; returns true when the peak grew.
    pub fn record(&mut self, bytes: usize, duration: Duration) -> bool {
        let secs = duration.as_secs_f64();
        if secs <= 0.0 {
            return false;
        }
        let bits = bytes as u64 * 8;
        self.total_bits += bits;
        self.total_secs += secs;
        let bps = (bits as f64 / secs) as u64;
        if bps > self.peak_bps {
            self.peak_bps = bps;
            return true;
        }
        false
    }

    /// Highest segment bitrate seen, in bits per second.
    pub fn peak_bps(&self) -> u64 {
        self.peak_bps
    }

    /// Mean bitrate over every segment, in bits per second.
    pub fn average_bps(&self) -> u64 {
        if self.total_secs > 0.0 {
            (self.total_bits as f64 / self.total_secs) as u64
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn init(id: u32) -> Arc<InitSection> {
        Arc::new(InitSection {
            id,
            data: Bytes::new(),
            video: None,
            audio: None,
        })
    }

    fn segment(sequence: u64, millis: u64, discontinuity: bool, init_id: u32) -> Segment {
        Segment {
            sequence,
            start: headwater_ingest::MediaTime::new(0, 90_000),
            duration: Duration::from_millis(millis),
            data: Bytes::new(),
            init: init(init_id),
            discontinuity,
            program_date_time: SystemTime::UNIX_EPOCH
                + Duration::from_secs(1_700_000_000 + sequence * 6),
            video_frames: 1,
        }
    }

    fn parse(bytes: &[u8]) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist_res(bytes) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn window_slides_and_sequences_follow() {
        let mut playlist = MediaPlaylist::new("abc", 6, Duration::from_secs(6));
        for n in 0..9 {
            let removed = playlist.push(&segment(n, 6000, n == 4, 0));
            assert_eq!(removed, if n >= 6 { vec![n - 6] } else { vec![] });
        }
        let parsed = parse(&playlist.render());
        assert_eq!(parsed.media_sequence, 3);
        assert_eq!(
            parsed.discontinuity_sequence, 0,
            "the discontinuity is still listed"
        );
        assert_eq!(parsed.segments.len(), 6);
        assert_eq!(parsed.segments[0].uri, "seg-abc-3.m4s");
        assert!(parsed.segments[1].discontinuity);
        assert_eq!(
            parsed.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init-abc-0.mp4")
        );
        for n in 9..11 {
            playlist.push(&segment(n, 6000, false, 0));
        }
        let parsed = parse(&playlist.render());
        assert_eq!(parsed.media_sequence, 5);
        assert_eq!(
            parsed.discontinuity_sequence, 1,
            "rises when the discontinuity leaves"
        );
        assert!(parsed.segments.iter().all(|s| !s.discontinuity));
        assert!(!parsed.end_list);
        playlist.end();
        let text = playlist.render();
        assert!(parse(&text).end_list);
        assert!(String::from_utf8_lossy(&text).contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    }

    #[test]
    fn target_duration_is_fixed_by_the_first_segment() {
        let mut playlist = MediaPlaylist::new("abc", 6, Duration::from_secs(2));
        playlist.push(&segment(0, 4000, false, 0));
        assert_eq!(playlist.target_duration(), Some(4));
        assert!(playlist.overlong(&segment(1, 4600, false, 0)));
        assert!(!playlist.overlong(&segment(1, 4400, false, 0)));
        playlist.push(&segment(1, 1000, false, 0));
        assert_eq!(parse(&playlist.render()).target_duration, 4);
    }

    #[test]
    fn multivariant_lists_every_attribute() {
        let text = render_multivariant(&[VariantInfo {
            uri: "source/index.m3u8".into(),
            bandwidth: 1_100_000,
            average_bandwidth: 900_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(29.97003),
        }]);
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
        assert!(text.contains(
            "BANDWIDTH=1100000,AVERAGE-BANDWIDTH=900000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.97"
        ), "{text}");
    }

    #[test]
    fn bitrate_stats() {
        let mut stats = BitrateStats::default();
        assert!(stats.record(1_000_000, Duration::from_secs(8)));
        assert!(!stats.record(500_000, Duration::from_secs(8)));
        assert_eq!(stats.peak_bps(), 1_000_000);
        assert_eq!(stats.average_bps(), 750_000);
    }

    proptest! {
        /// Render -> parse round-trip over random segment histories: the parsed playlist says
        /// exactly what the state holds, and the rules on sequences hold.
        #[test]
        fn render_parse_round_trip(
            window in 6usize..10,
            history in prop::collection::vec((500u64..7000, any::<bool>(), 0u32..3), 1..40),
        ) {
            let mut playlist = MediaPlaylist::new("x1", window, Duration::from_secs(6));
            let mut previous: Option<m3u8_rs::MediaPlaylist> = None;
            let mut discontinuities_removed = 0;
            let mut all = Vec::new();
            for (n, (millis, discontinuity, init_id)) in history.iter().enumerate() {
                let s = segment(n as u64, *millis, *discontinuity && n > 0, *init_id);
                all.push(s.clone());
                for removed in playlist.push(&s) {
                    if all[removed as usize].discontinuity {
                        discontinuities_removed += 1;
                    }
                }
                let parsed = parse(&playlist.render());
                let first = n.saturating_sub(window - 1);
                prop_assert_eq!(parsed.media_sequence, first as u64);
                prop_assert_eq!(parsed.discontinuity_sequence, discontinuities_removed);
                prop_assert_eq!(parsed.segments.len(), n - first + 1);
                for (listed, original) in parsed.segments.iter().zip(&all[first..]) {
                    prop_assert_eq!(&listed.uri, &segment_file("x1", original.sequence));
                    prop_assert!((f64::from(listed.duration) - original.duration.as_secs_f64()).abs() < 0.001);
                    prop_assert_eq!(listed.discontinuity, original.discontinuity);
                    prop_assert!(listed.program_date_time.is_some());
                }
                prop_assert!(parsed.segments[0].map.is_some());
                if let Some(previous) = &previous {
                    prop_assert_eq!(previous.target_duration, parsed.target_duration);
                }
                previous = Some(parsed);
            }
        }
    }
}
