//! The cutter: builds one rendition's CMAF segments, cutting exactly where the stream's
//! [`Cadence`](crate::transcode::gop::Cadence) decided ([`Boundary`]).
//!
//! Frames arrive already on the output timeline. A video frame carrying a boundary closes the
//! segment being built and starts the next one (with the boundary's sequence number, date and
//! discontinuity flag), so every rendition of a stream has the same segments. Audio is assigned
//! by decode time: it is queued as it arrives (ahead of a transcoded rendition's video, or a
//! little behind the source's) and a closing segment takes the audio before its cut, waiting
//! for audio to pass the cut (at most 1 s of video). Pure state machine: no I/O, no clocks.

use super::fmp4::{self, Sample, TrackFragment};
use super::segmenter::{InitSection, Segment, SegmentError};
use crate::transcode::gop::Boundary;
use headwater_ingest::{AacConfig, AvcConfig, IngestEvent, MediaFrame, MediaTime};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Ticks per second of the timeline frames arrive on (the video track's timescale).
pub(super) const TIMESCALE: u32 = fmp4::VIDEO_TIMESCALE;
const _: () = assert!(TIMESCALE == crate::transcode::gop::TIMESCALE);

/// Video decode-time distance past a pending cut after which we stop waiting for audio.
const AUDIO_WAIT_TICKS: i64 = TIMESCALE as i64;
/// No segment may hold more than this (fMP4 offsets are 32-bit; memory is bounded per stream).
const MAX_SEGMENT_BYTES: usize = 256 * 1024 * 1024;
/// Audio frames queued ahead of a rendition's video at most (about 87 s at 48 kHz); older ones
/// are dropped, counted.
const MAX_QUEUED_AUDIO: usize = 4096;

/// Frames collected for one segment.
#[derive(Debug)]
struct Building {
    start: i64,
    boundary: Boundary,
    init: Arc<InitSection>,
    video: Vec<MediaFrame>,
    bytes: usize,
}

/// Cuts one rendition's frames where the boundaries say; see the module docs.
#[derive(Debug, Default)]
pub struct Cutter {
    video_config: Option<AvcConfig>,
    audio_config: Option<AacConfig>,
    init: Option<Arc<InitSection>>,
    config_changed: bool,
    current: Option<Building>,
    /// A boundary closed this segment at `cut`; waiting for audio to pass it.
    pending: Option<(i64, Building)>,
    audio: VecDeque<MediaFrame>,
    latest_audio: Option<i64>,
    next_audio_tick: Option<u64>,
    last_init_id: Option<u32>,
    last_video_duration: i64,
    dropped_frames: u64,
}

impl Cutter {
    /// A cutter with no configuration yet.
    pub fn new() -> Self {
        Self {
            last_video_duration: i64::from(TIMESCALE / 30),
            ..Self::default()
        }
    }

    /// Frames dropped: before the first boundary, without a usable config, or audio too late.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// The init section the next segment will use, once one exists.
    pub fn init(&self) -> Option<&Arc<InitSection>> {
        self.init.as_ref()
    }

    /// A new video or audio configuration; it takes effect at the next boundary.
    pub fn config(&mut self, event: IngestEvent) {
        match event {
            IngestEvent::VideoConfig(config) if self.video_config.as_ref() != Some(&config) => {
                self.config_changed = true;
                self.video_config = Some(config);
            }
            IngestEvent::AudioConfig(config) if self.audio_config.as_ref() != Some(&config) => {
                self.config_changed = true;
                self.audio_config = Some(config);
            }
            _ => {}
        }
    }

    /// One video frame (output timeline); `boundary` when a segment starts with it. Returns the
    /// segments it completed, or an error when the segment being built grew past the size limit
    /// (it is dropped).
    pub fn video(
        &mut self,
        frame: MediaFrame,
        boundary: Option<Boundary>,
    ) -> Result<Vec<Segment>, SegmentError> {
        let dts = frame.dts.ticks;
        let mut out = Vec::new();
        if let Some(boundary) = boundary {
            if let Some((cut, _)) = &self.pending {
                // The previous cut waited a whole segment for audio: stop waiting.
                let cut = *cut;
                out.extend(self.finish_pending(cut));
            }
            let Some(init) = self.init_for_boundary() else {
                self.dropped_frames += 1;
                return Ok(out);
            };
            let mut next = Building {
                start: dts,
                boundary,
                init,
                video: Vec::new(),
                bytes: 0,
            };
            next.add(frame);
            match self.current.replace(next) {
                Some(closing) => {
                    self.pending = Some((dts, closing));
                    if !self.expects_audio() || self.latest_audio.is_some_and(|a| a >= dts) {
                        out.extend(self.finish_pending(dts));
                    }
                }
                None => self.drop_audio_before(dts),
            }
            return Ok(out);
        }
        let Some(current) = &mut self.current else {
            self.dropped_frames += 1;
            return Ok(out);
        };
        current.add(frame);
        if current.bytes > MAX_SEGMENT_BYTES {
            self.current = None;
            self.pending = None;
            return Err(SegmentError::TooLarge {
                limit: MAX_SEGMENT_BYTES,
            });
        }
        if let Some((cut, _)) = &self.pending {
            if dts - *cut > AUDIO_WAIT_TICKS {
                let cut = *cut;
                out.extend(self.finish_pending(cut));
            }
        }
        Ok(out)
    }

    /// One audio frame (output timeline). Returns the segment it completed, if any.
    pub fn audio(&mut self, frame: MediaFrame) -> Vec<Segment> {
        if self.audio_config.is_none() {
            self.dropped_frames += 1;
            return Vec::new();
        }
        let dts = frame.dts.ticks;
        if self.latest_audio.is_some_and(|latest| dts < latest) {
            // Out of order (should not happen with RTMP): not worth reordering.
            self.dropped_frames += 1;
            return Vec::new();
        }
        self.latest_audio = Some(dts);
        self.audio.push_back(frame);
        if self.audio.len() > MAX_QUEUED_AUDIO {
            self.audio.pop_front();
            self.dropped_frames += 1;
        }
        match &self.pending {
            Some((cut, _)) if dts >= *cut => {
                let cut = *cut;
                self.finish_pending(cut).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// The publisher left: closes what was collected, ending the last segment at `end` (output
    /// ticks; where the next publisher's media will start).
    pub fn publisher_left(&mut self, end: Option<i64>) -> Vec<Segment> {
        let mut out = Vec::new();
        if let Some((cut, _)) = &self.pending {
            let cut = *cut;
            out.extend(self.finish_pending(cut));
        }
        if let Some(building) = self.current.take() {
            let last = building
                .video
                .last()
                .map_or(building.start, |f| f.dts.ticks);
            let end = end.unwrap_or(last + self.last_video_duration).max(last + 1);
            out.extend(self.close(building, end));
        }
        self.audio.clear();
        self.latest_audio = None;
        self.next_audio_tick = None;
        out
    }

    /// Drops what is being built (after an error upstream); the next boundary starts afresh.
    pub fn abandon(&mut self) {
        self.current = None;
        self.pending = None;
        self.audio.clear();
    }

    fn expects_audio(&self) -> bool {
        self.current
            .as_ref()
            .or(self.pending.as_ref().map(|(_, b)| b))
            .is_some_and(|b| b.init.audio.is_some())
    }

    /// The init section for a segment starting now: a new one when the configuration changed.
    fn init_for_boundary(&mut self) -> Option<Arc<InitSection>> {
        if std::mem::take(&mut self.config_changed) || self.init.is_none() {
            self.video_config.as_ref()?;
            let id = self.last_init_id.map_or(0, |id| id + 1);
            let data = fmp4::write_init(self.video_config.as_ref(), self.audio_config.as_ref());
            let init = Arc::new(InitSection {
                id,
                data,
                video: self.video_config.clone(),
                audio: self.audio_config.clone(),
            });
            if self.init.as_ref().is_some_and(|old| {
                old.video == init.video && old.audio == init.audio && old.data == init.data
            }) {
                return self.init.clone();
            }
            self.last_init_id = Some(id);
            self.init = Some(init);
            self.next_audio_tick = None;
        }
        self.init.clone()
    }

    fn drop_audio_before(&mut self, start: i64) {
        while self.audio.front().is_some_and(|a| a.dts.ticks < start) {
            self.audio.pop_front();
            self.dropped_frames += 1;
        }
    }

    fn finish_pending(&mut self, cut: i64) -> Option<Segment> {
        let (_, building) = self.pending.take()?;
        self.close(building, cut)
    }

    /// Muxes `building` as one segment ending at `end` (output ticks), with the queued audio
    /// before `end`.
    fn close(&mut self, building: Building, end: i64) -> Option<Segment> {
        let mut audio_frames = Vec::new();
        while let Some(frame) = self.audio.front() {
            if frame.dts.ticks >= end {
                break;
            }
            let frame = self.audio.pop_front()?;
            if frame.dts.ticks >= building.start {
                audio_frames.push(frame);
            } else {
                self.dropped_frames += 1;
            }
        }
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
        let init = building.init.clone();
        let mut fragments = vec![TrackFragment {
            track_id: fmp4::VIDEO_TRACK_ID,
            base_decode_time: u64::try_from(building.start).unwrap_or(0),
            samples: &video,
        }];
        let audio: Vec<Sample>;
        if let (Some(config), Some(first)) = (&init.audio, audio_frames.first()) {
            let per_frame = AacConfig::SAMPLES_PER_FRAME;
            let actual = u64::try_from(first.dts.rescale(config.sample_rate).ticks).unwrap_or(0);
            // Keep audio contiguous across segments unless the publisher really skipped audio.
            let base = match self.next_audio_tick {
                Some(expected) if expected.abs_diff(actual) <= u64::from(per_frame) => expected,
                _ => actual,
            };
            audio = audio_frames
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
        let sequence = building.boundary.sequence;
        let data = fmp4::write_segment(sequence as u32, &fragments);
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
            discontinuity: building.boundary.discontinuity,
            program_date_time: building.boundary.program_date_time,
            video_frames: u32::try_from(video.len()).unwrap_or(u32::MAX),
        })
    }
}

impl Building {
    fn add(&mut self, frame: MediaFrame) {
        self.bytes += frame.data.len();
        self.video.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use headwater_ingest::Track;
    use std::time::SystemTime;

    fn boundary(sequence: u64, pts: i64) -> Option<Boundary> {
        Some(Boundary {
            sequence,
            pts,
            program_date_time: SystemTime::UNIX_EPOCH,
            discontinuity: false,
        })
    }

    fn frame(track: Track, ticks: i64, keyframe: bool) -> MediaFrame {
        MediaFrame {
            track,
            dts: MediaTime::new(ticks, TIMESCALE),
            cts: 0,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        }
    }

    fn configured() -> Cutter {
        let mut c = Cutter::new();
        c.config(IngestEvent::VideoConfig(AvcConfig {
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 0]),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width: 640,
            height: 360,
            frame_rate: Some(30.0),
        }));
        c.config(IngestEvent::AudioConfig(AacConfig {
            asc: Bytes::from_static(&[0x11, 0x90]),
            object_type: 2,
            sample_rate: 48_000,
            channels: 2,
        }));
        c
    }

    #[test]
    fn audio_far_ahead_of_video_lands_in_the_right_segment() {
        // A transcoded rendition: all audio of 4 s arrives before its video.
        let mut c = configured();
        let mut segments = Vec::new();
        for i in 0..(4 * 48_000 / 1024) {
            segments.extend(c.audio(frame(Track::Audio, i * 1024 * 90_000 / 48_000, true)));
        }
        for i in 0..120 {
            let b = if i % 60 == 0 {
                boundary((i / 60) as u64, i * 3000)
            } else {
                None
            };
            segments.extend(
                c.video(frame(Track::Video, i * 3000, b.is_some()), b)
                    .expect("ok"),
            );
        }
        segments.extend(c.publisher_left(Some(120 * 3000)));
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].sequence, 0);
        assert_eq!(segments[1].start.ticks, 180_000);
        assert!((segments[1].duration.as_secs_f64() - 2.0).abs() < 1e-6);
        // 2 s of 48 kHz audio per segment is 93-94 AAC frames.
        for s in &segments {
            assert!(s.data.len() > 93 * 5, "{}", s.data.len());
        }
        assert_eq!(c.dropped_frames(), 0);
    }

    #[test]
    fn sequence_numbers_come_from_the_boundaries() {
        let mut c = configured();
        let mut segments = Vec::new();
        for (n, i) in [(7, 0), (8, 60)] {
            segments.extend(
                c.video(frame(Track::Video, i * 3000, true), boundary(n, i * 3000))
                    .expect("ok"),
            );
            segments.extend(c.audio(frame(Track::Audio, i * 3000 + 1, true)));
        }
        assert_eq!(segments.iter().map(|s| s.sequence).collect::<Vec<_>>(), [7]);
    }
}
