//! Program-specific information: PAT and PMT sections (ISO 13818-1 §2.4.4), CRC-checked.

/// `stream_type` of H.264 video (ITU-T H.264 | ISO 14496-10).
pub const STREAM_TYPE_H264: u8 = 0x1b;
/// `stream_type` of AAC audio in ADTS framing (ISO 13818-7).
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;

/// Why a section was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionError {
    /// Shorter than its header or its declared length.
    Truncated,
    /// The CRC-32 does not match.
    Crc,
    /// A table id other than the one expected on the PID.
    WrongTable,
}

/// One elementary stream listed in a PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsInfo {
    /// `stream_type` (see the `STREAM_TYPE_*` constants).
    pub stream_type: u8,
    /// The PID carrying the stream.
    pub pid: u16,
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, init 0xFFFFFFFF, no final xor).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The body of a complete long-form section (after the 8-byte header, before the CRC), checked.
fn section_body(section: &[u8], table_id: u8) -> Result<&[u8], SectionError> {
    let Some(&[id, l0, l1]) = section.first_chunk::<3>() else {
        return Err(SectionError::Truncated);
    };
    if id != table_id {
        return Err(SectionError::WrongTable);
    }
    let length = usize::from(u16::from_be_bytes([l0 & 0x0f, l1]));
    let whole = section.get(..3 + length).ok_or(SectionError::Truncated)?;
    if length < 9 {
        return Err(SectionError::Truncated);
    }
    if crc32_mpeg2(whole) != 0 {
        return Err(SectionError::Crc);
    }
    whole.get(8..whole.len() - 4).ok_or(SectionError::Truncated)
}

/// Total size (header included) a section declares, once its first 3 bytes are known.
pub fn section_size(start: &[u8]) -> Option<usize> {
    let &[_, l0, l1] = start.first_chunk::<3>()?;
    Some(3 + usize::from(u16::from_be_bytes([l0 & 0x0f, l1])))
}

/// Parses a PAT; returns the PMT PID of the first program (program number 0 is the NIT).
pub fn parse_pat(section: &[u8]) -> Result<Option<u16>, SectionError> {
    let body = section_body(section, 0x00)?;
    Ok(body.chunks_exact(4).find_map(|entry| {
        let program = u16::from_be_bytes([entry[0], entry[1]]);
        (program != 0).then(|| u16::from_be_bytes([entry[2] & 0x1f, entry[3]]))
    }))
}

/// Parses a PMT; returns its elementary streams in order.
pub fn parse_pmt(section: &[u8]) -> Result<Vec<EsInfo>, SectionError> {
    let body = section_body(section, 0x02)?;
    let Some(&[_, _, i0, i1]) = body.first_chunk::<4>() else {
        return Err(SectionError::Truncated);
    };
    let info_len = usize::from(u16::from_be_bytes([i0 & 0x0f, i1]));
    let mut rest = body.get(4 + info_len..).ok_or(SectionError::Truncated)?;
    let mut streams = Vec::new();
    while let Some(&[stream_type, p0, p1, e0, e1]) = rest.first_chunk::<5>() {
        let es_len = usize::from(u16::from_be_bytes([e0 & 0x0f, e1]));
        streams.push(EsInfo {
            stream_type,
            pid: u16::from_be_bytes([p0 & 0x1f, p1]),
        });
        rest = rest.get(5 + es_len..).ok_or(SectionError::Truncated)?;
    }
    Ok(streams)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a complete section (header, body, CRC) for tests and the property generator.
    pub(crate) fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
        let length = u16::try_from(5 + body.len() + 4).expect("small");
        let mut s = vec![table_id, 0xb0 | (length >> 8) as u8, length as u8];
        s.extend_from_slice(&id.to_be_bytes());
        s.extend_from_slice(&[0xc1, 0, 0]);
        s.extend_from_slice(body);
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    #[test]
    fn crc_of_a_known_pat() {
        // The PAT ffmpeg writes (program 1 -> PMT PID 0x1000).
        let pat = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1,
            0x04, 0xb2,
        ];
        assert_eq!(crc32_mpeg2(&pat), 0);
        assert_eq!(parse_pat(&pat), Ok(Some(0x1000)));
        let mut bad = pat;
        bad[10] ^= 1;
        assert_eq!(parse_pat(&bad), Err(SectionError::Crc));
    }

    #[test]
    fn pmt_lists_streams() {
        let body = [
            0xe1, 0x00, 0xf0, 0x00, // PCR PID, no program info
            0x1b, 0xe1, 0x00, 0xf0, 0x00, // H.264 on 0x100
            0x0f, 0xe1, 0x01, 0xf0, 0x02, 0x0a, 0x00, // AAC on 0x101 with a descriptor
        ];
        let pmt = section(0x02, 1, &body);
        assert_eq!(
            parse_pmt(&pmt),
            Ok(vec![
                EsInfo {
                    stream_type: STREAM_TYPE_H264,
                    pid: 0x100
                },
                EsInfo {
                    stream_type: STREAM_TYPE_AAC_ADTS,
                    pid: 0x101
                },
            ])
        );
        assert_eq!(parse_pmt(&pmt[..10]), Err(SectionError::Truncated));
        assert_eq!(parse_pat(&pmt), Err(SectionError::WrongTable));
    }
}
