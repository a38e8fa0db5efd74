//! AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1) and the H.264 SPS fields we package.

use super::bits::BitReader;
use super::FlvError;
use crate::frame::AvcConfig;
use bytes::Bytes;

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
const NAL_PPS: u8 = 8;

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 §7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// The SPS fields the packager needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sps {
    pub(super) profile_idc: u8,
    pub(super) constraint_flags: u8,
    pub(super) level_idc: u8,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) frame_rate: Option<f64>,
}

/// Parses an AVCDecoderConfigurationRecord, keeping it verbatim for `avcC`.
pub(super) fn parse_record(record: Bytes) -> Result<AvcConfig, FlvError> {
    let mut r = ByteReader {
        data: &record,
        what: "AVCDecoderConfigurationRecord",
    };
    if r.u8()? != 1 {
        return Err(FlvError::Invalid {
            what: "AVCDecoderConfigurationRecord version",
        });
    }
    // Profile, compatibility and level repeat the SPS; the SPS is authoritative.
    r.take(3)?;
    // We copy NAL units verbatim into MP4 samples whose avcC says the same length size,
    // and the rest of the pipeline assumes 4-byte lengths.
    if r.u8()? & 0x03 != 3 {
        return Err(FlvError::Invalid {
            what: "AVC NAL length size (only 4 bytes supported)",
        });
    }
    let num_sps = r.u8()? & 0x1f;
    if num_sps == 0 {
        return Err(FlvError::Invalid {
            what: "AVCDecoderConfigurationRecord without SPS",
        });
    }
    let mut first_sps = None;
    for _ in 0..num_sps {
        let nal = r.nal(NAL_SPS, "SPS NAL unit")?;
        first_sps.get_or_insert(nal);
    }
    let num_pps = r.u8()?;
    if num_pps == 0 {
        return Err(FlvError::Invalid {
            what: "AVCDecoderConfigurationRecord without PPS",
        });
    }
    for _ in 0..num_pps {
        r.nal(NAL_PPS, "PPS NAL unit")?;
    }
    // Trailing bytes (the high-profile chroma/bit-depth extension) stay in the verbatim copy.
    let sps = parse_sps(first_sps.unwrap_or_default())?;
    Ok(AvcConfig {
        record,
        profile_idc: sps.profile_idc,
        constraint_flags: sps.constraint_flags,
        level_idc: sps.level_idc,
        width: sps.width,
        height: sps.height,
        frame_rate: sps.frame_rate,
    })
}

/// Serializes SPS and PPS NAL units into an AVCDecoderConfigurationRecord with 4-byte NAL
/// lengths (profile, compatibility and level copied from the first SPS).
pub(super) fn build_record(sps: &[&[u8]], pps: &[&[u8]]) -> Result<Bytes, FlvError> {
    let invalid = |what| FlvError::Invalid { what };
    let first = sps
        .first()
        .ok_or(invalid("AVC parameter sets without SPS"))?;
    let (Some(&[profile, compatibility, level]), false) = (first.get(1..4), pps.is_empty()) else {
        return Err(invalid(
            "AVC parameter sets without PPS or with a short SPS",
        ));
    };
    let (Ok(num_sps), Ok(num_pps)) = (u8::try_from(sps.len()), u8::try_from(pps.len())) else {
        return Err(invalid("AVC parameter set count"));
    };
    if num_sps > 31 {
        return Err(invalid("AVC parameter set count"));
    }
    let mut record = vec![1, profile, compatibility, level, 0xff, 0xe0 | num_sps];
    for (i, list) in [sps, pps].into_iter().enumerate() {
        if i == 1 {
            record.push(num_pps);
        }
        for nal in list {
            let len = u16::try_from(nal.len()).map_err(|_| invalid("AVC parameter set size"))?;
            record.extend_from_slice(&len.to_be_bytes());
            record.extend_from_slice(nal);
        }
    }
    Ok(Bytes::from(record))
}

/// Byte cursor over the record.
struct ByteReader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FlvError> {
        if n > self.data.len() {
            return Err(FlvError::Truncated { what: self.what });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FlvError> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(FlvError::Truncated { what: self.what }),
        }
    }

    fn u16(&mut self) -> Result<u16, FlvError> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(FlvError::Truncated { what: self.what }),
        }
    }

    /// A 16-bit-length-prefixed parameter set NAL unit of type `nal_type`.
    fn nal(&mut self, nal_type: u8, what: &'static str) -> Result<&'a [u8], FlvError> {
        let len = self.u16()?;
        let nal = self.take(usize::from(len))?;
        match nal.first() {
            Some(header) if header & 0x1f == nal_type => Ok(nal),
            _ => Err(FlvError::Invalid { what }),
        }
    }
}

/// Parses a sequence parameter set NAL unit (header byte included), H.264 §7.3.2.1.1.
pub(super) fn parse_sps(nal: &[u8]) -> Result<Sps, FlvError> {
    match nal.split_first() {
        Some((header, payload)) if header & 0x1f == NAL_SPS => parse_sps_rbsp(&unescape(payload)),
        _ => Err(FlvError::Invalid {
            what: "SPS NAL unit",
        }),
    }
}

/// Removes emulation prevention bytes: every `00 00 03` becomes `00 00`.
fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0usize;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn invalid(what: &'static str) -> FlvError {
    FlvError::Invalid { what }
}

/// Rejects `v` above `max`, the range the spec allows for the field.
fn bounded(v: u32, max: u32, what: &'static str) -> Result<u32, FlvError> {
    if v > max {
        Err(invalid(what))
    } else {
        Ok(v)
    }
}

fn parse_sps_rbsp(rbsp: &[u8]) -> Result<Sps, FlvError> {
    let mut r = BitReader::new(rbsp, "SPS");
    let profile_idc = r.u8()?;
    let constraint_flags = r.u8()?;
    let level_idc = r.u8()?;
    bounded(r.ue()?, 31, "SPS seq_parameter_set_id")?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = bounded(r.ue()?, 3, "SPS chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        bounded(r.ue()?, 6, "SPS bit_depth_luma_minus8")?;
        bounded(r.ue()?, 6, "SPS bit_depth_chroma_minus8")?;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    bounded(r.ue()?, 12, "SPS log2_max_frame_num_minus4")?;
    match r.ue()? {
        0 => {
            bounded(r.ue()?, 12, "SPS log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = bounded(r.ue()?, 255, "SPS num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return Err(invalid("SPS pic_order_cnt_type")),
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r
        .ue()?
        .checked_add(1)
        .ok_or(invalid("SPS pic_width_in_mbs"))?;
    let height_map_units = r
        .ue()?
        .checked_add(1)
        .ok_or(invalid("SPS pic_height_in_map_units"))?;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let crop = if r.bit()? {
        [r.ue()?, r.ue()?, r.ue()?, r.ue()?]
    } else {
        [0; 4]
    };

    // Table 6-1 and equations 7-19..7-22: crop offsets count chroma samples, and
    // field-coded streams count pairs of lines.
    let field_factor: u32 = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        // 4:4:4, monochrome and separate colour planes crop in luma samples.
        _ => (1, field_factor),
    };
    let [left, right, top, bottom] = crop;
    let coded_width = width_mbs.checked_mul(16);
    let coded_height = height_map_units
        .checked_mul(16)
        .and_then(|h| h.checked_mul(field_factor));
    let width = cropped(coded_width, crop_unit_x, left, right).ok_or(invalid("SPS width"))?;
    let height = cropped(coded_height, crop_unit_y, top, bottom).ok_or(invalid("SPS height"))?;

    // The picture size is all that is mandatory; a damaged VUI only costs the frame rate.
    let frame_rate = if r.bit().unwrap_or(false) {
        match parse_vui_frame_rate(&mut r) {
            Ok(rate) => rate,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring unparsable SPS VUI");
                None
            }
        }
    } else {
        None
    };

    Ok(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        width,
        height,
        frame_rate,
    })
}

/// `coded - unit * (a + b)`, or `None` when it overflows or leaves nothing.
fn cropped(coded: Option<u32>, unit: u32, a: u32, b: u32) -> Option<u32> {
    let crop = a.checked_add(b)?.checked_mul(unit)?;
    coded?.checked_sub(crop).filter(|&v| v > 0)
}

/// Skips one `scaling_list()` (H.264 §7.3.2.1.1.1); the values themselves do not matter here.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), FlvError> {
    let mut last_scale: i32 = 8;
    let mut next_scale: i32 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(invalid("SPS delta_scale"));
            }
            next_scale = (last_scale + delta).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Reads VUI parameters (Annex E.1.1) up to the timing info and returns the frame rate.
fn parse_vui_frame_rate(r: &mut BitReader<'_>) -> Result<Option<f64>, FlvError> {
    const EXTENDED_SAR: u8 = 255;
    if r.bit()? && r.u8()? == EXTENDED_SAR {
        r.skip(32)?; // sar_width, sar_height
    }
    if r.bit()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.bit()? {
        r.skip(4)?; // video_format, video_full_range_flag
        if r.bit()? {
            r.skip(24)?; // colour_primaries, transfer_characteristics, matrix_coefficients
        }
    }
    if r.bit()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if !r.bit()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    // A field is one tick, so a frame is two.
    Ok((num_units_in_tick > 0 && time_scale > 0)
        .then(|| f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick))))
}

#[cfg(test)]
mod tests {
    use super::super::vectors::*;
    use super::*;

    fn sps(hex_sps: &str) -> Sps {
        let parsed = parse_sps(&hex(hex_sps));
        assert!(parsed.is_ok(), "{parsed:?}");
        parsed.unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn real_sps_vectors() {
        for v in REAL_AVC {
            let got = sps(v.sps);
            assert_eq!(
                (
                    got.profile_idc,
                    got.constraint_flags,
                    got.level_idc,
                    got.width,
                    got.height
                ),
                (
                    v.profile_idc,
                    v.constraint_flags,
                    v.level_idc,
                    v.width,
                    v.height
                ),
                "{}",
                v.name
            );
            let rate = got.frame_rate.unwrap_or(0.0);
            assert!(
                (rate - v.frame_rate).abs() < 1e-9,
                "{}: frame rate {rate}",
                v.name
            );
        }
    }

    #[test]
    fn built_records_parse_back() {
        let tag = hex(REAL_AVC[0].flv_tag);
        let record = Bytes::from(tag.get(5..).unwrap_or_default().to_vec());
        let parsed = parse_record(record.clone()).expect("real record");
        // Take the record apart and rebuild it from its parameter sets.
        let sps_len = usize::from(u16::from_be_bytes([record[6], record[7]]));
        let sps = &record[8..8 + sps_len];
        let at = 8 + sps_len + 1;
        let pps_len = usize::from(u16::from_be_bytes([record[at], record[at + 1]]));
        let pps = &record[at + 2..at + 2 + pps_len];
        let rebuilt = build_record(&[sps], &[pps]).expect("build");
        assert_eq!(rebuilt[..], record[..at + 2 + pps_len]);
        let again = parse_record(rebuilt).expect("parses");
        assert_eq!((again.width, again.height), (parsed.width, parsed.height));
        assert!(build_record(&[], &[pps]).is_err());
        assert!(build_record(&[sps], &[]).is_err());
    }

    #[test]
    fn real_records() {
        for v in REAL_AVC {
            let tag = hex(v.flv_tag);
            let record = Bytes::from(tag.get(5..).unwrap_or_default().to_vec());
            let config = parse_record(record.clone());
            assert!(config.is_ok(), "{}: {config:?}", v.name);
            let Ok(config) = config else { continue };
            assert_eq!(config.record, record, "{}", v.name);
            assert_eq!(config.codec_string(), v.codec, "{}", v.name);
            assert_eq!(
                (config.width, config.height),
                (v.width, v.height),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn synthetic_sps_with_scaling_lists_and_poc_type_1() {
        let got = sps(SYNTHETIC_SPS_444_SCALING_POC1);
        assert_eq!(
            (got.profile_idc, got.constraint_flags, got.level_idc),
            (244, 0, 40)
        );
        assert_eq!((got.width, got.height), (1920, 1080));
        let rate = got.frame_rate.unwrap_or(0.0);
        assert!((rate - 48_000.0 / 2002.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn unescape_drops_emulation_prevention() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 0, 3]),
            [0, 0, 1, 0, 0, 0, 0]
        );
        assert_eq!(unescape(&[0, 3, 0, 0, 0, 3]), [0, 3, 0, 0, 0]);
    }

    #[test]
    fn truncated_vui_keeps_size_and_drops_frame_rate() {
        // 720p x264 SPS cut in the middle of num_units_in_tick.
        let full = hex(REAL_AVC[0].sps);
        let got = parse_sps(full.get(..12).unwrap_or_default());
        assert!(
            matches!(
                got,
                Ok(Sps {
                    width: 1280,
                    height: 720,
                    frame_rate: None,
                    ..
                })
            ),
            "{got:?}"
        );
        // Cut before the picture size: that is an error.
        assert_eq!(
            parse_sps(full.get(..6).unwrap_or_default()),
            Err(FlvError::Truncated { what: "SPS" })
        );
    }

    #[test]
    fn record_rejections() {
        let good = hex(REAL_AVC[0].flv_tag)
            .get(5..)
            .unwrap_or_default()
            .to_vec();
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            if let Some(x) = v.get_mut(i) {
                *x = b;
            }
            parse_record(Bytes::from(v))
        };
        assert!(
            matches!(with(0, 2), Err(FlvError::Invalid { .. })),
            "version"
        );
        assert!(
            matches!(with(4, 0xfd), Err(FlvError::Invalid { .. })),
            "2-byte lengths"
        );
        assert!(
            matches!(with(5, 0xe0), Err(FlvError::Invalid { .. })),
            "no SPS"
        );
        assert!(
            matches!(with(8, 0x68), Err(FlvError::Invalid { .. })),
            "SPS NAL type"
        );
        // numOfPPS follows the 26-byte SPS at offset 6 + 2.
        assert!(
            matches!(with(34, 0), Err(FlvError::Invalid { .. })),
            "no PPS"
        );
        assert!(
            matches!(with(37, 0x67), Err(FlvError::Invalid { .. })),
            "PPS NAL type"
        );
        for len in 0..good.len() - 4 {
            let cut = parse_record(Bytes::from(good.get(..len).unwrap_or_default().to_vec()));
            assert!(cut.is_err(), "accepted a record cut to {len} bytes");
        }
    }

    /// A baseline SPS with the given picture size fields and frame cropping offsets.
    fn baseline_sps(width_mbs_minus1: u64, height_minus1: u64, crop: Option<[u64; 4]>) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.u(8, 0x67).u(8, 66).u(8, 0).u(8, 30);
        w.ue(0).ue(0).ue(2).ue(1).u(1, 0); // sps id, frame num, poc type 2, refs, gaps
        w.ue(width_mbs_minus1).ue(height_minus1).u(1, 1).u(1, 1);
        match crop {
            Some(offsets) => {
                w.u(1, 1);
                for o in offsets {
                    w.ue(o);
                }
            }
            None => {
                w.u(1, 0);
            }
        }
        w.u(1, 0).u(1, 1); // no VUI, stop bit
        w.bytes()
    }

    #[test]
    fn synthetic_baseline_sizes() {
        let got = parse_sps(&baseline_sps(19, 14, None));
        assert!(
            matches!(
                got,
                Ok(Sps {
                    width: 320,
                    height: 240,
                    frame_rate: None,
                    ..
                })
            ),
            "{got:?}"
        );
        let got = parse_sps(&baseline_sps(19, 14, Some([1, 2, 3, 4])));
        assert!(
            matches!(
                got,
                Ok(Sps {
                    width: 314,
                    height: 226,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn hostile_sps_sizes_do_not_overflow() {
        let max = u64::from(u32::MAX - 1);
        // Width in macroblocks 2^32 - 1: the pixel width overflows.
        assert_eq!(
            parse_sps(&baseline_sps(max, 0, None)),
            Err(invalid("SPS width"))
        );
        assert_eq!(
            parse_sps(&baseline_sps(0, max, None)),
            Err(invalid("SPS height"))
        );
        // Cropping that overflows, or that removes the whole picture.
        assert_eq!(
            parse_sps(&baseline_sps(0, 0, Some([max, max, 0, 0]))),
            Err(invalid("SPS width"))
        );
        assert_eq!(
            parse_sps(&baseline_sps(0, 0, Some([4, 4, 0, 0]))),
            Err(invalid("SPS width"))
        );
        assert_eq!(
            parse_sps(&baseline_sps(0, 0, Some([0, 0, 8, 0]))),
            Err(invalid("SPS height"))
        );
        assert!(parse_sps(&baseline_sps(0, 0, Some([3, 4, 3, 4]))).is_ok());
    }
}
