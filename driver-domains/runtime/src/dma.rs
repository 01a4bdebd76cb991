//! Memory a device may DMA into.
//!
//! A passthrough device reaches memory through the IOMMU, which the microvisor programs so
//! that the device of a domain sees exactly that domain's RAM, at its guest-physical
//! addresses: a bus address is the guest-physical address, and the runtime identity-maps
//! guest-physical memory, so it is also the pointer. DMA memory is therefore just
//! page-aligned, zeroed heap memory ([`DmaRegion`]); [`bus_addr`] gives the address to put
//! in a descriptor.
//!
//! Rust's rules still apply to memory a device writes: hand a region to a device only while
//! nothing reads or borrows it (the virtio block driver in [`crate::virtio`] keeps the
//! buffer mutably borrowed until the request completed or the device was reset).

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

use crate::layout::PAGE_BYTES;

const PAGE: usize = PAGE_BYTES as usize;

/// The bus address of memory at `ptr` (identity: the guest-physical address).
pub fn bus_addr<T: ?Sized>(ptr: *const T) -> u64 {
    ptr.cast::<u8>().expose_provenance() as u64
}

fn layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE)?, PAGE).ok()
}

/// Allocates `pages` zeroed, page-aligned pages of the heap; `None` if `pages` is 0 or the
/// heap has no room. Free with [`free_pages`].
pub(crate) fn alloc_pages(pages: usize) -> Option<NonNull<u8>> {
    if pages == 0 {
        return None;
    }
    let layout = layout(pages)?;
    // SAFETY: the layout has a non-zero size.
    let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
    // Its address is handed to devices (and taken back from them) by number.
    let _ = ptr.as_ptr().expose_provenance();
    Some(ptr)
}

/// Frees what [`alloc_pages`] returned.
///
/// # Safety
/// `ptr` came from `alloc_pages(pages)` with the same `pages`, is not freed yet, and no
/// device may access it any more.
pub(crate) unsafe fn free_pages(ptr: NonNull<u8>, pages: usize) {
    let Some(layout) = layout(pages) else { return };
    // SAFETY: allocated by `alloc_pages` with this layout (the caller's contract).
    unsafe { dealloc(ptr.as_ptr(), layout) };
}

/// Zeroed, page-aligned, whole pages of the heap that a device may read or write at
/// [`DmaRegion::bus_addr`].
pub struct DmaRegion {
    ptr: NonNull<u8>,
    pages: usize,
}

// SAFETY: the region is plain memory owned by this value; access goes through `&`/`&mut`.
unsafe impl Send for DmaRegion {}
// SAFETY: as for Send; `&DmaRegion` gives only shared reads.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    /// At least `bytes` bytes (whole pages, at least one); `None` if the heap has no room.
    pub fn new(bytes: usize) -> Option<Self> {
        Self::pages(bytes.div_ceil(PAGE).max(1))
    }

    /// `pages` pages; `None` if `pages` is 0 or the heap has no room.
    pub fn pages(pages: usize) -> Option<Self> {
        Some(Self {
            ptr: alloc_pages(pages)?,
            pages,
        })
    }

    /// The address a device uses for the first byte (= its guest-physical address).
    pub fn bus_addr(&self) -> u64 {
        bus_addr(self.ptr.as_ptr())
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.pages * PAGE
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the pointer is a live allocation of `len()` bytes owned by `self`,
        // initialised (zeroed) at allocation; the shared borrow of `self` keeps it alive and
        // excludes `as_mut_slice`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the mutable borrow of `self` makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc_pages(self.pages)`; a device only had it while a
        // borrow of it was held, which has ended.
        unsafe { free_pages(self.ptr, self.pages) };
    }
}

impl core::fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DmaRegion")
            .field("bus_addr", &format_args!("{:#x}", self.bus_addr()))
            .field("pages", &self.pages)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_page_aligned_zeroed_whole_pages() {
        for bytes in [0, 1, 512, 4096, 4097, 3 * 4096] {
            let mut region = DmaRegion::new(bytes).unwrap();
            assert_eq!(region.bus_addr() % PAGE_BYTES, 0);
            assert_eq!(region.len(), bytes.div_ceil(PAGE).max(1) * PAGE);
            assert!(region.as_slice().iter().all(|&b| b == 0));
            region.as_mut_slice().fill(0xa5);
            assert_eq!(region.bus_addr(), region.as_slice().as_ptr() as u64);
        }
        assert!(DmaRegion::pages(0).is_none());
    }
}
