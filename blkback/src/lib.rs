//! The block backend's logic (`README.md`): Xen's blkif protocol served from a slice of a
//! disk. Pure and host-tested; the domain binary (`src/main.rs`) supplies the
//! [`engine::Platform`] (grant copies, the virtio-blk device) and the xenstore client.
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | request and response ring entries, operations, statuses |
//! | [`multi_page`] | a ring over several granted pages |
//! | [`vbd`] | a virtual block device as a slice of the disk |
//! | [`request`] | validating a request copied out of the ring |
//! | [`engine`] | serving one queue: requests in flight, flush ordering, the cut-off policy, counters |
//! | [`slots`] | the bounce buffers requests hold while they are in flight |
//! | [`handshake`] | the xenbus keys and states |
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod engine;
pub mod handshake;
pub mod multi_page;
pub mod request;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod slots;
pub mod vbd;
pub mod wire;

#[cfg(test)]
mod tests;
