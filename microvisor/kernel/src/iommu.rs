//! The IOMMU: Intel VT-d here, or AMD-Vi (`crate::amdvi`) when the ACPI tables offer only
//! an IVRS; every public function below forwards to AMD-Vi when that unit is the one in use.
//!
//! Intel VT-d DMA remapping (the register-level driver; encodings and rules are in
//! `microvisor-core::vtd`). At boot the unit gets an empty root table and translation is
//! switched on, so a function assigned to no domain can DMA nowhere. A domain that owns
//! functions gets a second-level page table that mirrors its RAM (bus address = its
//! guest-physical address → its own frames) and a context entry per function. Faults are
//! read from the fault recording registers and logged with device, domain and address.
//! Register-based invalidation is used (QEMU 7.2 honours it while queued invalidation is off).

use microvisor_core::pci::Bdf;
use microvisor_core::vtd::{self, AddressWidth, Capabilities, FaultRecord, FaultStatus, RegOp, SlPageTable};
use spin::Mutex;

use crate::mem;

struct Unit {
    base: u64,
    caps: Capabilities,
    aw: AddressWidth,
    root_pa: u64,
}

static UNIT: Mutex<Option<Unit>> = Mutex::new(None);

fn read32(base: u64, offset: u32) -> u32 {
    // SAFETY: `base` is the remapping unit's register page (from the ACPI DMAR, below 4 GiB,
    // identity-mapped), `offset` one of its registers; MMIO reads have no memory effects.
    unsafe { core::ptr::read_volatile(mem::phys_ptr::<u32>(base + u64::from(offset))) }
}

fn read64(base: u64, offset: u32) -> u64 {
    // SAFETY: as for read32; the 64-bit registers accept one 64-bit access.
    unsafe { core::ptr::read_volatile(mem::phys_ptr::<u64>(base + u64::from(offset))) }
}

fn exec(base: u64, ops: &[RegOp]) {
    for op in ops {
        match *op {
            // SAFETY: the register offset comes from the VT-d command builders of
            // microvisor-core and the value is a command the microvisor means to give.
            RegOp::Write32 { offset, value } => unsafe {
                core::ptr::write_volatile(mem::phys_ptr::<u32>(base + u64::from(offset)), value)
            },
            // SAFETY: as above, for a 64-bit register.
            RegOp::Write64 { offset, value } => unsafe {
                core::ptr::write_volatile(mem::phys_ptr::<u64>(base + u64::from(offset)), value)
            },
            RegOp::Wait32 { offset, mask, expect } => {
                let mut spins = 0u32;
                while read32(base, offset) & mask != expect && spins < 10_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
            }
            RegOp::Wait64 { offset, mask, expect } => {
                let mut spins = 0u32;
                while read64(base, offset) & mask != expect && spins < 10_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
            }
        }
    }
}

struct HostFrames;
impl vtd::FrameSource for HostFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        mem::alloc_zeroed()
    }
}

struct HostMemory;
impl vtd::PhysMem for HostMemory {
    fn read_u64(&self, pa: u64) -> u64 {
        let mut bytes = [0u8; 8];
        mem::read_phys(pa, &mut bytes);
        u64::from_le_bytes(bytes)
    }
    fn write_u64(&mut self, pa: u64, value: u64) {
        mem::write_phys(pa, &value.to_le_bytes());
    }
}

/// Switch DMA remapping on with no device attached.
pub fn init(base: u64) -> Result<(), &'static str> {
    let caps = Capabilities::decode(read64(base, vtd::REG_CAP), read64(base, vtd::REG_ECAP));
    let aw = vtd::pick_agaw(&caps).ok_or("the VT-d unit offers no usable address width")?;
    let root_pa = mem::alloc_zeroed().ok_or("out of memory for the VT-d root table")?;
    exec(base, &vtd::set_root_table(root_pa, read32(base, vtd::REG_GSTS)));
    exec(base, &vtd::invalidate_context_global());
    exec(base, &vtd::invalidate_iotlb_global(&caps));
    exec(base, &vtd::enable_translation(read32(base, vtd::REG_GSTS)));
    if read32(base, vtd::REG_GSTS) & vtd::GCMD_TE == 0 {
        return Err("the VT-d unit did not enable translation");
    }
    // A fault interrupts the bootstrap CPU, so each fault is read (and its single recording
    // register freed) at once rather than at the next poll.
    exec(base, &vtd::fault_event_setup(crate::smp::apic_id_of(0) as u8, crate::pci::IOMMU_FAULT_VECTOR));
    crate::log!(
        "VT-d DMA remapping on at {base:#x} ({}-bit, {} levels): a device no domain owns can DMA nowhere",
        aw.bits(),
        aw.levels()
    );
    *UNIT.lock() = Some(Unit { base, caps, aw, root_pa });
    Ok(())
}

pub fn enabled() -> bool {
    UNIT.lock().is_some() || crate::amdvi::enabled()
}

/// A DMA page table for a domain: its RAM `0..ram_bytes`, as its nested page table maps it.
pub fn build_domain_table(npt: crate::npt::NptView, ram_bytes: u64) -> Option<u64> {
    if crate::amdvi::enabled() {
        return crate::amdvi::build_domain_table(npt, ram_bytes);
    }
    let aw = UNIT.lock().as_ref()?.aw;
    let mut table = SlPageTable::new(&mut HostFrames, aw).ok()?;
    let mut gpa = 0;
    while gpa < ram_bytes {
        if let Some(hpa) = npt.translate_owned(gpa) {
            table.map_4k(&mut HostMemory, &mut HostFrames, gpa, hpa, true).ok()?;
        }
        gpa += mem::PAGE_SIZE;
    }
    Some(table.root_pa())
}

/// Free a domain's DMA page table (after every function was detached).
pub fn destroy_domain_table(root_pa: u64) {
    if crate::amdvi::enabled() {
        return crate::amdvi::destroy_domain_table(root_pa);
    }
    let Some(aw) = UNIT.lock().as_ref().map(|u| u.aw) else { return };
    SlPageTable::from_root(root_pa, aw).destroy(&HostMemory, mem::free);
}

/// Point `bdf`'s context entry at a domain's DMA table (`domain_id` = VT-d domain id).
pub fn attach(bdf: Bdf, table_root: u64, domain_id: u16) -> Result<(), &'static str> {
    if crate::amdvi::enabled() {
        return crate::amdvi::attach(bdf, table_root, domain_id);
    }
    let guard = UNIT.lock();
    let unit = guard.as_ref().ok_or("no IOMMU")?;
    let root_entry_pa = unit.root_pa + vtd::root_entry_offset(bdf.bus);
    let mut root_entry = [0u8; 16];
    mem::read_phys(root_entry_pa, &mut root_entry);
    let mut context_table = u64::from_le_bytes(root_entry[0..8].try_into().expect("8 bytes")) & !0xfff;
    if context_table == 0 {
        context_table = mem::alloc_zeroed().ok_or("out of memory for a VT-d context table")?;
        let [lo, hi] = vtd::root_entry(context_table);
        mem::write_phys(root_entry_pa + 8, &hi.to_le_bytes());
        mem::write_phys(root_entry_pa, &lo.to_le_bytes());
    }
    let [lo, hi] = vtd::context_entry(table_root, unit.aw, domain_id);
    let entry_pa = context_table + vtd::context_entry_offset(bdf.devfn());
    mem::write_phys(entry_pa + 8, &hi.to_le_bytes());
    mem::write_phys(entry_pa, &lo.to_le_bytes());
    exec(unit.base, &vtd::invalidate_context_device(domain_id, bdf.source_id()));
    exec(unit.base, &vtd::invalidate_iotlb_domain(&unit.caps, domain_id));
    Ok(())
}

/// Remove `bdf`'s context entry: from now on its DMA faults.
pub fn detach(bdf: Bdf, domain_id: u16) {
    if crate::amdvi::enabled() {
        return crate::amdvi::detach(bdf, domain_id);
    }
    let guard = UNIT.lock();
    let Some(unit) = guard.as_ref() else { return };
    let mut root_entry = [0u8; 8];
    mem::read_phys(unit.root_pa + vtd::root_entry_offset(bdf.bus), &mut root_entry);
    let context_table = u64::from_le_bytes(root_entry) & !0xfff;
    if context_table == 0 {
        return;
    }
    let entry_pa = context_table + vtd::context_entry_offset(bdf.devfn());
    mem::write_phys(entry_pa, &0u64.to_le_bytes());
    mem::write_phys(entry_pa + 8, &0u64.to_le_bytes());
    exec(unit.base, &vtd::invalidate_context_device(domain_id, bdf.source_id()));
    exec(unit.base, &vtd::invalidate_iotlb_domain(&unit.caps, domain_id));
}

/// Read, log and clear any recorded DMA faults. The records are taken under the unit's lock
/// and logged after it is released (naming the owner takes the PCI lock, which `pci::assign`
/// holds while it calls into this module).
pub fn poll_faults() {
    if crate::amdvi::enabled() {
        return crate::amdvi::poll_faults();
    }
    let mut records: heapless::Vec<FaultRecord, 8> = heapless::Vec::new();
    {
        let Some(mut guard) = UNIT.try_lock() else { return };
        let Some(unit) = guard.as_mut() else { return };
        let fsts = read32(unit.base, vtd::REG_FSTS);
        let status = FaultStatus::decode(fsts);
        if !status.pending && !status.overflow {
            return;
        }
        for index in vtd::fault_record_indices(&unit.caps, fsts) {
            let Some(offset) = unit.caps.fault_record_register(index) else { continue };
            let record = FaultRecord::decode(read64(unit.base, offset), read64(unit.base, offset + 8));
            if record.fault {
                let _ = records.push(record);
            }
            if let Some(op) = vtd::clear_fault_record(&unit.caps, index) {
                exec(unit.base, &[op]);
            }
        }
        exec(unit.base, &[vtd::clear_fault_overflow()]);
    }
    for record in records {
        log_blocked_dma(record.source_id, record.is_write, record.fault_address, record.reason_text());
    }
}

/// The one log line for a DMA the IOMMU blocked (both VT-d and AMD-Vi use it).
pub fn log_blocked_dma(source: Bdf, is_write: bool, address: u64, reason: &str) {
    let owner = crate::pci::owner_name(source);
    crate::log!(
        "IOMMU blocked DMA: device {source} (owner {owner}) {} at bus address {address:#x}: {reason}",
        if is_write { "write" } else { "read" }
    );
    crate::stats::DMA_FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}
