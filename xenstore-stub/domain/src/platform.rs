//! The server's [`Platform`] on the runtime: grant mapping, event channels, the console.

use core::fmt;

use driver_domains::events::{self, Port};
use driver_domains::grant_table::{self, GrantRef, MappedGrant};
use driver_domains::println;
use microvisor_abi::grant::{GNTST_BAD_HANDLE, GNTTAB_RESERVED_XENSTORE};
use microvisor_abi::microvisor_op::DomainEntry;
use xenstore_stub::server::Platform;

/// The machine as the runtime offers it.
pub struct RuntimePlatform;

impl Platform for RuntimePlatform {
    type Page = MappedGrant;

    fn list_domains(&mut self, out: &mut [DomainEntry]) -> Result<usize, i64> {
        driver_domains::hypercall::list_domains(out)
    }

    fn map_ring(&mut self, domid: u16) -> Result<MappedGrant, i64> {
        grant_table::map_grant(domid, GrantRef(GNTTAB_RESERVED_XENSTORE), false).map_err(i64::from)
    }

    fn unmap_ring(&mut self, domid: u16, page: MappedGrant) {
        match page.unmap() {
            // The microvisor already revoked the mapping when it tore the domain down.
            Ok(()) | Err(GNTST_BAD_HANDLE) => {}
            Err(status) => {
                println!("xenstore: unmapping the ring of domain {domid} failed: status {status}")
            }
        }
    }

    fn bind(&mut self, domid: u16, remote_port: u32) -> Result<u32, i64> {
        events::bind_interdomain(domid, remote_port).map(|port| port.0)
    }

    fn close(&mut self, local_port: u32) {
        if let Err(error) = events::close(Port(local_port)) {
            println!("xenstore: closing port {local_port} failed: error {error}");
        }
    }

    fn notify(&mut self, local_port: u32) {
        // A peer that went away meanwhile is found by the next sync.
        let _ = events::send(Port(local_port));
    }

    fn log(&mut self, line: fmt::Arguments<'_>) {
        println!("{line}");
    }
}
