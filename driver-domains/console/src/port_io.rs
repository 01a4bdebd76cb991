//! Port I/O to the UARTs, which the runtime does not offer yet: the console backend's only
//! `in` and `out` instructions (COM1's output goes through the microvisor; COM2's is
//! written here).
//!
//! The accesses are limited to the eight registers of COM1 or COM2 (`uart::COM1` or
//! `uart::COM2` + 0..8), the ports the domain's manifest opens (`ioports = ["3f8-3ff",
//! "2f8-2ff"]`; COM2 only when the command line asks for the attach line). An I/O
//! instruction touches no memory of the domain; the microvisor lets a domain reach only the
//! ports its permission map opens (any other crashes the domain).

use core::arch::asm;

use console_backend::uart::{COM1, COM2, REGISTERS};

/// The port of register `register` of the UART at `base`, checked.
fn port(base: u16, register: u16) -> u16 {
    assert!(base == COM1 || base == COM2, "no UART of ours at {base:#x}");
    assert!(register < REGISTERS, "a UART has no register {register}");
    base + register
}

/// Reads register `register` (0..8) of the UART at `base` (COM1 or COM2).
pub fn read(base: u16, register: u16) -> u8 {
    let port = port(base, register);
    let value: u8;
    // SAFETY: `in` from a UART port (checked above), which the manifest gives this domain;
    // it reads a device register into AL and touches no memory or flags.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes register `register` (0..8) of the UART at `base` (COM1 or COM2).
pub fn write(base: u16, register: u16, value: u8) {
    let port = port(base, register);
    // SAFETY: `out` to a UART port (checked above), which the manifest gives this domain;
    // it writes AL to a device register and touches no memory or flags.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}
