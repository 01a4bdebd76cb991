//! Hypercall numbers (Xen's `__HYPERVISOR_*`), as the value in RAX before `VMMCALL`.
//!
//! Arguments go in RDI, RSI, RDX, R10, R8 (Xen's 64-bit HVM convention); the result comes
//! back in RAX. Pointer arguments are guest-virtual addresses.

pub const MEMORY_OP: u64 = 12;
pub const XEN_VERSION: u64 = 17;
pub const CONSOLE_IO: u64 = 18;
pub const GRANT_TABLE_OP: u64 = 20;
pub const VCPU_OP: u64 = 24;
pub const SCHED_OP: u64 = 29;
pub const EVENT_CHANNEL_OP: u64 = 32;
pub const PHYSDEV_OP: u64 = 33;
pub const HVM_OP: u64 = 34;
/// Our own operations, outside Xen's numbering (Xen stops at `arch_7` = 55).
pub const MICROVISOR_OP: u64 = 64;

/// `console_io` sub-op: write `count` bytes from the buffer at a guest-virtual address.
pub const CONSOLEIO_WRITE: u64 = 0;

/// The most bytes one `console_io` write may carry; longer writes return `-EINVAL`.
pub const CONSOLEIO_MAX_BYTES: u64 = 4096;
