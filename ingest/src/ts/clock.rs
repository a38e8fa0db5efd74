//! 33-bit MPEG timestamps (90 kHz) extended to a 64-bit timeline across wrap-around.

/// One wrap of the 33-bit PTS/DTS counter.
pub const WRAP: i64 = 1 << 33;

/// Unwraps 33-bit timestamps; one instance is shared by every track of a program so that audio
/// and video stay on the same timeline even when they wrap at slightly different moments.
#[derive(Debug, Default, Clone)]
pub struct Unwrap33 {
    last: Option<i64>,
}

impl Unwrap33 {
    /// Maps a raw timestamp (only the low 33 bits are used) to the candidate closest to the
    /// previous result, so small backward steps (B-frames, audio/video interleaving) stay small.
    pub fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = i64::try_from(raw & ((1 << 33) - 1)).unwrap_or(0);
        let value = match self.last {
            None => raw,
            Some(last) => {
                let base = last - last.rem_euclid(WRAP);
                [base - WRAP, base, base + WRAP]
                    .into_iter()
                    .map(|b| b + raw)
                    .min_by_key(|candidate| (candidate - last).abs())
                    .unwrap_or(raw)
            }
        };
        self.last = Some(value);
        value
    }
}

/// `pts - dts` for raw 33-bit values, taken modulo 2^33 into the signed range (a PTS that wrapped
/// while its DTS did not still gives a small positive offset).
pub fn composition_offset(pts: u64, dts: u64) -> i64 {
    let diff = (i128::from(pts) - i128::from(dts)).rem_euclid(i128::from(WRAP));
    let diff = i64::try_from(diff).unwrap_or(0);
    if diff >= WRAP / 2 {
        diff - WRAP
    } else {
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_forward_and_back() {
        let mut clock = Unwrap33::default();
        assert_eq!(clock.unwrap((1 << 33) - 3000), WRAP - 3000);
        assert_eq!(clock.unwrap(0), WRAP);
        assert_eq!(clock.unwrap((1 << 33) - 1500), WRAP - 1500);
        assert_eq!(clock.unwrap(3000), WRAP + 3000);
    }

    #[test]
    fn composition_offset_across_the_wrap() {
        assert_eq!(composition_offset(3003, 0), 3003);
        assert_eq!(composition_offset(1000, (1 << 33) - 2003), 3003);
        assert_eq!(composition_offset(0, 3003), -3003);
    }

    proptest! {
        #[test]
        fn steps_survive_the_wrap(start in 0u64..(1 << 33), steps in prop::collection::vec(0i64..200_000, 1..100)) {
            let mut clock = Unwrap33::default();
            let mut raw = i64::try_from(start).expect("33 bits");
            let mut last = clock.unwrap(start);
            for step in steps {
                raw = (raw + step).rem_euclid(WRAP);
                let next = clock.unwrap(u64::try_from(raw).expect("positive"));
                prop_assert_eq!(next - last, step);
                last = next;
            }
        }
    }
}
