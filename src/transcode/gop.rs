//! The segment-boundary decision, made once per stream and carried with frames to every
//! rendition.
//!
//! [`Cadence`] sees the source's frames in arrival order, maps them onto the stream instance's
//! output timeline (0 at the first keyframe, continued across publisher reconnects) and decides
//! which frame starts the next segment:
//!
//! - [`CutMode::Keyframes`] (a `source` passthrough rendition exists): the first source keyframe
//!   at or after the target since the last boundary (or right after a codec change). The copied
//!   source can only be cut there, so every transcoded rendition is cut there too.
//! - [`CutMode::Time`] (every rendition is transcoded): exactly every target duration; the
//!   boundary is a time, and the first frame presented at or after it starts the segment.
//!
//! Each decision is a [`Boundary`]: the segment's sequence number, presentation time, wall-clock
//! time and discontinuity flag. The packager's cutters and the transcoder's encoders obey it; none
//! of them decides for itself. Pure state machine: no I/O, no clocks except the wall time passed
//! in.

use headwater_ingest::{AacConfig, AvcConfig, IngestEvent, MediaFrame, MediaTime, Track};
use std::time::{Duration, SystemTime};

/// Ticks per second of the output timeline (the fMP4 video timescale).
pub const TIMESCALE: u32 = 90_000;

/// No segment may span more than this many target durations (and at least 30 s) in
/// [`CutMode::Keyframes`]: a publisher without keyframes is refused rather than buffered.
const MAX_SEGMENT_TARGETS: i64 = 5;

/// How boundaries are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// On source keyframes (required when the source is passed through).
    Keyframes,
    /// Every target duration exactly (every rendition is re-encoded).
    Time,
}

/// "The segment with this sequence number starts here", decided once for every rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// Media sequence number of the segment that starts here.
    pub sequence: u64,
    /// Presentation time on the output timeline ([`TIMESCALE`] ticks): the first frame presented
    /// at or after it starts the segment.
    pub pts: i64,
    /// EXT-X-PROGRAM-DATE-TIME of the segment.
    pub program_date_time: SystemTime,
    /// The segment follows a publisher reconnect (EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
}

/// A source frame placed on the output timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Cue {
    /// A video frame (timestamps in [`TIMESCALE`] ticks); `boundary` is set when a segment starts
    /// at or after its presentation time.
    Video {
        /// The frame, on the output timeline.
        frame: MediaFrame,
        /// The decision taken on this frame, if any.
        boundary: Option<Boundary>,
    },
    /// An audio frame on the output timeline.
    Audio(MediaFrame),
    /// Dropped: before the first keyframe, or while waiting for a keyframe after an error.
    Dropped,
}

/// The publisher's keyframes are too far apart to segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no keyframe for {seconds} s (limit {limit} s): keyframe interval too long")]
pub struct KeyframeIntervalTooLong {
    /// Media seconds collected without a keyframe to cut on.
    pub seconds: u64,
    /// The limit.
    pub limit: u64,
}

/// Where a publisher's timeline sits on the output timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Added to input decode times (in [`TIMESCALE`] ticks).
    offset: i64,
    /// Output time at which `wall` was observed.
    out_time: i64,
    wall: SystemTime,
}

/// Decides segment boundaries for one stream instance. See the module docs.
#[derive(Debug)]
pub struct Cadence {
    mode: CutMode,
    target: i64,
    video_config: Option<AvcConfig>,
    audio_config: Option<AacConfig>,
    config_changed: bool,
    anchor: Option<Anchor>,
    /// Waiting for a keyframe to start (again).
    need_keyframe: bool,
    /// Decode time of the frame that carried the last boundary (keyframe mode).
    last_boundary_dts: Option<i64>,
    /// Time of the next boundary (time mode).
    next_boundary_pts: i64,
    next_sequence: u64,
    discontinuity_next: bool,
    timeline_end: i64,
    last_dts: Option<i64>,
    max_pts: i64,
    last_duration: i64,
}

impl Cadence {
    /// A cadence cutting every `target` (rounded to whole milliseconds).
    pub fn new(mode: CutMode, target: Duration) -> Self {
        let target_ms = i64::try_from(target.as_millis()).unwrap_or(i64::MAX / 1000);
        Self {
            mode,
            target: MediaTime::from_millis(target_ms).rescale(TIMESCALE).ticks,
            video_config: None,
            audio_config: None,
            config_changed: false,
            anchor: None,
            need_keyframe: true,
            last_boundary_dts: None,
            next_boundary_pts: 0,
            next_sequence: 0,
            discontinuity_next: false,
            timeline_end: 0,
            last_dts: None,
            max_pts: 0,
            last_duration: i64::from(TIMESCALE / 30),
        }
    }

    /// The mode this cadence cuts in.
    pub fn mode(&self) -> CutMode {
        self.mode
    }

    /// The target duration in [`TIMESCALE`] ticks.
    pub fn target_ticks(&self) -> i64 {
        self.target
    }

    /// Notes a codec configuration event: a change (not the first) forces a boundary on the next
    /// keyframe, so the new parameters start a segment (and a new init section) everywhere.
    pub fn config(&mut self, event: &IngestEvent) {
        match event {
            IngestEvent::VideoConfig(config) if self.video_config.as_ref() != Some(config) => {
                self.config_changed |= self.video_config.is_some();
                self.video_config = Some(config.clone());
            }
            IngestEvent::AudioConfig(config) if self.audio_config.as_ref() != Some(config) => {
                self.config_changed |= self.audio_config.is_some();
                self.audio_config = Some(config.clone());
            }
            _ => {}
        }
    }

    /// Places one source frame on the output timeline and decides whether it starts a segment.
    /// An error means the keyframes are too far apart: what was collected since the last
    /// boundary should be dropped and the publisher disconnected.
    pub fn frame(
        &mut self,
        mut frame: MediaFrame,
        now: SystemTime,
    ) -> Result<Cue, KeyframeIntervalTooLong> {
        let input = frame.dts.rescale(TIMESCALE).ticks;
        frame.cts = i32::try_from(
            MediaTime::new(i64::from(frame.cts), frame.dts.timescale)
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
            None => return Ok(Cue::Dropped),
        };
        let dts = input + anchor.offset;
        frame.dts = MediaTime::new(dts, TIMESCALE);
        if frame.track == Track::Audio {
            return Ok(Cue::Audio(frame));
        }
        let pts = dts + i64::from(frame.cts);
        if let Some(last) = self.last_dts {
            if dts > last {
                self.last_duration = dts - last;
            }
        }
        self.last_dts = Some(dts);
        self.max_pts = self.max_pts.max(pts);
        let boundary_pts = if self.need_keyframe {
            if !frame.keyframe {
                return Ok(Cue::Dropped);
            }
            self.need_keyframe = false;
            self.config_changed = false;
            self.next_boundary_pts = pts + self.target;
            Some(pts)
        } else if frame.keyframe && self.config_changed {
            self.config_changed = false;
            self.next_boundary_pts = pts + self.target;
            Some(pts)
        } else {
            match self.mode {
                CutMode::Keyframes => {
                    let since = self.last_boundary_dts.map_or(0, |b| dts - b);
                    let limit = (self.target * MAX_SEGMENT_TARGETS).max(30 * i64::from(TIMESCALE));
                    if since > limit {
                        self.need_keyframe = true;
                        let secs = |t: i64| u64::try_from(t / i64::from(TIMESCALE)).unwrap_or(0);
                        return Err(KeyframeIntervalTooLong {
                            seconds: secs(since),
                            limit: secs(limit),
                        });
                    }
                    (frame.keyframe && since >= self.target).then_some(pts)
                }
                CutMode::Time if pts >= self.next_boundary_pts => {
                    let at = self.next_boundary_pts;
                    // Exact: the grid does not drift with frame timing.
                    while self.next_boundary_pts <= pts {
                        self.next_boundary_pts += self.target;
                    }
                    Some(at)
                }
                CutMode::Time => None,
            }
        };
        let boundary = boundary_pts.map(|at| {
            self.last_boundary_dts = Some(dts);
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let since_anchor = MediaTime::new(at - anchor.out_time, TIMESCALE).as_secs_f64();
            Boundary {
                sequence,
                pts: at,
                program_date_time: anchor.wall + Duration::from_secs_f64(since_anchor.max(0.0)),
                discontinuity: std::mem::take(&mut self.discontinuity_next),
            }
        });
        Ok(Cue::Video { frame, boundary })
    }

    /// The publisher left: returns where its media ends on the output timeline (after its last
    /// presented frame), which is where the next publisher's media will start. The next boundary
    /// is marked discontinuous.
    pub fn publisher_left(&mut self) -> Option<i64> {
        let end = self
            .last_dts
            .take()
            .map(|_| self.max_pts + self.last_duration);
        if let Some(end) = end {
            self.timeline_end = self.timeline_end.max(end);
        }
        self.anchor = None;
        self.need_keyframe = true;
        self.last_boundary_dts = None;
        self.discontinuity_next = self.next_sequence > 0;
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn avc(width: u32) -> AvcConfig {
        AvcConfig {
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width,
            height: 360,
            frame_rate: Some(30.0),
        }
    }

    fn video(ms: i64, cts: i32, keyframe: bool) -> MediaFrame {
        MediaFrame {
            track: Track::Video,
            dts: MediaTime::from_millis(ms),
            cts,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        }
    }

    fn boundaries(cadence: &mut Cadence, frames: impl Iterator<Item = MediaFrame>) -> Vec<i64> {
        let mut out = Vec::new();
        for frame in frames {
            if let Ok(Cue::Video {
                boundary: Some(b), ..
            }) = cadence.frame(frame, SystemTime::UNIX_EPOCH)
            {
                out.push(b.pts);
            }
        }
        out
    }

    #[test]
    fn keyframe_mode_cuts_on_the_first_keyframe_at_or_after_the_target() {
        let mut c = Cadence::new(CutMode::Keyframes, Duration::from_secs(2));
        c.config(&IngestEvent::VideoConfig(avc(640)));
        // 30 fps, keyframe every 50 frames (1.667 s): cuts at 0, 3.333, 6.667 s.
        let cuts = boundaries(&mut c, (0..240).map(|i| video(i * 100 / 3, 0, i % 50 == 0)));
        assert_eq!(cuts, [0, 3333 * 90, 6666 * 90]);
    }

    #[test]
    fn time_mode_is_exact_whatever_the_source_gop() {
        let mut c = Cadence::new(CutMode::Time, Duration::from_secs(2));
        c.config(&IngestEvent::VideoConfig(avc(640)));
        let cuts = boundaries(&mut c, (0..240).map(|i| video(i * 100 / 3, 0, i % 50 == 0)));
        assert_eq!(cuts, [0, 180_000, 360_000, 540_000]);
    }

    #[test]
    fn boundaries_are_presentation_times_and_sequences_continue_across_reconnects() {
        let mut c = Cadence::new(CutMode::Keyframes, Duration::from_secs(1));
        c.config(&IngestEvent::VideoConfig(avc(640)));
        // Keyframes carry a 66 ms composition offset (B-frames): the boundary is their PTS.
        let mut seen = Vec::new();
        for i in 0..70 {
            let cue = c
                .frame(video(i * 100 / 3, 66, i % 30 == 0), SystemTime::UNIX_EPOCH)
                .expect("within limits");
            if let Cue::Video {
                boundary: Some(b), ..
            } = cue
            {
                seen.push(b);
            }
        }
        assert_eq!(
            seen.iter().map(|b| (b.sequence, b.pts)).collect::<Vec<_>>(),
            [(0, 5940), (1, 95_940), (2, 185_940)]
        );
        let end = c.publisher_left().expect("frames seen");
        // The second publisher starts at 0 again; its first keyframe continues the timeline.
        let cue = c
            .frame(video(0, 0, true), SystemTime::UNIX_EPOCH)
            .expect("ok");
        let Cue::Video {
            frame,
            boundary: Some(b),
        } = cue
        else {
            panic!("{cue:?}")
        };
        assert_eq!(frame.dts.ticks, end);
        assert_eq!((b.sequence, b.discontinuity), (3, true));
    }

    #[test]
    fn a_codec_change_forces_a_boundary_on_the_next_keyframe() {
        let mut c = Cadence::new(CutMode::Keyframes, Duration::from_secs(2));
        c.config(&IngestEvent::VideoConfig(avc(640)));
        let mut cuts = boundaries(&mut c, (0..40).map(|i| video(i * 100 / 3, 0, i % 30 == 0)));
        c.config(&IngestEvent::VideoConfig(avc(1280)));
        cuts.extend(boundaries(
            &mut c,
            (40..70).map(|i| video(i * 100 / 3, 0, i % 15 == 0)),
        ));
        assert_eq!(cuts, [0, 45 * 3000]);
    }
}
