//! The IOMMU: Intel VT-d here, or AMD-Vi (`crate::amdvi`) when the ACPI tables offer only
//! an IVRS; every public function below forwards to AMD-Vi when that unit is the one in use.
//!
//! Intel VT-d DMA remapping (the register-level driver; encodings and rules are in
//! `microvisor-core::vtd`). At boot the unit gets an empty root table and translation is
//! switched on, so a function assigned to no domain can DMA nowhere. A domain that owns
//! functions gets a second-level page table that mirrors its RAM (bus address = its
//! guest-physical address → its own frames) and a context entry per function. Faults are
//! read from the fault recording registers and logged with device, domain and address.
//!
//! When the unit offers queued invalidation and interrupt remapping (QEMU:
//! `intel-iommu,intremap=on`), queued invalidation is switched on first and every
//! invalidation (context cache, IOTLB, interrupt entry cache) goes through the queue, each
//! batch followed by a wait descriptor whose status write the driver spins on (QEMU 7.2
//! ignores the CCMD/IOTLB registers once the queue is on). Then an interrupt remapping
//! table is loaded and remapping switched on: only the vectors the microvisor hands out
//! (`pci::bind_msix`) get entries, each checked against the owning function's requester ID,
//! so a device can raise its own entries and nothing else. Without IR or QI the unit is
//! driven as before (register-based invalidation, compatibility-format MSIs).

use microvisor_core::iopt::{Format, Table};
use microvisor_core::pci::Bdf;
use microvisor_core::vtd::{
    self, AddressWidth, Capabilities, FaultRecord, FaultStatus, InvDesc, RegOp,
};
use spin::Mutex;

use crate::mem;

struct Unit {
    base: u64,
    caps: Capabilities,
    aw: AddressWidth,
    root_pa: u64,
    /// The invalidation queue, once queued invalidation is on.
    queue: Option<Queue>,
    /// The interrupt remapping table (one page), once remapping is on.
    irt_pa: Option<u64>,
}

/// One page of 128-bit invalidation descriptors and the word wait descriptors write.
struct Queue {
    base_pa: u64,
    /// The next free slot (what IQT says).
    tail: u16,
    status_pa: u64,
    /// The last status value asked for.
    sequence: u32,
}

/// What to invalidate; done with queue descriptors once the queue is on, else with the
/// CCMD/IOTLB registers (there is no register form for the interrupt entry cache, which
/// exists only with remapping, which needs the queue).
#[derive(Clone, Copy)]
enum Invalidation {
    ContextGlobal,
    ContextDevice { domain_id: u16, source_id: u16 },
    IotlbGlobal,
    IotlbDomain(u16),
    InterruptEntryGlobal,
    InterruptEntry(u16),
}

impl Invalidation {
    fn descriptor(self, caps: &Capabilities) -> InvDesc {
        match self {
            Self::ContextGlobal => InvDesc::context_global(),
            Self::ContextDevice {
                domain_id,
                source_id,
            } => InvDesc::context_device(domain_id, source_id),
            Self::IotlbGlobal => InvDesc::iotlb_global(caps),
            Self::IotlbDomain(domain_id) => InvDesc::iotlb_domain(caps, domain_id),
            Self::InterruptEntryGlobal => InvDesc::iec_global(),
            Self::InterruptEntry(index) => InvDesc::iec_index(index),
        }
    }
}

impl Unit {
    /// Perform `what`, in order, and wait until the unit has finished it.
    fn invalidate(&mut self, what: &[Invalidation]) -> Result<(), &'static str> {
        let caps = self.caps;
        let base = self.base;
        let Some(queue) = self.queue.as_mut() else {
            for item in what {
                match *item {
                    Invalidation::ContextGlobal => exec(base, &vtd::invalidate_context_global()),
                    Invalidation::ContextDevice {
                        domain_id,
                        source_id,
                    } => exec(base, &vtd::invalidate_context_device(domain_id, source_id)),
                    Invalidation::IotlbGlobal => exec(base, &vtd::invalidate_iotlb_global(&caps)),
                    Invalidation::IotlbDomain(domain_id) => {
                        exec(base, &vtd::invalidate_iotlb_domain(&caps, domain_id))
                    }
                    Invalidation::InterruptEntryGlobal | Invalidation::InterruptEntry(_) => {}
                }
            }
            return Ok(());
        };
        // Each batch is waited for, so the queue is empty here and a batch (plus its wait
        // descriptor) must fit in it.
        if what.len() + 1 >= usize::from(vtd::INV_QUEUE_ENTRIES) {
            return Err("too many invalidations in one batch");
        }
        queue.sequence = queue.sequence.wrapping_add(1).max(1);
        let sequence = queue.sequence;
        let wait = InvDesc::wait(queue.status_pa, sequence)
            .ok_or("misaligned invalidation status word")?;
        for desc in what
            .iter()
            .map(|w| w.descriptor(&caps))
            .chain(core::iter::once(wait))
        {
            let slot = queue.base_pa + u64::from(queue.tail) * vtd::INV_DESC_BYTES;
            mem::write_phys(slot, &desc.0[0].to_le_bytes());
            mem::write_phys(slot + 8, &desc.0[1].to_le_bytes());
            queue.tail = (queue.tail + 1) % vtd::INV_QUEUE_ENTRIES;
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        exec(
            base,
            &[RegOp::Write64 {
                offset: vtd::REG_IQT,
                value: vtd::iq_offset(queue.tail),
            }],
        );
        let status = mem::phys_ptr::<u32>(queue.status_pa);
        let mut spins = 0u32;
        loop {
            // SAFETY: `status_pa` is a frame the driver allocated for the wait descriptors'
            // status writes (identity-mapped); the unit writes it, so it is read volatile.
            if unsafe { core::ptr::read_volatile(status) } == sequence {
                return Ok(());
            }
            if read32(base, vtd::REG_FSTS) & FaultStatus::QUEUE_STOPPED.bits() != 0 {
                return Err("the invalidation queue reported an error");
            }
            spins += 1;
            if spins >= 10_000_000 {
                return Err("the invalidation queue did not complete");
            }
            core::hint::spin_loop();
        }
    }

    /// Switch queued invalidation on (before anything is invalidated).
    fn enable_queue(&mut self) -> Result<(), &'static str> {
        let base_pa = mem::alloc_zeroed().ok_or("out of memory for the invalidation queue")?;
        let Some(status_pa) = mem::alloc_zeroed() else {
            mem::free(base_pa);
            return Err("out of memory for the invalidation status word");
        };
        exec(
            self.base,
            &vtd::enable_queued_invalidation(base_pa, read32(self.base, vtd::REG_GSTS)),
        );
        if read32(self.base, vtd::REG_GSTS) & vtd::GCMD_QIE == 0 {
            mem::free(base_pa);
            mem::free(status_pa);
            return Err("the unit did not enable queued invalidation");
        }
        self.queue = Some(Queue {
            base_pa,
            tail: vtd::iq_index(read64(self.base, vtd::REG_IQT)),
            status_pa,
            sequence: 0,
        });
        Ok(())
    }

    /// Load an empty interrupt remapping table and switch remapping on (queue already on).
    fn enable_interrupt_remapping(&mut self) -> Result<(), &'static str> {
        let table_pa =
            mem::alloc_zeroed().ok_or("out of memory for the interrupt remapping table")?;
        let size =
            vtd::irta_size_field(u32::from(vtd::IRT_ONE_PAGE_ENTRIES)).ok_or("bad table size")?;
        exec(
            self.base,
            &vtd::set_interrupt_remap_table(
                vtd::irta_value(table_pa, size, false),
                read32(self.base, vtd::REG_GSTS),
            ),
        );
        if read32(self.base, vtd::REG_GSTS) & vtd::GSTS_IRTPS == 0 {
            mem::free(table_pa);
            return Err("the unit did not take the interrupt remapping table");
        }
        self.invalidate(&[Invalidation::InterruptEntryGlobal])?;
        exec(
            self.base,
            &vtd::enable_interrupt_remapping(read32(self.base, vtd::REG_GSTS)),
        );
        if read32(self.base, vtd::REG_GSTS) & vtd::GCMD_IRE == 0 {
            return Err("the unit did not enable interrupt remapping");
        }
        self.irt_pa = Some(table_pa);
        Ok(())
    }
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
            RegOp::Wait32 {
                offset,
                mask,
                expect,
            } => {
                let mut spins = 0u32;
                while read32(base, offset) & mask != expect && spins < 10_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
            }
            RegOp::Wait64 {
                offset,
                mask,
                expect,
            } => {
                let mut spins = 0u32;
                while read64(base, offset) & mask != expect && spins < 10_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
            }
        }
    }
}

/// Page-table frames from the microvisor's allocator (both IOMMU drivers use these).
pub(crate) struct HostFrames;
impl vtd::FrameSource for HostFrames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        mem::alloc_zeroed()
    }
}

/// Page tables read and written through the direct map.
pub(crate) struct HostMemory;
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

/// Switch DMA remapping on with no device attached; with queued invalidation and
/// interrupt remapping where the unit has both.
pub fn init(base: u64) -> Result<(), &'static str> {
    let caps = Capabilities::decode(read64(base, vtd::REG_CAP), read64(base, vtd::REG_ECAP));
    let aw = vtd::pick_agaw(&caps).ok_or("the VT-d unit offers no usable address width")?;
    let root_pa = mem::alloc_zeroed().ok_or("out of memory for the VT-d root table")?;
    let mut unit = Unit {
        base,
        caps,
        aw,
        root_pa,
        queue: None,
        irt_pa: None,
    };
    let remap_interrupts = caps.interrupt_remapping && caps.queued_invalidation;
    if remap_interrupts {
        if let Err(why) = unit.enable_queue() {
            crate::log!("VT-d: queued invalidation unavailable ({why}): register-based invalidation, no interrupt remapping");
        }
    } else {
        crate::log!(
            "VT-d: the unit lacks {}: no interrupt remapping, register-based invalidation; devices' MSIs are not checked",
            if caps.interrupt_remapping { "queued invalidation" } else { "interrupt remapping" }
        );
    }
    exec(
        base,
        &vtd::set_root_table(root_pa, read32(base, vtd::REG_GSTS)),
    );
    unit.invalidate(&[Invalidation::ContextGlobal, Invalidation::IotlbGlobal])?;
    exec(base, &vtd::enable_translation(read32(base, vtd::REG_GSTS)));
    if read32(base, vtd::REG_GSTS) & vtd::GCMD_TE == 0 {
        return Err("the VT-d unit did not enable translation");
    }
    if unit.queue.is_some() {
        match unit.enable_interrupt_remapping() {
            Ok(()) => crate::log!(
                "VT-d interrupt remapping on ({} entries, queued invalidation): a device can raise only the vectors it was given",
                vtd::IRT_ONE_PAGE_ENTRIES
            ),
            Err(why) => crate::log!("VT-d: interrupt remapping not enabled ({why}): devices' MSIs are not checked"),
        }
    }
    // A fault interrupts the bootstrap CPU, so each fault is read (and its single recording
    // register freed) at once rather than at the next poll. Fault events are not remapped.
    exec(
        base,
        &vtd::fault_event_setup(
            crate::smp::apic_id_of(0) as u8,
            crate::pci::IOMMU_FAULT_VECTOR,
        ),
    );
    crate::log!(
        "VT-d DMA remapping on at {base:#x} ({}-bit, {} levels): a device no domain owns can DMA nowhere",
        aw.bits(),
        aw.levels()
    );
    *UNIT.lock() = Some(unit);
    Ok(())
}

/// Point interrupt remapping entry `handle` at `vector` on local APIC `dest_apic_id`, for
/// requests from `source` only. `None` when interrupts are not remapped (program the MSI in
/// compatibility format then); otherwise the remappable-format MSI address to program
/// (data 0).
pub fn map_interrupt(
    handle: u16,
    dest_apic_id: u32,
    vector: u8,
    source: Bdf,
) -> Option<Result<u32, &'static str>> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut()?;
    let table_pa = unit.irt_pa?;
    Some((|| {
        if handle >= vtd::IRT_ONE_PAGE_ENTRIES {
            return Err("interrupt handle beyond the remapping table");
        }
        let [lo, hi] = vtd::irte(dest_apic_id, vector, source.source_id(), false)
            .ok_or("vector or destination not remappable")?;
        let entry_pa = table_pa + u64::from(handle) * vtd::IRTE_BYTES;
        // The qword with the present bit goes last.
        mem::write_phys(entry_pa + 8, &hi.to_le_bytes());
        mem::write_phys(entry_pa, &lo.to_le_bytes());
        unit.invalidate(&[Invalidation::InterruptEntry(handle)])?;
        Ok(vtd::remappable_msi_address(handle))
    })())
}

/// Clear interrupt remapping entry `handle` (its device's MSIs to it fault from now on).
pub fn unmap_interrupt(handle: u16) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else { return };
    let Some(table_pa) = unit.irt_pa else { return };
    if handle >= vtd::IRT_ONE_PAGE_ENTRIES {
        return;
    }
    let entry_pa = table_pa + u64::from(handle) * vtd::IRTE_BYTES;
    mem::write_phys(entry_pa, &0u64.to_le_bytes());
    mem::write_phys(entry_pa + 8, &0u64.to_le_bytes());
    if let Err(why) = unit.invalidate(&[Invalidation::InterruptEntry(handle)]) {
        crate::log!("VT-d: invalidating interrupt entry {handle} failed: {why}");
    }
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
    mirror_ram::<vtd::SecondLevel>(aw, npt, ram_bytes)
}

/// A new I/O page table in format `F` that maps the domain's RAM `0..ram_bytes` as its
/// nested page table does; on a failure the tables made so far are freed.
pub(crate) fn mirror_ram<F: Format>(
    shape: F::Shape,
    npt: crate::npt::NptView,
    ram_bytes: u64,
) -> Option<u64> {
    let mut table = Table::<F>::new(&mut HostMemory, &mut HostFrames, shape).ok()?;
    let mut gpa = 0;
    while gpa < ram_bytes {
        if let Some(hpa) = npt.translate_owned(gpa) {
            if table
                .map_4k(&mut HostMemory, &mut HostFrames, gpa, hpa, true)
                .is_err()
            {
                table.destroy(&HostMemory, mem::free);
                return None;
            }
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
    let Some(aw) = UNIT.lock().as_ref().map(|u| u.aw) else {
        return;
    };
    Table::<vtd::SecondLevel>::from_root(root_pa, aw).destroy(&HostMemory, mem::free);
}

/// Point `bdf`'s context entry at a domain's DMA table (`domain_id` = VT-d domain id).
pub fn attach(bdf: Bdf, table_root: u64, domain_id: u16) -> Result<(), &'static str> {
    if crate::amdvi::enabled() {
        return crate::amdvi::attach(bdf, table_root, domain_id);
    }
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or("no IOMMU")?;
    let root_entry_pa = unit.root_pa + vtd::root_entry_offset(bdf.bus);
    let mut root_entry = [0u8; 16];
    mem::read_phys(root_entry_pa, &mut root_entry);
    let mut context_table =
        u64::from_le_bytes(root_entry[0..8].try_into().expect("8 bytes")) & !0xfff;
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
    unit.invalidate(&[
        Invalidation::ContextDevice {
            domain_id,
            source_id: bdf.source_id(),
        },
        Invalidation::IotlbDomain(domain_id),
    ])
}

/// Remove `bdf`'s context entry: from now on its DMA faults.
pub fn detach(bdf: Bdf, domain_id: u16) {
    if crate::amdvi::enabled() {
        return crate::amdvi::detach(bdf, domain_id);
    }
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else { return };
    let mut root_entry = [0u8; 8];
    mem::read_phys(
        unit.root_pa + vtd::root_entry_offset(bdf.bus),
        &mut root_entry,
    );
    let context_table = u64::from_le_bytes(root_entry) & !0xfff;
    if context_table == 0 {
        return;
    }
    let entry_pa = context_table + vtd::context_entry_offset(bdf.devfn());
    mem::write_phys(entry_pa, &0u64.to_le_bytes());
    mem::write_phys(entry_pa + 8, &0u64.to_le_bytes());
    if let Err(why) = unit.invalidate(&[
        Invalidation::ContextDevice {
            domain_id,
            source_id: bdf.source_id(),
        },
        Invalidation::IotlbDomain(domain_id),
    ]) {
        crate::log!("VT-d: invalidating after detaching {bdf} failed: {why}");
    }
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
        let Some(mut guard) = UNIT.try_lock() else {
            return;
        };
        let Some(unit) = guard.as_mut() else { return };
        let fsts = read32(unit.base, vtd::REG_FSTS);
        let status = FaultStatus::from_bits_retain(fsts);
        if status.intersects(FaultStatus::QUEUE_STOPPED) {
            crate::log!(
                "VT-d: invalidation queue error (FSTS {fsts:#x}, IQH {:#x})",
                read64(unit.base, vtd::REG_IQH)
            );
        }
        if !status.intersects(FaultStatus::PENDING | FaultStatus::OVERFLOW) {
            if status.intersects(FaultStatus::QUEUE_STOPPED) {
                exec(unit.base, &[vtd::clear_fault_overflow()]);
            }
            return;
        }
        for index in vtd::fault_record_indices(&unit.caps, fsts) {
            let Some(offset) = unit.caps.fault_record_register(index) else {
                continue;
            };
            let record =
                FaultRecord::decode(read64(unit.base, offset), read64(unit.base, offset + 8));
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
        match record.interrupt_index() {
            Some(index) => {
                log_blocked_interrupt(record.source_id, index, record.reason, record.reason_text())
            }
            None => log_blocked_dma(
                record.source_id,
                record.is_write,
                record.fault_address,
                record.reason_text(),
            ),
        }
    }
}

/// Fault lines per second: a device can fault as fast as it can DMA, and the UART it would
/// flood is every CPU's. Faults are all counted; lines past this are dropped and counted.
const FAULT_LINES_PER_SECOND: u32 = 16;
static FAULT_LOG: spin::Mutex<microvisor_core::ratelimit::RateLimit> = spin::Mutex::new(
    microvisor_core::ratelimit::RateLimit::new(1_000_000_000, FAULT_LINES_PER_SECOND),
);

/// Whether to print one more fault line (after saying how many were dropped, if any).
fn fault_line_admitted() -> bool {
    use microvisor_core::ratelimit::Admit;
    let admit = FAULT_LOG.lock().admit(crate::time::now_ns());
    match admit {
        Admit::Log => true,
        Admit::LogAfterDropping(dropped) => {
            crate::log!("IOMMU: {dropped} more faults were not logged (at most {FAULT_LINES_PER_SECOND} lines a second)");
            true
        }
        Admit::Drop => false,
    }
}

/// The one log line for a DMA the IOMMU blocked (both VT-d and AMD-Vi use it).
pub fn log_blocked_dma(source: Bdf, is_write: bool, address: u64, reason: &str) {
    crate::stats::DMA_FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if !fault_line_admitted() {
        return;
    }
    let owner = crate::pci::owner_name(source);
    crate::log!(
        "IOMMU blocked DMA: device {source} (owner {owner}) {} at bus address {address:#x}: {reason}",
        if is_write { "write" } else { "read" }
    );
}

/// The one log line for an interrupt request (MSI) that interrupt remapping blocked.
pub fn log_blocked_interrupt(source: Bdf, index: u16, reason: u8, text: &str) {
    crate::stats::DMA_FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if !fault_line_admitted() {
        return;
    }
    let owner = crate::pci::owner_name(source);
    crate::log!("IOMMU blocked interrupt: device {source} (owner {owner}) interrupt index {index}: fault {reason:#x} ({text})");
}
