//! PES packet headers (ISO 13818-1 §2.4.3.6): stream id, length, PTS and DTS.

/// A parsed PES header and where its payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    /// Raw 33-bit presentation timestamp (90 kHz).
    pub pts: Option<u64>,
    /// Raw 33-bit decode timestamp (90 kHz); absent means equal to the PTS.
    pub dts: Option<u64>,
    /// Offset of the elementary stream data from the start of the PES packet.
    pub payload_offset: usize,
    /// Total PES packet size (6 + `PES_packet_length`), or `None` when unbounded (video).
    pub total_size: Option<usize>,
}

/// Why a PES header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PesError {
    /// Not enough bytes for the fixed header or the declared optional fields.
    Truncated,
    /// No `00 00 01` start code prefix.
    NoStartCode,
    /// A timestamp field without its marker bits.
    BadTimestamp,
}

/// Minimum bytes needed before [`parse_header`] can decide (fixed header + flags + length).
pub const MIN_HEADER: usize = 9;

/// Reads a 5-byte PTS/DTS field.
fn timestamp(b: &[u8]) -> Result<u64, PesError> {
    let &[b0, b1, b2, b3, b4] = b.first_chunk::<5>().ok_or(PesError::Truncated)?;
    if b0 & 1 != 1 || b2 & 1 != 1 || b4 & 1 != 1 {
        return Err(PesError::BadTimestamp);
    }
    Ok((u64::from(b0 >> 1) & 0x7) << 30
        | u64::from(b1) << 22
        | u64::from(b2 >> 1) << 15
        | u64::from(b3) << 7
        | u64::from(b4 >> 1))
}

/// Parses the header at the start of a PES packet.
pub fn parse_header(pes: &[u8]) -> Result<PesHeader, PesError> {
    let Some(&[p0, p1, p2, stream_id, l0, l1]) = pes.first_chunk::<6>() else {
        return Err(PesError::Truncated);
    };
    if [p0, p1, p2] != [0, 0, 1] {
        return Err(PesError::NoStartCode);
    }
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    let total_size = (length != 0).then_some(6 + length);
    // Streams without the optional header (padding, private_stream_2, ECM, ...): no timestamps.
    if matches!(
        stream_id,
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xff | 0xf2 | 0xf8
    ) {
        return Ok(PesHeader {
            pts: None,
            dts: None,
            payload_offset: 6,
            total_size,
        });
    }
    let Some(&[_, flags, header_len]) = pes.get(6..9).and_then(|b| b.first_chunk::<3>()) else {
        return Err(PesError::Truncated);
    };
    let payload_offset = MIN_HEADER + usize::from(header_len);
    let optional = pes.get(9..payload_offset).ok_or(PesError::Truncated)?;
    let (pts, dts) = match flags >> 6 {
        0b10 => (Some(timestamp(optional)?), None),
        0b11 => (
            Some(timestamp(optional)?),
            Some(timestamp(optional.get(5..).unwrap_or_default())?),
        ),
        _ => (None, None),
    };
    if total_size.is_some_and(|total| total < payload_offset) {
        return Err(PesError::Truncated);
    }
    Ok(PesHeader {
        pts,
        dts,
        payload_offset,
        total_size,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes a PTS/DTS field with the given 4-bit prefix.
    pub(crate) fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
        [
            (prefix << 4) | (((ts >> 30) & 0x7) as u8) << 1 | 1,
            (ts >> 22) as u8,
            (((ts >> 15) & 0x7f) as u8) << 1 | 1,
            (ts >> 7) as u8,
            ((ts & 0x7f) as u8) << 1 | 1,
        ]
    }

    /// A PES packet header for `stream_id` with the given timestamps and payload length.
    pub(crate) fn header(
        stream_id: u8,
        pts: u64,
        dts: Option<u64>,
        payload: usize,
        bounded: bool,
    ) -> Vec<u8> {
        let optional = if dts.is_some() { 10 } else { 5 };
        let length = if bounded { 3 + optional + payload } else { 0 };
        let length = u16::try_from(length).unwrap_or(0);
        let mut h = vec![0, 0, 1, stream_id];
        h.extend_from_slice(&length.to_be_bytes());
        h.extend_from_slice(&[
            0x80,
            if dts.is_some() { 0xc0 } else { 0x80 },
            optional as u8,
        ]);
        match dts {
            Some(dts) => {
                h.extend_from_slice(&encode_timestamp(3, pts));
                h.extend_from_slice(&encode_timestamp(1, dts));
            }
            None => h.extend_from_slice(&encode_timestamp(2, pts)),
        }
        h
    }

    #[test]
    fn reads_pts_and_dts() {
        let pes = header(0xe0, (1 << 33) - 1, Some(123_456), 0, false);
        let parsed = parse_header(&pes).expect("valid");
        assert_eq!(parsed.pts, Some((1 << 33) - 1));
        assert_eq!(parsed.dts, Some(123_456));
        assert_eq!(parsed.payload_offset, 19);
        assert_eq!(parsed.total_size, None);
        let pes = header(0xc0, 90_000, None, 100, true);
        let parsed = parse_header(&pes).expect("valid");
        assert_eq!((parsed.pts, parsed.dts), (Some(90_000), None));
        assert_eq!(parsed.total_size, Some(14 + 100));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            parse_header(&[0, 0, 2, 0xe0, 0, 0, 0x80, 0x80, 5]),
            Err(PesError::NoStartCode)
        );
        assert_eq!(
            parse_header(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0]),
            Err(PesError::Truncated)
        );
        assert_eq!(
            parse_header(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0, 0, 0, 0, 0]),
            Err(PesError::BadTimestamp)
        );
    }
}
