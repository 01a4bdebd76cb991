//! The xenstore service domain's logic, tested on the host.
//!
//! The domain (binary `xenstore-stub`, `src/main.rs`) serves the xenstore of every other
//! domain over the domain's xenstore ring page, the way Xen's `xenstored` does for guests:
//! the store itself is the `xenstore-store` library; this crate adds the transport and
//! the bookkeeping that replaces Xen's toolstack (there is no dom0: the microvisor's domain
//! list says which domains exist).
//!
//! | module | job |
//! |---|---|
//! | [`stream_ring`] | one direction of a byte-stream ring in a shared page: index arithmetic, wrap-around copies, hostile-index checks |
//! | [`xs_ring`] | the xenstore ring page (`xenstore_domain_interface`): the server's two ends |
//! | [`devices`] | the device table of the command line's `vbds=` (virtual block devices: frontend, backend, slice) |
//! | [`roster`] | the microvisor's domain list against the domains served: what to connect and drop |
//! | [`server`] | the server: store, connections, sync, request handling, faults, over a [`server::Platform`] |
//! | `sim` | (tests and feature `sim`) a simulated machine: listed domains, in-memory ring pages, recorded ports |
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub use service_common::devices;
pub use service_common::roster;
pub mod server;
pub use service_common::stream_ring;
pub mod xs_ring;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

#[cfg(test)]
mod tests;
