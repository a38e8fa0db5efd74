//! FLV tags of one publisher -> [`IngestEvent`]s, with 32-bit RTMP timestamps unwrapped.

use crate::flv::{self, AudioTag, FlvError, VideoTag};
use crate::frame::{IngestEvent, MediaFrame, MediaTime, Track};
use bytes::Bytes;

/// Extends 32-bit millisecond RTMP timestamps into a 64-bit timeline across wrap-around.
#[derive(Debug, Default, Clone)]
pub struct TimestampUnwrapper {
    last: Option<i64>,
}

impl TimestampUnwrapper {
    /// Maps a raw 32-bit timestamp to the unwrapped timeline, choosing the candidate closest
    /// to the previous timestamp (so small backward jumps stay backward, not +49 days).
    pub fn unwrap(&mut self, raw: u32) -> i64 {
        const WRAP: i64 = 1 << 32;
        let value = match self.last {
            None => i64::from(raw),
            Some(last) => {
                let base = last - last.rem_euclid(WRAP);
                [base - WRAP, base, base + WRAP]
                    .into_iter()
                    .map(|b| b + i64::from(raw))
                    .min_by_key(|candidate| (candidate - last).abs())
                    .unwrap_or(i64::from(raw))
            }
        };
        self.last = Some(value);
        value
    }
}

/// Converts one publisher's FLV tags into ingest events.
#[derive(Debug, Default)]
pub(crate) struct TagAdapter {
    video_clock: TimestampUnwrapper,
    audio_clock: TimestampUnwrapper,
}

impl TagAdapter {
    /// Converts a video message body received at `timestamp` (ms).
    pub(crate) fn video(
        &mut self,
        timestamp: u32,
        body: Bytes,
    ) -> Result<Option<IngestEvent>, FlvError> {
        let dts = self.video_clock.unwrap(timestamp);
        Ok(match flv::parse_video(body)? {
            VideoTag::Config(config) => Some(IngestEvent::VideoConfig(config)),
            VideoTag::Frame {
                keyframe,
                cts_ms,
                data,
            } => Some(IngestEvent::Frame(MediaFrame {
                track: Track::Video,
                dts: MediaTime::from_millis(dts),
                cts: cts_ms,
                keyframe,
                data,
            })),
            VideoTag::Ignored => None,
        })
    }

    /// Converts an audio message body received at `timestamp` (ms).
    pub(crate) fn audio(
        &mut self,
        timestamp: u32,
        body: Bytes,
    ) -> Result<Option<IngestEvent>, FlvError> {
        let dts = self.audio_clock.unwrap(timestamp);
        Ok(Some(match flv::parse_audio(body)? {
            AudioTag::Config(config) => IngestEvent::AudioConfig(config),
            AudioTag::Frame(data) => IngestEvent::Frame(MediaFrame {
                track: Track::Audio,
                dts: MediaTime::from_millis(dts),
                cts: 0,
                keyframe: true,
                data,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unwraps_across_the_32_bit_boundary() {
        let mut clock = TimestampUnwrapper::default();
        assert_eq!(clock.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(clock.unwrap(5), (1 << 32) + 5);
        // A small step back right after the wrap stays before it.
        assert_eq!(clock.unwrap(u32::MAX - 2), i64::from(u32::MAX - 2));
    }

    proptest! {
        #[test]
        fn monotonic_input_stays_monotonic(start in any::<u32>(), steps in prop::collection::vec(0u32..100_000, 1..200)) {
            let mut clock = TimestampUnwrapper::default();
            let mut raw = start;
            let mut last = clock.unwrap(raw);
            for step in steps {
                raw = raw.wrapping_add(step);
                let next = clock.unwrap(raw);
                prop_assert_eq!(next - last, i64::from(step));
                last = next;
            }
        }
    }
}
