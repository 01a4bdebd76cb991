//! The I/O page tables both IOMMUs walk: radix tables of 512 8-byte entries per level over
//! 4 KiB pages, host address in bits 12..=51. Intel VT-d's second-level tables and AMD-Vi's
//! host tables differ only in how an entry is coded, which [`Format`] says; building,
//! mapping, unmapping and freeing are [`Table`]'s, once for both. Each format keeps its own
//! `translate`, the walk its unit makes (large pages, skipped levels).
//!
//! Which bus addresses to mirror is the caller's policy; tables are kept (empty) after
//! unmaps until [`Table::destroy`]. The caller invalidates the unit's caches after an unmap
//! or a replaced mapping.

use core::fmt;
use core::marker::PhantomData;

/// Host address bits of an entry (both formats).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE_MASK: u64 = 0xfff;

/// Host frames for page tables.
pub trait FrameSource {
    /// A zeroed, 4 KiB-aligned host frame, or `None` when there is none.
    fn alloc_zeroed_frame(&mut self) -> Option<u64>;
}

/// Access to the host memory holding the page tables.
pub trait PhysMem {
    fn read_u64(&self, pa: u64) -> u64;
    fn write_u64(&mut self, pa: u64, value: u64);
}

/// Why an I/O page-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// An address is not 4 KiB aligned.
    Misaligned,
    /// The bus address is beyond the table's reach, or the host address beyond 52 bits.
    AddressTooWide,
    /// No frame for a new table.
    OutOfFrames,
    /// The frame source returned a misaligned or too wide frame.
    BadFrame(u64),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned => write!(f, "address not 4 KiB aligned"),
            Self::AddressTooWide => write!(f, "address beyond the supported width"),
            Self::OutOfFrames => write!(f, "no frame left for an IOMMU page table"),
            Self::BadFrame(pa) => write!(f, "frame source returned unusable frame {pa:#x}"),
        }
    }
}

/// How one unit codes its entries.
pub trait Format {
    /// How far a table reaches: its levels and the bus addresses it covers.
    type Shape: Copy + fmt::Debug + PartialEq + Eq;
    /// A slot with nothing in it; new tables are filled with it.
    const EMPTY: u64;
    fn levels(shape: Self::Shape) -> u8;
    fn covers(shape: Self::Shape, bus: u64) -> bool;
    fn present(entry: u64) -> bool;
    /// Whether the present entry at `level` (2 and up) points at a table one level below.
    fn is_table(entry: u64, level: u8) -> bool;
    /// An entry pointing at the table `table_pa` of level `below`.
    fn table_entry(table_pa: u64, below: u8) -> u64;
    /// An entry mapping the 4 KiB page `hpa`, readable, and writable if `writable`.
    fn page_entry(hpa: u64, writable: bool) -> u64;
}

/// One domain's I/O page table in format `F`.
#[derive(Debug, PartialEq, Eq)]
pub struct Table<F: Format> {
    root_pa: u64,
    shape: F::Shape,
    format: PhantomData<F>,
}

impl<F: Format> Clone for Table<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F: Format> Copy for Table<F> {}

impl<F: Format> Table<F> {
    /// A new, empty table with a root frame from `frames`.
    pub fn new<M: PhysMem + ?Sized, S: FrameSource + ?Sized>(
        mem: &mut M,
        frames: &mut S,
        shape: F::Shape,
    ) -> Result<Self, TableError> {
        let root_pa = alloc_table::<F, _, _>(mem, frames)?;
        Ok(Self::from_root(root_pa, shape))
    }

    /// The table whose root is at `root_pa` (as made by [`new`](Self::new)).
    pub const fn from_root(root_pa: u64, shape: F::Shape) -> Self {
        Table {
            root_pa,
            shape,
            format: PhantomData,
        }
    }

    /// The root frame, for the unit's device or context entry.
    pub const fn root_pa(&self) -> u64 {
        self.root_pa
    }

    pub fn shape(&self) -> F::Shape {
        self.shape
    }

    pub fn levels(&self) -> u8 {
        F::levels(self.shape)
    }

    fn check_bus(&self, bus: u64) -> Result<(), TableError> {
        if bus & PAGE_MASK != 0 {
            return Err(TableError::Misaligned);
        }
        if !F::covers(self.shape, bus) {
            return Err(TableError::AddressTooWide);
        }
        Ok(())
    }

    /// Maps the 4 KiB page at bus address `bus` to `hpa` (readable, and writable if
    /// `writable`), creating tables as needed. Returns the host page it mapped before, if
    /// any (the caller must then invalidate the unit's caches).
    pub fn map_4k<M: PhysMem + ?Sized, S: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut S,
        bus: u64,
        hpa: u64,
        writable: bool,
    ) -> Result<Option<u64>, TableError> {
        self.check_bus(bus)?;
        if hpa & PAGE_MASK != 0 {
            return Err(TableError::Misaligned);
        }
        if hpa & !ADDR_MASK != 0 {
            return Err(TableError::AddressTooWide);
        }
        let mut table = self.root_pa;
        for level in (2..=self.levels()).rev() {
            let slot = table + index(bus, level) * 8;
            let entry = mem.read_u64(slot);
            table = if F::present(entry) {
                entry & ADDR_MASK
            } else {
                let new = alloc_table::<F, _, _>(mem, frames)?;
                mem.write_u64(slot, F::table_entry(new, level - 1));
                new
            };
        }
        let slot = table + index(bus, 1) * 8;
        let old = mem.read_u64(slot);
        mem.write_u64(slot, F::page_entry(hpa, writable));
        Ok(F::present(old).then_some(old & ADDR_MASK))
    }

    /// Removes the mapping of the page at `bus`; returns the host page it mapped.
    pub fn unmap_4k<M: PhysMem + ?Sized>(&mut self, mem: &mut M, bus: u64) -> Option<u64> {
        self.check_bus(bus).ok()?;
        let slot = self.leaf_slot(mem, bus)?;
        let old = mem.read_u64(slot);
        if !F::present(old) {
            return None;
        }
        mem.write_u64(slot, F::EMPTY);
        Some(old & ADDR_MASK)
    }

    /// Hands every table frame of this page table to `visit`, each once, children before
    /// their parent and the root last (for freeing them). Mapped pages are not visited.
    pub fn destroy<M: PhysMem + ?Sized>(self, mem: &M, mut visit: impl FnMut(u64)) {
        visit_tables::<F, M>(mem, self.root_pa, self.levels(), &mut visit);
    }

    /// The address of the leaf entry for `bus`, if its tables exist.
    fn leaf_slot<M: PhysMem + ?Sized>(&self, mem: &M, bus: u64) -> Option<u64> {
        let mut table = self.root_pa;
        for level in (2..=self.levels()).rev() {
            let entry = mem.read_u64(table + index(bus, level) * 8);
            if !F::present(entry) || !F::is_table(entry, level) {
                return None;
            }
            table = entry & ADDR_MASK;
        }
        Some(table + index(bus, 1) * 8)
    }
}

fn visit_tables<F: Format, M: PhysMem + ?Sized>(
    mem: &M,
    table: u64,
    level: u8,
    visit: &mut dyn FnMut(u64),
) {
    if level > 1 {
        for i in 0..512 {
            let entry = mem.read_u64(table + i * 8);
            if F::present(entry) && F::is_table(entry, level) {
                visit_tables::<F, M>(mem, entry & ADDR_MASK, level - 1, visit);
            }
        }
    }
    visit(table);
}

/// A new table frame, filled with `F::EMPTY` where that is not zero.
fn alloc_table<F: Format, M: PhysMem + ?Sized, S: FrameSource + ?Sized>(
    mem: &mut M,
    frames: &mut S,
) -> Result<u64, TableError> {
    let pa = frames.alloc_zeroed_frame().ok_or(TableError::OutOfFrames)?;
    if pa & !ADDR_MASK != 0 {
        return Err(TableError::BadFrame(pa));
    }
    if F::EMPTY != 0 {
        for i in 0..512 {
            mem.write_u64(pa + i * 8, F::EMPTY);
        }
    }
    Ok(pa)
}

/// Bits below the part of an address that level `level` (1 = 4 KiB pages) indexes.
pub const fn level_shift(level: u8) -> u32 {
    12 + 9 * (level as u32 - 1)
}

/// The slot that level `level` uses for `bus`.
pub const fn index(bus: u64, level: u8) -> u64 {
    (bus >> level_shift(level)) & 0x1ff
}
