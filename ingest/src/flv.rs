//! FLV tag bodies (as carried in RTMP audio/video messages) -> typed configs and frames.
//!
//! Owns the FLV VIDEODATA/AUDIODATA layouts, the AVCDecoderConfigurationRecord, the H.264 SPS
//! fields we need (profile, level, size, frame rate) and the AAC AudioSpecificConfig. It never
//! panics on any input: every malformed byte string is an [`FlvError`]. Called by `rtmp`.

mod aac;
mod avc;
mod bits;
#[cfg(test)]
mod vectors;

use crate::frame::{AacConfig, AvcConfig};
use bytes::Bytes;

/// Why an FLV tag body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body ended before a field it must contain.
    #[error("FLV {what} truncated")]
    Truncated {
        /// The structure being read.
        what: &'static str,
    },
    /// A codec other than H.264 (video) or AAC (audio).
    #[error("unsupported FLV {track} codec id {codec_id}")]
    UnsupportedCodec {
        /// "video" or "audio".
        track: &'static str,
        /// The FLV codec id.
        codec_id: u8,
    },
    /// A structurally invalid field.
    #[error("invalid {what}")]
    Invalid {
        /// Which field or structure is invalid.
        what: &'static str,
    },
}

/// A parsed FLV VIDEODATA body.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoTag {
    /// AVC sequence header: a new decoder configuration.
    Config(AvcConfig),
    /// One access unit as AVCC NAL units.
    Frame {
        /// FLV frame type 1 (key frame).
        keyframe: bool,
        /// Composition time offset in milliseconds (signed 24-bit).
        cts_ms: i32,
        /// Length-prefixed NAL units.
        data: Bytes,
    },
    /// AVC end of sequence, or a video info/command frame: nothing to package.
    Ignored,
}

/// A parsed FLV AUDIODATA body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC sequence header: a new decoder configuration.
    Config(AacConfig),
    /// One raw AAC access unit.
    Frame(Bytes),
}

/// FLV VIDEODATA codec id for AVC.
const CODEC_AVC: u8 = 7;
/// FLV VIDEODATA frame type for a video info/command frame.
const FRAME_TYPE_INFO: u8 = 5;
/// FLV AUDIODATA sound format for AAC.
const SOUND_FORMAT_AAC: u8 = 10;

/// Parses an FLV VIDEODATA body (H.264 only).
pub fn parse_video(body: Bytes) -> Result<VideoTag, FlvError> {
    let &first = body.first().ok_or(FlvError::Truncated {
        what: "video tag header",
    })?;
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    // Enhanced RTMP sets the top bit (IsExHeader) and names the codec by FourCC; its low
    // nibble is a packet type, reported as-is since no codec id exists there.
    if first & 0x80 != 0 || codec_id != CODEC_AVC {
        return Err(FlvError::UnsupportedCodec {
            track: "video",
            codec_id,
        });
    }
    match frame_type {
        FRAME_TYPE_INFO => return Ok(VideoTag::Ignored),
        1..=4 => {}
        _ => {
            return Err(FlvError::Invalid {
                what: "FLV video frame type",
            })
        }
    }
    let (packet_type, cts_ms) = match body.get(1..5) {
        Some(&[packet_type, c0, c1, c2]) => {
            // Signed 24-bit: shift into the top of an i32 and back to sign-extend.
            (packet_type, i32::from_be_bytes([c0, c1, c2, 0]) >> 8)
        }
        _ => {
            return Err(FlvError::Truncated {
                what: "AVC packet header",
            })
        }
    };
    // `get(1..5)` succeeded, so the body has at least 5 bytes.
    let rest = body.slice(5..);
    match packet_type {
        0 => avc::parse_record(rest).map(VideoTag::Config),
        1 => {
            validate_avcc(&rest)?;
            Ok(VideoTag::Frame {
                keyframe: frame_type == 1,
                cts_ms,
                data: rest,
            })
        }
        2 => Ok(VideoTag::Ignored),
        _ => Err(FlvError::Invalid {
            what: "AVC packet type",
        }),
    }
}

/// Builds an AVCDecoderConfigurationRecord (4-byte NAL lengths) from SPS and PPS NAL units
/// (header byte included, no start code) and parses it as a received sequence header would be.
/// Used for encoders that emit parameter sets in-band.
pub fn avc_config_from_parameter_sets(sps: &[&[u8]], pps: &[&[u8]]) -> Result<AvcConfig, FlvError> {
    avc::build_record(sps, pps).and_then(avc::parse_record)
}

/// Checks that `data` is one or more 4-byte-length-prefixed, non-empty NAL units, exactly.
fn validate_avcc(mut data: &[u8]) -> Result<(), FlvError> {
    const INVALID: FlvError = FlvError::Invalid {
        what: "AVC NAL unit lengths",
    };
    if data.is_empty() {
        return Err(INVALID);
    }
    while !data.is_empty() {
        let Some((&[a, b, c, d], rest)) = data.split_first_chunk::<4>() else {
            return Err(INVALID);
        };
        let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).map_err(|_| INVALID)?;
        if len == 0 || len > rest.len() {
            return Err(INVALID);
        }
        data = rest.get(len..).ok_or(INVALID)?;
    }
    Ok(())
}

/// Parses an FLV AUDIODATA body (AAC only).
pub fn parse_audio(body: Bytes) -> Result<AudioTag, FlvError> {
    let &first = body.first().ok_or(FlvError::Truncated {
        what: "audio tag header",
    })?;
    // The rate/size/type bits are fixed for AAC; the AudioSpecificConfig is authoritative.
    let sound_format = first >> 4;
    if sound_format != SOUND_FORMAT_AAC {
        return Err(FlvError::UnsupportedCodec {
            track: "audio",
            codec_id: sound_format,
        });
    }
    let &packet_type = body.get(1).ok_or(FlvError::Truncated {
        what: "AAC packet header",
    })?;
    // `get(1)` succeeded, so the body has at least 2 bytes.
    let rest = body.slice(2..);
    match packet_type {
        0 => aac::parse_asc(rest).map(AudioTag::Config),
        1 if rest.is_empty() => Err(FlvError::Invalid {
            what: "empty AAC frame",
        }),
        1 => Ok(AudioTag::Frame(rest)),
        _ => Err(FlvError::Invalid {
            what: "AAC packet type",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::vectors::{hex, small, REAL_AVC};
    use super::*;
    use proptest::prelude::*;

    fn video(hex_body: &str) -> Result<VideoTag, FlvError> {
        parse_video(Bytes::from(hex(hex_body)))
    }

    fn audio(hex_body: &str) -> Result<AudioTag, FlvError> {
        parse_audio(Bytes::from(hex(hex_body)))
    }

    #[test]
    fn real_sequence_headers() {
        for v in &REAL_AVC {
            let Ok(VideoTag::Config(config)) = video(v.flv_tag) else {
                panic!("{}: {:?}", v.name, video(v.flv_tag));
            };
            assert_eq!(config.codec_string(), v.codec, "{}", v.name);
            assert_eq!(
                (config.width, config.height),
                (v.width, v.height),
                "{}",
                v.name
            );
            assert_eq!(
                config.record.as_ref(),
                hex(v.flv_tag).get(5..).unwrap_or_default()
            );
        }
        let Ok(VideoTag::Config(config)) = video(small::SEQ_HEADER) else {
            panic!("{:?}", video(small::SEQ_HEADER));
        };
        assert_eq!(
            (config.width, config.height, config.codec_string().as_str()),
            (64, 64, "avc1.64000a")
        );
        assert_eq!(config.frame_rate, Some(30.0));
    }

    #[test]
    fn real_720p_config_fields() {
        let Ok(VideoTag::Config(config)) = video(REAL_AVC[0].flv_tag) else {
            panic!("{:?}", video(REAL_AVC[0].flv_tag));
        };
        assert_eq!(config.codec_string(), "avc1.64001f");
        assert_eq!(
            (
                config.profile_idc,
                config.constraint_flags,
                config.level_idc
            ),
            (100, 0, 31)
        );
        assert_eq!(
            (config.width, config.height, config.frame_rate),
            (1280, 720, Some(30.0))
        );
    }

    #[test]
    fn real_frames_are_zero_copy_slices() {
        let body = Bytes::from(hex(small::P_FRAME));
        let got = parse_video(body.clone());
        let Ok(VideoTag::Frame {
            keyframe,
            cts_ms,
            data,
        }) = got
        else {
            panic!("{got:?}")
        };
        assert!(!keyframe);
        assert_eq!(cts_ms, 133);
        assert_eq!(data, body.slice(5..));
        assert_eq!(
            data.as_ptr(),
            body.slice(5..).as_ptr(),
            "frame data must not be copied"
        );

        let got = video(small::B_FRAME);
        assert!(
            matches!(
                got,
                Ok(VideoTag::Frame {
                    keyframe: false,
                    cts_ms: 33,
                    ..
                })
            ),
            "{got:?}"
        );
        assert_eq!(video(small::END_OF_SEQUENCE), Ok(VideoTag::Ignored));
    }

    #[test]
    fn keyframe_and_negative_cts() {
        // A key frame whose CTS is -1 and -2^23, carrying the two NAL units of the P frame above.
        let got = video("17 01 ffffff 0000000a 419a236c433ffe9e2df0 00000001 09");
        assert!(
            matches!(
                got,
                Ok(VideoTag::Frame {
                    keyframe: true,
                    cts_ms: -1,
                    ..
                })
            ),
            "{got:?}"
        );
        let got = video("17 01 800000 00000001 09");
        assert!(
            matches!(
                got,
                Ok(VideoTag::Frame {
                    cts_ms: -8_388_608,
                    ..
                })
            ),
            "{got:?}"
        );
        let got = video("27 01 7fffff 00000001 09");
        assert!(
            matches!(
                got,
                Ok(VideoTag::Frame {
                    cts_ms: 8_388_607,
                    ..
                })
            ),
            "{got:?}"
        );
        // Frame type 4 (generated key frame) is a plain frame, not a key frame.
        let got = video("47 01 000000 00000001 09");
        assert!(
            matches!(
                got,
                Ok(VideoTag::Frame {
                    keyframe: false,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn video_rejections() {
        let invalid = |what| Err(FlvError::Invalid { what });
        assert_eq!(
            video(""),
            Err(FlvError::Truncated {
                what: "video tag header"
            })
        );
        assert_eq!(
            video("17"),
            Err(FlvError::Truncated {
                what: "AVC packet header"
            })
        );
        assert_eq!(
            video("170100"),
            Err(FlvError::Truncated {
                what: "AVC packet header"
            })
        );
        assert_eq!(
            video("12"),
            Err(FlvError::UnsupportedCodec {
                track: "video",
                codec_id: 2
            })
        );
        assert_eq!(
            video("1c0000"),
            Err(FlvError::UnsupportedCodec {
                track: "video",
                codec_id: 12
            })
        );
        // Enhanced RTMP: IsExHeader | key frame | PacketTypeCodedFrames, FourCC "hvc1".
        assert_eq!(
            video("9168766331"),
            Err(FlvError::UnsupportedCodec {
                track: "video",
                codec_id: 1
            })
        );
        assert_eq!(video("57"), Ok(VideoTag::Ignored));
        assert_eq!(
            video("07 01 000000 00000001 09"),
            invalid("FLV video frame type")
        );
        assert_eq!(video("17 03 000000"), invalid("AVC packet type"));
        let nal_lengths = invalid("AVC NAL unit lengths");
        assert_eq!(video("17 01 000000"), nal_lengths);
        assert_eq!(video("17 01 000000 00000000"), nal_lengths);
        assert_eq!(video("17 01 000000 00000002 09"), nal_lengths);
        assert_eq!(video("17 01 000000 00000001 09 0000"), nal_lengths);
        assert_eq!(video("17 01 000000 ffffffff 09"), nal_lengths);
        assert_eq!(
            video("17 00 000000"),
            Err(FlvError::Truncated {
                what: "AVCDecoderConfigurationRecord"
            })
        );
    }

    #[test]
    fn real_audio_tags() {
        let got = audio(small::AAC_SEQ_HEADER);
        let Ok(AudioTag::Config(config)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (config.object_type, config.sample_rate, config.channels),
            (2, 44_100, 1)
        );
        assert_eq!(config.asc.as_ref(), hex("120856e500"));
        assert_eq!(config.codec_string(), "mp4a.40.2");

        let got = audio("af00 1190");
        assert!(
            matches!(
                &got,
                Ok(AudioTag::Config(AacConfig {
                    object_type: 2,
                    sample_rate: 48_000,
                    channels: 2,
                    ..
                }))
            ),
            "{got:?}"
        );
        assert_eq!(
            audio(small::AAC_FRAME),
            Ok(AudioTag::Frame(Bytes::from(hex("01182007"))))
        );
    }

    #[test]
    fn audio_rejections() {
        assert_eq!(
            audio(""),
            Err(FlvError::Truncated {
                what: "audio tag header"
            })
        );
        assert_eq!(
            audio("af"),
            Err(FlvError::Truncated {
                what: "AAC packet header"
            })
        );
        assert_eq!(
            audio("2f01ff"),
            Err(FlvError::UnsupportedCodec {
                track: "audio",
                codec_id: 2
            })
        );
        assert_eq!(
            audio("af01"),
            Err(FlvError::Invalid {
                what: "empty AAC frame"
            })
        );
        assert_eq!(
            audio("af02ff"),
            Err(FlvError::Invalid {
                what: "AAC packet type"
            })
        );
        assert_eq!(
            audio("af00"),
            Err(FlvError::Truncated {
                what: "AudioSpecificConfig"
            })
        );
    }

    /// Bodies that reach the deep parsers: valid tag headers followed by arbitrary bytes.
    fn prefixed_body() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop_oneof![
            Just(vec![0x17, 0x00, 0, 0, 0]),
            Just(vec![0x17, 0x01, 0, 0, 0]),
            Just(vec![0x27, 0x01, 0xff, 0xff, 0xf0]),
            // A record header that passes the fixed checks, so the SPS parser sees the noise.
            Just(vec![0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1]),
            Just(vec![0xaf, 0x00]),
            Just(vec![0xaf, 0x01]),
        ];
        (prefix, proptest::collection::vec(any::<u8>(), 0..512)).prop_map(|(mut p, tail)| {
            p.extend(tail);
            p
        })
    }

    /// Builds an FLV sequence header from `sps_count` copies of a real SPS and `pps_count` PPSs.
    fn build_record(
        sps: &[u8],
        pps: &[u8],
        sps_count: u8,
        pps_count: u8,
        trailer: &[u8],
    ) -> Vec<u8> {
        let mut tag = vec![0x17, 0x00, 0, 0, 0, 1];
        tag.extend(sps.get(1..4).unwrap_or_default());
        tag.push(0xff);
        tag.push(0xe0 | sps_count);
        let len16 = |n: &[u8]| u16::try_from(n.len()).unwrap_or(u16::MAX).to_be_bytes();
        for _ in 0..sps_count {
            tag.extend(len16(sps));
            tag.extend(sps);
        }
        tag.push(pps_count);
        for _ in 0..pps_count {
            tag.extend(len16(pps));
            tag.extend(pps);
        }
        tag.extend(trailer);
        tag
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_video(Bytes::from(body.clone()));
            let _ = parse_audio(Bytes::from(body));
        }

        #[test]
        fn prefixed_bytes_never_panic(body in prefixed_body()) {
            let _ = parse_video(Bytes::from(body.clone()));
            let _ = parse_audio(Bytes::from(body));
        }

        #[test]
        fn corrupted_real_records_never_panic(
            which in 0..REAL_AVC.len(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut body = hex(REAL_AVC.get(which).map_or("", |v| v.flv_tag));
            for (at, xor) in flips {
                let i = at.index(body.len());
                if let Some(b) = body.get_mut(i) {
                    *b ^= xor;
                }
            }
            body.truncate(cut.index(body.len() + 1));
            let _ = parse_video(Bytes::from(body));
        }

        #[test]
        fn record_round_trip(
            which in 0..REAL_AVC.len(),
            sps_count in 1u8..4,
            pps_count in 1u8..4,
            trailer in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let v = REAL_AVC.get(which).ok_or_else(|| TestCaseError::fail("index"))?;
            let tag = hex(v.flv_tag);
            // The real record's PPS: after the tag and record headers, SPS length, SPS and PPS count and length.
            let sps = hex(v.sps);
            let pps_at = 5 + 6 + 2 + sps.len() + 1 + 2;
            let pps_len = usize::from(tag.get(pps_at - 1).copied().unwrap_or(0));
            let pps = tag.get(pps_at..pps_at + pps_len).unwrap_or_default().to_vec();
            let body = build_record(&sps, &pps, sps_count, pps_count, &trailer);
            let parsed = parse_video(Bytes::from(body.clone()));
            let Ok(VideoTag::Config(config)) = parsed else {
                return Err(TestCaseError::fail(format!("{}: {parsed:?}", v.name)));
            };
            prop_assert_eq!(config.record.as_ref(), body.get(5..).unwrap_or_default());
            prop_assert_eq!(
                (config.profile_idc, config.constraint_flags, config.level_idc),
                (v.profile_idc, v.constraint_flags, v.level_idc)
            );
            prop_assert_eq!((config.width, config.height), (v.width, v.height));
            prop_assert!((config.frame_rate.unwrap_or(0.0) - v.frame_rate).abs() < 1e-9);
        }

        #[test]
        fn frame_round_trip(
            keyframe in any::<bool>(),
            cts in -(1i32 << 23)..(1i32 << 23),
            nals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 1..6),
        ) {
            let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 0x01];
            body.extend(cts.to_be_bytes().get(1..).unwrap_or_default());
            let mut avcc = Vec::new();
            for nal in &nals {
                avcc.extend(u32::try_from(nal.len()).unwrap_or(0).to_be_bytes());
                avcc.extend(nal);
            }
            body.extend(&avcc);
            let expected = VideoTag::Frame { keyframe, cts_ms: cts, data: Bytes::from(avcc) };
            prop_assert_eq!(parse_video(Bytes::from(body)), Ok(expected));
        }

        #[test]
        fn asc_round_trip(
            object_type in (1u64..=45).prop_filter("31 is the escape code", |t| *t != 31),
            index in prop_oneof![0u64..13, Just(15)],
            explicit in 1u64..(1 << 24),
            channels in 1u64..16,
            trailer in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut w = vectors::BitWriter::default();
            if object_type > 31 {
                w.u(5, 31).u(6, object_type - 32);
            } else {
                w.u(5, object_type);
            }
            w.u(4, index);
            if index == 15 {
                w.u(24, explicit);
            }
            w.u(4, channels);
            let mut body = vec![0xaf, 0x00];
            body.extend(w.bytes());
            body.extend(&trailer);
            let got = parse_audio(Bytes::from(body.clone()));
            let Ok(AudioTag::Config(config)) = got else {
                return Err(TestCaseError::fail(format!("{got:?}")));
            };
            let rates = [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];
            let rate = if index == 15 { explicit } else { rates.get(index as usize).copied().unwrap_or(0) };
            prop_assert_eq!(u64::from(config.object_type), object_type);
            prop_assert_eq!(u64::from(config.sample_rate), rate);
            prop_assert_eq!(u64::from(config.channels), channels);
            prop_assert_eq!(config.asc.as_ref(), body.get(2..).unwrap_or_default());
        }
    }
}
