//! PCI passthrough: the functions found at boot (ECAM), which domain owns which, the
//! owner's mediated config-space access, its BARs in its nested page table, and MSI-X
//! interrupts turned into events. Policy (enumeration, BAR placement, the config-write
//! filter, MSI-X encodings) is `microvisor-core::pci`; this module does the MMIO.
//!
//! Every function is found at boot with bus mastering switched off. Memory BARs of the
//! functions the manifest assigns are placed in [`BAR_WINDOW`] (below 4 GiB, page-granular,
//! so no two owners share a page). A function is visible only to its owner: anyone else gets
//! `-ENODEV`. The MSI-X table and PBA pages are never mapped into the owner: the microvisor
//! programs them.

use core::sync::atomic::{AtomicU64, Ordering};

use heapless::Vec;
use microvisor_abi::errno::{EINVAL, ENODEV, ENOSPC};
use microvisor_abi::manifest::PciAddress;
use microvisor_core::pci::{
    self, Bdf, ConfigFilter, ConfigSpace, Function, MsixTableEntry, MAX_FUNCTIONS,
};
use spin::Mutex;

use crate::mem;

/// Where assigned functions' memory BARs are placed (inside q35's 32-bit PCI window,
/// clear of the ECAM range and of the runtime's grant-mapping window).
pub const BAR_WINDOW: core::ops::Range<u64> = 0xe000_0000..0xf000_0000;
/// Host vectors for device interrupts: DEVICE_VECTOR_BASE + 0..15; the last one of the 16
/// stubs, [`IOMMU_FAULT_VECTOR`], is the IOMMU's fault event.
pub const DEVICE_VECTOR_BASE: u8 = 0x30;
const DEVICE_VECTORS: usize = 15;
pub const IOMMU_FAULT_VECTOR: u8 = DEVICE_VECTOR_BASE + 15;

struct Ecam {
    base: u64,
}

impl Ecam {
    fn ptr<T>(&self, bdf: Bdf, offset: u16) -> *mut T {
        mem::phys_ptr::<T>(self.base + bdf.ecam_offset() + u64::from(offset & 0xfff))
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        // SAFETY: ECAM is the MMIO window the MCFG names (identity-mapped below 4 GiB); the
        // offset is inside the function's 4 KiB, aligned by the caller's protocol.
        unsafe { core::ptr::read_volatile(self.ptr::<u32>(bdf, offset & !3)) }
    }
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        // SAFETY: as for read32; the value was chosen or filtered by the microvisor.
        unsafe { core::ptr::write_volatile(self.ptr::<u32>(bdf, offset & !3), value) }
    }
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        // SAFETY: as for read32, a naturally aligned 16-bit access.
        unsafe { core::ptr::write_volatile(self.ptr::<u16>(bdf, offset & !1), value) }
    }
    fn write8(&mut self, bdf: Bdf, offset: u16, value: u8) {
        // SAFETY: as for read32, a byte access.
        unsafe { core::ptr::write_volatile(self.ptr::<u8>(bdf, offset), value) }
    }
}

struct Assigned {
    function: Function,
    /// Table slot of the owning domain.
    owner: Option<usize>,
}

struct Pci {
    ecam: Ecam,
    functions: Vec<Assigned, MAX_FUNCTIONS>,
}

static PCI: Mutex<Option<Pci>> = Mutex::new(None);
/// Which (slot, port) each device vector raises.
/// Host vector `DEVICE_VECTOR_BASE + i` raises (owner slot, port); it was bound for (function,
/// MSI-X entry).
static VECTOR_TARGETS: Mutex<[Option<(usize, u32, Bdf, u16)>; DEVICE_VECTORS]> =
    Mutex::new([None; DEVICE_VECTORS]);
/// Device vectors that fired and were not yet turned into events (bit i = vector base + i).
#[no_mangle]
static DEVICE_IRQ_PENDING: AtomicU64 = AtomicU64::new(0);

pub fn bdf_of(address: &PciAddress) -> Bdf {
    Bdf {
        segment: address.segment,
        bus: address.bus,
        device: address.device,
        function: address.function,
    }
}

fn bdf_from_arg(arg: u64) -> Option<Bdf> {
    let arg = u32::try_from(arg).ok()?;
    Bdf::new(
        (arg >> 16) as u16,
        (arg >> 8) as u8,
        ((arg >> 3) & 0x1f) as u8,
        (arg & 7) as u8,
    )
}

/// Enumerate bus 0..=`last_bus` of the ECAM at `ecam_base`, switch off bus mastering
/// everywhere, and place the memory BARs of every function in `assigned` in [`BAR_WINDOW`].
pub fn init(ecam_base: u64, last_bus: u8, assigned: &[PciAddress]) {
    let mut ecam = Ecam { base: ecam_base };
    let found = pci::enumerate(&mut ecam, 0, 0..=last_bus);
    let mut functions: Vec<Assigned, MAX_FUNCTIONS> = Vec::new();
    for function in found {
        let command = ecam.read16(function.bdf, pci::COMMAND);
        ecam.write16(
            function.bdf,
            pci::COMMAND,
            command & !pci::COMMAND_BUS_MASTER,
        );
        let _ = functions.push(Assigned {
            function,
            owner: None,
        });
    }
    let mut to_place: Vec<Function, MAX_FUNCTIONS> = functions
        .iter()
        .filter(|a| {
            a.function.is_endpoint() && assigned.iter().any(|p| bdf_of(p) == a.function.bdf)
        })
        .map(|a| a.function)
        .collect();
    match pci::place_bars(&mut to_place, BAR_WINDOW) {
        Ok(()) => {
            for placed in &to_place {
                pci::program_bars(&mut ecam, placed);
                if let Some(entry) = functions.iter_mut().find(|a| a.function.bdf == placed.bdf) {
                    entry.function.bars = placed.bars;
                }
            }
        }
        Err(e) => crate::log!("pci: cannot place the BARs of assigned functions: {e:?}"),
    }
    crate::log!("pci: {} functions on buses 0..={last_bus}", functions.len());
    *PCI.lock() = Some(Pci { ecam, functions });
}

/// The I/O-port BARs of the functions in `wanted` (opened in the owner's I/O permission map).
pub fn io_ranges(wanted: &[PciAddress]) -> Vec<microvisor_abi::manifest::IoPortRange, 16> {
    let mut ranges = Vec::new();
    let guard = PCI.lock();
    let Some(pci_state) = guard.as_ref() else {
        return ranges;
    };
    for address in wanted {
        let Some(entry) = pci_state
            .functions
            .iter()
            .find(|a| a.function.bdf == bdf_of(address))
        else {
            continue;
        };
        for bar in entry
            .function
            .bars
            .iter()
            .filter(|b| b.kind == pci::BarKind::Io && b.size > 0)
        {
            let last = bar.base.saturating_add(bar.size - 1).min(0xffff);
            if bar.base <= 0xffff {
                let _ = ranges.push(microvisor_abi::manifest::IoPortRange {
                    first: bar.base as u16,
                    last: last as u16,
                });
            }
        }
    }
    ranges
}

#[derive(Debug)]
pub enum AssignError {
    NoSuchFunction(Bdf),
    AlreadyOwned(Bdf),
    NoIommu,
    OutOfMemory,
    NotAssignable(Bdf),
}

impl core::fmt::Display for AssignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchFunction(bdf) => write!(f, "pci {bdf} does not exist on this machine"),
            Self::AlreadyOwned(bdf) => write!(f, "pci {bdf} already belongs to another domain"),
            Self::NoIommu => write!(f, "PCI passthrough needs an IOMMU and none is active"),
            Self::OutOfMemory => write!(f, "out of memory for the DMA page table"),
            Self::NotAssignable(bdf) => write!(
                f,
                "pci {bdf} is a bridge or the IOMMU and cannot be passed through"
            ),
        }
    }
}

/// Give the functions `wanted` to the domain in `slot`: map their memory BARs (minus the
/// MSI-X pages) into its nested page table and attach them to its DMA page table.
/// Returns the DMA table's root (to free at teardown).
pub fn assign(
    slot: usize,
    wanted: &[PciAddress],
    npt: &mut crate::npt::NestedPageTable,
    ram_bytes: u64,
) -> Result<Option<u64>, AssignError> {
    if wanted.is_empty() {
        return Ok(None);
    }
    if !crate::iommu::enabled() {
        return Err(AssignError::NoIommu);
    }
    let mut guard = PCI.lock();
    let pci_state = guard
        .as_mut()
        .ok_or(AssignError::NoSuchFunction(bdf_of(&wanted[0])))?;
    for address in wanted {
        let bdf = bdf_of(address);
        let entry = pci_state
            .functions
            .iter()
            .find(|a| a.function.bdf == bdf)
            .ok_or(AssignError::NoSuchFunction(bdf))?;
        if entry.owner.is_some_and(|o| o != slot) {
            return Err(AssignError::AlreadyOwned(bdf));
        }
        // The IOMMU itself (class 08.06) stays the microvisor's.
        if entry.function.class >> 8 == 0x0806 || !entry.function.is_endpoint() {
            return Err(AssignError::NotAssignable(bdf));
        }
    }
    let table =
        crate::iommu::build_domain_table(npt.view(), ram_bytes).ok_or(AssignError::OutOfMemory)?;
    for address in wanted {
        let bdf = bdf_of(address);
        let entry = pci_state
            .functions
            .iter_mut()
            .find(|a| a.function.bdf == bdf)
            .expect("checked above");
        entry.owner = Some(slot);
        let function = &entry.function;
        let msix_pages = function
            .msix
            .map(|m| (m.table_range(&function.bars), m.pba_range(&function.bars)));
        for bar in function.bars.iter().filter(|b| b.is_memory()) {
            let Some(range) = bar.range() else { continue };
            let mut page = range.start & !(mem::PAGE_SIZE - 1);
            while page < range.end {
                let hidden = msix_pages.as_ref().is_some_and(|(table, pba)| {
                    [table, pba]
                        .into_iter()
                        .flatten()
                        .any(|r| page < r.end && r.start < page + mem::PAGE_SIZE)
                });
                if !hidden && npt.map_mmio(page, page).is_err() {
                    return Err(AssignError::OutOfMemory);
                }
                page += mem::PAGE_SIZE;
            }
        }
        crate::iommu::attach(bdf, table, (slot + 1) as u16)
            .map_err(|_| AssignError::OutOfMemory)?;
        crate::log!("pci {bdf} ({:04x}:{:04x}) assigned to domain slot {slot}; its DMA is confined to that domain", function.vendor, function.device);
    }
    Ok(Some(table))
}

/// Take every function back from the domain in `slot` (it no longer runs): detach it
/// from the IOMMU, switch off bus mastering and MSI-X, forget its interrupt vectors.
pub fn release(slot: usize) {
    let mut guard = PCI.lock();
    let Some(pci_state) = guard.as_mut() else {
        return;
    };
    for entry in pci_state
        .functions
        .iter_mut()
        .filter(|a| a.owner == Some(slot))
    {
        let bdf = entry.function.bdf;
        crate::iommu::detach(bdf, (slot + 1) as u16);
        let command = pci_state.ecam.read16(bdf, pci::COMMAND);
        pci_state
            .ecam
            .write16(bdf, pci::COMMAND, command & !pci::COMMAND_BUS_MASTER);
        if let Some(msix) = entry.function.msix {
            let control = pci_state.ecam.read16(bdf, msix.control_offset());
            pci_state
                .ecam
                .write16(bdf, msix.control_offset(), control & !(1 << 15));
        }
        entry.owner = None;
    }
    let mut targets = VECTOR_TARGETS.lock();
    for (index, target) in targets.iter_mut().enumerate() {
        if target.is_some_and(|(s, _, _, _)| s == slot) {
            *target = None;
            crate::iommu::unmap_interrupt(index as u16);
        }
    }
}

/// The name of the domain owning `bdf` (for fault reports).
pub fn owner_name(bdf: Bdf) -> heapless::String<32> {
    let owner = PCI.lock().as_ref().and_then(|p| {
        p.functions
            .iter()
            .find(|a| a.function.bdf.bus == bdf.bus && a.function.bdf.devfn() == bdf.devfn())
            .and_then(|a| a.owner)
    });
    match owner {
        Some(slot) => crate::domain::name_of(slot),
        None => heapless::String::try_from("none").unwrap_or_default(),
    }
}

/// `MVOP_PCI_LIST`: the caller's functions, as 160-byte entries.
pub fn list(
    slot: usize,
    out: &mut [[u8; microvisor_abi::microvisor_op::PCI_FUNCTION_ENTRY_SIZE]],
) -> usize {
    let guard = PCI.lock();
    let Some(pci_state) = guard.as_ref() else {
        return 0;
    };
    let mut n = 0;
    for entry in pci_state.functions.iter().filter(|a| a.owner == Some(slot)) {
        let Some(bytes) = out.get_mut(n) else { break };
        let f = &entry.function;
        let bdf = microvisor_abi::microvisor_op::pci_bdf(
            f.bdf.segment,
            f.bdf.bus,
            f.bdf.device,
            f.bdf.function,
        );
        bytes.fill(0);
        bytes[0..4].copy_from_slice(&bdf.to_le_bytes());
        bytes[4..6].copy_from_slice(&f.vendor.to_le_bytes());
        bytes[6..8].copy_from_slice(&f.device.to_le_bytes());
        bytes[8..12].copy_from_slice(&f.class.to_le_bytes());
        bytes[12..16].copy_from_slice(
            &f.msix
                .map_or(0u32, |m| u32::from(m.table_size))
                .to_le_bytes(),
        );
        for (i, bar) in f.bars.iter().enumerate() {
            let at = 16 + i * 24;
            let kind: u32 = match bar.kind {
                pci::BarKind::None => 0,
                pci::BarKind::Io => 1,
                pci::BarKind::Mem32 => 2,
                pci::BarKind::Mem64 => 3,
            };
            bytes[at..at + 8].copy_from_slice(&bar.base.to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&bar.size.to_le_bytes());
            bytes[at + 16..at + 20].copy_from_slice(&kind.to_le_bytes());
            bytes[at + 20..at + 24].copy_from_slice(&u32::from(bar.prefetchable).to_le_bytes());
        }
        n += 1;
    }
    n
}

fn check_access(offset: u64, size: u64) -> Result<(u16, u8), i64> {
    if !matches!(size, 1 | 2 | 4) || !offset.is_multiple_of(size) || offset >= 4096 {
        return Err(EINVAL);
    }
    Ok((offset as u16, size as u8))
}

/// `MVOP_PCI_CONFIG_READ`.
pub fn config_read(slot: usize, bdf: u64, offset: u64, size: u64) -> Result<i64, i64> {
    let bdf = bdf_from_arg(bdf).ok_or(ENODEV)?;
    let (offset, size) = check_access(offset, size)?;
    let guard = PCI.lock();
    let pci_state = guard.as_ref().ok_or(ENODEV)?;
    if !pci_state
        .functions
        .iter()
        .any(|a| a.function.bdf == bdf && a.owner == Some(slot))
    {
        return Err(ENODEV);
    }
    let dword = pci_state.ecam.read32(bdf, offset & !3);
    let value = dword >> ((offset & 3) * 8);
    Ok(i64::from(match size {
        1 => value & 0xff,
        2 => value & 0xffff,
        _ => value,
    }))
}

/// `MVOP_PCI_CONFIG_WRITE`, through the owner's filter.
pub fn config_write(slot: usize, bdf: u64, offset: u64, size: u64, value: u64) -> Result<i64, i64> {
    let bdf = bdf_from_arg(bdf).ok_or(ENODEV)?;
    let (offset, size) = check_access(offset, size)?;
    let mut guard = PCI.lock();
    let pci_state = guard.as_mut().ok_or(ENODEV)?;
    let entry = pci_state
        .functions
        .iter()
        .find(|a| a.function.bdf == bdf && a.owner == Some(slot))
        .ok_or(ENODEV)?;
    let filter = ConfigFilter::new(&entry.function);
    // Memory decoding stays on: the BARs are the microvisor's and stay mapped into the owner,
    // and switching decoding off under a mapped BAR crashes QEMU 7.2's emulation on the next
    // access (seen with virtio-blk-pci). Bus mastering and INTx disable remain the owner's.
    let mut value = value as u32;
    let command_lo = u32::from(pci::COMMAND);
    if u32::from(offset) <= command_lo && command_lo < u32::from(offset) + u32::from(size) {
        value |= u32::from(pci::COMMAND_MEMORY) << ((command_lo - u32::from(offset)) * 8);
    }
    pci::filtered_write(&mut pci_state.ecam, bdf, &filter, offset, size, value);
    Ok(0)
}

/// `MVOP_PCI_BIND_MSIX`: program table entry `index` to a host vector that raises `port`.
pub fn bind_msix(slot: usize, bdf: u64, index: u64, port: u64) -> Result<i64, i64> {
    let bdf = bdf_from_arg(bdf).ok_or(ENODEV)?;
    let port = u32::try_from(port).map_err(|_| EINVAL)?;
    if crate::events::EVENTS[slot]
        .lock()
        .ports
        .state(port)
        .is_none()
    {
        return Err(EINVAL);
    }
    let mut guard = PCI.lock();
    let pci_state = guard.as_mut().ok_or(ENODEV)?;
    let entry = pci_state
        .functions
        .iter()
        .find(|a| a.function.bdf == bdf && a.owner == Some(slot))
        .ok_or(ENODEV)?;
    let msix = entry.function.msix.ok_or(EINVAL)?;
    if index >= u64::from(msix.table_size) {
        return Err(EINVAL);
    }
    let table = msix.table_range(&entry.function.bars).ok_or(EINVAL)?;
    // Binding an entry again reuses its vector (the pool is host-wide and small).
    let (vector_index, previous) = {
        let mut targets = VECTOR_TARGETS.lock();
        let same_entry = |t: &Option<(usize, u32, Bdf, u16)>| {
            t.is_some_and(|(s, _, b, i)| s == slot && b == bdf && u64::from(i) == index)
        };
        let free = targets
            .iter()
            .position(same_entry)
            .or_else(|| targets.iter().position(Option::is_none))
            .ok_or(ENOSPC)?;
        let previous = targets[free];
        targets[free] = Some((slot, port, bdf, index as u16));
        (free, previous)
    };
    let vector = DEVICE_VECTOR_BASE + vector_index as u8;
    let dest = crate::smp::apic_id_of(0);
    let free_vector = || VECTOR_TARGETS.lock()[vector_index] = previous;
    let entry_pa = table.start + index * pci::MSIX_ENTRY_BYTES;
    if entry_pa + pci::MSIX_ENTRY_BYTES > mem::MAX_PHYS {
        free_vector();
        return Err(EINVAL);
    }
    // With interrupt remapping the entry names remapping-table entry `vector_index`
    // (remappable format, data 0), which only this function's requester ID may use;
    // without it, the vector itself (compatibility format).
    let words = match crate::iommu::map_interrupt(vector_index as u16, dest, vector, bdf) {
        Some(Ok(address)) => MsixTableEntry {
            address_lo: address,
            address_hi: 0,
            data: 0,
            vector_control: 0,
        }
        .encode(),
        Some(Err(why)) => {
            crate::log!("pci {bdf}: cannot remap its interrupt: {why}");
            free_vector();
            return Err(ENOSPC);
        }
        None => match MsixTableEntry::fixed(dest as u8, vector, false) {
            Some(entry) => entry.encode(),
            None => {
                free_vector();
                return Err(EINVAL);
            }
        },
    };
    for (i, word) in words.iter().enumerate() {
        // SAFETY: the MSI-X table lies in a BAR the microvisor placed below 4 GiB
        // (identity-mapped) and never maps into the owner; the entry index was checked
        // against the table size.
        unsafe { core::ptr::write_volatile(mem::phys_ptr::<u32>(entry_pa + i as u64 * 4), *word) };
    }
    let control = pci_state.ecam.read16(bdf, msix.control_offset());
    pci_state
        .ecam
        .write16(bdf, msix.control_offset(), (control | 1 << 15) & !(1 << 14));
    Ok(0)
}

/// Turn device interrupts that arrived into events for their owners.
pub fn dispatch_interrupts() {
    let pending = DEVICE_IRQ_PENDING.swap(0, Ordering::AcqRel);
    if pending == 0 {
        return;
    }
    if pending & (1 << (IOMMU_FAULT_VECTOR - DEVICE_VECTOR_BASE)) != 0 {
        crate::iommu::poll_faults();
    }
    for index in 0..DEVICE_VECTORS {
        if pending & (1 << index) == 0 {
            continue;
        }
        let target = VECTOR_TARGETS.lock()[index];
        if let Some((slot, port, _, _)) = target {
            crate::stats::DEVICE_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
            crate::events::raise(slot, port);
        }
    }
}
