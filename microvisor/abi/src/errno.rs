//! Error codes returned to domains: negative errno values in RAX, as Xen returns them.

/// Operation not permitted.
pub const EPERM: i64 = -1;
/// No such entry.
pub const ENOENT: i64 = -2;
/// Try again.
pub const EAGAIN: i64 = -11;
/// No memory.
pub const ENOMEM: i64 = -12;
/// Bad address (a guest pointer that does not translate, or a buffer that leaves guest RAM).
pub const EFAULT: i64 = -14;
/// Busy.
pub const EBUSY: i64 = -16;
/// Already exists.
pub const EEXIST: i64 = -17;
/// Invalid argument.
pub const EINVAL: i64 = -22;
/// Function not implemented (unknown hypercall or sub-op).
pub const ENOSYS: i64 = -38;
/// No such domain.
pub const ESRCH: i64 = -3;
/// No space left (port table full).
pub const ENOSPC: i64 = -28;
/// Bad address in a place the ABI does not call a pointer (Xen's `-ENXIO` for areas).
pub const ENXIO: i64 = -6;
/// No such device (a PCI function the caller does not own is invisible).
pub const ENODEV: i64 = -19;
