//! System time: the TSC, calibrated once against the PIT, scaled to nanoseconds since boot.
//! Domains see the same clock through their `vcpu_time_info` (pvclock).

use core::sync::atomic::{AtomicU64, Ordering};
use microvisor_core::time::TscScale;
use x86_64::instructions::port::Port;

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(1_000_000_000);
static SCALE: spin::Once<TscScale> = spin::Once::new();

/// Calibrate the TSC with PIT channel 2 over ~10 ms (bootstrap CPU, before anything else times).
pub fn calibrate() {
    const PIT_TICKS: u16 = 11_932; // ~10 ms
    let (mut gate, mut mode, mut channel2) =
        (Port::<u8>::new(0x61), Port::new(0x43), Port::new(0x42));
    // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 and its gate, used only here, at
    // boot, by the bootstrap CPU; the speaker output stays disabled (bit 1 clear).
    let tsc_delta = unsafe {
        let gate_bits = gate.read();
        gate.write((gate_bits & !0x02) | 0x01);
        mode.write(0b1011_0000u8); // channel 2, lobyte/hibyte, mode 0, binary
        channel2.write(PIT_TICKS as u8);
        channel2.write((PIT_TICKS >> 8) as u8);
        let start = crate::arch::rdtsc();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        crate::arch::rdtsc() - start
    };
    let hz = microvisor_core::time::tsc_hz_from_calibration(tsc_delta, u64::from(PIT_TICKS))
        .unwrap_or(1_000_000_000);
    TSC_HZ.store(hz, Ordering::Relaxed);
    SCALE.call_once(|| TscScale::from_tsc_hz(hz));
    TSC_AT_BOOT.store(crate::arch::rdtsc(), Ordering::Relaxed);
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

pub fn tsc_at_boot() -> u64 {
    TSC_AT_BOOT.load(Ordering::Relaxed)
}

pub fn scale() -> TscScale {
    *SCALE.get().expect("time::calibrate runs first")
}

/// Nanoseconds since boot.
pub fn now_ns() -> u64 {
    let delta = crate::arch::rdtsc().saturating_sub(tsc_at_boot());
    scale().ns_from_tsc_delta(delta)
}

pub fn delay_us(us: u64) {
    let end = now_ns() + us * 1000;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Write the pvclock record (`vcpu_time_info`) at guest-physical `gpa` of the domain whose
/// nested page table is `npt_root`. The TSC is shared by all CPUs and runs at a constant
/// rate, so one record (reference point: the boot TSC, system time 0) stays correct.
pub fn publish_vcpu_time(npt_root: u64, gpa: u64) -> Result<(), ()> {
    use microvisor_core::pagewalk::GuestPhysMemory;
    let record = vcpu_time_record();
    let mut memory = crate::guestmem::GuestMemory::new(crate::npt::NptView::from_root(npt_root));
    if memory.write(gpa, &record) {
        Ok(())
    } else {
        Err(())
    }
}

/// Write the pvclock record into a frame the microvisor owns (a `shared_info` page).
pub fn write_vcpu_time_hpa(hpa: u64) {
    crate::mem::write_phys(hpa, &vcpu_time_record());
}

fn vcpu_time_record() -> [u8; 32] {
    let scale = scale();
    let mut record = [0u8; 32];
    record[0..4].copy_from_slice(&2u32.to_le_bytes()); // version: even = stable
    record[8..16].copy_from_slice(&tsc_at_boot().to_le_bytes());
    record[16..24].copy_from_slice(&0u64.to_le_bytes());
    record[24..28].copy_from_slice(&scale.mul.to_le_bytes());
    record[28] = scale.shift as u8;
    record[29] = 1; // XEN_PVCLOCK_TSC_STABLE_BIT
    record
}
