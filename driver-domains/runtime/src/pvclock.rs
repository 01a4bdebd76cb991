//! System time from a [`VcpuTimeInfo`] record and the TSC (Xen's pvclock arithmetic).
//!
//! `ns = system_time + (((tsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul) >> 32`,
//! where a negative `tsc_shift` shifts right. The microvisor keeps the record's `version`
//! odd while it rewrites the record; a reader takes a copy between two equal, even versions
//! (see [`crate::time`]).

use microvisor_abi::vcpu::VcpuTimeInfo;

/// Scales a TSC delta to nanoseconds with the record's multiplier (a 32.32 fixed-point
/// fraction) and shift.
pub fn scale_delta(delta: u64, tsc_to_system_mul: u32, tsc_shift: i8) -> u64 {
    let shifted = if tsc_shift >= 0 {
        delta << u32::from(tsc_shift.unsigned_abs()).min(63)
    } else {
        delta >> u32::from(tsc_shift.unsigned_abs()).min(63)
    };
    ((u128::from(shifted) * u128::from(tsc_to_system_mul)) >> 32) as u64
}

/// System time in ns at TSC value `tsc`, from a consistent copy of the record.
pub fn system_time_ns(record: &VcpuTimeInfo, tsc: u64) -> u64 {
    let delta = tsc.wrapping_sub(record.tsc_timestamp);
    // A TSC read that races with the record's update may fall just before tsc_timestamp;
    // count that as no time elapsed rather than as a huge delta.
    let delta = if (delta as i64) < 0 { 0 } else { delta };
    record.system_time.wrapping_add(scale_delta(
        delta,
        record.tsc_to_system_mul,
        record.tsc_shift,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_with_shift_and_multiplier() {
        // 1 GHz TSC: mul = 2^32 (not representable), so use shift 1 and mul 2^31.
        assert_eq!(scale_delta(1_000, 1 << 31, 1), 1_000);
        // 2 GHz TSC: 0.5 ns per tick.
        assert_eq!(scale_delta(2_000, 1 << 31, 0), 1_000);
        // 500 MHz TSC: 2 ns per tick = shift 2, mul 0.5.
        assert_eq!(scale_delta(1_000, 1 << 31, 2), 2_000);
        // 4 GHz: shift -1, mul 0.5.
        assert_eq!(scale_delta(4_000, 1 << 31, -1), 1_000);
        assert_eq!(scale_delta(0, u32::MAX, 5), 0);
        // A large delta does not overflow the intermediate product.
        assert_eq!(
            scale_delta(u64::MAX >> 1, u32::MAX, 0),
            ((u128::from(u64::MAX >> 1) * u128::from(u32::MAX)) >> 32) as u64
        );
    }

    #[test]
    fn adds_system_time_and_ignores_a_tsc_just_behind_the_stamp() {
        let record = VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 10_000,
            system_time: 5_000_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            ..VcpuTimeInfo::default()
        };
        assert_eq!(system_time_ns(&record, 10_000), 5_000_000);
        assert_eq!(system_time_ns(&record, 12_500), 5_002_500);
        assert_eq!(system_time_ns(&record, 9_999), 5_000_000);
    }
}
