//! Nested page tables: one per domain, mapping its guest-physical addresses to the frames it
//! owns (4 KiB pages, four levels, AMD64 long-mode format). This table *is* the domain's
//! address space: a guest-physical address it does not map raises a nested page fault.
//!
//! Leaf entries carry the software bit [`OWNED`] when the frame belongs to the domain (and
//! is scrubbed and freed with it); later, grant mappings of foreign frames will not.

use crate::mem::{self, PAGE_SIZE};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// Nested walks are user accesses: every level needs U=1.
const USER: u64 = 1 << 2;
pub const OWNED: u64 = 1 << 9;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub struct NestedPageTable {
    root_pa: u64,
}

#[derive(Debug)]
pub struct OutOfMemory;

fn entry_ptr(table_pa: u64, index: u64) -> *mut u64 {
    mem::phys_ptr::<u64>(table_pa + index * 8)
}

fn read_entry(table_pa: u64, index: u64) -> u64 {
    // SAFETY: table_pa is a table frame owned by this NPT (allocated here), index < 512.
    unsafe { core::ptr::read_volatile(entry_ptr(table_pa, index)) }
}

fn write_entry(table_pa: u64, index: u64, value: u64) {
    // SAFETY: as for read_entry; the table is not in use by a CPU while it is being changed
    // in a way that matters (entries are only added for unmapped addresses before the domain
    // runs, or removed at teardown after it stopped).
    unsafe { core::ptr::write_volatile(entry_ptr(table_pa, index), value) }
}

impl NestedPageTable {
    pub fn new() -> Result<Self, OutOfMemory> {
        Ok(Self {
            root_pa: mem::alloc_zeroed().ok_or(OutOfMemory)?,
        })
    }

    /// Host-physical address of the top-level table, for the VMCB's `N_CR3`.
    pub fn root_pa(&self) -> u64 {
        self.root_pa
    }

    fn index(gpa: u64, level: u32) -> u64 {
        (gpa >> (12 + 9 * level)) & 0x1ff
    }

    /// Map one 4 KiB guest page. `owned` frames are freed with the table.
    pub fn map(
        &mut self,
        gpa: u64,
        hpa: u64,
        writable: bool,
        owned: bool,
    ) -> Result<(), OutOfMemory> {
        let mut table = self.root_pa;
        for level in (1..4).rev() {
            let index = Self::index(gpa, level);
            let entry = read_entry(table, index);
            table = if entry & PRESENT != 0 {
                entry & ADDR_MASK
            } else {
                let next = mem::alloc_zeroed().ok_or(OutOfMemory)?;
                write_entry(table, index, next | PRESENT | WRITABLE | USER);
                next
            };
        }
        let flags =
            PRESENT | USER | if writable { WRITABLE } else { 0 } | if owned { OWNED } else { 0 };
        write_entry(table, Self::index(gpa, 0), (hpa & ADDR_MASK) | flags);
        Ok(())
    }

    /// Map a device's MMIO page (uncached: PCD|PWT), not owned by the domain.
    pub fn map_mmio(&mut self, gpa: u64, hpa: u64) -> Result<(), OutOfMemory> {
        self.map(gpa, hpa, true, false)?;
        let mut table = self.root_pa;
        for level in (1..4).rev() {
            table = read_entry(table, Self::index(gpa, level)) & ADDR_MASK;
        }
        let index = Self::index(gpa, 0);
        write_entry(table, index, read_entry(table, index) | (1 << 3) | (1 << 4));
        Ok(())
    }

    /// Remove the mapping of one guest page; returns the frame and whether it was owned.
    /// Every vCPU flushes its TLB at each VMRUN; a caller that frees the frame must first make
    /// sure no vCPU of the domain still runs with an old translation.
    pub fn unmap(&mut self, gpa: u64) -> Option<(u64, bool)> {
        let mut table = self.root_pa;
        for level in (1..4).rev() {
            let entry = read_entry(table, Self::index(gpa, level));
            if entry & PRESENT == 0 {
                return None;
            }
            table = entry & ADDR_MASK;
        }
        let index = Self::index(gpa, 0);
        let entry = read_entry(table, index);
        if entry & PRESENT == 0 {
            return None;
        }
        write_entry(table, index, 0);
        Some((entry & ADDR_MASK, entry & OWNED != 0))
    }

    /// A copyable read-only handle for translations (valid while the domain exists).
    pub fn view(&self) -> NptView {
        NptView {
            root_pa: self.root_pa,
        }
    }

    pub fn translate(&self, gpa: u64) -> Option<u64> {
        self.view().translate(gpa)
    }

    /// Scrub and free every owned frame and every table frame. Returns the number of owned
    /// frames released. The domain must not be running on any CPU.
    pub fn destroy(self) -> u64 {
        fn walk(table: u64, level: u32) -> u64 {
            let mut owned = 0;
            for index in 0..512 {
                let entry = read_entry(table, index);
                if entry & PRESENT == 0 {
                    continue;
                }
                if level == 0 {
                    if entry & OWNED != 0 {
                        mem::free(entry & ADDR_MASK);
                        owned += 1;
                    }
                } else {
                    owned += walk(entry & ADDR_MASK, level - 1);
                    mem::free(entry & ADDR_MASK);
                }
            }
            owned
        }
        let owned = walk(self.root_pa, 3);
        mem::free(self.root_pa);
        owned
    }
}

/// Read-only access to a nested page table. Only used while the owning domain cannot be torn
/// down (one of its vCPUs is in the microvisor, or the builder holds it).
#[derive(Clone, Copy)]
pub struct NptView {
    root_pa: u64,
}

impl NptView {
    pub fn from_root(root_pa: u64) -> Self {
        Self { root_pa }
    }

    fn leaf(self, gpa: u64) -> Option<u64> {
        if gpa >> 48 != 0 {
            return None;
        }
        let mut table = self.root_pa;
        for level in (1..4).rev() {
            let entry = read_entry(table, NestedPageTable::index(gpa, level));
            if entry & PRESENT == 0 {
                return None;
            }
            table = entry & ADDR_MASK;
        }
        let entry = read_entry(table, NestedPageTable::index(gpa, 0));
        (entry & PRESENT != 0).then_some(entry)
    }

    /// The host-physical address behind a guest-physical one, if mapped.
    pub fn translate(self, gpa: u64) -> Option<u64> {
        self.leaf(gpa)
            .map(|entry| (entry & ADDR_MASK) | (gpa & (PAGE_SIZE - 1)))
    }

    /// Whether the guest may write the page at `gpa`.
    pub fn is_writable(self, gpa: u64) -> bool {
        self.leaf(gpa).is_some_and(|entry| entry & WRITABLE != 0)
    }

    /// The host frame behind `gpa` only if it is RAM the domain owns (not a shared page or a
    /// foreign frame mapped into it): what a domain may grant.
    pub fn translate_owned(self, gpa: u64) -> Option<u64> {
        self.leaf(gpa)
            .filter(|entry| entry & OWNED != 0)
            .map(|entry| (entry & ADDR_MASK) | (gpa & (PAGE_SIZE - 1)))
    }
}
