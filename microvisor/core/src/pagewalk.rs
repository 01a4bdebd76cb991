//! Guest-virtual to guest-physical translation, for the pointer arguments of hypercalls,
//! and copies to and from guest-virtual buffers.
//!
//! Hypercall pointers are linear addresses in the calling vCPU's current page tables
//! (`XEN-ABI.md` §2.1). [`translate`] walks those tables through [`GuestPhysMemory`], which
//! the hardware crate implements over the domain's nested page table, so a walk can only
//! ever read the domain's own RAM. Supported modes, chosen from the vCPU's registers:
//!
//! | CR0.PG | EFER.LMA | CR4.PAE | mode | page sizes |
//! |---|---|---|---|---|
//! | 0 | - | - | no paging: GPA = GVA mod 2^32 | - |
//! | 1 | 0 | 0 | 32-bit, 2 levels | 4 KiB, 4 MiB (CR4.PSE) |
//! | 1 | 0 | 1 | PAE, 3 levels | 4 KiB, 2 MiB |
//! | 1 | 1 | 1 | long mode, 4 levels (LA57 is rejected) | 4 KiB, 2 MiB, 1 GiB |
//!
//! Every access is a supervisor access (guests run in ring 0): a write faults on a
//! read-only entry only when CR0.WP is set. Reserved bits that are checked: PS in a PML4E,
//! the low reserved bits of large-page entries, bit 21 of a 4 MiB PDE, the NX bit when
//! EFER.NXE is clear, bits 62:52 in PAE entries, and the reserved bits of PAE PDPTEs. Bits
//! between the guest's MAXPHYADDR and 51 are not checked: an address there is not guest
//! RAM, which the walk reports anyway. Accessed and dirty bits are **not** set; segments are
//! assumed flat.
//!
//! Levels in errors: 4 = PML4E, 3 = PDPTE, 2 = PDE, 1 = PTE.

use x86_64::registers::control::{Cr0Flags as Cr0, Cr4Flags as Cr4};
use x86_64::registers::model_specific::EferFlags as Efer;
use x86_64::structures::paging::PageTableFlags as Pte;

/// The guest-physical memory of one domain, as the microvisor may access it.
pub trait GuestPhysMemory {
    /// Reads the little-endian `u64` at `gpa`; `None` if any byte is not guest RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
    /// Reads `buf.len()` bytes at `gpa`; false (and `buf` unspecified) if not guest RAM.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes `buf` at `gpa`; false if not guest RAM (nothing need have been written).
    fn write(&mut self, gpa: u64, buf: &[u8]) -> bool;
}

/// The control registers that decide how a vCPU translates addresses (as in its VMCB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingMode {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// The kind of access a translation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a guest-virtual address could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` is not present.
    NotPresent { level: u8 },
    /// A write through a read-only entry (first read-only `level`) with CR0.WP set.
    WriteProtected { level: u8 },
    /// The entry at `level` has a reserved bit set.
    ReservedBit { level: u8 },
    /// The address is not canonical (long mode).
    NonCanonical(u64),
    /// A paging-structure entry at `gpa` is not in guest RAM.
    TableNotInRam { gpa: u64 },
    /// The translated address `gpa` is not in guest RAM.
    NotGuestRam { gpa: u64 },
    /// 5-level paging (CR4.LA57) is not supported.
    FiveLevelPaging,
}

impl core::fmt::Display for WalkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NotPresent { level } => write!(f, "level {level} entry not present"),
            Self::WriteProtected { level } => {
                write!(f, "write through read-only level {level} entry")
            }
            Self::ReservedBit { level } => write!(f, "reserved bit set in level {level} entry"),
            Self::NonCanonical(gva) => write!(f, "non-canonical address {gva:#x}"),
            Self::TableNotInRam { gpa } => {
                write!(f, "page table entry at {gpa:#x} is not guest RAM")
            }
            Self::NotGuestRam { gpa } => write!(f, "address {gpa:#x} is not guest RAM"),
            Self::FiveLevelPaging => write!(f, "5-level paging is not supported"),
        }
    }
}

/// Physical-address bits 51:12 of a PAE or long-mode entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 62:52, reserved in PAE entries.
const PAE_HIGH_RESERVED: u64 = 0x7ff0_0000_0000_0000;
/// Bits 63:52, 8:5 and 2:1, reserved in a PAE PDPTE.
const PAE_PDPTE_RESERVED: u64 = 0xfff0_0000_0000_01e6;
/// Bit 21, reserved in a 4 MiB PDE.
const PSE_RESERVED: u32 = 1 << 21;

const PAGE_SIZE: u64 = 4096;

/// Translates `gva` for an `access` by the vCPU whose registers are `mode`.
pub fn translate<M: GuestPhysMemory + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    gva: u64,
    access: Access,
) -> Result<u64, WalkError> {
    if mode.cr0 & Cr0::PAGING.bits() == 0 {
        return Ok(gva & 0xffff_ffff);
    }
    let check_write = access == Access::Write && mode.cr0 & Cr0::WRITE_PROTECT.bits() != 0;
    let nx_reserved = mode.efer & Efer::NO_EXECUTE_ENABLE.bits() == 0;
    let walk = if mode.efer & Efer::LONG_MODE_ACTIVE.bits() != 0 {
        if mode.cr4 & Cr4::L5_PAGING.bits() != 0 {
            return Err(WalkError::FiveLevelPaging);
        }
        walk_long(mem, mode.cr3, gva, nx_reserved)?
    } else if mode.cr4 & Cr4::PHYSICAL_ADDRESS_EXTENSION.bits() != 0 {
        walk_pae(mem, mode.cr3, gva & 0xffff_ffff, nx_reserved)?
    } else {
        walk_32(mem, mode.cr3, gva & 0xffff_ffff, mode.cr4)?
    };
    match walk.first_read_only_level {
        Some(level) if check_write => Err(WalkError::WriteProtected { level }),
        _ => Ok(walk.gpa),
    }
}

/// Copies `buf.len()` bytes from guest-virtual `gva` into `buf`, page by page.
/// On error `buf` may be partly filled.
pub fn copy_from_guest<M: GuestPhysMemory + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    gva: u64,
    buf: &mut [u8],
) -> Result<(), WalkError> {
    let mut va = gva;
    for chunk in PageChunks::new(gva, buf.len()) {
        let gpa = translate(mem, mode, va, Access::Read)?;
        if !mem.read(gpa, &mut buf[chunk.clone()]) {
            return Err(WalkError::NotGuestRam { gpa });
        }
        va = va.wrapping_add(chunk.len() as u64);
    }
    Ok(())
}

/// Copies `buf` to guest-virtual `gva`, page by page. On error the pages before the
/// failing one have been written (as with Xen's `copy_to_guest`).
pub fn copy_to_guest<M: GuestPhysMemory + ?Sized>(
    mem: &mut M,
    mode: &PagingMode,
    gva: u64,
    buf: &[u8],
) -> Result<(), WalkError> {
    let mut va = gva;
    for chunk in PageChunks::new(gva, buf.len()) {
        let gpa = translate(mem, mode, va, Access::Write)?;
        if !mem.write(gpa, &buf[chunk.clone()]) {
            return Err(WalkError::NotGuestRam { gpa });
        }
        va = va.wrapping_add(chunk.len() as u64);
    }
    Ok(())
}

/// Splits `[0, len)` of a buffer that starts at `gva` at 4 KiB page boundaries.
struct PageChunks {
    offset: usize,
    len: usize,
    page_offset: usize,
}

impl PageChunks {
    fn new(gva: u64, len: usize) -> Self {
        PageChunks {
            offset: 0,
            len,
            page_offset: (gva % PAGE_SIZE) as usize,
        }
    }
}

impl Iterator for PageChunks {
    type Item = core::ops::Range<usize>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.len {
            return None;
        }
        let in_page = PAGE_SIZE as usize - self.page_offset;
        let end = self.offset + in_page.min(self.len - self.offset);
        let chunk = self.offset..end;
        self.offset = end;
        self.page_offset = 0;
        Some(chunk)
    }
}

/// The outcome of a successful walk.
struct Walk {
    gpa: u64,
    first_read_only_level: Option<u8>,
}

impl Walk {
    fn note_writable(first_read_only_level: &mut Option<u8>, entry: u64, level: u8) {
        if entry & Pte::WRITABLE.bits() == 0 && first_read_only_level.is_none() {
            *first_read_only_level = Some(level);
        }
    }
}

fn read_entry<M: GuestPhysMemory + ?Sized>(mem: &M, gpa: u64) -> Result<u64, WalkError> {
    mem.read_u64(gpa).ok_or(WalkError::TableNotInRam { gpa })
}

/// Long mode, 4 levels.
fn walk_long<M: GuestPhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    gva: u64,
    nx_reserved: bool,
) -> Result<Walk, WalkError> {
    let canonical = ((gva << 16) as i64 >> 16) as u64;
    if canonical != gva {
        return Err(WalkError::NonCanonical(gva));
    }
    let mut read_only = None;
    let mut table = cr3 & ADDR_MASK;
    for level in (1..=4u8).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry_gpa = table + ((gva >> shift) & 0x1ff) * 8;
        let entry = read_entry(mem, entry_gpa)?;
        if entry & Pte::PRESENT.bits() == 0 {
            return Err(WalkError::NotPresent { level });
        }
        if nx_reserved && entry & Pte::NO_EXECUTE.bits() != 0 {
            return Err(WalkError::ReservedBit { level });
        }
        Walk::note_writable(&mut read_only, entry, level);
        let large = entry & Pte::HUGE_PAGE.bits() != 0;
        if level == 4 && large {
            return Err(WalkError::ReservedBit { level });
        }
        if level == 1 || (large && level <= 3) {
            let page_mask = (1u64 << shift) - 1;
            // Bit 12 of a large-page entry is PAT; bits 13..shift are reserved.
            if level > 1 && entry & page_mask & !0x1fff != 0 {
                return Err(WalkError::ReservedBit { level });
            }
            let gpa = (entry & ADDR_MASK & !page_mask) | (gva & page_mask);
            return Ok(Walk {
                gpa,
                first_read_only_level: read_only,
            });
        }
        table = entry & ADDR_MASK;
    }
    // The loop returns at level 1.
    Err(WalkError::NotPresent { level: 1 })
}

/// PAE, 3 levels over a 32-bit address.
fn walk_pae<M: GuestPhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    gva: u64,
    nx_reserved: bool,
) -> Result<Walk, WalkError> {
    let pdpte_gpa = (cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8;
    let pdpte = read_entry(mem, pdpte_gpa)?;
    if pdpte & Pte::PRESENT.bits() == 0 {
        return Err(WalkError::NotPresent { level: 3 });
    }
    if pdpte & PAE_PDPTE_RESERVED != 0 {
        return Err(WalkError::ReservedBit { level: 3 });
    }
    let mut read_only = None;
    let mut table = pdpte & ADDR_MASK;
    for level in (1..=2u8).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry = read_entry(mem, table + ((gva >> shift) & 0x1ff) * 8)?;
        if entry & Pte::PRESENT.bits() == 0 {
            return Err(WalkError::NotPresent { level });
        }
        if entry & PAE_HIGH_RESERVED != 0 || (nx_reserved && entry & Pte::NO_EXECUTE.bits() != 0) {
            return Err(WalkError::ReservedBit { level });
        }
        Walk::note_writable(&mut read_only, entry, level);
        if level == 1 || entry & Pte::HUGE_PAGE.bits() != 0 {
            let page_mask = (1u64 << shift) - 1;
            if level > 1 && entry & page_mask & !0x1fff != 0 {
                return Err(WalkError::ReservedBit { level });
            }
            let gpa = (entry & ADDR_MASK & !page_mask) | (gva & page_mask);
            return Ok(Walk {
                gpa,
                first_read_only_level: read_only,
            });
        }
        table = entry & ADDR_MASK;
    }
    Err(WalkError::NotPresent { level: 1 })
}

/// 32-bit paging, 2 levels of 4-byte entries.
fn walk_32<M: GuestPhysMemory + ?Sized>(
    mem: &M,
    cr3: u64,
    gva: u64,
    cr4: u64,
) -> Result<Walk, WalkError> {
    let mut read_only = None;
    let pde = read_entry_32(mem, (cr3 & 0xffff_f000) + (gva >> 22) * 4)?;
    if pde & Pte::PRESENT.bits() as u32 == 0 {
        return Err(WalkError::NotPresent { level: 2 });
    }
    Walk::note_writable(&mut read_only, u64::from(pde), 2);
    if cr4 & Cr4::PAGE_SIZE_EXTENSION.bits() != 0 && pde & Pte::HUGE_PAGE.bits() as u32 != 0 {
        if pde & PSE_RESERVED != 0 {
            return Err(WalkError::ReservedBit { level: 2 });
        }
        // PSE-36/40: PDE bits 20:13 are physical-address bits 39:32.
        let high = u64::from((pde >> 13) & 0xff) << 32;
        let gpa = high | u64::from(pde & 0xffc0_0000) | (gva & 0x3f_ffff);
        return Ok(Walk {
            gpa,
            first_read_only_level: read_only,
        });
    }
    let pte = read_entry_32(
        mem,
        u64::from(pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4,
    )?;
    if pte & Pte::PRESENT.bits() as u32 == 0 {
        return Err(WalkError::NotPresent { level: 1 });
    }
    Walk::note_writable(&mut read_only, u64::from(pte), 1);
    let gpa = u64::from(pte & 0xffff_f000) | (gva & 0xfff);
    Ok(Walk {
        gpa,
        first_read_only_level: read_only,
    })
}

fn read_entry_32<M: GuestPhysMemory + ?Sized>(mem: &M, gpa: u64) -> Result<u32, WalkError> {
    let mut bytes = [0u8; 4];
    if mem.read(gpa, &mut bytes) {
        Ok(u32::from_le_bytes(bytes))
    } else {
        Err(WalkError::TableNotInRam { gpa })
    }
}

#[cfg(test)]
mod tests;
