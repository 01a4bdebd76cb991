//! Thin wrappers over the x86 instructions the microvisor needs (ports, MSRs, CPUID, TSC).
//!
//! Port and MSR writes are `unsafe`: the caller names the device or MSR and why writing it
//! cannot break the microvisor's own invariants.

use core::arch::asm;

/// # Safety
/// The port must belong to a device the microvisor owns, and the write must not break it.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: upheld by the caller (see above); `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// The port must belong to a device the microvisor owns; reading it must have no harmful side effect.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: upheld by the caller; `in` touches no memory.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// # Safety
/// Reading the MSR must be architecturally valid on this CPU (else #GP, a microvisor panic).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: upheld by the caller.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// The MSR must exist and the value must keep the microvisor's state consistent.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: upheld by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged and side-effect free (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Stop this CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Wait for an interrupt with interrupts enabled for exactly the `hlt`, then disable them
/// again. Every vector runs on an IST stack, so the red zone of the caller is safe.
pub fn idle_wait() {
    // SAFETY: `sti; hlt` is atomic with respect to interrupts (STI shadow), the handlers run on
    // IST stacks and only acknowledge the LAPIC; `cli` restores the host's IF=0 invariant.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

pub const QEMU_EXIT_PORT: u16 = 0xf4;

/// Exit codes written to QEMU's isa-debug-exit port (QEMU exits with `code << 1 | 1`).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum ExitCode {
    PowerOff = 0,
    Panic = 1,
    Unsupported = 2,
}

/// Power the machine off through QEMU's debug-exit device; on real hardware fall back to halting.
pub fn machine_exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device, owned by the microvisor; writing it
    // ends the emulator. On hardware without it the write is ignored and we halt below.
    unsafe { outb(QEMU_EXIT_PORT, code as u8) };
    halt_forever()
}
