//! AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): object type, sampling rate, channels.

use super::bits::BitReader;
use super::FlvError;
use crate::frame::AacConfig;
use bytes::Bytes;

/// `samplingFrequencyIndex` 0..=12; 13 and 14 are reserved, 15 means "explicit".
const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Highest audio object type ISO 14496-3 defines.
const MAX_OBJECT_TYPE: u32 = 45;

/// Parses an AudioSpecificConfig, keeping it verbatim for `esds`.
pub(super) fn parse_asc(asc: Bytes) -> Result<AacConfig, FlvError> {
    let mut r = BitReader::new(&asc, "AudioSpecificConfig");
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    if object_type == 0 || object_type > MAX_OBJECT_TYPE {
        return Err(FlvError::Invalid {
            what: "AAC audio object type",
        });
    }
    let index = r.bits(4)?;
    let sample_rate = if index == 15 {
        r.bits(24)?
    } else {
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| SAMPLE_RATES.get(i));
        *slot.ok_or(FlvError::Invalid {
            what: "AAC sampling frequency index",
        })?
    };
    if sample_rate == 0 {
        return Err(FlvError::Invalid {
            what: "AAC sampling frequency",
        });
    }
    // Configuration 0 defers the layout to a program config element, which leaves the
    // packager without a channel count to declare.
    let channels = r.bits(4)?;
    if channels == 0 {
        return Err(FlvError::Invalid {
            what: "AAC channel configuration",
        });
    }
    // SBR/PS extensions and object-type specific config that follow are kept in the copy.
    Ok(AacConfig {
        object_type: u8::try_from(object_type).map_err(|_| FlvError::Invalid {
            what: "AAC audio object type",
        })?,
        sample_rate,
        channels: u8::try_from(channels).map_err(|_| FlvError::Invalid {
            what: "AAC channel configuration",
        })?,
        asc,
    })
}

#[cfg(test)]
mod tests {
    use super::super::vectors::{hex, BitWriter};
    use super::*;

    fn parse(bytes: &[u8]) -> Result<(u8, u32, u8), FlvError> {
        let asc = Bytes::copy_from_slice(bytes);
        let config = parse_asc(asc.clone())?;
        assert_eq!(config.asc, asc, "ASC must be kept verbatim");
        Ok((config.object_type, config.sample_rate, config.channels))
    }

    #[test]
    fn real_ffmpeg_configs() {
        // From `ffmpeg -f lavfi -i anullsrc=r=R:cl=L -c:a aac -f flv`: the FLV AAC sequence
        // header body after `af 00`, including ffmpeg's trailing SBR sync extension.
        assert_eq!(parse(&hex("119056e500")), Ok((2, 48_000, 2)));
        assert_eq!(parse(&hex("121056e500")), Ok((2, 44_100, 2)));
        assert_eq!(parse(&hex("120856e500")), Ok((2, 44_100, 1)));
        assert_eq!(parse(&hex("13b056e500")), Ok((2, 22_050, 6)));
    }

    #[test]
    fn plain_two_byte_configs() {
        assert_eq!(parse(&[0x11, 0x90]), Ok((2, 48_000, 2)));
        assert_eq!(parse(&[0x12, 0x10]), Ok((2, 44_100, 2)));
        // HE-AAC explicit signalling: object type 5, core 24 kHz, stereo (+ extension fields).
        assert_eq!(parse(&[0x2b, 0x10, 0x88, 0x00]), Ok((5, 24_000, 2)));
    }

    #[test]
    fn escaped_object_type_and_explicit_frequency() {
        // AAC-ELD (39 = 31 escape + 7) at an explicit 22 000 Hz, mono.
        let mut w = BitWriter::default();
        w.u(5, 31).u(6, 7).u(4, 15).u(24, 22_000).u(4, 1);
        assert_eq!(parse(&w.bytes()), Ok((39, 22_000, 1)));
        // Explicit frequency 0 is rejected.
        let mut w = BitWriter::default();
        w.u(5, 2).u(4, 15).u(24, 0).u(4, 2);
        assert_eq!(
            parse(&w.bytes()),
            Err(FlvError::Invalid {
                what: "AAC sampling frequency"
            })
        );
        // Escape to 32 + 63 = 95: beyond the defined object types.
        let mut w = BitWriter::default();
        w.u(5, 31).u(6, 63).u(4, 3).u(4, 2);
        assert_eq!(
            parse(&w.bytes()),
            Err(FlvError::Invalid {
                what: "AAC audio object type"
            })
        );
    }

    #[test]
    fn rejections() {
        let invalid = |what| Err(FlvError::Invalid { what });
        // Object type 0.
        assert_eq!(parse(&[0x01, 0x90]), invalid("AAC audio object type"));
        // Reserved frequency indices 13 and 14.
        assert_eq!(
            parse(&[0x16, 0x90]),
            invalid("AAC sampling frequency index")
        );
        assert_eq!(
            parse(&[0x17, 0x10]),
            invalid("AAC sampling frequency index")
        );
        // Channel configuration 0 (program config element).
        assert_eq!(parse(&[0x11, 0x80]), invalid("AAC channel configuration"));
        let truncated = Err(FlvError::Truncated {
            what: "AudioSpecificConfig",
        });
        assert_eq!(parse(&[]), truncated);
        assert_eq!(parse(&[0x11]), truncated);
        assert_eq!(parse(&[0x17, 0x80, 0x00]), truncated);
    }
}
