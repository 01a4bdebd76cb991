//! Intel VT-d DMA remapping, the pure parts: register layout, capability decoding, the
//! root and context tables (legacy mode), second-level page tables ([`SlPageTable`]), the
//! register command sequences as data ([`RegOp`]), and fault records.
//!
//! The hardware crate maps the remapping unit's registers (from the DMAR table), runs the
//! [`RegOp`] sequences with MMIO, and implements [`FrameSource`] and [`PhysMem`] over host
//! memory. Bringing up DMA remapping (VT-d 3.x, chapter 6 and 10; what QEMU 7.2's
//! `intel-iommu` checks is noted where it matters):
//!
//! 1. Read CAP and ECAP, [`Capabilities::decode`], [`pick_agaw`]. QEMU's default
//!    `aw-bits=39` offers only the 39-bit, 3-level format; `aw-bits=48` adds 48-bit.
//! 2. Build a zeroed root table, one context table per bus with passthrough functions,
//!    and one [`SlPageTable`] per domain; point [`root_entry`]s at the context tables and
//!    [`context_entry`]s (translation type 0, the domain's ID) at the page tables. Every
//!    table address must lie below 2^(host address width): QEMU treats higher bits as
//!    reserved (39 bits by default).
//! 3. [`set_root_table`], [`invalidate_context_global`], [`invalidate_iotlb_global`],
//!    then [`enable_translation`]. From then on every DMA of every function behind the
//!    unit is translated; one without a context entry faults (reason 1 or 2).
//! 4. After removing or weakening a mapping: [`invalidate_iotlb_domain`] (or
//!    [`invalidate_iotlb_pages`]); QEMU caches translations. After changing or clearing a
//!    present context entry: [`invalidate_context_device`] then the IOTLB. Making an entry
//!    present needs no invalidation unless CAP.CM (caching mode) is set.
//! 5. Faults: FSTS.PPF says records are pending; read them from FSTS.FRI on
//!    ([`fault_record_indices`]), decode with [`FaultRecord::decode`], clear each with
//!    [`clear_fault_record`], then clear an overflow with [`clear_fault_overflow`].
//!
//! Register widths matter: QEMU rejects 64-bit accesses to its 32-bit registers (GCMD,
//! GSTS, FSTS, FECTL, FEDATA, FEADDR...); [`RegOp`] says which width to use. Register-based
//! invalidation (CCMD, IOTLB) works only while queued invalidation is off, which is the
//! state after reset.
//!
//! Addresses in the requests of the interrupt range `0xfee0_0000..0xfef0_0000` are never
//! translated: they are MSIs ([`INTERRUPT_RANGE`]).
//!
//! Queued invalidation and interrupt remapping (ECAP.QI and ECAP.IR; QEMU 7.2:
//! `intel-iommu,intremap=on`, which TCG also gets by default):
//!
//! 6. [`enable_queued_invalidation`] (IQT = 0, IQA, GCMD.QIE). From then on write
//!    [`InvDesc`]s at the tail, one or more followed by an [`InvDesc::wait`] with a status
//!    write, move IQT past them ([`iq_offset`]) and spin on the status word. QEMU 7.2
//!    performs the queue within the IQT write and ignores CCMD/IOTLB register commands
//!    while the queue is on; a bad descriptor sets FSTS.IQE and stops the queue.
//! 7. [`set_interrupt_remap_table`] (IRTA, GCMD.SIRTP), [`InvDesc::iec_global`], then
//!    [`enable_interrupt_remapping`] (GCMD.IRE, CFI clear). Each entry ([`irte`]) checks
//!    the requester ID; a device's MSI then uses [`remappable_msi_address`] with data 0.
//!    QEMU 7.2 deviates from the specification in two ways: it delivers
//!    compatibility-format MSIs unchanged even with CFI clear, and it records no fault for
//!    a blocked interrupt request (it drops the request and prints a message on its own
//!    stderr), so reasons 0x20..=0x26 are never seen there.

use crate::pci::Bdf;
use core::fmt;
use core::ops::Range;

/// Capability register (64-bit).
pub const REG_CAP: u32 = 0x08;
/// Extended capability register (64-bit).
pub const REG_ECAP: u32 = 0x10;
/// Global command register (32-bit, write-only).
pub const REG_GCMD: u32 = 0x18;
/// Global status register (32-bit).
pub const REG_GSTS: u32 = 0x1c;
/// Root table address register (64-bit).
pub const REG_RTADDR: u32 = 0x20;
/// Context command register (64-bit).
pub const REG_CCMD: u32 = 0x28;
/// Fault status register (32-bit).
pub const REG_FSTS: u32 = 0x34;
/// Fault event control register (32-bit).
pub const REG_FECTL: u32 = 0x38;
/// Fault event data register (32-bit).
pub const REG_FEDATA: u32 = 0x3c;
/// Fault event address register (32-bit).
pub const REG_FEADDR: u32 = 0x40;
/// Fault event upper address register (32-bit).
pub const REG_FEUADDR: u32 = 0x44;
/// Invalidation queue head (64-bit).
pub const REG_IQH: u32 = 0x80;
/// Invalidation queue tail (64-bit).
pub const REG_IQT: u32 = 0x88;
/// Invalidation queue address (64-bit).
pub const REG_IQA: u32 = 0x90;

/// GCMD/GSTS: translation enable / status.
pub const GCMD_TE: u32 = 1 << 31;
/// GCMD: set root table pointer; GSTS: root table pointer status.
pub const GCMD_SRTP: u32 = 1 << 30;
/// GCMD/GSTS: advanced fault logging enable.
pub const GCMD_EAFL: u32 = 1 << 28;
/// GCMD: write buffer flush; GSTS: write buffer flush status (set while flushing).
pub const GCMD_WBF: u32 = 1 << 27;
/// GCMD/GSTS: queued invalidation enable.
pub const GCMD_QIE: u32 = 1 << 26;
/// GCMD/GSTS: interrupt remapping enable.
pub const GCMD_IRE: u32 = 1 << 25;
/// GCMD: set interrupt remapping table pointer.
pub const GCMD_SIRTP: u32 = 1 << 24;
/// GCMD/GSTS: compatibility format interrupts.
pub const GCMD_CFI: u32 = 1 << 23;
/// The GSTS bits that reflect persistent enables (TE, EAFL, QIE, IRE, CFI, and the
/// reserved low bits): a GCMD write must repeat them or it turns them off.
pub const GCMD_PERSISTENT_MASK: u32 = 0x96ff_ffff;

/// CCMD: invalidate context cache (set by software, cleared by hardware when done).
pub const CCMD_ICC: u64 = 1 << 63;
/// CCMD request granularity: global.
pub const CCMD_CIRG_GLOBAL: u64 = 1 << 61;
/// CCMD request granularity: device-selective.
pub const CCMD_CIRG_DEVICE: u64 = 3 << 61;
/// CCMD actual granularity field (0: the request was not performed).
pub const CCMD_CAIG_MASK: u64 = 3 << 59;

/// IOTLB register: invalidate IOTLB (set by software, cleared when done).
pub const IOTLB_IVT: u64 = 1 << 63;
/// IOTLB request granularity: global.
pub const IOTLB_IIRG_GLOBAL: u64 = 1 << 60;
/// IOTLB request granularity: domain-selective.
pub const IOTLB_IIRG_DOMAIN: u64 = 2 << 60;
/// IOTLB request granularity: page-selective (address and mask in IVA).
pub const IOTLB_IIRG_PAGE: u64 = 3 << 60;
/// IOTLB actual granularity field (0: the request was not performed).
pub const IOTLB_IAIG_MASK: u64 = 3 << 57;
/// IOTLB: drain reads before completing.
pub const IOTLB_DR: u64 = 1 << 49;
/// IOTLB: drain writes before completing.
pub const IOTLB_DW: u64 = 1 << 48;

/// Root and context table entries per 4 KiB table.
pub const TABLE_ENTRIES: usize = 256;
/// Bytes of a root or context entry.
pub const ENTRY_BYTES: u64 = 16;
/// Bus addresses that are interrupt messages, never translated.
pub const INTERRUPT_RANGE: Range<u64> = 0xfee0_0000..0xfef0_0000;

/// Second-level entry: read permitted (and, in a non-leaf entry, present).
pub const SL_READ: u64 = 1 << 0;
/// Second-level entry: write permitted.
pub const SL_WRITE: u64 = 1 << 1;
/// Second-level entry at levels 2 and 3: maps a 2 MiB / 1 GiB page.
pub const SL_PAGE_SIZE: u64 = 1 << 7;
/// Second-level entry: the address bits (12..52).
pub const SL_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const PAGE_BYTES: u64 = 4096;
const PAGE_MASK: u64 = PAGE_BYTES - 1;

/// The remapping unit's capabilities (CAP and ECAP decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub cap: u64,
    pub ecap: u64,
    /// Bits of domain ID supported: 4 + 2 × CAP.ND (QEMU: 16).
    pub domain_id_bits: u8,
    /// CAP.RWBF: the write buffer must be flushed after table updates.
    pub required_write_buffer_flush: bool,
    /// CAP.CM: not-present and erroneous entries may be cached (a virtual IOMMU's
    /// "caching mode"): making an entry present then needs an invalidation too.
    pub caching_mode: bool,
    /// CAP.SAGAW: bit 1 39-bit 3-level, bit 2 48-bit 4-level, bit 3 57-bit 5-level.
    pub sagaw: u8,
    /// Maximum guest address width in bits (CAP.MGAW + 1).
    pub mgaw_bits: u8,
    /// Byte offset of the first fault recording register (CAP.FRO × 16).
    pub fault_recording_offset: u32,
    /// Number of fault recording registers (CAP.NFR + 1).
    pub fault_recording_count: u16,
    /// CAP.PSI: page-selective IOTLB invalidation.
    pub page_selective_invalidation: bool,
    /// CAP.MAMV: largest address mask for page-selective invalidation.
    pub max_address_mask: u8,
    /// CAP.SLLPS: second-level large pages (bit 0 2 MiB, bit 1 1 GiB).
    pub second_level_large_pages: u8,
    /// CAP.DRD / CAP.DWD: read / write draining.
    pub drain_read: bool,
    pub drain_write: bool,
    /// ECAP.C: page walks snoop the CPU caches (otherwise table updates must be
    /// written back from the caches, e.g. with `clflush`).
    pub coherent: bool,
    /// ECAP.QI: queued invalidation.
    pub queued_invalidation: bool,
    /// ECAP.DT: device TLBs.
    pub device_tlb: bool,
    /// ECAP.IR: interrupt remapping.
    pub interrupt_remapping: bool,
    /// ECAP.EIM: extended (x2APIC) interrupt mode.
    pub extended_interrupt_mode: bool,
    /// ECAP.PT: pass-through translation type.
    pub pass_through: bool,
    /// ECAP.SC: snoop control.
    pub snoop_control: bool,
    /// Byte offset of the IOTLB register block (ECAP.IRO × 16): IVA there, the IOTLB
    /// register 8 bytes further.
    pub iotlb_offset: u32,
    /// ECAP.SMTS: scalable mode (not used here).
    pub scalable_mode: bool,
}

fn bits(value: u64, low: u32, count: u32) -> u64 {
    (value >> low) & ((1u64 << count) - 1)
}

fn bit(value: u64, at: u32) -> bool {
    value >> at & 1 == 1
}

impl Capabilities {
    /// Decodes the CAP and ECAP register values.
    pub fn decode(cap: u64, ecap: u64) -> Self {
        Capabilities {
            cap,
            ecap,
            domain_id_bits: 4 + 2 * bits(cap, 0, 3) as u8,
            required_write_buffer_flush: bit(cap, 4),
            caching_mode: bit(cap, 7),
            sagaw: bits(cap, 8, 5) as u8,
            mgaw_bits: bits(cap, 16, 6) as u8 + 1,
            fault_recording_offset: bits(cap, 24, 10) as u32 * 16,
            page_selective_invalidation: bit(cap, 39),
            fault_recording_count: bits(cap, 40, 8) as u16 + 1,
            max_address_mask: bits(cap, 48, 6) as u8,
            second_level_large_pages: bits(cap, 34, 4) as u8,
            drain_write: bit(cap, 54),
            drain_read: bit(cap, 55),
            coherent: bit(ecap, 0),
            queued_invalidation: bit(ecap, 1),
            device_tlb: bit(ecap, 2),
            interrupt_remapping: bit(ecap, 3),
            extended_interrupt_mode: bit(ecap, 4),
            pass_through: bit(ecap, 6),
            snoop_control: bit(ecap, 7),
            iotlb_offset: bits(ecap, 8, 10) as u32 * 16,
            scalable_mode: bit(ecap, 43),
        }
    }

    /// Offset of the invalidate address register (IVA, 64-bit).
    pub fn iva_register(&self) -> u32 {
        self.iotlb_offset
    }

    /// Offset of the IOTLB invalidate register (64-bit).
    pub fn iotlb_register(&self) -> u32 {
        self.iotlb_offset + 8
    }

    /// Offset of fault recording register `index` (128 bits: the low qword at the offset,
    /// the high one 8 bytes on), if the unit has that many.
    pub fn fault_record_register(&self, index: u16) -> Option<u32> {
        (index < self.fault_recording_count)
            .then(|| self.fault_recording_offset + u32::from(index) * 16)
    }

    /// Bytes of register space to map: up to the end of the IOTLB registers or of the
    /// last fault recording register, whichever is further (QEMU: 0x230), at least 4 KiB.
    pub fn register_span(&self) -> u32 {
        let faults = self.fault_recording_offset + u32::from(self.fault_recording_count) * 16;
        let iotlb = self.iotlb_offset + 16;
        faults.max(iotlb).max(0x1000)
    }

    /// Largest domain ID the unit supports.
    pub fn max_domain_id(&self) -> u16 {
        let bits = u32::from(self.domain_id_bits.min(16));
        ((1u32 << bits) - 1) as u16
    }

    /// The bus addresses a domain's devices can use with page tables of width `aw`:
    /// below 2^min(AGAW, MGAW). Requests above fault with reason 4.
    pub fn dma_address_limit(&self, aw: AddressWidth) -> u64 {
        1u64 << aw.bits().min(self.mgaw_bits).min(63)
    }
}

/// The second-level page-table formats used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressWidth {
    /// 39-bit guest address width, 3-level tables (context AW encoding 1).
    Bits39,
    /// 48-bit guest address width, 4-level tables (context AW encoding 2).
    Bits48,
}

impl AddressWidth {
    /// Guest address width in bits.
    pub const fn bits(self) -> u8 {
        match self {
            Self::Bits39 => 39,
            Self::Bits48 => 48,
        }
    }

    /// Page-table levels.
    pub const fn levels(self) -> u8 {
        match self {
            Self::Bits39 => 3,
            Self::Bits48 => 4,
        }
    }

    /// The context entry's AW field (`levels - 2`).
    pub const fn context_encoding(self) -> u64 {
        match self {
            Self::Bits39 => 1,
            Self::Bits48 => 2,
        }
    }

    /// The CAP.SAGAW bit that says the unit supports this format.
    pub const fn sagaw_bit(self) -> u8 {
        1 << self.context_encoding()
    }
}

/// The page-table format to use: 48-bit 4-level when supported, else 39-bit 3-level;
/// `None` if the unit supports neither.
pub fn pick_agaw(caps: &Capabilities) -> Option<AddressWidth> {
    [AddressWidth::Bits48, AddressWidth::Bits39]
        .into_iter()
        .find(|aw| caps.sagaw & aw.sagaw_bit() != 0)
}

/// A root entry (128 bits, low qword first) pointing at the context table for one bus:
/// present (bit 0) and the table's 4 KiB-aligned address (its low 12 bits are dropped).
pub const fn root_entry(context_table_pa: u64) -> [u64; 2] {
    [(context_table_pa & SL_ADDR_MASK) | 1, 0]
}

/// A context entry (legacy mode, 128 bits, low qword first) for one function: present,
/// faults reported (FPD = 0), translation type 0 (untranslated requests through the
/// second-level table at `slpt_root_pa`), address width `aw`, domain `domain_id`.
pub const fn context_entry(slpt_root_pa: u64, aw: AddressWidth, domain_id: u16) -> [u64; 2] {
    [
        (slpt_root_pa & SL_ADDR_MASK) | 1,
        aw.context_encoding() | (domain_id as u64) << 8,
    ]
}

/// Byte offset of bus `bus`'s entry in the root table.
pub const fn root_entry_offset(bus: u8) -> u64 {
    bus as u64 * ENTRY_BYTES
}

/// Byte offset of function `devfn` (`device << 3 | function`)'s entry in a context table.
pub const fn context_entry_offset(devfn: u8) -> u64 {
    devfn as u64 * ENTRY_BYTES
}

/// The RTADDR value for a root table at `root_table_pa` (legacy format, TTM = 0).
pub const fn rtaddr_value(root_table_pa: u64) -> u64 {
    root_table_pa & SL_ADDR_MASK
}

/// The GCMD value that issues the command `set` (e.g. [`GCMD_SRTP`], [`GCMD_TE`]) while
/// keeping every persistent enable that `gsts` (just read) shows: GCMD is write-only and
/// each write is a complete command, so leaving out TE would turn translation off.
pub const fn gcmd_value(gsts: u32, set: u32) -> u32 {
    (gsts & GCMD_PERSISTENT_MASK) | set
}

/// The GCMD value that turns the persistent enable `clear` off and keeps the others.
pub const fn gcmd_value_clearing(gsts: u32, clear: u32) -> u32 {
    gsts & GCMD_PERSISTENT_MASK & !clear
}

/// One step of a register sequence, for the hardware crate to perform with MMIO at the
/// unit's register base. A `Wait` spins (with the driver's own bound) until the masked
/// register equals `expect`; QEMU completes every command here within the write, so the
/// first read already matches there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A 32-bit write.
    Write32 { offset: u32, value: u32 },
    /// A 64-bit write as one access.
    Write64 { offset: u32, value: u64 },
    /// Spin until `read32(offset) & mask == expect`.
    Wait32 { offset: u32, mask: u32, expect: u32 },
    /// Spin until `read64(offset) & mask == expect`.
    Wait64 { offset: u32, mask: u64, expect: u64 },
}

/// Loads the root table pointer: RTADDR, GCMD.SRTP (keeping `gsts`'s enables), wait for
/// GSTS.RTPS. The hardware caches are stale afterwards: invalidate the context cache and
/// the IOTLB globally before relying on the new tables.
pub const fn set_root_table(root_table_pa: u64, gsts: u32) -> [RegOp; 3] {
    [
        RegOp::Write64 {
            offset: REG_RTADDR,
            value: rtaddr_value(root_table_pa),
        },
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_SRTP),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_SRTP,
            expect: GCMD_SRTP,
        },
    ]
}

/// Turns translation on (GCMD.TE, keeping `gsts`'s enables) and waits for GSTS.TES.
pub const fn enable_translation(gsts: u32) -> [RegOp; 2] {
    [
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_TE),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_TE,
            expect: GCMD_TE,
        },
    ]
}

/// Turns translation off and waits for GSTS.TES to clear. Devices then reach all of
/// memory: only for tearing the unit down.
pub const fn disable_translation(gsts: u32) -> [RegOp; 2] {
    [
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value_clearing(gsts, GCMD_TE),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_TE,
            expect: 0,
        },
    ]
}

/// Flushes the write buffer (only needed when CAP.RWBF is set), waiting for GSTS.WBFS to
/// clear.
pub const fn flush_write_buffer(gsts: u32) -> [RegOp; 2] {
    [
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_WBF),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_WBF,
            expect: 0,
        },
    ]
}

const fn wait_ccmd() -> RegOp {
    RegOp::Wait64 {
        offset: REG_CCMD,
        mask: CCMD_ICC,
        expect: 0,
    }
}

/// Invalidates the whole context cache (CCMD.ICC with global granularity) and waits for
/// ICC to clear. Afterwards CCMD's CAIG field ([`CCMD_CAIG_MASK`]) is nonzero if the
/// unit performed it.
pub const fn invalidate_context_global() -> [RegOp; 2] {
    [
        RegOp::Write64 {
            offset: REG_CCMD,
            value: CCMD_ICC | CCMD_CIRG_GLOBAL,
        },
        wait_ccmd(),
    ]
}

/// Invalidates the cached context entry of one function (device-selective, function
/// mask 0): `source_id` is its requester ID ([`Bdf::source_id`]), `domain_id` the domain
/// its entry named.
pub const fn invalidate_context_device(domain_id: u16, source_id: u16) -> [RegOp; 2] {
    [
        RegOp::Write64 {
            offset: REG_CCMD,
            value: CCMD_ICC | CCMD_CIRG_DEVICE | (source_id as u64) << 16 | domain_id as u64,
        },
        wait_ccmd(),
    ]
}

fn iotlb_drain(caps: &Capabilities) -> u64 {
    let read = if caps.drain_read { IOTLB_DR } else { 0 };
    let write = if caps.drain_write { IOTLB_DW } else { 0 };
    read | write
}

fn iotlb_ops(caps: &Capabilities, value: u64) -> [RegOp; 2] {
    let offset = caps.iotlb_register();
    [
        RegOp::Write64 {
            offset,
            value: value | iotlb_drain(caps),
        },
        RegOp::Wait64 {
            offset,
            mask: IOTLB_IVT,
            expect: 0,
        },
    ]
}

/// Invalidates every cached translation (IOTLB.IVT, global), draining reads and writes
/// where the unit can, and waits for IVT to clear. Afterwards the register's IAIG field
/// ([`IOTLB_IAIG_MASK`]) is nonzero if the unit performed it.
pub fn invalidate_iotlb_global(caps: &Capabilities) -> [RegOp; 2] {
    iotlb_ops(caps, IOTLB_IVT | IOTLB_IIRG_GLOBAL)
}

/// Invalidates the cached translations of one domain.
pub fn invalidate_iotlb_domain(caps: &Capabilities, domain_id: u16) -> [RegOp; 2] {
    iotlb_ops(
        caps,
        IOTLB_IVT | IOTLB_IIRG_DOMAIN | u64::from(domain_id) << 32,
    )
}

/// Invalidates the cached translations of `2^order` pages of one domain starting at
/// `gpa`: IVA (address and mask) then the IOTLB register. `None` if the unit has no
/// page-selective invalidation, `order` exceeds CAP.MAMV, or `gpa` is not aligned to the
/// range; use [`invalidate_iotlb_domain`] then.
pub fn invalidate_iotlb_pages(
    caps: &Capabilities,
    domain_id: u16,
    gpa: u64,
    order: u8,
) -> Option<[RegOp; 3]> {
    if !caps.page_selective_invalidation || order > caps.max_address_mask || order >= 52 {
        return None;
    }
    let range_mask = (PAGE_BYTES << order) - 1;
    if gpa & range_mask != 0 {
        return None;
    }
    let [write, wait] = iotlb_ops(
        caps,
        IOTLB_IVT | IOTLB_IIRG_PAGE | u64::from(domain_id) << 32,
    );
    Some([
        RegOp::Write64 {
            offset: caps.iva_register(),
            value: gpa | u64::from(order),
        },
        write,
        wait,
    ])
}

/// Sets up fault event interrupts: vector `vector` to the local APIC `dest_apic_id`
/// (physical destination, fixed delivery), then unmasks them (FECTL.IM is set at
/// reset). Without this the driver can still poll FSTS.
pub const fn fault_event_setup(dest_apic_id: u8, vector: u8) -> [RegOp; 4] {
    [
        RegOp::Write32 {
            offset: REG_FEDATA,
            value: vector as u32,
        },
        RegOp::Write32 {
            offset: REG_FEADDR,
            value: 0xfee0_0000 | (dest_apic_id as u32) << 12,
        },
        RegOp::Write32 {
            offset: REG_FEUADDR,
            value: 0,
        },
        RegOp::Write32 {
            offset: REG_FECTL,
            value: 0,
        },
    ]
}

bitflags::bitflags! {
    /// The flags of the fault status register, FSTS (its FRI field, bits 15:8, is read by
    /// [`fault_record_indices`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FaultStatus: u32 {
        /// PFO: a fault was lost because the recording registers were full (write 1 to clear).
        const OVERFLOW = 1 << 0;
        /// PPF: some fault recording register holds a fault (F set; read-only).
        const PENDING = 1 << 1;
        /// IQE: invalidation queue error (write 1 to clear).
        const QUEUE_ERROR = 1 << 4;
        /// ICE: invalidation completion error.
        const COMPLETION_ERROR = 1 << 5;
        /// ITE: invalidation time-out error.
        const TIMEOUT_ERROR = 1 << 6;
        /// IQE or ITE: the invalidation queue stopped.
        const QUEUE_STOPPED = Self::QUEUE_ERROR.bits() | Self::TIMEOUT_ERROR.bits();
    }
}

/// The order to look at the fault recording registers in: from FSTS.FRI, wrapping, each
/// once. Stop at the first whose F bit is clear.
pub fn fault_record_indices(caps: &Capabilities, fsts: u32) -> impl Iterator<Item = u16> {
    let count = caps.fault_recording_count.max(1);
    let first = u16::from((fsts >> 8) as u8) % count;
    (0..count).map(move |k| (first + k) % count)
}

/// Clears fault recording register `index` (writes 1 to its F bit, bit 31 of its last
/// dword, with a 32-bit write); `None` if the unit has no such register.
pub fn clear_fault_record(caps: &Capabilities, index: u16) -> Option<RegOp> {
    let offset = caps.fault_record_register(index)?;
    Some(RegOp::Write32 {
        offset: offset + 12,
        value: 1 << 31,
    })
}

/// Clears the fault overflow and invalidation-queue error flags in FSTS (write 1 to
/// clear), after the records have been cleared.
pub const fn clear_fault_overflow() -> RegOp {
    RegOp::Write32 {
        offset: REG_FSTS,
        value: FaultStatus::all().difference(FaultStatus::PENDING).bits(),
    }
}

/// One fault recording register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The requester (segment 0: the record does not carry the segment; set it from the
    /// unit's DRHD).
    pub source_id: Bdf,
    /// The page of the faulting request (the low 12 bits are not recorded).
    pub fault_address: u64,
    /// The fault reason ([`fault_reason_text`]).
    pub reason: u8,
    /// The request was a write (T = 0); false for reads (T = 1).
    pub is_write: bool,
    /// F: the register holds a fault.
    pub fault: bool,
    /// AT: the request's address type (0 untranslated).
    pub address_type: u8,
    /// The request's PASID, if it had one.
    pub pasid: Option<u32>,
}

impl FaultRecord {
    /// Decodes the low and high qwords of a fault recording register: low bits 12..63
    /// the fault information (page address); high bits 0..15 the source ID, 30 PASID
    /// present, 32..39 the reason, 40..59 the PASID, 60..61 the address type, 62 the type
    /// (0 write, 1 read), 63 the fault flag.
    pub const fn decode(lo: u64, hi: u64) -> Self {
        let pasid_present = hi >> 30 & 1 == 1;
        FaultRecord {
            source_id: Bdf::from_source_id(0, hi as u16),
            fault_address: lo & !PAGE_MASK,
            reason: (hi >> 32) as u8,
            is_write: hi >> 62 & 1 == 0,
            fault: hi >> 63 == 1,
            address_type: (hi >> 60 & 3) as u8,
            pasid: if pasid_present {
                Some((hi >> 40 & 0xf_ffff) as u32)
            } else {
                None
            },
        }
    }

    /// For an interrupt remapping fault (reasons 0x20..=0x26): the interrupt index the
    /// request named (the fault information field's bits 48..63).
    pub const fn interrupt_index(&self) -> Option<u16> {
        if is_interrupt_remapping_fault(self.reason) {
            Some((self.fault_address >> 48) as u16)
        } else {
            None
        }
    }

    /// A short description of the reason.
    pub fn reason_text(&self) -> &'static str {
        fault_reason_text(self.reason)
    }
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DMA {} by {} at {:#x}: fault {:#x} ({})",
            if self.is_write { "write" } else { "read" },
            self.source_id,
            self.fault_address,
            self.reason,
            self.reason_text()
        )
    }
}

/// The VT-d specification's description of a (legacy mode or interrupt remapping) fault
/// reason.
pub fn fault_reason_text(reason: u8) -> &'static str {
    match reason {
        0x1 => "root entry not present",
        0x2 => "context entry not present",
        0x3 => "invalid context entry (address width or translation type)",
        0x4 => "address beyond the address width",
        0x5 => "write to a page without write permission (or not mapped)",
        0x6 => "read of a page without read permission (or not mapped)",
        0x7 => "page-table entry not accessible",
        0x8 => "root table not accessible",
        0x9 => "context table not accessible",
        0xa => "reserved bits set in the root entry",
        0xb => "reserved bits set in the context entry",
        0xc => "reserved bits set in a page-table entry",
        0xd => "request blocked by the context entry's translation type",
        0x20 => "reserved bits set in an interrupt request",
        0x21 => "interrupt index beyond the remapping table",
        0x22 => "interrupt remapping entry not present",
        0x23 => "interrupt remapping table not accessible",
        0x24 => "reserved bits set in an interrupt remapping entry",
        0x25 => "compatibility-format interrupt blocked",
        0x26 => "remapped interrupt blocked (source ID check)",
        _ => "unknown fault reason",
    }
}

// ---------------------------------------------------------------------------------------
// Queued invalidation and interrupt remapping (VT-d 3.x, sections 5.1 and 6.5.2, 9.10)
// ---------------------------------------------------------------------------------------

/// Bytes of one (128-bit) invalidation descriptor.
pub const INV_DESC_BYTES: u64 = 16;
/// Descriptors in a one-page (QS = 0) queue of 128-bit descriptors.
pub const INV_QUEUE_ENTRIES: u16 = 256;

/// Descriptor type: context-cache invalidate.
pub const INV_TYPE_CONTEXT: u64 = 0x1;
/// Descriptor type: IOTLB invalidate.
pub const INV_TYPE_IOTLB: u64 = 0x2;
/// Descriptor type: interrupt entry cache invalidate.
pub const INV_TYPE_IEC: u64 = 0x4;
/// Descriptor type: invalidation wait.
pub const INV_TYPE_WAIT: u64 = 0x5;
/// Wait descriptor: status write (SW).
pub const INV_WAIT_SW: u64 = 1 << 5;
/// Wait descriptor: interrupt on completion (IF). Not combined with SW here: QEMU 7.2
/// asserts that a wait descriptor asks for one of the two, not both.
pub const INV_WAIT_IF: u64 = 1 << 4;

/// Interrupt remapping table address register (64-bit).
pub const REG_IRTA: u32 = 0xb8;
/// IRTA: extended interrupt mode enable (x2APIC destinations).
pub const IRTA_EIME: u64 = 1 << 11;
/// Largest IRTA size field: 2^(15 + 1) = 65536 entries.
pub const IRTA_MAX_SIZE_FIELD: u8 = 15;
/// Bytes of one interrupt remapping table entry.
pub const IRTE_BYTES: u64 = 16;
/// Entries in a one-page interrupt remapping table (IRTA size field 7).
pub const IRT_ONE_PAGE_ENTRIES: u16 = 256;

/// GSTS: interrupt remapping table pointer status (same bit as GCMD.SIRTP).
pub const GSTS_IRTPS: u32 = GCMD_SIRTP;

/// One 128-bit invalidation descriptor (low qword first), written to the queue as two
/// little-endian qwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvDesc(pub [u64; 2]);

impl InvDesc {
    /// Global context-cache invalidation.
    pub const fn context_global() -> Self {
        InvDesc([INV_TYPE_CONTEXT | 1 << 4, 0])
    }

    /// Device-selective context-cache invalidation (function mask 0): `source_id` is the
    /// function's requester ID, `domain_id` the domain its entry named.
    pub const fn context_device(domain_id: u16, source_id: u16) -> Self {
        InvDesc([
            INV_TYPE_CONTEXT | 3 << 4 | (domain_id as u64) << 16 | (source_id as u64) << 32,
            0,
        ])
    }

    fn iotlb(caps: &Capabilities, granularity: u64, domain_id: u16) -> Self {
        let drain_read = if caps.drain_read { 1 << 7 } else { 0 };
        let drain_write = if caps.drain_write { 1 << 6 } else { 0 };
        InvDesc([
            INV_TYPE_IOTLB
                | granularity << 4
                | drain_read
                | drain_write
                | u64::from(domain_id) << 16,
            0,
        ])
    }

    /// Global IOTLB invalidation (draining reads and writes where the unit can).
    pub fn iotlb_global(caps: &Capabilities) -> Self {
        Self::iotlb(caps, 1, 0)
    }

    /// Domain-selective IOTLB invalidation.
    pub fn iotlb_domain(caps: &Capabilities, domain_id: u16) -> Self {
        Self::iotlb(caps, 2, domain_id)
    }

    /// Global interrupt entry cache invalidation.
    pub const fn iec_global() -> Self {
        InvDesc([INV_TYPE_IEC, 0])
    }

    /// Index-selective interrupt entry cache invalidation of the one entry `index`
    /// (index mask 0).
    pub const fn iec_index(index: u16) -> Self {
        InvDesc([INV_TYPE_IEC | 1 << 4 | (index as u64) << 32, 0])
    }

    /// Invalidation wait with status write: when every earlier descriptor is done, the
    /// unit writes the 32-bit `status` to `status_pa` (4-byte aligned). `None` if the
    /// address is not aligned.
    pub const fn wait(status_pa: u64, status: u32) -> Option<Self> {
        if status_pa & 3 != 0 {
            return None;
        }
        Some(InvDesc([
            INV_TYPE_WAIT | INV_WAIT_SW | (status as u64) << 32,
            status_pa,
        ]))
    }

    /// The descriptor type (bits 0..3).
    pub const fn kind(&self) -> u64 {
        self.0[0] & 0xf
    }
}

/// The IQA value for a queue of 128-bit descriptors at `queue_pa` (4 KiB aligned) that is
/// `2^qs` pages long.
pub const fn iqa_value(queue_pa: u64, qs: u8) -> u64 {
    (queue_pa & SL_ADDR_MASK) | (qs as u64 & 7)
}

/// The IQT (or IQH) value for descriptor slot `index` of a 128-bit-descriptor queue:
/// the byte offset, in bits 4..18.
pub const fn iq_offset(index: u16) -> u64 {
    (index as u64 & 0x7fff) << 4
}

/// The slot an IQH/IQT value names (128-bit descriptors).
pub const fn iq_index(register: u64) -> u16 {
    ((register >> 4) & 0x7fff) as u16
}

/// Turns queued invalidation on for the queue at `queue_pa` (one page, QS = 0): the tail
/// is reset to 0 first (the head is 0 after reset and follows the tail), then IQA, then
/// GCMD.QIE (keeping `gsts`'s enables), then wait for GSTS.QIES. From then on the unit
/// ignores the CCMD and IOTLB registers (QEMU 7.2 does): every invalidation goes through
/// the queue.
pub const fn enable_queued_invalidation(queue_pa: u64, gsts: u32) -> [RegOp; 4] {
    [
        RegOp::Write64 {
            offset: REG_IQT,
            value: 0,
        },
        RegOp::Write64 {
            offset: REG_IQA,
            value: iqa_value(queue_pa, 0),
        },
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_QIE),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_QIE,
            expect: GCMD_QIE,
        },
    ]
}

/// The IRTA size field for a table of at least `entries` entries (2^(S+1) entries):
/// `None` for 0 or more than 65536.
pub const fn irta_size_field(entries: u32) -> Option<u8> {
    if entries == 0 || entries > 1 << 16 {
        return None;
    }
    let mut s = 0u8;
    while (1u32 << (s + 1)) < entries {
        s += 1;
    }
    Some(s)
}

/// The IRTA value for a table at `table_pa` (4 KiB aligned) with size field `size_field`,
/// xAPIC destinations (EIME clear) unless `extended`.
pub const fn irta_value(table_pa: u64, size_field: u8, extended: bool) -> u64 {
    (table_pa & SL_ADDR_MASK) | if extended { IRTA_EIME } else { 0 } | (size_field & 0xf) as u64
}

/// Loads the interrupt remapping table pointer: IRTA, GCMD.SIRTP (keeping `gsts`'s
/// enables), wait for GSTS.IRTPS. Then invalidate the interrupt entry cache globally
/// before [`enable_interrupt_remapping`].
pub const fn set_interrupt_remap_table(irta: u64, gsts: u32) -> [RegOp; 3] {
    [
        RegOp::Write64 {
            offset: REG_IRTA,
            value: irta,
        },
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_SIRTP),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GSTS_IRTPS,
            expect: GSTS_IRTPS,
        },
    ]
}

/// Turns interrupt remapping on (GCMD.IRE, keeping `gsts`'s enables; CFI stays clear, so
/// compatibility-format interrupts are to be blocked) and waits for GSTS.IRES.
pub const fn enable_interrupt_remapping(gsts: u32) -> [RegOp; 2] {
    [
        RegOp::Write32 {
            offset: REG_GCMD,
            value: gcmd_value(gsts, GCMD_IRE),
        },
        RegOp::Wait32 {
            offset: REG_GSTS,
            mask: GCMD_IRE,
            expect: GCMD_IRE,
        },
    ]
}

/// IRTE: present.
pub const IRTE_PRESENT: u64 = 1 << 0;
/// IRTE source validation type 1: the requester ID must match SID under the SQ mask.
pub const IRTE_SVT_REQUESTER: u64 = 1 << 18;

/// An interrupt remapping table entry (remapped format, 128 bits, low qword first) that
/// delivers `vector` (fixed delivery, edge, physical destination, no redirection hint,
/// faults reported) to the local APIC `dest_apic_id`, and only for requests whose
/// requester ID is `source_id` (SVT = 1, SQ = 0: all 16 bits compared). With xAPIC
/// destinations (IRTA.EIME clear) the APIC ID sits in bits 8..15 of the destination
/// field (bits 40..47 of the entry); with x2APIC it is the whole 32-bit field.
/// `None` for vectors 0..15 (not deliverable as fixed interrupts).
pub const fn irte(
    dest_apic_id: u32,
    vector: u8,
    source_id: u16,
    extended: bool,
) -> Option<[u64; 2]> {
    if vector < 16 || (!extended && dest_apic_id > 0xff) {
        return None;
    }
    let dest = if extended {
        dest_apic_id
    } else {
        dest_apic_id << 8
    };
    Some([
        IRTE_PRESENT | (vector as u64) << 16 | (dest as u64) << 32,
        source_id as u64 | IRTE_SVT_REQUESTER,
    ])
}

/// A remappable-format interrupt entry, decoded from the fields that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrteView {
    pub present: bool,
    pub vector: u8,
    pub destination: u32,
    pub source_id: u16,
    pub source_validation: u8,
    pub source_qualifier: u8,
}

impl IrteView {
    pub const fn decode(entry: [u64; 2]) -> Self {
        IrteView {
            present: entry[0] & IRTE_PRESENT != 0,
            vector: (entry[0] >> 16) as u8,
            destination: (entry[0] >> 32) as u32,
            source_id: entry[1] as u16,
            source_validation: (entry[1] >> 18 & 3) as u8,
            source_qualifier: (entry[1] >> 16 & 3) as u8,
        }
    }
}

/// The MSI address (low 32 bits) of a remappable-format interrupt naming remapping
/// table entry `handle`: 0xfee in bits 20..31, handle bits 0..14 in address bits 5..19,
/// bit 4 (interrupt format) set, SHV (bit 3) clear, handle bit 15 in address bit 2. The
/// data word is then 0 (no subhandle), and the high address dword 0.
pub const fn remappable_msi_address(handle: u16) -> u32 {
    0xfee0_0000 | ((handle as u32) & 0x7fff) << 5 | 1 << 4 | ((handle as u32) >> 15 & 1) << 2
}

/// The handle a remappable-format MSI address names, or `None` for a compatibility-format
/// address (bit 4 clear) or one outside the interrupt range.
pub const fn msi_handle(address: u32) -> Option<u16> {
    if address >> 20 != 0xfee || address & 1 << 4 == 0 {
        return None;
    }
    Some(((address >> 5) & 0x7fff | ((address >> 2) & 1) << 15) as u16)
}

/// Interrupt remapping fault reasons are 0x20..=0x26.
pub const fn is_interrupt_remapping_fault(reason: u8) -> bool {
    matches!(reason, 0x20..=0x26)
}

pub use crate::iopt::{FrameSource, PhysMem, TableError as SlError};

/// Where a guest address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host address (the page's base plus the offset in the page).
    pub hpa: u64,
    pub writable: bool,
}

/// One domain's second-level (DMA) page table, of 3 or 4 levels of 512 8-byte entries.
pub type SlPageTable = crate::iopt::Table<SecondLevel>;

/// The second-level entry format. Leaves map 4 KiB pages: bit 0 read, bit 1 write, the host
/// address in bits 12..51. Non-leaf entries carry read and write and point at the next
/// table (the unit checks the permission of every level it walks: a non-leaf entry without
/// W blocks writes). No other bit is set. QEMU 7.2 treats as reserved (fault 0xc): bit 11
/// (snoop; allowed only with snoop control or scalable mode), bit 7 of a 4th-level entry,
/// bit 62 (except in a leaf when device TLBs are on), and every address bit at or above
/// its `aw-bits` (39 by default), so page tables and mapped pages must lie below 512 GiB
/// there; it ignores bits 2..10 (bit 7 at levels 2 and 3 means a large page), 52..61 and 63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondLevel;

impl crate::iopt::Format for SecondLevel {
    type Shape = AddressWidth;
    const EMPTY: u64 = 0;
    fn levels(aw: AddressWidth) -> u8 {
        aw.levels()
    }
    fn covers(aw: AddressWidth, bus: u64) -> bool {
        bus >> aw.bits() == 0
    }
    fn present(entry: u64) -> bool {
        entry & (SL_READ | SL_WRITE) != 0
    }
    fn is_table(entry: u64, _level: u8) -> bool {
        entry & SL_PAGE_SIZE == 0
    }
    fn table_entry(table_pa: u64, _below: u8) -> u64 {
        table_pa | SL_READ | SL_WRITE
    }
    fn page_entry(hpa: u64, writable: bool) -> u64 {
        hpa | SL_READ | if writable { SL_WRITE } else { 0 }
    }
}

impl SlPageTable {
    /// Where `gpa` (any byte address) leads, as the unit would walk it.
    pub fn translate<M: PhysMem + ?Sized>(&self, mem: &M, gpa: u64) -> Option<Translation> {
        use crate::iopt::{index, level_shift, Format};
        if !SecondLevel::covers(self.shape(), gpa) {
            return None;
        }
        let mut table = self.root_pa();
        let mut writable = true;
        for level in (1..=self.levels()).rev() {
            let entry = mem.read_u64(table + index(gpa, level) * 8);
            if !SecondLevel::present(entry) {
                return None;
            }
            writable &= entry & SL_WRITE != 0;
            let large = matches!(level, 2 | 3) && entry & SL_PAGE_SIZE != 0;
            if level == 1 || large {
                let page_bytes = 1u64 << level_shift(level);
                let base = entry & SL_ADDR_MASK & !(page_bytes - 1);
                return Some(Translation {
                    hpa: base | (gpa & (page_bytes - 1)),
                    writable,
                });
            }
            table = entry & SL_ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests;
