//! AMD-Vi DMA remapping (the register-level driver; encodings and rules are in
//! `microvisor-core::amdvi`). At boot every one of the 65536 device table entries gets the
//! blocked entry (valid, translated, neither read nor write permission) and translation is
//! switched on, so a function assigned to no domain can DMA nowhere. A domain that owns
//! functions gets an I/O page table that mirrors its RAM (bus address = its guest-physical
//! address → its own frames) and a translated device table entry per function. Changes go
//! through the command buffer (invalidate, then a COMPLETION_WAIT that stores a sequence
//! number this driver spins on). Faults are read from the event log, by polling.
//!
//! The same functions as the VT-d driver, with the same meaning: [`init`], [`enabled`],
//! [`build_domain_table`], [`destroy_domain_table`], [`attach`], [`detach`],
//! [`poll_faults`]. Domain ID 0 is the blocked entries' and is refused for domains.
//!
//! QEMU 7.2's `amd-iommu` translates and blocks as it should but writes no event log
//! entries (see `microvisor-core::amdvi`): there, a blocked DMA shows only as the Signaled
//! Target Abort bit in the status register of the IOMMU's own PCI function, which
//! [`poll_faults`] watches once [`watch_pci_status`] has told it where that register is,
//! and reports (without device or address) as long as the unit has never logged an event.

use core::sync::atomic::{fence, Ordering};

use heapless::Vec;
use microvisor_core::amdvi::{
    self, Command, DeviceTableEntry, Event, Features, IoPageTable, PagingMode, RegOp,
};
use microvisor_core::iopt::PhysMem;
use microvisor_core::pci::Bdf;
use spin::Mutex;

use crate::iommu::{HostFrames, HostMemory};
use crate::mem;

/// Spins before a wait on the unit is given up (QEMU completes every command within the
/// register write that starts it).
const SPIN_LIMIT: u32 = 10_000_000;
/// Event log entries handled per lock hold (they are logged after the lock is dropped).
const EVENT_BATCH: usize = 16;

struct Unit {
    base: u64,
    mode: PagingMode,
    /// The PCI segment of the devices behind the unit (the microvisor uses segment 0).
    segment: u16,
    device_table_pa: u64,
    /// The empty table the blocked entries point at.
    empty_table_pa: u64,
    command_pa: u64,
    /// Where the next command goes (byte offset in the command buffer).
    command_tail: u64,
    event_pa: u64,
    /// The 8 bytes COMPLETION_WAIT stores into, and the last value asked for.
    semaphore_pa: u64,
    sequence: u64,
    /// The control register value written at enable.
    control: u64,
    /// Physical address of the status register (config offset 6) of the unit's own PCI
    /// function, if known: QEMU 7.2 reports faults only there.
    pci_status_pa: Option<u64>,
    /// The unit has logged an event: it is not one that only marks its PCI status, and
    /// that mark is no longer reported.
    logs_events: bool,
}

static UNIT: Mutex<Option<Unit>> = Mutex::new(None);

fn read64(base: u64, offset: u32) -> u64 {
    // SAFETY: `base` is the unit's register block (from the IVRS, below 4 GiB,
    // identity-mapped), `offset` one of its 64-bit registers; MMIO reads have no memory
    // effects.
    unsafe { core::ptr::read_volatile(mem::phys_ptr::<u64>(base + u64::from(offset))) }
}

fn write64(base: u64, offset: u32, value: u64) {
    // SAFETY: as for read64; the offsets come from `microvisor-core::amdvi`, the values are
    // the settings the microvisor means to give.
    unsafe { core::ptr::write_volatile(mem::phys_ptr::<u64>(base + u64::from(offset)), value) }
}

fn exec(base: u64, ops: &[RegOp]) -> Result<(), &'static str> {
    for op in ops {
        match *op {
            RegOp::Write64 { offset, value } => write64(base, offset, value),
            RegOp::Write32 { offset, value } => {
                // SAFETY: as for write64, a 32-bit register access.
                unsafe {
                    core::ptr::write_volatile(mem::phys_ptr::<u32>(base + u64::from(offset)), value)
                }
            }
            RegOp::Wait64 {
                offset,
                mask,
                expect,
            } => {
                if !spin_until(|| read64(base, offset) & mask == expect) {
                    return Err("the AMD-Vi unit did not reach the expected state");
                }
            }
            RegOp::Wait32 {
                offset,
                mask,
                expect,
            } => {
                // SAFETY: as for read64, a 32-bit register access.
                let read = || unsafe {
                    core::ptr::read_volatile(mem::phys_ptr::<u32>(base + u64::from(offset)))
                };
                if !spin_until(|| read() & mask == expect) {
                    return Err("the AMD-Vi unit did not reach the expected state");
                }
            }
        }
    }
    Ok(())
}

fn spin_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// A qword of memory the unit writes (the semaphore, event log entries).
fn read_volatile_u64(pa: u64) -> u64 {
    assert!(pa.is_multiple_of(8) && pa + 8 <= mem::MAX_PHYS);
    // SAFETY: `pa` is 8-byte aligned inside a frame this driver allocated (below 4 GiB,
    // identity-mapped); the unit may write it at any time, hence the volatile read.
    unsafe { core::ptr::read_volatile(mem::phys_ptr::<u64>(pa)) }
}

fn write_u64(pa: u64, value: u64) {
    mem::write_phys(pa, &value.to_le_bytes());
}

impl Unit {
    /// Queues `commands` and moves the tail register once (the unit starts on it).
    fn submit(&mut self, commands: &[Command]) -> Result<(), &'static str> {
        for command in commands {
            let base = self.base;
            let tail = self.command_tail;
            if !spin_until(|| {
                !amdvi::ring_full(
                    read64(base, amdvi::REG_COMMAND_HEAD),
                    tail,
                    amdvi::RING_BYTES,
                )
            }) {
                return Err("the AMD-Vi command buffer does not drain");
            }
            write_u64(self.command_pa + tail, command[0]);
            write_u64(self.command_pa + tail + 8, command[1]);
            self.command_tail = amdvi::ring_next(tail, amdvi::RING_BYTES);
        }
        // The commands must be in memory before the unit learns of them.
        fence(Ordering::SeqCst);
        write64(self.base, amdvi::REG_COMMAND_TAIL, self.command_tail);
        Ok(())
    }

    /// Waits until every command submitted so far has completed.
    fn sync(&mut self) -> Result<(), &'static str> {
        self.sequence = self.sequence.wrapping_add(1);
        let token = self.sequence;
        self.submit(&[amdvi::completion_wait(self.semaphore_pa, token)])?;
        let semaphore = self.semaphore_pa;
        if spin_until(|| read_volatile_u64(semaphore) == token) {
            Ok(())
        } else {
            Err("the AMD-Vi unit does not complete its commands")
        }
    }

    fn run(&mut self, commands: &[Command]) -> Result<(), &'static str> {
        self.submit(commands)?;
        self.sync()
    }

    /// Writes the device table entry of `device_id`, in an order that never lets the unit
    /// see a half-written entry that allows more than the old or the new one: when the new
    /// entry allows DMA, quadword 0 (valid, permissions, root) goes last; otherwise first.
    fn write_dte(&mut self, device_id: u16, entry: &DeviceTableEntry) {
        let pa = self.device_table_pa + amdvi::device_table_offset(device_id);
        let q = entry.encode();
        if entry.allows_dma() {
            for i in (1..4).rev() {
                write_u64(pa + 8 * i as u64, q[i]);
            }
            fence(Ordering::SeqCst);
            write_u64(pa, q[0]);
        } else {
            write_u64(pa, q[0]);
            fence(Ordering::SeqCst);
            for (i, &word) in q.iter().enumerate().skip(1) {
                write_u64(pa + 8 * i as u64, word);
            }
        }
        fence(Ordering::SeqCst);
    }

    fn read_dte(&self, device_id: u16) -> DeviceTableEntry {
        let pa = self.device_table_pa + amdvi::device_table_offset(device_id);
        let mut q = [0u64; 4];
        for (i, word) in q.iter_mut().enumerate() {
            *word = HostMemory.read_u64(pa + 8 * i as u64);
        }
        DeviceTableEntry::decode(q)
    }

    fn blocked_entry(&self) -> DeviceTableEntry {
        DeviceTableEntry::blocked(self.empty_table_pa, self.mode)
    }
}

/// Switch DMA remapping on with no device attached: every device ID gets the blocked entry.
pub fn init(base: u64) -> Result<(), &'static str> {
    let features = Features::decode(read64(base, amdvi::REG_EXTENDED_FEATURES));
    if features.absent() {
        return Err("no AMD-Vi unit answers at that address");
    }
    let mode = amdvi::pick_paging_mode(&features);
    let table_frames = amdvi::DEVICE_TABLE_BYTES / mem::PAGE_SIZE;
    let device_table_pa =
        mem::alloc_contiguous(table_frames).ok_or("out of memory for the AMD-Vi device table")?;
    let empty = IoPageTable::new(&mut HostMemory, &mut HostFrames, mode)
        .map_err(|_| "out of memory for the AMD-Vi empty page table")?;
    let (Some(command_pa), Some(event_pa), Some(semaphore_pa)) = (
        mem::alloc_zeroed(),
        mem::alloc_zeroed(),
        mem::alloc_zeroed(),
    ) else {
        return Err("out of memory for the AMD-Vi command buffer and event log");
    };
    let mut unit = Unit {
        base,
        mode,
        segment: 0,
        device_table_pa,
        empty_table_pa: empty.root_pa(),
        command_pa,
        command_tail: 0,
        event_pa,
        semaphore_pa,
        sequence: 0,
        control: 0,
        pci_status_pa: None,
        logs_events: false,
    };
    let blocked = unit.blocked_entry().encode();
    let mut bytes = [0u8; 32];
    for (i, word) in blocked.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    for device_id in 0..=u16::MAX {
        mem::write_phys(
            device_table_pa + amdvi::device_table_offset(device_id),
            &bytes,
        );
    }
    fence(Ordering::SeqCst);
    let sequence = amdvi::enable_sequence(device_table_pa, command_pa, event_pa);
    if let RegOp::Write64 { value, .. } = sequence[sequence.len() - 2] {
        unit.control = value;
    }
    if exec(base, &sequence).is_err() {
        write64(base, amdvi::REG_CONTROL, 0);
        return Err("the AMD-Vi unit did not start its command buffer and event log");
    }
    // Forget whatever the unit cached before (firmware may have used it).
    let flushed = if features.invalidate_all {
        unit.run(&[amdvi::invalidate_iommu_all()])
    } else {
        (0..=u16::MAX)
            .try_for_each(|device_id| unit.submit(&[amdvi::invalidate_devtab_entry(device_id)]))
            .and_then(|()| unit.run(&[amdvi::invalidate_iommu_pages_domain(0)]))
    };
    if let Err(why) = flushed {
        write64(base, amdvi::REG_CONTROL, 0);
        return Err(why);
    }
    crate::log!(
        "AMD-Vi DMA remapping on at {base:#x} ({}-bit, {} levels): a device no domain owns can DMA nowhere",
        mode.address_bits(),
        mode.levels()
    );
    *UNIT.lock() = Some(unit);
    Ok(())
}

/// Where the status register of the unit's own PCI function is (its config space address
/// plus 6; the function is the IVHD's device ID): QEMU 7.2 logs no events, and marks every
/// blocked DMA only there, so [`poll_faults`] reports those marks too.
pub fn watch_pci_status(config_space_pa: u64) {
    if let Some(unit) = UNIT.lock().as_mut() {
        let pa = config_space_pa + 6;
        unit.pci_status_pa = Some(pa);
        // A mark left from before boot is not a fault of ours.
        clear_target_abort(pa);
    }
}

fn clear_target_abort(status_pa: u64) {
    // SAFETY: `status_pa` is the status register of the unit's own function in the ECAM
    // window (identity-mapped below 4 GiB), as `watch_pci_status` was told. Its other bits
    // are read-only or write-1-to-clear, so a 16-bit write of just this bit changes nothing
    // else; configuration writes have no memory effects.
    unsafe {
        core::ptr::write_volatile(
            mem::phys_ptr::<u16>(status_pa),
            amdvi::PCI_STATUS_SIGNALED_TARGET_ABORT,
        )
    };
}

pub fn enabled() -> bool {
    UNIT.lock().is_some()
}

/// A DMA page table for a domain: its RAM `0..ram_bytes`, as its nested page table maps it.
pub fn build_domain_table(npt: crate::npt::NptView, ram_bytes: u64) -> Option<u64> {
    let mode = UNIT.lock().as_ref()?.mode;
    crate::iommu::mirror_ram::<amdvi::HostV1>(mode, npt, ram_bytes)
}

/// Free a domain's DMA page table (after every function was detached).
pub fn destroy_domain_table(root_pa: u64) {
    let Some(mode) = UNIT.lock().as_ref().map(|u| u.mode) else {
        return;
    };
    IoPageTable::from_root(root_pa, mode).destroy(&HostMemory, mem::free);
}

/// Point `bdf`'s device table entry at a domain's DMA table (`domain_id`, 1..=65535, tags
/// its cached translations).
pub fn attach(bdf: Bdf, table_root: u64, domain_id: u16) -> Result<(), &'static str> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut().ok_or("no IOMMU")?;
    if bdf.segment != unit.segment {
        return Err("the function is not behind the AMD-Vi unit");
    }
    if domain_id == 0 {
        return Err("AMD-Vi domain ID 0 is reserved for blocked devices");
    }
    let device_id = bdf.source_id();
    // Translations cached under the function's previous domain (if it had one) must go too.
    let old_domain = unit.read_dte(device_id).domain_id;
    unit.write_dte(
        device_id,
        &DeviceTableEntry::translated(table_root, unit.mode, domain_id),
    );
    let mut commands: Vec<Command, 3> = Vec::new();
    let _ = commands.push(amdvi::invalidate_devtab_entry(device_id));
    let _ = commands.push(amdvi::invalidate_iommu_pages_domain(domain_id));
    if old_domain != 0 && old_domain != domain_id {
        let _ = commands.push(amdvi::invalidate_iommu_pages_domain(old_domain));
    }
    unit.run(&commands)
}

/// Give `bdf` the blocked entry back: from now on its DMA faults.
pub fn detach(bdf: Bdf, domain_id: u16) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else { return };
    if bdf.segment != unit.segment {
        return;
    }
    let device_id = bdf.source_id();
    let blocked = unit.blocked_entry();
    unit.write_dte(device_id, &blocked);
    if let Err(why) = unit.run(&[
        amdvi::invalidate_devtab_entry(device_id),
        amdvi::invalidate_iommu_pages_domain(domain_id),
    ]) {
        crate::log!("AMD-Vi: detaching {bdf}: {why}");
    }
}

/// What one look at the unit found, to report after its lock is dropped (reporting takes
/// the PCI lock, which `attach` callers hold while they take the unit's).
#[derive(Default)]
struct Findings {
    events: Vec<Event, EVENT_BATCH>,
    more: bool,
    overflowed: bool,
    target_aborts: bool,
    segment: u16,
}

fn collect(unit: &mut Unit) -> Findings {
    let mut found = Findings {
        segment: unit.segment,
        ..Findings::default()
    };
    let mut head = read64(unit.base, amdvi::REG_EVENT_HEAD) & amdvi::RING_OFFSET_MASK;
    let tail = read64(unit.base, amdvi::REG_EVENT_TAIL) & amdvi::RING_OFFSET_MASK;
    let start = head;
    while head != tail && head < amdvi::RING_BYTES {
        if found.events.is_full() {
            found.more = true;
            break;
        }
        let at = unit.event_pa + head;
        // The unit may move the tail before the entry lands: give it a moment.
        let mut lo = read_volatile_u64(at);
        for _ in 0..1000 {
            if Event::decode(lo, 0).code != 0 {
                break;
            }
            core::hint::spin_loop();
            lo = read_volatile_u64(at);
        }
        let hi = read_volatile_u64(at + 8);
        let event = Event::decode(lo, hi);
        unit.logs_events |= !event.is_empty();
        let _ = found.events.push(event);
        // Zeroed, so a stale entry is never mistaken for a new one on the next lap.
        write_u64(at, 0);
        write_u64(at + 8, 0);
        head = amdvi::ring_next(head, amdvi::RING_BYTES);
    }
    if head != start {
        write64(unit.base, amdvi::REG_EVENT_HEAD, head);
    }
    if read64(unit.base, amdvi::REG_STATUS) & amdvi::STATUS_EVENT_OVERFLOW != 0 {
        found.overflowed = true;
        if exec(unit.base, &amdvi::restart_event_log(unit.control)).is_err() {
            crate::log!("AMD-Vi: the event log did not restart");
        }
    }
    if let Some(pa) = unit.pci_status_pa {
        // SAFETY: `pa` is the status register of the unit's own function in the ECAM window
        // (identity-mapped below 4 GiB), as `watch_pci_status` was told; configuration reads
        // have no memory effects.
        let status = unsafe { core::ptr::read_volatile(mem::phys_ptr::<u16>(pa)) };
        if status & amdvi::PCI_STATUS_SIGNALED_TARGET_ABORT != 0 {
            found.target_aborts = !unit.logs_events;
            clear_target_abort(pa);
        }
    }
    found
}

/// Read, log and clear any logged faults.
pub fn poll_faults() {
    loop {
        let found = {
            let Some(mut guard) = UNIT.try_lock() else {
                return;
            };
            let Some(unit) = guard.as_mut() else { return };
            collect(unit)
        };
        for event in &found.events {
            report(event, found.segment);
        }
        if found.overflowed {
            crate::log!("AMD-Vi event log overflowed: some faults went unreported");
        }
        if found.target_aborts && found.events.iter().all(|e| !e.is_blocked_dma()) {
            crate::log!(
                "IOMMU blocked DMA: the AMD-Vi unit signalled a target abort but logged no event (device and address unknown)"
            );
            crate::stats::DMA_FAULTS.fetch_add(1, Ordering::Relaxed);
        }
        if !found.more {
            return;
        }
    }
}

fn report(event: &Event, segment: u16) {
    if event.is_blocked_dma() {
        crate::iommu::log_blocked_dma(
            event.device(segment),
            event.is_write(),
            event.address,
            event.reason_text(),
        );
    } else if !event.is_empty() {
        crate::log!("AMD-Vi event: {event}");
    }
}
