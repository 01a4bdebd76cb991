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
    /// Which build of the domain this is: a number no other build in this boot had. A
    /// service domain restarted under the same id (see [`DOMAIN_FLAG_RESTARTING`]) comes
    /// back with a new instance, so its server drops the old connection and serves the new.
    pub instance: u32,
    /// Its name, NUL-padded.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainEntry>() == 48);
pub const DOMAIN_ENTRY_SIZE: usize = 48;

/// The domain is shutting down or preserved (its rings should be dropped).
pub const DOMAIN_FLAG_DYING: u16 = 1;
/// The entry is the caller itself.
pub const DOMAIN_FLAG_SELF: u16 = 2;
/// The entry is the system's control domain (the toolstack): the xenstore domain gives its
/// connection the toolstack's privileges.
pub const DOMAIN_FLAG_CONTROL: u16 = 4;
/// The domain is dying and will be rebuilt under the same domain id (a service domain whose
/// `on_crash` or `on_reboot` is `restart`): its frontends' event channels and grants stay
/// addressed to it, so its xenstore home and the device entries under it are kept for the
/// next instance instead of being removed.
pub const DOMAIN_FLAG_RESTARTING: u16 = 8;

/// Global VIRQ raised in the xenstore and console domains whenever a domain is built or
/// destroyed (Xen's `VIRQ_DOM_EXC`, 3): re-read the list.
pub const VIRQ_DOMAIN_CHANGE: u32 = 3;

/// Lists the PCI functions assigned to the caller (`pci = [...]` in its manifest):
/// `microvisor_op(MVOP_PCI_LIST, array_gva, count)` with room for `count`
/// [`PciFunctionEntry`]s; returns the number written. Memory BARs are mapped in the caller's
/// nested page table at guest-physical = host-physical address (except the pages of an
/// MSI-X table and PBA, which the microvisor keeps); I/O BARs are opened in its I/O map.
pub const MVOP_PCI_LIST: u64 = 3;
/// `microvisor_op(MVOP_PCI_CONFIG_READ, bdf, offset, size)`: reads 1, 2 or 4 bytes
/// (naturally aligned, offset < 4096) of an assigned function's config space; returns the
/// value. A function the caller does not own is invisible: `-ENODEV`.
pub const MVOP_PCI_CONFIG_READ: u64 = 4;
/// `microvisor_op(MVOP_PCI_CONFIG_WRITE, bdf, offset, size, value)`: writes through the
/// microvisor's filter: BARs, the expansion ROM BAR and the MSI/MSI-X capabilities are the
/// microvisor's (writes ignored); of the command register only I/O, memory, bus-master and
/// interrupt-disable are the owner's; the rest passes through. `-ENODEV` if not owned.
pub const MVOP_PCI_CONFIG_WRITE: u64 = 5;
/// `microvisor_op(MVOP_PCI_BIND_MSIX, bdf, entry, port)`: the microvisor programs MSI-X
/// table entry `entry` of an assigned function to interrupt the host, and each such
/// interrupt raises `port` (an event channel of the caller) as an event. Enables MSI-X on the
/// function. `-EINVAL` for an entry beyond the table, `-ENOSPC` when out of host vectors.
pub const MVOP_PCI_BIND_MSIX: u64 = 6;

/// `bdf` argument encoding: segment << 16 | bus << 8 | device << 3 | function.
pub const fn pci_bdf(segment: u16, bus: u8, device: u8, function: u8) -> u32 {
    (segment as u32) << 16
        | (bus as u32) << 8
        | ((device as u32) & 0x1f) << 3
        | (function as u32 & 7)
}

/// One BAR of an assigned function.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PciBarEntry {
    pub base: u64,
    pub size: u64,
    /// 0 none, 1 I/O, 2 32-bit memory, 3 64-bit memory (its upper half is the next slot, kind 0).
    pub kind: u32,
    /// Bit 0: prefetchable.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<PciBarEntry>() == 24);

/// One assigned PCI function.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PciFunctionEntry {
    /// See [`pci_bdf`].
    pub bdf: u32,
    pub vendor: u16,
    pub device: u16,
    /// Class code (24 bits: class, subclass, prog-if).
    pub class: u32,
    /// Number of MSI-X table entries (0: no MSI-X).
    pub msix_entries: u32,
    pub bars: [PciBarEntry; 6],
}
const _: () = assert!(core::mem::size_of::<PciFunctionEntry>() == 16 + 6 * 24);
pub const PCI_FUNCTION_ENTRY_SIZE: usize = 160;
