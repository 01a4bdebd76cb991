//! Logic shared by the service domains (the xenstore domain and the console domain), kept
//! pure so it is tested on the host:
//! - [`stream_ring`]: one direction of a byte-stream ring (the xenstore and console rings)
//!   over a shared page, with the index checks a server needs against a hostile client;
//! - [`roster`]: from the microvisor's list of domains, which to start serving and which to
//!   drop;
//! - [`devices`]: the device table (the virtual disks each domain gets, and which driver
//!   domain serves them) that the manifest compiler hands the xenstore domain on its
//!   command line;
//! - [`mac`]: MAC addresses, and the stable ones a `vif` gets when its manifest line names
//!   none (the manifest compiler makes them, netback enforces them).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod devices;
pub mod mac;
pub mod roster;
pub mod stream_ring;
