//! H.264 Annex B access units (as carried in MPEG-TS) -> AVCC samples and decoder configuration.

use crate::flv::{self, FlvError};
use crate::frame::AvcConfig;
use bytes::{BufMut, Bytes, BytesMut};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Splits an Annex B byte stream into NAL units (start codes and trailing zero bytes removed,
/// empty units skipped). Bytes before the first start code are ignored.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 2 < data.len() {
        if data.get(i..i + 3) == Some(&[0, 0, 1]) {
            if let Some(s) = start {
                push_unit(&mut units, data.get(s..i).unwrap_or_default());
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_unit(&mut units, data.get(s..).unwrap_or_default());
    }
    units
}

fn push_unit<'a>(units: &mut Vec<&'a [u8]>, unit: &'a [u8]) {
    let end = unit.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if let Some(unit) = unit.get(..end).filter(|u| !u.is_empty()) {
        units.push(unit);
    }
}

/// One access unit converted for CMAF.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessUnit {
    /// Length-prefixed (4 bytes) NAL units, parameter sets and delimiters removed; may be empty.
    pub avcc: Bytes,
    /// An IDR slice is present.
    pub keyframe: bool,
    /// The first SPS and PPS of the unit, when it carries them.
    pub parameter_sets: Option<(Bytes, Bytes)>,
}

/// Converts one Annex B access unit.
pub fn convert(annex_b: &[u8]) -> AccessUnit {
    let units = split_annex_b(annex_b);
    let mut avcc = BytesMut::with_capacity(annex_b.len() + 16);
    let mut keyframe = false;
    let mut sps = None;
    let mut pps = None;
    for unit in units {
        let nal_type = unit.first().map_or(0, |b| b & 0x1f);
        match nal_type {
            NAL_SPS => {
                sps.get_or_insert_with(|| Bytes::copy_from_slice(unit));
            }
            NAL_PPS => {
                pps.get_or_insert_with(|| Bytes::copy_from_slice(unit));
            }
            NAL_AUD => {}
            _ => {
                keyframe |= nal_type == NAL_IDR;
                let Ok(len) = u32::try_from(unit.len()) else {
                    continue;
                };
                avcc.put_u32(len);
                avcc.put_slice(unit);
            }
        }
    }
    AccessUnit {
        avcc: avcc.freeze(),
        keyframe,
        parameter_sets: sps.zip(pps),
    }
}

/// The decoder configuration for an SPS/PPS pair (via the FLV record builder and SPS parser).
pub fn config(sps: &[u8], pps: &[u8]) -> Result<AvcConfig, FlvError> {
    flv::avc_config_from_parameter_sets(&[sps], &[pps])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 0, 1, 0x65, 9, 9, 0,
        ];
        assert_eq!(
            split_annex_b(&data),
            vec![&[0x09, 0xf0][..], &[0x67, 1, 2][..], &[0x65, 9, 9][..]]
        );
        assert!(split_annex_b(&[1, 2, 3]).is_empty());
        assert!(split_annex_b(&[0, 0, 1]).is_empty());
    }

    #[test]
    fn converts_to_avcc_and_keeps_parameter_sets_aside() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9, 9,
        ];
        let unit = convert(&data);
        assert!(unit.keyframe);
        assert_eq!(&unit.avcc[..], &[0, 0, 0, 3, 0x65, 9, 9]);
        assert_eq!(
            unit.parameter_sets,
            Some((
                Bytes::from_static(&[0x67, 1, 2]),
                Bytes::from_static(&[0x68, 3])
            ))
        );
        let unit = convert(&[0, 0, 1, 0x41, 7]);
        assert!(!unit.keyframe);
        assert_eq!(unit.parameter_sets, None);
    }
}
