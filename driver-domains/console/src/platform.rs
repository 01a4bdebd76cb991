//! The backend's [`Platform`] on the runtime: grant mapping, event channels, COM1 (input
//! polled from the UART while data is ready; output written through the microvisor) and,
//! when the command line asks for it, COM2, the attach line (input polled the same way,
//! output written while the transmitter has room). One [`Uart`] drives both.

use core::fmt::Write;

use console_backend::backend::Platform;
use console_backend::uart::{
    self, DATA, INIT, LINE_STATUS, LSR_DATA_READY, LSR_THR_EMPTY, PROBE, READ_BURST, SCRATCH,
    WRITE_BURST,
};
use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, GrantRef, MappedGrant};
use microvisor_abi::grant::{GNTST_BAD_HANDLE, GNTTAB_RESERVED_CONSOLE};
use microvisor_abi::microvisor_op::DomainEntry;

use crate::port_io;

/// A 16550 at `base` (COM1 or COM2), polled.
#[derive(Clone, Copy)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// COM1, which the microvisor programmed.
    pub const fn com1() -> Self {
        Self { base: uart::COM1 }
    }

    /// Programs the UART at `base` as the microvisor programs COM1, if one answers there
    /// (QEMU without a second `-serial` has none at COM2).
    pub fn init(base: u16) -> Option<Self> {
        port_io::write(base, SCRATCH, PROBE);
        if !uart::present(
            port_io::read(base, SCRATCH),
            port_io::read(base, LINE_STATUS),
        ) {
            return None;
        }
        for (register, value) in INIT {
            port_io::write(base, register, value);
        }
        Some(Self { base })
    }

    /// Reads the bytes the UART has received (at most [`READ_BURST`]) into `out`; returns
    /// how many.
    pub fn read(&self, out: &mut [u8; READ_BURST]) -> usize {
        let mut count = 0;
        while count < out.len() && port_io::read(self.base, LINE_STATUS) & LSR_DATA_READY != 0 {
            out[count] = port_io::read(self.base, DATA);
            count += 1;
        }
        count
    }

    /// Writes bytes while the transmitter has room (at most [`WRITE_BURST`]); returns how
    /// many. Never waits: a line whose far end does not read keeps the transmitter full.
    pub fn write(&self, bytes: &[u8]) -> usize {
        let mut count = 0;
        for &byte in bytes.iter().take(WRITE_BURST) {
            if port_io::read(self.base, LINE_STATUS) & LSR_THR_EMPTY == 0 {
                break;
            }
            port_io::write(self.base, DATA, byte);
            count += 1;
        }
        count
    }
}

/// The machine as the runtime offers it: COM1, and COM2 if the attach line is on.
pub struct RuntimePlatform {
    com1: Uart,
    /// The attach line's UART.
    pub attach: Option<Uart>,
}

impl RuntimePlatform {
    /// COM1 only; [`RuntimePlatform::attach`] is set once COM2 is programmed.
    pub const fn new() -> Self {
        Self {
            com1: Uart::com1(),
            attach: None,
        }
    }

    /// Reads the bytes COM1 has received (at most [`READ_BURST`]) into `out`; returns how
    /// many.
    pub fn uart_read(&mut self, out: &mut [u8; READ_BURST]) -> usize {
        self.com1.read(out)
    }

    /// Reads the bytes COM2 has received, if the attach line is on.
    pub fn attach_read(&mut self, out: &mut [u8; READ_BURST]) -> usize {
        self.attach.map_or(0, |com2| com2.read(out))
    }

    /// Prints one of the backend's own lines.
    fn say(&mut self, args: core::fmt::Arguments<'_>) {
        let mut line = alloc::string::String::new();
        let _ = line.write_fmt(args);
        line.push_str("\r\n");
        self.uart_write(line.as_bytes());
    }
}

impl Platform for RuntimePlatform {
    type Page = MappedGrant;

    fn list_domains(&mut self, out: &mut [DomainEntry]) -> Result<usize, i64> {
        driver_domains::hypercall::list_domains(out)
    }

    fn map_ring(&mut self, domid: u16) -> Result<MappedGrant, i64> {
        grant_table::map_grant(domid, GrantRef(GNTTAB_RESERVED_CONSOLE), false).map_err(i64::from)
    }

    fn unmap_ring(&mut self, domid: u16, page: MappedGrant) {
        match page.unmap() {
            // The microvisor already revoked the mapping when it tore the domain down.
            Ok(()) | Err(GNTST_BAD_HANDLE) => {}
            Err(status) => {
                self.say(format_args!(
                    "[console] unmapping the console of domain {domid} failed: status {status}"
                ));
            }
        }
    }

    fn bind(&mut self, domid: u16, remote_port: u32) -> Result<u32, i64> {
        events::bind_interdomain(domid, remote_port).map(|port| port.0)
    }

    fn close(&mut self, local_port: u32) {
        if let Err(error) = events::close(Port(local_port)) {
            self.say(format_args!(
                "[console] closing port {local_port} failed: error {error}"
            ));
        }
    }

    fn notify(&mut self, local_port: u32) {
        // A peer that went away meanwhile is found by the next sync.
        let _ = events::send(Port(local_port));
    }

    /// Output goes through the microvisor (`console_io`), the UART's one writer, which
    /// prints each of our lines whole: lines never interleave with its own log.
    fn uart_write(&mut self, bytes: &[u8]) {
        // Nothing better to do with a refused write than to drop it.
        let _ = driver_domains::hypercall::console_write(bytes);
    }

    fn attach_write(&mut self, bytes: &[u8]) -> usize {
        match self.attach {
            Some(com2) => com2.write(bytes),
            None => bytes.len(),
        }
    }
}
