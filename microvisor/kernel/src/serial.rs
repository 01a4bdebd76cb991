//! The microvisor's debug console: COM1 (16550 at 0x3f8), polled, behind one lock.
//!
//! Every line the microvisor prints is labelled `[microvisor]`; lines a domain writes through
//! `console_io` are labelled with the domain's name. The console domain's lines (the other
//! domains' console rings, already labelled) come through `console_io` too: the microvisor
//! is the UART's only writer, and every line goes out whole under this one lock, so lines
//! never interleave, whichever vCPU is preempted where. A panic takes the port by force
//! (`force_unlock`) so the epitaph is never lost.

use core::fmt::{self, Write};
use spin::Mutex;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
/// The microvisor's own recent lines, kept for the control domain (`xl dmesg`).
pub const LOG_RING_BYTES: usize = 16 * 1024;

pub struct Serial {
    /// The last [`LOG_RING_BYTES`] bytes of the microvisor's own lines, oldest at `start`.
    ring: [u8; LOG_RING_BYTES],
    start: usize,
    len: usize,
}

/// Writes a line to the UART and to the log ring.
struct Logged<'a>(&'a mut Serial);

impl Write for Logged<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            let serial = &mut *self.0;
            let at = (serial.start + serial.len) % LOG_RING_BYTES;
            serial.ring[at] = b;
            if serial.len == LOG_RING_BYTES {
                serial.start = (serial.start + 1) % LOG_RING_BYTES;
            } else {
                serial.len += 1;
            }
        }
        self.0.write_str(s)
    }
}

impl Serial {
    fn init(&mut self) {
        // (register, value): the standard 16550 set-up (no interrupts, 115200 8N1, FIFO on).
        for (offset, value) in [
            (1, 0x00),
            (3, 0x80),
            (0, 0x01),
            (1, 0x00),
            (3, 0x03),
            (2, 0xC7),
            (4, 0x03),
        ] {
            // SAFETY: COM1 belongs to the microvisor; these writes only configure it.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
    }

    pub fn write_byte(&mut self, byte: u8) {
        // SAFETY: polling the line status register and writing the data register of our own UART.
        unsafe {
            let mut spins = 0u32;
            while Port::<u8>::new(COM1 + 5).read() & 0x20 == 0 && spins < 100_000 {
                spins += 1;
            }
            Port::new(COM1).write(byte);
        }
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

pub static SERIAL: Mutex<Serial> = Mutex::new(Serial {
    ring: [0; LOG_RING_BYTES],
    start: 0,
    len: 0,
});

/// Copies the log ring, oldest byte first, into `out`; returns how many bytes (the newest
/// ones when `out` is shorter).
pub fn dmesg(out: &mut [u8]) -> usize {
    let serial = SERIAL.lock();
    let n = serial.len.min(out.len());
    let skip = serial.len - n;
    for (i, byte) in out.iter_mut().take(n).enumerate() {
        *byte = serial.ring[(serial.start + skip + i) % LOG_RING_BYTES];
    }
    n
}

pub fn init() {
    SERIAL.lock().init();
}

pub fn log_fmt(args: fmt::Arguments) {
    let mut port = SERIAL.lock();
    let mut logged = Logged(&mut port);
    let _ = logged.write_str("[microvisor] ");
    let _ = logged.write_fmt(args);
    let _ = logged.write_str("\n");
}

/// Print one line of a domain's console output, labelled with its name (`None`: the console
/// domain's lines, which carry their own labels). Bytes that are not printable ASCII are
/// shown as `?` so a domain cannot drive the terminal.
pub fn domain_line(name: Option<&str>, line: &[u8]) {
    let mut port = SERIAL.lock();
    if let Some(name) = name {
        let _ = write!(port, "[{name}] ");
    }
    for &b in line {
        port.write_byte(if (0x20..0x7f).contains(&b) || b == b'\t' {
            b
        } else {
            b'?'
        });
    }
    let _ = port.write_str("\n");
}

/// Take the port even if another CPU holds it (used only on the way to a panic exit).
pub fn force_log(args: fmt::Arguments) {
    // SAFETY: called only when the system is going down; a torn line is better than a lost epitaph.
    unsafe { SERIAL.force_unlock() };
    log_fmt(args);
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::serial::log_fmt(format_args!($($arg)*)) };
}
