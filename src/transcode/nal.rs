//! H.264 NAL unit framing: AVCC (4-byte lengths, what ingest and CMAF carry) <-> Annex B (start
//! codes, what the decoder is fed and libx264 emits), and parameter sets.

/// NAL unit type of a sequence parameter set.
pub(crate) const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub(crate) const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub(crate) const NAL_AUD: u8 = 9;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The NAL unit type (low 5 bits of the header byte).
pub(crate) fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |h| h & 0x1f)
}

/// Splits an Annex B byte stream into NAL units (start codes removed).
pub(crate) fn annexb_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&(sc, _)| sc);
        // A 4-byte start code's leading zero (and trailing_zero_8bits) is not part of the unit.
        while end > begin && data[end - 1] == 0 {
            end -= 1;
        }
        if end > begin {
            units.push(&data[begin..end]);
        }
    }
    units
}

/// Splits AVCC data (4-byte big-endian lengths) into NAL units; `None` when malformed.
pub(crate) fn avcc_units(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut units = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        units.push(rest.get(..len)?);
        data = rest.get(len..)?;
    }
    Some(units)
}

/// Appends `units` to `out` in Annex B form.
pub(crate) fn write_annexb<'a>(units: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for unit in units {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(unit);
    }
}

/// Appends `units` to `out` in AVCC form (4-byte lengths).
pub(crate) fn write_avcc<'a>(units: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for unit in units {
        let len = u32::try_from(unit.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(unit);
    }
}

/// The SPS and PPS units of an AVCDecoderConfigurationRecord; `None` when malformed.
pub(crate) fn record_parameter_sets(record: &[u8]) -> Option<Vec<&[u8]>> {
    let mut units = Vec::new();
    let mut at = 5;
    for mask in [0x1f, 0xff] {
        let count = record.get(at)? & mask;
        at += 1;
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
            units.push(record.get(at + 2..at + 2 + len)?);
            at += 2 + len;
        }
    }
    Some(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_round_trip_with_both_start_code_lengths() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4, 5, 0, 0, 3, 0,
        ];
        let units = annexb_units(&stream);
        assert_eq!(
            units,
            [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5, 0, 0, 3]]
        );
        let mut avcc = Vec::new();
        write_avcc(units.iter().copied(), &mut avcc);
        let back = avcc_units(&avcc).expect("well formed");
        assert_eq!(back, units);
        assert!(avcc_units(&avcc[..avcc.len() - 1]).is_none());
        let mut annexb = Vec::new();
        write_annexb(back, &mut annexb);
        assert_eq!(annexb_units(&annexb), units);
    }

    #[test]
    fn parameter_sets_of_a_record() {
        let record = [1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 9, 1, 0, 1, 0x68];
        assert_eq!(
            record_parameter_sets(&record).expect("ok"),
            [&[0x67, 9][..], &[0x68]]
        );
        assert!(record_parameter_sets(&record[..9]).is_none());
    }
}
