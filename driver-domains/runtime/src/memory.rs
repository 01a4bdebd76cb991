//! Whole-page access to free RAM (see [`crate::layout`]): RAM above `BootInfo::image_end`,
//! less the loader's data pages. No Rust object lives there and the runtime never makes a
//! reference into it, so it is reached only here, through raw pointers with volatile
//! 8-byte accesses (the compiler may not drop or merge them).

use crate::boot_info::BootInfo;
use crate::layout::{Range, PAGE_BYTES};

fn words(range: Range) -> impl Iterator<Item = *mut u64> {
    (range.start..range.end)
        .step_by(8)
        .map(|addr| core::ptr::with_exposed_provenance_mut::<u64>(addr as usize))
}

/// Writes `byte` to every byte of free RAM; returns the number of pages written.
pub fn fill_free_ram(info: &BootInfo, byte: u8) -> u64 {
    let pattern = u64::from_ne_bytes([byte; 8]);
    let mut pages = 0;
    info.for_each_free_range(|range| {
        for word in words(range) {
            // SAFETY: free ranges are page-aligned RAM below 4 GiB (identity-mapped) that no
            // Rust object occupies (the memory plan keeps the image, heap and loader data
            // out), so an aligned volatile write there breaks no reference.
            unsafe { word.write_volatile(pattern) };
        }
        pages += range.len() / PAGE_BYTES;
    });
    pages
}

/// Reads all of free RAM; returns `(pages, bytes that are not zero)`.
pub fn scan_free_ram(info: &BootInfo) -> (u64, u64) {
    let mut pages = 0;
    let mut nonzero = 0;
    info.for_each_free_range(|range| {
        for word in words(range) {
            // SAFETY: as in fill_free_ram; an aligned volatile read of an integer.
            let value = unsafe { word.read_volatile() };
            if value != 0 {
                nonzero +=
                    u64::from(value.to_ne_bytes().iter().filter(|&&b| b != 0).count() as u32);
            }
        }
        pages += range.len() / PAGE_BYTES;
    });
    (pages, nonzero)
}
