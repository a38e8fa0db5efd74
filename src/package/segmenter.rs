//! Segments and init sections (and, for the unit tests, a single-rendition `Segmenter`).
//!
//! A segment closes at the first video keyframe at or after the target duration (or earlier, when
//! the codec configuration changes). Audio frames are assigned by decode time, so a segment's
//! audio covers the same span as its video. The output timeline starts at 0 on the stream's first
//! keyframe and continues across publisher reconnects (the next segment is marked discontinuous).
//! The decision is the stream's [`Cadence`]; the cutting is a [`Cutter`] per rendition.
//! Pure state machine: no I/O, no clocks except the wall time passed in.

#[cfg(test)]
use super::cutter::Cutter;
use crate::transcode::gop::KeyframeIntervalTooLong;
#[cfg(test)]
use crate::transcode::gop::{Cadence, Cue, CutMode};
use bytes::Bytes;
#[cfg(test)]
use headwater_ingest::IngestEvent;
use headwater_ingest::{AacConfig, AvcConfig, MediaTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An init section: the `ftyp`+`moov` that every following segment needs.
#[derive(Debug, Clone, PartialEq)]
pub struct InitSection {
    /// Counts init changes within one stream instance, from 0.
    pub id: u32,
    /// The init segment bytes.
    pub data: Bytes,
    /// Video configuration, when the rendition has video.
    pub video: Option<AvcConfig>,
    /// Audio configuration, when the rendition has audio.
    pub audio: Option<AacConfig>,
}

impl InitSection {
    /// RFC 6381 CODECS value for every track, e.g. `avc1.64001f,mp4a.40.2`.
    pub fn codecs(&self) -> String {
        let video = self.video.as_ref().map(AvcConfig::codec_string);
        let audio = self.audio.as_ref().map(AacConfig::codec_string);
        video.into_iter().chain(audio).collect::<Vec<_>>().join(",")
    }
}

/// One finished media segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number, continuous for the stream's lifetime.
    pub sequence: u64,
    /// Decode time of the first video frame on the output timeline.
    pub start: MediaTime,
    /// Media duration (from the first video frame to the next segment's first).
    pub duration: Duration,
    /// The `styp`+`moof`+`mdat` bytes.
    pub data: Bytes,
    /// The init section this segment decodes with.
    pub init: Arc<InitSection>,
    /// True for the first segment after a publisher reconnect (EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
    /// Wall-clock time of the first frame (EXT-X-PROGRAM-DATE-TIME).
    pub program_date_time: SystemTime,
    /// Number of video frames.
    pub video_frames: u32,
}

/// Why segmenting a publisher's frames failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// No keyframe for too long: the publisher's GOP is far longer than the segment target.
    #[error("no keyframe for {seconds} s (limit {limit} s): keyframe interval too long")]
    KeyframeIntervalTooLong {
        /// Media seconds collected without a keyframe to cut on.
        seconds: u64,
        /// The limit.
        limit: u64,
    },
    /// The segment being built holds more bytes than the limit.
    #[error("segment exceeds {limit} bytes without a keyframe")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl From<KeyframeIntervalTooLong> for SegmentError {
    fn from(e: KeyframeIntervalTooLong) -> Self {
        Self::KeyframeIntervalTooLong {
            seconds: e.seconds,
            limit: e.limit,
        }
    }
}

/// One rendition cut on its own keyframes: a [`Cadence`] in keyframe mode deciding for one
/// [`Cutter`]. The stream task uses the two separately (one cadence, a cutter per rendition);
/// this single-rendition form drives them together in the unit tests below.
#[cfg(test)]
#[derive(Debug)]
pub struct Segmenter {
    cadence: Cadence,
    cutter: Cutter,
    dropped_frames: u64,
}

#[cfg(test)]
impl Segmenter {
    /// A segmenter cutting at the first keyframe at or after `target` (whole milliseconds).
    pub fn new(target: Duration) -> Self {
        Self {
            cadence: Cadence::new(CutMode::Keyframes, target),
            cutter: Cutter::new(),
            dropped_frames: 0,
        }
    }

    /// Frames dropped because they came before the first keyframe or had no usable config.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames + self.cutter.dropped_frames()
    }

    /// Feeds one ingest event; returns the segments it completed (zero or one), or an error
    /// when the publisher's keyframes are too far apart to segment (what was collected since the
    /// last cut is dropped; the caller should disconnect the publisher).
    pub fn push(
        &mut self,
        event: IngestEvent,
        now: SystemTime,
    ) -> Result<Vec<Segment>, SegmentError> {
        let frame = match event {
            IngestEvent::Frame(frame) => frame,
            config => {
                self.cadence.config(&config);
                self.cutter.config(config);
                return Ok(Vec::new());
            }
        };
        match self.cadence.frame(frame, now) {
            Ok(Cue::Video { frame, boundary }) => self.cutter.video(frame, boundary),
            Ok(Cue::Audio(frame)) => Ok(self.cutter.audio(frame)),
            Ok(Cue::Dropped) => {
                self.dropped_frames += 1;
                Ok(Vec::new())
            }
            Err(error) => {
                self.cutter.abandon();
                Err(error.into())
            }
        }
    }

    /// The publisher left: closes what was collected and prepares for a reconnect, whose first
    /// segment will be marked discontinuous.
    pub fn publisher_left(&mut self) -> Vec<Segment> {
        let end = self.cadence.publisher_left();
        self.cutter.publisher_left(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_ingest::{MediaFrame, Track};

    fn avc(width: u32) -> AvcConfig {
        AvcConfig {
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0]),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width,
            height: 360,
            frame_rate: Some(30.0),
        }
    }

    fn aac() -> AacConfig {
        AacConfig {
            asc: Bytes::from_static(&[0x11, 0x90]),
            object_type: 2,
            sample_rate: 48_000,
            channels: 2,
        }
    }

    fn video(ms: i64, keyframe: bool) -> IngestEvent {
        IngestEvent::Frame(MediaFrame {
            track: Track::Video,
            dts: MediaTime::from_millis(ms),
            cts: 0,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        })
    }

    fn audio(ms: i64) -> IngestEvent {
        IngestEvent::Frame(MediaFrame {
            track: Track::Audio,
            dts: MediaTime::from_millis(ms),
            cts: 0,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10]),
        })
    }

    /// Feeds `seconds` of 30 fps video (keyframe every `gop_ms`) and 48 kHz AAC, interleaved by
    /// time, starting at `start_ms` on the publisher's clock.
    fn feed(s: &mut Segmenter, start_ms: i64, seconds: i64, gop_ms: i64) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut events: Vec<(i64, IngestEvent)> = Vec::new();
        for i in 0..seconds * 30 {
            let t = i * 1000 / 30;
            events.push((t, video(start_ms + t, t % gop_ms == 0)));
        }
        for i in 0..seconds * 48_000 / 1024 {
            let t = i * 1024 * 1000 / 48_000;
            events.push((t, audio(start_ms + t)));
        }
        events.sort_by_key(|(t, _)| *t);
        for (_, event) in events {
            out.extend(step(s, event));
        }
        out
    }

    fn step(s: &mut Segmenter, event: IngestEvent) -> Vec<Segment> {
        s.push(event, SystemTime::UNIX_EPOCH)
            .expect("within limits")
    }

    fn configured() -> Segmenter {
        let mut s = Segmenter::new(Duration::from_secs(2));
        assert!(step(&mut s, IngestEvent::VideoConfig(avc(640))).is_empty());
        assert!(step(&mut s, IngestEvent::AudioConfig(aac())).is_empty());
        s
    }

    #[test]
    fn cuts_on_the_first_keyframe_at_or_after_the_target() {
        let mut s = configured();
        let segments = feed(&mut s, 0, 7, 1000);
        // Keyframes every second, target 2 s: cuts at 2, 4, 6 s; the tail waits for more.
        assert_eq!(
            segments.iter().map(|x| x.sequence).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for (i, segment) in segments.iter().enumerate() {
            assert_eq!(segment.start.ticks, i as i64 * 2 * 90_000);
            assert!(
                (segment.duration.as_secs_f64() - 2.0).abs() < 0.001,
                "{:?}",
                segment.duration
            );
            assert_eq!(segment.video_frames, 60);
            assert!(!segment.discontinuity);
            assert_eq!(segment.init.id, 0);
        }
        let tail = s.publisher_left();
        assert_eq!(tail.len(), 1);
        assert!(
            (tail[0].duration.as_secs_f64() - 1.0).abs() < 0.05,
            "{:?}",
            tail[0].duration
        );
    }

    #[test]
    fn sparse_keyframes_make_long_segments() {
        let mut s = configured();
        let segments = feed(&mut s, 0, 10, 3000);
        let durations: Vec<u64> = segments.iter().map(|x| x.duration.as_secs()).collect();
        assert_eq!(durations, [3, 3, 3]);
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut s = configured();
        for ms in [0, 33, 66] {
            assert!(step(&mut s, video(ms, false)).is_empty());
            assert!(step(&mut s, audio(ms)).is_empty());
        }
        assert_eq!(s.dropped_frames(), 6);
        let segments = feed(&mut s, 100, 5, 1000);
        assert_eq!(
            segments[0].start.ticks, 0,
            "the timeline starts at the first keyframe"
        );
    }

    #[test]
    fn reconnect_continues_timeline_and_sequence_with_a_discontinuity() {
        let mut s = configured();
        let mut segments = feed(&mut s, 5_000, 4, 1000);
        segments.extend(s.publisher_left());
        let end = segments
            .last()
            .map(|x| x.start.ticks + (x.duration.as_secs_f64() * 90_000.0).round() as i64);
        // The second publisher's clock starts at 0 again.
        let second = feed(&mut s, 0, 4, 1000);
        assert_eq!(second[0].sequence, segments.len() as u64);
        assert!(second[0].discontinuity);
        assert!(second[1..].iter().all(|x| !x.discontinuity));
        assert_eq!(
            Some(second[0].start.ticks),
            end,
            "timeline continues where it stopped"
        );
        assert_eq!(second[0].init.id, 0, "same parameters, same init");
    }

    #[test]
    fn new_codec_parameters_get_a_new_init_at_the_next_keyframe() {
        let mut s = configured();
        let first = feed(&mut s, 0, 3, 1000);
        assert_eq!(first.len(), 1);
        step(&mut s, IngestEvent::VideoConfig(avc(1280)));
        let more = feed(&mut s, 3_000, 3, 1000);
        // The change forces a cut at the next keyframe (3 s) even though only 1 s had passed.
        assert_eq!(more[0].init.id, 0);
        assert!((more[0].duration.as_secs_f64() - 1.0).abs() < 0.05);
        assert_eq!(more[1].init.id, 1);
        assert_eq!(more[1].init.video.as_ref().map(|v| v.width), Some(1280));
    }

    #[test]
    fn video_only_streams_cut_without_waiting_for_audio() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        step(&mut s, IngestEvent::VideoConfig(avc(640)));
        let mut segments = Vec::new();
        for i in 0..61 {
            segments.extend(step(&mut s, video(i * 1000 / 30, i % 30 == 0)));
        }
        assert_eq!(
            segments.len(),
            1,
            "cut as soon as the keyframe at 2 s arrives"
        );
        assert_eq!(segments[0].init.codecs(), "avc1.64001f");
    }

    #[test]
    fn audio_waits_for_the_cut() {
        let mut s = configured();
        let mut segments = Vec::new();
        for i in 0..60 {
            segments.extend(step(&mut s, video(i * 1000 / 30, i == 0)));
        }
        segments.extend(step(&mut s, audio(0)));
        // The keyframe at 2 s arrives before the audio up to it: no segment yet.
        segments.extend(step(&mut s, video(2000, true)));
        assert!(segments.is_empty());
        segments.extend(step(&mut s, audio(1990)));
        assert!(segments.is_empty());
        segments.extend(step(&mut s, audio(2011)));
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].init.codecs(), "avc1.64001f,mp4a.40.2");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use headwater_ingest::{MediaFrame, Track};

    #[test]
    fn a_publisher_without_keyframes_is_refused_not_buffered_forever() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        let config = AvcConfig {
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width: 640,
            height: 360,
            frame_rate: None,
        };
        s.push(IngestEvent::VideoConfig(config), SystemTime::UNIX_EPOCH)
            .expect("config");
        let frame = |ms: i64, keyframe: bool| {
            IngestEvent::Frame(MediaFrame {
                track: Track::Video,
                dts: MediaTime::from_millis(ms),
                cts: 0,
                keyframe,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            })
        };
        s.push(frame(0, true), SystemTime::UNIX_EPOCH)
            .expect("first keyframe");
        let mut error = None;
        for i in 1..40 * 30 {
            if let Err(e) = s.push(frame(i * 1000 / 30, false), SystemTime::UNIX_EPOCH) {
                error = Some((i, e));
                break;
            }
        }
        let (at, error) = error.expect("refused");
        assert_eq!(at, 30 * 30 + 1, "refused just past 30 s");
        assert_eq!(
            error.to_string(),
            "no keyframe for 30 s (limit 30 s): keyframe interval too long"
        );
        // Nothing held afterwards; the next keyframe starts cleanly.
        assert!(s.publisher_left().is_empty());
    }
}
