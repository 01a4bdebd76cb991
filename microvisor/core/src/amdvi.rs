//! AMD-Vi (AMD I/O Virtualization Technology) DMA remapping, the pure parts: register
//! layout, the extended feature register, device table entries ([`DeviceTableEntry`]), I/O
//! page tables ([`IoPageTable`]), the command encodings ([`Command`]), event log entries
//! ([`Event`]), and the register sequences as data ([`RegOp`], shared with VT-d).
//!
//! The hardware crate maps the unit's registers (base from the IVRS), runs the [`RegOp`]
//! sequences with 64-bit MMIO, writes commands into the command buffer, reads events out of
//! the event log, and implements [`FrameSource`] and [`PhysMem`] over host memory. Bringing
//! up DMA remapping (AMD I/O Virtualization Technology specification, rev. 3.x; what QEMU
//! 7.2's `amd-iommu` does is noted where it matters):
//!
//! 1. Read the extended feature register, [`Features::decode`], [`pick_paging_mode`].
//! 2. Make a device table covering every device ID ([`DEVICE_TABLE_BYTES`], 2 MiB,
//!    physically contiguous) and fill it with [`DeviceTableEntry::blocked`] entries: valid,
//!    translation valid, no read or write permission, so every DMA of every requester is
//!    refused (an all-zero entry has V = 0, which lets DMA through untranslated). Make a
//!    4 KiB command buffer and a 4 KiB event log.
//! 3. [`enable_sequence`]: program the three bases, zero the head and tail pointers, switch
//!    on the event log, the command buffer and translation, and wait for the status register
//!    to show both running. Then [`invalidate_iommu_all`] and a [`completion_wait`].
//! 4. Give a function to a domain: write its [`DeviceTableEntry::translated`] entry (the
//!    domain's [`IoPageTable`] and domain ID), then [`invalidate_devtab_entry`],
//!    [`invalidate_iommu_pages_domain`] and [`completion_wait`]. Take it back the same way
//!    with the blocked entry. After removing a mapping from a live table:
//!    [`invalidate_iommu_pages_domain`] (or [`invalidate_iommu_pages`]).
//! 5. Faults: the unit appends 16-byte [`Event`]s to the event log and moves the tail
//!    register; software reads from the head register to the tail and writes the head back.
//!    When the log overflowed ([`STATUS_EVENT_OVERFLOW`]), [`restart_event_log`].
//!
//! What QEMU 7.2's `amd-iommu` does differently from the specification (checked against its
//! source and by booting it):
//!
//! - It writes no event log entries at all: the test for a pending overflow ORs instead of
//!   ANDs, so every event is dropped (fixed upstream in 2025; Debian's 7.2.22 does not have
//!   the fix, and the tail register is not advanced there either). A refused DMA is then
//!   visible only as the Signaled Target Abort bit (bit 11) of the status register in the
//!   IOMMU's own PCI function ([`PCI_STATUS_SIGNALED_TARGET_ABORT`]), which QEMU sets on
//!   every I/O page fault it would have logged.
//! - Its page walk reports a fault only at an entry it would descend from (the device table
//!   entry, or one with Next Level 1..=6) that is not present or lacks the permission; an
//!   all-zero entry, or a page entry without the permission, refuses the DMA silently. So
//!   every empty slot of an [`IoPageTable`] holds [`PTE_EMPTY`] (not present, Next Level 1;
//!   the specification ignores the other bits of a non-present entry), never zero.
//! - It does not check that a bus address fits the paging mode: bits above the mode's width
//!   are ignored. [`pick_paging_mode`] therefore takes six levels (the full 64 bits) when the
//!   unit offers them (QEMU: HATS = 2, six levels), so no bus address aliases into a
//!   domain's memory.
//! - Faults carry only the device and function (the bus is dropped), and the access type in
//!   flag bit 0 (read) or 1 (write) instead of the RW flag (bit 5); [`Event::is_write`]
//!   understands both.
//! - It keeps no device table cache (INVALIDATE_DEVTAB_ENTRY does nothing), caches only
//!   successful translations, keyed by device, and drops them per domain on
//!   INVALIDATE_IOMMU_PAGES whatever the address. Commands run synchronously when the tail
//!   register is written.
//! - A device table entry with a reserved bit set fails every request from that device,
//!   interrupts included (QEMU 7.2.19 and later: quadword 0 bits 2..=6 and 63, quadword 2
//!   bits 52..=53, quadword 3 bits 0..=14 and 48..=53; earlier: quadword 0 bits 2..=7, 52,
//!   53 and 63, quadword 1 bit 8, quadword 2 bits 52..=55 and 59, any bit of quadword 3).
//!   The entries made here set none of them.
//! - Interrupt messages (`0xfee0_0000..0xfef0_0000`) never go through the page tables; with
//!   interrupt remapping off in the entry (IV = 0, as here) they pass unchanged.
//! - Every function on the PCI root bus is behind the unit (a `virtio-blk-pci` given before
//!   or after `-device amd-iommu` on the command line was translated either way), except
//!   the unit's own function, whose event log, completion stores and MSI bypass translation.
//!   The IVRS QEMU 7.2 builds has one type 0x10 IVHD only (no EFR image).

pub use crate::iopt::{FrameSource, PhysMem};
use crate::pci::Bdf;
pub use crate::vtd::RegOp;
use core::fmt;
use core::ops::Range;

/// Device table base address register: base in bits 12..=51, size (4 KiB units − 1) in
/// bits 0..=8.
pub const REG_DEVICE_TABLE_BASE: u32 = 0x0000;
/// Command buffer base address register: base in bits 12..=51, ComLen (log2 of the number
/// of entries) in bits 56..=59.
pub const REG_COMMAND_BUFFER_BASE: u32 = 0x0008;
/// Event log base address register: base in bits 12..=51, EventLen in bits 56..=59.
pub const REG_EVENT_LOG_BASE: u32 = 0x0010;
/// Control register.
pub const REG_CONTROL: u32 = 0x0018;
/// Exclusion range base register (bit 0: exclusion enable, bit 1: allow all).
pub const REG_EXCLUSION_BASE: u32 = 0x0020;
/// Extended feature register (read-only).
pub const REG_EXTENDED_FEATURES: u32 = 0x0030;
/// Command buffer head pointer (byte offset in bits 4..=18; advanced by the unit).
pub const REG_COMMAND_HEAD: u32 = 0x2000;
/// Command buffer tail pointer (advanced by software).
pub const REG_COMMAND_TAIL: u32 = 0x2008;
/// Event log head pointer (advanced by software).
pub const REG_EVENT_HEAD: u32 = 0x2010;
/// Event log tail pointer (advanced by the unit).
pub const REG_EVENT_TAIL: u32 = 0x2018;
/// Status register.
pub const REG_STATUS: u32 = 0x2020;
/// Bytes of register space the driver uses (QEMU implements exactly this much).
pub const REGISTER_SPAN: u64 = 0x4000;

/// Control: translation (and the whole unit) enable.
pub const CONTROL_IOMMU_EN: u64 = 1 << 0;
/// Control: event logging enable.
pub const CONTROL_EVENT_LOG_EN: u64 = 1 << 2;
/// Control: the unit's accesses to the device table and page tables snoop the CPU caches.
pub const CONTROL_COHERENT: u64 = 1 << 10;
/// Control: command buffer enable.
pub const CONTROL_CMD_BUF_EN: u64 = 1 << 12;

/// Status: the event log overflowed and stopped (write 1 to clear).
pub const STATUS_EVENT_OVERFLOW: u64 = 1 << 0;
/// Status: an event was logged (write 1 to clear).
pub const STATUS_EVENT_LOG_INT: u64 = 1 << 1;
/// Status: a COMPLETION_WAIT with its interrupt flag completed (write 1 to clear).
pub const STATUS_COM_WAIT_INT: u64 = 1 << 2;
/// Status: the event log is running (read-only).
pub const STATUS_EVENT_LOG_RUN: u64 = 1 << 3;
/// Status: the command buffer is running (read-only).
pub const STATUS_CMD_BUF_RUN: u64 = 1 << 4;
/// The write-1-to-clear status bits this driver clears.
pub const STATUS_CLEAR_MASK: u64 =
    STATUS_EVENT_OVERFLOW | STATUS_EVENT_LOG_INT | STATUS_COM_WAIT_INT;

/// The Signaled Target Abort bit of a PCI function's status register (config offset 6):
/// QEMU 7.2 sets it in the IOMMU's own function on every I/O page fault (write 1 to clear).
pub const PCI_STATUS_SIGNALED_TARGET_ABORT: u16 = 1 << 11;

/// The address bits of table pointers and page-table entries (12..=51).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bus addresses that are interrupt messages, never translated.
pub const INTERRUPT_RANGE: Range<u64> = 0xfee0_0000..0xfef0_0000;

const PAGE_BYTES: u64 = 4096;

/// The extended feature register, decoded (the parts that matter here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub efr: u64,
    /// PreFSup: PREFETCH_IOMMU_PAGES.
    pub prefetch: bool,
    /// PPRSup: peripheral page requests.
    pub ppr: bool,
    /// XTSup: x2APIC interrupt destinations.
    pub x2apic: bool,
    /// NXSup: no-execute permission.
    pub no_execute: bool,
    /// GTSup: guest (nested) translation.
    pub guest_translation: bool,
    /// IASup: INVALIDATE_IOMMU_ALL.
    pub invalidate_all: bool,
    /// GASup: guest virtual APIC.
    pub guest_apic: bool,
    /// HESup: hardware error registers.
    pub hardware_errors: bool,
    /// PCSup: performance counters.
    pub performance_counters: bool,
    /// Most host page-table levels (HATS: 0 → 4, 1 → 5, 2 → 6; the reserved 3 → 4).
    pub host_levels: u8,
    /// Most guest page-table levels (GATS: 0 → 4, 1 → 5, else 4).
    pub guest_levels: u8,
}

impl Features {
    /// Decodes the extended feature register.
    pub const fn decode(efr: u64) -> Self {
        let hats = (efr >> 10) & 3;
        let gats = (efr >> 12) & 3;
        Features {
            efr,
            prefetch: efr & 1 != 0,
            ppr: efr >> 1 & 1 != 0,
            x2apic: efr >> 2 & 1 != 0,
            no_execute: efr >> 3 & 1 != 0,
            guest_translation: efr >> 4 & 1 != 0,
            invalidate_all: efr >> 6 & 1 != 0,
            guest_apic: efr >> 7 & 1 != 0,
            hardware_errors: efr >> 8 & 1 != 0,
            performance_counters: efr >> 9 & 1 != 0,
            host_levels: if hats == 3 { 4 } else { 4 + hats as u8 },
            guest_levels: if gats == 1 { 5 } else { 4 },
        }
    }

    /// Whether the register reads as all ones (no unit there, or it is switched off).
    pub const fn absent(&self) -> bool {
        self.efr == u64::MAX
    }
}

/// The number of levels of an I/O page table and the DTE's Mode field (1..=6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagingMode(u8);

impl PagingMode {
    /// Four levels: 48-bit bus addresses.
    pub const LEVELS_4: PagingMode = PagingMode(4);
    /// Six levels: the full 64-bit bus address space.
    pub const LEVELS_6: PagingMode = PagingMode(6);

    /// The mode with `levels` levels, if `1..=6`.
    pub const fn new(levels: u8) -> Option<Self> {
        if levels >= 1 && levels <= 6 {
            Some(PagingMode(levels))
        } else {
            None
        }
    }

    pub const fn levels(self) -> u8 {
        self.0
    }

    /// Bus address bits covered: `12 + 9 × levels`, at most 64.
    pub const fn address_bits(self) -> u8 {
        let bits = 12 + 9 * self.0;
        if bits > 64 {
            64
        } else {
            bits
        }
    }

    /// Whether `addr` lies inside the bus address space this mode covers.
    pub const fn covers(self, addr: u64) -> bool {
        let bits = self.address_bits();
        bits >= 64 || addr >> bits == 0
    }

    /// The DTE's Mode field.
    pub const fn dte_mode(self) -> u64 {
        self.0 as u64
    }
}

/// The paging mode for domain tables: as many levels as the unit offers (at most six),
/// so the whole bus address space is translated and nothing aliases.
pub const fn pick_paging_mode(features: &Features) -> PagingMode {
    let levels = if features.host_levels > 6 {
        6
    } else {
        features.host_levels
    };
    PagingMode(if levels < 4 { 4 } else { levels })
}

// ---------------------------------------------------------------------------------------
// Device table
// ---------------------------------------------------------------------------------------

/// Bytes of a device table entry.
pub const DTE_BYTES: u64 = 32;
/// Device IDs (requester IDs) per segment.
pub const DEVICE_IDS: usize = 1 << 16;
/// Bytes of a device table covering every device ID (2 MiB, 512 frames).
pub const DEVICE_TABLE_BYTES: u64 = DEVICE_IDS as u64 * DTE_BYTES;

/// DTE quadword 0: V, the entry is valid (with V = 0 DMA passes untranslated).
pub const DTE_V: u64 = 1 << 0;
/// DTE quadword 0: TV, the translation fields are valid.
pub const DTE_TV: u64 = 1 << 1;
/// DTE quadword 0: the Mode field (bits 9..=11).
pub const DTE_MODE_SHIFT: u32 = 9;
/// DTE quadword 0: IR, DMA reads allowed (ANDed with every level's IR).
pub const DTE_IR: u64 = 1 << 61;
/// DTE quadword 0: IW, DMA writes allowed.
pub const DTE_IW: u64 = 1 << 62;
/// DTE quadword 1: SE, suppress I/O page fault events.
pub const DTE_SE: u64 = 1 << 33;
/// DTE quadword 1: SA, suppress all I/O page fault events.
pub const DTE_SA: u64 = 1 << 34;
/// DTE quadword 2: IV, the interrupt remapping fields are valid (0: interrupts pass
/// unchanged).
pub const DTE_IV: u64 = 1 << 0;

/// One device table entry, decoded (the fields this driver uses or must know about).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTableEntry {
    /// V: 0 lets the device's DMA through untranslated.
    pub valid: bool,
    /// TV: the page table root and mode are valid.
    pub translation_valid: bool,
    /// Mode: page-table levels (0: no translation, IR/IW apply to the untranslated address).
    pub mode: u8,
    /// Host page table root pointer.
    pub root_pa: u64,
    /// IR / IW: permissions, ANDed with those of every page-table level.
    pub read: bool,
    pub write: bool,
    /// The domain ID that tags cached translations.
    pub domain_id: u16,
    /// SE / SA: fault events suppressed.
    pub suppress_faults: bool,
    pub suppress_all_faults: bool,
    /// IV: interrupt remapping on for this device.
    pub interrupt_remapping: bool,
}

impl DeviceTableEntry {
    /// A device owned by a domain: DMA translated through the I/O page table at `root_pa`
    /// of `mode` levels, reads and writes allowed as the table says, cached translations
    /// tagged with `domain_id`, faults logged, interrupts not remapped.
    pub const fn translated(root_pa: u64, mode: PagingMode, domain_id: u16) -> Self {
        DeviceTableEntry {
            valid: true,
            translation_valid: true,
            mode: mode.levels(),
            root_pa: root_pa & ADDR_MASK,
            read: true,
            write: true,
            domain_id,
            suppress_faults: false,
            suppress_all_faults: false,
            interrupt_remapping: false,
        }
    }

    /// A device no domain owns: valid and translated, but with neither read nor write
    /// permission, so every DMA faults (and is logged) before any table is read. The root
    /// points at an empty table anyway (`empty_root_pa`), for units that walk regardless.
    /// Domain ID 0 (no domain uses it). Interrupts pass unchanged.
    pub const fn blocked(empty_root_pa: u64, mode: PagingMode) -> Self {
        DeviceTableEntry {
            valid: true,
            translation_valid: true,
            mode: mode.levels(),
            root_pa: empty_root_pa & ADDR_MASK,
            read: false,
            write: false,
            domain_id: 0,
            suppress_faults: false,
            suppress_all_faults: false,
            interrupt_remapping: false,
        }
    }

    /// The four quadwords, lowest first.
    pub const fn encode(&self) -> [u64; 4] {
        let mut q0 = (self.root_pa & ADDR_MASK) | ((self.mode as u64 & 7) << DTE_MODE_SHIFT);
        if self.valid {
            q0 |= DTE_V;
        }
        if self.translation_valid {
            q0 |= DTE_TV;
        }
        if self.read {
            q0 |= DTE_IR;
        }
        if self.write {
            q0 |= DTE_IW;
        }
        let mut q1 = self.domain_id as u64;
        if self.suppress_faults {
            q1 |= DTE_SE;
        }
        if self.suppress_all_faults {
            q1 |= DTE_SA;
        }
        let q2 = if self.interrupt_remapping { DTE_IV } else { 0 };
        [q0, q1, q2, 0]
    }

    /// Decodes an entry as read from the table (any bit pattern).
    pub const fn decode(q: [u64; 4]) -> Self {
        DeviceTableEntry {
            valid: q[0] & DTE_V != 0,
            translation_valid: q[0] & DTE_TV != 0,
            mode: ((q[0] >> DTE_MODE_SHIFT) & 7) as u8,
            root_pa: q[0] & ADDR_MASK,
            read: q[0] & DTE_IR != 0,
            write: q[0] & DTE_IW != 0,
            domain_id: q[1] as u16,
            suppress_faults: q[1] & DTE_SE != 0,
            suppress_all_faults: q[1] & DTE_SA != 0,
            interrupt_remapping: q[2] & DTE_IV != 0,
        }
    }

    /// Whether a device with this entry can reach memory at all.
    pub const fn allows_dma(&self) -> bool {
        !self.valid || self.read || self.write
    }
}

/// Byte offset of `device_id`'s entry in the device table.
pub const fn device_table_offset(device_id: u16) -> u64 {
    device_id as u64 * DTE_BYTES
}

/// The device table base register value for a table of `bytes` (a multiple of 4 KiB,
/// 4 KiB..=2 MiB) at `table_pa`.
pub const fn device_table_base_value(table_pa: u64, bytes: u64) -> u64 {
    let pages = bytes / PAGE_BYTES;
    let size = if pages == 0 { 0 } else { (pages - 1) & 0x1ff };
    (table_pa & ADDR_MASK) | size
}

// ---------------------------------------------------------------------------------------
// Command buffer and event log rings
// ---------------------------------------------------------------------------------------

/// log2 of the entries of the command buffer and the event log used here: 256 entries,
/// 4 KiB, the smallest size the specification allows.
pub const RING_LEN_LOG2: u8 = 8;
/// Bytes of the command buffer and of the event log.
pub const RING_BYTES: u64 = (1 << RING_LEN_LOG2) * 16;
/// The byte offset bits of the head and tail registers (4..=18).
pub const RING_OFFSET_MASK: u64 = 0x7_fff0;

/// The base register value of a command buffer or event log of `2^len_log2` 16-byte
/// entries at `pa` (ComLen / EventLen in bits 56..=59).
pub const fn ring_base_value(pa: u64, len_log2: u8) -> u64 {
    (pa & ADDR_MASK) | ((len_log2 as u64 & 0xf) << 56)
}

/// The offset after `offset` in a ring of `ring_bytes`, wrapping.
pub const fn ring_next(offset: u64, ring_bytes: u64) -> u64 {
    let next = (offset & RING_OFFSET_MASK) + 16;
    if next >= ring_bytes {
        0
    } else {
        next
    }
}

/// Whether a ring with these head and tail offsets has no room for another entry (one
/// slot always stays free, so head == tail means empty).
pub const fn ring_full(head: u64, tail: u64, ring_bytes: u64) -> bool {
    ring_next(tail, ring_bytes) == head & RING_OFFSET_MASK
}

/// Sets the unit up and switches it on: translation off, the device table, the command
/// buffer and the event log (4 KiB each, [`RING_LEN_LOG2`]) with head and tail at 0, the
/// exclusion range off, old status cleared, then translation, event logging and the
/// command buffer on, and a wait until both report running. The device table must already
/// hold blocked entries for every device ID.
pub const fn enable_sequence(
    device_table_pa: u64,
    command_buffer_pa: u64,
    event_log_pa: u64,
) -> [RegOp; 12] {
    let on = CONTROL_IOMMU_EN | CONTROL_EVENT_LOG_EN | CONTROL_CMD_BUF_EN | CONTROL_COHERENT;
    [
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_DEVICE_TABLE_BASE,
            value: device_table_base_value(device_table_pa, DEVICE_TABLE_BYTES),
        },
        RegOp::Write64 {
            offset: REG_COMMAND_BUFFER_BASE,
            value: ring_base_value(command_buffer_pa, RING_LEN_LOG2),
        },
        RegOp::Write64 {
            offset: REG_COMMAND_HEAD,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_COMMAND_TAIL,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_EVENT_LOG_BASE,
            value: ring_base_value(event_log_pa, RING_LEN_LOG2),
        },
        RegOp::Write64 {
            offset: REG_EVENT_HEAD,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_EVENT_TAIL,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_EXCLUSION_BASE,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_STATUS,
            value: STATUS_CLEAR_MASK,
        },
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: on,
        },
        RegOp::Wait64 {
            offset: REG_STATUS,
            mask: STATUS_EVENT_LOG_RUN | STATUS_CMD_BUF_RUN,
            expect: STATUS_EVENT_LOG_RUN | STATUS_CMD_BUF_RUN,
        },
    ]
}

/// Restarts the event log after an overflow, keeping the other enables of `control` (the
/// value last written): logging off, wait until it stops, head and tail to 0, overflow
/// cleared, logging back on.
pub const fn restart_event_log(control: u64) -> [RegOp; 6] {
    [
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: control & !CONTROL_EVENT_LOG_EN,
        },
        RegOp::Wait64 {
            offset: REG_STATUS,
            mask: STATUS_EVENT_LOG_RUN,
            expect: 0,
        },
        RegOp::Write64 {
            offset: REG_EVENT_HEAD,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_EVENT_TAIL,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_STATUS,
            value: STATUS_EVENT_OVERFLOW | STATUS_EVENT_LOG_INT,
        },
        RegOp::Write64 {
            offset: REG_CONTROL,
            value: control | CONTROL_EVENT_LOG_EN,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// A command for the command buffer: two quadwords, lowest first; the opcode is in bits
/// 60..=63 of the first.
pub type Command = [u64; 2];

pub const OP_COMPLETION_WAIT: u8 = 0x1;
pub const OP_INVALIDATE_DEVTAB_ENTRY: u8 = 0x2;
pub const OP_INVALIDATE_IOMMU_PAGES: u8 = 0x3;
pub const OP_INVALIDATE_IOMMU_ALL: u8 = 0x8;

const fn opcode(op: u8) -> u64 {
    (op as u64) << 60
}

/// The opcode of a command.
pub const fn command_opcode(command: &Command) -> u8 {
    (command[0] >> 60) as u8
}

/// COMPLETION_WAIT with the store flag: once every earlier command has completed, the
/// unit writes `data` (8 bytes) to `store_pa` (8-byte aligned, bits 3..=51).
pub const fn completion_wait(store_pa: u64, data: u64) -> Command {
    [
        (store_pa & 0x000f_ffff_ffff_fff8) | 1 | opcode(OP_COMPLETION_WAIT),
        data,
    ]
}

/// INVALIDATE_DEVTAB_ENTRY: the unit forgets what it cached of `device_id`'s entry.
pub const fn invalidate_devtab_entry(device_id: u16) -> Command {
    [device_id as u64 | opcode(OP_INVALIDATE_DEVTAB_ENTRY), 0]
}

/// The INVALIDATE_IOMMU_PAGES address that, with S = 1, covers the whole address space.
pub const INVALIDATE_ALL_ADDRESSES: u64 = 0x7fff_ffff_ffff_f000;
const INVALIDATE_S: u64 = 1 << 0;
const INVALIDATE_PDE: u64 = 1 << 1;

/// INVALIDATE_IOMMU_PAGES for every address of `domain_id`, page directory entries
/// included.
pub const fn invalidate_iommu_pages_domain(domain_id: u16) -> Command {
    [
        (domain_id as u64) << 32 | opcode(OP_INVALIDATE_IOMMU_PAGES),
        INVALIDATE_ALL_ADDRESSES | INVALIDATE_S | INVALIDATE_PDE,
    ]
}

/// INVALIDATE_IOMMU_PAGES for the `2^order` pages of `domain_id` from `gpa` (aligned to
/// the range): S = 0 for one page; otherwise S = 1 and the range size in the address's
/// low bits (ones up to the bit below `order + 11`, zero there). `None` if `gpa` is not
/// aligned or `order` exceeds 51.
pub const fn invalidate_iommu_pages(domain_id: u16, gpa: u64, order: u8) -> Option<Command> {
    if order > 51 {
        return None;
    }
    let range_mask = (PAGE_BYTES << order) - 1;
    if gpa & range_mask != 0 {
        return None;
    }
    let q0 = (domain_id as u64) << 32 | opcode(OP_INVALIDATE_IOMMU_PAGES);
    if order == 0 {
        return Some([q0, gpa | INVALIDATE_PDE]);
    }
    // Bits 12 .. 12 + order - 1 set, bit 12 + order - 1 clear: ones below it.
    let ones = ((1u64 << (order - 1)) - 1) << 12;
    Some([q0, (gpa | ones) | INVALIDATE_S | INVALIDATE_PDE])
}

/// INVALIDATE_IOMMU_ALL (when [`Features::invalidate_all`]): every cached device table
/// entry, translation and interrupt table entry.
pub const fn invalidate_iommu_all() -> Command {
    [opcode(OP_INVALIDATE_IOMMU_ALL), 0]
}

// ---------------------------------------------------------------------------------------
// Event log
// ---------------------------------------------------------------------------------------

pub const EVENT_ILLEGAL_DEV_TABLE_ENTRY: u8 = 0x1;
pub const EVENT_IO_PAGE_FAULT: u8 = 0x2;
pub const EVENT_DEV_TAB_HARDWARE_ERROR: u8 = 0x3;
pub const EVENT_PAGE_TAB_HARDWARE_ERROR: u8 = 0x4;
pub const EVENT_ILLEGAL_COMMAND_ERROR: u8 = 0x5;
pub const EVENT_COMMAND_HARDWARE_ERROR: u8 = 0x6;
pub const EVENT_IOTLB_INV_TIMEOUT: u8 = 0x7;
pub const EVENT_INVALID_DEVICE_REQUEST: u8 = 0x8;
pub const EVENT_INVALID_PPR_REQUEST: u8 = 0x9;
pub const EVENT_COUNTER_ZERO: u8 = 0xa;

/// Event flag GN: the request carried a PASID.
pub const EVENT_FLAG_GN: u16 = 1 << 0;
/// Event flag NX: an execute request (QEMU: the request was a write, see [`Event::is_write`]).
pub const EVENT_FLAG_NX: u16 = 1 << 1;
/// Event flag I: an interrupt request (QEMU sets it on every I/O page fault).
pub const EVENT_FLAG_I: u16 = 1 << 3;
/// Event flag PR: the page was present (a permission fault, not a missing mapping).
pub const EVENT_FLAG_PR: u16 = 1 << 4;
/// Event flag RW: a write (0: a read).
pub const EVENT_FLAG_RW: u16 = 1 << 5;
/// Event flag PE: permission denied.
pub const EVENT_FLAG_PE: u16 = 1 << 6;
/// Event flag RZ: a reserved bit was set in an entry.
pub const EVENT_FLAG_RZ: u16 = 1 << 7;

/// One event log entry, decoded. Every 128-bit pattern decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event code (bits 60..=63); 0 means the entry was not written yet.
    pub code: u8,
    /// The requester (bits 0..=15): bus, device, function.
    pub device_id: u16,
    /// Domain ID, or PASID bits 0..=15 when [`EVENT_FLAG_GN`] is set (bits 32..=47).
    pub domain_or_pasid: u16,
    /// PASID bits 16..=19 (bits 16..=19).
    pub pasid_high: u8,
    /// The flags (bits 48..=59).
    pub flags: u16,
    /// The address (second quadword): the bus address of the request for I/O page faults,
    /// illegal device table entries and invalid device requests; the address of the table
    /// or command the unit could not read for hardware errors.
    pub address: u64,
}

impl Event {
    /// Decodes the two quadwords of an event log entry, lowest first.
    pub const fn decode(lo: u64, hi: u64) -> Self {
        Event {
            code: (lo >> 60) as u8,
            device_id: lo as u16,
            domain_or_pasid: (lo >> 32) as u16,
            pasid_high: ((lo >> 16) & 0xf) as u8,
            flags: ((lo >> 48) & 0xfff) as u16,
            address: hi,
        }
    }

    /// The two quadwords of this entry (the inverse of [`decode`](Self::decode)).
    pub const fn encode(&self) -> [u64; 2] {
        [
            (self.code as u64 & 0xf) << 60
                | (self.flags as u64 & 0xfff) << 48
                | (self.domain_or_pasid as u64) << 32
                | (self.pasid_high as u64 & 0xf) << 16
                | self.device_id as u64,
            self.address,
        ]
    }

    /// The entry was not written yet (the unit may move the tail before the entry lands).
    pub const fn is_empty(&self) -> bool {
        self.code == 0
    }

    /// The requester as a PCI address in `segment` (the IVHD's segment).
    pub const fn device(&self, segment: u16) -> Bdf {
        Bdf::from_source_id(segment, self.device_id)
    }

    pub const fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether the refused request was a write: the RW flag, or (QEMU, every version so
    /// far) NX without GN, where QEMU puts its write permission bit.
    pub const fn is_write(&self) -> bool {
        self.has_flag(EVENT_FLAG_RW)
            || (self.has_flag(EVENT_FLAG_NX) && !self.has_flag(EVENT_FLAG_GN))
    }

    /// Whether the event reports a DMA request from a device that the unit refused, with
    /// the request's bus address in [`address`](Self::address).
    pub const fn is_blocked_dma(&self) -> bool {
        matches!(
            self.code,
            EVENT_IO_PAGE_FAULT | EVENT_ILLEGAL_DEV_TABLE_ENTRY | EVENT_INVALID_DEVICE_REQUEST
        )
    }

    /// The event's name as the specification gives it.
    pub const fn name(&self) -> &'static str {
        match self.code {
            0 => "EMPTY",
            EVENT_ILLEGAL_DEV_TABLE_ENTRY => "ILLEGAL_DEV_TABLE_ENTRY",
            EVENT_IO_PAGE_FAULT => "IO_PAGE_FAULT",
            EVENT_DEV_TAB_HARDWARE_ERROR => "DEV_TAB_HARDWARE_ERROR",
            EVENT_PAGE_TAB_HARDWARE_ERROR => "PAGE_TAB_HARDWARE_ERROR",
            EVENT_ILLEGAL_COMMAND_ERROR => "ILLEGAL_COMMAND_ERROR",
            EVENT_COMMAND_HARDWARE_ERROR => "COMMAND_HARDWARE_ERROR",
            EVENT_IOTLB_INV_TIMEOUT => "IOTLB_INV_TIMEOUT",
            EVENT_INVALID_DEVICE_REQUEST => "INVALID_DEVICE_REQUEST",
            EVENT_INVALID_PPR_REQUEST => "INVALID_PPR_REQUEST",
            EVENT_COUNTER_ZERO => "EVENT_COUNTER_ZERO",
            _ => "UNKNOWN_EVENT",
        }
    }

    /// A short description of why the unit logged it.
    pub const fn reason_text(&self) -> &'static str {
        match self.code {
            EVENT_IO_PAGE_FAULT => {
                if self.has_flag(EVENT_FLAG_RZ) {
                    "reserved bit set in a page-table entry"
                } else if self.has_flag(EVENT_FLAG_PR) || self.has_flag(EVENT_FLAG_PE) {
                    if self.is_write() {
                        "write to a page without write permission"
                    } else {
                        "read of a page without read permission"
                    }
                } else {
                    "address not mapped for this device"
                }
            }
            EVENT_ILLEGAL_DEV_TABLE_ENTRY => "invalid device table entry",
            EVENT_DEV_TAB_HARDWARE_ERROR => "device table not accessible",
            EVENT_PAGE_TAB_HARDWARE_ERROR => "page table not accessible",
            EVENT_ILLEGAL_COMMAND_ERROR => "illegal command in the command buffer",
            EVENT_COMMAND_HARDWARE_ERROR => "command buffer not accessible",
            EVENT_IOTLB_INV_TIMEOUT => "device IOTLB invalidation timed out",
            EVENT_INVALID_DEVICE_REQUEST => "request the device is not allowed to make",
            EVENT_INVALID_PPR_REQUEST => "invalid peripheral page request",
            EVENT_COUNTER_ZERO => "performance counter reached zero",
            0 => "event not written",
            _ => "unknown event",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} device {} domain {:#x} flags {:#x} address {:#x}: {}",
            self.name(),
            self.device(0),
            self.domain_or_pasid,
            self.flags,
            self.address,
            self.reason_text()
        )
    }
}

// ---------------------------------------------------------------------------------------
// I/O page tables
// ---------------------------------------------------------------------------------------

/// Page-table entry: PR, present.
pub const PTE_PR: u64 = 1 << 0;
/// Page-table entry: the Next Level field (bits 9..=11): the level of the table the entry
/// points at, 0 for a page, 7 for a page whose size is coded in its address.
pub const PTE_NEXT_LEVEL_SHIFT: u32 = 9;
/// Page-table entry: IR, reads allowed.
pub const PTE_IR: u64 = 1 << 61;
/// Page-table entry: IW, writes allowed.
pub const PTE_IW: u64 = 1 << 62;
/// An empty slot: not present, Next Level 1. The unit ignores every other bit of a
/// non-present entry, but QEMU only reports a fault for an entry that is not all zero.
pub const PTE_EMPTY: u64 = 1 << PTE_NEXT_LEVEL_SHIFT;

/// Why an I/O page-table operation failed (the same failures as VT-d's tables).
pub type TableError = crate::iopt::TableError;

/// Where a bus address leads, as the unit would walk it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host address (the page's base plus the offset in the page).
    pub hpa: u64,
    pub readable: bool,
    pub writable: bool,
}

/// One domain's I/O page table (the host, "v1" format): `mode.levels()` levels of 512
/// 8-byte entries, 4 KiB pages.
pub type IoPageTable = crate::iopt::Table<HostV1>;

/// The host "v1" entry format. A page entry: PR, Next Level 0, the host address in bits
/// 12..=51, IR, and IW if writable. A table entry: PR, Next Level = the level below, the
/// table's address, IR and IW (the unit ANDs the permissions of every level, the device
/// table entry's included). An empty slot is [`PTE_EMPTY`]; new tables are filled with it.
/// No other bit is set (QEMU treats none of them as reserved, but bits 59 and 60, U and FC,
/// have meanings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostV1;

impl crate::iopt::Format for HostV1 {
    type Shape = PagingMode;
    const EMPTY: u64 = PTE_EMPTY;
    fn levels(mode: PagingMode) -> u8 {
        mode.levels()
    }
    fn covers(mode: PagingMode, bus: u64) -> bool {
        mode.covers(bus)
    }
    fn present(entry: u64) -> bool {
        entry & PTE_PR != 0
    }
    fn is_table(entry: u64, level: u8) -> bool {
        next_level(entry) == level - 1
    }
    fn table_entry(table_pa: u64, below: u8) -> u64 {
        table_entry(table_pa, below)
    }
    fn page_entry(hpa: u64, writable: bool) -> u64 {
        page_entry(hpa, writable)
    }
}

impl IoPageTable {
    /// Where `gpa` (any byte address) leads, as the unit walks it: permissions ANDed over
    /// the levels, Next Level followed (levels may be skipped; a Next Level not below the
    /// current one ends the walk), Next Level 0 at any level a page of that level's size,
    /// 7 a page whose size is coded in its address. `None` where nothing is mapped.
    pub fn translate<M: PhysMem + ?Sized>(&self, mem: &M, gpa: u64) -> Option<Translation> {
        use crate::iopt::{index, level_shift};
        if !self.shape().covers(gpa) {
            return None;
        }
        let mut table = self.root_pa();
        let mut level = self.levels();
        let (mut readable, mut writable) = (true, true);
        loop {
            let entry = mem.read_u64(table + index(gpa, level) * 8);
            if entry & PTE_PR == 0 {
                return None;
            }
            readable &= entry & PTE_IR != 0;
            writable &= entry & PTE_IW != 0;
            let next = next_level(entry);
            let page_bits = match next {
                0 => level_shift(level),
                7 => coded_page_bits(entry)?,
                n if n < level => {
                    table = entry & ADDR_MASK;
                    level = n;
                    continue;
                }
                _ => return None,
            };
            if !(readable || writable) {
                return None;
            }
            let page_mask = if page_bits >= 64 {
                u64::MAX
            } else {
                (1u64 << page_bits) - 1
            };
            let base = entry & ADDR_MASK & !page_mask;
            return Some(Translation {
                hpa: base | (gpa & page_mask),
                readable,
                writable,
            });
        }
    }
}

/// A table entry pointing at the table `table_pa` of level `below`.
pub const fn table_entry(table_pa: u64, below: u8) -> u64 {
    (table_pa & ADDR_MASK) | ((below as u64 & 7) << PTE_NEXT_LEVEL_SHIFT) | PTE_PR | PTE_IR | PTE_IW
}

/// A page entry mapping the 4 KiB page `hpa`.
pub const fn page_entry(hpa: u64, writable: bool) -> u64 {
    let w = if writable { PTE_IW } else { 0 };
    (hpa & ADDR_MASK) | PTE_PR | PTE_IR | w
}

const fn next_level(entry: u64) -> u8 {
    ((entry >> PTE_NEXT_LEVEL_SHIFT) & 7) as u8
}

/// The page size bits of a Next Level 7 entry: the first zero address bit from bit 12,
/// plus one; `None` if there is none below bit 52.
fn coded_page_bits(entry: u64) -> Option<u32> {
    let zero = (!(entry >> 12)).trailing_zeros() + 12;
    (zero < 52).then_some(zero + 1)
}

#[cfg(test)]
mod tests;
