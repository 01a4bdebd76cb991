//! The console backend domain's logic, tested on the host.
//!
//! The domain (binary `console`, `src/main.rs`) owns the UART (COM1, its I/O ports opened by
//! the manifest's `ioports`) and serves the console ring of every other domain, the way
//! Xen's `xenconsoled` does: each domain's output becomes lines `[<name>] <line>` on the
//! UART, and UART input goes to the domain attached with `attach <name>` (Ctrl-] leaves).
//! With a second UART (COM2), it also serves one domain's console raw on it, for the
//! host's `xl console` ([`attach`]).
//!
//! | module | job |
//! |---|---|
//! | [`stream_ring`] | one direction of a byte-stream ring in a shared page: index arithmetic, wrap-around copies, hostile-index checks (the same module as `xenstore-stub`'s) |
//! | [`cons_ring`] | the console ring page (`xencons_interface`): the backend's two ends |
//! | [`roster`] | the microvisor's domain list against the domains served (the same module as `xenstore-stub`'s) |
//! | [`lines`] | output bytes to labelled, printable lines |
//! | [`input`] | the input state machine: command mode, `attach`, Ctrl-] |
//! | [`attach`] | the attach line (COM2): `attach <name>`, then one domain's console as raw bytes both ways, for `xl console` |
//! | [`backend`] | the backend: connections, sync, draining, input delivery, faults, over a [`backend::Platform`] |
//! | [`uart`] | the 16550's registers and the bits the backend polls (pure; the port I/O is in the binary) |
//! | `sim` | (tests and feature `sim`) a simulated machine: listed domains, in-memory console pages, the UARTs' transcripts |
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod attach;
pub mod backend;
pub mod cons_ring;
pub mod input;
pub mod lines;
pub use service_common::roster;
pub use service_common::stream_ring;
pub mod uart;

#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;
