//! `console`: the console backend domain (see the library, `src/lib.rs`, for the logic, and
//! `console.cfg` for the manifest entry that starts it; the manifest must open COM1's I/O
//! ports to it with `ioports = ["3f8-3ff"]`).
//!
//! At start it binds `VIRQ_DOMAIN_CHANGE` (global VIRQ 3, vCPU 0) and syncs with the
//! microvisor's domain list. Then, for ever: on `VIRQ_DOMAIN_CHANGE` sync again; for each
//! served domain whose port fired, drain its output; every [`POLL_PERIOD_NS`] read what
//! the UART received and tick the backend. It writes to COM1 directly (the microvisor's
//! own log shares the UART; lines may interleave at worst).
//!
//! Lines it prints on the UART:
//!
//! | line | when |
//! |---|---|
//! | `[<domain name>] <line>` | each line of a domain's console output |
//! | `[console] serving <n> domains` | after each sync |
//! | `[console] attached to <name>; Ctrl-] to leave` | `attach <name>` typed |
//! | `[console] detached` | Ctrl-] while attached |
//! | `[console] <name> went away; detached` | the attached domain was dropped |
//! | `[console] domain <id> (<name>) broke the ring protocol, disconnected` | bad ring indices |
//! | `[console] domains: <names>` / `[console] no domain named <name>` / `[console] unknown command: ...` | other commands |
#![no_std]
#![no_main]
// The only unsafe code is COM1 port I/O (`port_io.rs`), limited to the eight UART registers
// the manifest gives this domain.
#![deny(unsafe_code)]

extern crate alloc;

mod platform;
#[allow(unsafe_code)]
mod port_io;

use console_backend::backend::{Backend, Platform};
use console_backend::uart::READ_BURST;
use driver_domains::events::{self, Delivery, Port};
use driver_domains::{time, BootInfo};
use microvisor_abi::microvisor_op::VIRQ_DOMAIN_CHANGE;

use crate::platform::RuntimePlatform;

/// How often the UART is polled and the backend ticks.
const POLL_PERIOD_NS: u64 = 20_000_000;
/// Without `VIRQ_DOMAIN_CHANGE`, how often the domain list is re-read.
const RESYNC_PERIOD_NS: u64 = 1_000_000_000;

driver_domains::entry!(main);

fn main(_info: &'static BootInfo) -> ! {
    let mut platform = RuntimePlatform;
    let polling = events::delivery() == Delivery::None;
    if polling {
        platform.uart_write(b"[console] no event delivery; polling the rings\r\n");
    }
    let virq = match events::bind_virq(VIRQ_DOMAIN_CHANGE, 0) {
        Ok(port) => Some(port),
        Err(_) => {
            platform.uart_write(
                b"[console] cannot bind VIRQ_DOMAIN_CHANGE; re-reading the domain list every second\r\n",
            );
            None
        }
    };
    let mut backend = Backend::new();
    backend.sync(&mut platform);
    let mut next_resync = time::now_ns().saturating_add(RESYNC_PERIOD_NS);
    let mut next_tick = time::now_ns().saturating_add(POLL_PERIOD_NS);
    let mut typed = [0u8; READ_BURST];
    loop {
        let generation = events::generation();
        let domains_changed = match virq {
            Some(port) => events::take(port),
            None => time::now_ns() >= next_resync,
        };
        if domains_changed {
            backend.sync(&mut platform);
            next_resync = time::now_ns().saturating_add(RESYNC_PERIOD_NS);
        }
        for port in backend.ports() {
            if polling || events::take(Port(port)) {
                backend.service(&mut platform, port);
            }
        }
        if time::now_ns() >= next_tick {
            let count = platform.uart_read(&mut typed);
            backend.uart_input(&mut platform, &typed[..count]);
            backend.tick(&mut platform);
            // A full burst: more may be waiting, look again soon.
            let period = if count == typed.len() {
                POLL_PERIOD_NS / 10
            } else {
                POLL_PERIOD_NS
            };
            next_tick = time::now_ns().saturating_add(period);
        }
        events::wait_since(generation, Some(next_tick));
    }
}
