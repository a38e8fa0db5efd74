//! CMAF fMP4 muxer: init segments (ftyp+moov) and media segments (styp+moof+mdat).
//!
//! Pure byte writing from codec configs and samples; no I/O, no timing decisions (the segmenter
//! decides what goes into a segment). Track 1 is video at 90 kHz, track 2 is audio at its
//! sample rate; a track whose config is absent is left out.
//!
//! Box sizes are 32-bit and `trun` data offsets are signed 32-bit, so the caller must keep a media
//! segment under 2 GiB (live segments are a few megabytes); past that the writer panics.

use bytes::{BufMut, Bytes, BytesMut};
use headwater_ingest::{AacConfig, AvcConfig};
use std::ops::{Deref, DerefMut};

/// Track id of the video track.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Timescale of the video track (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Movie timescale (`mvhd`); nothing is timed in it because every duration is 0.
const MOVIE_TIMESCALE: u32 = 1000;

/// `tfhd` flag: sample data offsets are relative to the start of the enclosing `moof`.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags.
const TRUN_DATA_OFFSET: u32 = 0x000_001;
const TRUN_SAMPLE_DURATION: u32 = 0x000_100;
const TRUN_SAMPLE_SIZE: u32 = 0x000_200;
const TRUN_SAMPLE_FLAGS: u32 = 0x000_400;
const TRUN_SAMPLE_CTS: u32 = 0x000_800;

/// Sample flags of a sync sample: sample_depends_on = 2 (depends on no other sample).
const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: sample_depends_on = 1, sample_is_non_sync_sample = 1.
const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Identity transformation matrix of `mvhd`/`tkhd` (16.16 and 2.30 fixed point).
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// ISO 639-2 "und" packed as three 5-bit letters (each minus 0x60).
const LANGUAGE_UND: u16 =
    ((b'u' as u16 - 0x60) << 10) | ((b'n' as u16 - 0x60) << 5) | (b'd' as u16 - 0x60);

/// Largest length the 4-byte MPEG-4 descriptor length encoding can express (28 bits).
const MAX_DESCRIPTOR_LEN: usize = 0x0FFF_FFFF;

/// One sample (access unit) of a track fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition offset (PTS - DTS) in the track's timescale.
    pub cts_offset: i32,
    /// Sync sample (IDR for video; every audio sample).
    pub keyframe: bool,
    /// Sample bytes (AVCC NAL units or a raw AAC frame).
    pub data: Bytes,
}

/// The samples of one track within a media segment.
#[derive(Debug, Clone)]
pub struct TrackFragment<'a> {
    /// [`VIDEO_TRACK_ID`] or [`AUDIO_TRACK_ID`].
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_decode_time: u64,
    /// Samples in decode order.
    pub samples: &'a [Sample],
}

/// Writes an init segment describing the given tracks.
pub fn write_init(video: Option<&AvcConfig>, audio: Option<&AacConfig>) -> Bytes {
    let track_count = usize::from(video.is_some()) + usize::from(audio.is_some());
    let mut w = BoxWriter::with_capacity(
        1024 + video.map_or(0, |v| v.record.len()) + audio.map_or(0, |a| a.asc.len()),
    );

    // `cmfc` promises a CMAF track file, which holds exactly one track; a muxed init is plain
    // ISO BMFF (which HLS allows), so it only claims `iso6`/`mp41`.
    let mut compatible: Vec<&[u8; 4]> = vec![b"iso6", b"mp41"];
    if track_count == 1 {
        compatible.push(b"cmfc");
    }
    w.file_type(b"ftyp", b"iso6", &compatible);

    w.boxed(b"moov", |w| {
        w.full_box(b"mvhd", 0, 0, |w| {
            w.put_u32(0); // creation_time
            w.put_u32(0); // modification_time
            w.put_u32(MOVIE_TIMESCALE);
            w.put_u32(0); // duration: unknown, the movie is fragmented
            w.put_u32(0x0001_0000); // rate 1.0
            w.put_u16(0x0100); // volume 1.0
            w.put_bytes(0, 2 + 4 * 2); // reserved
            put_matrix(w);
            w.put_bytes(0, 6 * 4); // pre_defined
            w.put_u32(AUDIO_TRACK_ID.max(VIDEO_TRACK_ID) + 1); // next_track_ID
        });
        if let Some(video) = video {
            write_video_trak(w, video);
        }
        if let Some(audio) = audio {
            write_audio_trak(w, audio);
        }
        w.boxed(b"mvex", |w| {
            let present = [
                (video.is_some(), VIDEO_TRACK_ID),
                (audio.is_some(), AUDIO_TRACK_ID),
            ];
            for (_, track_id) in present.into_iter().filter(|(present, _)| *present) {
                w.full_box(b"trex", 0, 0, |w| {
                    w.put_u32(track_id);
                    w.put_u32(1); // default_sample_description_index
                    w.put_u32(0); // default_sample_duration
                    w.put_u32(0); // default_sample_size
                    w.put_u32(0); // default_sample_flags
                });
            }
        });
    });
    w.finish()
}

/// Writes one media segment (`styp`, `moof`, `mdat`) holding every given track fragment.
pub fn write_segment(sequence_number: u32, fragments: &[TrackFragment<'_>]) -> Bytes {
    let fragments: Vec<&TrackFragment<'_>> =
        fragments.iter().filter(|f| !f.samples.is_empty()).collect();
    let payload_len: usize = fragments.iter().map(|f| fragment_payload_len(f)).sum();
    let sample_count: usize = fragments.iter().map(|f| f.samples.len()).sum();
    let mut w = BoxWriter::with_capacity(256 + 16 * sample_count + payload_len);

    // `cmfs` promises a CMAF segment, i.e. a single track; muxed segments only claim `msdh`.
    let mut compatible: Vec<&[u8; 4]> = vec![b"msdh"];
    if fragments.len() == 1 {
        compatible.push(b"cmfs");
    }
    w.file_type(b"styp", b"msdh", &compatible);

    let moof_start = w.len();
    // Where each traf's `trun` data_offset goes, patched once the `moof` size is known.
    let mut data_offset_fields = Vec::with_capacity(fragments.len());
    w.boxed(b"moof", |w| {
        w.full_box(b"mfhd", 0, 0, |w| w.put_u32(sequence_number));
        for fragment in &fragments {
            w.boxed(b"traf", |w| {
                w.full_box(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |w| {
                    w.put_u32(fragment.track_id);
                });
                w.full_box(b"tfdt", 1, 0, |w| w.put_u64(fragment.base_decode_time));
                let with_cts = fragment.samples.iter().any(|s| s.cts_offset != 0);
                let mut flags =
                    TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE | TRUN_SAMPLE_FLAGS;
                if with_cts {
                    flags |= TRUN_SAMPLE_CTS;
                }
                // Version 1: composition offsets are signed, so B-frames need no edit list.
                w.full_box(b"trun", 1, flags, |w| {
                    w.put_u32(len_u32(fragment.samples.len()));
                    data_offset_fields.push(w.len());
                    w.put_i32(0);
                    for sample in fragment.samples {
                        w.put_u32(sample.duration);
                        w.put_u32(len_u32(sample.data.len()));
                        w.put_u32(if sample.keyframe {
                            SAMPLE_FLAGS_SYNC
                        } else {
                            SAMPLE_FLAGS_NON_SYNC
                        });
                        if with_cts {
                            w.put_i32(sample.cts_offset);
                        }
                    }
                });
            });
        }
    });

    const MDAT_HEADER_LEN: usize = 8;
    let mut data_offset = w.len() - moof_start + MDAT_HEADER_LEN;
    for (field, fragment) in data_offset_fields.into_iter().zip(&fragments) {
        let offset = i32::try_from(data_offset).expect("media segment under 2 GiB");
        w[field..field + 4].copy_from_slice(&offset.to_be_bytes());
        data_offset += fragment_payload_len(fragment);
    }

    w.boxed(b"mdat", |w| {
        for fragment in &fragments {
            for sample in fragment.samples {
                w.put_slice(&sample.data);
            }
        }
    });
    w.finish()
}

/// Bytes a fragment's samples occupy in `mdat`.
fn fragment_payload_len(fragment: &TrackFragment<'_>) -> usize {
    fragment.samples.iter().map(|s| s.data.len()).sum()
}

fn write_video_trak(w: &mut BoxWriter, config: &AvcConfig) {
    let width = saturate_u16(config.width);
    let height = saturate_u16(config.height);
    let track = TrackHeader {
        track_id: VIDEO_TRACK_ID,
        volume: 0,
        width,
        height,
        timescale: VIDEO_TIMESCALE,
        handler: b"vide",
        handler_name: b"Headwater Video\0",
    };
    write_trak(
        w,
        &track,
        |w| {
            w.full_box(b"vmhd", 0, 1, |w| {
                w.put_u16(0); // graphicsmode: copy
                w.put_bytes(0, 3 * 2); // opcolor
            });
        },
        |w| {
            w.boxed(b"avc1", |w| {
                put_sample_entry_header(w);
                w.put_u16(0); // pre_defined
                w.put_u16(0); // reserved
                w.put_bytes(0, 3 * 4); // pre_defined
                w.put_u16(width);
                w.put_u16(height);
                w.put_u32(0x0048_0000); // horizresolution: 72 dpi
                w.put_u32(0x0048_0000); // vertresolution: 72 dpi
                w.put_u32(0); // reserved
                w.put_u16(1); // frame_count
                w.put_bytes(0, 32); // compressorname: empty Pascal string
                w.put_u16(0x0018); // depth: colour, no alpha
                w.put_i16(-1); // pre_defined
                w.boxed(b"avcC", |w| w.put_slice(&config.record));
            });
        },
    );
}

fn write_audio_trak(w: &mut BoxWriter, config: &AacConfig) {
    let track = TrackHeader {
        track_id: AUDIO_TRACK_ID,
        volume: 0x0100,
        width: 0,
        height: 0,
        timescale: config.sample_rate,
        handler: b"soun",
        handler_name: b"Headwater Audio\0",
    };
    // Channel configuration 0 means "described by a PCE in the ASC"; stereo is the usual guess.
    let channels = if config.channels == 0 {
        2
    } else {
        config.channels
    };
    write_trak(
        w,
        &track,
        |w| {
            w.full_box(b"smhd", 0, 0, |w| {
                w.put_i16(0); // balance: centre
                w.put_u16(0); // reserved
            });
        },
        |w| {
            w.boxed(b"mp4a", |w| {
                put_sample_entry_header(w);
                w.put_bytes(0, 2 * 4); // reserved
                w.put_u16(u16::from(channels));
                w.put_u16(16); // samplesize
                w.put_u16(0); // pre_defined
                w.put_u16(0); // reserved
                              // 16.16 fixed point; rates that do not fit are left to the ASC.
                let rate = u16::try_from(config.sample_rate).map_or(0, |r| u32::from(r) << 16);
                w.put_u32(rate);
                w.full_box(b"esds", 0, 0, |w| put_es_descriptor(w, config, channels));
            });
        },
    );
}

/// The per-track values of a `trak` that differ between video and audio.
struct TrackHeader {
    track_id: u32,
    volume: u16,
    width: u16,
    height: u16,
    timescale: u32,
    handler: &'static [u8; 4],
    handler_name: &'static [u8],
}

fn write_trak(
    w: &mut BoxWriter,
    track: &TrackHeader,
    media_header: impl FnOnce(&mut BoxWriter),
    sample_entry: impl FnOnce(&mut BoxWriter),
) {
    w.boxed(b"trak", |w| {
        // Flags: track_enabled | track_in_movie.
        w.full_box(b"tkhd", 0, 0x3, |w| {
            w.put_u32(0); // creation_time
            w.put_u32(0); // modification_time
            w.put_u32(track.track_id);
            w.put_u32(0); // reserved
            w.put_u32(0); // duration
            w.put_bytes(0, 2 * 4); // reserved
            w.put_i16(0); // layer
            w.put_i16(0); // alternate_group
            w.put_u16(track.volume);
            w.put_u16(0); // reserved
            put_matrix(w);
            w.put_u32(u32::from(track.width) << 16);
            w.put_u32(u32::from(track.height) << 16);
        });
        w.boxed(b"mdia", |w| {
            w.full_box(b"mdhd", 0, 0, |w| {
                w.put_u32(0); // creation_time
                w.put_u32(0); // modification_time
                w.put_u32(track.timescale);
                w.put_u32(0); // duration
                w.put_u16(LANGUAGE_UND);
                w.put_u16(0); // pre_defined
            });
            w.full_box(b"hdlr", 0, 0, |w| {
                w.put_u32(0); // pre_defined
                w.put_slice(track.handler);
                w.put_bytes(0, 3 * 4); // reserved
                w.put_slice(track.handler_name);
            });
            w.boxed(b"minf", |w| {
                media_header(w);
                w.boxed(b"dinf", |w| {
                    w.full_box(b"dref", 0, 0, |w| {
                        w.put_u32(1); // entry_count
                                      // Flag 1: the media data is in this same file.
                        w.full_box(b"url ", 0, 1, |_| {});
                    });
                });
                w.boxed(b"stbl", |w| {
                    w.full_box(b"stsd", 0, 0, |w| {
                        w.put_u32(1); // entry_count
                        sample_entry(w);
                    });
                    // Samples live in the fragments, so the sample tables are empty.
                    w.full_box(b"stts", 0, 0, |w| w.put_u32(0));
                    w.full_box(b"stsc", 0, 0, |w| w.put_u32(0));
                    w.full_box(b"stsz", 0, 0, |w| {
                        w.put_u32(0); // sample_size
                        w.put_u32(0); // sample_count
                    });
                    w.full_box(b"stco", 0, 0, |w| w.put_u32(0));
                });
            });
        });
    });
}

/// The `SampleEntry` fields shared by `avc1` and `mp4a`.
fn put_sample_entry_header(w: &mut BoxWriter) {
    w.put_bytes(0, 6); // reserved
    w.put_u16(1); // data_reference_index: the one `url ` entry
}

fn put_matrix(w: &mut BoxWriter) {
    for value in UNITY_MATRIX {
        w.put_u32(value);
    }
}

/// The ES_Descriptor of `esds` (ISO 14496-1 7.2.6.5, profiled by ISO 14496-14 3.1.2).
fn put_es_descriptor(w: &mut BoxWriter, config: &AacConfig, channels: u8) {
    // Bounds from ISO 14496-3 4.5.3: an AAC decoder buffers 6144 bits per channel per frame.
    let channels = u32::from(channels);
    let buffer_size_db = (6144 / 8 * channels).min(0xFF_FFFF);
    let max_bitrate = 6u32
        .saturating_mul(config.sample_rate)
        .saturating_mul(channels);

    let mut decoder_specific = BytesMut::new();
    put_descriptor(&mut decoder_specific, 0x05, &config.asc);

    let mut decoder_config = BytesMut::new();
    decoder_config.put_u8(0x40); // objectTypeIndication: MPEG-4 Audio
    decoder_config.put_u8((0x05 << 2) | 0x1); // streamType AudioStream, upStream 0, reserved 1
    decoder_config.put_uint(u64::from(buffer_size_db), 3);
    decoder_config.put_u32(max_bitrate);
    decoder_config.put_u32(0); // avgBitrate: variable
    decoder_config.put_slice(&decoder_specific);

    let mut es = BytesMut::new();
    es.put_u16(0); // ES_ID: 0 in MP4 files (ISO 14496-14 3.1.2)
    es.put_u8(0); // no streamDependence, URL or OCR stream
    put_descriptor(&mut es, 0x04, &decoder_config);
    put_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor, predefined = 2 (MP4)

    put_descriptor(w, 0x03, &es);
}

/// Writes an MPEG-4 descriptor: tag, expandable length, payload.
///
/// A payload longer than the 28-bit length field (never the case for a real ASC) is cut off
/// rather than written with a wrong length.
fn put_descriptor(out: &mut BytesMut, tag: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_DESCRIPTOR_LEN)];
    let len = payload.len();
    out.put_u8(tag);
    if len < 0x80 {
        out.put_u8(len as u8);
    } else {
        // Four 7-bit groups, most significant first, continuation bit on all but the last.
        for shift in [21, 14, 7] {
            out.put_u8(0x80 | ((len >> shift) & 0x7F) as u8);
        }
        out.put_u8((len & 0x7F) as u8);
    }
    out.put_slice(payload);
}

fn saturate_u16(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

/// A length or count as the 32-bit field ISO BMFF stores it.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("media segment under 4 GiB")
}

/// Accumulates ISO BMFF boxes, patching each box's size when its body is done.
struct BoxWriter {
    buf: BytesMut,
}

impl BoxWriter {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// Writes a box of type `kind` whose body is whatever `body` writes.
    fn boxed(&mut self, kind: &[u8; 4], body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.buf.put_u32(0); // size, patched below
        self.buf.put_slice(kind);
        body(self);
        let size = len_u32(self.buf.len() - start);
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    }

    /// Writes a full box: a box whose body starts with version and 24-bit flags.
    fn full_box(&mut self, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Self)) {
        self.boxed(kind, |w| {
            w.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
            body(w);
        });
    }

    /// Writes an `ftyp`/`styp` box.
    fn file_type(&mut self, kind: &[u8; 4], major: &[u8; 4], compatible: &[&[u8; 4]]) {
        self.boxed(kind, |w| {
            w.put_slice(major);
            w.put_u32(0); // minor_version
            for brand in compatible {
                w.put_slice(*brand);
            }
        });
    }

    fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

impl Deref for BoxWriter {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl DerefMut for BoxWriter {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// One parsed box: its type, absolute offset of its header, and its body.
    #[derive(Debug, Clone, Copy)]
    struct Bx<'a> {
        kind: [u8; 4],
        start: usize,
        body_start: usize,
        body: &'a [u8],
    }

    impl<'a> Bx<'a> {
        fn kind(&self) -> &str {
            std::str::from_utf8(&self.kind).unwrap()
        }

        /// Children of a container box; sample entries and list boxes have fields first.
        fn children(&self) -> Vec<Bx<'a>> {
            let skip = match &self.kind {
                b"stsd" | b"dref" => 8,
                b"avc1" => 78,
                b"mp4a" => 28,
                _ => 0,
            };
            walk(&self.body[skip..], self.body_start + skip)
        }

        fn child(&self, kind: &str) -> Bx<'a> {
            let found: Vec<_> = self
                .children()
                .into_iter()
                .filter(|b| b.kind() == kind)
                .collect();
            assert_eq!(
                found.len(),
                1,
                "expected exactly one {kind} in {}",
                self.kind()
            );
            found[0]
        }

        fn path(&self, path: &[&str]) -> Bx<'a> {
            path.iter().fold(*self, |b, kind| b.child(kind))
        }

        fn u32_at(&self, at: usize) -> u32 {
            u32::from_be_bytes(self.body[at..at + 4].try_into().unwrap())
        }

        fn u16_at(&self, at: usize) -> u16 {
            u16::from_be_bytes(self.body[at..at + 2].try_into().unwrap())
        }
    }

    /// Splits `buf` (found at absolute offset `base`) into boxes; panics on a malformed size.
    fn walk(buf: &[u8], base: usize) -> Vec<Bx<'_>> {
        let mut boxes = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            assert!(
                pos + 8 <= buf.len(),
                "truncated box header at {}",
                base + pos
            );
            let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            assert!(
                size >= 8 && pos + size <= buf.len(),
                "bad box size {size} at {}",
                base + pos
            );
            boxes.push(Bx {
                kind: buf[pos + 4..pos + 8].try_into().unwrap(),
                start: base + pos,
                body_start: base + pos + 8,
                body: &buf[pos + 8..pos + size],
            });
            pos += size;
        }
        boxes
    }

    /// The file's top-level boxes, wrapped in a pseudo-box so `path` works from the root.
    fn root(buf: &[u8]) -> Bx<'_> {
        Bx {
            kind: *b"root",
            start: 0,
            body_start: 0,
            body: buf,
        }
    }

    fn kinds(boxes: &[Bx<'_>]) -> Vec<String> {
        boxes.iter().map(|b| b.kind().to_owned()).collect()
    }

    fn brands(b: &Bx<'_>) -> Vec<String> {
        b.body
            .chunks(4)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect()
    }

    fn avc_config() -> AvcConfig {
        AvcConfig {
            record: Bytes::from_static(&[
                0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x1f, 0x01, 0x00,
                0x02, 0x68, 0xee,
            ]),
            profile_idc: 0x64,
            constraint_flags: 0,
            level_idc: 0x1f,
            width: 1280,
            height: 720,
            frame_rate: Some(30.0),
        }
    }

    fn aac_config() -> AacConfig {
        AacConfig {
            asc: Bytes::from_static(&[0x11, 0x90]),
            object_type: 2,
            sample_rate: 48_000,
            channels: 2,
        }
    }

    /// Parses one MPEG-4 descriptor: (tag, payload, rest).
    fn descriptor(buf: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = buf[0];
        let mut len = 0usize;
        let mut pos = 1;
        loop {
            let b = buf[pos];
            pos += 1;
            len = (len << 7) | usize::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
        (tag, &buf[pos..pos + len], &buf[pos + len..])
    }

    /// The ASC and decoder-config fields found in an `esds` body.
    fn parse_esds(esds: &Bx<'_>) -> (Vec<u8>, [u8; 2], u8) {
        assert_eq!(esds.u32_at(0), 0, "esds version/flags");
        let (tag, es, rest) = descriptor(&esds.body[4..]);
        assert_eq!((tag, rest.len()), (0x03, 0));
        assert_eq!(&es[..3], &[0, 0, 0], "ES_ID 0, no optional fields");
        let (tag, dcd, rest) = descriptor(&es[3..]);
        assert_eq!(tag, 0x04);
        let (sl_tag, sl, tail) = descriptor(rest);
        assert_eq!((sl_tag, sl, tail.len()), (0x06, &[0x02][..], 0));
        let (tag, asc, tail) = descriptor(&dcd[13..]);
        assert_eq!((tag, tail.len()), (0x05, 0));
        (asc.to_vec(), [dcd[0], dcd[1]], sl[0])
    }

    #[test]
    fn init_with_both_tracks_has_the_full_tree() {
        let video = avc_config();
        let audio = aac_config();
        let init = write_init(Some(&video), Some(&audio));
        let top = walk(&init, 0);
        assert_eq!(kinds(&top), ["ftyp", "moov"]);
        assert_eq!(brands(&top[0]), ["iso6", "\0\0\0\0", "iso6", "mp41"]);

        let moov = top[1];
        assert_eq!(kinds(&moov.children()), ["mvhd", "trak", "trak", "mvex"]);
        let mvhd = moov.child("mvhd");
        assert_eq!(mvhd.body.len(), 100);
        assert_eq!(mvhd.u32_at(12), 1000, "movie timescale");
        assert_eq!(mvhd.u32_at(96), 3, "next_track_ID");

        let traks: Vec<_> = moov
            .children()
            .into_iter()
            .filter(|b| b.kind() == "trak")
            .collect();
        let (vtrak, atrak) = (traks[0], traks[1]);

        let tkhd = vtrak.child("tkhd");
        assert_eq!(tkhd.u32_at(0), 0x0000_0003, "version 0, enabled | in_movie");
        assert_eq!(tkhd.u32_at(12), VIDEO_TRACK_ID);
        assert_eq!(tkhd.u16_at(36), 0, "video volume");
        assert_eq!(tkhd.u32_at(76), 1280 << 16);
        assert_eq!(tkhd.u32_at(80), 720 << 16);
        assert_eq!(atrak.child("tkhd").u32_at(12), AUDIO_TRACK_ID);
        assert_eq!(atrak.child("tkhd").u16_at(36), 0x0100, "audio volume");

        let vmdia = vtrak.child("mdia");
        assert_eq!(kinds(&vmdia.children()), ["mdhd", "hdlr", "minf"]);
        assert_eq!(vmdia.child("mdhd").u32_at(12), VIDEO_TIMESCALE);
        assert_eq!(vmdia.child("mdhd").u16_at(20), 0x55c4, "language und");
        assert_eq!(&vmdia.child("hdlr").body[8..12], b"vide");
        assert_eq!(atrak.path(&["mdia", "mdhd"]).u32_at(12), 48_000);
        assert_eq!(&atrak.path(&["mdia", "hdlr"]).body[8..12], b"soun");

        let vminf = vmdia.child("minf");
        assert_eq!(kinds(&vminf.children()), ["vmhd", "dinf", "stbl"]);
        assert_eq!(vminf.child("vmhd").u32_at(0), 1, "vmhd flags");
        let url = vminf.path(&["dinf", "dref", "url "]);
        assert_eq!(url.body, &[0, 0, 0, 1]);
        let stbl = vminf.child("stbl");
        assert_eq!(
            kinds(&stbl.children()),
            ["stsd", "stts", "stsc", "stsz", "stco"]
        );
        let avc1 = stbl.path(&["stsd", "avc1"]);
        assert_eq!(avc1.u16_at(6), 1, "data_reference_index");
        assert_eq!((avc1.u16_at(24), avc1.u16_at(26)), (1280, 720));
        assert_eq!(avc1.u32_at(28), 0x0048_0000);
        assert_eq!(avc1.u16_at(40), 1, "frame_count");
        assert_eq!(avc1.u16_at(74), 0x18, "depth");
        assert_eq!(avc1.u16_at(76), 0xffff, "pre_defined -1");
        assert_eq!(avc1.child("avcC").body, &video.record[..]);

        let aminf = atrak.path(&["mdia", "minf"]);
        assert_eq!(kinds(&aminf.children()), ["smhd", "dinf", "stbl"]);
        let mp4a = aminf.path(&["stbl", "stsd", "mp4a"]);
        assert_eq!(mp4a.u16_at(16), 2, "channelcount");
        assert_eq!(mp4a.u16_at(18), 16, "samplesize");
        assert_eq!(mp4a.u32_at(24), 48_000 << 16);
        let (asc, [oti, stream_type], sl) = parse_esds(&mp4a.child("esds"));
        assert_eq!(asc, &audio.asc[..]);
        assert_eq!((oti, stream_type, sl), (0x40, 0x15, 2));

        let mvex = moov.child("mvex");
        let trex: Vec<_> = mvex.children();
        assert_eq!(kinds(&trex), ["trex", "trex"]);
        assert_eq!((trex[0].u32_at(4), trex[0].u32_at(8)), (VIDEO_TRACK_ID, 1));
        assert_eq!((trex[1].u32_at(4), trex[1].u32_at(8)), (AUDIO_TRACK_ID, 1));
        assert_eq!(&trex[1].body[12..], &[0; 12], "no other defaults");
    }

    #[test]
    fn single_track_inits_have_one_trak_and_claim_cmaf() {
        let video = avc_config();
        let audio = aac_config();
        for (init, track_id) in [
            (write_init(Some(&video), None), VIDEO_TRACK_ID),
            (write_init(None, Some(&audio)), AUDIO_TRACK_ID),
        ] {
            let top = walk(&init, 0);
            assert_eq!(
                brands(&top[0]),
                ["iso6", "\0\0\0\0", "iso6", "mp41", "cmfc"]
            );
            let moov = top[1];
            assert_eq!(kinds(&moov.children()), ["mvhd", "trak", "mvex"]);
            assert_eq!(moov.path(&["trak", "tkhd"]).u32_at(12), track_id);
            assert_eq!(moov.path(&["mvex", "trex"]).u32_at(4), track_id);
        }
        // No tracks at all is useless but must still be well formed.
        let empty = write_init(None, None);
        assert_eq!(
            kinds(&root(&empty).child("moov").children()),
            ["mvhd", "mvex"]
        );
    }

    #[test]
    fn audio_sample_entry_edge_cases() {
        let audio = AacConfig {
            asc: Bytes::from(vec![0x12; 200]),
            object_type: 2,
            sample_rate: 96_000,
            channels: 0,
        };
        let init = write_init(None, Some(&audio));
        let mp4a = root(&init).path(&["moov", "trak", "mdia", "minf", "stbl", "stsd", "mp4a"]);
        assert_eq!(
            mp4a.u16_at(16),
            2,
            "channel configuration 0 is written as stereo"
        );
        assert_eq!(mp4a.u32_at(24), 0, "96 kHz does not fit 16.16");
        // A 200-byte ASC needs the multi-byte descriptor length form.
        let (asc, _, _) = parse_esds(&mp4a.child("esds"));
        assert_eq!(asc, &audio.asc[..]);

        let mut out = BytesMut::new();
        put_descriptor(&mut out, 0x05, &[0; 0x80]);
        assert_eq!(&out[..5], &[0x05, 0x80, 0x80, 0x81, 0x00]);
        let mut out = BytesMut::new();
        put_descriptor(&mut out, 0x05, &[0; 0x7f]);
        assert_eq!(&out[..2], &[0x05, 0x7f]);
    }

    fn sample(duration: u32, cts_offset: i32, keyframe: bool, data: &[u8]) -> Sample {
        Sample {
            duration,
            cts_offset,
            keyframe,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Checks a `traf` against its fragment; returns the trun flags.
    fn check_traf(
        segment: &[u8],
        moof: &Bx<'_>,
        traf: &Bx<'_>,
        fragment: &TrackFragment<'_>,
    ) -> u32 {
        let tfhd = traf.child("tfhd");
        assert_eq!(tfhd.u32_at(0), TFHD_DEFAULT_BASE_IS_MOOF, "tfhd flags");
        assert_eq!(tfhd.body.len(), 8, "no defaults in tfhd");
        assert_eq!(tfhd.u32_at(4), fragment.track_id);
        let tfdt = traf.child("tfdt");
        assert_eq!(tfdt.u32_at(0), 0x0100_0000, "tfdt version 1");
        assert_eq!(
            u64::from_be_bytes(tfdt.body[4..12].try_into().unwrap()),
            fragment.base_decode_time
        );

        let trun = traf.child("trun");
        let flags = trun.u32_at(0) & 0xff_ffff;
        assert_eq!(trun.u32_at(0) >> 24, 1, "trun version 1");
        assert_eq!(trun.u32_at(4) as usize, fragment.samples.len());
        let with_cts = flags & TRUN_SAMPLE_CTS != 0;
        let data_offset = trun.u32_at(8) as i32;
        let mut pos = moof.start + usize::try_from(data_offset).unwrap();
        let stride = if with_cts { 16 } else { 12 };
        assert_eq!(trun.body.len(), 12 + stride * fragment.samples.len());
        for (i, s) in fragment.samples.iter().enumerate() {
            let at = 12 + i * stride;
            assert_eq!(trun.u32_at(at), s.duration);
            assert_eq!(trun.u32_at(at + 4) as usize, s.data.len());
            let want = if s.keyframe { 0x0200_0000 } else { 0x0101_0000 };
            assert_eq!(trun.u32_at(at + 8), want);
            if with_cts {
                assert_eq!(trun.u32_at(at + 12) as i32, s.cts_offset);
            }
            assert_eq!(
                &segment[pos..pos + s.data.len()],
                &s.data[..],
                "sample {i} bytes"
            );
            pos += s.data.len();
        }
        flags
    }

    #[test]
    fn segment_offsets_point_at_each_tracks_samples() {
        let video = [
            sample(3000, 3000, true, b"IDR-frame"),
            sample(3000, 9000, false, b"P"),
            sample(3000, -3000, false, b"B-frame!"),
        ];
        let audio = [
            sample(1024, 0, true, b"aac0"),
            sample(1024, 0, true, b"aac-1"),
        ];
        let fragments = [
            TrackFragment {
                track_id: VIDEO_TRACK_ID,
                base_decode_time: 1 << 33,
                samples: &video,
            },
            TrackFragment {
                track_id: AUDIO_TRACK_ID,
                base_decode_time: 96_000,
                samples: &audio,
            },
        ];
        let segment = write_segment(7, &fragments);
        let top = walk(&segment, 0);
        assert_eq!(kinds(&top), ["styp", "moof", "mdat"]);
        assert_eq!(brands(&top[0]), ["msdh", "\0\0\0\0", "msdh"]);

        let moof = top[1];
        assert_eq!(kinds(&moof.children()), ["mfhd", "traf", "traf"]);
        assert_eq!(moof.child("mfhd").u32_at(4), 7);
        let trafs: Vec<_> = moof
            .children()
            .into_iter()
            .filter(|b| b.kind() == "traf")
            .collect();
        let vflags = check_traf(&segment, &moof, &trafs[0], &fragments[0]);
        assert_eq!(vflags, 0xf01);
        let aflags = check_traf(&segment, &moof, &trafs[1], &fragments[1]);
        assert_eq!(aflags, 0x701, "no composition offsets for audio");

        // The first track's data starts right after the mdat header; nothing else is in mdat.
        let mdat = top[2];
        assert_eq!(
            trafs[0].child("trun").u32_at(8) as usize,
            mdat.body_start - moof.start
        );
        assert_eq!(mdat.body, b"IDR-framePB-frame!aac0aac-1");
    }

    #[test]
    fn empty_fragments_are_skipped() {
        let audio = [sample(1024, 0, true, b"aac")];
        let fragments = [
            TrackFragment {
                track_id: VIDEO_TRACK_ID,
                base_decode_time: 0,
                samples: &[],
            },
            TrackFragment {
                track_id: AUDIO_TRACK_ID,
                base_decode_time: 1024,
                samples: &audio,
            },
        ];
        let segment = write_segment(1, &fragments);
        let top = walk(&segment, 0);
        assert_eq!(brands(&top[0]), ["msdh", "\0\0\0\0", "msdh", "cmfs"]);
        let moof = top[1];
        assert_eq!(kinds(&moof.children()), ["mfhd", "traf"]);
        check_traf(&segment, &moof, &moof.child("traf"), &fragments[1]);
        assert_eq!(top[2].body, b"aac");

        let nothing = write_segment(2, &[]);
        assert_eq!(kinds(&walk(&nothing, 0)), ["styp", "moof", "mdat"]);
    }

    // ---- Real-decoder round trip through ffmpeg's FLV output ----

    struct FlvTag {
        kind: u8,
        timestamp_ms: u32,
        body: Vec<u8>,
    }

    fn be24(b: &[u8]) -> u32 {
        (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
    }

    /// Reads every tag of an FLV file.
    fn read_flv(file: &[u8]) -> Vec<FlvTag> {
        assert_eq!(&file[..3], b"FLV");
        let header_len = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
        let mut pos = header_len + 4; // header, then PreviousTagSize0
        let mut tags = Vec::new();
        while pos + 11 <= file.len() {
            let kind = file[pos] & 0x1f;
            let size = be24(&file[pos + 1..]) as usize;
            let timestamp_ms = be24(&file[pos + 4..]) | (u32::from(file[pos + 7]) << 24);
            let body = file[pos + 11..pos + 11 + size].to_vec();
            tags.push(FlvTag {
                kind,
                timestamp_ms,
                body,
            });
            pos += 11 + size + 4;
        }
        tags
    }

    struct Frame {
        dts_ms: u32,
        cts_ms: i32,
        keyframe: bool,
        data: Bytes,
    }

    fn on_path(tool: &str) -> bool {
        Command::new("which")
            .arg(tool)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn ffprobe_json(args: &[&str], file: &Path) -> serde_json::Value {
        let out = Command::new("ffprobe")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn duration_of(file: &Path) -> f64 {
        let json = ffprobe_json(
            &[
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "json",
            ],
            file,
        );
        json["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn ffmpeg_decodes_muxed_output() {
        if !on_path("ffmpeg") || !on_path("ffprobe") {
            eprintln!("ffmpeg/ffprobe not on PATH; skipping the real-decoder test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let flv_path = dir.path().join("source.flv");
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "4"])
            .args([
                "-c:v", "libx264", "-g", "25", "-bf", "2", "-pix_fmt", "yuv420p",
            ])
            .args(["-c:a", "aac", "-ar", "48000", "-ac", "2"])
            .args(["-f", "flv"])
            .arg(&flv_path)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not produce the FLV source");

        let mut avc = None;
        let mut aac = None;
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for tag in read_flv(&std::fs::read(&flv_path).unwrap()) {
            let body = &tag.body;
            match tag.kind {
                9 => {
                    assert_eq!(body[0] & 0x0f, 7, "AVC");
                    let data = Bytes::copy_from_slice(&body[5..]);
                    match body[1] {
                        0 => {
                            avc = Some(AvcConfig {
                                profile_idc: data[1],
                                constraint_flags: data[2],
                                level_idc: data[3],
                                record: data,
                                width: 320,
                                height: 240,
                                frame_rate: Some(25.0),
                            });
                        }
                        1 => {
                            // 24-bit signed composition time.
                            let cts_ms = ((be24(&body[2..]) << 8) as i32) >> 8;
                            video.push(Frame {
                                dts_ms: tag.timestamp_ms,
                                cts_ms,
                                keyframe: body[0] >> 4 == 1,
                                data,
                            });
                        }
                        _ => {}
                    }
                }
                8 => {
                    assert_eq!(body[0] >> 4, 10, "AAC");
                    let data = Bytes::copy_from_slice(&body[2..]);
                    match body[1] {
                        0 => {
                            aac = Some(AacConfig {
                                object_type: data[0] >> 3,
                                sample_rate: 48_000,
                                channels: (data[1] >> 3) & 0x0f,
                                asc: data,
                            });
                        }
                        _ => audio.push(Frame {
                            dts_ms: tag.timestamp_ms,
                            cts_ms: 0,
                            keyframe: true,
                            data,
                        }),
                    }
                }
                _ => {}
            }
        }
        let (avc, aac) = (avc.unwrap(), aac.unwrap());
        assert_eq!((aac.object_type, aac.channels), (2, 2));
        assert!(video.iter().any(|f| f.cts_ms != 0), "source has B-frames");
        assert!(video[0].keyframe);

        // Split at the first keyframe from 2 s on.
        let split = video
            .iter()
            .position(|f| f.keyframe && f.dts_ms >= 2000)
            .unwrap();
        let split_ms = video[split].dts_ms;
        let video_samples: Vec<Sample> = video
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let next = video.get(i + 1).map_or(f.dts_ms + 40, |n| n.dts_ms);
                Sample {
                    duration: (next - f.dts_ms) * 90,
                    cts_offset: f.cts_ms * 90,
                    keyframe: f.keyframe,
                    data: f.data.clone(),
                }
            })
            .collect();
        let audio_samples: Vec<Sample> = audio
            .iter()
            .map(|f| Sample {
                duration: 1024,
                cts_offset: 0,
                keyframe: true,
                data: f.data.clone(),
            })
            .collect();
        let audio_split = audio.iter().position(|f| f.dts_ms >= split_ms).unwrap();
        let audio_start = u64::from(audio[0].dts_ms) * 48;

        let init = write_init(Some(&avc), Some(&aac));
        let first = write_segment(
            1,
            &[
                TrackFragment {
                    track_id: VIDEO_TRACK_ID,
                    base_decode_time: u64::from(video[0].dts_ms) * 90,
                    samples: &video_samples[..split],
                },
                TrackFragment {
                    track_id: AUDIO_TRACK_ID,
                    base_decode_time: audio_start,
                    samples: &audio_samples[..audio_split],
                },
            ],
        );
        let second = write_segment(
            2,
            &[
                TrackFragment {
                    track_id: VIDEO_TRACK_ID,
                    base_decode_time: u64::from(split_ms) * 90,
                    samples: &video_samples[split..],
                },
                TrackFragment {
                    track_id: AUDIO_TRACK_ID,
                    base_decode_time: audio_start + 1024 * audio_split as u64,
                    samples: &audio_samples[audio_split..],
                },
            ],
        );
        let mp4_path = dir.path().join("muxed.mp4");
        std::fs::write(&mp4_path, [&init[..], &first[..], &second[..]].concat()).unwrap();

        let streams = ffprobe_json(
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "json",
            ],
            &mp4_path,
        );
        let streams = streams["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0]["codec_name"], "h264");
        assert_eq!(
            (streams[0]["width"].as_u64(), streams[0]["height"].as_u64()),
            (Some(320), Some(240))
        );
        assert_eq!(streams[1]["codec_name"], "aac");

        let source_duration = duration_of(&flv_path);
        let muxed_duration = duration_of(&mp4_path);
        eprintln!("source duration {source_duration} s, muxed duration {muxed_duration} s");
        assert!((source_duration - muxed_duration).abs() <= 0.2);

        let frames = ffprobe_json(
            &[
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "json",
            ],
            &mp4_path,
        );
        let read: usize = frames["streams"][0]["nb_read_frames"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        eprintln!(
            "decoded {read} video frames of {} muxed",
            video_samples.len()
        );
        assert_eq!(read, video_samples.len());

        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&mp4_path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&decode.stderr);
        assert!(
            decode.status.success() && stderr.is_empty(),
            "ffmpeg decode: {stderr}"
        );
    }
}
