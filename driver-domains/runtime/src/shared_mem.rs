//! Pages shared with another domain or with the microvisor, reached only with atomic
//! accesses (the other side writes them concurrently, so no Rust reference to their bytes
//! is ever made).
//!
//! - [`ForeignPage`] (crate-internal): a page that is not RAM of this domain and belongs to
//!   no Rust object: `shared_info`, grant-table frames, the xenstore and console rings the
//!   builder put at fixed addresses, and foreign grants mapped by [`crate::grant_table`].
//! - [`OwnedPage`]: a zeroed page of the heap, for memory this domain grants to a peer (a
//!   front-end's ring page). It is only ever accessed atomically, so a peer writing it is
//!   harmless, and it is never returned to the heap while a grant of it may still be live
//!   (see [`crate::grant_table`]).
//!
//! Both implement [`xen_ring::SharedPage`]; index words use acquire/release, byte copies
//! relaxed atomics (8 bytes at a time where aligned).

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_ring::SharedPage;

use crate::layout::PAGE_BYTES;

const PAGE: usize = PAGE_BYTES as usize;

/// Atomic access to one 4096-byte page at a fixed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ForeignPage {
    addr: usize,
}

impl ForeignPage {
    /// # Safety
    /// `addr` is page-aligned and identity-mapped; the page stays mapped while this value (or
    /// a copy) is used; no Rust object lives there, and nothing accesses it non-atomically.
    pub(crate) const unsafe fn new(addr: u64) -> Self {
        Self {
            addr: addr as usize,
        }
    }

    pub(crate) fn addr(&self) -> u64 {
        self.addr as u64
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        assert!(
            offset + core::mem::size_of::<T>() <= PAGE
                && offset & (core::mem::align_of::<T>() - 1) == 0,
            "shared page access at {offset:#x}"
        );
        core::ptr::with_exposed_provenance_mut::<T>(self.addr + offset)
    }

    pub(crate) fn u8(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: in bounds of the page (checked by `ptr`), which `new`'s contract keeps
        // mapped, free of Rust objects and accessed only atomically.
        unsafe { AtomicU8::from_ptr(self.ptr(offset)) }
    }

    pub(crate) fn u16(&self, offset: usize) -> &AtomicU16 {
        // SAFETY: as in `u8`; `ptr` checked the alignment.
        unsafe { AtomicU16::from_ptr(self.ptr(offset)) }
    }

    pub(crate) fn u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as in `u16`.
        unsafe { AtomicU32::from_ptr(self.ptr(offset)) }
    }

    pub(crate) fn u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `u16`.
        unsafe { AtomicU64::from_ptr(self.ptr(offset)) }
    }

    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            if (offset + i) & 7 == 0 && out.len() - i >= 8 {
                let word = self.u64(offset + i).load(Ordering::Relaxed);
                out[i..i + 8].copy_from_slice(&word.to_le_bytes());
                i += 8;
            } else {
                out[i] = self.u8(offset + i).load(Ordering::Relaxed);
                i += 1;
            }
        }
    }

    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            if (offset + i) & 7 == 0 && data.len() - i >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&data[i..i + 8]);
                self.u64(offset + i)
                    .store(u64::from_le_bytes(word), Ordering::Relaxed);
                i += 8;
            } else {
                self.u8(offset + i).store(data[i], Ordering::Relaxed);
                i += 1;
            }
        }
    }

    pub(crate) fn fill_zero(&self) {
        for offset in (0..PAGE).step_by(8) {
            self.u64(offset).store(0, Ordering::Relaxed);
        }
    }
}

impl SharedPage for ForeignPage {
    fn size_bytes(&self) -> usize {
        PAGE
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.u32(offset).load(Ordering::Acquire)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.u32(offset).store(value, Ordering::Release)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.read(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.write(offset, data)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

/// A zeroed, page-aligned page of the heap for sharing with another domain.
///
/// Grant it with [`OwnedPage::grant`] and revoke with [`OwnedPage::end_access`] (both in
/// [`crate::grant_table`]). Dropping it revokes its grants; if a peer still has one mapped,
/// the page is leaked instead of returned to the heap, so a peer can never write into memory
/// that Rust hands out again.
pub struct OwnedPage {
    ptr: NonNull<u8>,
    pub(crate) grants: spin::Mutex<heapless::Vec<u32, { OwnedPage::MAX_GRANTS }>>,
}

// SAFETY: the page is reached only through atomic accesses (via `ForeignPage`), and the
// grant list is behind a lock, so sharing or sending an `OwnedPage` between vCPUs is sound.
unsafe impl Send for OwnedPage {}
// SAFETY: as for Send.
unsafe impl Sync for OwnedPage {}

impl OwnedPage {
    /// Grants one page may have at a time.
    pub const MAX_GRANTS: usize = 4;

    fn layout() -> Layout {
        // 4096 is a power of two and a valid size: this cannot fail.
        Layout::from_size_align(PAGE, PAGE).expect("page layout")
    }

    /// A fresh zeroed page, or `None` if the heap has no room.
    pub fn new() -> Option<Self> {
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(Self::layout()) })?;
        // Its address is handed to peers and to `ForeignPage` by number.
        let _ = ptr.as_ptr().expose_provenance();
        Some(Self {
            ptr,
            grants: spin::Mutex::new(heapless::Vec::new()),
        })
    }

    /// Guest-physical (= guest-virtual) address of the page.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Guest frame number of the page.
    pub fn gfn(&self) -> u64 {
        self.addr() / PAGE_BYTES
    }

    pub(crate) fn foreign(&self) -> ForeignPage {
        // SAFETY: the page is a live heap allocation of ours that no Rust reference points
        // into (only this wrapper knows it, and it accesses it atomically); it stays
        // allocated while `self` lives, and `ForeignPage`s made here do not outlive the
        // borrow of `self` they are used under.
        unsafe { ForeignPage::new(self.addr()) }
    }

    /// Sets every byte of the page to zero.
    pub fn zero(&self) {
        self.foreign().fill_zero();
    }
}

impl SharedPage for OwnedPage {
    fn size_bytes(&self) -> usize {
        PAGE
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.foreign().load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.foreign().store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.foreign().read(offset, out)
    }
    fn write_bytes(&self, offset: usize, data: &[u8]) {
        self.foreign().write(offset, data)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
}

impl Drop for OwnedPage {
    fn drop(&mut self) {
        if !crate::grant_table::revoke_all(self) {
            // A peer still holds a grant of the page: never reuse its memory.
            return;
        }
        // SAFETY: allocated in `new` with the same layout; no grant of it is live any more,
        // so nothing but this wrapper (being dropped) refers to it.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout()) };
    }
}
