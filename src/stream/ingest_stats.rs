//! Per-stream ingest health as metrics: bitrate, frame rate and keyframe interval of what the
//! publisher sends, measured on media time over a sliding window.

use super::IngestRates;
use crate::names::StreamName;
use headwater_ingest::{MediaFrame, Track};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Window the bitrate and frame rate are averaged over.
const WINDOW: Duration = Duration::from_secs(5);
/// Gauges are refreshed at most this often.
const REFRESH: Duration = Duration::from_secs(1);

/// Running ingest statistics of one stream.
#[derive(Debug)]
pub(super) struct IngestStats {
    stream: StreamName,
    /// (arrival, bytes, is video) of recent frames.
    recent: VecDeque<(Instant, usize, bool)>,
    last_keyframe_ms: Option<f64>,
    last_refresh: Option<Instant>,
    rates: Arc<IngestRates>,
}

impl IngestStats {
    pub(super) fn new(
        stream: StreamName,
        segment_target: Duration,
        rates: Arc<IngestRates>,
    ) -> Self {
        metrics::gauge!("headwater_stream_segment_target_seconds", "stream" => stream.to_string())
            .set(segment_target.as_secs_f64());
        Self {
            stream,
            recent: VecDeque::new(),
            last_keyframe_ms: None,
            last_refresh: None,
            rates,
        }
    }

    /// Accounts one frame as it arrives from the publisher.
    pub(super) fn frame(&mut self, frame: &MediaFrame) {
        let now = Instant::now();
        let video = frame.track == Track::Video;
        self.recent.push_back((now, frame.data.len(), video));
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > WINDOW)
        {
            self.recent.pop_front();
        }
        let labels = [("stream", self.stream.to_string())];
        if video && frame.keyframe {
            let ms = frame.dts.rescale(1000).ticks as f64;
            if let Some(last) = self.last_keyframe_ms.replace(ms) {
                if ms > last {
                    metrics::gauge!("headwater_ingest_keyframe_interval_seconds", &labels)
                        .set((ms - last) / 1000.0);
                }
            }
        }
        if self
            .last_refresh
            .is_some_and(|at| now.duration_since(at) < REFRESH)
        {
            return;
        }
        self.last_refresh = Some(now);
        let span = self
            .recent
            .front()
            .map_or(0.0, |(at, _, _)| now.duration_since(*at).as_secs_f64());
        if span < 0.5 {
            return;
        }
        let bytes: usize = self.recent.iter().map(|(_, b, _)| b).sum();
        let frames = self.recent.iter().filter(|(_, _, v)| *v).count();
        let (bitrate, fps) = (bytes as f64 * 8.0 / span, frames as f64 / span);
        self.rates.set(bitrate, fps);
        metrics::gauge!("headwater_ingest_bitrate_bits_per_second", &labels).set(bitrate);
        metrics::gauge!("headwater_ingest_frames_per_second", &labels).set(fps);
    }
}
