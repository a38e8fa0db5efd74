//! Typed media frames: what every ingest protocol produces and the packager consumes.
//!
//! Frames carry codec-native payloads already in the form CMAF wants: H.264 as length-prefixed
//! NAL units (AVCC, 4-byte lengths) and AAC as raw access units (no ADTS header).

use bytes::Bytes;
use std::fmt;

/// Which elementary stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// The H.264 video track.
    Video,
    /// The AAC audio track.
    Audio,
}

/// A point on a media timeline: `ticks` counted at `timescale` ticks per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime {
    /// Number of ticks since the timeline's origin (may be negative before it).
    pub ticks: i64,
    /// Ticks per second; never zero.
    pub timescale: u32,
}

impl MediaTime {
    /// Milliseconds timescale, as carried by RTMP/FLV timestamps.
    pub const MILLIS: u32 = 1000;

    /// A time of `ticks` at `timescale` ticks per second.
    pub const fn new(ticks: i64, timescale: u32) -> Self {
        Self { ticks, timescale }
    }

    /// A time in milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Self::new(ms, Self::MILLIS)
    }

    /// The same instant at another timescale, rounded to the nearest tick.
    pub fn rescale(self, timescale: u32) -> Self {
        if timescale == self.timescale {
            return self;
        }
        let num = i128::from(self.ticks) * i128::from(timescale);
        let den = i128::from(self.timescale.max(1));
        // Round half away from zero so that symmetric inputs give symmetric outputs.
        let q = if num >= 0 {
            (num + den / 2) / den
        } else {
            (num - den / 2) / den
        };
        Self::new(
            q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            timescale,
        )
    }

    /// Seconds as a float, for rendering and logging only.
    pub fn as_secs_f64(self) -> f64 {
        self.ticks as f64 / f64::from(self.timescale.max(1))
    }
}

/// One encoded access unit on a track.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The track the frame belongs to.
    pub track: Track,
    /// Decode timestamp.
    pub dts: MediaTime,
    /// Presentation minus decode time, in the same timescale as `dts` (H.264 B-frames; 0 for audio).
    pub cts: i32,
    /// True for an IDR (video) and for every audio frame.
    pub keyframe: bool,
    /// AVCC NAL units (video) or one raw AAC access unit (audio).
    pub data: Bytes,
}

impl fmt::Debug for MediaFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaFrame")
            .field("track", &self.track)
            .field("dts", &self.dts)
            .field("cts", &self.cts)
            .field("keyframe", &self.keyframe)
            .field("len", &self.data.len())
            .finish()
    }
}

/// H.264 decoder configuration, from an AVCDecoderConfigurationRecord and its first SPS.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// The AVCDecoderConfigurationRecord (ISO 14496-15), copied verbatim into `avcC`.
    pub record: Bytes,
    /// `profile_idc` of the first SPS.
    pub profile_idc: u8,
    /// The constraint-set flags byte of the first SPS.
    pub constraint_flags: u8,
    /// `level_idc` of the first SPS.
    pub level_idc: u8,
    /// Display width in pixels (after cropping).
    pub width: u32,
    /// Display height in pixels (after cropping).
    pub height: u32,
    /// Frame rate from the SPS VUI timing info, when present.
    pub frame_rate: Option<f64>,
}

impl AvcConfig {
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// AAC decoder configuration, from an AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig (ISO 14496-3), copied verbatim into `esds`.
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = HE-AAC, ...).
    pub object_type: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 = mono, 2 = stereo, ...).
    pub channels: u8,
}

impl AacConfig {
    /// Samples per AAC access unit (1024 for every object type we accept).
    pub const SAMPLES_PER_FRAME: u32 = 1024;

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// What a publisher session yields, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// New or changed video decoder configuration; applies to the frames that follow.
    VideoConfig(AvcConfig),
    /// New or changed audio decoder configuration; applies to the frames that follow.
    AudioConfig(AacConfig),
    /// One access unit.
    Frame(MediaFrame),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest() {
        assert_eq!(MediaTime::from_millis(1).rescale(90_000).ticks, 90);
        assert_eq!(MediaTime::new(1, 3).rescale(1000).ticks, 333);
        assert_eq!(MediaTime::new(2, 3).rescale(1000).ticks, 667);
        assert_eq!(MediaTime::new(-2, 3).rescale(1000).ticks, -667);
    }

    #[test]
    fn codec_strings() {
        let avc = AvcConfig {
            record: Bytes::new(),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width: 1280,
            height: 720,
            frame_rate: None,
        };
        assert_eq!(avc.codec_string(), "avc1.64001f");
        let aac = AacConfig {
            asc: Bytes::new(),
            object_type: 2,
            sample_rate: 48_000,
            channels: 2,
        };
        assert_eq!(aac.codec_string(), "mp4a.40.2");
    }
}
