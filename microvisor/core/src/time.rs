//! Conversions between TSC ticks and nanoseconds, in the form Xen's pvclock gives guests
//! (`vcpu_time_info.tsc_to_system_mul` and `tsc_shift`), and TSC calibration against the
//! PIT.
//!
//! A guest computes `ns = (shifted * mul) >> 32` where `shifted = delta << shift` if
//! `shift >= 0`, else `delta >> -shift` (64-bit shifts, 128-bit product). [`TscScale`]
//! chooses `shift` so that `mul` lies in `[2^31, 2^32)`: all 32 bits of precision.

/// Frequency of the PC's programmable interval timer input, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
const NS_PER_SEC: u64 = 1_000_000_000;

/// A TSC-to-nanoseconds scale as published in `vcpu_time_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    /// `tsc_to_system_mul`: a 32.32 fixed-point fraction.
    pub mul: u32,
    /// `tsc_shift`: applied to the TSC delta before multiplying.
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC running at `hz` (0 is treated as 1 Hz).
    pub fn from_tsc_hz(hz: u64) -> TscScale {
        // Find shift and a ratio num/den = 1e9 / (hz * 2^shift) in [1/2, 1).
        let mut num = u128::from(NS_PER_SEC);
        let mut den = u128::from(hz.max(1));
        let mut shift: i8 = 0;
        while num >= den {
            den <<= 1;
            shift += 1;
        }
        while num * 2 < den {
            num <<= 1;
            shift -= 1;
        }
        // num/den in [1/2, 1), so the quotient is in [2^31, 2^32).
        let mul = ((num << 32) / den) as u32;
        TscScale { mul, shift }
    }

    /// Nanoseconds in `delta` TSC ticks, computed exactly as a guest does.
    pub fn ns_from_tsc_delta(&self, delta: u64) -> u64 {
        let shifted = if self.shift >= 0 {
            delta
                .checked_shl(u32::from(self.shift.unsigned_abs()))
                .unwrap_or(0)
        } else {
            delta
                .checked_shr(u32::from(self.shift.unsigned_abs()))
                .unwrap_or(0)
        };
        ((u128::from(shifted) * u128::from(self.mul)) >> 32) as u64
    }

    /// TSC ticks in `ns` nanoseconds: the smallest delta (saturating at `u64::MAX`) for
    /// which [`ns_from_tsc_delta`](Self::ns_from_tsc_delta) reaches `ns`, for turning a
    /// timer deadline into a TSC deadline that does not fire early.
    pub fn tsc_delta_from_ns(&self, ns: u64) -> u64 {
        // Undo the multiplication (rounding up), then the shift (rounding up).
        let shifted = (u128::from(ns) << 32).div_ceil(u128::from(self.mul.max(1)));
        let shift = u32::from(self.shift.unsigned_abs());
        let delta = if self.shift >= 0 {
            shifted.div_ceil(1u128 << shift)
        } else {
            shifted
                .checked_shl(shift)
                .filter(|d| d >> shift == shifted)
                .unwrap_or(u128::MAX)
        };
        u64::try_from(delta).unwrap_or(u64::MAX)
    }
}

/// The TSC frequency from a calibration in which the TSC advanced by `tsc_delta` while the
/// PIT counted `pit_ticks`; `None` if `pit_ticks` is 0 or the result does not fit.
pub fn tsc_hz_from_calibration(tsc_delta: u64, pit_ticks: u64) -> Option<u64> {
    if pit_ticks == 0 {
        return None;
    }
    u64::try_from(u128::from(tsc_delta) * u128::from(PIT_HZ) / u128::from(pit_ticks)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn within_a_thousandth(value: u64, expected: u64) -> bool {
        value.abs_diff(expected) * 1000 <= expected
    }

    #[test]
    fn one_second_of_ticks_is_one_second() {
        for hz in [1_000_000_000u64, 2_500_000_000, 3_123_000_000] {
            let scale = TscScale::from_tsc_hz(hz);
            assert!(scale.mul >= 1 << 31, "{hz}: mul {:#x}", scale.mul);
            let ns = scale.ns_from_tsc_delta(hz);
            assert!(within_a_thousandth(ns, NS_PER_SEC), "{hz}: {ns}");
            // Round trip through the inverse.
            let ticks = scale.tsc_delta_from_ns(NS_PER_SEC);
            assert!(within_a_thousandth(ticks, hz), "{hz}: {ticks}");
        }
    }

    #[test]
    fn known_scales() {
        // 1 GHz: 1 ns per tick = 2^31/2^32 * 2^1.
        assert_eq!(
            TscScale::from_tsc_hz(1_000_000_000),
            TscScale {
                mul: 1 << 31,
                shift: 1
            }
        );
        // 2.5 GHz: 0.4 ns per tick = 0.8 * 2^-1.
        let s = TscScale::from_tsc_hz(2_500_000_000);
        assert_eq!(s.shift, -1);
        assert_eq!(s.mul, (0.8f64 * 4_294_967_296.0) as u32);
        // A slow clock shifts left.
        assert_eq!(TscScale::from_tsc_hz(1_000_000).shift, 10);
    }

    #[test]
    fn extreme_frequencies_do_not_misbehave() {
        let slowest = TscScale::from_tsc_hz(0);
        assert_eq!(slowest, TscScale::from_tsc_hz(1));
        assert!(within_a_thousandth(
            slowest.ns_from_tsc_delta(3),
            3 * NS_PER_SEC
        ));
        let fastest = TscScale::from_tsc_hz(u64::MAX);
        assert!(fastest.mul >= 1 << 31);
        assert_eq!(fastest.ns_from_tsc_delta(1000), 0);
        assert_eq!(fastest.ns_from_tsc_delta(u64::MAX), 999_999_999);
        assert_eq!(
            slowest.tsc_delta_from_ns(u64::MAX),
            u64::MAX / NS_PER_SEC + 1
        );
    }

    #[test]
    fn calibration_against_the_pit() {
        // 10 ms of PIT ticks during which a 2.5 GHz TSC advanced 25,000,000.
        let pit_ticks = PIT_HZ / 100;
        let hz = tsc_hz_from_calibration(25_000_000, pit_ticks).unwrap();
        assert!(within_a_thousandth(hz, 2_500_000_000), "{hz}");
        assert_eq!(tsc_hz_from_calibration(1, 0), None);
        assert_eq!(tsc_hz_from_calibration(u64::MAX, 1), None);
    }

    proptest! {
        /// For any realistic frequency and interval the conversion is within 0.1%, and the
        /// inverse undoes it.
        #[test]
        fn accurate_for_realistic_clocks(hz in 10_000_000u64..10_000_000_000, ms in 1u64..100_000) {
            let scale = TscScale::from_tsc_hz(hz);
            let ticks = (u128::from(hz) * u128::from(ms) / 1000) as u64;
            let ns = scale.ns_from_tsc_delta(ticks);
            prop_assert!(within_a_thousandth(ns, ms * 1_000_000), "hz {} ms {} ns {}", hz, ms, ns);
            let back = scale.tsc_delta_from_ns(ns);
            prop_assert!(within_a_thousandth(back, ticks));
            prop_assert!(scale.ns_from_tsc_delta(back) >= ns);
            prop_assert!(back == 0 || scale.ns_from_tsc_delta(back - 1) < ns);
        }
    }
}
