//! BARE-QEMU CHECK ONLY: console and shutdown without a microvisor.
//!
//! With the word `qemu_debug` on its command line, an image booted directly by QEMU
//! (`qemu-system-x86_64 -kernel IMAGE -append "qemu_debug ..."`, which reads the same PVH
//! note) writes its console to the debug port 0xe9 (`-debugcon stdio`) and shuts down by
//! writing the shutdown reason to port 0xf4 (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`;
//! QEMU then exits with status `reason * 2 + 1`). This checks the 32-to-64-bit entry, the
//! page tables, SSE, the IDT, the heap, panics and every mode that needs no hypercall,
//! without the microvisor. Under the microvisor this is never switched on; the runtime
//! makes no hypercall, time registration or vCPU start in this mode (a hypercall would
//! raise #UD on bare QEMU, which the exception handler reports).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// The command-line word that switches this on.
pub const CMDLINE_FLAG: &str = "qemu_debug";
const DEBUGCON_PORT: u16 = 0xe9;
const DEBUG_EXIT_PORT: u16 = 0xf4;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the bare-QEMU path is on.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

pub(crate) fn activate() {
    ACTIVE.store(true, Ordering::Relaxed);
}

fn outb(port: u16, value: u8) {
    // SAFETY: ports 0xe9 and 0xf4 are QEMU's debug console and debug-exit devices; the
    // write has no effect on memory. Only called while `active()`.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes bytes to the debug console.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        outb(DEBUGCON_PORT, b);
    }
}

/// Exits QEMU with status `reason * 2 + 1`.
pub fn exit(reason: u32) -> ! {
    outb(DEBUG_EXIT_PORT, reason as u8);
    loop {
        core::hint::spin_loop();
    }
}
