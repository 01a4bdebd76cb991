//! The heap: a `#[global_allocator]` (a linked-list allocator behind a spin lock) over the
//! range [`crate::layout::MemoryLayout::heap`] that boot chose, right after the image.

use linked_list_allocator::LockedHeap;

use crate::layout::Range;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands the range to the allocator; called once at boot, before any allocation.
pub(crate) fn init(range: Range) {
    let bottom = core::ptr::with_exposed_provenance_mut::<u8>(range.start as usize);
    // SAFETY: boot calls this once, with a page-aligned range of RAM below 4 GiB (so
    // identity-mapped) that the memory plan gives to the heap alone: it lies after the
    // image and before free RAM, and nothing else in the runtime refers to it.
    unsafe { HEAP.lock().init(bottom, range.len() as usize) };
}

/// Bytes of heap not allocated now.
pub fn free_bytes() -> usize {
    HEAP.lock().free()
}

/// Bytes of heap in all.
pub fn size_bytes() -> usize {
    HEAP.lock().size()
}
