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
fn rounded_secs(duration: Duration) -> u64 {
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
