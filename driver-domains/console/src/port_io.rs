//! Port I/O to COM1, which the runtime does not offer yet: the console backend's only
//! `in` instruction (output goes through the microvisor).
//!
//! The accesses are limited to COM1's eight registers (`uart::COM1 + 0..8`), the ports the
//! domain's manifest opens (`ioports = ["3f8-3ff"]`). An I/O instruction touches no memory
//! of the domain; the microvisor lets a domain reach only the ports its permission map
//! opens (any other crashes the domain).

use core::arch::asm;

use console_backend::uart::COM1;

/// COM1's registers span 8 ports.
const REGISTERS: u16 = 8;

/// Reads COM1 register `register` (0..8).
pub fn read(register: u16) -> u8 {
    assert!(register < REGISTERS, "COM1 has no register {register}");
    let value: u8;
    // SAFETY: `in` from a COM1 port (checked above), which the manifest gives this domain;
    // it reads a device register into AL and touches no memory or flags.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") COM1 + register, options(nomem, nostack, preserves_flags))
    };
    value
}
