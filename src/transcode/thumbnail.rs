//! Stream thumbnails: now and then one keyframe is decoded on its own (an IDR needs no other
//! picture), scaled to [`WIDTH`] and encoded as a JPEG, on a thread of its own. It costs one
//! picture decode per interval, so passthrough-only streams get thumbnails too.

use super::{init_ffmpeg, nal, Error};
use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use headwater_ingest::{AvcConfig, MediaFrame};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// Thumbnail width in pixels; the height keeps the source's aspect ratio.
pub const WIDTH: u32 = 320;

/// JPEG quality as FFmpeg's qscale (2 best .. 31 worst): about 10-20 kB at 320x180.
const QSCALE: i32 = 5;

/// A keyframe waiting to be turned into a thumbnail.
struct Job {
    config: AvcConfig,
    frame: Bytes,
}

/// One stream's thumbnail thread. Dropping it ends the thread after its current picture.
#[derive(Debug)]
pub struct Thumbnailer {
    jobs: SyncSender<Job>,
}

impl Thumbnailer {
    /// Starts the thread for `stream`; `done` receives each JPEG (on that thread).
    pub fn start(stream: &str, done: impl Fn(Bytes) + Send + 'static) -> Result<Self, Error> {
        init_ffmpeg();
        // One job at a time: a keyframe offered while the last is in work is skipped.
        let (jobs, receiver) = sync_channel::<Job>(1);
        let name = stream.to_owned();
        std::thread::Builder::new()
            .name(format!("hw-thumb-{stream}"))
            .spawn(move || {
                for job in receiver.iter() {
                    match render(&job.config, &job.frame, WIDTH) {
                        Ok(jpeg) => done(Bytes::from(jpeg)),
                        Err(error) => {
                            tracing::debug!(stream = %name, %error, "thumbnail failed");
                            metrics::counter!("headwater_thumbnail_errors_total").increment(1);
                        }
                    }
                }
            })
            .map_err(Error::Thread)?;
        Ok(Self { jobs })
    }

    /// Offers a keyframe (never blocks); false when it was skipped because the thread is busy.
    pub fn offer(&self, config: &AvcConfig, frame: &MediaFrame) -> bool {
        let job = Job {
            config: config.clone(),
            frame: frame.data.clone(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Decodes one IDR access unit (AVCC, as `config` describes) and returns it as a JPEG `width`
/// pixels wide.
pub(crate) fn render(config: &AvcConfig, frame: &[u8], width: u32) -> Result<Vec<u8>, Error> {
    let codec = |what, source| Error::Codec { what, source };
    let mut annexb = Vec::with_capacity(frame.len() + 64);
    if let Some(units) = nal::record_parameter_sets(&config.record) {
        nal::write_annexb(units, &mut annexb);
    }
    let units = nal::avcc_units(frame).ok_or(Error::Codec {
        what: "splitting the keyframe into NAL units",
        source: ffmpeg::Error::InvalidData,
    })?;
    nal::write_annexb(units, &mut annexb);

    let decoder = ffmpeg::decoder::find(ffmpeg::codec::Id::H264).ok_or(Error::NoH264Decoder)?;
    let mut decoder = ffmpeg::codec::Context::new_with_codec(decoder)
        .decoder()
        .video()
        .map_err(|e| codec("opening the H.264 decoder", e))?;
    let mut packet = ffmpeg::Packet::copy(&annexb);
    packet.set_flags(ffmpeg::packet::Flags::KEY);
    decoder
        .send_packet(&packet)
        .map_err(|e| codec("decoding the keyframe", e))?;
    decoder
        .send_eof()
        .map_err(|e| codec("decoding the keyframe", e))?;
    let mut picture = ffmpeg::frame::Video::empty();
    decoder
        .receive_frame(&mut picture)
        .map_err(|e| codec("decoding the keyframe", e))?;

    let (w, h) = (picture.width(), picture.height());
    let height = super::rung::scaled_width((h, w), width).max(2);
    let mut scaler = ffmpeg::software::scaling::Context::get(
        picture.format(),
        w,
        h,
        ffmpeg::format::Pixel::YUVJ420P,
        width,
        height,
        ffmpeg::software::scaling::Flags::BICUBIC,
    )
    .map_err(|e| codec("creating the thumbnail scaler", e))?;
    let mut scaled = ffmpeg::frame::Video::empty();
    scaler
        .run(&picture, &mut scaled)
        .map_err(|e| codec("scaling the thumbnail", e))?;
    scaled.set_pts(Some(0));

    let mjpeg = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG).ok_or(Error::Codec {
        what: "finding the MJPEG encoder",
        source: ffmpeg::Error::EncoderNotFound,
    })?;
    let mut encoder = ffmpeg::codec::Context::new_with_codec(mjpeg)
        .encoder()
        .video()
        .map_err(|e| codec("creating the JPEG encoder", e))?;
    encoder.set_width(width);
    encoder.set_height(height);
    encoder.set_format(ffmpeg::format::Pixel::YUVJ420P);
    encoder.set_time_base(ffmpeg::Rational::new(1, 25));
    encoder.set_flags(ffmpeg::codec::Flags::QSCALE);
    encoder.set_global_quality(QSCALE * ffmpeg::ffi::FF_QP2LAMBDA);
    let mut encoder = encoder
        .open()
        .map_err(|e| codec("opening the JPEG encoder", e))?;
    encoder
        .send_frame(&scaled)
        .map_err(|e| codec("encoding the thumbnail", e))?;
    encoder
        .send_eof()
        .map_err(|e| codec("encoding the thumbnail", e))?;
    let mut packet = ffmpeg::Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(|e| codec("encoding the thumbnail", e))?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_ingest::ts::Demuxer;
    use headwater_ingest::IngestEvent;

    /// The size of a JPEG, decoded back with FFmpeg.
    fn jpeg_size(jpeg: &[u8]) -> (u32, u32) {
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::MJPEG).expect("mjpeg decoder");
        let mut decoder = ffmpeg::codec::Context::new_with_codec(codec)
            .decoder()
            .video()
            .expect("open");
        decoder
            .send_packet(&ffmpeg::Packet::copy(jpeg))
            .expect("send");
        decoder.send_eof().expect("eof");
        let mut picture = ffmpeg::frame::Video::empty();
        decoder.receive_frame(&mut picture).expect("a picture");
        (picture.width(), picture.height())
    }

    #[test]
    fn a_keyframe_becomes_a_jpeg_320_wide_with_the_aspect_kept() {
        init_ffmpeg();
        for (size, expected) in [("640x360", (320, 180)), ("480x360", (320, 240))] {
            let output = std::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
                .arg(format!("testsrc2=size={size}:rate=30"))
                .args(["-frames:v", "3", "-c:v", "libx264", "-f", "mpegts", "-"])
                .output()
                .expect("ffmpeg is installed (scripts/test.sh installs it)");
            assert!(output.status.success(), "ffmpeg failed");
            let mut demuxer = Demuxer::new();
            let mut events = demuxer.push(&output.stdout);
            events.extend(demuxer.flush());
            let config = events.iter().find_map(|e| match e {
                IngestEvent::VideoConfig(c) => Some(c.clone()),
                _ => None,
            });
            let frame = events.iter().find_map(|e| match e {
                IngestEvent::Frame(f) if f.keyframe => Some(f.clone()),
                _ => None,
            });
            let (config, frame) = (config.expect("config"), frame.expect("keyframe"));
            let jpeg = render(&config, &frame.data, WIDTH).expect("render");
            assert_eq!(
                jpeg.get(..2),
                Some(&[0xFF, 0xD8][..]),
                "JPEG start of image"
            );
            assert!(jpeg.len() < 64 * 1024, "{} bytes", jpeg.len());
            assert_eq!(jpeg_size(&jpeg), expected, "{size}");
        }
        // Not a picture: an error, not a panic.
        let config = AvcConfig {
            record: Bytes::new(),
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 31,
            width: 640,
            height: 360,
            frame_rate: None,
        };
        assert!(render(&config, &[0, 0, 0, 2, 0x65, 0x88], WIDTH).is_err());
    }
}
