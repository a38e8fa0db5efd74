//! The decoder thread: one per publisher session. Decodes the source H.264 once and hands every
//! picture (shared, not copied) to each rung's thread, flagged with the segment boundary it
//! starts.
//!
//! Source frames are AVCC; the decoder is fed Annex B with the current SPS/PPS in front of each
//! keyframe, so a new sequence header (e.g. a resolution change) needs no decoder re-open.
//! A boundary is a presentation time: the first picture presented at or after it is flagged.

use super::nal;
use super::Error;
use crate::transcode::gop::Boundary;
use ffmpeg_next as ffmpeg;
use headwater_ingest::{AvcConfig, MediaFrame};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// What the stream task sends the decoder thread.
#[derive(Debug)]
pub(crate) enum DecoderInput {
    /// A new source sequence header.
    Config(AvcConfig),
    /// A source video frame on the output timeline.
    Frame {
        frame: MediaFrame,
        boundary: Option<Boundary>,
        arrived: Instant,
    },
}

/// A decoded picture on its way to every rung.
pub(crate) struct Decoded {
    pub(crate) picture: ffmpeg::frame::Video,
    /// Presentation time, output timeline ticks.
    pub(crate) pts: i64,
    pub(crate) boundary: Option<Boundary>,
    /// When the source frame reached the stream task (for latency metrics).
    pub(crate) arrived: Option<Instant>,
}

/// Arrival times kept for latency accounting (about 8 s at 60 fps).
const MAX_ARRIVALS: usize = 512;

struct DecoderState {
    decoder: ffmpeg::decoder::Video,
    rungs: Vec<Option<SyncSender<Arc<Decoded>>>>,
    boundaries: VecDeque<Boundary>,
    arrivals: VecDeque<(i64, Instant)>,
    errors: u64,
}

pub(crate) fn open() -> Result<ffmpeg::decoder::Video, Error> {
    let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::H264).ok_or(Error::NoH264Decoder)?;
    let mut context = ffmpeg::codec::Context::new_with_codec(codec);
    context.set_threading(ffmpeg::threading::Config {
        kind: ffmpeg::threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    context.set_time_base(ffmpeg::Rational::new(
        1,
        i32::try_from(super::gop::TIMESCALE).unwrap_or(90_000),
    ));
    context.decoder().video().map_err(|source| Error::Codec {
        what: "opening the H.264 decoder",
        source,
    })
}

/// Runs until the input channel closes (publisher left) or every rung is gone; then flushes.
pub(crate) fn run(
    decoder: ffmpeg::decoder::Video,
    input: Receiver<DecoderInput>,
    rungs: Vec<SyncSender<Arc<Decoded>>>,
    stream: String,
) {
    let mut state = DecoderState {
        decoder,
        rungs: rungs.into_iter().map(Some).collect(),
        boundaries: VecDeque::new(),
        arrivals: VecDeque::new(),
        errors: 0,
    };
    let mut parameter_sets: Vec<u8> = Vec::new();
    let mut buffer = Vec::new();
    for message in input.iter() {
        match message {
            DecoderInput::Config(config) => {
                parameter_sets.clear();
                if let Some(units) = nal::record_parameter_sets(&config.record) {
                    nal::write_annexb(units, &mut parameter_sets);
                }
            }
            DecoderInput::Frame {
                frame,
                boundary,
                arrived,
            } => {
                let dts = frame.dts.ticks;
                let pts = dts + i64::from(frame.cts);
                state.boundaries.extend(boundary);
                state.arrivals.push_back((pts, arrived));
                if state.arrivals.len() > MAX_ARRIVALS {
                    state.arrivals.pop_front();
                }
                buffer.clear();
                if frame.keyframe {
                    buffer.extend_from_slice(&parameter_sets);
                }
                let Some(units) = nal::avcc_units(&frame.data) else {
                    state.errors += 1;
                    continue;
                };
                nal::write_annexb(units, &mut buffer);
                let mut packet = ffmpeg::Packet::copy(&buffer);
                packet.set_pts(Some(pts));
                packet.set_dts(Some(dts));
                if frame.keyframe {
                    packet.set_flags(ffmpeg::packet::Flags::KEY);
                }
                if state.decoder.send_packet(&packet).is_err() {
                    state.errors += 1;
                }
                if !state.drain() {
                    break;
                }
            }
        }
    }
    if state.decoder.send_eof().is_ok() {
        state.drain();
    }
    if state.errors > 0 {
        tracing::warn!(%stream, errors = state.errors, "source frames the decoder rejected");
    }
    // Dropping the senders tells every rung thread to flush and finish.
}

impl DecoderState {
    /// Hands every decoded picture to the rungs; false when no rung is left.
    fn drain(&mut self) -> bool {
        let mut picture = ffmpeg::frame::Video::empty();
        while self.decoder.receive_frame(&mut picture).is_ok() {
            let Some(pts) = picture.timestamp().or(picture.pts()) else {
                self.errors += 1;
                continue;
            };
            let mut boundary = None;
            while self.boundaries.front().is_some_and(|b| b.pts <= pts) {
                boundary = self.boundaries.pop_front();
            }
            while self.arrivals.front().is_some_and(|(t, _)| *t < pts) {
                self.arrivals.pop_front();
            }
            let arrived = match self.arrivals.front() {
                Some((t, at)) if *t == pts => Some(*at),
                _ => None,
            };
            let decoded = Arc::new(Decoded {
                picture: std::mem::replace(&mut picture, ffmpeg::frame::Video::empty()),
                pts,
                boundary,
                arrived,
            });
            for slot in &mut self.rungs {
                if let Some(sender) = slot {
                    // Blocks while that rung is busy: a slow rung slows the decoder, and the
                    // stream task sheds it when the lag grows (it never blocks on us).
                    if sender.send(decoded.clone()).is_err() {
                        *slot = None;
                    }
                }
            }
            if self.rungs.iter().all(Option::is_none) {
                return false;
            }
        }
        true
    }
}
