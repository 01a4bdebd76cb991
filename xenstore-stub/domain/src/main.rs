//! `xenstore-stub`: the xenstore service domain (see the library, `src/lib.rs`, for the
//! logic, and `xenstore.cfg` for the manifest entry that starts it).
//!
//! At start it binds `VIRQ_DOMAIN_CHANGE` (global VIRQ 3, vCPU 0), creates the store with
//! itself as the privileged toolstack, and syncs with the microvisor's domain list. Then,
//! for ever: wait for an event; on `VIRQ_DOMAIN_CHANGE` sync again; for each served
//! domain whose port fired, serve its ring.
//!
//! Lines it prints (through the runtime's console):
//!
//! | line | when |
//! |---|---|
//! | `xenstore: serving <n> domains` | after each sync |
//! | `xenstore: domain <id> (<name>) broke the ring protocol, disconnected` | bad ring indices or message framing |
//! | `xenstore: domain <id> (<name>) does not read its ring, disconnected` | its reply queue overflowed |
//! | `xenstore: cannot ...` | a map, bind or list hypercall failed |
//! | `xenstore: vbd <vdev> of <fe> (<id>) served by <be> (<id>), ...` | a virtual block device's entries were written (both its domains are served) |
//! | `xenstore: vif <handle> of <fe> (<id>) served by <be> (<id>), mac <mac>, bridge <name>` | a network interface's entries were written |
//!
//! The command line's `vbds=` and `vifs=` (written by the manifest compiler from the
//! guests' `disk` and `vif` lines) are the device tables: see [`xenstore_stub::devices`].
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

mod platform;

use driver_domains::events::{self, Delivery, Port};
use driver_domains::{cmdline, println, time, BootInfo};
use microvisor_abi::microvisor_op::VIRQ_DOMAIN_CHANGE;
use xenstore_stub::devices::{decode_vbds, decode_vifs, VBDS_KEY, VIFS_KEY};
use xenstore_stub::server::Server;

use crate::platform::RuntimePlatform;

/// Without event delivery, how often everything is looked at.
const POLL_PERIOD_NS: u64 = 10_000_000;
/// Without `VIRQ_DOMAIN_CHANGE`, how often the domain list is re-read.
const RESYNC_PERIOD_NS: u64 = 1_000_000_000;

driver_domains::entry!(main);

fn main(info: &'static BootInfo) -> ! {
    let mut platform = RuntimePlatform;
    let polling = events::delivery() == Delivery::None;
    if polling {
        println!(
            "xenstore: no event delivery; polling every {} ms",
            POLL_PERIOD_NS / 1_000_000
        );
    }
    let virq = match events::bind_virq(VIRQ_DOMAIN_CHANGE, 0) {
        Ok(port) => Some(port),
        Err(error) => {
            println!("xenstore: cannot bind VIRQ_DOMAIN_CHANGE: error {error}; re-reading the domain list every second");
            None
        }
    };
    let mut server = Server::new(&mut platform, info.domain.domid);
    let mut vbds = alloc::vec::Vec::new();
    if let Some(text) = cmdline::get(info.cmdline, VBDS_KEY) {
        match decode_vbds(text) {
            Ok(list) => {
                println!(
                    "xenstore: {} virtual block devices in the device table",
                    list.len()
                );
                vbds = list;
            }
            Err(error) => {
                println!("xenstore: command line {VBDS_KEY}= refused, no disks: {error}")
            }
        }
    }
    let mut vifs = alloc::vec::Vec::new();
    if let Some(text) = cmdline::get(info.cmdline, VIFS_KEY) {
        match decode_vifs(text) {
            Ok(list) => {
                println!(
                    "xenstore: {} network interfaces in the device table",
                    list.len()
                );
                vifs = list;
            }
            Err(error) => {
                println!(
                    "xenstore: command line {VIFS_KEY}= refused, no network interfaces: {error}"
                )
            }
        }
    }
    server.set_devices(vbds, vifs);
    server.sync(&mut platform);
    let mut next_resync = time::now_ns().saturating_add(RESYNC_PERIOD_NS);
    loop {
        let generation = events::generation();
        let domains_changed = match virq {
            Some(port) => events::take(port),
            None => time::now_ns() >= next_resync,
        };
        if domains_changed {
            server.sync(&mut platform);
            next_resync = time::now_ns().saturating_add(RESYNC_PERIOD_NS);
        }
        for port in server.ports() {
            if polling || events::take(Port(port)) {
                server.service(&mut platform, port);
            }
        }
        if server.has_backlog() {
            server.run_backlog(&mut platform);
            continue;
        }
        let deadline = if polling {
            Some(time::now_ns().saturating_add(POLL_PERIOD_NS))
        } else {
            virq.is_none().then_some(next_resync)
        };
        events::wait_since(generation, deadline);
    }
}
