//! Host-side serving of the store (feature `std`): a unix-socket server speaking the plain
//! `xs_wire` framing, as Xen's `xenstored` does on its socket for the toolstack, and a small
//! blocking client for tests and benchmarks.
//!
//! Every socket client is a privileged connection of domain 0: it plays the toolstack.

mod client;
mod server;

pub use client::{nul_terminated, Client, Event};
pub use server::{Server, ServerHandle};
