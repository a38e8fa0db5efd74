//! Transcoding: one published feed into an adaptive bitrate ladder, with FFmpeg's libraries
//! (through `ffmpeg-next`) inside the process.
//!
//! Owns the segment-boundary decision ([`gop`]), the ladder resolved per source ([`rung`]) and
//! the codec threads: per publisher session one decoder thread (decode once) feeding one thread
//! per rung (scale + libx264), through bounded channels; encoded frames come back to the async
//! side through a bounded tokio channel. Codec work never runs on the tokio runtime, and the
//! stream task never waits for it ([`Transcoder::push`] does not block). [`governor`] measures
//! each stream's lag and realtime factor and picks the rung to shed when it cannot keep up.
//!
//! Uses only ingest frame types and the config; knows nothing of packaging, the store or HTTP.
//! The stream task drives it.

mod decoder;
mod encoder;
pub mod gop;
pub mod governor;
mod nal;
pub mod rung;
pub mod thumbnail;

use decoder::DecoderInput;
use ffmpeg_next as ffmpeg;
use headwater_ingest::{AvcConfig, MediaFrame};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Once};
use std::time::Instant;
use tokio::sync::mpsc;

pub use gop::{Boundary, Cadence, Cue, CutMode};
pub use governor::Governor;
pub use rung::Rung;
pub use thumbnail::Thumbnailer;

/// Source frames queued for the decoder thread (about 68 s at 30 fps). A full queue means
/// transcoding fell hopelessly behind: frames are dropped (counted) rather than blocking ingest;
/// the governor sheds rungs long before that in normal operation.
const DECODER_QUEUE: usize = 2048;
/// Decoded pictures queued per rung thread (shared between rungs, not copied).
const RUNG_QUEUE: usize = 8;
/// Encoded frames queued for the stream task.
const OUTPUT_QUEUE: usize = 256;

/// Why transcoding (part of) a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FFmpeg was built without an H.264 decoder.
    #[error("FFmpeg has no H.264 decoder")]
    NoH264Decoder,
    /// FFmpeg was built without libx264.
    #[error("FFmpeg has no libx264 encoder")]
    NoX264,
    /// An FFmpeg call failed.
    #[error("FFmpeg failed {what}")]
    Codec {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg::Error,
    },
    /// The encoder's parameter sets could not be turned into an `avcC`.
    #[error("encoder parameter sets are unusable")]
    ParameterSets(#[source] headwater_ingest::flv::FlvError),
    /// A codec thread could not be started.
    #[error("cannot start a codec thread")]
    Thread(#[source] std::io::Error),
    /// The stream task stopped listening.
    #[error("the stream task is gone")]
    StreamGone,
}

/// What a rung thread sends back to the stream task.
#[derive(Debug)]
pub enum Output {
    /// The rung's encoder has (new) parameter sets; they apply from the next frame.
    Config {
        /// Index of the rung in the list given to [`Transcoder::start`].
        rung: usize,
        /// The `avcC` built from the encoder's SPS/PPS.
        config: AvcConfig,
    },
    /// One encoded frame on the output timeline (AVCC).
    Frame {
        /// Index of the rung.
        rung: usize,
        /// The encoded frame.
        frame: MediaFrame,
        /// The boundary this frame starts, if any (it is then an IDR).
        boundary: Option<Boundary>,
        /// When the source frame reached the stream task.
        arrived: Option<Instant>,
    },
    /// The rung failed and stopped.
    Failed {
        /// Index of the rung.
        rung: usize,
        /// Why.
        error: Error,
    },
    /// The rung flushed everything after its input ended (or was shed) and stopped.
    Finished {
        /// Index of the rung.
        rung: usize,
    },
}

/// A source frame the decoder thread could not take: its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// One publisher session's codec threads. Dropping it stops them (without waiting).
#[derive(Debug)]
pub struct Transcoder {
    input: Option<SyncSender<DecoderInput>>,
    outputs: mpsc::Receiver<Output>,
    stops: Vec<Arc<AtomicBool>>,
}

fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(error) = ffmpeg::init() {
            tracing::error!(%error, "FFmpeg initialisation failed");
        }
        // x264 and the decoder log every stream's statistics at info level otherwise.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

impl Transcoder {
    /// Starts the decoder thread and one thread per rung for `stream`.
    pub fn start(stream: &str, rungs: &[Rung]) -> Result<Self, Error> {
        init_ffmpeg();
        let decoder = decoder::open()?;
        let (output, outputs) = mpsc::channel(OUTPUT_QUEUE);
        let mut senders = Vec::with_capacity(rungs.len());
        let mut stops = Vec::with_capacity(rungs.len());
        for (index, rung) in rungs.iter().enumerate() {
            let (sender, receiver) = sync_channel(RUNG_QUEUE);
            let stop = Arc::new(AtomicBool::new(false));
            let (rung, output, flag) = (rung.clone(), output.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("hw-enc-{}", rung.name()))
                .spawn(move || encoder::run(index, rung, receiver, output, flag))
                .map_err(Error::Thread)?;
            senders.push(sender);
            stops.push(stop);
        }
        let (input, receiver) = sync_channel(DECODER_QUEUE);
        let name = stream.to_owned();
        std::thread::Builder::new()
            .name(format!("hw-dec-{stream}"))
            .spawn(move || decoder::run(decoder, receiver, senders, name))
            .map_err(Error::Thread)?;
        Ok(Self {
            input: Some(input),
            outputs,
            stops,
        })
    }

    /// A new source sequence header (never blocks).
    pub fn push_config(&mut self, config: AvcConfig) -> Result<(), Overloaded> {
        self.send(DecoderInput::Config(config))
    }

    /// A source video frame on the output timeline, with the boundary decided on it (never
    /// blocks; a full decoder queue refuses the frame).
    pub fn push(
        &mut self,
        frame: MediaFrame,
        boundary: Option<Boundary>,
        arrived: Instant,
    ) -> Result<(), Overloaded> {
        self.send(DecoderInput::Frame {
            frame,
            boundary,
            arrived,
        })
    }

    fn send(&mut self, message: DecoderInput) -> Result<(), Overloaded> {
        let Some(input) = &self.input else {
            return Ok(());
        };
        match input.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Overloaded),
            // The decoder ended (every rung is gone): nothing to feed.
            Err(TrySendError::Disconnected(_)) => {
                self.input = None;
                Ok(())
            }
        }
    }

    /// The publisher left: the threads flush what they hold, send it and finish.
    pub fn finish(&mut self) {
        self.input = None;
    }

    /// Stops one rung at once (shed); it reports [`Output::Finished`] without flushing.
    pub fn shed(&self, rung: usize) {
        if let Some(stop) = self.stops.get(rung) {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// The next output; `None` once every rung thread has finished.
    pub async fn recv(&mut self) -> Option<Output> {
        self.outputs.recv().await
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.store(true, Ordering::Relaxed);
        }
    }
}
