//! The segmenter: cuts one rendition's frames into CMAF segments on keyframes.
//!
//! A segment closes at the first video keyframe at or after the target duration (or earlier, when
//! the codec configuration changes). Audio frames are assigned by decode time, so a segment's
//! audio covers the same span as its video. The output timeline starts at 0 on the stream's first
//! keyframe and continues across publisher reconnects (the next segment is marked discontinuous).
//! Pure state machine: no I/O, no clocks except the wall time passed in.

use super::fmp4::{self, Sample, TrackFragment};
use bytes::Bytes;
use headwater_ingest::{AacConfig, AvcConfig, IngestEvent, MediaFrame, MediaTime, Track};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Ticks per second of the segmenter's internal timeline (the video track's timescale).
const TIMESCALE: u32 = fmp4::VIDEO_TIMESCALE;

/// Video decode-time distance past a pending cut after which we stop waiting for audio.
const AUDIO_WAIT_TICKS: i64 = TIMESCALE as i64;

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

/// Frames collected for the segment being built.
#[derive(Debug)]
struct Building {
    start: i64,
    video: Vec<MediaFrame>,
    audio: Vec<MediaFrame>,
    bytes: usize,
}

impl Building {
    fn new(start: i64) -> Self {
        Self {
            start,
            video: Vec::new(),
            audio: Vec::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, frame: MediaFrame) {
        self.bytes += frame.data.len();
        match frame.track {
            Track::Video => self.video.push(frame),
            Track::Audio => self.audio.push(frame),
        }
    }
}

/// A segment being built grew past what any sane keyframe interval produces.
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

/// No segment may hold more than this (fMP4 offsets are 32-bit; memory is bounded per stream).
const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;
/// No segment may span more than this many target durations (and at least 30 s).
const MAX_SEGMENT_TARGETS: i64 = 5;

/// Where a publisher's timeline sits on the output timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Added to input decode times (in [`TIMESCALE`] ticks).
    offset: i64,
    /// Output decode time at which `wall` was observed.
    out_time: i64,
    wall: SystemTime,
}

/// Cuts frames into segments; one per rendition.
#[derive(Debug)]
pub struct Segmenter {
    target: i64,
    video_config: Option<AvcConfig>,
    audio_config: Option<AacConfig>,
    init: Option<Arc<InitSection>>,
    config_changed: bool,
    anchor: Option<Anchor>,
    current: Option<Building>,
    /// A keyframe closed `current` at this time; waiting for audio to pass it.
    pending_cut: Option<(i64, Building)>,
    next_sequence: u64,
    discontinuity_next: bool,
    /// Output time where the previous publisher's media ended.
    timeline_end: i64,
    last_video_duration: i64,
    next_audio_tick: Option<u64>,
    last_init_id: Option<u32>,
    dropped_frames: u64,
}

impl Segmenter {
    /// A segmenter cutting at `target` (rounded to whole milliseconds).
    pub fn new(target: Duration) -> Self {
        let target_ms = i64::try_from(target.as_millis()).unwrap_or(i64::MAX / 1000);
        Self {
            target: MediaTime::from_millis(target_ms).rescale(TIMESCALE).ticks,
            video_config: None,
            audio_config: None,
            init: None,
            config_changed: false,
            anchor: None,
            current: None,
            pending_cut: None,
            next_sequence: 0,
            discontinuity_next: false,
            timeline_end: 0,
            last_video_duration: i64::from(TIMESCALE / 30),
            next_audio_tick: None,
            last_init_id: None,
            dropped_frames: 0,
        }
    }

    /// Frames dropped because they came before the first keyframe or had no usable config.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Feeds one ingest event; returns the segments it completed (zero or one), or an error
    /// when the publisher's keyframes are too far apart to segment (what was collected since the
    /// last cut is dropped; the caller should disconnect the publisher).
    pub fn push(
        &mut self,
        event: IngestEvent,
        now: SystemTime,
    ) -> Result<Vec<Segment>, SegmentError> {
        let segments = self.push_event(event, now);
        self.check_limits()?;
        Ok(segments)
    }

    fn check_limits(&mut self) -> Result<(), SegmentError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        let limit_ticks = (self.target * MAX_SEGMENT_TARGETS).max(30 * i64::from(TIMESCALE));
        let span = current
            .video
            .last()
            .map_or(0, |f| f.dts.ticks - current.start);
        let error = if span > limit_ticks {
            let secs = |t: i64| u64::try_from(t / i64::from(TIMESCALE)).unwrap_or(0);
            Some(SegmentError::KeyframeIntervalTooLong {
                seconds: secs(span),
                limit: secs(limit_ticks),
            })
        } else if current.bytes > MAX_SEGMENT_BYTES {
            Some(SegmentError::TooLarge {
                limit: MAX_SEGMENT_BYTES,
            })
        } else {
            None
        };
        match error {
            Some(error) => {
                self.current = None;
                self.pending_cut = None;
                Err(error)
            }
            None => Ok(()),
        }
    }

    fn push_event(&mut self, event: IngestEvent, now: SystemTime) -> Vec<Segment> {
        match event {
            IngestEvent::VideoConfig(config) => {
                if self.video_config.as_ref() != Some(&config) {
                    self.config_changed = self.init.is_some();
                    self.video_config = Some(config);
                }
                Vec::new()
            }
            IngestEvent::AudioConfig(config) => {
                if self.audio_config.as_ref() != Some(&config) {
                    self.config_changed = self.init.is_some();
                    self.audio_config = Some(config);
                }
                Vec::new()
            }
            IngestEvent::Frame(frame) => self.push_frame(frame, now),
        }
    }

    /// The publisher left: closes what was collected and prepares for a reconnect, whose first
    /// segment will be marked discontinuous.
    pub fn publisher_left(&mut self) -> Vec<Segment> {
        let mut out = Vec::new();
        if let Some((cut, next)) = self.pending_cut.take() {
            out.extend(self.close(cut));
            self.current = Some(next);
        }
        if let Some(end) = self
            .current
            .as_ref()
            .and_then(|b| b.video.last())
            .map(|f| f.dts.ticks + self.last_video_duration)
        {
            out.extend(self.close(end));
            self.timeline_end = end;
        }
        self.current = None;
        self.anchor = None;
        self.next_audio_tick = None;
        self.discontinuity_next = self.next_sequence > 0;
        out
    }

    fn push_frame(&mut self, mut frame: MediaFrame, now: SystemTime) -> Vec<Segment> {
        let input = frame.dts.rescale(TIMESCALE).ticks;
        let cts_scale = frame.dts.timescale;
        frame.cts = i32::try_from(
            MediaTime::new(i64::from(frame.cts), cts_scale)
                .rescale(TIMESCALE)
                .ticks,
        )
        .unwrap_or(0);
        let anchor = match self.anchor {
            Some(anchor) => anchor,
            None if frame.track == Track::Video
                && frame.keyframe
                && self.video_config.is_some() =>
            {
                let anchor = Anchor {
                    offset: self.timeline_end - input,
                    out_time: self.timeline_end,
                    wall: now,
                };
                self.anchor = Some(anchor);
                anchor
            }
            None => {
                self.dropped_frames += 1;
                return Vec::new();
            }
        };
        let dts = input + anchor.offset;
        frame.dts = MediaTime::new(dts, TIMESCALE);
        match frame.track {
            Track::Video => self.push_video(frame),
            Track::Audio => self.push_audio(frame),
        }
    }

    fn push_video(&mut self, frame: MediaFrame) -> Vec<Segment> {
        let dts = frame.dts.ticks;
        if let Some((cut, next)) = &mut self.pending_cut {
            let waited_too_long = dts - *cut > AUDIO_WAIT_TICKS;
            let cut = *cut;
            next.add(frame);
            return if waited_too_long {
                self.finish_cut(cut)
            } else {
                Vec::new()
            };
        }
        let Some(current) = &mut self.current else {
            if !frame.keyframe {
                self.dropped_frames += 1;
                return Vec::new();
            }
            if std::mem::take(&mut self.config_changed) {
                self.init = None;
            }
            self.ensure_init();
            let mut building = Building::new(dts);
            building.add(frame);
            self.current = Some(building);
            return Vec::new();
        };
        let due = dts - current.start >= self.target || self.config_changed;
        if frame.keyframe && due && !current.video.is_empty() {
            let mut next = Building::new(dts);
            next.add(frame);
            self.pending_cut = Some((dts, next));
            if self.audio_config.is_none() || self.init.as_ref().is_some_and(|i| i.audio.is_none())
            {
                return self.finish_cut(dts);
            }
            return Vec::new();
        }
        current.add(frame);
        Vec::new()
    }

    fn push_audio(&mut self, frame: MediaFrame) -> Vec<Segment> {
        if self.init.as_ref().is_some_and(|i| i.audio.is_none()) {
            self.dropped_frames += 1;
            return Vec::new();
        }
        let dts = frame.dts.ticks;
        if let Some((cut, next)) = &mut self.pending_cut {
            if dts >= *cut {
                let cut = *cut;
                next.add(frame);
                return self.finish_cut(cut);
            }
        }
        match &mut self.current {
            Some(current) if dts >= current.start => current.add(frame),
            _ => self.dropped_frames += 1,
        }
        Vec::new()
    }

    /// Closes `current` at `cut` and starts the pending next segment.
    fn finish_cut(&mut self, cut: i64) -> Vec<Segment> {
        let Some((_, next)) = self.pending_cut.take() else {
            return Vec::new();
        };
        let segment = self.close(cut);
        self.current = Some(next);
        if self.config_changed {
            self.config_changed = false;
            self.init = None;
        }
        self.ensure_init();
        segment.into_iter().collect()
    }

    fn ensure_init(&mut self) {
        if self.init.is_some() {
            return;
        }
        let id = self.last_init_id.map_or(0, |id| id + 1);
        self.last_init_id = Some(id);
        let data = fmp4::write_init(self.video_config.as_ref(), self.audio_config.as_ref());
        self.init = Some(Arc::new(InitSection {
            id,
            data,
            video: self.video_config.clone(),
            audio: self.audio_config.clone(),
        }));
        self.next_audio_tick = None;
    }

    /// Muxes `current` as one segment ending at `end` (output ticks).
    fn close(&mut self, end: i64) -> Option<Segment> {
        let building = self.current.take()?;
        let init = self.init.clone()?;
        let anchor = self.anchor?;
        if building.video.is_empty() {
            return None;
        }
        let mut video = Vec::with_capacity(building.video.len());
        for (i, frame) in building.video.iter().enumerate() {
            let next = building.video.get(i + 1).map_or(end, |f| f.dts.ticks);
            let duration = (next - frame.dts.ticks).max(1);
            self.last_video_duration = duration;
            video.push(Sample {
                duration: u32::try_from(duration).unwrap_or(u32::MAX),
                cts_offset: frame.cts,
                keyframe: frame.keyframe,
                data: frame.data.clone(),
            });
        }
        let video_base = u64::try_from(building.start).unwrap_or(0);
        let mut fragments = vec![TrackFragment {
            track_id: fmp4::VIDEO_TRACK_ID,
            base_decode_time: video_base,
            samples: &video,
        }];
        let audio: Vec<Sample>;
        if let (Some(config), Some(first)) = (&init.audio, building.audio.first()) {
            let per_frame = AacConfig::SAMPLES_PER_FRAME;
            let actual = u64::try_from(first.dts.rescale(config.sample_rate).ticks).unwrap_or(0);
            // Keep audio contiguous across segments unless the publisher really skipped audio.
            let base = match self.next_audio_tick {
                Some(expected) if expected.abs_diff(actual) <= u64::from(per_frame) => expected,
                _ => actual,
            };
            audio = building
                .audio
                .iter()
                .map(|f| Sample {
                    duration: per_frame,
                    cts_offset: 0,
                    keyframe: true,
                    data: f.data.clone(),
                })
                .collect();
            self.next_audio_tick = Some(base + u64::from(per_frame) * audio.len() as u64);
            fragments.push(TrackFragment {
                track_id: fmp4::AUDIO_TRACK_ID,
                base_decode_time: base,
                samples: &audio,
            });
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let data = fmp4::write_segment(sequence as u32, &fragments);
        let since_anchor = MediaTime::new(building.start - anchor.out_time, TIMESCALE);
        let program_date_time =
            anchor.wall + Duration::from_secs_f64(since_anchor.as_secs_f64().max(0.0));
        let discontinuity = std::mem::take(&mut self.discontinuity_next);
        Some(Segment {
            sequence,
            start: MediaTime::new(building.start, TIMESCALE),
            duration: Duration::from_secs_f64(
                MediaTime::new(end - building.start, TIMESCALE)
                    .as_secs_f64()
                    .max(0.0),
            ),
            data,
            init,
            discontinuity,
            program_date_time,
            video_frames: u32::try_from(video.len()).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
