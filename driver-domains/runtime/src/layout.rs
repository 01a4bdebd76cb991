//! Where things lie in a domain's guest-physical memory, and which RAM is free.
//!
//! ```text
//! 0x0 ........ 0x100000   low RAM: not used by the runtime (the loader may keep its
//!                          start info, command line and memory map here)
//! 0x100000 ... image.end  the image: .text, .rodata, the Xen note, .data, .bss; .bss holds
//!                          the boot page tables (6 pages), the boot vCPU's 64 KiB stack,
//!                          the IDT, the per-vCPU time records and the copies of the start
//!                          info, command line and memory map
//! heap.start = image.end ... heap.end
//!                          the heap (`#[global_allocator]`): every `Box`/`Vec`, and the
//!                          64 KiB stacks of the secondary vCPUs
//! heap.end ... RAM top    free RAM: nothing of the runtime's is here; the runtime never
//!                          makes a reference into it ([`crate::memory`] reaches it only
//!                          through raw pointers), except for the pages the loader put its
//!                          data in (see [`MemoryLayout::loader_data`])
//! ```
//!
//! `BootInfo::image_end` is `heap.end`: the first guest-physical address the runtime does
//! not use. Only guest-physical 0..4 GiB is mapped (identity, 2 MiB pages), so free RAM is
//! clipped at 4 GiB.
//!
//! The heap size: the domain may ask for a size in [`crate::entry!`]; by default it is half
//! of the RAM between the image and the end of the RAM range that holds the image, at most
//! [`DEFAULT_HEAP_MAX_BYTES`].

use heapless::Vec;
use microvisor_abi::pvh::{HvmMemmapEntry, MEMMAP_TYPE_RAM};

pub const PAGE_BYTES: u64 = 4096;
/// The runtime's page tables map guest-physical `0..IDENTITY_MAP_END` only.
pub const IDENTITY_MAP_END: u64 = 1 << 32;
/// The default heap is at most this large.
pub const DEFAULT_HEAP_MAX_BYTES: u64 = 16 << 20;
/// The heap is at least this large (the runtime itself needs it for vCPU stacks).
pub const MIN_HEAP_BYTES: u64 = 256 << 10;
/// At most this many loader-data ranges are kept out of free RAM.
pub const MAX_LOADER_RANGES: usize = 8;

/// A guest-physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The smallest page-aligned range that covers this one.
    pub const fn pages_outward(&self) -> Range {
        Range::new(align_down(self.start), align_up_saturating(self.end))
    }

    /// The largest page-aligned range inside this one (possibly empty).
    pub const fn pages_inward(&self) -> Range {
        Range::new(align_up_saturating(self.start), align_down(self.end))
    }
}

const fn align_down(addr: u64) -> u64 {
    addr & !(PAGE_BYTES - 1)
}

const fn align_up_saturating(addr: u64) -> u64 {
    match addr.checked_add(PAGE_BYTES - 1) {
        Some(a) => align_down(a),
        None => align_down(u64::MAX),
    }
}

/// Why no layout fits the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// No RAM range of the memory map holds the page right after the image.
    NoRamAfterImage { image_end: u64 },
    /// The heap does not fit between the image and the end of its RAM range.
    HeapDoesNotFit { wanted: u64, available: u64 },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRamAfterImage { image_end } => {
                write!(f, "no RAM in the memory map at the image end {image_end:#x}")
            }
            Self::HeapDoesNotFit { wanted, available } => write!(
                f,
                "a heap of {wanted:#x} bytes does not fit in the {available:#x} bytes of RAM after the image"
            ),
        }
    }
}

/// The memory plan made at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// The loaded image, .bss included (page-aligned end).
    pub image: Range,
    /// The heap; `heap.start == image.end`.
    pub heap: Range,
    /// End of the highest RAM range of the memory map (the domain's RAM size).
    pub ram_top: u64,
    /// Pages the loader wrote its data into (start info, command line, memory map, module
    /// list, modules), page-aligned. They are kept out of free RAM.
    pub loader_data: Vec<Range, MAX_LOADER_RANGES>,
}

/// End of the highest RAM range, or 0 if the map has none.
pub fn ram_top(memmap: &[HvmMemmapEntry]) -> u64 {
    memmap
        .iter()
        .filter(|e| e.kind == MEMMAP_TYPE_RAM)
        .map(|e| e.addr.saturating_add(e.size))
        .max()
        .unwrap_or(0)
}

/// Plans the heap after `image` (whose end must be page-aligned) and records the loader's
/// data ranges (the first [`MAX_LOADER_RANGES`] non-empty ones).
pub fn plan(
    image: Range,
    memmap: &[HvmMemmapEntry],
    heap_bytes: Option<u64>,
    loader_data: &[Range],
) -> Result<MemoryLayout, LayoutError> {
    let region_end = memmap
        .iter()
        .filter(|e| e.kind == MEMMAP_TYPE_RAM)
        .map(|e| Range::new(e.addr, e.addr.saturating_add(e.size)))
        .find(|r| r.contains(image.end))
        .map(|r| align_down(r.end.min(IDENTITY_MAP_END)))
        .filter(|&end| end > image.end)
        .ok_or(LayoutError::NoRamAfterImage {
            image_end: image.end,
        })?;
    let available = region_end - image.end;
    let wanted = match heap_bytes {
        Some(bytes) => align_up_saturating(bytes.max(MIN_HEAP_BYTES)),
        None => align_down(available / 2).clamp(MIN_HEAP_BYTES, DEFAULT_HEAP_MAX_BYTES),
    };
    if wanted > available {
        return Err(LayoutError::HeapDoesNotFit { wanted, available });
    }
    let mut kept = Vec::new();
    for range in loader_data.iter().filter(|r| !r.is_empty()) {
        if kept.push(range.pages_outward()).is_err() {
            break;
        }
    }
    Ok(MemoryLayout {
        image,
        heap: Range::new(image.end, image.end + wanted),
        ram_top: ram_top(memmap),
        loader_data: kept,
    })
}

impl MemoryLayout {
    /// The first guest-physical address the runtime does not use (`heap.end`).
    pub fn image_end(&self) -> u64 {
        self.heap.end
    }

    /// Calls `f` with each page-aligned range of free RAM: RAM of the memory map above
    /// `heap.end` and below 4 GiB, less the loader's data pages. Ranges come in the memory
    /// map's order; overlapping map entries are not merged.
    pub fn for_each_free_range(&self, memmap: &[HvmMemmapEntry], mut f: impl FnMut(Range)) {
        let mut holes = self.loader_data.clone();
        holes.sort_unstable_by_key(|r| r.start);
        for entry in memmap.iter().filter(|e| e.kind == MEMMAP_TYPE_RAM) {
            let start = entry.addr.max(self.heap.end);
            let end = entry.addr.saturating_add(entry.size).min(IDENTITY_MAP_END);
            let ram = Range::new(start, end).pages_inward();
            if ram.is_empty() {
                continue;
            }
            let mut cursor = ram.start;
            for hole in holes.iter().filter(|h| h.overlaps(&ram)) {
                if hole.start > cursor {
                    f(Range::new(cursor, hole.start));
                }
                cursor = cursor.max(hole.end);
            }
            if cursor < ram.end {
                f(Range::new(cursor, ram.end));
            }
        }
    }

    /// Whether `addr` lies in memory the runtime uses (the image or the heap).
    pub fn is_runtime_owned(&self, addr: u64) -> bool {
        Range::new(self.image.start, self.heap.end).contains(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ram(addr: u64, size: u64) -> HvmMemmapEntry {
        HvmMemmapEntry {
            addr,
            size,
            kind: MEMMAP_TYPE_RAM,
            reserved: 0,
        }
    }

    fn reserved(addr: u64, size: u64) -> HvmMemmapEntry {
        HvmMemmapEntry {
            addr,
            size,
            kind: 2,
            reserved: 0,
        }
    }

    fn free(layout: &MemoryLayout, memmap: &[HvmMemmapEntry]) -> std::vec::Vec<Range> {
        let mut out = std::vec::Vec::new();
        layout.for_each_free_range(memmap, |r| out.push(r));
        out
    }

    #[test]
    fn default_heap_is_half_the_free_ram_capped() {
        let image = Range::new(MIB, MIB + 0x40000);
        let map = [ram(0, 0xa0000), ram(MIB, 15 * MIB)];
        let layout = plan(image, &map, None, &[]).unwrap();
        assert_eq!(layout.heap.start, image.end);
        assert_eq!(layout.heap.len(), align_down((16 * MIB - image.end) / 2));
        assert_eq!(layout.ram_top, 16 * MIB);

        let big = [ram(0, 512 * MIB)];
        let layout = plan(image, &big, None, &[]).unwrap();
        assert_eq!(layout.heap.len(), DEFAULT_HEAP_MAX_BYTES);
        assert_eq!(layout.image_end(), image.end + DEFAULT_HEAP_MAX_BYTES);
    }

    #[test]
    fn requested_heap_is_page_rounded_and_must_fit() {
        let image = Range::new(MIB, 2 * MIB);
        let map = [ram(0, 4 * MIB)];
        let layout = plan(image, &map, Some(MIB + 1), &[]).unwrap();
        assert_eq!(layout.heap, Range::new(2 * MIB, 3 * MIB + PAGE_BYTES));
        assert_eq!(
            plan(image, &map, Some(3 * MIB), &[]),
            Err(LayoutError::HeapDoesNotFit {
                wanted: 3 * MIB,
                available: 2 * MIB
            })
        );
        assert_eq!(
            plan(image, &map, Some(1), &[]).unwrap().heap.len(),
            MIN_HEAP_BYTES
        );
    }

    #[test]
    fn needs_ram_right_after_the_image() {
        let image = Range::new(MIB, 2 * MIB);
        assert_eq!(
            plan(image, &[ram(0, MIB)], None, &[]),
            Err(LayoutError::NoRamAfterImage { image_end: 2 * MIB })
        );
        assert_eq!(
            plan(image, &[reserved(0, 64 * MIB)], None, &[]),
            Err(LayoutError::NoRamAfterImage { image_end: 2 * MIB })
        );
        assert_eq!(
            plan(image, &[ram(0, 2 * MIB)], None, &[]),
            Err(LayoutError::NoRamAfterImage { image_end: 2 * MIB })
        );
    }

    #[test]
    fn free_ram_skips_heap_reserved_ranges_loader_pages_and_high_memory() {
        let image = Range::new(MIB, 2 * MIB);
        let map = [
            ram(0, 0xa0000),
            reserved(0xf0000, 0x10000),
            ram(MIB, 7 * MIB),
            reserved(8 * MIB, MIB),
            ram(9 * MIB, MIB + 100),
            ram(IDENTITY_MAP_END - MIB, 2 * MIB),
        ];
        // Start info at 4 MiB + 8 (one page), command line spanning two pages, memmap below
        // the heap end (ignored), an empty range (ignored).
        let loader = [
            Range::new(4 * MIB + 8, 4 * MIB + 64),
            Range::new(5 * MIB - 10, 5 * MIB + 10),
            Range::new(0x9000, 0x9100),
            Range::new(0, 0),
        ];
        let layout = plan(image, &map, Some(MIB), &loader).unwrap();
        assert_eq!(layout.loader_data.len(), 3);
        assert_eq!(
            free(&layout, &map),
            [
                Range::new(3 * MIB, 4 * MIB),
                Range::new(4 * MIB + PAGE_BYTES, 5 * MIB - PAGE_BYTES),
                Range::new(5 * MIB + PAGE_BYTES, 8 * MIB),
                Range::new(9 * MIB, 10 * MIB),
                Range::new(IDENTITY_MAP_END - MIB, IDENTITY_MAP_END),
            ]
        );
        assert!(layout.is_runtime_owned(MIB));
        assert!(layout.is_runtime_owned(3 * MIB - 1));
        assert!(!layout.is_runtime_owned(3 * MIB));
        assert!(!layout.is_runtime_owned(0x1000));
    }

    #[test]
    fn overlapping_and_unsorted_holes() {
        let image = Range::new(MIB, 2 * MIB);
        let map = [ram(0, 16 * MIB)];
        let loader = [
            Range::new(10 * MIB, 11 * MIB),
            Range::new(6 * MIB, 7 * MIB),
            Range::new(6 * MIB + 5, 6 * MIB + 9),
            Range::new(16 * MIB - 1, 16 * MIB),
        ];
        let layout = plan(image, &map, Some(MIB), &loader).unwrap();
        assert_eq!(
            free(&layout, &map),
            [
                Range::new(3 * MIB, 6 * MIB),
                Range::new(7 * MIB, 10 * MIB),
                Range::new(11 * MIB, 16 * MIB - PAGE_BYTES),
            ]
        );
    }

    #[test]
    fn ram_top_ignores_other_types() {
        assert_eq!(ram_top(&[ram(0, MIB), reserved(MIB, 100 * MIB)]), MIB);
        assert_eq!(ram_top(&[]), 0);
    }
}
