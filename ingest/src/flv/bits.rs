//! MSB-first bit reader with Exp-Golomb codes, shared by the SPS and AudioSpecificConfig parsers.

use super::FlvError;

/// Longest Exp-Golomb prefix we accept: 32 zeros already cover every `ue(v)` the spec allows.
const MAX_LEADING_ZEROS: u32 = 32;

/// Reads bits from a byte slice, most significant bit first.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next bit to read; only advances after a successful read, so `pos / 8 < data.len()` holds.
    pos: usize,
    /// Structure name reported when the data runs out.
    what: &'static str,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`; `what` names the structure in errors.
    pub(super) fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, pos: 0, what }
    }

    /// One bit.
    pub(super) fn bit(&mut self) -> Result<bool, FlvError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(FlvError::Truncated { what: self.what })?;
        let shift = 7 - (self.pos % 8);
        self.pos += 1;
        Ok((byte >> shift) & 1 == 1)
    }

    /// `n` bits (at most 32) as an unsigned integer.
    pub(super) fn bits(&mut self, n: u32) -> Result<u32, FlvError> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n.min(32) {
            v = (v << 1) | u64::from(self.bit()?);
        }
        // At most 32 bits were shifted in, so this never fails.
        u32::try_from(v).map_err(|_| FlvError::Invalid { what: self.what })
    }

    /// Eight bits.
    pub(super) fn u8(&mut self) -> Result<u8, FlvError> {
        let v = self.bits(8)?;
        u8::try_from(v).map_err(|_| FlvError::Invalid { what: self.what })
    }

    /// Skips `n` bits.
    pub(super) fn skip(&mut self, n: u32) -> Result<(), FlvError> {
        for _ in 0..n {
            self.bit()?;
        }
        Ok(())
    }

    /// An unsigned Exp-Golomb code, `ue(v)`.
    pub(super) fn ue(&mut self) -> Result<u32, FlvError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > MAX_LEADING_ZEROS {
                return Err(FlvError::Invalid {
                    what: "Exp-Golomb code",
                });
            }
        }
        let suffix = u64::from(self.bits(zeros)?);
        // zeros <= 32, so neither the shift nor the sum can overflow a u64.
        let v = (1u64 << zeros) - 1 + suffix;
        u32::try_from(v).map_err(|_| FlvError::Invalid {
            what: "Exp-Golomb code",
        })
    }

    /// A signed Exp-Golomb code, `se(v)`.
    pub(super) fn se(&mut self) -> Result<i32, FlvError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).map_err(|_| FlvError::Invalid {
            what: "Exp-Golomb code",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_and_exp_golomb_fields() {
        // 1 | 010 | 011 | 00100 | 00101 | 1010 ...: ue 0, 1, 2, 3, se -2, then bits.
        let data = [0b1010_0110, 0b0100_0010, 0b1101_0000];
        let mut r = BitReader::new(&data, "test");
        assert_eq!(r.ue(), Ok(0));
        assert_eq!(r.ue(), Ok(1));
        assert_eq!(r.ue(), Ok(2));
        assert_eq!(r.ue(), Ok(3));
        assert_eq!(r.se(), Ok(-2));
        assert_eq!(r.bits(3), Ok(0b101));
        assert_eq!(r.bits(4), Ok(0));
        assert_eq!(r.bit(), Err(FlvError::Truncated { what: "test" }));
    }

    #[test]
    fn exp_golomb_is_bounded() {
        // 32 zeros then a one and 32 one bits: 2^33 - 2 does not fit in a u32.
        let data = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x80];
        assert_eq!(
            BitReader::new(&data, "test").ue(),
            Err(FlvError::Invalid {
                what: "Exp-Golomb code"
            })
        );
        // 32 zeros then a one and 32 zero bits: 2^32 - 1, the largest value that fits.
        let data = [0, 0, 0, 0, 0x80, 0, 0, 0, 0];
        assert_eq!(BitReader::new(&data, "test").ue(), Ok(u32::MAX));
        // 31 zeros: the largest legal value.
        let data = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(BitReader::new(&data, "test").ue(), Ok(u32::MAX - 1));
        // Far too many zeros: rejected before running off the end.
        let data = [0u8; 64];
        assert_eq!(
            BitReader::new(&data, "test").ue(),
            Err(FlvError::Invalid {
                what: "Exp-Golomb code"
            })
        );
        assert_eq!(
            BitReader::new(&[], "test").ue(),
            Err(FlvError::Truncated { what: "test" })
        );
    }

    #[test]
    fn signed_exp_golomb_extremes() {
        // ue = 2^32 - 2 -> se = -(2^31 - 1).
        let data = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(BitReader::new(&data, "test").se(), Ok(-(i32::MAX)));
        // ue = 2^32 - 3 -> se = 2^31 - 1.
        let data = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfc];
        assert_eq!(BitReader::new(&data, "test").se(), Ok(i32::MAX));
    }
}
