//! Our own operations, hypercall [`crate::hypercall::MICROVISOR_OP`] = 64: `(cmd, arg)`.
//!
//! Xen has no equivalent for these; they live outside Xen's hypercall numbering so an
//! unmodified Xen guest never reaches them by accident.

/// Writes [`DomainInfo`] for the calling domain to the guest-virtual address in `arg`.
pub const MVOP_DOMAIN_INFO: u64 = 0;

/// What a domain may learn about itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainInfo {
    /// The domain id; a domain restarted by `on_reboot`/`on_crash = "restart"` gets a new one,
    /// as `xl` gives a rebooted guest a new domid.
    pub domid: u16,
    pub _pad: u16,
    /// How many times this domain (by name) was restarted before this instance.
    pub restarts: u32,
    /// Number of vCPUs the manifest gave it.
    pub vcpus: u32,
    pub _pad1: u32,
    /// Its RAM in bytes (guest-physical `0..memory_bytes`).
    pub memory_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<DomainInfo>() == 24);
