//! `console`: the console backend domain (see the library, `src/lib.rs`, for the logic, and
//! `console.cfg` for the manifest entry that starts it; the manifest must open COM1's I/O
//! ports to it with `ioports = ["3f8-3ff"]`). With `attach=com2` on its command line (and
//! COM2's ports opened too, `"2f8-2ff"`), it also serves the attach line on COM2 for the
//! host's `xl console` (`console_backend::attach`): one domain's console, raw.
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
//! | `[console] attach line on COM2 (0x2f8)` / `[console] no UART at COM2 (0x2f8): no attach line` | at start, with `attach=com2` |
//! | `[console] xl console attached to <name>` / `... left <name>` / `...: <name> is gone; detached` | the attach line's sessions |
//! | `[console] xl console: <n> bytes of output dropped (the client is not reading)` | at most once a second |
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
use console_backend::uart::{COM2, READ_BURST};
use driver_domains::events::{self, Delivery, Port};
use driver_domains::{cmdline, time, BootInfo};
use microvisor_abi::microvisor_op::VIRQ_DOMAIN_CHANGE;

use crate::platform::{RuntimePlatform, Uart};

/// How often the UART is polled and the backend ticks.
const POLL_PERIOD_NS: u64 = 20_000_000;
/// Without `VIRQ_DOMAIN_CHANGE`, how often the domain list is re-read.
const RESYNC_PERIOD_NS: u64 = 1_000_000_000;

driver_domains::entry!(main);

fn main(info: &'static BootInfo) -> ! {
    let mut platform = RuntimePlatform::new();
    match cmdline::get(info.cmdline, "attach") {
        None => {}
        Some("com2") => {
            platform.attach = Uart::init(COM2);
            platform.uart_write(match platform.attach {
                Some(_) => b"[console] attach line on COM2 (0x2f8)\r\n",
                None => b"[console] no UART at COM2 (0x2f8): no attach line\r\n",
            });
        }
        Some(_) => {
            platform.uart_write(b"[console] attach=: only `com2` is known; no attach line\r\n")
        }
    }
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
            // The attach line's UART holds 16 bytes and QEMU refills it only between our
            // reads: anything read there means more may follow.
            let attach_count = platform.attach_read(&mut typed);
            backend.attach_input(&mut platform, &typed[..attach_count]);
            backend.tick(&mut platform);
            // A full burst: more may be waiting, look again soon.
            let period = if count == typed.len() || attach_count > 0 {
                POLL_PERIOD_NS / 10
            } else {
                POLL_PERIOD_NS
            };
            next_tick = time::now_ns().saturating_add(period);
        }
        events::wait_since(generation, Some(next_tick));
    }
}
