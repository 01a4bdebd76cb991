//! The guest ABI of the microvisor.
//!
//! Everything a domain and the microvisor must agree on lives here, with its layout pinned:
//! Xen's hypercall numbers, argument structs and error codes (re-expressed from Xen's public
//! headers), the PVH boot structures, the operations of our own that Xen does not have
//! (in a separate hypercall range, see [`microvisor_op`]), and the schema of the compiled
//! boot manifest that the host-side `manifests` crate produces.
//!
//! The hypercall interface as a whole is specified in `microvisor/HYPERCALLS.md`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod domctl;
pub mod errno;
pub mod evtchn;
pub mod grant;
pub mod hvm;
pub mod hypercall;
pub mod manifest;
pub mod microvisor_op;
pub mod pvh;
pub mod rings;
pub mod sched;
pub mod vcpu;
pub mod version;
pub mod xenbus;
