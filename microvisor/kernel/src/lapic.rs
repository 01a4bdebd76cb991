//! The local APIC (xAPIC, MMIO at 0xfee00000): identity, end of interrupt, the one-shot
//! timer that drives preemption, and the INIT/SIPI sequence that starts the other CPUs.
//!
//! The timer's rate is calibrated against the TSC once at boot (`calibrate`).

use core::sync::atomic::{AtomicU64, Ordering};

pub const LAPIC_BASE: u64 = 0xfee0_0000;
const REG_ID: u64 = 0x20;
const REG_SVR: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;

/// LAPIC timer ticks per microsecond × 1024 (fixed point), measured at boot.
static TICKS_PER_US_X1024: AtomicU64 = AtomicU64::new(0);

fn read(reg: u64) -> u32 {
    // SAFETY: the LAPIC page is identity-mapped; a 32-bit read of an architectural register
    // of this CPU's own LAPIC has no side effect beyond the read.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn write(reg: u64, value: u32) {
    // SAFETY: as for `read`; the microvisor owns the LAPIC and every write below is a
    // documented register with a value chosen by this module.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, value) }
}

pub fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Mask both legacy 8259 PICs: the firmware leaves the PIT's IRQ 0 on vector 8, which
/// would arrive as a bogus double fault whenever the host enables interrupts.
pub fn mask_legacy_pic() {
    // SAFETY: ports 0x21/0xa1 are the PICs' mask registers; the microvisor owns them and
    // uses only the LAPIC, so masking every legacy line breaks nothing.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Software-enable the LAPIC with our spurious vector and the timer masked.
pub fn enable() {
    write(REG_SVR, 0x100 | u32::from(crate::cpu::SPURIOUS_VECTOR));
    write(REG_TIMER_DIVIDE, 0xb); // divide by 1
    write(REG_LVT_TIMER, 1 << 16);
}

/// Measure the timer rate against the calibrated TSC (bootstrap CPU, once).
pub fn calibrate() {
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INITIAL, u32::MAX);
    let start = crate::time::now_ns();
    while crate::time::now_ns() < start + 10_000_000 {
        core::hint::spin_loop();
    }
    let elapsed_ticks = u64::from(u32::MAX - read(REG_TIMER_CURRENT));
    let elapsed_us = (crate::time::now_ns() - start) / 1000;
    write(REG_TIMER_INITIAL, 0);
    TICKS_PER_US_X1024.store(
        (elapsed_ticks * 1024 / elapsed_us.max(1)).max(1),
        Ordering::Relaxed,
    );
}

pub fn ticks_per_us() -> u64 {
    TICKS_PER_US_X1024.load(Ordering::Relaxed) / 1024
}

/// Arm the one-shot timer to interrupt this CPU after `ns` nanoseconds (at least 1 µs).
pub fn arm_timer_ns(ns: u64) {
    let ticks = (ns / 1000).max(1) * TICKS_PER_US_X1024.load(Ordering::Relaxed) / 1024;
    write(REG_LVT_TIMER, u32::from(crate::cpu::TIMER_VECTOR));
    write(
        REG_TIMER_INITIAL,
        ticks.clamp(1, u64::from(u32::MAX)) as u32,
    );
}

pub fn disarm_timer() {
    write(REG_TIMER_INITIAL, 0);
}

fn send_ipi(apic_id: u32, icr_low: u32) {
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, icr_low);
    while read(REG_ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// Interrupt another CPU with a fixed vector (used to make it leave its guest).
pub fn send_fixed_ipi(apic_id: u32, vector: u8) {
    send_ipi(apic_id, u32::from(vector));
}

/// INIT, then two STARTUP IPIs with the trampoline's page number (Intel MP spec sequence).
pub fn start_ap(apic_id: u32, trampoline_page: u8) {
    send_ipi(apic_id, 0x4500);
    crate::time::delay_us(10_000);
    for _ in 0..2 {
        send_ipi(apic_id, 0x4600 | u32::from(trampoline_page));
        crate::time::delay_us(200);
    }
}

/// The index of the running CPU (its position in the boot-time CPU list).
pub fn current_cpu_index() -> usize {
    crate::smp::cpu_index_of_apic(id()).unwrap_or(0)
}
