//! The backend's [`Platform`] on the runtime: grant mapping, event channels, and COM1
//! (input polled from the UART while data is ready; output written through the microvisor).

use core::fmt::Write;

use console_backend::backend::Platform;
use console_backend::uart::{DATA, LINE_STATUS, LSR_DATA_READY, READ_BURST};
use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, GrantRef, MappedGrant};
use microvisor_abi::grant::{GNTST_BAD_HANDLE, GNTTAB_RESERVED_CONSOLE};
use microvisor_abi::microvisor_op::DomainEntry;

use crate::port_io;

/// The machine as the runtime offers it, with COM1.
pub struct RuntimePlatform;

impl RuntimePlatform {
    /// Reads the bytes the UART has received (at most [`READ_BURST`]) into `out`; returns
    /// how many.
    pub fn uart_read(&mut self, out: &mut [u8; READ_BURST]) -> usize {
        let mut count = 0;
        while count < out.len() && port_io::read(LINE_STATUS) & LSR_DATA_READY != 0 {
            out[count] = port_io::read(DATA);
            count += 1;
        }
        count
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
}
