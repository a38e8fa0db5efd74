//! A rung thread: scales the shared decoded pictures to one rendition's size (swscale, bicubic)
//! and encodes them with libx264, forcing an IDR on exactly the pictures that start a segment.
//!
//! x264 runs with B-frames off (closed GOPs, decode order = presentation order, so timestamps
//! and boundaries map one-to-one), scene-cut keyframes off and an infinite keyint: the only IDRs
//! are the forced ones. Parameter sets come in-band before every IDR; they become the rendition's
//! `avcC` (a new [`Output::Config`] whenever they change) and are stripped from the samples.

use super::decoder::Decoded;
use super::rung::{scaled_width, Rung};
use super::{gop, nal, Error, Output};
use ffmpeg_next as ffmpeg;
use headwater_ingest::{AvcConfig, MediaFrame, MediaTime, Track};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the rung thread remembers about a picture until x264 returns it.
struct InFlight {
    pts: i64,
    boundary: Option<gop::Boundary>,
    arrived: Option<Instant>,
}

struct Encoding {
    encoder: ffmpeg::encoder::Video,
    size: (u32, u32),
}

struct RungThread {
    index: usize,
    rung: Rung,
    output: mpsc::Sender<Output>,
    scaler: Option<(ffmpeg::software::scaling::Context, (u32, u32))>,
    encoding: Option<Encoding>,
    config: Option<AvcConfig>,
    in_flight: VecDeque<InFlight>,
    next_pts: Option<i64>,
    ignored_forced_idr: u64,
}

/// Runs until its input closes (then flushes) or `stop` is set (shed: exits at once).
pub(crate) fn run(
    index: usize,
    rung: Rung,
    input: Receiver<Arc<Decoded>>,
    output: mpsc::Sender<Output>,
    stop: Arc<AtomicBool>,
) {
    let mut thread = RungThread {
        index,
        rung,
        output,
        scaler: None,
        encoding: None,
        config: None,
        in_flight: VecDeque::new(),
        next_pts: None,
        ignored_forced_idr: 0,
    };
    let result = (|| {
        for decoded in input.iter() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            thread.picture(&decoded)?;
        }
        thread.flush()
    })();
    if thread.ignored_forced_idr > 0 {
        tracing::warn!(rendition = %thread.rung.name(), count = thread.ignored_forced_idr,
            "x264 did not honour forced IDRs");
    }
    let message = match result {
        Ok(()) => Output::Finished { rung: index },
        Err(error) => Output::Failed { rung: index, error },
    };
    let _ = thread.output.blocking_send(message);
}

impl RungThread {
    fn picture(&mut self, decoded: &Decoded) -> Result<(), Error> {
        // Frame rate cap: keep pictures on a 1/fps grid; segment starts are always kept.
        let interval = (f64::from(gop::TIMESCALE) / self.rung.fps).round() as i64;
        if let Some(next) = self.next_pts {
            if decoded.boundary.is_none() && decoded.pts < next - interval / 4 {
                return Ok(());
            }
        }
        self.next_pts = Some(
            self.next_pts
                .map_or(decoded.pts, |n| n + interval)
                .max(decoded.pts + interval / 2),
        );
        let input = &decoded.picture;
        let in_size = (input.width(), input.height());
        let wanted = (scaled_width(in_size, self.rung.height), self.rung.height);
        // A new output size needs a new encoder, which can only start on a segment boundary.
        let size = match &self.encoding {
            Some(e) if e.size != wanted && decoded.boundary.is_some() => {
                self.flush()?;
                self.encoding = None;
                wanted
            }
            Some(e) => e.size,
            None => wanted,
        };
        if self.encoding.is_none() {
            self.encoding = Some(self.open(size)?);
        }
        let rebuild = match &self.scaler {
            Some((scaler, out)) => {
                let i = scaler.input();
                (i.format, i.width, i.height) != (input.format(), in_size.0, in_size.1)
                    || *out != size
            }
            None => true,
        };
        if rebuild {
            let scaler = ffmpeg::software::scaling::Context::get(
                input.format(),
                in_size.0,
                in_size.1,
                ffmpeg::format::Pixel::YUV420P,
                size.0,
                size.1,
                ffmpeg::software::scaling::Flags::BICUBIC,
            )
            .map_err(|source| Error::Codec {
                what: "creating the scaler",
                source,
            })?;
            self.scaler = Some((scaler, size));
        }
        let mut scaled = ffmpeg::frame::Video::empty();
        if let Some((scaler, _)) = &mut self.scaler {
            scaler
                .run(input, &mut scaled)
                .map_err(|source| Error::Codec {
                    what: "scaling",
                    source,
                })?;
        }
        scaled.set_pts(Some(decoded.pts));
        scaled.set_kind(if decoded.boundary.is_some() {
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        self.in_flight.push_back(InFlight {
            pts: decoded.pts,
            boundary: decoded.boundary,
            arrived: decoded.arrived,
        });
        if let Some(e) = &mut self.encoding {
            e.encoder
                .send_frame(&scaled)
                .map_err(|source| Error::Codec {
                    what: "encoding",
                    source,
                })?;
        }
        self.receive()
    }

    fn open(&self, size: (u32, u32)) -> Result<Encoding, Error> {
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(Error::NoX264)?;
        let mut encoder = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|source| Error::Codec {
                what: "creating the x264 encoder",
                source,
            })?;
        let config = &self.rung.config;
        encoder.set_width(size.0);
        encoder.set_height(size.1);
        encoder.set_format(ffmpeg::format::Pixel::YUV420P);
        encoder.set_time_base(ffmpeg::Rational::new(
            1,
            i32::try_from(gop::TIMESCALE).unwrap_or(90_000),
        ));
        let fps = ffmpeg::Rational::from(self.rung.fps);
        encoder.set_frame_rate(Some(fps));
        encoder.set_bit_rate(config.video_kbps as usize * 1000);
        encoder.set_max_bit_rate(config.maxrate_kbps as usize * 1000);
        encoder.set_max_b_frames(0);
        let mut options = ffmpeg::Dictionary::new();
        options.set("preset", &config.preset);
        options.set("profile", &config.profile);
        options.set("bufsize", &format!("{}k", config.bufsize_kbps));
        options.set("forced-idr", "1");
        options.set(
            "x264-params",
            "keyint=infinite:scenecut=0:open-gop=0:bframes=0:repeat-headers=1",
        );
        let encoder = encoder.open_with(options).map_err(|source| Error::Codec {
            what: "opening the x264 encoder",
            source,
        })?;
        tracing::debug!(rendition = %self.rung.name(), width = size.0, height = size.1, "x264 opened");
        Ok(Encoding { encoder, size })
    }

    /// Sends what x264 has finished.
    fn receive(&mut self) -> Result<(), Error> {
        let Some(e) = &mut self.encoding else {
            return Ok(());
        };
        let mut packet = ffmpeg::Packet::empty();
        let mut ready = Vec::new();
        while e.encoder.receive_packet(&mut packet).is_ok() {
            ready.push(std::mem::replace(&mut packet, ffmpeg::Packet::empty()));
        }
        for packet in ready {
            self.packet(&packet)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if let Some(e) = &mut self.encoding {
            e.encoder.send_eof().map_err(|source| Error::Codec {
                what: "flushing the encoder",
                source,
            })?;
        }
        self.receive()
    }

    fn packet(&mut self, packet: &ffmpeg::Packet) -> Result<(), Error> {
        let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
            return Ok(());
        };
        let dts = packet.dts().unwrap_or(pts);
        let mut info = None;
        while let Some(front) = self.in_flight.front() {
            if front.pts > pts {
                break;
            }
            info = self.in_flight.pop_front();
        }
        let info = info.filter(|i| i.pts == pts);
        let boundary = info.as_ref().and_then(|i| i.boundary);
        let keyframe = packet.is_key();
        if boundary.is_some() && !keyframe {
            self.ignored_forced_idr += 1;
        }
        let units = nal::annexb_units(data);
        let sps: Vec<&[u8]> = units
            .iter()
            .copied()
            .filter(|u| nal::nal_type(u) == nal::NAL_SPS)
            .collect();
        if !sps.is_empty() {
            let pps: Vec<&[u8]> = units
                .iter()
                .copied()
                .filter(|u| nal::nal_type(u) == nal::NAL_PPS)
                .collect();
            let config = headwater_ingest::flv::avc_config_from_parameter_sets(&sps, &pps)
                .map_err(Error::ParameterSets)?;
            if self.config.as_ref() != Some(&config) {
                self.config = Some(config.clone());
                self.send(Output::Config {
                    rung: self.index,
                    config,
                })?;
            }
        }
        let mut avcc = Vec::with_capacity(data.len());
        nal::write_avcc(
            units.into_iter().filter(|u| {
                !matches!(nal::nal_type(u), nal::NAL_SPS | nal::NAL_PPS | nal::NAL_AUD)
            }),
            &mut avcc,
        );
        if avcc.is_empty() || self.config.is_none() {
            return Ok(());
        }
        let frame = MediaFrame {
            track: Track::Video,
            dts: MediaTime::new(dts, gop::TIMESCALE),
            cts: i32::try_from(pts - dts).unwrap_or(0),
            keyframe,
            data: avcc.into(),
        };
        self.send(Output::Frame {
            rung: self.index,
            frame,
            boundary,
            arrived: info.and_then(|i| i.arrived),
        })
    }

    fn send(&self, message: Output) -> Result<(), Error> {
        self.output
            .blocking_send(message)
            .map_err(|_| Error::StreamGone)
    }
}
