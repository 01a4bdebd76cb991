//! PCI passthrough, the owner's side: the functions the manifest assigned to this domain
//! (`pci = [...]`), their configuration space through the microvisor, their memory BARs,
//! and MSI-X entries turned into event channels.
//!
//! The operations are `microvisor_op` 64 sub-ops (`microvisor_abi::microvisor_op`):
//!
//! | op | wrapper |
//! |---|---|
//! | `MVOP_PCI_LIST` (3) | [`list`]: the assigned functions, with their BARs |
//! | `MVOP_PCI_CONFIG_READ` (4) | [`config_read`] (and [`ConfigSpace`]) |
//! | `MVOP_PCI_CONFIG_WRITE` (5) | [`config_write`] (and [`ConfigSpace`]) |
//! | `MVOP_PCI_BIND_MSIX` (6) | [`bind_msix`] |
//!
//! A function the domain does not own is invisible: config accesses give `-ENODEV`
//! ([`ENODEV`]). Reads show the real registers; writes go through the microvisor's filter,
//! which ignores writes to the BARs, the expansion ROM BAR and the MSI/MSI-X capabilities,
//! and lets the owner change only I/O, memory, bus-master and interrupt-disable of the
//! command register. So a driver cannot size a BAR by writing all ones: [`BarSizing`]
//! answers such a sizing sequence from the sizes [`list`] reported (the virtio transport's
//! `ConfigurationAccess` in [`crate::virtio`] uses it).
//!
//! Memory BARs are mapped by the microvisor at guest-physical = host-physical address, below
//! 4 GiB, so they lie in the runtime's identity map; [`list`] checks each one against the
//! domain's RAM and the runtime's fixed windows and records it, and [`Function::mmio`] hands
//! out an [`Mmio`] accessor for recorded BARs only. The pages of an MSI-X table and PBA stay
//! with the microvisor (not mapped).
//!
//! Pure parts ([`Bdf`], access checks, [`BarSizing`], capability walking over any
//! [`ConfigBackend`], [`mmio_range_ok`]) build on the host and carry the unit tests.

use core::fmt;

pub use microvisor_abi::errno::ENODEV;
use microvisor_abi::microvisor_op::pci_bdf;
pub use microvisor_abi::microvisor_op::{PciBarEntry, PciFunctionEntry};
use microvisor_abi::pvh::{HvmMemmapEntry, MEMMAP_TYPE_RAM};

use crate::layout::{Range, IDENTITY_MAP_END};

/// `PciBarEntry::kind`: no BAR (or the upper half of the 64-bit BAR before it).
pub const BAR_KIND_NONE: u32 = 0;
/// `PciBarEntry::kind`: an I/O BAR.
pub const BAR_KIND_IO: u32 = 1;
/// `PciBarEntry::kind`: a 32-bit memory BAR.
pub const BAR_KIND_MEM32: u32 = 2;
/// `PciBarEntry::kind`: a 64-bit memory BAR (its upper half is the next slot).
pub const BAR_KIND_MEM64: u32 = 3;

/// Config-space offsets used here.
pub mod reg {
    pub const VENDOR_ID: u16 = 0x00;
    pub const DEVICE_ID: u16 = 0x02;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const CLASS_REVISION: u16 = 0x08;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const CAPABILITIES: u16 = 0x34;
    /// Command register bits the owner may change.
    pub const COMMAND_IO: u16 = 1 << 0;
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
    /// Status register: the function has a capability list.
    pub const STATUS_CAPABILITIES: u16 = 1 << 4;
    /// Capability IDs.
    pub const CAP_MSIX: u8 = 0x11;
    pub const CAP_VENDOR: u8 = 0x09;
}

/// A PCI function's address: segment, bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// `None` if `device` or `function` is out of range.
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device >= 32 || function >= 8 {
            return None;
        }
        Some(Bdf {
            segment,
            bus,
            device,
            function,
        })
    }

    /// Parses `SSSS:BB:DD.F` or `BB:DD.F` (hexadecimal fields, as `lspci` and Xen's `pci = [...]`
    /// write them).
    pub fn parse(text: &str) -> Option<Bdf> {
        let (rest, function) = text.rsplit_once('.')?;
        let mut fields = rest.rsplitn(3, ':');
        let device = hex_field(fields.next()?, 2)?;
        let bus = hex_field(fields.next()?, 2)?;
        let segment = match fields.next() {
            Some(s) => hex_field(s, 4)?,
            None => 0,
        };
        let function = hex_field(function, 1)?;
        Bdf::new(segment as u16, bus as u8, device as u8, function as u8)
    }

    /// The `bdf` argument of the PCI ops (`microvisor_abi::microvisor_op::pci_bdf`).
    pub const fn to_arg(self) -> u32 {
        pci_bdf(self.segment, self.bus, self.device, self.function)
    }

    /// The inverse of [`Bdf::to_arg`] (the bits above the segment are ignored).
    pub const fn from_arg(arg: u32) -> Bdf {
        Bdf {
            segment: (arg >> 16) as u16,
            bus: (arg >> 8) as u8,
            device: ((arg >> 3) & 0x1f) as u8,
            function: (arg & 7) as u8,
        }
    }
}

fn hex_field(text: &str, max_digits: usize) -> Option<u32> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

/// Whether a config access of `size` bytes at `offset` is one the microvisor accepts: 1, 2 or
/// 4 bytes, naturally aligned, inside the 4 KiB config space.
pub const fn access_ok(offset: u16, size: u8) -> bool {
    matches!(size, 1 | 2 | 4) && offset.is_multiple_of(size as u16) && offset < 4096
}

/// Configuration-space access for one segment's functions.
pub trait ConfigBackend {
    /// Reads `size` bytes at `offset` (see [`access_ok`]); `Err(-errno)`.
    fn read(&self, bdf: Bdf, offset: u16, size: u8) -> Result<u32, i64>;
    /// Writes `size` bytes at `offset`; `Err(-errno)`.
    fn write(&self, bdf: Bdf, offset: u16, size: u8, value: u32) -> Result<(), i64>;
}

/// The microvisor's `MVOP_PCI_CONFIG_READ`/`WRITE` as a [`ConfigBackend`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Microvisor;

#[cfg(not(test))]
impl ConfigBackend for Microvisor {
    fn read(&self, bdf: Bdf, offset: u16, size: u8) -> Result<u32, i64> {
        config_read(bdf, offset, size)
    }
    fn write(&self, bdf: Bdf, offset: u16, size: u8, value: u32) -> Result<(), i64> {
        config_write(bdf, offset, size, value)
    }
}

/// One function's configuration space through a [`ConfigBackend`] (by default the
/// microvisor's ops).
#[derive(Clone, Copy, Debug)]
pub struct ConfigSpace<B = Microvisor> {
    bdf: Bdf,
    backend: B,
}

impl<B> ConfigSpace<B> {
    pub const fn with_backend(bdf: Bdf, backend: B) -> Self {
        Self { bdf, backend }
    }

    pub fn bdf(&self) -> Bdf {
        self.bdf
    }
}

impl<B: ConfigBackend> ConfigSpace<B> {
    pub fn read8(&self, offset: u16) -> Result<u8, i64> {
        self.backend.read(self.bdf, offset, 1).map(|v| v as u8)
    }

    pub fn read16(&self, offset: u16) -> Result<u16, i64> {
        self.backend.read(self.bdf, offset, 2).map(|v| v as u16)
    }

    pub fn read32(&self, offset: u16) -> Result<u32, i64> {
        self.backend.read(self.bdf, offset, 4)
    }

    pub fn write8(&self, offset: u16, value: u8) -> Result<(), i64> {
        self.backend.write(self.bdf, offset, 1, value.into())
    }

    pub fn write16(&self, offset: u16, value: u16) -> Result<(), i64> {
        self.backend.write(self.bdf, offset, 2, value.into())
    }

    pub fn write32(&self, offset: u16, value: u32) -> Result<(), i64> {
        self.backend.write(self.bdf, offset, 4, value)
    }

    /// `(vendor, device)`.
    pub fn ids(&self) -> Result<(u16, u16), i64> {
        let word = self.read32(reg::VENDOR_ID)?;
        Ok((word as u16, (word >> 16) as u16))
    }

    pub fn command(&self) -> Result<u16, i64> {
        self.read16(reg::COMMAND)
    }

    /// Sets `bits` in the command register (a read-modify-write of the 16-bit register, so
    /// the status register's write-1-to-clear bits are not touched).
    pub fn enable(&self, bits: u16) -> Result<(), i64> {
        let command = self.command()?;
        self.write16(reg::COMMAND, command | bits)
    }

    /// The capability list: `(offset, id)` pairs, at most 48 (a looping list ends there).
    pub fn capabilities(&self) -> Capabilities<'_, B> {
        let first = match self.read16(reg::STATUS) {
            Ok(status) if status & reg::STATUS_CAPABILITIES != 0 => self
                .read8(reg::CAPABILITIES)
                .map(|p| u16::from(p & 0xfc))
                .unwrap_or(0),
            _ => 0,
        };
        Capabilities {
            space: self,
            next: first,
            left: 48,
        }
    }

    /// The offset of the first capability with `id`.
    pub fn find_capability(&self, id: u8) -> Option<u16> {
        self.capabilities()
            .find(|&(_, cap)| cap == id)
            .map(|(offset, _)| offset)
    }
}

impl ConfigSpace<Microvisor> {
    /// The function's config space through the microvisor's ops.
    pub const fn new(bdf: Bdf) -> Self {
        Self::with_backend(bdf, Microvisor)
    }
}

/// Iterator over a function's capabilities (see [`ConfigSpace::capabilities`]).
pub struct Capabilities<'a, B> {
    space: &'a ConfigSpace<B>,
    next: u16,
    left: u32,
}

impl<B: ConfigBackend> Iterator for Capabilities<'_, B> {
    type Item = (u16, u8);

    fn next(&mut self) -> Option<(u16, u8)> {
        if self.next < 0x40 || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let offset = self.next;
        let header = self.space.read16(offset).ok()?;
        self.next = (header >> 8) & 0xfc;
        Some((offset, header as u8))
    }
}

/// The register index (0..6) of a BAR at config offset `offset` (4-byte aligned), if any.
pub const fn bar_index(offset: u16) -> Option<usize> {
    if offset >= reg::BAR0 && offset < reg::BAR0 + 24 && offset.is_multiple_of(4) {
        Some(((offset - reg::BAR0) / 4) as usize)
    } else {
        None
    }
}

/// Emulates BAR sizing for one function: a driver writes all ones to a BAR register and
/// reads back the size mask. The microvisor ignores BAR writes and shows the real register,
/// so the mask is made up here from the BAR sizes [`list`] reported; a write of anything
/// else (the driver restoring the address) ends the sizing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BarSizing {
    latched: u8,
}

impl BarSizing {
    /// A driver wrote `value` to BAR register `index`.
    pub fn on_write(&mut self, index: usize, value: u32) {
        if index >= 6 {
            return;
        }
        if value == u32::MAX {
            self.latched |= 1 << index;
        } else {
            self.latched &= !(1 << index);
        }
    }

    /// Whether BAR register `index` reads as a size mask now.
    pub fn latched(&self, index: usize) -> bool {
        index < 6 && self.latched & (1 << index) != 0
    }

    /// What BAR register `index` reads as: the size mask while latched (with the type bits
    /// of `real`, the register's real value), else `real`.
    pub fn read(&self, bars: &[PciBarEntry; 6], index: usize, real: u32) -> u32 {
        if !self.latched(index) {
            return real;
        }
        size_mask(bars, index, real)
    }
}

/// The value a BAR register returns after all ones were written to it.
pub fn size_mask(bars: &[PciBarEntry; 6], index: usize, real: u32) -> u32 {
    let Some(bar) = bars.get(index) else { return 0 };
    let mask = |size: u64| !size.wrapping_sub(1);
    match bar.kind {
        _ if bar.kind != BAR_KIND_NONE && bar.size == 0 => 0,
        BAR_KIND_IO => (mask(bar.size) as u32 & !0x3) | (real & 0x3),
        BAR_KIND_MEM32 | BAR_KIND_MEM64 => (mask(bar.size) as u32 & !0xf) | (real & 0xf),
        _ => match index.checked_sub(1).map(|i| bars[i]) {
            Some(low) if low.kind == BAR_KIND_MEM64 && low.size != 0 => {
                (mask(low.size) >> 32) as u32
            }
            _ => 0,
        },
    }
}

/// Guest-physical ranges the runtime uses for its own mappings outside RAM (the grant
/// mapping window; the grant-table frames, `shared_info` and the builder's ring pages).
pub const RUNTIME_WINDOWS: [Range; 2] = [
    Range::new(0xc000_0000, 0xd000_0000),
    Range::new(0xfef0_0000, 0xff00_0000),
];

/// Whether `[base, base + size)` may be reached as MMIO: not empty, below 4 GiB (the
/// runtime's identity map), not RAM of the memory map and not one of the runtime's own
/// windows ([`RUNTIME_WINDOWS`]), so no Rust object and no page the runtime maps lives there.
pub fn mmio_range_ok(base: u64, size: u64, memmap: &[HvmMemmapEntry]) -> bool {
    let Some(end) = base.checked_add(size) else {
        return false;
    };
    if size == 0 || end > IDENTITY_MAP_END {
        return false;
    }
    let range = Range::new(base, end);
    let ram = memmap
        .iter()
        .filter(|e| e.kind == MEMMAP_TYPE_RAM)
        .any(|e| range.overlaps(&Range::new(e.addr, e.addr.saturating_add(e.size))));
    !ram && !RUNTIME_WINDOWS.iter().any(|w| range.overlaps(w))
}

/// One assigned function, as [`list`] reported it.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    pub bdf: Bdf,
    pub entry: PciFunctionEntry,
}

impl Function {
    pub fn from_entry(entry: PciFunctionEntry) -> Self {
        Function {
            bdf: Bdf::from_arg(entry.bdf),
            entry,
        }
    }

    pub fn vendor(&self) -> u16 {
        self.entry.vendor
    }

    pub fn device(&self) -> u16 {
        self.entry.device
    }

    /// MSI-X table entries (0: no MSI-X).
    pub fn msix_entries(&self) -> u32 {
        self.entry.msix_entries
    }

    /// BAR `index`, if present (kind not [`BAR_KIND_NONE`]).
    pub fn bar(&self, index: usize) -> Option<PciBarEntry> {
        self.entry
            .bars
            .get(index)
            .copied()
            .filter(|b| b.kind != BAR_KIND_NONE)
    }

    /// The function's config space through the microvisor.
    pub fn config(&self) -> ConfigSpace {
        ConfigSpace::new(self.bdf)
    }
}

#[cfg(not(test))]
pub use hw::*;

#[cfg(not(test))]
mod hw {
    use alloc::vec::Vec;

    use microvisor_abi::hypercall::MICROVISOR_OP;
    use microvisor_abi::microvisor_op::{
        MVOP_PCI_BIND_MSIX, MVOP_PCI_CONFIG_READ, MVOP_PCI_CONFIG_WRITE, MVOP_PCI_LIST,
    };

    use microvisor_abi::errno::EINVAL;

    use super::*;
    use crate::boot_info::BootInfo;
    use crate::events::Port;
    use crate::hypercall;

    /// The most functions [`list`] asks for.
    pub const MAX_FUNCTIONS: usize = 16;

    /// Memory BARs [`list`] checked and recorded (see [`mmio_registered`]).
    static MMIO_RANGES: spin::Mutex<heapless::Vec<Range, { MAX_FUNCTIONS * 6 }>> =
        spin::Mutex::new(heapless::Vec::new());

    fn result(ret: i64) -> Result<i64, i64> {
        if ret < 0 {
            Err(ret)
        } else {
            Ok(ret)
        }
    }

    /// `MVOP_PCI_LIST`: the functions assigned to this domain. Their memory BARs that pass
    /// [`mmio_range_ok`] are recorded for [`Function::mmio`] and the virtio HAL.
    pub fn list() -> Result<Vec<Function>, i64> {
        let mut entries = [PciFunctionEntry::default(); MAX_FUNCTIONS];
        // SAFETY: the microvisor writes at most MAX_FUNCTIONS 160-byte entries to the array,
        // which lives on this stack frame and is borrowed mutably here.
        let n = result(unsafe {
            hypercall::raw(
                MICROVISOR_OP,
                MVOP_PCI_LIST,
                entries.as_mut_ptr() as u64,
                MAX_FUNCTIONS as u64,
                0,
                0,
            )
        })?;
        let functions: Vec<Function> = entries
            .iter()
            .take((n as usize).min(MAX_FUNCTIONS))
            .map(|e| Function::from_entry(*e))
            .collect();
        let memmap = crate::boot::boot_info().map_or(&[][..], |info| info.memmap);
        let mut ranges = MMIO_RANGES.lock();
        for function in &functions {
            for bar in function.entry.bars.iter() {
                if !matches!(bar.kind, BAR_KIND_MEM32 | BAR_KIND_MEM64)
                    || !mmio_range_ok(bar.base, bar.size, memmap)
                {
                    continue;
                }
                let range = Range::new(bar.base, bar.base + bar.size);
                if !ranges.contains(&range) {
                    let _ = ranges.push(range);
                }
            }
        }
        Ok(functions)
    }

    /// Whether `[addr, addr + len)` lies inside one memory BAR recorded by [`list`].
    pub fn mmio_registered(addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        MMIO_RANGES
            .lock()
            .iter()
            .any(|r| r.start <= addr && end <= r.end)
    }

    /// `MVOP_PCI_CONFIG_READ`: `size` (1, 2, 4) bytes at `offset`. An access the microvisor
    /// would refuse ([`access_ok`]) gives `-EINVAL` without a hypercall.
    pub fn config_read(bdf: Bdf, offset: u16, size: u8) -> Result<u32, i64> {
        if !access_ok(offset, size) {
            return Err(EINVAL);
        }
        // SAFETY: no pointer argument.
        let ret = unsafe {
            hypercall::raw(
                MICROVISOR_OP,
                MVOP_PCI_CONFIG_READ,
                u64::from(bdf.to_arg()),
                u64::from(offset),
                u64::from(size),
                0,
            )
        };
        result(ret).map(|v| v as u32)
    }

    /// `MVOP_PCI_CONFIG_WRITE` through the microvisor's filter (see the module
    /// documentation).
    pub fn config_write(bdf: Bdf, offset: u16, size: u8, value: u32) -> Result<(), i64> {
        if !access_ok(offset, size) {
            return Err(EINVAL);
        }
        // SAFETY: no pointer argument. A config write alone makes the device reach no memory:
        // DMA needs addresses programmed through its BARs, which only `Mmio`'s unsafe writes
        // do.
        let ret = unsafe {
            hypercall::raw(
                MICROVISOR_OP,
                MVOP_PCI_CONFIG_WRITE,
                u64::from(bdf.to_arg()),
                u64::from(offset),
                u64::from(size),
                u64::from(value),
            )
        };
        result(ret).map(|_| ())
    }

    /// `MVOP_PCI_BIND_MSIX`: MSI-X table entry `entry` of `bdf` raises `port` (a port of this
    /// domain) whenever the device signals it; enables MSI-X on the function. `-EINVAL` for
    /// an entry beyond the table or a bad port, `-ENOSPC` when the microvisor is out of host
    /// vectors.
    pub fn bind_msix(bdf: Bdf, entry: u32, port: Port) -> Result<(), i64> {
        // SAFETY: no pointer argument.
        let ret = unsafe {
            hypercall::raw(
                MICROVISOR_OP,
                MVOP_PCI_BIND_MSIX,
                u64::from(bdf.to_arg()),
                u64::from(entry),
                u64::from(port.0),
                0,
            )
        };
        result(ret).map(|_| ())
    }

    impl Function {
        /// An accessor for memory BAR `index`, if [`list`] recorded it.
        pub fn mmio(&self, index: usize) -> Option<Mmio> {
            let bar = self.bar(index)?;
            if !matches!(bar.kind, BAR_KIND_MEM32 | BAR_KIND_MEM64)
                || !mmio_registered(bar.base, bar.size)
            {
                return None;
            }
            Some(Mmio {
                base: bar.base,
                len: bar.size,
            })
        }
    }

    /// Volatile access to a range of a memory BAR of an assigned function (identity-mapped,
    /// outside RAM). Accesses must be naturally aligned and inside the range (checked: a bad
    /// offset panics). Reads are safe (a register read may have device side effects, such as
    /// clearing an interrupt status, but touches no memory of the domain); writes are
    /// `unsafe`, as they can program the device to DMA into memory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Mmio {
        base: u64,
        len: u64,
    }

    impl Mmio {
        /// Guest-physical (= host-physical = bus) address of the range.
        pub fn base(&self) -> u64 {
            self.base
        }

        pub fn len(&self) -> u64 {
            self.len
        }

        pub fn is_empty(&self) -> bool {
            self.len == 0
        }

        /// The part `[offset, offset + len)` of this range.
        pub fn sub(&self, offset: u64, len: u64) -> Option<Mmio> {
            let end = offset.checked_add(len)?;
            (end <= self.len).then_some(Mmio {
                base: self.base + offset,
                len,
            })
        }

        fn ptr<T>(&self, offset: u64) -> *mut T {
            let size = core::mem::size_of::<T>() as u64;
            assert!(
                offset.checked_add(size).is_some_and(|end| end <= self.len)
                    && (self.base + offset).is_multiple_of(size),
                "mmio access of {size} bytes at {offset:#x} outside [{:#x}; {:#x})",
                self.base,
                self.len
            );
            core::ptr::with_exposed_provenance_mut::<T>((self.base + offset) as usize)
        }

        fn read<T: Copy>(&self, offset: u64) -> T {
            let ptr = self.ptr::<T>(offset);
            // SAFETY: `ptr` is aligned and inside a memory BAR `list` recorded: below 4 GiB
            // (identity-mapped), outside RAM and the runtime's windows (`mmio_range_ok`), so
            // no Rust object lives there; the microvisor maps it at GPA = HPA for this owner.
            unsafe { ptr.read_volatile() }
        }

        /// # Safety
        /// The write must not make the device write to (DMA into) memory where a Rust object
        /// lives that is read or borrowed while the device may write it.
        unsafe fn write<T: Copy>(&self, offset: u64, value: T) {
            let ptr = self.ptr::<T>(offset);
            // SAFETY: as in `read` for the address; what the device does with the value is
            // the caller's responsibility.
            unsafe { ptr.write_volatile(value) }
        }

        pub fn read_u8(&self, offset: u64) -> u8 {
            self.read(offset)
        }

        pub fn read_u16(&self, offset: u64) -> u16 {
            self.read(offset)
        }

        pub fn read_u32(&self, offset: u64) -> u32 {
            self.read(offset)
        }

        pub fn read_u64(&self, offset: u64) -> u64 {
            self.read(offset)
        }

        /// # Safety
        /// See [`Mmio`]: the write must not make the device DMA into live Rust objects.
        pub unsafe fn write_u8(&self, offset: u64, value: u8) {
            // SAFETY: passed on from the caller.
            unsafe { self.write(offset, value) }
        }

        /// # Safety
        /// As for [`Mmio::write_u8`].
        pub unsafe fn write_u16(&self, offset: u64, value: u16) {
            // SAFETY: passed on from the caller.
            unsafe { self.write(offset, value) }
        }

        /// # Safety
        /// As for [`Mmio::write_u8`].
        pub unsafe fn write_u32(&self, offset: u64, value: u32) {
            // SAFETY: passed on from the caller.
            unsafe { self.write(offset, value) }
        }

        /// # Safety
        /// As for [`Mmio::write_u8`].
        pub unsafe fn write_u64(&self, offset: u64, value: u64) {
            // SAFETY: passed on from the caller.
            unsafe { self.write(offset, value) }
        }
    }

    /// Hostile, for test domains (`pci-snoop`): one 4-byte read of guest-physical `addr`
    /// (any alignment). Refuses the runtime's own memory (image or heap). An address the
    /// microvisor does not map in this domain (another domain's BAR) ends the domain.
    pub fn read_u32_phys(info: &BootInfo, addr: u64) -> Result<u32, crate::testing::Refused> {
        if info.layout.is_runtime_owned(addr) || info.layout.is_runtime_owned(addr.wrapping_add(3))
        {
            return Err(crate::testing::Refused::RuntimeMemory(addr));
        }
        let value: u32;
        // SAFETY: a plain load through inline assembly, outside the image and the heap (so it
        // reads no Rust object the compiler reasons about); a fault is the point of the test
        // and is reported by the exception handler or ends the domain in the microvisor.
        unsafe {
            core::arch::asm!(
                "mov {value:e}, dword ptr [{addr}]",
                addr = in(reg) addr,
                value = out(reg) value,
                options(nostack, preserves_flags, readonly)
            )
        };
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_parses_full_and_short_forms() {
        assert_eq!(
            Bdf::parse("0000:00:03.0"),
            Some(Bdf {
                segment: 0,
                bus: 0,
                device: 3,
                function: 0
            })
        );
        assert_eq!(Bdf::parse("00:1f.7"), Bdf::new(0, 0, 0x1f, 7));
        assert_eq!(Bdf::parse("0001:ff:1f.7"), Bdf::new(1, 0xff, 0x1f, 7));
        assert_eq!(Bdf::parse("0000:0A:0b.1"), Bdf::new(0, 10, 11, 1));
        for bad in [
            "",
            "00:20.0",
            "00:03.8",
            "0000:00:03",
            "10000:00:03.0",
            "0000:100:03.0",
            "0000:00:003.0",
            "zz:00.0",
            "0000:00:03.",
            "0:0:0:0.0",
            "00:03.0 ",
            "00:+3.0",
        ] {
            assert_eq!(Bdf::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bdf_argument_encoding_round_trips() {
        let bdf = Bdf::new(2, 0x12, 0x1d, 5).unwrap();
        assert_eq!(bdf.to_arg(), 2 << 16 | 0x12 << 8 | 0x1d << 3 | 5);
        assert_eq!(bdf.to_arg(), pci_bdf(2, 0x12, 0x1d, 5));
        assert_eq!(Bdf::from_arg(bdf.to_arg()), bdf);
        assert_eq!(Bdf::parse("0000:00:03.0").unwrap().to_arg(), 0x18);
        assert_eq!(std::format!("{bdf}"), "0002:12:1d.5");
        assert_eq!(Bdf::parse(&std::format!("{bdf}")), Some(bdf));
    }

    #[test]
    fn config_access_rules() {
        assert!(access_ok(0, 4));
        assert!(access_ok(0x3, 1));
        assert!(access_ok(0xffe, 2));
        assert!(access_ok(0xffc, 4));
        assert!(!access_ok(0x2, 4));
        assert!(!access_ok(0x1, 2));
        assert!(!access_ok(0x1000, 1));
        assert!(!access_ok(0, 3));
        assert!(!access_ok(0, 8));
        assert!(!access_ok(0, 0));
    }

    fn bars() -> [PciBarEntry; 6] {
        let mut bars = [PciBarEntry::default(); 6];
        bars[0] = PciBarEntry {
            base: 0xc000,
            size: 0x40,
            kind: BAR_KIND_IO,
            flags: 0,
        };
        bars[1] = PciBarEntry {
            base: 0xe000_1000,
            size: 0x1000,
            kind: BAR_KIND_MEM32,
            flags: 0,
        };
        bars[4] = PciBarEntry {
            base: 0xe000_4000,
            size: 0x4000,
            kind: BAR_KIND_MEM64,
            flags: 1,
        };
        bars
    }

    #[test]
    fn bar_sizing_answers_from_the_reported_sizes() {
        let bars = bars();
        let mut sizing = BarSizing::default();
        assert_eq!(sizing.read(&bars, 1, 0xe000_1000), 0xe000_1000);
        sizing.on_write(1, u32::MAX);
        assert!(sizing.latched(1));
        assert_eq!(sizing.read(&bars, 1, 0xe000_1000), 0xffff_f000);
        sizing.on_write(1, 0xe000_1000);
        assert_eq!(sizing.read(&bars, 1, 0xe000_1000), 0xe000_1000);

        sizing.on_write(0, u32::MAX);
        assert_eq!(sizing.read(&bars, 0, 0xc001), 0xffff_ffc1);

        sizing.on_write(4, u32::MAX);
        sizing.on_write(5, u32::MAX);
        assert_eq!(sizing.read(&bars, 4, 0xe000_400c), 0xffff_c00c);
        assert_eq!(sizing.read(&bars, 5, 0), 0xffff_ffff);

        // Absent BARs read as 0 while sizing.
        sizing.on_write(2, u32::MAX);
        assert_eq!(sizing.read(&bars, 2, 0), 0);
        sizing.on_write(9, u32::MAX);
        assert!(!sizing.latched(9));
    }

    #[test]
    fn large_64_bit_bar_mask_has_an_upper_half() {
        let mut bars = [PciBarEntry::default(); 6];
        bars[2] = PciBarEntry {
            base: 0x1_0000_0000,
            size: 0x2_0000_0000,
            kind: BAR_KIND_MEM64,
            flags: 0,
        };
        assert_eq!(size_mask(&bars, 2, 0xc), 0xc);
        assert_eq!(size_mask(&bars, 3, 0), 0xffff_fffe);
    }

    #[test]
    fn bar_register_offsets() {
        assert_eq!(bar_index(0x10), Some(0));
        assert_eq!(bar_index(0x24), Some(5));
        assert_eq!(bar_index(0x28), None);
        assert_eq!(bar_index(0x12), None);
        assert_eq!(bar_index(0x0c), None);
    }

    #[test]
    fn mmio_ranges_avoid_ram_and_runtime_windows() {
        let ram = |addr, size| HvmMemmapEntry {
            addr,
            size,
            kind: MEMMAP_TYPE_RAM,
            reserved: 0,
        };
        let map = [ram(0, 0xa0000), ram(0x10_0000, 0x1ff0_0000)];
        assert!(mmio_range_ok(0xe000_0000, 0x4000, &map));
        assert!(!mmio_range_ok(0x1000_0000, 0x1000, &map));
        assert!(!mmio_range_ok(0xc000_0000, 0x1000, &map));
        assert!(!mmio_range_ok(0xfeff_0000, 0x1000, &map));
        assert!(!mmio_range_ok(0xffff_f000, 0x2000, &map));
        assert!(!mmio_range_ok(0xe000_0000, 0, &map));
        assert!(!mmio_range_ok(u64::MAX, 2, &map));
    }

    struct Fake {
        bdf: Bdf,
        space: std::cell::RefCell<[u8; 256]>,
    }

    impl ConfigBackend for Fake {
        fn read(&self, bdf: Bdf, offset: u16, size: u8) -> Result<u32, i64> {
            if bdf != self.bdf {
                return Err(ENODEV);
            }
            let space = self.space.borrow();
            let mut value = 0u32;
            for i in 0..u16::from(size) {
                value |= u32::from(space[usize::from(offset + i)]) << (8 * i);
            }
            Ok(value)
        }
        fn write(&self, bdf: Bdf, offset: u16, size: u8, value: u32) -> Result<(), i64> {
            if bdf != self.bdf {
                return Err(ENODEV);
            }
            let mut space = self.space.borrow_mut();
            for i in 0..u16::from(size) {
                space[usize::from(offset + i)] = (value >> (8 * i)) as u8;
            }
            Ok(())
        }
    }

    #[test]
    fn capability_walk_and_command_bits() {
        let bdf = Bdf::new(0, 0, 3, 0).unwrap();
        let mut space = [0u8; 256];
        space[0..4].copy_from_slice(&[0xf4, 0x1a, 0x42, 0x10]);
        space[6] = reg::STATUS_CAPABILITIES as u8;
        space[0x34] = 0x98;
        space[0x98] = reg::CAP_MSIX;
        space[0x99] = 0x84;
        space[0x84] = reg::CAP_VENDOR;
        space[0x85] = 0x70;
        space[0x70] = reg::CAP_VENDOR;
        space[0x71] = 0x70; // a loop: the walk must still end
        let fake = Fake {
            bdf,
            space: std::cell::RefCell::new(space),
        };
        let config = ConfigSpace::with_backend(bdf, fake);
        assert_eq!(config.ids(), Ok((0x1af4, 0x1042)));
        let caps: std::vec::Vec<_> = config.capabilities().take(5).collect();
        assert_eq!(
            caps,
            [
                (0x98, reg::CAP_MSIX),
                (0x84, reg::CAP_VENDOR),
                (0x70, reg::CAP_VENDOR),
                (0x70, reg::CAP_VENDOR),
                (0x70, reg::CAP_VENDOR)
            ]
        );
        assert_eq!(config.capabilities().count(), 48);
        assert_eq!(config.find_capability(reg::CAP_VENDOR), Some(0x84));
        assert_eq!(config.find_capability(0x05), None);
        config
            .enable(reg::COMMAND_MEMORY | reg::COMMAND_BUS_MASTER)
            .unwrap();
        assert_eq!(config.command(), Ok(0x6));
        assert_eq!(config.read8(6), Ok(reg::STATUS_CAPABILITIES as u8));

        let other = ConfigSpace::with_backend(
            Bdf::new(0, 0, 4, 0).unwrap(),
            Fake {
                bdf,
                space: std::cell::RefCell::new([0; 256]),
            },
        );
        assert_eq!(other.ids(), Err(ENODEV));
        assert_eq!(other.capabilities().count(), 0);
    }
}
