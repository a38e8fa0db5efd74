//! AAC in ADTS framing (ISO 13818-7 / 14496-3 §1.A.2): raw access units and an
//! AudioSpecificConfig built from the header.

use crate::frame::AacConfig;
use bytes::Bytes;

/// `sampling_frequency_index` 0..=12.
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// The fixed and variable header fields of one ADTS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// Audio object type (`profile + 1`; 2 = AAC-LC).
    pub object_type: u8,
    /// `sampling_frequency_index`.
    pub frequency_index: u8,
    /// Sampling frequency in Hz.
    pub sample_rate: u32,
    /// `channel_configuration` (1..=7).
    pub channels: u8,
    /// Header size: 7, or 9 with a CRC.
    pub header_len: usize,
    /// Whole frame size, header included.
    pub frame_len: usize,
}

/// Why an ADTS header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtsError {
    /// Fewer than 7 bytes.
    Truncated,
    /// No 0xFFF syncword (or MPEG layer bits not 0).
    NoSync,
    /// Reserved frequency index, channel configuration 0, a frame shorter than its header, or
    /// several raw data blocks in one frame (not carried by CMAF samples).
    Unsupported,
}

/// Parses the header at the start of `data`.
pub fn parse_header(data: &[u8]) -> Result<AdtsHeader, AdtsError> {
    let &[b0, b1, b2, b3, b4, b5, b6] = data.first_chunk::<7>().ok_or(AdtsError::Truncated)?;
    if b0 != 0xff || b1 & 0xf6 != 0xf0 {
        return Err(AdtsError::NoSync);
    }
    let protection_absent = b1 & 1 == 1;
    let object_type = (b2 >> 6) + 1;
    let frequency_index = (b2 >> 2) & 0x0f;
    let channels = ((b2 & 1) << 2) | (b3 >> 6);
    let frame_len = (usize::from(b3 & 0x03) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5);
    let raw_blocks = b6 & 0x03;
    let header_len = if protection_absent { 7 } else { 9 };
    let sample_rate = *SAMPLE_RATES
        .get(usize::from(frequency_index))
        .ok_or(AdtsError::Unsupported)?;
    if channels == 0 || frame_len <= header_len || raw_blocks != 0 {
        return Err(AdtsError::Unsupported);
    }
    Ok(AdtsHeader {
        object_type,
        frequency_index,
        sample_rate,
        channels,
        header_len,
        frame_len,
    })
}

impl AdtsHeader {
    /// The decoder configuration: a 2-byte AudioSpecificConfig (object type, frequency index,
    /// channel configuration; GASpecificConfig all zero).
    pub fn config(&self) -> AacConfig {
        let asc = (u16::from(self.object_type) << 11)
            | (u16::from(self.frequency_index) << 7)
            | (u16::from(self.channels) << 3);
        AacConfig {
            asc: Bytes::copy_from_slice(&asc.to_be_bytes()),
            object_type: self.object_type,
            sample_rate: self.sample_rate,
            channels: self.channels,
        }
    }
}

/// The 7-byte ADTS header ffmpeg's AAC encoder writes for 48 kHz stereo LC, for a frame of
/// `len` bytes (header included).
#[cfg(test)]
pub(super) fn lc_48k_stereo_header(len: usize) -> [u8; 7] {
    [
        0xff,
        0xf1,
        0x4c,
        0x80 | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        ((len & 7) as u8) << 5 | 0x1f,
        0xfc,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_audio_specific_config() {
        // What ffmpeg's AAC encoder writes for 48 kHz stereo LC, a 371-byte frame.
        let len: usize = 371;
        let header = lc_48k_stereo_header(len);
        let parsed = parse_header(&header).expect("valid");
        assert_eq!(parsed.object_type, 2);
        assert_eq!(parsed.sample_rate, 48_000);
        assert_eq!(parsed.channels, 2);
        assert_eq!(parsed.frame_len, 371);
        assert_eq!(parsed.header_len, 7);
        let config = parsed.config();
        // 00010 0011 0010 000 = 0x11 0x90, the ASC ffmpeg puts in FLV/MP4 for this stream.
        assert_eq!(&config.asc[..], &[0x11, 0x90]);
        assert_eq!(config.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_header(&[0xff, 0xf1]), Err(AdtsError::Truncated));
        assert_eq!(
            parse_header(&[0xff, 0xe1, 0, 0, 0, 0, 0]),
            Err(AdtsError::NoSync)
        );
        // Channel configuration 0.
        assert_eq!(
            parse_header(&[0xff, 0xf1, 0x4c, 0x00, 0x2e, 0x7f, 0xfc]),
            Err(AdtsError::Unsupported)
        );
    }
}
