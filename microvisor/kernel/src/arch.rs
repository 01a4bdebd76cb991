//! The few x86 instructions the `x86_64` crate does not wrap for us (CPUID, TSC), and the
//! ways a CPU stops: halting for good, idling until an interrupt, leaving QEMU.
//!
//! Ports, MSRs and control registers are the `x86_64` crate's (`Port`, `Msr`, `Cr2`); their
//! writes stay `unsafe`: the caller names the device or MSR and why writing it cannot break
//! the microvisor's own invariants.

use x86_64::instructions::{hlt, interrupts, port::Port};

pub use core::arch::x86_64::__cpuid_count as cpuid;

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged and side-effect free (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stop this CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        interrupts::disable();
        hlt();
    }
}

/// Wait for an interrupt with interrupts enabled from the `hlt` to the `cli` that follows it.
/// `sti; hlt` is atomic with respect to interrupts (STI shadow). Interrupt vectors run on the
/// current stack (see `cpu::build_idt`), so this block is declared as one that may touch the
/// stack (no `nostack`): the compiler keeps nothing in the red zone across it.
pub fn idle_wait() {
    // SAFETY: the handlers this lets run only acknowledge the LAPIC (or note a device vector)
    // and return with every register as it was; STI/HLT/CLI touch no memory of ours.
    unsafe { core::arch::asm!("sti", "hlt", "cli") };
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
    unsafe { Port::new(QEMU_EXIT_PORT).write(code as u8) };
    halt_forever()
}
