//! Our own operations, hypercall [`crate::hypercall::MICROVISOR_OP`] = 64: `(cmd, arg)`.
//!
//! Xen has no equivalent for these; they live outside Xen's hypercall numbering so an
//! unmodified Xen guest never reaches them by accident.

/// Writes [`DomainInfo`] for the calling domain to the guest-virtual address in `arg`.
pub const MVOP_DOMAIN_INFO: u64 = 0;

/// Writes [`DomainStats`] of the calling domain to the guest-virtual address in `arg`.
pub const MVOP_DOMAIN_STATS: u64 = 2;

/// The microvisor's counters for one domain (since it was built).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainStats {
    pub hypercalls: u64,
    pub events_sent: u64,
    pub vm_exits: u64,
}
const _: () = assert!(core::mem::size_of::<DomainStats>() == 24);

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

/// Lists the live domains for a service domain (the xenstore or console domain of the
/// manifest; anyone else gets `-EPERM`). Call: `microvisor_op(MVOP_LIST_DOMAINS, array_gva,
/// count)` with room for `count` [`DomainEntry`]s; returns the number written (at most `count`).
pub const MVOP_LIST_DOMAINS: u64 = 1;

/// One live domain as a service domain sees it. The domain's xenstore ring page is its grant
/// ref 1 and its console ring page its grant ref 0 (Xen's reserved refs), both granted to the
/// service domain that serves them; the ports are unbound ports of that domain whose remote
/// end is the service domain, ready for `EVTCHNOP_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainEntry {
    pub domid: u16,
    /// [`DOMAIN_FLAG_*`] bits.
    pub flags: u16,
    /// Its xenstore port (0 if the caller does not serve its xenstore).
    pub store_port: u32,
    /// Its console port (0 if the caller does not serve its console).
    pub console_port: u32,
    pub _pad: u32,
    /// Its name, NUL-padded.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainEntry>() == 48);
pub const DOMAIN_ENTRY_SIZE: usize = 48;

/// The domain is shutting down or preserved (its rings should be dropped).
pub const DOMAIN_FLAG_DYING: u16 = 1;
/// The entry is the caller itself.
pub const DOMAIN_FLAG_SELF: u16 = 2;

/// Global VIRQ raised in the xenstore and console domains whenever a domain is built or
/// destroyed (Xen's `VIRQ_DOM_EXC`, 3): re-read the list.
pub const VIRQ_DOMAIN_CHANGE: u32 = 3;
