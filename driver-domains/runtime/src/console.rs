//! The domain's console: [`crate::print!`] and [`crate::println!`] format into a small
//! line buffer on the caller's stack and send each line with one write (a line longer than
//! the buffer goes out in pieces). Lines from different vCPUs do not mix within a line. The
//! microvisor (or the console backend) labels each line with the domain's name, so nothing
//! is prefixed here.
//!
//! A line goes to the PV console ring once boot has set it up ([`crate::console_ring`]),
//! otherwise with `console_io`. [`print_direct`] always uses `console_io`: the panic
//! handler and the exception reports use it, so they do not depend on the ring.

use core::fmt::{self, Write};

use crate::hypercall;
use crate::linebuf::LineBuffer;

/// Bytes a line may have before it is sent in pieces.
pub const LINE_BYTES: usize = 256;

/// A console writer; send what is left with [`Console::flush`] (or drop it).
pub struct Console {
    line: LineBuffer<LINE_BYTES>,
    direct: bool,
}

/// Sends one line: to the console ring if it is in use (what it does not take goes to
/// `console_io`), else with `console_io`.
fn emit(bytes: &[u8]) {
    let written = if crate::console_ring::active() {
        crate::console_ring::write(bytes)
    } else {
        0
    };
    if written < bytes.len() {
        hypercall::console_write(&bytes[written..]);
    }
}

impl Console {
    pub const fn new() -> Self {
        Self {
            line: LineBuffer::new(),
            direct: false,
        }
    }

    /// A writer that always uses `console_io`.
    pub const fn direct() -> Self {
        Self {
            line: LineBuffer::new(),
            direct: true,
        }
    }

    fn sink(direct: bool) -> impl FnMut(&[u8]) {
        move |bytes| {
            if direct {
                hypercall::console_write(bytes);
            } else {
                emit(bytes);
            }
        }
    }

    pub fn flush(&mut self) {
        self.line.flush(&mut Self::sink(self.direct));
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.line
            .push(text.as_bytes(), &mut Self::sink(self.direct));
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Writes formatted text to the console (what the macros call).
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut console = Console::new();
    // Console::write_str never fails; a formatting error of a Display impl is dropped.
    let _ = console.write_fmt(args);
    console.flush();
}

/// Writes formatted text with `console_io` only (panics, exception reports).
pub fn print_direct(args: fmt::Arguments<'_>) {
    let mut console = Console::direct();
    let _ = console.write_fmt(args);
    console.flush();
}

/// Writes bytes to the console as they are, in one write per line.
pub fn write_bytes(bytes: &[u8]) {
    let mut console = Console::new();
    console.line.push(bytes, &mut Console::sink(false));
    console.flush();
}

/// Formats to the domain's console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(::core::format_args!($($arg)*)) };
}

/// Formats a line to the domain's console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(::core::format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
